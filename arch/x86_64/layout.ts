/**
 * The x86_64 guest memory map and I/O port map: every fixed guest-physical
 * address, port and IRQ number flintvm uses on x86_64 lives here.
 *
 * Low memory (below 1 MiB) holds the boot structures the VMM writes before the
 * first KVM_RUN. They sit in conventional memory above the real-mode IVT and
 * BIOS data area (0..0x4ff), which are left untouched, and below the EBDA:
 *
 * ```
 * 0x00500  boot GDT          0x06000  PVH hvm_start_info, modlist, memmap
 * 0x00540  boot IDT          0x07000  zero page (struct boot_params)
 * 0x08ff0  boot stack top    0x09000  PML4, PDPT, 4 PDs (to 0x0f000)
 * 0x20000  kernel cmdline    0x9f000  EBDA: MP config table; 0x9fc00 MP floating pointer
 * 0xa0000-0x100000: VGA/BIOS hole (not RAM)   0x100000: kernels load here
 * ```
 *
 * Guest RAM is split around a 1 GiB MMIO hole below 4 GiB that holds the
 * virtio-mmio window, the IOAPIC, the local APIC and KVM's private pages.
 */
import { ConfigError } from '../../lib/errors.js';

/** One KiB, MiB, GiB in bytes. */
/** Sizes, defined once in lib/sys.ts (re-exported for the arch code that counts in them). */
import { KiB, MiB, GiB } from '../../lib/sys.js';
export { KiB, MiB, GiB };

/** x86 base page size (4 KiB): the alignment of page tables and the initrd. */
export const PAGE_SIZE = 4 * KiB;

// ---- Low-memory boot structures ------------------------------------------

/** Boot GDT: null, 32-bit code, 64-bit code, data, 16-byte TSS descriptor. */
export const BOOT_GDT_ADDR = 0x500;
/** Maximum bytes reserved for the boot GDT (8 descriptors). */
export const BOOT_GDT_MAX_SIZE = 0x40;
/** Boot IDT: empty, so an early exception triple-faults (a clean KVM shutdown exit). */
export const BOOT_IDT_ADDR = 0x540;
/** PVH `struct hvm_start_info` (56 bytes). */
export const PVH_START_INFO_ADDR = 0x6000;
/** PVH module list (`struct hvm_modlist_entry`, 32 bytes each; the initrd is module 0). */
export const PVH_MODLIST_ADDR = 0x6040;
/** PVH memory map (`struct hvm_memmap_table_entry`, 24 bytes each), up to the zero page. */
export const PVH_MEMMAP_ADDR = 0x6080;
/** Zero page: `struct boot_params` for the Linux 64-bit boot protocol (4 KiB). */
export const ZERO_PAGE_ADDR = 0x7000;
/** Initial RSP/RBP: top of the boot stack, which grows down towards the zero page end (0x8000). */
export const BOOT_STACK_POINTER = 0x8ff0;
/** Page-map level 4 of the boot identity mapping. */
export const PML4_ADDR = 0x9000;
/** Page-directory-pointer table (one, covering 512 GiB of which 4 GiB are used). */
export const PDPT_ADDR = 0xa000;
/** First of the four page directories (2 MiB pages), one per GiB, contiguous. */
export const PD_ADDR = 0xb000;
/** Kernel command line (NUL terminated). */
export const CMDLINE_ADDR = 0x20000;
/** Bytes reserved for the command line, terminating NUL included (x86 COMMAND_LINE_SIZE). */
export const CMDLINE_MAX_SIZE = 2048;

/**
 * Start of the extended BIOS data area: the top 4 KiB of base memory. Linux
 * reserves from here to 1 MiB by default when the BDA names no EBDA, so the
 * e820 map marks [EBDA_START, 640 KiB) reserved to agree with it.
 */
