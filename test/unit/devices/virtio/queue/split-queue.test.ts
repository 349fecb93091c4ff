/**
 * SplitQueue construction and pop(): well-formed chains (direct, indirect,
 * across region borders) and every rule that rejects a chain. The driver side
 * is test/helpers/virtq-driver.ts over buffer-backed guest memory.
 */
import test from 'ava';
import { VIRTQ_DESC_F_INDIRECT as INDIRECT, VIRTQ_DESC_F_NEXT as NEXT, VIRTQ_DESC_F_WRITE as WRITE } from '../../../../../devices/virtio/constants.js';
import { guestStruct } from '../../../../../devices/virtio/queue/guest-struct.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { QueueError, type QueueConfig } from '../../../../../devices/virtio/queue/types.js';
import { GuestMemory } from '../../../../../lib/memory/guest-memory.js';
import { VirtqDriver, type VirtqDriverOptions } from '../../../../helpers/virtq-driver.js';

const KiB = 1024;
/** Regions A and B are adjacent at 64 KiB; a hole follows; region C sits at 192 KiB. */
const A_B_BORDER = 0x10000;
const HOLE = 0x20000;
const C = 0x30000;
const C_END = 0x31000;

function memory(): GuestMemory {
  return GuestMemory.fromBuffers([
    { gpa: 0, size: 64 * KiB },
    { gpa: A_B_BORDER, size: 64 * KiB },
    { gpa: C, size: 4 * KiB },
  ]);
}

function setup(opts: Partial<VirtqDriverOptions> = {}) {
  const mem = memory();
  const drv = new VirtqDriver(mem, { size: 8, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000, indirect: true, ...opts });
  const q = new SplitQueue(mem, drv.config);
  return { mem, drv, q };
}

/** Expects pop() to throw QueueError with `reason` (and `head` when given); a consumed head is returned with length 0. */
function popFails(t: import('ava').ExecutionContext, q: SplitQueue, reason: string, head?: number, what?: string): QueueError {
  const e = t.throws(() => q.pop(), { instanceOf: QueueError }, what) as QueueError;
  t.is(e.reason, reason, what ?? e.message);
  t.is(e.code, 'FLINTVM_E_VIRTQUEUE');
  if (head !== undefined) t.is(e.head, head, 'the error names the consumed head');
  // What a device that fails the request does (QueueError's contract): the consumed head goes back.
  if (e.head !== undefined) q.pushUsed(e.head, 0);
  return e;
}

// ---- construction ----

test('constructor accepts a valid layout, including rings across adjacent regions', (t) => {
  const mem = memory();
  const ok: QueueConfig = { size: 256, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000, eventIdx: true, indirect: true };
  t.is(new SplitQueue(mem, ok).size, 256);
  t.notThrows(() => new SplitQueue(mem, { ...ok, size: 1 }));
  // The largest queue: 512 KiB of descriptors, 64 KiB of avail ring, 256 KiB of used ring.
  const big = GuestMemory.fromBuffers([{ gpa: 0, size: 1024 * KiB }]);
  t.is(new SplitQueue(big, { ...ok, size: 32768, descAddr: 0, availAddr: 512 * KiB, usedAddr: 640 * KiB }).size, 32768);
});

test('constructor rejects bad sizes', (t) => {
  const mem = memory();
  for (const size of [0, 3, 6, 100, 65536, 32769, -8, 1.5, NaN, Infinity]) {
    const e = t.throws(() => new SplitQueue(mem, { size, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000, eventIdx: false, indirect: false }), { instanceOf: QueueError }, `size ${size}`) as QueueError;
    t.is(e.reason, 'size');
  }
});

