import type { BusDevice } from './device.js';

/** One device mapped at [base, base+length) of an address space. */
interface BusRange {
  readonly base: number;
  readonly length: number;
  readonly device: BusDevice;
}

/**
 * An address space (PIO ports or MMIO addresses) mapping ranges to devices.
 * Ranges never overlap (insert throws). Lookups are a linear scan: a VM has a
 * handful of devices, and a scan of a small array beats anything cleverer.
 * Accesses to unmapped addresses read as all-ones and writes are dropped, as on a real bus.
 */
export class Bus {
  private readonly ranges: BusRange[] = [];

  constructor(readonly name: string) {}

  insert(base: number, length: number, device: BusDevice): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(length) || base < 0 || length <= 0) {
      throw new RangeError(`${this.name}: invalid range 0x${base.toString(16)}+${length}`);
    }
    for (const r of this.ranges) {
      if (base < r.base + r.length && r.base < base + length) {
        throw new RangeError(`${this.name}: range 0x${base.toString(16)}+${length} overlaps 0x${r.base.toString(16)}+${r.length}`);
      }
    }
    this.ranges.push({ base, length, device });
  }

  private find(addr: number): BusRange | undefined {
    for (let i = 0; i < this.ranges.length; i++) {
      const r = this.ranges[i]!;
      if (addr >= r.base && addr - r.base < r.length) return r;
    }
    return undefined;
  }

  /** Reads `size` bytes at `addr`; unmapped addresses read as all-ones of that width. */
  read(addr: number, size: number): number {
    const r = this.find(addr);
    if (!r) return size >= 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
    return r.device.read(addr - r.base, size);
  }

  /** Writes `size` bytes at `addr`; returns false when nothing is mapped there. */
  write(addr: number, size: number, value: number): boolean {
    const r = this.find(addr);
    if (!r) return false;
    r.device.write(addr - r.base, size, value);
    return true;
  }
}
