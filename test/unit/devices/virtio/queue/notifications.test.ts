/**
 * SplitQueue's used ring and both directions of notification suppression
 * (virtio 1.2 §2.7.7-§2.7.10): pushUsed, needsInterrupt with and without
 * VIRTIO_F_EVENT_IDX (including 16-bit wraparound), enable/disableNotifications.
 */
import test from 'ava';
import fc from 'fast-check';
import { VIRTQ_USED_F_NO_NOTIFY } from '../../../../../devices/virtio/constants.js';
import { SplitQueue, vringNeedEvent } from '../../../../../devices/virtio/queue/split-queue.js';
import { GuestMemory } from '../../../../../lib/memory/guest-memory.js';
import { VirtqDriver, type VirtqDriverOptions } from '../../../../helpers/virtq-driver.js';

function setup(opts: Partial<VirtqDriverOptions> = {}) {
  const mem = GuestMemory.fromBuffers([{ gpa: 0, size: 0x10000 }, { gpa: 0x10000, size: 0x10000 }]);
  const drv = new VirtqDriver(mem, { size: 8, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000, ...opts });
  const q = new SplitQueue(mem, drv.config);
  return { mem, drv, q };
}

/** Pushes `n` used elements for head 0 (the device does not track which heads are in flight). */
function pushN(q: SplitQueue, n: number): void {
  for (let i = 0; i < n; i++) q.pushUsed(0, 0);
}

test('pushUsed writes {id, len} at used.ring[idx % size] and then bumps used.idx', (t) => {
  const { mem, drv, q } = setup();
  for (let i = 0; i < 10; i++) q.pushUsed(i % 8, 1000 + i);
  t.is(drv.usedIdx, 10);
  t.is(q.usedIndex, 10);
  // Slots 0 and 1 were overwritten by elements 8 and 9.
  t.is(mem.readU32(0x3000 + 4), 0);
  t.is(mem.readU32(0x3000 + 8), 1008);
  t.is(mem.readU32(0x3000 + 4 + 8 * 7), 7);
  t.is(mem.readU32(0x3000 + 8 + 8 * 7), 1007);
  t.is(mem.readU32(0x3000 + 4 + 8 * 2), 2);
  q.pushUsed(3, 0xffff_ffff);
  t.is(mem.readU32(0x3000 + 8 + 8 * 2), 0xffff_ffff, 'a full u32 length');
});

test('pushUsed rejects heads and lengths a device could not have (RangeError: a device bug)', (t) => {
  const { q } = setup();
  for (const [head, len] of [[8, 0], [-1, 0], [0.5, 0], [NaN, 0], [0, -1], [0, 2 ** 32], [0, 1.5]] as [number, number][]) {
    t.throws(() => q.pushUsed(head, len), { instanceOf: RangeError }, `${head}, ${len}`);
  }
  t.is(q.usedIndex, 0, 'nothing published');
});

test('used elements that straddle a region border are written whole', (t) => {
  // used ring at border - 4 - 8*2: element 2 starts 4 bytes below the border... element k at usedAddr+4+8k.
  const mem = GuestMemory.fromBuffers([{ gpa: 0, size: 0x4000 }, { gpa: 0x4000, size: 0x4000 }]);
  const usedAddr = 0x4000 - 4 - 8 * 2 - 4; // element 2 covers [0x3ffc, 0x4004)
  const drv = new VirtqDriver(mem, { size: 4, descAddr: 0x1000, availAddr: 0x2000, usedAddr });
  const q = new SplitQueue(mem, drv.config);
  pushN(q, 2);
  q.pushUsed(3, 0x1234_5678);
  t.deepEqual(drv.used().at(-1), { id: 3, len: 0x1234_5678 });
});

test('without EVENT_IDX: an interrupt after each batch unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT', (t) => {
  const { drv, q } = setup();
  t.false(q.needsInterrupt(), 'nothing pushed');
  q.pushUsed(0, 0);
  t.true(q.needsInterrupt());
  t.false(q.needsInterrupt(), 'the batch was already reported');
  pushN(q, 3);
  t.true(q.needsInterrupt());
  drv.setNoInterrupt(true);
  q.pushUsed(0, 0);
  t.false(q.needsInterrupt());
  drv.setAvailFlags(0xfffe); // only bit 0 means anything
  q.pushUsed(0, 0);
  t.true(q.needsInterrupt());
  drv.setUsedEvent(1000); // ignored without EVENT_IDX
  q.pushUsed(0, 0);
  t.true(q.needsInterrupt());
});

test('with EVENT_IDX: an interrupt exactly when the batch crosses used_event (§2.7.7)', (t) => {
  const { drv, q } = setup({ eventIdx: true });
  drv.setUsedEvent(0);
  q.pushUsed(0, 0); // used.idx 0 -> 1: entry 0 written
  t.true(q.needsInterrupt(), 'used_event 0: after the first buffer');
  q.pushUsed(0, 0);
  t.false(q.needsInterrupt(), 'entry 1 is not the event');
  drv.setUsedEvent(4);
  pushN(q, 2); // entries 2, 3
  t.false(q.needsInterrupt());
  pushN(q, 3); // entries 4, 5, 6: crosses 4
  t.true(q.needsInterrupt());
  drv.setUsedEvent(6); // already passed
  q.pushUsed(0, 0); // entry 7
  t.false(q.needsInterrupt());
  drv.setNoInterrupt(true); // the flag is ignored with EVENT_IDX
  drv.setUsedEvent(8);
  q.pushUsed(0, 0); // entry 8
  t.true(q.needsInterrupt());
  t.false(q.needsInterrupt(), 'nothing pushed since');
});