export const EBDA_START = 0x9f000;
/** MP configuration table ("PCMP"), at the EBDA start; it may grow up to the floating pointer. */
export const MP_CONFIG_TABLE_ADDR = EBDA_START;
/** MP floating pointer ("_MP_"): in the last KiB of base memory, an area MP spec 1.4 §4 says to scan. */
export const MP_FLOATING_POINTER_ADDR = 0x9fc00;
/** End of base (conventional) memory: 640 KiB; the VGA/BIOS hole follows. */
export const BASE_MEMORY_END = 0xa0000;
/** Start of high memory (1 MiB): the protected-mode kernel loads here, nothing below is kernel. */
export const HIGH_MEMORY_START = 0x100000;

// ---- The MMIO hole below 4 GiB ---------------------------------------------

/** Start of the MMIO hole (3 GiB): low RAM ends here at most. */
export const MMIO_HOLE_START = 3 * GiB;
/** End of the MMIO hole (4 GiB): RAM above the hole resumes here. */
export const MMIO_HOLE_END = 4 * GiB;
/** First virtio-mmio device window (inside the hole). */
export const VIRTIO_MMIO_BASE = 0xd0000000;
/** Bytes per virtio-mmio device window (registers + config space). */
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;
/** I/O APIC register window (default address of the 82093AA). */
export const IOAPIC_ADDR = 0xfec00000;
/** Local APIC register window (architectural default of IA32_APIC_BASE). */
export const LAPIC_ADDR = 0xfee00000;
/** KVM_SET_IDENTITY_MAP_ADDR: one page KVM uses for real-mode emulation on VMX. */
export const KVM_IDENTITY_MAP_ADDR = 0xfffbc000;
/** KVM_SET_TSS_ADDR: three pages KVM uses for real-mode emulation on VMX. */
export const KVM_TSS_ADDR = 0xfffbd000;
/** Bytes from KVM_IDENTITY_MAP_ADDR to the end of KVM's TSS (1 + 3 pages). */
export const KVM_PRIVATE_SIZE = 4 * PAGE_SIZE;

// ---- PIO ports and IRQs ----------------------------------------------------

/** i8042 keyboard controller data port. */
export const I8042_DATA_PORT = 0x60;
/** i8042 command port (writes) and status port (reads). */
export const I8042_COMMAND_PORT = 0x64;
/** i8042 keyboard IRQ. */
export const I8042_KBD_IRQ = 1;
/** i8042 auxiliary (mouse) IRQ; kept free although the guest runs with i8042.noaux. */
export const I8042_AUX_IRQ = 12;
/** CMOS RTC index port (the data port follows). */
export const RTC_PORT = 0x70;
/** Number of CMOS RTC ports (index + data). */
export const RTC_PORT_COUNT = 2;
/** CMOS RTC IRQ. */
export const RTC_IRQ = 8;
/** First port of COM1, the 8250 UART behind ttyS0. */
export const COM1_PORT = 0x3f8;
/** Number of ports of an 8250 UART. */
export const COM_PORT_COUNT = 8;
/** COM1 IRQ. */
export const COM1_IRQ = 4;
/** Boot timer port: the guest /init writes {@link BOOT_TIMER_MAGIC} here once it runs. */
export const BOOT_TIMER_PORT = 0x600;
/** The byte the guest writes to {@link BOOT_TIMER_PORT}. */
export const BOOT_TIMER_MAGIC = 123;
/** Exit-status port: the guest /init writes its command's exit status (one byte) here. */
export const EXIT_STATUS_PORT = 0x601;

/** i8254 PIT timer IRQ (KVM's in-kernel PIT raises it). */
export const PIT_IRQ = 0;
/** IRQ of the slave PIC cascade on the master PIC. */
export const PIC_CASCADE_IRQ = 2;
/** COM2 IRQ (no COM2 is emulated, but guests probe it). */
export const COM2_IRQ = 3;

/** Pins of KVM's in-kernel IOAPIC (KVM_IOAPIC_NUM_PINS); IRQs 0..23. */
export const IOAPIC_NUM_PINS = 24;
/** Number of legacy ISA IRQs (0..15), routed through both the PIC and the IOAPIC. */
export const ISA_IRQ_COUNT = 16;
/** First IRQ a virtio-mmio device may use. */
export const VIRTIO_MMIO_IRQ_BASE = 5;