test('constructor rejects misaligned, unsafe and out-of-RAM ring addresses', (t) => {
  const mem = memory();
  const base: QueueConfig = { size: 8, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000, eventIdx: false, indirect: false };
  const cases: [Partial<QueueConfig>, string][] = [
    [{ descAddr: 0x1008 }, 'alignment'],
    [{ availAddr: 0x2001 }, 'alignment'],
    [{ usedAddr: 0x3002 }, 'alignment'],
    [{ descAddr: HOLE }, 'address'], // in the hole
    [{ descAddr: HOLE - 64 }, 'address'], // runs into the hole
    [{ availAddr: C_END - 20 }, 'address'], // avail ring (with used_event) is 22 bytes for size 8
    [{ usedAddr: C_END - 70 + 2 }, 'address'], // used ring (with avail_event) is 70 bytes; 4-aligned start, 2 bytes short
    [{ descAddr: 2 ** 53 }, 'address'],
    [{ descAddr: -16 }, 'address'],
    [{ availAddr: NaN }, 'address'],
    [{ usedAddr: 2 ** 64 }, 'address'],
  ];
  for (const [patch, reason] of cases) {
    const e = t.throws(() => new SplitQueue(mem, { ...base, ...patch }), { instanceOf: QueueError }, JSON.stringify(patch)) as QueueError;
    t.is(e.reason, reason, JSON.stringify(patch));
  }
  // The exact fits are fine: avail ring ending at C_END, used ring ending at C_END.
  t.notThrows(() => new SplitQueue(mem, { ...base, availAddr: C_END - 22, usedAddr: C_END - 72 }));
  t.notThrows(() => new SplitQueue(mem, { ...base, descAddr: A_B_BORDER - 64 }), 'desc table across the A/B border');
});

// ---- well-formed chains ----

test('pop returns null on an empty ring, then chains in FIFO order with readable and writable parts', (t) => {
  const { drv, q } = setup();
  t.is(q.pop(), null);
  const h1 = drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 100 }, { addr: 0xa000, len: 512, write: true }]);
  const h2 = drv.addChain([{ addr: 0xb000, len: 1, write: true }]);
  t.is(q.pop(), null, 'not visible before the kick');
  drv.kick();
  const c1 = q.pop()!;
  t.deepEqual(c1, {
    head: h1,
    readable: [{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 100 }],
    writable: [{ addr: 0xa000, len: 512 }],
    readableLength: 116,
    writableLength: 512,
  });
  const c2 = q.pop()!;
  t.is(c2.head, h2);
  t.deepEqual(c2.readable, []);
  t.deepEqual(c2.writable, [{ addr: 0xb000, len: 1 }]);
  t.is(q.pop(), null);
  t.is(q.lastAvailIndex, 2);
});

test('a chain of exactly queue-size descriptors is accepted (TTL boundary)', (t) => {
  const { drv, q } = setup();
  drv.addChain(Array.from({ length: 8 }, (_, i) => ({ addr: 0x8000 + i * 0x100, len: 0x10 })));
  drv.kick();
  const c = q.pop()!;
  t.is(c.readable.length, 8);
  t.is(c.readableLength, 0x80);
});

test('buffers across region borders are split into one segment per region', (t) => {
  const mem = GuestMemory.fromBuffers([
    { gpa: 0, size: 0x4000 },
    { gpa: 0x4000, size: 0x1000 },
    { gpa: 0x5000, size: 0x3000 },
  ]);
  const drv = new VirtqDriver(mem, { size: 4, descAddr: 0x100, availAddr: 0x200, usedAddr: 0x300 });
  const q = new SplitQueue(mem, drv.config);
  drv.addChain([{ addr: 0x3ff0, len: 0x20 }, { addr: 0x3800, len: 0x2000, write: true }]);
  drv.kick();
  const c = q.pop()!;
  t.deepEqual(c.readable, [{ addr: 0x3ff0, len: 0x10 }, { addr: 0x4000, len: 0x10 }]);
  t.deepEqual(c.writable, [{ addr: 0x3800, len: 0x800 }, { addr: 0x4000, len: 0x1000 }, { addr: 0x5000, len: 0x800 }]);
  t.is(c.readableLength, 0x20);
  t.is(c.writableLength, 0x2000);
  // Each segment is a single zero-copy view (what hostAddress needs for an iovec).
  for (const s of [...c.readable, ...c.writable]) t.notThrows(() => mem.slice(s.addr, s.len));
});

test('zero-length descriptors are skipped (no segment, no address check) but count toward the TTL', (t) => {
  const { drv, q } = setup();
  drv.writeDesc(0, { addr: 2n ** 64n - 1n, len: 0, flags: NEXT, next: 1 });
  drv.writeDesc(1, { addr: 0x8000, len: 4, flags: NEXT, next: 2 });
  drv.writeDesc(2, { addr: HOLE, len: 0, flags: WRITE, next: 0 });
  drv.setAvailEntry(0, 0);
  drv.setAvailIdx(1);
  t.deepEqual(q.pop(), { head: 0, readable: [{ addr: 0x8000, len: 4 }], writable: [], readableLength: 4, writableLength: 0 });
  // A loop of zero-length descriptors still ends.
  drv.writeDesc(3, { addr: 0, len: 0, flags: NEXT, next: 4 });
  drv.writeDesc(4, { addr: 0, len: 0, flags: NEXT, next: 3 });
  drv.setAvailEntry(1, 3);
  drv.setAvailIdx(2);
  popFails(t, q, 'loop', 3);
});

