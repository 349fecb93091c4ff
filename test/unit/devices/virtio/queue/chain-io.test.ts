/**
 * chain-io helpers: copying in and out of a chain's segments and slicing
 * sub-ranges for iovecs, with offsets/lengths treated as guest-controlled.
 */
import test from 'ava';
import fc from 'fast-check';
import { readChain, readChainInto, segmentsLength, sliceSegments, writeChain } from '../../../../../devices/virtio/queue/chain-io.js';
import { QueueError, type Segment } from '../../../../../devices/virtio/queue/types.js';
import { GuestMemory } from '../../../../../lib/memory/guest-memory.js';

function mem(): GuestMemory {
  const m = GuestMemory.fromBuffers([{ gpa: 0, size: 0x1000 }, { gpa: 0x1000, size: 0x1000 }]);
  for (let i = 0; i < 0x2000; i++) m.writeU8(i, i & 0xff);
  return m;
}

/** Three segments, one of them zero-length, 0x10 + 0 + 0x20 = 0x30 bytes. */
const SEGS: Segment[] = [{ addr: 0x100, len: 0x10 }, { addr: 0x500, len: 0 }, { addr: 0x1000, len: 0x20 }];
const bytesAt = (addr: number, n: number) => Array.from({ length: n }, (_, i) => (addr + i) & 0xff);

test('segmentsLength sums the lengths', (t) => {
  t.is(segmentsLength([]), 0);
  t.is(segmentsLength(SEGS), 0x30);
});

test('readChain copies across segment boundaries', (t) => {
  const m = mem();
  t.deepEqual([...readChain(m, SEGS, 0, 0x30)], [...bytesAt(0x100, 0x10), ...bytesAt(0x1000, 0x20)]);
  t.deepEqual([...readChain(m, SEGS, 0xc, 8)], [...bytesAt(0x10c, 4), ...bytesAt(0x1000, 4)]);
  t.deepEqual([...readChain(m, SEGS, 0x10, 2)], bytesAt(0x1000, 2));
  t.is(readChain(m, SEGS, 0x30, 0).length, 0, 'empty read at the very end');
});

test('readChain: short chains and bad arguments throw QueueError, never allocate first', (t) => {
  const m = mem();
  for (const [off, len] of [[0, 0x31], [0x30, 1], [0x31, 0], [0, 2 ** 40]]) {
    t.is((t.throws(() => readChain(m, SEGS, off!, len!), { instanceOf: QueueError }) as QueueError).reason, 'short', `${off}+${len}`);
  }
  for (const [off, len] of [[-1, 1], [0, -1], [0.5, 1], [NaN, 1], [0, Infinity], [2 ** 53, 1]]) {
    t.is((t.throws(() => readChain(m, SEGS, off!, len!), { instanceOf: QueueError }) as QueueError).reason, 'range', `${off}+${len}`);
  }
  // Segments that were never validated (not from pop()) fail as QueueError, not GuestAddressError.
  const e = t.throws(() => readChain(m, [{ addr: 0x1ff0, len: 0x20 }], 0, 0x20), { instanceOf: QueueError }) as QueueError;
  t.is(e.reason, 'buffer-addr');
});

test('readChainInto: the same bytes as readChain, from the first segment or across several; errors leave dst alone', (t) => {
  const m = mem();
  for (const [off, len] of [[0, 0x10], [4, 8], [0xc, 8], [0x10, 2], [0, 0x30], [0x30, 0]]) {
    const dst = new Uint8Array(len!);
    readChainInto(m, SEGS, off!, dst);
    t.deepEqual([...dst], [...readChain(m, SEGS, off!, len!)], `${off}+${len}`);
  }
  const dst = new Uint8Array(4).fill(7);
  t.is((t.throws(() => readChainInto(m, SEGS, 0x2e, dst), { instanceOf: QueueError }) as QueueError).reason, 'short');
  t.is((t.throws(() => readChainInto(m, [], 0, dst), { instanceOf: QueueError }) as QueueError).reason, 'short');
  t.is((t.throws(() => readChainInto(m, SEGS, -1, dst), { instanceOf: QueueError }) as QueueError).reason, 'range');
  t.deepEqual([...dst], [7, 7, 7, 7]);
  const e = t.throws(() => readChainInto(m, [{ addr: 0x1ffe, len: 0x20 }], 0, dst), { instanceOf: QueueError }) as QueueError;
  t.is(e.reason, 'buffer-addr', 'an unvalidated first segment is a QueueError too');
});

