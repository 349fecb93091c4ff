/**
 * Held chains across a snapshot (queue/saved-chain.ts) and the SplitQueue
 * restore position that goes with them: a chain popped across a region
 * border survives the JSON round trip as the same segments; what a state
 * file claims is checked against guest memory and the queue.
 */
import test from 'ava';
import { outstanding, restoreChains, saveChain } from '../../../../../devices/virtio/queue/saved-chain.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { QueueError } from '../../../../../devices/virtio/queue/types.js';
import { SnapshotStateError } from '../../../../../lib/errors.js';
import { GuestMemory } from '../../../../../lib/memory/guest-memory.js';
import { VirtqDriver } from '../../../../helpers/virtq-driver.js';

const KiB = 1024;
/** Regions A and B are adjacent at 64 KiB; a hole follows; region C sits at 192 KiB. */
const BORDER = 0x10000;
const C = 0x30000;

function setup() {
  const mem = GuestMemory.fromBuffers([{ gpa: 0, size: 64 * KiB }, { gpa: BORDER, size: 64 * KiB }, { gpa: C, size: 4 * KiB }]);
  const drv = new VirtqDriver(mem, { size: 8, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 });
  return { mem, drv };
}

test('a held chain split at a region border round-trips through JSON; the queue restores with it outstanding', (t) => {
  const { mem, drv } = setup();
  const q = new SplitQueue(mem, drv.config);
  drv.addChain([{ addr: 0x8000, len: 16 }, { addr: BORDER - 100, len: 300, write: true }]);
  drv.addChain([{ addr: C, len: 64, write: true }]);
  drv.kick();
  const a = q.pop()!;
  t.is(a.writable.length, 2, 'split at the border');
  const saved = JSON.parse(JSON.stringify([saveChain(a)])) as unknown;
  const start = q.saveState();
  t.deepEqual(start, { nextAvail: 1, nextUsed: 0 });
  const q2 = new SplitQueue(mem, { ...drv.config, start });
  t.is(outstanding(q2), 1);
  const [back] = restoreChains('held', saved, q2, mem);
  t.deepEqual(back, { head: a.head, readable: a.readable, writable: a.writable, readableLength: 16, writableLength: 300 });
  // The restored queue continues after it: the second chain is next, and the held one can be returned.
  t.is(q2.pop()!.writableLength, 64);
  q2.pushUsed(back!.head, 7);
  t.deepEqual(drv.used(), [{ id: a.head, len: 7 }]);
});

test('a saved chain is refused when it is not RAM of one region, repeats a head, or does not match the queue', (t) => {
  const { mem, drv } = setup();
  drv.addChain([{ addr: 0x8000, len: 64, write: true }]);
  drv.addChain([{ addr: 0x9000, len: 64, write: true }]);
  drv.kick();
  const q = new SplitQueue(mem, { ...drv.config, start: { nextAvail: 2, nextUsed: 0 } });
  const ok = (head: number) => ({ head, readable: [], writable: [[0x8000, 64]] });
  t.is(restoreChains('held', [ok(0), ok(1)], q, mem).length, 2);
  const cases: [unknown, string][] = [
    [[ok(0)], 'held'],
    [[ok(0), ok(0)], 'held[1].head'],
    [[ok(0), { ...ok(1), head: 8 }], 'held[1].head'],
    [[ok(0), { ...ok(1), writable: [[BORDER - 8, 16]] }], 'held[1].writable[0]'],
    [[ok(0), { ...ok(1), writable: [[0x20000, 16]] }], 'held[1].writable[0]'],
    [[ok(0), { ...ok(1), writable: [[C, 4 * KiB + 1]] }], 'held[1].writable[0]'],
    [[ok(0), { ...ok(1), writable: [[0x8000, 64, 1]] }], 'held[1].writable[0]'],
    [[ok(0), { ...ok(1), writable: [[32768.5, 64]] }], 'held[1].writable[0][0]'],
    [[ok(0), { ...ok(1), readable: [[0x8000, -1]] }], 'held[1].readable[0][1]'],
    [[ok(0), { ...ok(1), writable: Array.from({ length: 49 }, () => [0x8000, 64]) }], 'held[1].writable'],
    [[ok(0), { ...ok(1), writable: Array.from({ length: 40 }, () => [0, 0xffff_0000]) }], 'held[1].writable[0]'],
    [[ok(0), 'chain'], 'held[1]'],
    [Array.from({ length: 9 }, (_, i) => ok(i % 8)), 'held'],
  ];
  for (const [v, field] of cases) {
    const e = t.throws(() => restoreChains('held', v, q, mem), { instanceOf: SnapshotStateError }, field);
    t.is(e?.field, field, JSON.stringify(v).slice(0, 120));
  }
  const e = t.throws(() => restoreChains('held', [ok(0)], null, null), { instanceOf: SnapshotStateError });
  t.is(e?.field, 'held', 'an inactive device holds nothing');
});

test('SplitQueue restore: held chains plus published ones may not exceed the ring', (t) => {
  const { mem, drv } = setup();
  for (let i = 0; i < 6; i++) drv.addChain([{ addr: 0x8000 + i * 64, len: 64, write: true}]);
  drv.kick();
  t.notThrows(() => new SplitQueue(mem, { ...drv.config, start: { nextAvail: 6, nextUsed: 0 } }), '6 held');
  t.notThrows(() => new SplitQueue(mem, { ...drv.config, start: { nextAvail: 2, nextUsed: 0 } }), '2 held, 4 published');
  const e = t.throws(() => new SplitQueue(mem, { ...drv.config, start: { nextAvail: 0xfffe, nextUsed: 0 } }), { instanceOf: QueueError });
  t.is(e?.reason, 'restore');
  t.throws(() => new SplitQueue(mem, { ...drv.config, start: { nextAvail: 9, nextUsed: 0 } }), { instanceOf: QueueError, message: /9 ahead of nextUsed 0; queue size is 8/ });
});
