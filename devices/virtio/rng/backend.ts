/**
 * Entropy for virtio-rng: the host kernel's getrandom(2), written straight
 * into guest memory (zero copy: the buffer argument is the host address of
 * each guest segment).
 */
import { HostError } from '../../../lib/errors.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import * as libc from '../backends/libc.js';
import type { Segment } from '../queue/types.js';

/** Where random bytes come from. I/O worker thread. */
export interface EntropySource {
  /**
   * Fills the guest `segments` in order with random bytes, at most `maxBytes`
   * in total. Returns how many bytes were written (from the start of the
   * segments). Throws HostError when the host source fails before writing anything.
   */
  fill(memory: GuestMemory, segments: readonly Segment[], maxBytes: number): number;
}

/** getrandom as an injectable call (tests wrap it to see the addresses). */
export type GetrandomCall = (buf: bigint, len: number, flags: number) => number;

/**
 * getrandom(2) with flags 0: the urandom pool, which blocks only before the
 * host's pool is first initialised (never GRND_RANDOM, never GRND_NONBLOCK).
 */
export class GetrandomSource implements EntropySource {
  /** `call` and `errno` are injectable for tests (recording, fault injection). */
  constructor(private readonly call: GetrandomCall = libc.getrandom, private readonly errno: () => number = libc.errno) {}

  fill(memory: GuestMemory, segments: readonly Segment[], maxBytes: number): number {
    let done = 0;
    for (const seg of segments) {
      let off = 0;
      while (off < seg.len && done < maxBytes) {
        const want = Math.min(seg.len - off, maxBytes - done);
        const n = this.call(memory.hostAddress(seg.addr + off, want), want, 0);
        if (n < 0) {
          const e = this.errno();
          if (e === libc.EINTR) continue;
          if (done === 0) throw new HostError('getrandom', e, `${want} bytes`);
          return done;
        }
        if (n === 0) return done;
        off += n;
        done += n;
      }
      if (done >= maxBytes) break;
    }
    return done;
  }
}
