/**
 * virtio-net snapshot hooks without KVM: traffic on one device, the kind's
 * saveState (JSON round trip), a fresh device from the kind's create() on a
 * NEW "tap" (another socketpair, as an override gives), activated with its
 * queues where the old ones stopped (SplitQueue `start`), the kind's
 * restoreState, the transport's poll of every queue, and traffic again: the
 * receive chains the old device held are the first ones the new one fills.
 */
import test, { type ExecutionContext } from 'ava';
import { SnapshotStateError } from '../../../../../lib/errors.js';
import * as N from '../../../../../devices/virtio/net/constants.js';
import { NetDevice } from '../../../../../devices/virtio/net/device.js';
import { netKind } from '../../../../../devices/virtio/net/kind.js';
import type { NetState } from '../../../../../devices/virtio/net/snapshot.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import type { QueuePosition } from '../../../../../devices/virtio/queue/types.js';
import { frame, LINUX_FEATURES, NetHarness, numBuffers, packet, PLAIN_FEATURES } from './net-harness.js';
import { closeFd, recvPacket, sendPacket, seqpacketPair } from './net-sockets.js';

const HDR = N.VIRTIO_NET_HDR_SIZE;

function roundTrip<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** The positions of the harness's current queues (what the transport saves). */
function positions(h: NetHarness): QueuePosition[] {
  return h.queues.map((q) => q!.saveState());
}

/**
 * What a restore does, on a new socketpair: create() from params, activate at
 * `starts` (default: the current queues' positions), restoreState, then the
 * transport's poll of each queue. On success the harness drives the new
 * device; on failure everything new is released and the old device stays.
 */
function restoreInto(h: NetHarness, state: unknown, opts: { active?: boolean; starts?: QueuePosition[] } = {}): NetDevice {
  const [a, b] = seqpacketPair();
  const dev = netKind.create({ tapFd: a, mac: '02:00:00:00:00:02', name: 'snap0' }) as NetDevice;
  const active = opts.active ?? true;
  const starts = opts.starts ?? positions(h);
  try {
    if (active) {
      const queues = [h.rxDriver.config, h.txDriver.config].map((c, i) => new SplitQueue(h.memory, { ...c, start: starts[i]! }));
      dev.activate(h.context(h.features, queues));
    }
    netKind.restoreState!(dev, state, { active });
    if (active) for (const i of [N.NET_RX_QUEUE, N.NET_TX_QUEUE]) dev.queueNotify(i);
  } catch (e) {
    dev.dispose();
    closeFd(a);
    closeFd(b);
    throw e;
  }
  h.device.dispose();
  h.device = dev;
  h.deviceFd = a;
  h.peer = b;
  extraFds.push(a, b);
  return dev;
}

const extraFds: number[] = [];

function withHarness(opts: ConstructorParameters<typeof NetHarness>[0], fn: (t: ExecutionContext, h: NetHarness) => void) {
  return (t: ExecutionContext) => {
    const h = new NetHarness(opts);
    try {
      fn(t, h);
    } finally {
      h.close();
      for (const fd of extraFds.splice(0)) closeFd(fd);
    }
  };
}

