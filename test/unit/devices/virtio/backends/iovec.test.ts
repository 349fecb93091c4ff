/**
 * IovecQueue: the receive buffers' iovecs, added as buffers come and dropped
 * from the front, with each segment's host address looked up once.
 */
import test from 'ava';
import { decodeIovecs, IovecArray, IovecQueue } from '../../../../../devices/virtio/backends/iovec.js';
import { GuestAddressError } from '../../../../../lib/errors.js';
import { GuestMemory } from '../../../../../lib/memory/guest-memory.js';

const HOST = 0x7f00_0000_0000n;
/** Two regions with host mappings at known addresses (never touched: only addresses are computed). */
function memory(): GuestMemory {
  return new GuestMemory([
    { gpa: 0, size: 0x10000, hostAddr: HOST, bytes: new Uint8Array(0x10000) },
    { gpa: 0x100000, size: 0x10000, hostAddr: HOST + 0x100000n, bytes: new Uint8Array(0x10000) },
  ]);
}
const entry = (gpa: number, len: number) => ({ base: HOST + BigInt(gpa), len });

test('entries follow the segments added, one each, and shift() drops from the front', (t) => {
  const m = memory();
  const q = new IovecQueue(4);
  q.push(m, [{ addr: 0x100, len: 10 }, { addr: 0x10a, len: 6 }]); // adjacent, still two entries
  q.push(m, [{ addr: 0x100000, len: 0 }, { addr: 0x100010, len: 32 }]);
  t.is(q.length, 4);
  const iov = q.withExtra(4, 0x1234, 1);
  t.deepEqual(decodeIovecs(iov, 5), [entry(0x100, 10), entry(0x10a, 6), entry(0x100000, 0), entry(0x100010, 32), { base: 0x1234n, len: 1 }]);
  q.shift(3);
  t.is(q.length, 1);
  t.deepEqual(decodeIovecs(q.withExtra(1, 0x99, 1), 2), [entry(0x100010, 32), { base: 0x99n, len: 1 }]);
  q.shift(5);
  t.is(q.length, 0);
  t.deepEqual(decodeIovecs(q.withExtra(0, 0x99, 1), 1), [{ base: 0x99n, len: 1 }]);
});

test('a prefix shorter than the queue gets the extra entry without overwriting the next live one', (t) => {
  const m = memory();
  const q = new IovecQueue();
  q.push(m, [{ addr: 0x200, len: 100 }, { addr: 0x400, len: 200 }, { addr: 0x800, len: 300 }]);
  t.deepEqual(decodeIovecs(q.withExtra(1, 0x55, 1), 2), [entry(0x200, 100), { base: 0x55n, len: 1 }]);
  t.deepEqual(decodeIovecs(q.withExtra(3, 0x66, 1), 4), [entry(0x200, 100), entry(0x400, 200), entry(0x800, 300), { base: 0x66n, len: 1 }]);
  t.throws(() => q.withExtra(4, 0, 1), { instanceOf: RangeError });
  t.throws(() => q.withExtra(-1, 0, 1), { instanceOf: RangeError });
});

test('the queue compacts and grows: a long run of pushes and shifts keeps every entry right', (t) => {
  const m = memory();
  const q = new IovecQueue(2);
  const live: { addr: number; len: number }[] = [];
  let next = 0;
  for (let round = 0; round < 500; round++) {
    const n = 1 + (round % 7);
    const segs = Array.from({ length: n }, () => ({ addr: (next++ * 16) % 0xf000, len: 1 + (round % 13) }));
    q.push(m, segs);
    live.push(...segs);
    const drop = round % 5 === 0 ? live.length : Math.min(live.length, round % 4);
    // Check before dropping: every live entry, then the extra one.
    t.deepEqual(decodeIovecs(q.withExtra(live.length, 0x77, 1), live.length + 1), [...live.map((s) => entry(s.addr, s.len)), { base: 0x77n, len: 1 }]);
    q.shift(drop);
    live.splice(0, drop);
    t.is(q.length, live.length);
  }
});

test('push() checks every segment against the host mappings first and adds nothing when one fails', (t) => {
  const m = memory();
  const q = new IovecQueue();
  q.push(m, [{ addr: 0x100, len: 8 }]);
  t.throws(() => q.push(m, [{ addr: 0x200, len: 8 }, { addr: 0xfff0, len: 0x20 }]), { instanceOf: GuestAddressError }, 'runs past its region');
  t.throws(() => q.push(m, [{ addr: 0x20000, len: 1 }]), { instanceOf: GuestAddressError }, 'not RAM');
  t.is(q.length, 1);
  t.deepEqual(decodeIovecs(q.withExtra(1, 0, 0), 1), [entry(0x100, 8)]);
  q.clear();
  t.is(q.length, 0);
  const plain = GuestMemory.fromBuffers([{ gpa: 0, size: 0x1000 }]);
  t.throws(() => q.push(plain, [{ addr: 0, len: 8 }]), { instanceOf: GuestAddressError }, 'memory without a host mapping');
});

// ---- IovecArray.fill: after the first segment, a segment inside the same region skips the lookup ----

test('fill() gives each segment its own region\'s host address, moving between regions, and merges what continues in host memory', (t) => {
  const m = memory();
  const iov = new IovecArray();
  const segs = [
    { addr: 0x100, len: 0x10 }, { addr: 0x110, len: 0x20 }, // continues: one entry
    { addr: 0x100000, len: 0x100 }, // region B
    { addr: 0x200, len: 0x8 }, // back to A
    { addr: 0x208, len: 0 }, // empty: skipped
    { addr: 0x10ff00, len: 0x100 }, // the last bytes of B
  ];
  iov.fill(m, segs, { index: 0, offset: 0 });
  t.is(iov.count, 4);
  t.is(iov.bytes, 0x238);
  t.deepEqual(decodeIovecs(iov.buffer, iov.count), [entry(0x100, 0x30), entry(0x100000, 0x100), entry(0x200, 0x8), entry(0x10ff00, 0x100)]);
  // From a cursor partway into a segment.
  iov.fill(m, segs, { index: 2, offset: 0x80 });
  t.deepEqual(decodeIovecs(iov.buffer, iov.count), [entry(0x100080, 0x80), entry(0x200, 0x8), entry(0x10ff00, 0x100)]);
});

test('fill() checks every segment after the first against RAM too: past its region, in a hole, not an integer', (t) => {
  const m = memory();
  const iov = new IovecArray();
  const first = { addr: 0x100, len: 0x10 };
  const bad: [string, { addr: number; len: number }][] = [
    ['runs past the end of the first segment\'s region', { addr: 0xff00, len: 0x101 }],
    ['in the hole between the regions', { addr: 0x20000, len: 1 }],
    ['a fractional address inside the region', { addr: 0x200 + 0.5, len: 4 }],
    ['a fractional length inside the region', { addr: 0x200, len: 4.5 }],
  ];
  for (const [what, seg] of bad) t.throws(() => iov.fill(m, [first, seg], { index: 0, offset: 0 }), { instanceOf: GuestAddressError }, what);
});
