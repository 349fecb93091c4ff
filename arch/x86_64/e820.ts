/**
 * The BIOS-style E820 memory map the guest kernel sees, derived from the RAM
 * regions of {@link ramRegions}. The same map feeds the zero page (linux64
 * boot) and the PVH memmap: PVH's `hvm_memmap_table_entry` types equal E820's.
 */
import { ConfigError } from '../../lib/errors.js';
import {
  BASE_MEMORY_END,
  EBDA_START,
  HIGH_MEMORY_START,
  KVM_IDENTITY_MAP_ADDR,
  KVM_PRIVATE_SIZE,
  MMIO_HOLE_END,
  MMIO_HOLE_START,
  ramRegions,
  type RamRegion,
} from './layout.js';

/** E820 type: usable RAM. */
export const E820_RAM = 1;
/** E820 type: reserved, never to be used as RAM or given to a device. */
export const E820_RESERVED = 2;
/** E820 type: ACPI tables, reclaimable (unused by flintvm: no ACPI tables). */
export const E820_ACPI = 3;
/** E820 type: ACPI non-volatile storage (unused by flintvm). */
export const E820_NVS = 4;
/** E820 type: RAM with errors (unused by flintvm). */
export const E820_UNUSABLE = 5;

/** One E820 range. `addr` and `size` are byte counts (safe integers). */
export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  readonly type: number;
}

/**
 * The E820 map for the given guest RAM regions, sorted by address:
 * - RAM [0, EBDA_START) and the EBDA (which holds the MP table) reserved up to 640 KiB;
 * - nothing for the 640 KiB..1 MiB VGA/BIOS hole (not RAM, and Linux reserves it itself);
 * - RAM from 1 MiB to the end of the low region, then each region above the
 *   MMIO hole (adjacent regions merged);
 * - KVM's identity-map and TSS pages reserved, so the guest never places a device there.
 *
 * The first region must start at 0 and extend past 1 MiB, and no region may
 * reach into the MMIO hole; otherwise throws {@link ConfigError} (`memory`).
 */
export function e820Entries(regions: readonly RamRegion[]): E820Entry[] {
  const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
  const low = sorted[0];
  if (!low || low.gpa !== 0 || low.size <= HIGH_MEMORY_START) {
    throw new ConfigError('memory', 'guest RAM must start at address 0 and extend past 1 MiB', low);
  }
  for (const r of sorted) {
    if (r.gpa < MMIO_HOLE_END && r.gpa + r.size > MMIO_HOLE_START) {
      throw new ConfigError('memory', `RAM region [0x${r.gpa.toString(16)}, +0x${r.size.toString(16)}) overlaps the MMIO hole (3-4 GiB)`, r);
    }
  }

  const out: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: BASE_MEMORY_END - EBDA_START, type: E820_RESERVED },
    { addr: HIGH_MEMORY_START, size: low.size - HIGH_MEMORY_START, type: E820_RAM },
  ];
  // KVM's private pages sit in the hole, so they sort between low and high RAM.
  out.push({ addr: KVM_IDENTITY_MAP_ADDR, size: KVM_PRIVATE_SIZE, type: E820_RESERVED });
  for (const r of sorted.slice(1)) {
    const last = out[out.length - 1]!;
    if (last.type === E820_RAM && last.addr + last.size === r.gpa) {
      out[out.length - 1] = { addr: last.addr, size: last.size + r.size, type: E820_RAM };
    } else {
      out.push({ addr: r.gpa, size: r.size, type: E820_RAM });
    }
  }
  return out;
}

/** {@link e820Entries} of {@link ramRegions}(`memBytes`). Throws like both. */
export function e820ForMemory(memBytes: number): E820Entry[] {
  return e820Entries(ramRegions(memBytes));
}
