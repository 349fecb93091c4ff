import test from 'ava';
import { Worker } from 'node:worker_threads';
import { ByteRing } from '../../../../lib/io/byte-ring.js';

const WRITER = new URL('./ring-writer.js', import.meta.url);

/** Rejects if `p` takes longer than `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no result in ${ms} ms`)), ms); }),
  ]);
}

function runWriter(ring: ByteRing, opts: { bytes?: number[]; delayMs?: number; close?: boolean }): Promise<number> {
  const w = new Worker(WRITER, { workerData: { sab: ring.sab, bytes: opts.bytes ?? [], delayMs: opts.delayMs ?? 100, close: opts.close ?? false } });
  return new Promise((resolve, reject) => { w.once('error', reject); w.once('exit', resolve); });
}

test('bytes come out in order, across the wrap of the data area', (t) => {
  const ring = ByteRing.create(8);
  t.is(ring.write(Uint8Array.of(1, 2, 3, 4, 5)), 5);
  t.deepEqual([...ring.read()], [1, 2, 3, 4, 5]);
  // Write position is now 5: the next 6 bytes wrap around the end of the 8-byte area.
  t.is(ring.write(Uint8Array.of(6, 7, 8, 9, 10, 11)), 6);
  t.deepEqual([...ring.read()], [6, 7, 8, 9, 10, 11]);
  t.is(ring.read().length, 0, 'empty after reading');
  t.is(ring.dropped, 0);
});

test('many small writes and reads keep order over many wraps', (t) => {
  const ring = ByteRing.create(32); // room for two unread chunks of up to 12 bytes
  const out: number[] = [];
  let next = 0;
  for (let round = 0; round < 200; round++) {
    const n = (round * 7) % 13;
    const chunk = Array.from({ length: n }, () => next++ & 0xff);
    t.is(ring.write(Uint8Array.from(chunk)), n);
    if (round % 2) out.push(...ring.read());
  }
  out.push(...ring.read());
  t.deepEqual(out, Array.from({ length: next }, (_, i) => i & 0xff));
});

test('the free-running u32 positions wrap past 2^32 without losing order (power-of-two capacity)', (t) => {
  const ring = ByteRing.create(8);
  // Put both positions 3 bytes before 2^32.
  ring.header[0] = -3;
  ring.header[1] = -3;
  t.is(ring.write(Uint8Array.of(1, 2)), 2);
  t.is(ring.write(Uint8Array.of(3, 4, 5, 6)), 4); // crosses 2^32
  t.deepEqual([...ring.read()], [1, 2, 3, 4, 5, 6]);
  t.is(ring.write(Uint8Array.of(7, 8, 9)), 3);
  t.deepEqual([...ring.read()], [7, 8, 9]);
});

test('a capacity that does not divide 2^32 cannot corrupt data at the position wrap', (t) => {
  // With capacity 10, position 2^32 maps to slot 6 before the u32 wrap and to slot 0 after it.
  // A ring must either refuse such a capacity or still deliver bytes in order.
  let ring: ByteRing;
  try {
    ring = ByteRing.create(10);
  } catch (e) {
    t.true(e instanceof RangeError, 'refused with a RangeError');
    t.throws(() => ByteRing.create(0), { instanceOf: RangeError });
    t.notThrows(() => ByteRing.create(1 << 20));
    return;
  }
  ring.header[0] = -2;
  ring.header[1] = -2;
  ring.write(Uint8Array.of(1, 2)); // positions 2^32-2, 2^32-1
  ring.write(Uint8Array.of(3, 4, 5, 6, 7, 8, 9, 10)); // positions 2^32 .. 2^32+7, fills the ring
  t.deepEqual([...ring.read()], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test('when full, what does not fit is dropped and counted', (t) => {
  const ring = ByteRing.create(8);
  t.is(ring.write(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)), 8);
  t.is(ring.dropped, 2);
  t.is(ring.write(Uint8Array.of(11, 12, 13)), 0);
  t.is(ring.dropped, 5);
  t.deepEqual([...ring.read()], [1, 2, 3, 4, 5, 6, 7, 8]);
  t.is(ring.write(Uint8Array.of(14)), 1);
  t.is(ring.dropped, 5, 'counter is cumulative, not reset by reads');
  t.deepEqual([...ring.read()], [14]);
});

test('waitReadable resolves at once when data is already there', async (t) => {
  const ring = ByteRing.create(8);
  ring.write(Uint8Array.of(1));
  await within(ring.waitReadable(), 1000, 'waitReadable');
  t.deepEqual([...ring.read()], [1]);
});

test('waitReadable resolves when a worker_thread writes', async (t) => {
  const ring = ByteRing.create(64);
  const exited = runWriter(ring, { bytes: [104, 105, 33], delayMs: 150 });
  const t0 = performance.now();
  await within(ring.waitReadable(), 10_000, 'waitReadable after a worker write');
  t.true(performance.now() - t0 >= 100, 'it actually waited for the write');
  t.deepEqual([...ring.read()], [104, 105, 33]);
  t.is(await exited, 0);
});

test('waitReadable resolves when a worker closes the ring; close() is visible everywhere', async (t) => {
  const ring = ByteRing.create(64);
  t.false(ring.closed);
  const exited = runWriter(ring, { close: true, delayMs: 100 });
  await within(ring.waitReadable(), 10_000, 'waitReadable after close');
  t.true(ring.closed);
  t.is(ring.read().length, 0);
  // Once closed, waitReadable never blocks.
  await within(ring.waitReadable(), 1000, 'waitReadable on a closed ring');
  t.is(await exited, 0);
});

test('close() on the same thread is seen by a second ByteRing over the same memory', (t) => {
  const ring = ByteRing.create(8);
  const other = new ByteRing(ring.sab);
  ring.write(Uint8Array.of(9, 8));
  ring.close();
  t.true(other.closed);
  t.deepEqual([...other.read()], [9, 8], 'data written before close is still readable');
});