test('the used ring and avail ring indices wrap at 2^16 (70000 round trips, descriptors recycled)', (t) => {
  const { drv, q } = setup({ size: 4 });
  for (let i = 0; i < 70000; i++) {
    const head = drv.addChain([{ addr: 0x8000, len: 8 }, { addr: 0x9000, len: 8, write: true }]);
    drv.kick();
    const c = q.pop();
    if (!c || c.head !== head) return t.fail(`round ${i}: ${JSON.stringify(c)}`);
    q.pushUsed(c.head, i & 0xff);
    const used = drv.used();
    if (used.length !== 1 || used[0]!.id !== head || used[0]!.len !== (i & 0xff)) return t.fail(`round ${i}: used ${JSON.stringify(used)}`);
  }
  t.is(q.lastAvailIndex, 70000 & 0xffff);
  t.is(drv.usedIdx, 70000 & 0xffff);
  t.is(drv.freeCount, 4);
});

// ---- the avail ring ----

test('an avail index more than queue-size ahead is a driver bug: QueueError, nothing consumed', (t) => {
  const { drv, q } = setup();
  drv.setAvailIdx(9);
  popFails(t, q, 'avail-idx');
  popFails(t, q, 'avail-idx', undefined, 'reported again');
  t.is(q.lastAvailIndex, 0);
  drv.setAvailIdx(0xffff); // "behind" the device by one = 65535 ahead
  popFails(t, q, 'avail-idx');
  drv.setAvailIdx(8); // exactly size ahead is legal: 8 heads of descriptor 0 (zeroed: an empty readable buffer)
  for (let i = 0; i < 8; i++) t.truthy(q.pop());
  t.is(q.pop(), null);
});

test('a driver that publishes more chains than the device can have out is refused until some come back', (t) => {
  const { drv, q } = setup();
  // 8 chains out (one head, re-published: the driver breaks the rules, but each entry is a valid head).
  drv.setAvailIdx(8);
  const held = Array.from({ length: 8 }, () => q.pop()!.head);
  t.is(held.length, 8);
  // The device holds a full queue; another entry names a head it still has.
  drv.setAvailIdx(9);
  const e = popFails(t, q, 'held');
  t.regex(e.message, /holds 8 chains/);
  popFails(t, q, 'held', undefined, 'reported again, nothing consumed');
  t.is(q.lastAvailIndex, 8);
  // Once one comes back, the next entry pops; then the queue is full again.
  q.pushUsed(held[0]!, 0);
  t.truthy(q.pop());
  drv.setAvailIdx(10);
  popFails(t, q, 'held');
  for (const h of held.slice(1)) q.pushUsed(h, 0);
  t.truthy(q.pop(), 'with 7 back, the tenth entry pops');
  t.is(q.pop(), null);
});

test('a head outside the descriptor table is rejected and consumed; the next entry still pops', (t) => {
  const { drv, q } = setup();
  drv.setAvailEntry(0, 8);
  drv.setAvailEntry(1, 0xffff);
  drv.writeDesc(2, { addr: 0x8000, len: 4, flags: 0, next: 0 });
  drv.setAvailEntry(2, 2);
  drv.setAvailIdx(3);
  const e = popFails(t, q, 'head-range');
  t.is(e.head, undefined, 'no head to return');
  popFails(t, q, 'head-range');
  t.is(q.pop()!.head, 2);
});

// ---- descriptor walks ----

/** Publishes descriptor `head` as the next chain. */
function offer(drv: VirtqDriver, head: number): void {
  drv.setAvailEntry(drv.availIdx, head);
  drv.setAvailIdx(drv.availIdx + 1);
}

test('loops are cut by the TTL: next pointing back, self-loops, longer cycles', (t) => {
  const { drv, q } = setup();
  drv.writeDesc(0, { addr: 0x8000, len: 4, flags: NEXT, next: 1 });
  drv.writeDesc(1, { addr: 0x8000, len: 4, flags: NEXT, next: 0 });
  offer(drv, 0);
  popFails(t, q, 'loop', 0);
  drv.writeDesc(5, { addr: 0x8000, len: 4, flags: NEXT | WRITE, next: 5 });
  offer(drv, 5);
  popFails(t, q, 'loop', 5);
  for (let i = 0; i < 8; i++) drv.writeDesc(i, { addr: 0x8000, len: 1, flags: NEXT, next: (i + 1) % 8 });
  offer(drv, 3);
  popFails(t, q, 'loop', 3);
});