test('with EVENT_IDX: the window math wraps at 65535', (t) => {
  const { drv, q } = setup({ eventIdx: true });
  drv.setUsedEvent(30000); // out of the way
  pushN(q, 65534);
  q.needsInterrupt();
  t.is(q.usedIndex, 65534);
  drv.setUsedEvent(65535);
  q.pushUsed(0, 0); // entry 65534
  t.false(q.needsInterrupt());
  q.pushUsed(0, 0); // entry 65535: used.idx wraps to 0
  t.true(q.needsInterrupt());
  t.is(drv.usedIdx, 0);
  // A batch that wraps: entries 0..3, event at 2.
  drv.setUsedEvent(2);
  pushN(q, 4);
  t.true(q.needsInterrupt());
  // Batch 65534 -> 2 (across the wrap) with the event just behind it or just ahead.
  pushN(q, 65530);
  q.needsInterrupt();
  t.is(q.usedIndex, 65534);
  drv.setUsedEvent(65535);
  pushN(q, 4);
  t.true(q.needsInterrupt(), 'event 65535 inside [65534, 2)');
  drv.setUsedEvent(2);
  pushN(q, 65532);
  q.needsInterrupt();
  pushN(q, 4); // entries 65534, 65535, 0, 1
  t.false(q.needsInterrupt(), 'event 2 is not inside [65534, 2)');
});

test('with EVENT_IDX: a batch of 2^16 or more always interrupts', (t) => {
  const { drv, q } = setup({ eventIdx: true });
  drv.setUsedEvent(5);
  pushN(q, 65536); // new == old: the 16-bit window alone would say "nothing"
  t.true(q.needsInterrupt());
});

test('vringNeedEvent agrees with "event is one of the entries written in this batch"', (t) => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), (event, old, n) => {
    const newIdx = (old + n) & 0xffff;
    let expected = false;
    for (let k = 0; k < n && !expected; k++) expected = ((old + k) & 0xffff) === event;
    return vringNeedEvent(event, newIdx, old) === expected;
  }), { numRuns: 2000 });
  t.pass();
});

test('without EVENT_IDX: disable/enable toggle VIRTQ_USED_F_NO_NOTIFY; enable reports buffers that arrived', (t) => {
  const { drv, q } = setup();
  t.is(drv.usedFlags, 0);
  t.true(drv.kickNeeded(0));
  q.disableNotifications();
  t.is(drv.usedFlags, VIRTQ_USED_F_NO_NOTIFY);
  t.false(drv.kickNeeded(0));
  t.false(q.enableNotifications(), 'nothing pending');
  t.is(drv.usedFlags, 0);
  q.disableNotifications();
  drv.addChain([{ addr: 0x8000, len: 4 }]);
  drv.kick(); // the driver saw NO_NOTIFY and did not kick
  t.true(q.enableNotifications(), 'the device must look again before sleeping');
  t.truthy(q.pop());
  t.false(q.enableNotifications());
  t.is(drv.availEvent, 0, 'avail_event untouched without EVENT_IDX');
});

test('with EVENT_IDX: enable writes avail_event = next avail index; disable writes nothing', (t) => {
  const { drv, q } = setup({ eventIdx: true });
  for (let i = 0; i < 3; i++) drv.addChain([{ addr: 0x8000, len: 4 }]);
  drv.kick();
  q.disableNotifications();
  t.is(drv.usedFlags, 0, 'used.flags stays 0 with EVENT_IDX');
  t.is(drv.availEvent, 0, 'disable writes nothing');
  t.truthy(q.pop());
  t.is(drv.availEvent, 1, 'pop() keeps avail_event at the next entry to read');
  t.true(q.enableNotifications(), 'two more are waiting');
  t.is(drv.availEvent, 1);
  t.truthy(q.pop());
  t.truthy(q.pop());
  t.is(drv.availEvent, 3);
  t.false(q.enableNotifications());
  t.is(drv.availEvent, 3);
  q.disableNotifications();
  t.is(drv.availEvent, 3, 'disable is a no-op');
  // The driver's side: publishing entry 3 crosses avail_event 3, entry 4 alone would not.
  const old = drv.availIdx;
  drv.addChain([{ addr: 0x8000, len: 4 }]);
  drv.kick();
  t.true(drv.kickNeeded(old));
  t.is(drv.usedFlags, 0);
});

test('with EVENT_IDX, a device that only pops until null is kicked for every buffer published after it caught up', (t) => {
  const { drv, q } = setup({ eventIdx: true });
  let kicks = 0;
  let handled = 0;
  for (let round = 0; round < 100; round++) {
    // The driver publishes 1-3 buffers, kicking only when avail_event says so.
    const old = drv.availIdx;
    for (let i = 0; i <= round % 3; i++) drv.addChain([{ addr: 0x8000, len: 4 }]);
    drv.kick();
    if (!drv.kickNeeded(old)) return t.fail(`round ${round}: no kick although the device had drained the ring`);
    kicks++;
    // The device drains without ever touching enable/disableNotifications.
    for (let c = q.pop(); c; c = q.pop()) { q.pushUsed(c.head, 0); handled++; }
    drv.used();
  }
  t.is(kicks, 100);
  t.is(handled, 199); // 34 rounds of 1, 33 of 2, 33 of 3
  // While the device is behind, publishing more does not kick.
  drv.addChain([{ addr: 0x8000, len: 4 }]);
  drv.addChain([{ addr: 0x8000, len: 4 }]);
  drv.kick();
  t.truthy(q.pop());
  const old = drv.availIdx;
  drv.addChain([{ addr: 0x8000, len: 4 }]);
  drv.kick();
  t.false(drv.kickNeeded(old), 'entry 1 of the batch is still unread: no kick needed');
});
