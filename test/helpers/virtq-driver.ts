/**
 * A test double of a virtio driver for split virtqueues (virtio 1.2 §2.7),
 * the other end of devices/virtio/queue/SplitQueue.
 *
 * It lays out the descriptor table, available ring and used ring at the
 * addresses it is given, in a GuestMemory (usually GuestMemory.fromBuffers),
 * and plays the driver's part:
 *
 *   const drv = new VirtqDriver(memory, { size: 8, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 });
 *   const q = new SplitQueue(memory, drv.config);
 *   const head = drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 512, write: true }]);
 *   drv.kick();                      // publish: avail.idx += chains added since the last kick
 *   const chain = q.pop();           // device side
 *   q.pushUsed(chain!.head, 512);
 *   drv.used();                      // [{ id: head, len: 512 }]; frees the chain's descriptors
 *
 * Well-formed chains come from addChain (direct, or through an indirect table
 * with `{ indirect: true, indirectAddr }`). Hostile states come from the raw
 * pokes: writeDesc (any addr/len/flags/next, addr as a bigint up to 2^64-1),
 * writeTable (an indirect table), setAvailIdx, setAvailEntry, setAvailFlags.
 * Notification state: setNoInterrupt, setUsedEvent (what the driver asks of the
 * device) and availEvent / usedFlags / kickNeeded (what the device asked of the driver).
 *
 * The driver zeroes the three parts on construction, as a real driver does (§2.7).
 * Everything is little-endian, single-threaded, and throws plain Errors on misuse.
 *
 * The second half of the file is the oracle and generator of the property tests
 * (RefQueue, hostileCaseArb, runCase), shared with bench/fuzz/targets/queue.ts: it would
 * sit better in its own helper file; it lives here to keep the queue's test
 * support in one owner's file.
 */
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_SIZE, VIRTQ_USED_F_NO_NOTIFY } from '../../devices/virtio/constants.js';
import { SplitQueue, splitQueueLayout, vringNeedEvent } from '../../devices/virtio/queue/split-queue.js';
import { QueueError, type DescriptorChain, type QueueConfig } from '../../devices/virtio/queue/types.js';
import fc from 'fast-check';
import { GuestMemory } from '../../lib/memory/guest-memory.js';

/** One buffer of a chain the driver offers: `write` marks it device-writable. */
export interface DriverBuffer {
  addr: number;
  len: number;
  write?: boolean;
}

/** A descriptor exactly as stored (§2.7.5): any values, for hostile tables. */
export interface RawDesc {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

/** A used ring element (§2.7.8). */
export interface UsedElem {
  id: number;
  len: number;
}

export interface VirtqDriverOptions {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated (default false). */
  eventIdx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated (default false). */
  indirect?: boolean;
}

export class VirtqDriver {
  readonly size: number;
  readonly config: QueueConfig;
  /** Free descriptor indices (a stack). */
  private readonly free: number[] = [];
  /** Descriptors each outstanding head holds, to free on used(). */
  private readonly chains = new Map<number, number[]>();
  /** avail.idx including chains not yet published by kick(). */
  private shadowAvail = 0;
  /** How far used() has read the used ring. */
  private lastUsed = 0;

  constructor(readonly memory: GuestMemory, opts: VirtqDriverOptions) {
    this.size = opts.size;
    this.config = { size: opts.size, descAddr: opts.descAddr, availAddr: opts.availAddr, usedAddr: opts.usedAddr, eventIdx: opts.eventIdx ?? false, indirect: opts.indirect ?? false };
    const l = splitQueueLayout(opts.size);
    memory.fill(opts.descAddr, l.desc);
    memory.fill(opts.availAddr, l.avail);
    memory.fill(opts.usedAddr, l.used);
    for (let i = opts.size - 1; i >= 0; i--) this.free.push(i);
  }

  /** Free descriptors left in the table. */
  get freeCount(): number {
    return this.free.length;
  }

