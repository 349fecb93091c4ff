/**
 * virtio-blk snapshot hooks without KVM: traffic on one device, the kind's
 * saveState (JSON round trip, as through state.json), a fresh device from the
 * kind's create() activated with its queue where the old one stopped (the
 * SplitQueue `start` position), the kind's restoreState, and traffic again.
 * Tampered states must throw naming the field.
 */
import test, { type ExecutionContext } from 'ava';
import { SnapshotStateError } from '../../../../../lib/errors.js';
import type { FileSyscalls } from '../../../../../devices/virtio/backends/file.js';
import * as B from '../../../../../devices/virtio/block/constants.js';
import { BlockDevice } from '../../../../../devices/virtio/block/device.js';
import { blockKind } from '../../../../../devices/virtio/block/kind.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { ALL_FEATURES, BlkHarness, header, pattern, SECTOR } from './blk-harness.js';

const { VIRTIO_BLK_S_OK: OK, VIRTIO_BLK_S_IOERR: IOERR } = B;

/** A harness whose image syncs are counted (and can be made to fail). */
function syncCounting(opts: { readOnly?: boolean } = {}) {
  const syncs = { count: 0, fail: false };
  const h = new BlkHarness({
    ...opts,
    sys: (real): FileSyscalls => ({
      ...real,
      fdatasync: (fd) => {
        syncs.count++;
        return syncs.fail ? -1 : real.fdatasync(fd);
      },
      errno: () => (syncs.fail ? 5 /* EIO */ : real.errno()),
    }),
  });
  return { h, syncs };
}

/** What state.json carries: JSON in, JSON out. */
function roundTrip<T>(v: T): unknown {
  return JSON.parse(JSON.stringify(v));
}

/**
 * Builds the device a restore builds (the kind's create() on the same image),
 * activates it with its queue at the old queue's saved position, restores
 * `state` into it, and makes it the harness's device. Returns the new device.
 */
function restoreInto(h: BlkHarness, state: unknown, opts: { active?: boolean; start?: { nextAvail: number; nextUsed: number } } = {}): BlockDevice {
  const old = h.device;
  const dev = blockKind.create({ fd: h.fd, sizeBytes: h.sizeBytes, readOnly: old.options.readOnly }) as BlockDevice;
  try {
    const active = opts.active ?? true;
    if (active) {
      const queue = new SplitQueue(h.memory, { ...h.driver.config, start: opts.start ?? h.queue.saveState() });
      dev.activate(h.context(ALL_FEATURES, [queue]));
    }
    blockKind.restoreState!(dev, state, { active });
  } catch (e) {
    dev.dispose();
    throw e;
  }
  old.dispose();
  h.device = dev;
  return dev;
}

function withHarness(fn: (t: ExecutionContext, h: BlkHarness, syncs: { count: number; fail: boolean }) => void, opts: { readOnly?: boolean } = {}) {
  return (t: ExecutionContext) => {
    const { h, syncs } = syncCounting(opts);
    try {
      fn(t, h, syncs);
    } finally {
      h.close();
    }
  };
}

test('snapshot: state saved after traffic restores into a fresh device; a read after restore returns what was written before', withHarness((t, h, syncs) => {
  const data = pattern(8 * SECTOR, 5);
  t.is(h.write(16, data).status, OK);
  t.is(h.read(0, SECTOR).status, OK);
  t.is(h.request(99, 0, { inLen: SECTOR }).status, B.VIRTIO_BLK_S_UNSUPP, 'a guest error, counted');
  const before = syncs.count;
  const state = roundTrip(blockKind.saveState!(h.device));
  t.is(syncs.count, before + 1, 'saveState fdatasyncs the writable image');
  t.deepEqual(state, { broken: false, stats: { completed: 3, guestErrors: 1, ioErrors: 0 } });
  const start = h.queue.saveState();
  t.deepEqual(start, { nextAvail: 3, nextUsed: 3 });

  const dev = restoreInto(h, state);
  t.deepEqual(dev.stats, { completed: 3, guestErrors: 1, ioErrors: 0 }, 'counters continue');
  const r = h.read(16, data.length);
  t.is(r.status, OK);
  t.deepEqual(r.data, data, 'the read after restore returns the bytes written before');
  t.is(h.driver.usedIdx, 4, 'the used index continued from 3');
  const w = h.write(40, pattern(SECTOR, 9));
  t.is(w.status, OK);
  t.deepEqual(h.fileBytes().subarray(40 * SECTOR, 41 * SECTOR), pattern(SECTOR, 9), 'a write after restore lands in the file');
  t.is(dev.stats!.completed, 5);
}));

