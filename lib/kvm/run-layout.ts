/**
 * Field offsets of `struct kvm_run` (linux/kvm.h), the page KVM and the VMM
 * share through mmap of the vCPU fd. The one place these numbers live: the
 * exit decoder (exit.ts) and the vCPU worker's hot PIO/MMIO path read the
 * page with DataView accesses at these constant offsets.
 *
 * The layout of every field named here is the same on x86_64 and arm64: the
 * header is arch-independent (cr8 and apic_base exist, unused, on arm64), the
 * exit union starts at 32 on both, and the io / mmio / system_event /
 * internal / fail_entry / ex / hw members are generic C structs with no
 * arch-dependent padding. Values are offsetof() results, pinned by
 * test/unit/lib/kvm/run-layout.test.ts and exit.test.ts.
 */

// ---- the header ----
/** __u8 request_interrupt_window. */
export const RUN_REQUEST_INTERRUPT_WINDOW = 0;
/** __u8 immediate_exit: non-zero makes the next KVM_RUN return EINTR at once. */
export const RUN_IMMEDIATE_EXIT = 1;
/** __u32 exit_reason (KVM_EXIT_*). */
export const RUN_EXIT_REASON = 8;
/** Start of the per-exit union. */
export const RUN_EXIT_UNION = 32;

// ---- KVM_EXIT_IO: struct { __u8 direction, size; __u16 port; __u32 count; __u64 data_offset; } io ----
/** __u8 io.direction (KVM_EXIT_IO_IN / KVM_EXIT_IO_OUT). */
export const RUN_IO_DIRECTION = RUN_EXIT_UNION;
/** __u8 io.size: bytes per access (1, 2 or 4). */
export const RUN_IO_SIZE = RUN_EXIT_UNION + 1;
/** __u16 io.port. */
export const RUN_IO_PORT = RUN_EXIT_UNION + 2;
/** __u32 io.count: accesses (more than 1 for rep ins/outs). */
export const RUN_IO_COUNT = RUN_EXIT_UNION + 4;
/** __u64 io.data_offset: where in the run mapping the data lies. */
export const RUN_IO_DATA_OFFSET = RUN_EXIT_UNION + 8;

// ---- KVM_EXIT_MMIO: struct { __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write; } mmio ----
/** __u64 mmio.phys_addr. */
export const RUN_MMIO_PHYS_ADDR = RUN_EXIT_UNION;
/** __u8 mmio.data[8]. */
export const RUN_MMIO_DATA = RUN_EXIT_UNION + 8;
/** __u32 mmio.len. */
export const RUN_MMIO_LEN = RUN_EXIT_UNION + 16;
/** __u8 mmio.is_write. */
export const RUN_MMIO_IS_WRITE = RUN_EXIT_UNION + 20;

// ---- the other exits the decoder reads ----
/** __u64 hw.hardware_exit_reason (KVM_EXIT_UNKNOWN). */
export const RUN_HW_EXIT_REASON = RUN_EXIT_UNION;
/** __u64 fail_entry.hardware_entry_failure_reason. */
export const RUN_FAIL_ENTRY_REASON = RUN_EXIT_UNION;
/** __u32 fail_entry.cpu. */
export const RUN_FAIL_ENTRY_CPU = RUN_EXIT_UNION + 8;
/** __u32 ex.exception (KVM_EXIT_EXCEPTION). */
export const RUN_EX_EXCEPTION = RUN_EXIT_UNION;
/** __u32 ex.error_code. */
export const RUN_EX_ERROR_CODE = RUN_EXIT_UNION + 4;
/** __u32 internal.suberror (KVM_EXIT_INTERNAL_ERROR). */
export const RUN_INTERNAL_SUBERROR = RUN_EXIT_UNION;
/** __u32 internal.ndata. */
export const RUN_INTERNAL_NDATA = RUN_EXIT_UNION + 4;
/** __u64 internal.data[16]. */
export const RUN_INTERNAL_DATA = RUN_EXIT_UNION + 8;
/** Entries of internal.data. */
export const RUN_INTERNAL_DATA_MAX = 16;
/** __u32 system_event.type (KVM_SYSTEM_EVENT_*). */
export const RUN_SYSTEM_EVENT_TYPE = RUN_EXIT_UNION;