test('next outside the table is rejected', (t) => {
  const { drv, q } = setup();
  drv.writeDesc(0, { addr: 0x8000, len: 4, flags: NEXT, next: 8 });
  offer(drv, 0);
  popFails(t, q, 'next-range', 0);
  drv.writeDesc(0, { addr: 0x8000, len: 4, flags: NEXT, next: 0xffff });
  offer(drv, 0);
  popFails(t, q, 'next-range', 0);
  drv.writeDesc(0, { addr: 0x8000, len: 4, flags: 0, next: 0xffff });
  offer(drv, 0);
  t.truthy(q.pop(), 'next is ignored without NEXT');
});

test('buffers outside guest RAM are rejected, including addr+len overflow near 2^53 and 2^64', (t) => {
  const { drv, q } = setup();
  const bad: [bigint | number, number][] = [
    [HOLE, 1], // in the hole
    [HOLE - 4, 8], // runs from RAM into the hole
    [C_END - 1, 2], // past the end of RAM
    [C_END, 1],
    [2 ** 53 - 1, 1],
    [2n ** 53n, 1],
    [2n ** 53n - 1n, 0xffff_ffff],
    [2n ** 64n - 8n, 16], // wraps 2^64 into low RAM if added in 64 bits
    [2n ** 64n - 1n, 1],
    [2n ** 63n, 0x1000],
    [0x1_0000_0000n, 4], // high word set
    [0x10, 0xffff_ffff], // starts in RAM, far too long
  ];
  for (const [addr, len] of bad) {
    drv.writeDesc(1, { addr, len, flags: 0, next: 0 });
    offer(drv, 1);
    popFails(t, q, 'buffer-addr', 1, `[${addr}, +${len})`);
  }
  // The last byte of RAM is fine.
  drv.writeDesc(1, { addr: C_END - 1, len: 1, flags: WRITE, next: 0 });
  offer(drv, 1);
  t.deepEqual(q.pop()!.writable, [{ addr: C_END - 1, len: 1 }]);
});

test('a device-readable descriptor after a device-writable one is rejected (zero-length ones too)', (t) => {
  const { drv, q } = setup();
  drv.writeDesc(0, { addr: 0x8000, len: 4, flags: NEXT | WRITE, next: 1 });
  drv.writeDesc(1, { addr: 0x9000, len: 4, flags: 0, next: 0 });
  offer(drv, 0);
  popFails(t, q, 'order', 0);
  drv.writeDesc(1, { addr: 0, len: 0, flags: 0, next: 0 });
  offer(drv, 0);
  popFails(t, q, 'order', 0);
});

test('chains whose totals exceed the 2^32-byte limits are rejected', (t) => {
  // 4 GiB of lazily allocated RAM at 4 GiB: buffers this large have real memory behind them.
  const mem = GuestMemory.fromBuffers([{ gpa: 0, size: 0x10000 }, { gpa: 2 ** 32, size: 2 ** 32 }]);
  const drv = new VirtqDriver(mem, { size: 8, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 });
  const q = new SplitQueue(mem, drv.config);
  const hi = 2 ** 32;
  const chain = (...bufs: [number, boolean][]) => {
    bufs.forEach(([len, write], i) => drv.writeDesc(i, { addr: hi, len, flags: (write ? WRITE : 0) | (i < bufs.length - 1 ? NEXT : 0), next: i + 1 }));
    offer(drv, 0);
  };
  chain([0xffff_ffff, false]);
  t.is(q.pop()!.readableLength, 0xffff_ffff, 'a u32 of readable bytes');
  chain([0x8000_0000, false], [0x8000_0000, false]);
  popFails(t, q, 'too-long', 0, 'readable sum = 2^32');
  chain([0x8000_0000, true], [0x8000_0000, true]);
  popFails(t, q, 'too-long', 0, 'writable sum = 2^32');
  chain([0xffff_ffff, false], [1, true]);
  const c = q.pop()!;
  t.is(c.readableLength + c.writableLength, 2 ** 32, 'exactly 2^32 in total is allowed (§2.7.5.2)');
  chain([0xffff_ffff, false], [2, true]);
  popFails(t, q, 'too-long', 0, 'total 2^32 + 1');
});

