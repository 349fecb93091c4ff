import test from 'ava';
import { Bus } from '../../../../lib/bus/bus.js';
import type { BusDevice } from '../../../../lib/bus/device.js';

/** A device that records accesses and reads back `base + offset`. */
function recorder(readBase = 0) {
  const log: { op: 'r' | 'w'; offset: number; size: number; value?: number }[] = [];
  const dev: BusDevice = {
    read: (offset, size) => { log.push({ op: 'r', offset, size }); return readBase + offset; },
    write: (offset, size, value) => { log.push({ op: 'w', offset, size, value }); },
  };
  return { dev, log };
}

test('overlapping ranges are rejected in every arrangement; adjacent ones are fine', (t) => {
  const bus = new Bus('mmio');
  bus.insert(0x1000, 0x100, recorder().dev);
  const overlaps: [number, number][] = [
    [0x1000, 0x100], // identical
    [0x0f80, 0x100], // overlaps the start
    [0x10ff, 0x10], // overlaps the last byte
    [0x1010, 0x10], // inside
    [0x0f00, 0x1000], // contains it
    [0x10ff, 1], // exactly the last byte
  ];
  for (const [base, len] of overlaps) {
    t.throws(() => bus.insert(base, len, recorder().dev), { instanceOf: RangeError, message: /overlaps/ }, `0x${base.toString(16)}+${len}`);
  }
  t.notThrows(() => bus.insert(0x1100, 0x10, recorder().dev), 'adjacent above');
  t.notThrows(() => bus.insert(0x0f00, 0x100, recorder().dev), 'adjacent below');
});

test('invalid ranges are rejected', (t) => {
  const bus = new Bus('pio');
  for (const [base, len] of [[-1, 1], [0, 0], [0, -4], [0.5, 1], [NaN, 1], [0, Infinity]] as [number, number][]) {
    t.throws(() => bus.insert(base, len, recorder().dev), { instanceOf: RangeError }, `${base}+${len}`);
  }
});

test('unmapped reads are all-ones of the access width; unmapped writes are dropped', (t) => {
  const bus = new Bus('pio');
  const { dev, log } = recorder();
  bus.insert(0x3f8, 8, dev);
  t.is(bus.read(0x80, 1), 0xff);
  t.is(bus.read(0x80, 2), 0xffff);
  t.is(bus.read(0x80, 4), 0xffff_ffff);
  t.is(bus.read(0x3f7, 1), 0xff, 'one below the device');
  t.is(bus.read(0x400, 1), 0xff, 'one past the device');
  t.false(bus.write(0x80, 1, 0x12));
  t.false(bus.write(0x400, 4, 0x12));
  t.deepEqual(log, [], 'the device saw nothing');
});

test('devices see offsets relative to their base', (t) => {
  const bus = new Bus('mmio');
  const a = recorder(0x100);
  const b = recorder(0x200);
  bus.insert(0xd000_0000, 0x200, a.dev);
  bus.insert(0xd000_0200, 0x200, b.dev);
  t.true(bus.write(0xd000_0000, 4, 0xdead));
  t.true(bus.write(0xd000_01ff, 1, 0x7));
  t.true(bus.write(0xd000_0200, 2, 0xbeef));
  t.is(bus.read(0xd000_0010, 4), 0x110);
  t.is(bus.read(0xd000_0210, 4), 0x210);
  t.deepEqual(a.log, [
    { op: 'w', offset: 0, size: 4, value: 0xdead },
    { op: 'w', offset: 0x1ff, size: 1, value: 0x7 },
    { op: 'r', offset: 0x10, size: 4 },
  ]);
  t.deepEqual(b.log, [
    { op: 'w', offset: 0, size: 2, value: 0xbeef },
    { op: 'r', offset: 0x10, size: 4 },
  ]);
});

test('addresses above 4 GiB work (MMIO beyond 32 bits)', (t) => {
  const bus = new Bus('mmio');
  const r = recorder(7);
  bus.insert(0x1_0000_0000, 0x1000, r.dev);
  t.is(bus.read(0x1_0000_0004, 4), 11);
  t.is(bus.read(0x0_0000_0004, 4), 0xffff_ffff, 'no 32-bit aliasing');
});