for (const [name, features, bufs] of [['mergeable', LINUX_FEATURES, 40], ['plain', PLAIN_FEATURES, 6]] as const) {
  test.serial(`snapshot (${name} buffers): held receive chains are carried; after restore on a new tap they take the next packet, then traffic goes on`, withHarness({ features }, (t, h) => {
    const size = name === 'mergeable' ? 2048 : HDR + 1518;
    h.addRxBuffers(bufs, size);
    const p1 = packet(frame(1000, 1));
    sendPacket(h.peer, p1);
    h.pump();
    t.is(h.rxUsed().length, 1);
    const sent = packet(frame(200, 2));
    t.is(h.transmit([sent]).length, 1);
    t.deepEqual(recvPacket(h.peer), sent);

    const state = roundTrip(netKind.saveState!(h.device) as NetState);
    // Mergeable: room for the largest packet (33 chains of 2 KiB); plain: one chain is a packet's room.
    const held = name === 'mergeable' ? Math.ceil(N.NET_MAX_PACKET / size) : 1;
    t.is(state.rx!.held.length, held, 'the chains the device held for the next packet');
    t.false(state.rx!.broken);
    t.deepEqual(state.rx!.stats, { packets: 1, bytes: p1.length, dropped: 0, malformed: 0, pauses: 0 });
    t.deepEqual(state.tx, { broken: false, stats: { packets: 1, bytes: sent.length, malformed: 0, hostErrors: 0 } });
    const [rxAt] = positions(h);
    t.is((rxAt!.nextAvail - rxAt!.nextUsed) & 0xffff, held, 'the receive queue shows them outstanding');
    t.true(state.rx!.held.every((c) => c.readable.length === 0 && c.writable.length === 1 && c.writable[0]![1] === size));

    const oldPeer = h.peer;
    const dev = restoreInto(h, state);
    t.true(h.tapWatched, 'the restored device watches its new tap after the poll');
    t.deepEqual(dev.stats!.rx.packets, 1, 'counters continue');
    const p2 = packet(frame(1400, 3));
    sendPacket(h.peer, p2);
    h.pump();
    const used = h.rxUsed();
    t.is(used.length, 1);
    t.is(used[0]!.id, state.rx!.held[0]!.head, 'the first held chain takes the first packet after restore');
    t.is(used[0]!.len, p2.length);
    t.is(numBuffers(used[0]!.data), 1);
    t.deepEqual(used[0]!.data.subarray(HDR), p2.subarray(HDR));
    const sent2 = packet(frame(300, 4));
    t.is(h.transmit([sent2]).length, 1);
    t.deepEqual(recvPacket(h.peer), sent2, 'transmit goes to the new tap');
    t.is(recvPacket(oldPeer), null, 'and not to the old one');
    t.like(dev.stats, { rx: { packets: 2 }, tx: { packets: 2 } });
    // More buffers after restore are used after the held ones, in ring order.
    h.addRxBuffers(2, size);
    for (let i = 0; i < 3; i++) sendPacket(h.peer, packet(frame(100, 10 + i)));
    h.pump();
    const ids = h.rxUsed().map((u) => u.id);
    t.is(ids.length, 3);
    const rest = state.rx!.held.slice(1, 3).map((c) => c.head);
    t.deepEqual(ids.slice(0, rest.length), rest, 'the other held chains come next, in order');
  }));
}

test.serial('snapshot: the state is taken without touching the device; the old device carries on', withHarness({}, (t, h) => {
  h.addRxBuffers(40, 2048);
  const before = positions(h);
  const s1 = netKind.saveState!(h.device);
  const s2 = netKind.saveState!(h.device);
  t.deepEqual(s1, s2);
  t.deepEqual(positions(h), before, 'nothing popped or returned');
  t.deepEqual(h.rxUsed(), []);
  sendPacket(h.peer, packet(frame(500, 1)));
  h.pump();
  t.is(h.rxUsed().length, 1);
}));

test.serial('snapshot: a device the driver never activated saves nulls and restores inactive', withHarness({}, (t, h) => {
  h.device.reset();
  const state = roundTrip(netKind.saveState!(h.device));
  t.deepEqual(state, { rx: null, tx: null });
  const dev = restoreInto(h, state, { active: false });
  t.is(dev.stats, null);
  const e = t.throws(() => restoreInto(h, { rx: { broken: false, held: [], stats: {} }, tx: null }, { active: false }), { instanceOf: SnapshotStateError });
  t.is(e?.field, 'rx');
}));

