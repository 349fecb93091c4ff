/**
 * Fast little-endian access to guest structures (descriptor tables, rings,
 * ring index fields) that were bounds-checked once, when they were set up.
 * Internal to the queue code; runs on whichever thread owns the queue.
 *
 * Ordering: the u16 index/flag/event fields the driver and the device hand
 * each other go through {@link U16Cell}, which uses `Atomics.load`/`Atomics.store`
 * on a Uint16Array over guest memory. The views are over non-shared
 * ArrayBuffers (koffi views of an mmap, or plain buffers in tests); Atomics
 * accepts those, and V8 emits the same instructions as for shared memory:
 * a seq-cst store is `xchg` on x86-64 (a full fence) and `stlr` on arm64; a
 * seq-cst load is a plain `mov` on x86-64 (TSO gives acquire) and `ldar` on
 * arm64. V8 also keeps plain typed-array accesses in program order around
 * them (they share the effect chain). That gives us acquire loads, release
 * stores, and store->load ordering between a store and a later load (RCsc on
 * arm64, the locked `xchg` on x86), which is what §2.7.7, §2.7.10 and §2.7.13.3 need.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';

/** True when this host stores a u16 1 as bytes [1, 0], so a Uint16Array reads virtio's little-endian fields directly. */
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A bounds-checked guest structure read and written at byte offsets from its start (little-endian). */
export interface GuestStruct {
  /**
   * The structure as little-endian u32 words (word k is bytes [4k, 4k+4)), or null when it
   * cannot be one (not 4-byte aligned in host memory, a length that is not a multiple of 4,
   * across a region border, or a big-endian host): one typed-array load per field for a
   * caller that reads many (the descriptor walk), instead of a method call.
   */
  readonly words: Uint32Array | null;
  u16(off: number): number;
  u32(off: number): number;
  setU32(off: number, v: number): void;
}

/** A structure inside one region: a DataView straight over guest memory (the common case). */
class ViewStruct implements GuestStruct {
  readonly words: Uint32Array | null;
  constructor(private readonly dv: DataView) {
    this.words = HOST_LITTLE_ENDIAN && dv.byteOffset % 4 === 0 && dv.byteLength % 4 === 0
      ? new Uint32Array(dv.buffer, dv.byteOffset, dv.byteLength / 4)
      : null;
  }
  u16(off: number): number { return this.dv.getUint16(off, true); }
  u32(off: number): number { return this.dv.getUint32(off, true); }
  setU32(off: number, v: number): void { this.dv.setUint32(off, v, true); }
}

/** A structure that spans adjacent regions: every access goes through GuestMemory (which copies across the border). */
class SpanningStruct implements GuestStruct {
  readonly words = null;
  constructor(private readonly memory: GuestMemory, private readonly base: number) {}
  u16(off: number): number { return this.memory.readU16(this.base + off); }
  u32(off: number): number { return this.memory.readU32(this.base + off); }
  setU32(off: number, v: number): void { this.memory.writeU32(this.base + off, v); }
}

/**
 * A view of [gpa, gpa+len). The caller has checked that the range is guest
 * RAM (memory.isValid); the accessors then never throw for offsets inside it.
 * Throws GuestAddressError when the range is not RAM.
 */
export function guestStruct(memory: GuestMemory, gpa: number, len: number): GuestStruct {
  let bytes: Uint8Array;
  try {
    bytes = memory.slice(gpa, len);
  } catch (e) {
    if (!memory.isValid(gpa, len)) throw e;
    return new SpanningStruct(memory, gpa); // RAM, but across a region border
  }
  return new ViewStruct(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/**
 * One u16 field of a ring that the driver and the device both touch (an
 * index, the flags, an event index), accessed with Atomics (see the module
 * comment for the ordering this gives). The field must be inside guest RAM.
 */
export class U16Cell {
  private readonly arr: Uint16Array | null;

  constructor(private readonly memory: GuestMemory, private readonly gpa: number) {
    let bytes: Uint8Array | null = null;
    try {
      bytes = memory.slice(gpa, 2);
    } catch {
      // A 2-byte-aligned field only spans two regions when a region border is at an odd address.
    }
    // A Uint16Array needs an even byte offset; regions are page-aligned in practice. A big-endian
    // host would need byte swaps, so it takes the slow path too (flintvm runs on x86-64 and arm64).
    this.arr = bytes && HOST_LITTLE_ENDIAN && bytes.byteOffset % 2 === 0 ? new Uint16Array(bytes.buffer, bytes.byteOffset, 1) : null;
  }

  /** Seq-cst (so also acquire) load. */
  load(): number {
    if (this.arr) return Atomics.load(this.arr, 0);
    // Fallback (odd host offset or region border): a plain read, which keeps the acquire order only on
    // x86 TSO. Only reachable with a memory layout whose regions start at odd addresses (tests).
    return this.memory.readU16(this.gpa);
  }

  /** Seq-cst (so also release) store of `v & 0xffff`. */
  store(v: number): void {
    if (this.arr) Atomics.store(this.arr, 0, v);
    else this.memory.writeU16(this.gpa, v & 0xffff);
  }
}