  /**
   * Writes a chain into the descriptor table (or into an indirect table at `indirectAddr`,
   * referenced by a single descriptor) and puts its head in the next avail slot. Not visible
   * to the device until kick(). Returns the head index. Throws when out of descriptors.
   */
  addChain(bufs: readonly DriverBuffer[], opts: { indirect?: boolean; indirectAddr?: number } = {}): number {
    let head: number;
    if (opts.indirect) {
      if (opts.indirectAddr === undefined) throw new Error('addChain: indirect needs indirectAddr');
      this.writeTable(opts.indirectAddr, bufs.map((b, i) => ({
        addr: b.addr, len: b.len, flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (i < bufs.length - 1 ? VIRTQ_DESC_F_NEXT : 0), next: i + 1,
      })));
      const [d] = this.take(1);
      head = d!;
      this.writeDesc(head, { addr: opts.indirectAddr, len: bufs.length * VIRTQ_DESC_SIZE, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      this.chains.set(head, [head]);
    } else {
      if (bufs.length === 0) throw new Error('addChain: empty chain');
      const ds = this.take(bufs.length);
      bufs.forEach((b, i) => this.writeDesc(ds[i]!, {
        addr: b.addr, len: b.len, flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (i < bufs.length - 1 ? VIRTQ_DESC_F_NEXT : 0), next: ds[i + 1] ?? 0,
      }));
      head = ds[0]!;
      this.chains.set(head, ds);
    }
    this.setAvailEntry(this.shadowAvail, head);
    this.shadowAvail = (this.shadowAvail + 1) & 0xffff;
    return head;
  }

  /** Publishes every chain added since the last kick (writes avail.idx; the ring entries were written first). */
  kick(): void {
    this.setAvailIdx(this.shadowAvail);
  }

  /** Used elements the device published since the last call; frees their descriptors. */
  used(): UsedElem[] {
    const idx = this.usedIdx;
    const out: UsedElem[] = [];
    while (this.lastUsed !== idx) {
      const off = this.config.usedAddr + 4 + (this.lastUsed % this.size) * 8;
      const e = { id: this.memory.readU32(off), len: this.memory.readU32(off + 4) };
      out.push(e);
      const ds = this.chains.get(e.id);
      if (ds) {
        this.chains.delete(e.id);
        this.free.push(...ds);
      }
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT in avail.flags. */
  setNoInterrupt(on: boolean): void {
    this.setAvailFlags(on ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
  }

  /** Writes used_event (the u16 after the avail ring entries). */
  setUsedEvent(v: number): void {
    this.memory.writeU16(this.config.availAddr + 4 + 2 * this.size, v & 0xffff);
  }

  /** avail_event as the device last wrote it (the u16 after the used ring elements). */
  get availEvent(): number {
    return this.memory.readU16(this.config.usedAddr + 4 + 8 * this.size);
  }

  /** used.flags as the device last wrote it. */
  get usedFlags(): number {
    return this.memory.readU16(this.config.usedAddr);
  }

  /** used.idx as the device last published it. */
  get usedIdx(): number {
    return this.memory.readU16(this.config.usedAddr + 2);
  }

  /** avail.idx in guest memory (what the device sees). */
  get availIdx(): number {
    return this.memory.readU16(this.config.availAddr + 2);
  }

  /** The driver's side of §2.7.10: would publishing from `oldIdx` to the current avail.idx need a kick? */
  kickNeeded(oldIdx: number): boolean {
    if (this.config.eventIdx) return vringNeedEvent(this.availEvent, this.availIdx, oldIdx);
    return (this.usedFlags & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  // ---- raw pokes, for hostile states ----

  /** Writes descriptor `index` (0..size-1) of the descriptor table verbatim. */
  writeDesc(index: number, d: RawDesc): void {
    writeRawDesc(this.memory, this.config.descAddr + index * VIRTQ_DESC_SIZE, d);
  }

  /** Writes an indirect table of `descs` at `addr` (16 bytes each). */
  writeTable(addr: number, descs: readonly RawDesc[]): void {
    descs.forEach((d, i) => writeRawDesc(this.memory, addr + i * VIRTQ_DESC_SIZE, d));
  }

  /** Writes avail.idx (any u16), also resetting what addChain() will use next. */
  setAvailIdx(v: number): void {
    this.memory.writeU16(this.config.availAddr + 2, v & 0xffff);
    this.shadowAvail = v & 0xffff;
  }

  /** Writes avail.ring[idx % size] = head (any u16). */
  setAvailEntry(idx: number, head: number): void {
    this.memory.writeU16(this.config.availAddr + 4 + 2 * (idx % this.size), head & 0xffff);
  }

  /** Writes avail.flags verbatim. */
  setAvailFlags(v: number): void {
    this.memory.writeU16(this.config.availAddr, v & 0xffff);
  }

  private take(n: number): number[] {
    if (n > this.free.length) throw new Error(`addChain: ${n} descriptors needed, ${this.free.length} free`);
    return this.free.splice(this.free.length - n, n).reverse();
  }
}

/** Writes one descriptor (§2.7.5 layout) at `gpa`. `addr` may be a bigint up to 2^64-1. */
export function writeRawDesc(memory: GuestMemory, gpa: number, d: RawDesc): void {
  memory.writeU64(gpa, BigInt(d.addr));
  memory.writeU32(gpa + 8, d.len >>> 0);
  memory.writeU16(gpa + 12, d.flags & 0xffff);
  memory.writeU16(gpa + 14, d.next & 0xffff);
}

// ---- Reference model and hostile-case generator for property tests (test/unit/.../split-queue.fuzz.test.ts, bench/fuzz/targets/queue.ts) ----

/** A buffer as the reference model sees it: one piece of one region. */
export interface RefSegment {
  addr: number;
  len: number;
}

/** What a correct device pop() does with the current guest state. */
export type RefPop =
  | { kind: 'empty' }
  | { kind: 'error'; reason: string; head?: number }
  | { kind: 'ok'; head: number; readable: RefSegment[]; writable: RefSegment[]; viaIndirect: boolean; splits: number };

const TWO_53 = 2n ** 53n;

/**
 * An independent, deliberately naive re-statement of the pop() rules (BigInt arithmetic,
 * GuestMemory's generic accessors, no shared code with the device), used as the oracle of
 * differential tests. Checks each descriptor in the order documented in descriptor-chain.ts.
 */
export class RefQueue {
  nextAvail = 0;

  constructor(private readonly memory: GuestMemory, private readonly cfg: QueueConfig) {}

  pop(): RefPop {
    const m = this.memory;
    const size = this.cfg.size;
    const availIdx = m.readU16(this.cfg.availAddr + 2);
    const pending = (availIdx - this.nextAvail + 0x10000) % 0x10000;
    if (pending === 0) return { kind: 'empty' };
    if (pending > size) return { kind: 'error', reason: 'avail-idx' };
    const head = m.readU16(this.cfg.availAddr + 4 + 2 * (this.nextAvail % size));
    this.nextAvail = (this.nextAvail + 1) % 0x10000;
    if (head >= size) return { kind: 'error', reason: 'head-range' };
    const err = (reason: string): RefPop => ({ kind: 'error', reason, head });

    const readable: RefSegment[] = [];
    const writable: RefSegment[] = [];
    let rTotal = 0n;
    let wTotal = 0n;
    let sawWrite = false;
    let splits = 0;
    let base = BigInt(this.cfg.descAddr);
    let entries = size;
    let visited = 0;
    let nested = false;
    let i = head;
    for (;;) {
      if (visited === entries) return err('loop');
      visited++;
      const at = Number(base) + 16 * i;
      const addr = m.readU64(at);
      const len = m.readU32(at + 8);
      const flags = m.readU16(at + 12);
      const next = m.readU16(at + 14);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (nested) return err('indirect-nested');
        if (!this.cfg.indirect) return err('indirect-not-negotiated');
        if (flags & VIRTQ_DESC_F_NEXT) return err('indirect-next');
        if (len === 0 || len % 16 !== 0 || len / 16 > size) return err('indirect-len');
        if (!this.isRam(addr, len)) return err('indirect-addr');
        base = addr;
        entries = len / 16;
        visited = 0;
        nested = true;
        i = 0;
        continue;
      }
      const write = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (write) sawWrite = true;
      else if (sawWrite) return err('order');
      if (len > 0) {
        if (!this.isRam(addr, len)) return err('buffer-addr');
        const pieces = this.pieces(Number(addr), len);
        splits += pieces.length - 1;
        (write ? writable : readable).push(...pieces);
        if (write) wTotal += BigInt(len);
        else rTotal += BigInt(len);
        if (rTotal >= 2n ** 32n || wTotal >= 2n ** 32n || rTotal + wTotal > 2n ** 32n) return err('too-long');
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return { kind: 'ok', head, readable, writable, viaIndirect: nested, splits };
      if (next >= entries) return err('next-range');
      i = next;
    }
  }

  private isRam(addr: bigint, len: number): boolean {
    return addr + BigInt(len) <= TWO_53 && this.memory.isValid(Number(addr), len);
  }

  /** [addr, addr+len) intersected with each region, in address order. */
  private pieces(addr: number, len: number): RefSegment[] {
    const out: RefSegment[] = [];
    for (const r of this.memory.regions) {
      const lo = Math.max(addr, r.gpa);
      const hi = Math.min(addr + len, r.gpa + r.size);
      if (lo < hi) out.push({ addr: lo, len: hi - lo });
    }
    return out;
  }
}

/**
 * Guest RAM for hostile cases: adjacent small regions (borders at B1, B3, B4), a hole,
 * and a 4 GiB high region (lazily allocated: only touched pages cost memory) so that
 * chains can reach the 2^32-byte limits with real RAM behind them, followed by an
 * adjacent small region (border B2).
 */
export const FUZZ_LAYOUT: ReadonlyArray<{ gpa: number; size: number }> = [
  { gpa: 0x0, size: 0x4000 },
  { gpa: 0x4000, size: 0x4000 }, // B1 = 0x4000; hole [0x8000, 0x10000)
  { gpa: 0x10000, size: 0x2000 },
  { gpa: 0x12000, size: 0x2000 }, // B3 = 0x12000
  { gpa: 0x14000, size: 0x2000 }, // B4 = 0x14000
  { gpa: 2 ** 32, size: 2 ** 32 },
  { gpa: 2 ** 33, size: 0x4000 }, // B2 = 2^33
];
const B1 = 0x4000;
const B2 = 2 ** 33;
const B3 = 0x12000;
const B4 = 0x14000;
/** Largest queue size the generator uses. */
export const FUZZ_MAX_SIZE = 64;
/** Two indirect tables per case: one inside a region, one (unaligned) across border B4. */
export const FUZZ_TABLES = [0x3000, B4 - 0x208] as const;

/** Where the rings go: all in one region, or each across a region border. */
function placement(p: number, size: number): { descAddr: number; availAddr: number; usedAddr: number } {
  if (p === 0) return { descAddr: 0x0, availAddr: 0x1000, usedAddr: 0x2000 };
  return {
    descAddr: B1 - 16 * Math.ceil(size / 2), // half below the border, half above (size 1: just below)
    availAddr: B2 - 2 * Math.ceil(size / 2) - 2,
    usedAddr: B3 - 4 * size - 4, // used elements then straddle B3 at a 4-byte offset
  };
}

/** A generated hostile queue state. */
export interface HostileCase {
  size: number;
  placement: 0 | 1;
  eventIdx: boolean;
  indirect: boolean;
  /** Exactly `size` descriptors. */
  descs: RawDesc[];
  /** Contents of the two indirect tables (up to 2 * size entries each; the rest is zeroes). */
  tables: [RawDesc[], RawDesc[]];
  availFlags: number;
  availIdx: number;
  /** Exactly `size` avail ring entries. */
  availRing: number[];
}

const U64_MAX = 2n ** 64n - 1n;
/** Addresses near which bugs live: region borders, the hole, the tables, 2^32/2^53/2^64. */
const INTERESTING_ADDRS: bigint[] = [
  0, 0x3000, B1, 0x8000, 0x10000, B3, B4, 0x16000, ...FUZZ_TABLES, 2 ** 32, B2, B2 + 0x4000,
  2 ** 53, 2 ** 32 - 1,
].map(BigInt).concat([2n ** 64n, 2n ** 63n]);

/** fast-check arbitrary of hostile cases (shrinkable): mostly plausible values near the edges, some fully random. */
export function hostileCaseArb(): fc.Arbitrary<HostileCase> {
  const u16 = fc.integer({ min: 0, max: 0xffff });
  const hostileAddr = fc.oneof(
    { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...INTERESTING_ADDRS), fc.integer({ min: -40, max: 40 })).map(([a, d]) => clampU64(a + BigInt(d))) },
    { weight: 4, arbitrary: fc.integer({ min: 0, max: 0x16000 }).map(BigInt) },
    { weight: 1, arbitrary: fc.integer({ min: 2 ** 32, max: B2 + 0x4000 }).map(BigInt) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }) },
  );
  const hostileLen = fc.oneof(
    { weight: 2, arbitrary: fc.constant(0) },
    { weight: 5, arbitrary: fc.integer({ min: 1, max: 0x40 }) },
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 2 * FUZZ_MAX_SIZE + 2 }).map((n) => n * 16) },
    { weight: 2, arbitrary: fc.constantFrom(0x2000, 0x4000, 0x8000, 0x7fff_ffff, 0x8000_0000, 0xffff_fff0, 0xffff_ffff) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
  );
  /** Mostly the flag combinations of real chains, sometimes any bits. */
  const flags = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_WRITE, 0) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 7 }) },
    { weight: 1, arbitrary: u16 },
  );
  return fc.constantFrom(1, 2, 4, 8, 16, 32, 64).chain((size) => {
    const next = fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: 0, max: size - 1 }) },
      { weight: 3, arbitrary: fc.integer({ min: 0, max: 2 * size + 1 }) },
      { weight: 1, arbitrary: u16 },
    );
    /** A descriptor a real driver could write (RAM, small), linked at random: loops and order errors come from these. */
    const benign = fc.record({
      addr: fc.oneof(fc.integer({ min: 0, max: 0x7f00 }), fc.integer({ min: 0x10000, max: 0x15f00 })).map(BigInt),
      len: fc.integer({ min: 0, max: 0x100 }),
      flags,
      next,
    });
    /** Large buffers in the 4 GiB region: the 2^32 limits. */
    const big = fc.record({
      addr: fc.integer({ min: 2 ** 32, max: 2 ** 32 + 0x1000 }).map(BigInt),
      len: fc.oneof(fc.constantFrom(0x7fff_ffff, 0x8000_0000, 0xffff_f000, 0xffff_ffff), fc.integer({ min: 0x4000_0000, max: 0xffff_0000 })),
      flags: fc.constantFrom(VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0, VIRTQ_DESC_F_WRITE),
      next,
    });
    /** A pointer to one of the two indirect tables, of a plausible or slightly wrong length. */
    const toTable = fc.record({
      addr: fc.constantFrom(...FUZZ_TABLES).map(BigInt),
      len: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: size + 1 }).map((n) => 16 * n) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 16 * (2 * size + 1) }) }),
      flags: fc.oneof({ weight: 4, arbitrary: fc.constant(VIRTQ_DESC_F_INDIRECT) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }).map((f) => f | VIRTQ_DESC_F_INDIRECT) }),
      next,
    });
    const hostile = fc.record({ addr: hostileAddr, len: hostileLen, flags, next });
    const desc = fc.oneof({ weight: 6, arbitrary: benign }, { weight: 3, arbitrary: hostile }, { weight: 1, arbitrary: big }, { weight: 1, arbitrary: toTable });
    const head = fc.oneof({ weight: 10, arbitrary: fc.integer({ min: 0, max: size }) }, { weight: 1, arbitrary: u16 });
    const table = fc.array(desc, { maxLength: 2 * size });
    return fc.record({
      size: fc.constant(size),
      placement: fc.constantFrom(0 as const, 1 as const),
      eventIdx: fc.boolean(),
      indirect: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      descs: fc.array(desc, { minLength: size, maxLength: size }),
      tables: fc.tuple(table, table),
      availFlags: fc.oneof(fc.constant(0), u16),
      availIdx: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: size + 2 }) }, { weight: 1, arbitrary: u16 }),
      availRing: fc.array(head, { minLength: size, maxLength: size }),
    });
  });
}

