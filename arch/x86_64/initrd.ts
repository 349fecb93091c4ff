/**
 * Initrd placement: as high in low RAM as the kernel allows, so the kernel's
 * own early allocations (which grow up from its end) never run into it.
 */
import { LoaderError } from '../../lib/errors.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MiB, PAGE_SIZE } from './layout.js';

/** Constraints on where the initrd may go. Byte addresses, guest-physical. */
export interface InitrdConstraints {
  /** Initrd size in bytes (> 0). */
  size: number;
  /** One past the highest byte the kernel uses; the initrd starts at or above it. */
  kernelEnd: number;
  /** Highest address the initrd's last byte may occupy (setup header initrd_addr_max). */
  initrdAddrMax: number;
  /** One past the end of the RAM region that starts at 0 (the initrd stays below the MMIO hole). */
  lowRamEnd: number;
}

/**
 * The highest page-aligned address at which `size` bytes end at or below
 * min(initrdAddrMax + 1, lowRamEnd) and start at or above the page-aligned
 * kernel end. Pure.
 *
 * Throws {@link LoaderError} when no such address exists, naming the memory
 * size that would make it fit.
 */
export function placeInitrd(c: InitrdConstraints): number {
  if (!Number.isSafeInteger(c.size) || c.size <= 0) throw new LoaderError(`initrd: size ${c.size} is not a positive byte count`, c.size);
  const top = Math.min(c.initrdAddrMax + 1, c.lowRamEnd);
  const floor = Math.ceil(c.kernelEnd / PAGE_SIZE) * PAGE_SIZE;
  const addr = Math.floor((top - c.size) / PAGE_SIZE) * PAGE_SIZE;
  if (addr < floor) {
    const sizeMiB = (c.size / MiB).toFixed(1);
    if (floor + c.size > c.initrdAddrMax + 1) {
      throw new LoaderError(`initrd: ${sizeMiB} MiB does not fit between the kernel end (0x${floor.toString(16)}) and the kernel's initrd_addr_max (0x${c.initrdAddrMax.toString(16)}); use a smaller initrd`, c.size);
    }
    const need = Math.ceil((floor + c.size) / MiB);
    throw new LoaderError(`initrd: ${sizeMiB} MiB does not fit in guest RAM above the kernel (which ends at 0x${floor.toString(16)}); give the VM at least ${need} MiB of memory`, c.size);
  }
  return addr;
}

/**
 * Places `initrd` with {@link placeInitrd} and copies it into guest memory.
 * Returns where it went. Throws {@link LoaderError} when it does not fit.
 */
export function loadInitrd(mem: GuestMemory, initrd: Uint8Array, c: Omit<InitrdConstraints, 'size'>): { addr: number; size: number } {
  const addr = placeInitrd({ ...c, size: initrd.length });
  mem.write(addr, initrd);
  return { addr, size: initrd.length };
}