test('writeChain writes across segments and stops at the end of the chain', (t) => {
  const m = mem();
  const data = Uint8Array.from({ length: 0x18 }, (_, i) => 0xa0 + i);
  t.is(writeChain(m, SEGS, 0x8, data), 0x18);
  t.deepEqual([...m.read(0x108, 8)], [...data.subarray(0, 8)]);
  t.deepEqual([...m.read(0x1000, 0x10)], [...data.subarray(8)]);
  t.deepEqual([...m.read(0x1010, 1)], bytesAt(0x1010, 1), 'nothing past the data');
  t.is(writeChain(m, SEGS, 0x28, data), 8, 'truncated at the chain end');
  t.deepEqual([...m.read(0x1018, 8)], [...data.subarray(0, 8)]);
  t.is(writeChain(m, SEGS, 0x30, data), 0);
  t.is(writeChain(m, SEGS, 2 ** 40, data), 0);
  t.is(writeChain(m, [], 0, data), 0);
  t.is((t.throws(() => writeChain(m, SEGS, -1, data), { instanceOf: QueueError }) as QueueError).reason, 'range');
});

test('sliceSegments carves sub-ranges, keeping whole segments as they are', (t) => {
  t.deepEqual(sliceSegments(SEGS, 0, 0x30), [SEGS[0], SEGS[2]], 'zero-length pieces dropped');
  t.is(sliceSegments(SEGS, 0, 0x30)[0], SEGS[0], 'same object when whole');
  t.deepEqual(sliceSegments(SEGS, 4, 0x10), [{ addr: 0x104, len: 0xc }, { addr: 0x1000, len: 4 }]);
  t.deepEqual(sliceSegments(SEGS, 0x10, 0x20), [SEGS[2]]);
  t.deepEqual(sliceSegments(SEGS, 0x2f, 1), [{ addr: 0x101f, len: 1 }]);
  t.deepEqual(sliceSegments(SEGS, 7, 0), []);
  t.is((t.throws(() => sliceSegments(SEGS, 0x20, 0x11), { instanceOf: QueueError }) as QueueError).reason, 'short');
  t.is((t.throws(() => sliceSegments(SEGS, NaN, 1), { instanceOf: QueueError }) as QueueError).reason, 'range');
});

test('read/write/slice agree with a flat byte model for any offset and length', (t) => {
  const segsArb = fc.array(fc.record({ addr: fc.integer({ min: 0, max: 0x1f00 }), len: fc.integer({ min: 0, max: 0x100 }) }), { maxLength: 6 });
  fc.assert(fc.property(segsArb, fc.nat(0x700), fc.nat(0x700), (segs, off, len) => {
    const m = mem();
    const flat = segs.flatMap((s) => bytesAt(s.addr, s.len));
    const total = flat.length;
    if (off + len > total) {
      return expectReason(() => readChain(m, segs, off, len), 'short') && expectReason(() => sliceSegments(segs, off, len), 'short');
    }
    const got = [...readChain(m, segs, off, len)];
    const slices = sliceSegments(segs, off, len);
    const viaSlices = slices.flatMap((s) => bytesAt(s.addr, s.len));
    // No empty pieces, and at most as many pieces as the input has segments.
    const shapeOk = slices.every((s) => s.len > 0) && slices.length <= segs.length;
    return shapeOk && JSON.stringify(got) === JSON.stringify(flat.slice(off, off + len)) && JSON.stringify(viaSlices) === JSON.stringify(got);
  }), { numRuns: 2000 });
  t.pass();
});

function expectReason(fn: () => unknown, reason: string): boolean {
  try {
    fn();
    return false;
  } catch (e) {
    return e instanceof QueueError && e.reason === reason;
  }
}