// ---- indirect descriptors ----

test('indirect chains: a single indirect descriptor, and normal descriptors followed by one (§2.7.5.3.2)', (t) => {
  const { drv, q } = setup();
  const head = drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 32, write: true }, { addr: 0x9100, len: 32, write: true }], { indirect: true, indirectAddr: 0x6000 });
  drv.kick();
  t.deepEqual(q.pop(), {
    head, readable: [{ addr: 0x8000, len: 16 }], writable: [{ addr: 0x9000, len: 32 }, { addr: 0x9100, len: 32 }], readableLength: 16, writableLength: 64,
  });
  // Direct readable, then an indirect table (whose own WRITE flag is ignored) with readable + writable.
  drv.writeDesc(4, { addr: 0x8800, len: 8, flags: NEXT, next: 5 });
  drv.writeDesc(5, { addr: 0x6100, len: 32, flags: INDIRECT | WRITE, next: 0 });
  drv.writeTable(0x6100, [{ addr: 0x8900, len: 8, flags: NEXT, next: 1 }, { addr: 0x8a00, len: 8, flags: WRITE, next: 0 }]);
  offer(drv, 4);
  t.deepEqual(q.pop(), { head: 4, readable: [{ addr: 0x8800, len: 8 }, { addr: 0x8900, len: 8 }], writable: [{ addr: 0x8a00, len: 8 }], readableLength: 16, writableLength: 8 });
});

test('indirect tables: up to queue-size entries, anywhere in RAM (unaligned, across regions)', (t) => {
  const { drv, q } = setup();
  const bufs = Array.from({ length: 8 }, (_, i) => ({ addr: 0x8000 + 0x10 * i, len: 0x10, write: i >= 4 }));
  drv.addChain(bufs, { indirect: true, indirectAddr: A_B_BORDER - 0x38 }); // 16 bytes unaligned-ish, half in A, half in B
  drv.kick();
  const c = q.pop()!;
  t.is(c.readable.length, 4);
  t.is(c.writable.length, 4);
  drv.addChain(bufs.concat(bufs.slice(4)).map((b) => ({ ...b, write: true })), { indirect: true, indirectAddr: 0x6000 });
  drv.kick();
  popFails(t, q, 'indirect-len', undefined, '12 entries in a queue of 8');
});

test('a descriptor table read as u32 words and one read field by field (not 4-byte aligned) give the same chain', (t) => {
  // guestStruct gives the walk u32 words only for a 4-byte-aligned table in one region; an indirect
  // table may sit anywhere, so the walk also reads one through the DataView. Both must agree.
  const m = memory();
  t.not(guestStruct(m, 0x6000, 64).words, null);
  t.is(guestStruct(m, 0x6003, 64).words, null, 'an odd address has no word view');
  const bufs = [
    { addr: 0x8000, len: 0x10 }, { addr: 0x9000, len: 0x1000 },
    { addr: A_B_BORDER - 0x800, len: 0x1000, write: true }, // split at the region border
    { addr: C, len: 0x10, write: true },
  ];
  const chains = [0x6000, 0x6003, 0x6802].map((indirectAddr) => {
    const { drv, q } = setup();
    drv.addChain(bufs, { indirect: true, indirectAddr });
    drv.kick();
    const c = q.pop()!;
    return { readable: c.readable, writable: c.writable, readableLength: c.readableLength, writableLength: c.writableLength };
  });
  t.deepEqual(chains[0], {
    readable: [{ addr: 0x8000, len: 0x10 }, { addr: 0x9000, len: 0x1000 }],
    writable: [{ addr: A_B_BORDER - 0x800, len: 0x800 }, { addr: A_B_BORDER, len: 0x800 }, { addr: C, len: 0x10 }],
    readableLength: 0x1010, writableLength: 0x1010,
  });
  t.deepEqual(chains[1], chains[0]);
  t.deepEqual(chains[2], chains[0]);
});

