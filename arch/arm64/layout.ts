/**
 * The arm64 guest memory map and interrupt map: every fixed guest-physical
 * address and SPI number flintvm uses on arm64 lives here.
 *
 * ```
 * 0x0800_0000  GICv3 distributor (64 KiB)
 * 0x080a_0000  GICv3 redistributors, 128 KiB per vCPU (up to 0x0900_0000)
 * 0x0900_0000  16550A UART (ns16550a)            SPI 1
 * 0x0901_0000  PL031 RTC                         SPI 2
 * 0x0902_0000  guest-control (boot timer, exit status; same protocol as x86 ports 0x600/0x601)
 * 0x0a00_0000  virtio-mmio windows, 4 KiB each   SPI 16, 17, ...
 * 0x8000_0000  RAM (kernel at its start, FDT and initrd at its end)
 * ```
 * Everything below 2 GiB is device space, as on QEMU's `virt` machine (whose
 * numbers these loosely follow, so the addresses look familiar in a guest).
 */
import { ConfigError } from '../../lib/errors.js';

/** Sizes, defined once in lib/sys.ts (re-exported for the arch code that counts in them). */
import { KiB, MiB, GiB } from '../../lib/sys.js';
export { KiB, MiB, GiB };
/** The page size the VMM uses for alignment (the guest may use 4, 16 or 64 KiB pages). */
export const PAGE_SIZE = 4 * KiB;

export const GIC_DIST_BASE = 0x0800_0000;
export const GIC_DIST_SIZE = 0x1_0000;
export const GIC_REDIST_BASE = 0x080a_0000;
/** Each vCPU's redistributor: an RD_base and an SGI_base frame of 64 KiB each. */
export const GIC_REDIST_SIZE_PER_VCPU = 0x2_0000;

export const UART_BASE = 0x0900_0000;
export const UART_SIZE = 0x1000;
export const UART_SPI = 1;
/** The 16550's input clock the device tree announces (the classic 1.8432 MHz). */
export const UART_CLOCK_HZ = 1_843_200;

export const RTC_BASE = 0x0901_0000;
export const RTC_SIZE = 0x1000;
export const RTC_SPI = 2;

export const GUEST_CONTROL_BASE = 0x0902_0000;
export const GUEST_CONTROL_SIZE = 2;

export const VIRTIO_MMIO_BASE = 0x0a00_0000;
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;
export const VIRTIO_MMIO_SPI_BASE = 16;
/** Virtio-mmio slots (each with its own SPI). */
export const VIRTIO_MMIO_SLOT_COUNT = 32;

/** Most vCPUs whose redistributors fit below the UART. */
export const MAX_VCPUS = Math.floor((UART_BASE - GIC_REDIST_BASE) / GIC_REDIST_SIZE_PER_VCPU);

export const RAM_BASE = 0x8000_0000;
/** A host view of guest memory is limited to 4 GiB, so RAM comes in pieces of at most this. */
export const MAX_RAM_REGION_SIZE = 4 * GiB;
/** Smallest memory accepted: room for a small kernel, the FDT's 2 MiB block and an initrd. */
export const MIN_MEMORY_SIZE = 16 * MiB;

/** Where virtio-mmio device `index` lives and which SPI it raises (`irq`: also its irqfd GSI). */
export interface VirtioMmioSlot {
  readonly base: number;
  readonly size: number;
  readonly irq: number;
}

export function virtioMmioSlot(index: number): VirtioMmioSlot {
  if (!Number.isInteger(index) || index < 0 || index >= VIRTIO_MMIO_SLOT_COUNT) {
    throw new ConfigError('devices', `at most ${VIRTIO_MMIO_SLOT_COUNT} virtio devices fit the arm64 layout (asked for slot ${index})`, index);
  }
  return { base: VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SLOT_SIZE, size: VIRTIO_MMIO_SLOT_SIZE, irq: VIRTIO_MMIO_SPI_BASE + index };
}

export interface RamRegion {
  readonly gpa: number;
  readonly size: number;
}

/** Guest RAM for `memBytes`: contiguous from {@link RAM_BASE}, in pieces of at most 4 GiB. */
export function ramRegions(memBytes: number): RamRegion[] {
  if (!Number.isSafeInteger(memBytes) || memBytes < MIN_MEMORY_SIZE || memBytes % PAGE_SIZE !== 0) {
    throw new ConfigError('memory', `must be a multiple of 4 KiB and at least ${MIN_MEMORY_SIZE / MiB} MiB (got ${memBytes} bytes)`, memBytes);
  }
  const regions: RamRegion[] = [];
  let gpa = RAM_BASE;
  for (let left = memBytes; left > 0; ) {
    const size = Math.min(left, MAX_RAM_REGION_SIZE);
    regions.push({ gpa, size });
    gpa += size;
    left -= size;
  }
  return regions;
}