function clampU64(v: bigint): bigint {
  return v < 0n ? 0n : v > U64_MAX ? U64_MAX : v;
}

/** Memory for hostile cases; reuse it across cases (applyCase zeroes everything a case writes). */
export function fuzzMemory(): GuestMemory {
  return GuestMemory.fromBuffers(FUZZ_LAYOUT);
}

/** Writes `c` into `memory` (zeroing the previous case first) and returns the queue config. */
export function applyCase(memory: GuestMemory, c: HostileCase): QueueConfig {
  for (const r of memory.regions) r.bytes.fill(0, Math.max(0, r.size - 0x4000)); // the small regions entirely; the top of the 4 GiB one
  const cfg: QueueConfig = { size: c.size, ...placement(c.placement, c.size), eventIdx: c.eventIdx, indirect: c.indirect };
  c.descs.forEach((d, i) => writeRawDesc(memory, cfg.descAddr + 16 * i, d));
  c.tables.forEach((t, k) => t.forEach((d, i) => writeRawDesc(memory, FUZZ_TABLES[k]! + 16 * i, d)));
  memory.writeU16(cfg.availAddr, c.availFlags);
  memory.writeU16(cfg.availAddr + 2, c.availIdx);
  c.availRing.forEach((h, i) => memory.writeU16(cfg.availAddr + 4 + 2 * i, h));
  return cfg;
}

