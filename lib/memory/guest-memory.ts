import { GuestAddressError } from '../errors.js';

/**
 * One contiguous range of guest RAM and where it lives in the host.
 * `gpa` and `size` are byte counts (safe integers). `hostAddr` is the host
 * virtual address of byte 0 (0n for memory that only exists as a JS buffer in tests).
 */
export interface MemoryRegion {
  readonly gpa: number;
  readonly size: number;
  readonly hostAddr: bigint;
  /**
   * Zero-copy view of the whole region; at most 4 GiB (koffi view limit). It
   * may be a getter that makes the view on first use (host-memory.ts does):
   * V8 counts a view's whole length as external memory and collects garbage
   * to make room for it, which a thread that never touches guest RAM need not pay.
   */
  readonly bytes: Uint8Array;
  /**
   * A zero-copy view of [offset, offset+length) of the region, where making
   * the whole `bytes` would cost more than the part (host mappings). Without
   * it, parts are subarrays of `bytes`.
   */
  readonly view?: (offset: number, length: number) => Uint8Array;
}

/**
 * GuestMemory reaches guest RAM through views of this many bytes (a power of
 * two), each made on first use: a thread pays V8's external-memory accounting
 * (and the garbage collection it triggers) only for the parts of RAM it
 * touches, e.g. the few MiB a kernel loader writes, not the whole 128 MiB.
 */
export const VIEW_CHUNK = 2 * 1024 * 1024;

/** What a worker needs to rebuild the same regions from host addresses. */
export interface RegionDescriptor {
  readonly gpa: number;
  readonly size: number;
  readonly hostAddr: bigint;
}

/**
 * Guest RAM addressed by guest-physical address (GPA). Every access is
 * bounds-checked with overflow-safe arithmetic and throws {@link GuestAddressError}
 * when any byte of it lies outside guest RAM. Accesses that span two
 * adjacent regions work; accesses that touch a hole fail.
 *
 * Multi-byte accessors are little-endian. Safe to use from any thread that
 * has its own instance over the same host mapping (see {@link RegionDescriptor}).
 */
export class GuestMemory {
  readonly regions: readonly MemoryRegion[];
  /** Each region's views of VIEW_CHUNK bytes, and DataViews over them, made on first use. */
  private readonly chunks: (Uint8Array | undefined)[][];
  private readonly chunkDvs: (DataView | undefined)[][];
  /** Each region's hostAddr as a Number (exact: user-space addresses are below 2^53), 0 when unmapped. */
  private readonly hostBases: number[];

