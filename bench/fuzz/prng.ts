/**
 * A small seeded PRNG for the fuzz targets (xoshiro128**, seeded through
 * splitmix32), with the pickers the generators use: uniform integers, biased
 * "interesting" values near the edges where parsers break, byte strings.
 * Deterministic: the same seed gives the same stream on every machine.
 */

/** Mixes a 32-bit value (splitmix32's finaliser). */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** The seed of episode `n` of a run seeded with `seed`. */
export function episodeSeed(seed: number, n: number): number {
  return mix32(mix32(seed) ^ Math.imul(n + 1, 0x27d4eb2d));
}

/** Edge values of 32-bit fields. */
const EDGE_U32 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 511, 512, 4095, 4096, 4097, 0x7fff, 0x8000, 0xffff,
  0x10000, 0x10001, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];
/** Edge values of 64-bit fields. */
const EDGE_U64 = [0n, 1n, 0x1ffn, 0x200n, 0xffff_ffffn, 0x1_0000_0000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n];

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let s = seed >>> 0;
    const next = () => (s = mix32(s));
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next() | 1;
  }

  /** A uniform u32. */
  u32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** A uniform integer in [0, n) (n <= 2^32). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 2 ** 32) * n);
  }

  /** A uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  bool(p = 0.5): boolean {
    return this.u32() < p * 2 ** 32;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  /** Picks a branch by weight: `[[w, value], ...]`. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    let total = 0;
    for (const [w] of choices) total += w;
    let r = this.int(total);
    for (const [w, v] of choices) if ((r -= w) < 0) return v;
    return choices[choices.length - 1]![1];
  }

  /** A u32 that is often an edge value, sometimes small, sometimes anything. */
  edgeU32(): number {
    const k = this.int(8);
    if (k < 3) return this.pick(EDGE_U32);
    if (k < 6) return this.int(1024);
    return this.u32();
  }

  /** A u64 (bigint): often an edge value or a small number, sometimes anything. */
  edgeU64(): bigint {
    const k = this.int(8);
    if (k < 3) return this.pick(EDGE_U64);
    if (k < 6) return BigInt(this.int(1 << 20));
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let k = 0; k < 4 && i + k < n; k++) out[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return out;
  }

  /** Flips a few random bits/bytes of a copy of `b` (mutation of a well-formed input). */
  mutate(b: Uint8Array): Uint8Array {
    const out = b.slice();
    if (out.length === 0) return out;
    const n = 1 + this.int(4);
    for (let i = 0; i < n; i++) {
      const at = this.int(out.length);
      out[at] = this.bool() ? out[at]! ^ (1 << this.int(8)) : this.int(256);
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