/** Counts of what hostile cases led to. */
export interface FuzzStats {
  cases: number;
  pops: number;
  chains: number;
  /** Chains that went through an indirect table. */
  indirectChains: number;
  /** Chains with a buffer split at a region border. */
  splitChains: number;
  empty: number;
  /** QueueError reasons seen, with counts. */
  errors: Record<string, number>;
  /** Slowest single pop(), in milliseconds. */
  maxPopMs: number;
}

export function newFuzzStats(): FuzzStats {
  return { cases: 0, pops: 0, chains: 0, indirectChains: 0, splitChains: 0, empty: 0, errors: {}, maxPopMs: 0 };
}

/**
 * Runs one hostile case: pops until the ring is empty, the avail index is rejected, or size + 1
 * pops, comparing each pop() with RefQueue and checking the chain invariants on its own (every
 * segment non-empty and inside one region, totals equal the sums, at most 2 * size descriptors'
 * worth of segments). Throws an Error describing the first disagreement.
 */
export function runCase(memory: GuestMemory, c: HostileCase, stats: FuzzStats): void {
  const cfg = applyCase(memory, c);
  const q = new SplitQueue(memory, cfg);
  const ref = new RefQueue(memory, cfg);
  stats.cases++;
  for (let n = 0; n <= c.size; n++) {
    let got: DescriptorChain | null = null;
    let thrown: unknown = null;
    const t0 = performance.now();
    try {
      got = q.pop();
    } catch (e) {
      thrown = e;
    }
    const dt = performance.now() - t0;
    if (dt > stats.maxPopMs) stats.maxPopMs = dt;
    // The model goes second: with EVENT_IDX, pop() writes avail_event before it walks the chain, and a
    // hostile indirect table may overlap the used ring; both sides then read the same bytes.
    const want = ref.pop();
    stats.pops++;
    if (thrown !== null && !(thrown instanceof QueueError)) throw new Error(`pop ${n}: threw a non-QueueError: ${String((thrown as Error)?.stack ?? thrown)}`);
    if (q.lastAvailIndex !== ref.nextAvail) throw new Error(`pop ${n}: device is at avail ${q.lastAvailIndex}, model at ${ref.nextAvail}`);
    if (want.kind === 'empty') {
      if (got !== null || thrown !== null) throw new Error(`pop ${n}: expected an empty ring, got ${thrown ? String(thrown) : 'a chain'}`);
      stats.empty++;
      return;
    }
    if (want.kind === 'error') {
      const e = thrown as QueueError | null;
      if (!e) throw new Error(`pop ${n}: expected QueueError(${want.reason}), got a chain ${JSON.stringify(got)}`);
      if (e.reason !== want.reason || e.head !== want.head) throw new Error(`pop ${n}: expected QueueError(${want.reason}, head ${want.head}), got ${e.reason}/${e.head}: ${e.message}`);
      stats.errors[e.reason] = (stats.errors[e.reason] ?? 0) + 1;
      if (want.reason === 'avail-idx') return;
      continue;
    }
    if (thrown) throw new Error(`pop ${n}: expected a chain, got ${String(thrown)}`);
    checkChain(memory, cfg.size, got!);
    const same = (a: readonly { addr: number; len: number }[], b: RefSegment[]) => a.length === b.length && a.every((s, i) => s.addr === b[i]!.addr && s.len === b[i]!.len);
    if (got!.head !== want.head || !same(got!.readable, want.readable) || !same(got!.writable, want.writable)) {
      throw new Error(`pop ${n}: chain ${JSON.stringify(got)} differs from the model ${JSON.stringify(want)}`);
    }
    stats.chains++;
    if (want.viaIndirect) stats.indirectChains++;
    if (want.splits > 0) stats.splitChains++;
  }
}

/** The chain invariants, checked without the model. */
function checkChain(memory: GuestMemory, size: number, ch: DescriptorChain): void {
  const inOneRegion = (s: { addr: number; len: number }) => s.len > 0 && memory.regions.some((r) => s.addr >= r.gpa && s.addr + s.len <= r.gpa + r.size);
  for (const s of [...ch.readable, ...ch.writable]) if (!inOneRegion(s)) throw new Error(`segment ${JSON.stringify(s)} is not inside one region`);
  const sum = (ss: readonly { len: number }[]) => ss.reduce((n, s) => n + s.len, 0);
  if (sum(ch.readable) !== ch.readableLength || sum(ch.writable) !== ch.writableLength) throw new Error('chain totals differ from the segment sums');
  if (ch.readableLength > 0xffff_ffff || ch.writableLength > 0xffff_ffff || ch.readableLength + ch.writableLength > 2 ** 32) throw new Error('chain exceeds the 2^32-byte limits');
  if (ch.readable.length + ch.writable.length > 2 * size * memory.regions.length) throw new Error('more segments than the TTL allows');
  if (ch.head < 0 || ch.head >= size) throw new Error(`head ${ch.head} out of range`);
}