  constructor(regions: MemoryRegion[]) {
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      // A view given as a value is checked here; one made on first use (a getter) is the mapping's own size.
      const given = Object.getOwnPropertyDescriptor(r, 'bytes');
      const badView = given !== undefined && 'value' in given && (given.value as Uint8Array).length !== r.size;
      if (!Number.isSafeInteger(r.gpa) || !Number.isSafeInteger(r.size) || r.gpa < 0 || r.size <= 0 || badView) {
        throw new RangeError(`invalid memory region at index ${i}`);
      }
      if (i > 0 && sorted[i - 1]!.gpa + sorted[i - 1]!.size > r.gpa) throw new RangeError(`memory regions overlap at 0x${r.gpa.toString(16)}`);
    }
    this.regions = sorted;
    this.chunks = sorted.map((r) => new Array<Uint8Array | undefined>(Math.ceil(r.size / VIEW_CHUNK)));
    this.chunkDvs = sorted.map((r) => new Array<DataView | undefined>(Math.ceil(r.size / VIEW_CHUNK)));
    this.hostBases = sorted.map((r, i) => {
      if (r.hostAddr < 0n || r.hostAddr + BigInt(r.size) > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`memory region at index ${i}: host address out of range`);
      return Number(r.hostAddr);
    });
  }

  /** Guest RAM backed by plain ArrayBuffers (for tests and tools; no host mapping). */
  static fromBuffers(layout: ReadonlyArray<{ gpa: number; size: number }>): GuestMemory {
    return new GuestMemory(layout.map((l) => ({ gpa: l.gpa, size: l.size, hostAddr: 0n, bytes: new Uint8Array(l.size) })));
  }

  /** Total bytes of guest RAM. */
  get totalSize(): number {
    return this.regions.reduce((n, r) => n + r.size, 0);
  }

  /** One past the highest RAM address. */
  get end(): number {
    const last = this.regions[this.regions.length - 1];
    return last ? last.gpa + last.size : 0;
  }

  /** Descriptors to rebuild this memory in a worker. */
  describe(): RegionDescriptor[] {
    return this.regions.map((r) => ({ gpa: r.gpa, size: r.size, hostAddr: r.hostAddr }));
  }

  /** Chunk `c` of region `i`: bytes [c * VIEW_CHUNK, ...) of it, made on first use. */
  private chunk(i: number, c: number): Uint8Array {
    return this.chunks[i]![c] ?? this.makeChunk(i, c);
  }

  private makeChunk(i: number, c: number): Uint8Array {
    const r = this.regions[i]!;
    const start = c * VIEW_CHUNK;
    const len = Math.min(VIEW_CHUNK, r.size - start);
    const v = r.view ? r.view(start, len) : r.bytes.subarray(start, start + len);
    if (v.length !== len) throw new RangeError(`memory region at 0x${r.gpa.toString(16)}: a view of ${len} bytes came back with ${v.length}`);
    return (this.chunks[i]![c] = v);
  }

  /** A DataView over chunk `c` of region `i`. */
  private chunkDv(i: number, c: number): DataView {
    const dv = this.chunkDvs[i]![c];
    if (dv) return dv;
    const b = this.chunk(i, c);
    return (this.chunkDvs[i]![c] = new DataView(b.buffer, b.byteOffset, b.byteLength));
  }

  /** Index in {@link regions} of the region that holds `gpa`, or -1 when no region does. */
  regionIndex(gpa: number): number {
    return this.find(gpa);
  }

  /** Index of the region containing `gpa`, or -1. */
  private find(gpa: number): number {
    const rs = this.regions;
    // Few regions (1-3): a linear scan beats a binary search.
    for (let i = 0; i < rs.length; i++) {
      const r = rs[i]!;
      if (gpa >= r.gpa && gpa - r.gpa < r.size) return i;
    }
    return -1;
  }

  /** Throws unless [gpa, gpa+len) is a valid integer range. */
  private static checkArgs(gpa: number, len: number): void {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0 || gpa + len > Number.MAX_SAFE_INTEGER) {
      throw new GuestAddressError(gpa, len, 'not a valid address range');
    }
  }

  /** True when every byte of [gpa, gpa+len) is guest RAM. Never throws. */
  isValid(gpa: number, len: number): boolean {
    try {
      this.locate(gpa, len);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Zero-copy view of [gpa, gpa+len) when it lies inside one region.
   * Throws when the range is outside RAM or spans regions.
   */
  slice(gpa: number, len: number): Uint8Array {
    const [i, off] = this.locate(gpa, len);
    const r = this.regions[i]!;
    if (off + len > r.size) throw new GuestAddressError(gpa, len, 'spanning two memory regions (no single view)');
    if (len === 0) return new Uint8Array(0);
    const c = Math.floor(off / VIEW_CHUNK);
    const at = off - c * VIEW_CHUNK;
    if (at + len > VIEW_CHUNK) throw new GuestAddressError(gpa, len, `crossing a ${VIEW_CHUNK}-byte view boundary (no single view)`);
    return this.chunk(i, c).subarray(at, at + len);
  }

  /** True when every byte of [gpa, gpa+len) is guest RAM in one region (one host mapping). Never throws. */
  inOneRegion(gpa: number, len: number): boolean {
    try {
      const [i, off] = this.locate(gpa, len);
      return off + len <= this.regions[i]!.size;
    } catch {
      return false;
    }
  }

  /** Host virtual address of `gpa`, checked for `len` bytes in one region (for iovecs). */
  hostAddress(gpa: number, len: number): bigint {
    return BigInt(this.hostAddressNumber(gpa, len));
  }

  /**
   * {@link hostAddress} as a Number (exact: host addresses are below 2^53):
   * the per-segment path of iovec building, with no BigInt or tuple per call.
   */
  hostAddressNumber(gpa: number, len: number): number {
    GuestMemory.checkArgs(gpa, len);
    const i = this.find(gpa);
    if (i < 0) throw new GuestAddressError(gpa, len);
    const r = this.regions[i]!;
    const off = gpa - r.gpa;
    if (off + len > r.size) {
      this.locate(gpa, len); // outside RAM altogether: that error
      throw new GuestAddressError(gpa, len, 'spanning two memory regions');
    }
    const base = this.hostBases[i]!;
    if (base === 0) throw new GuestAddressError(gpa, len, 'not backed by a host mapping');
    return base + off;
  }

  /** Copies `len` bytes starting at `gpa` out of guest memory. */
  read(gpa: number, len: number): Uint8Array {
    this.locate(gpa, len); // check before allocating: `len` may be a guest-controlled number (negative, NaN, 2^40)
    const out = new Uint8Array(len);
    this.readInto(gpa, out);
    return out;
  }

  /** Copies guest bytes at `gpa` into `dst` (length taken from `dst`). */
  readInto(gpa: number, dst: Uint8Array): void {
    this.span(gpa, dst.length, (bytes, off, dstOff, n) => dst.set(bytes.subarray(off, off + n), dstOff));
  }

  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: number, data: Uint8Array): void {
    this.span(gpa, data.length, (bytes, off, srcOff, n) => bytes.set(data.subarray(srcOff, srcOff + n), off));
  }

  /** Sets `len` bytes at `gpa` to `value`. */
  fill(gpa: number, len: number, value = 0): void {
    this.span(gpa, len, (bytes, off, _s, n) => bytes.fill(value, off, off + n));
  }

  readU8(gpa: number): number {
    const [i, off] = this.locate(gpa, 1);
    const c = Math.floor(off / VIEW_CHUNK);
    return this.chunk(i, c)[off - c * VIEW_CHUNK]!;
  }
  readU16(gpa: number): number {
    const [i, c, at] = this.locateOne(gpa, 2);
    return i >= 0 ? this.chunkDv(i, c).getUint16(at, true) : new DataView(this.read(gpa, 2).buffer).getUint16(0, true);
  }
  readU32(gpa: number): number {
    const [i, c, at] = this.locateOne(gpa, 4);
    return i >= 0 ? this.chunkDv(i, c).getUint32(at, true) : new DataView(this.read(gpa, 4).buffer).getUint32(0, true);
  }
  readU64(gpa: number): bigint {
    const [i, c, at] = this.locateOne(gpa, 8);
    return i >= 0 ? this.chunkDv(i, c).getBigUint64(at, true) : new DataView(this.read(gpa, 8).buffer).getBigUint64(0, true);
  }
  writeU8(gpa: number, v: number): void {
    const [i, off] = this.locate(gpa, 1);
    const c = Math.floor(off / VIEW_CHUNK);
    this.chunk(i, c)[off - c * VIEW_CHUNK] = v;
  }
  writeU16(gpa: number, v: number): void {
    const [i, c, at] = this.locateOne(gpa, 2);
    if (i >= 0) this.chunkDv(i, c).setUint16(at, v, true);
    else { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, v, true); this.write(gpa, b); }
  }
  writeU32(gpa: number, v: number): void {
    const [i, c, at] = this.locateOne(gpa, 4);
    if (i >= 0) this.chunkDv(i, c).setUint32(at, v >>> 0, true);
    else { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0, true); this.write(gpa, b); }
  }
  writeU64(gpa: number, v: bigint): void {
    const [i, c, at] = this.locateOne(gpa, 8);
    if (i >= 0) this.chunkDv(i, c).setBigUint64(at, BigInt.asUintN(64, v), true);
    else { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true); this.write(gpa, b); }
  }

  /** Region index and offset of `gpa`, after checking that all `len` bytes are RAM. */
  private locate(gpa: number, len: number): [number, number] {
    GuestMemory.checkArgs(gpa, len);
    const i = this.find(gpa);
    if (i < 0) throw new GuestAddressError(gpa, len);
    const off = gpa - this.regions[i]!.gpa;
    // Ranges that run past this region must continue in directly adjacent regions.
    let remaining = len - (this.regions[i]!.size - off);
    let j = i;
    while (remaining > 0) {
      const cur = this.regions[j]!;
      const next = this.regions[j + 1];
      if (!next || next.gpa !== cur.gpa + cur.size) throw new GuestAddressError(gpa, len);
      remaining -= next.size;
      j++;
    }
    return [i, off];
  }

  /**
   * Like locate, but as [region, chunk, offset in the chunk]; region -1 when
   * the range spans regions or view chunks (the caller falls back to copying).
   */
  private locateOne(gpa: number, len: number): [number, number, number] {
    const [i, off] = this.locate(gpa, len);
    const c = Math.floor(off / VIEW_CHUNK);
    const at = off - c * VIEW_CHUNK;
    return off + len <= this.regions[i]!.size && at + len <= VIEW_CHUNK ? [i, c, at] : [-1, 0, 0];
  }

  /** Walks [gpa, gpa+len) view chunk by chunk (across adjacent regions) after a full bounds check. */
  private span(gpa: number, len: number, fn: (bytes: Uint8Array, off: number, done: number, n: number) => void): void {
    let [i, off] = this.locate(gpa, len);
    let done = 0;
    while (done < len) {
      const r = this.regions[i]!;
      const c = Math.floor(off / VIEW_CHUNK);
      const at = off - c * VIEW_CHUNK;
      const n = Math.min(len - done, VIEW_CHUNK - at, r.size - off);
      fn(this.chunk(i, c), at, done, n);
      done += n;
      off += n;
      if (off >= r.size) {
        i++;
        off = 0;
      }
    }
  }
}