/**
 * IRQs that legacy devices (or KVM's PIT/PIC) own, so no virtio device gets
 * them: PIT 0, keyboard 1, PIC cascade 2, COM2 3, COM1 4, RTC 8, PS/2 aux 12.
 */
const LEGACY_IRQS: ReadonlySet<number> = new Set([PIT_IRQ, I8042_KBD_IRQ, PIC_CASCADE_IRQ, COM2_IRQ, COM1_IRQ, RTC_IRQ, I8042_AUX_IRQ]);

/** IRQs handed to virtio-mmio slots, in slot order (5, 6, 7, 9, 10, 11, 13..23). */
export const VIRTIO_MMIO_IRQS: readonly number[] = Array.from(
  { length: IOAPIC_NUM_PINS - VIRTIO_MMIO_IRQ_BASE },
  (_, i) => VIRTIO_MMIO_IRQ_BASE + i,
).filter((irq) => !LEGACY_IRQS.has(irq));

/** Number of virtio-mmio slots: one per free IRQ. */
export const VIRTIO_MMIO_SLOT_COUNT = VIRTIO_MMIO_IRQS.length;

/** Where virtio-mmio device `index` lives and which IRQ it raises. */
export interface VirtioMmioSlot {
  /** Guest-physical base of its register window. */
  readonly base: number;
  /** Window size in bytes ({@link VIRTIO_MMIO_SLOT_SIZE}). */
  readonly size: number;
  /** Its IOAPIC pin / GSI. */
  readonly irq: number;
}

/**
 * The MMIO window and IRQ of virtio-mmio device number `index` (0-based).
 * Throws {@link ConfigError} (`devices`) past {@link VIRTIO_MMIO_SLOT_COUNT}.
 */
export function virtioMmioSlot(index: number): VirtioMmioSlot {
  const irq = VIRTIO_MMIO_IRQS[index];
  if (!Number.isInteger(index) || index < 0 || irq === undefined) {
    throw new ConfigError('devices', `at most ${VIRTIO_MMIO_SLOT_COUNT} virtio devices fit the x86_64 IRQ map (asked for slot ${index})`, index);
  }
  return { base: VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SLOT_SIZE, size: VIRTIO_MMIO_SLOT_SIZE, irq };
}

// ---- RAM -------------------------------------------------------------------

/**
 * Largest single RAM region returned by {@link ramRegions}: a host view of
 * guest memory is limited to 4 GiB, so RAM above the hole comes in 4 GiB pieces.
 */
export const MAX_RAM_REGION_SIZE = 4 * GiB;

/** A guest RAM range: guest-physical start and size in bytes. */
export interface RamRegion {
  readonly gpa: number;
  readonly size: number;
}

/** Smallest memory size accepted: 1 MiB of low memory plus 1 MiB for a kernel. */
export const MIN_MEMORY_SIZE = 2 * MiB;

/**
 * The guest RAM regions for `memBytes` of memory, sorted by address: one region
 * from 0 up to at most {@link MMIO_HOLE_START}, and the remainder from
 * {@link MMIO_HOLE_END} upwards in pieces of at most {@link MAX_RAM_REGION_SIZE}.
 *
 * `memBytes` must be a safe integer multiple of 4 KiB and at least
 * {@link MIN_MEMORY_SIZE}; otherwise throws {@link ConfigError} (`memory`).
 */
export function ramRegions(memBytes: number): RamRegion[] {
  if (!Number.isSafeInteger(memBytes) || memBytes < MIN_MEMORY_SIZE || memBytes % PAGE_SIZE !== 0) {
    throw new ConfigError('memory', `must be a multiple of 4 KiB and at least ${MIN_MEMORY_SIZE / MiB} MiB (got ${memBytes} bytes)`, memBytes);
  }
  const low = Math.min(memBytes, MMIO_HOLE_START);
  const regions: RamRegion[] = [{ gpa: 0, size: low }];
  let gpa = MMIO_HOLE_END;
  for (let left = memBytes - low; left > 0; ) {
    const size = Math.min(left, MAX_RAM_REGION_SIZE);
    regions.push({ gpa, size });
    gpa += size;
    left -= size;
  }
  return regions;
}