test('indirect descriptors that break §2.7.5.3 are rejected', (t) => {
  const { drv, q } = setup();
  const cases: [string, () => void][] = [
    ['indirect-next', () => drv.writeDesc(0, { addr: 0x6000, len: 16, flags: INDIRECT | NEXT, next: 1 })],
    ['indirect-len', () => drv.writeDesc(0, { addr: 0x6000, len: 0, flags: INDIRECT, next: 0 })],
    ['indirect-len', () => drv.writeDesc(0, { addr: 0x6000, len: 8, flags: INDIRECT, next: 0 })],
    ['indirect-len', () => drv.writeDesc(0, { addr: 0x6000, len: 24, flags: INDIRECT, next: 0 })],
    ['indirect-len', () => drv.writeDesc(0, { addr: 0x6000, len: 16 * 9, flags: INDIRECT, next: 0 })],
    ['indirect-len', () => drv.writeDesc(0, { addr: 0x6000, len: 0xffff_fff0, flags: INDIRECT, next: 0 })],
    ['indirect-addr', () => drv.writeDesc(0, { addr: HOLE, len: 16, flags: INDIRECT, next: 0 })],
    ['indirect-addr', () => drv.writeDesc(0, { addr: C_END - 16, len: 32, flags: INDIRECT, next: 0 })],
    ['indirect-addr', () => drv.writeDesc(0, { addr: 2n ** 64n - 16n, len: 32, flags: INDIRECT, next: 0 })],
    ['indirect-nested', () => {
      drv.writeDesc(0, { addr: 0x6000, len: 32, flags: INDIRECT, next: 0 });
      drv.writeTable(0x6000, [{ addr: 0x8000, len: 4, flags: NEXT, next: 1 }, { addr: 0x6100, len: 16, flags: INDIRECT, next: 0 }]);
    }],
    ['loop', () => {
      drv.writeDesc(0, { addr: 0x6000, len: 32, flags: INDIRECT, next: 0 });
      drv.writeTable(0x6000, [{ addr: 0x8000, len: 4, flags: NEXT, next: 1 }, { addr: 0x8000, len: 4, flags: NEXT, next: 0 }]);
    }],
    ['next-range', () => {
      drv.writeDesc(0, { addr: 0x6000, len: 32, flags: INDIRECT, next: 0 });
      drv.writeTable(0x6000, [{ addr: 0x8000, len: 4, flags: NEXT, next: 2 }]); // entry 2 is past the 2-entry table
    }],
    ['order', () => {
      drv.writeDesc(0, { addr: 0x8000, len: 4, flags: WRITE | NEXT, next: 1 });
      drv.writeDesc(1, { addr: 0x6000, len: 16, flags: INDIRECT, next: 0 });
      drv.writeTable(0x6000, [{ addr: 0x8000, len: 4, flags: 0, next: 0 }]);
    }],
  ];
  for (const [reason, poke] of cases) {
    poke();
    offer(drv, 0);
    popFails(t, q, reason, 0);
  }
  // Without VIRTIO_F_INDIRECT_DESC an INDIRECT descriptor is itself an error.
  const plain = setup({ indirect: false });
  plain.drv.addChain([{ addr: 0x8000, len: 4 }], { indirect: true, indirectAddr: 0x6000 });
  plain.drv.kick();
  popFails(t, plain.q, 'indirect-not-negotiated', 0);
});

test('a chain is checked before it is returned: a table rewritten after pop() does not change it', (t) => {
  const { drv, q } = setup();
  const head = drv.addChain([{ addr: 0x8000, len: 4 }, { addr: 0x9000, len: 4, write: true }]);
  drv.kick();
  const c = q.pop()!;
  drv.writeDesc(head, { addr: 2n ** 64n - 1n, len: 0xffff_ffff, flags: NEXT, next: head });
  t.deepEqual(c.readable, [{ addr: 0x8000, len: 4 }]);
  t.deepEqual(c.writable, [{ addr: 0x9000, len: 4 }]);
});

test('rings at odd host offsets (regions starting at odd addresses) still work, through the slow path', (t) => {
  const mem = GuestMemory.fromBuffers([{ gpa: 1, size: 0x10000 }]);
  const drv = new VirtqDriver(mem, { size: 4, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 });
  const q = new SplitQueue(mem, drv.config);
  const head = drv.addChain([{ addr: 0x8000, len: 4, write: true }]);
  drv.kick();
  t.is(q.pop()!.head, head);
  q.pushUsed(head, 4);
  t.deepEqual(drv.used(), [{ id: head, len: 4 }]);
  t.true(q.needsInterrupt());
  drv.setNoInterrupt(true);
  q.pushUsed(head, 4);
  t.false(q.needsInterrupt());
});
