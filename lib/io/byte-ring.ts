/**
 * A byte ring in a SharedArrayBuffer: one producer at a time (callers
 * serialize producers, e.g. under a device lock) and one consumer, on any
 * threads. Used to move console output from vCPU workers to the main thread
 * without a synchronous round trip.
 *
 * Layout: Int32 header [writePos, readPos, dropped, closed], then `capacity` data bytes.
 * Positions are free-running u32 counters; used = write - read (mod 2^32).
 */
const W = 0;
const R = 1;
const DROPPED = 2;
const CLOSED = 3;
const HEADER_BYTES = 16;

export class ByteRing {
  readonly header: Int32Array;
  readonly data: Uint8Array;
  readonly capacity: number;

  constructor(readonly sab: SharedArrayBuffer) {
    this.header = new Int32Array(sab, 0, 4);
    this.data = new Uint8Array(sab, HEADER_BYTES);
    this.capacity = this.data.length;
    // Positions are free-running u32s: slot = pos % capacity stays continuous across 2^32 only if capacity divides 2^32.
    if (!Number.isInteger(Math.log2(this.capacity))) throw new RangeError(`ByteRing capacity must be a power of two, got ${this.capacity}`);
  }

  static create(capacity = 64 * 1024): ByteRing {
    return new ByteRing(new SharedArrayBuffer(HEADER_BYTES + capacity));
  }

  private used(): number {
    return (Atomics.load(this.header, W) - Atomics.load(this.header, R)) >>> 0;
  }

  /** Producer: appends what fits; bytes that don't fit are counted as dropped. Returns bytes written. */
  write(bytes: Uint8Array): number {
    const free = this.capacity - this.used();
    const n = Math.min(free, bytes.length);
    let w = Atomics.load(this.header, W) >>> 0;
    for (let i = 0; i < n; i++) {
      this.data[(w + i) % this.capacity] = bytes[i]!;
    }
    w = (w + n) >>> 0;
    Atomics.store(this.header, W, w | 0);
    if (n < bytes.length) Atomics.add(this.header, DROPPED, bytes.length - n);
    Atomics.notify(this.header, W);
    return n;
  }

  /** Consumer: takes everything available (possibly empty). */
  read(): Uint8Array {
    const used = this.used();
    const out = new Uint8Array(used);
    const r = Atomics.load(this.header, R) >>> 0;
    for (let i = 0; i < used; i++) out[i] = this.data[(r + i) % this.capacity]!;
    Atomics.store(this.header, R, (r + used) | 0);
    return out;
  }

  /** Bytes lost because the consumer fell behind. */
  get dropped(): number {
    return Atomics.load(this.header, DROPPED);
  }

  close(): void {
    Atomics.store(this.header, CLOSED, 1);
    Atomics.notify(this.header, W);
  }

  get closed(): boolean {
    return Atomics.load(this.header, CLOSED) === 1;
  }

  /** Consumer (main thread): resolves when data may be available or the ring closed. */
  async waitReadable(): Promise<void> {
    const w = Atomics.load(this.header, W);
    if (w !== Atomics.load(this.header, R) || this.closed) return;
    const res = Atomics.waitAsync(this.header, W, w);
    if (res.async) await res.value;
  }
}