test('snapshot: requests published but not yet served at the snapshot are served once the restored queue is polled', withHarness((t, h) => {
  t.is(h.write(2, pattern(SECTOR, 1)).status, OK);
  // The driver publishes a read and kicks, but the save request runs before the kick is seen.
  const bufs = h.place([{ bytes: header(B.VIRTIO_BLK_T_IN, 2) }, { len: SECTOR, write: true }, { len: 1, write: true }]);
  h.add(bufs);
  h.driver.kick();
  const state = roundTrip(blockKind.saveState!(h.device));
  const start = h.queue.saveState();
  t.deepEqual(start, { nextAvail: 1, nextUsed: 1 }, 'the published read was not popped');
  restoreInto(h, state, { start });
  t.deepEqual(h.driver.used(), [], 'restoring serves nothing by itself');
  h.device.queueNotify(0); // The restored transport polls every queue once.
  const used = h.driver.used();
  t.is(used.length, 1);
  t.is(used[0]!.len, SECTOR + 1);
  t.is(h.memory.readU8(bufs[2]!.addr), OK);
  t.deepEqual(h.memory.read(bufs[1]!.addr, SECTOR), pattern(SECTOR, 1));
}));

test('snapshot: a read-only image is not synced; a failed sync fails saveState', (t) => {
  const ro = syncCounting({ readOnly: true });
  try {
    t.deepEqual(blockKind.saveState!(ro.h.device), { broken: false, stats: { completed: 0, guestErrors: 0, ioErrors: 0 } });
    t.is(ro.syncs.count, 0);
  } finally {
    ro.h.close();
  }
  const rw = syncCounting();
  try {
    rw.syncs.fail = true;
    t.throws(() => blockKind.saveState!(rw.h.device), { message: /fdatasync/ });
  } finally {
    rw.h.close();
  }
});

test('snapshot: a device the driver never activated saves null counters and restores inactive', withHarness((t, h) => {
  h.device.reset();
  const state = roundTrip(blockKind.saveState!(h.device));
  t.deepEqual(state, { broken: false, stats: null });
  const dev = restoreInto(h, state, { active: false });
  t.is(dev.stats, null);
  t.throws(() => restoreInto(h, { broken: false, stats: { completed: 0, guestErrors: 0, ioErrors: 0 } }, { active: false }), { instanceOf: SnapshotStateError, message: /^stats: / });
}));

test('snapshot: a queue the driver broke stays broken after restore (nothing served until reset)', withHarness((t, h) => {
  // An avail entry naming a descriptor outside the table: the queue is broken, DEVICE_NEEDS_RESET.
  h.driver.setAvailEntry(0, 4000);
  h.driver.setAvailIdx(1);
  h.device.queueNotify(0);
  t.is(h.resets, 1);
  const state = roundTrip(blockKind.saveState!(h.device));
  t.like(state, { broken: true });
  const start = h.queue.saveState();
  t.deepEqual(start, { nextAvail: 1, nextUsed: 0 }, 'the bad head was consumed, never returned');
  restoreInto(h, state, { start });
  h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_IN, 0) }, { len: SECTOR, write: true }, { len: 1, write: true }]));
  h.driver.kick();
  h.device.queueNotify(0);
  t.deepEqual(h.driver.used(), [], 'the restored device serves nothing');
  // A state that claims the queue is fine is refused: the queue has a chain outstanding.
  t.throws(() => restoreInto(h, { broken: false, stats: { completed: 0, guestErrors: 0, ioErrors: 0 } }, { start }), { instanceOf: SnapshotStateError, message: /^broken: .*1 chains outstanding/ });
}));

test('snapshot: tampered states throw naming the field', withHarness((t, h) => {
  const good = { broken: false, stats: { completed: 1, guestErrors: 0, ioErrors: 0 } };
  const cases: [unknown, string][] = [
    [null, 'state'],
    [[], 'state'],
    ['{}', 'state'],
    [{ ...good, broken: 'no' }, 'broken'],
    [{ ...good, broken: undefined }, 'broken'],
    [{ broken: false }, 'stats'],
    [{ ...good, stats: [1, 2, 3] }, 'stats'],
    [{ ...good, stats: { ...good.stats, completed: -1 } }, 'stats.completed'],
    [{ ...good, stats: { ...good.stats, guestErrors: 1.5 } }, 'stats.guestErrors'],
    [{ ...good, stats: { ...good.stats, ioErrors: 2 ** 60 } }, 'stats.ioErrors'],
    [{ ...good, stats: { ...good.stats, ioErrors: '0' } }, 'stats.ioErrors'],
    [{ ...good, stats: { completed: 1, guestErrors: 0 } }, 'stats.ioErrors'],
  ];
  for (const [state, field] of cases) {
    const e = t.throws(() => restoreInto(h, state), { instanceOf: SnapshotStateError }, JSON.stringify(state));
    t.is(e?.field, field, JSON.stringify(state));
  }
  // The harness's device is untouched by the failed restores and still serves.
  t.is(h.read(0, SECTOR).status, OK);
  t.not(h.read(1n << 60n, SECTOR).status, OK);
  t.is(h.read(1n << 60n, SECTOR).status, IOERR);
}));
