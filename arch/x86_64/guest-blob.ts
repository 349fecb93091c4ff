/**
 * A block of bytes bound for a guest-physical address. Builders of boot
 * structures return these (pure, testable); boot.ts writes them.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';

/** Bytes to write at `gpa`. */
export interface GuestBlob {
  readonly gpa: number;
  readonly bytes: Uint8Array;
}

/** Writes each blob into guest memory. Throws GuestAddressError when one falls outside RAM. */
export function writeBlobs(mem: GuestMemory, blobs: readonly GuestBlob[]): void {
  for (const b of blobs) mem.write(b.gpa, b.bytes);
}