test.serial('snapshot: a transmit queue the driver broke stays broken after restore', withHarness({}, (t, h) => {
  h.addRxBuffers(40, 2048);
  h.txDriver.setAvailEntry(0, 4000);
  h.txDriver.setAvailIdx(1);
  h.device.queueNotify(N.NET_TX_QUEUE);
  t.is(h.resets, 1);
  const state = roundTrip(netKind.saveState!(h.device) as NetState);
  t.true(state.tx!.broken);
  const starts = positions(h);
  t.deepEqual(starts[1], { nextAvail: 1, nextUsed: 0 });
  t.throws(() => restoreInto(h, { ...state, tx: { ...state.tx, broken: false } }, { starts }), { instanceOf: SnapshotStateError, message: /^tx\.broken: .*1 chains outstanding/ });
  restoreInto(h, state, { starts });
  t.deepEqual(h.transmit([packet(frame(100, 1))]), [], 'nothing is sent');
  t.is(recvPacket(h.peer), null);
  sendPacket(h.peer, packet(frame(100, 2)));
  h.pump();
  t.is(h.rxUsed().length, 1, 'receive still works');
}));

test.serial('snapshot: tampered states throw naming the field; the untampered one restores', withHarness({}, (t, h) => {
  h.addRxBuffers(40, 2048);
  const good = roundTrip(netKind.saveState!(h.device) as NetState);
  const rx = good.rx!;
  const held = rx.held;
  const c0 = held[0]!;
  const chainWith = (c: object) => ({ ...good, rx: { ...rx, held: [{ ...c0, ...c }, ...held.slice(1)] } });
  const cases: [unknown, string][] = [
    [null, 'state'],
    [{ ...good, rx: 7 }, 'rx'],
    [{ ...good, rx: { ...rx, broken: 1 } }, 'rx.broken'],
    [{ ...good, rx: { ...rx, held: 'all' } }, 'rx.held'],
    [{ ...good, rx: { ...rx, held: held.slice(1) } }, 'rx.held'],
    [{ ...good, rx: { ...rx, held: Array.from({ length: 300 }, () => c0) } }, 'rx.held'],
    [{ ...good, rx: { ...rx, held: [held[1], ...held.slice(1)] } }, 'rx.held[1].head'],
    [chainWith({ head: 256 }), 'rx.held[0].head'],
    [chainWith({ head: -1 }), 'rx.held[0].head'],
    [chainWith({ writable: [[16 * 1024 * 1024 - 100, 2048]] }), 'rx.held[0].writable[0]'],
    [chainWith({ writable: [[2 ** 53, 2048]] }), 'rx.held[0].writable[0][0]'],
    [chainWith({ writable: [[0x20000, 0]] }), 'rx.held[0].writable[0][1]'],
    [chainWith({ writable: [[0x20000]] }), 'rx.held[0].writable[0]'],
    [chainWith({ writable: Array.from({ length: 1000 }, () => [0x20000, 1]) }), 'rx.held[0].writable'],
    [chainWith({ writable: [[0x20000, 4]] }), 'rx.held[0]'],
    [chainWith({ readable: [[0x20000, 16]] }), 'rx.held[0]'],
    [chainWith({ readable: undefined }), 'rx.held[0].readable'],
    [{ ...good, rx: { ...rx, stats: { ...rx.stats, packets: -1 } } }, 'rx.stats.packets'],
    [{ ...good, rx: { ...rx, stats: null } }, 'rx.stats'],
    [{ ...good, tx: undefined }, 'tx'],
    [{ ...good, tx: { ...good.tx, broken: 'false' } }, 'tx.broken'],
    [{ ...good, tx: { ...good.tx, stats: { ...good.tx!.stats, bytes: 'x' } } }, 'tx.stats.bytes'],
  ];
  for (const [state, field] of cases) {
    const e = t.throws(() => restoreInto(h, state), { instanceOf: SnapshotStateError }, field);
    t.is(e?.field, field, JSON.stringify(state).slice(0, 200));
  }
  t.notThrows(() => restoreInto(h, good), 'the untampered state restores');
}));
