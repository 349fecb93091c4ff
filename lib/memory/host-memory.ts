import { HostError } from '../errors.js';
import * as ffi from '../kvm/ffi.js';
import { GuestMemory, type MemoryRegion, type RegionDescriptor } from './guest-memory.js';
import { GiB } from '../sys.js';

/** Largest single view: koffi aborts the process on views over 4 GiB, so regions are split at 2 GiB. */
export const MAX_REGION_CHUNK = 2 * GiB;

/** Guest RAM mapped from the host, plus how to release it. */
export interface HostGuestMemory {
  readonly memory: GuestMemory;
  /** Unmaps every region. No view of the memory may be touched afterwards (any thread). */
  unmap(): void;
}

/**
 * mmaps anonymous shared memory for each range of `layout` (MAP_NORESERVE:
 * pages are only allocated when the guest touches them), split into chunks
 * of at most {@link MAX_REGION_CHUNK}. On failure everything mapped so far is released.
 */
export function mapGuestMemory(layout: ReadonlyArray<{ gpa: number; size: number }>): HostGuestMemory {
  const mapped: { addr: bigint; size: number }[] = [];
  const regions: MemoryRegion[] = [];
  const unmap = () => {
    for (const m of mapped.splice(0)) ffi.munmap(m.addr, m.size);
  };
  try {
    for (const l of layout) {
      for (let off = 0; off < l.size; off += MAX_REGION_CHUNK) {
        const size = Math.min(MAX_REGION_CHUNK, l.size - off);
        const addr = ffi.mmap(null, size, ffi.PROT_READ | ffi.PROT_WRITE, ffi.MAP_SHARED | ffi.MAP_ANONYMOUS | ffi.MAP_NORESERVE, -1, 0);
        if (addr === null || addr === ffi.MAP_FAILED) throw new HostError('mmap(guest memory)', ffi.errno(), `${size} bytes`);
        mapped.push({ addr, size });
        regions.push({ gpa: l.gpa + off, size, hostAddr: addr, bytes: ffi.viewOf(addr, size) });
      }
    }
    return { memory: new GuestMemory(regions), unmap };
  } catch (e) {
    unmap();
    throw e;
  }
}

/** Rebuilds a GuestMemory over mappings another thread made (workers). Does not own them. */
export function attachGuestMemory(descs: readonly RegionDescriptor[]): GuestMemory {
  return new GuestMemory(descs.map((d) => ({ ...d, bytes: ffi.viewOf(d.hostAddr, d.size) })));
}
