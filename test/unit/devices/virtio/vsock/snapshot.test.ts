/**
 * virtio-vsock snapshot hooks without KVM: connections both ways, the kind's
 * saveState (JSON round trip), a fresh device from the kind's open() (a new
 * listener path, as an override gives) and create(), activated with its
 * queues where the old ones stopped (SplitQueue `start`), the kind's
 * restoreState, the transport's poll of every queue; then the
 * TRANSPORT_RESET event and new connections both ways.
 */
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { SnapshotStateError } from '../../../../../lib/errors.js';
import type { VsockSockets } from '../../../../../devices/virtio/vsock/backend.js';
import * as V from '../../../../../devices/virtio/vsock/constants.js';
import { VsockDevice } from '../../../../../devices/virtio/vsock/device.js';
import { vsockKind } from '../../../../../devices/virtio/vsock/kind.js';
import { encodeHeader } from '../../../../../devices/virtio/vsock/packet.js';
import type { VsockState } from '../../../../../devices/virtio/vsock/snapshot.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import type { QueuePosition } from '../../../../../devices/virtio/queue/types.js';
import { EAGAIN } from '../../../../../lib/sys.js';
import { GUEST_CID, VsockHarness, type GuestConn, type HarnessOptions, type HostPeer } from './vsock-harness.js';

const RESET = V.VIRTIO_VSOCK_EVENT_TRANSPORT_RESET;

function roundTrip<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function positions(h: VsockHarness): QueuePosition[] {
  return h.queues.map((q) => q.saveState());
}

/** Listeners opened for restored devices, closed after the test. */
const opened: { readonly params: { readonly listenFd: number }; close(): void }[] = [];
let restores = 0;

/**
 * What a restore does: the kind's open() at a new udsPath, create(), activate
 * at `starts` (default: the current queues' positions), restoreState, then
 * the transport's poll of each queue. On success the harness drives the new
 * device (the old one is disposed, as when the old VM stops); on failure
 * everything new is released and the old device stays.
 */
function restoreInto(h: VsockHarness, state: unknown, opts: { active?: boolean; starts?: QueuePosition[] } = {}): VsockDevice {
  const udsPath = join(h.dir, `r${restores++}.sock`);
  const o = vsockKind.open({ guestCid: GUEST_CID, udsPath }, { field: 'vsock', index: 0, slot: 0 });
  const dev = vsockKind.create(o.params) as VsockDevice;
  const active = opts.active ?? true;
  const starts = opts.starts ?? positions(h);
  try {
    if (active) {
      const queues = [h.rx.config, h.tx.config, h.event.config].map((c, i) => new SplitQueue(h.memory, { ...c, start: starts[i]! }));
      dev.activate(h.context(true, queues));
    }
    vsockKind.restoreState!(dev, state, { active });
    if (active) for (const i of [V.VSOCK_QUEUE_RX, V.VSOCK_QUEUE_TX, V.VSOCK_QUEUE_EVENT]) dev.queueNotify(i);
  } catch (e) {
    dev.dispose();
    o.close();
    throw e;
  }
  opened.push(o);
  h.device.dispose();
  h.device = dev;
  h.udsPath = udsPath;
  return dev;
}

function withHarness(opts: HarnessOptions, fn: (t: ExecutionContext, h: VsockHarness) => Promise<void> | void) {
  return async (t: ExecutionContext) => {
    const h = new VsockHarness(opts);
    try {
      await fn(t, h);
    } finally {
      h.close();
      for (const o of opened.splice(0)) o.close();
    }
  };
}

async function hostToGuest(h: VsockHarness, port: number): Promise<{ peer: HostPeer; conn: GuestConn }> {
  let conn: GuestConn | null = null;
  h.guest.listen(port, (c) => { c.echo = true; conn = c; });
  const peer = h.connect(port);
  await h.until(() => conn !== null && peer.text.includes('\n'), 10_000, 'OK line');
  return { peer, conn: conn! };
}


test.serial('snapshot: connections end, the restored device sends TRANSPORT_RESET, and new connections work both ways on the new listener', withHarness({}, async (t, h) => {
  h.guest.postEvents(4);
  const a = await hostToGuest(h, 60);
  a.peer.socket.write('before');
  await h.until(() => a.peer.payload.toString() === 'before', 5000, 'echo before');
  const b = await h.guestToHost(5106, 10_000);
  b.conn.write(Buffer.from('to host'));
  await h.until(() => b.host.text === 'to host', 5000, 'guest -> host');

  const state = roundTrip(vsockKind.saveState!(h.device) as VsockState);
  t.like(state.muxer, { broken: false, spareRx: [], nextPort: V.VSOCK_FIRST_EPHEMERAL_PORT + 1 });
  t.is(state.muxer!.stats.connected, 2);
  t.is(h.device.mux!.connectionCount, 2, 'saveState leaves the running device as it was');
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [], 'no event before the restore');

  const dev = restoreInto(h, state);
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [RESET], 'TRANSPORT_RESET on the event queue at restore');
  t.is(dev.mux!.connectionCount, 0);
  t.is(dev.stats!.connected, 2, 'counters continue');
  // The old VM's host peers see their connections end (the old device is gone here).
  await h.until(() => a.peer.closed && (b.host.closed || b.host.ended), 5000, 'old host sockets closed');

  // Linux resets every socket on the event; listeners stay.
  h.guest.conns.clear();
  const c = await hostToGuest(h, 61);
  t.regex(c.peer.text, /^OK 1073741825\n/, 'host ports continue from the saved nextPort');
  c.peer.socket.write('after');
  await h.until(() => c.peer.payload.toString() === 'after', 5000, 'echo after restore');
  const d = await h.guestToHost(5107, 10_000);
  d.conn.write(Buffer.from('again'));
  await h.until(() => d.host.text === 'again', 5000, 'guest -> host after restore');
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [RESET], 'one event only');
  t.deepEqual(h.guest.violations, []);
}));

test.serial('snapshot: with no event buffer posted, TRANSPORT_RESET goes out when the driver adds one', withHarness({}, async (t, h) => {
  const state = roundTrip(vsockKind.saveState!(h.device));
  restoreInto(h, state);
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, []);
  h.guest.postEvents(2);
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [RESET]);
  h.guest.postEvents(1);
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [RESET], 'sent once');
}));

test.serial('snapshot: a REQUEST published before the snapshot but not yet served is served at restore, then dropped by the reset', withHarness({}, async (t, h) => {
  h.guest.postEvents(1);
  // The restored device's listener path is the next one restoreInto opens; guest-initiated connections go next to it.
  const restoredPath = join(h.dir, `r${restores}.sock`);
  const oldPath = h.udsPath;
  h.udsPath = restoredPath;
  let host: HostPeer | null = null;
  await h.listenHost(5300, (p) => { host = p; });
  h.udsPath = oldPath;
  const hdr = new Uint8Array(V.VSOCK_HDR_SIZE);
  encodeHeader({
    srcCid: BigInt(GUEST_CID), dstCid: BigInt(V.VMADDR_CID_HOST), srcPort: 40_000, dstPort: 5300, len: 0,
    type: V.VIRTIO_VSOCK_TYPE_STREAM, op: V.VIRTIO_VSOCK_OP_REQUEST, flags: 0, bufAlloc: 64 * 1024, fwdCnt: 0,
  }, hdr);
  const at = 0x200_0000; // Outside every area the guest stack uses.
  h.memory.write(at, hdr);
  h.tx.addChain([{ addr: at, len: hdr.length }]);
  h.tx.kick(); // Published; the device has not seen the kick when the snapshot is taken.
  const state = roundTrip(vsockKind.saveState!(h.device));
  t.deepEqual(positions(h)[V.VSOCK_QUEUE_TX], { nextAvail: 0, nextUsed: 0 });
  const dev = restoreInto(h, state);
  t.is(h.tx.usedIdx, 1, 'served at restore');
  t.is(dev.mux!.connectionCount, 0, 'and its connection dropped by the transport reset');
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [RESET]);
  await h.until(() => host !== null && (host.closed || host.ended), 5000, 'the host service sees the connection end');
}));

/** A harness whose socket reads fail with EAGAIN while `flag.eagain` is set (to leave an rx chain popped but unfilled). */
function eagainHarness(flag: { eagain: boolean }): HarnessOptions {
  return {
    sockets: (real): VsockSockets => ({
      accept: (fd) => real.accept(fd), connect: (p) => real.connect(p), writev: (fd, m, s) => real.writev(fd, m, s),
      recv: (fd, b, n, peek) => real.recv(fd, b, n, peek), send: (fd, b) => real.send(fd, b), shutdown: (fd, how) => real.shutdown(fd, how),
      close: (fd) => real.close(fd), readv: (fd, m, s) => (flag.eagain ? -EAGAIN : real.readv(fd, m, s)),
    }),
  };
}

const spareFlag = { eagain: false };
test.serial('snapshot: an rx chain popped but not filled is carried and takes the first packet after restore', withHarness(eagainHarness(spareFlag), async (t, h) => {
  spareFlag.eagain = false;
  h.guest.postEvents(1);
  const a = await hostToGuest(h, 70);
  spareFlag.eagain = true;
  const usedBefore = h.rx.usedIdx;
  a.peer.socket.write('x');
  await h.until(() => ((h.queues[0]!.lastAvailIndex - h.queues[0]!.usedIndex) & 0xffff) === 1, 5000, 'a spare rx chain');
  spareFlag.eagain = false;
  t.is(h.rx.usedIdx, usedBefore, 'nothing was returned');
  const state = roundTrip(vsockKind.saveState!(h.device) as VsockState);
  t.is(state.muxer!.spareRx.length, 1);
  const spare = state.muxer!.spareRx[0]!;
  t.true(spare.writable.length >= 1);

  restoreInto(h, state);
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [RESET]);
  h.guest.conns.clear();
  const slot = h.rx.usedIdx;
  const c = await hostToGuest(h, 71);
  const firstId = h.memory.readU32(h.rx.config.usedAddr + 4 + (slot % h.rx.size) * 8);
  t.is(firstId, spare.head, 'the carried chain took the first packet (the REQUEST)');
  c.peer.socket.write('after');
  await h.until(() => c.peer.payload.toString() === 'after', 5000, 'echo after restore');
  t.deepEqual(h.guest.violations, []);
}));

test.serial('snapshot: a device the driver never activated saves null and restores inactive, sending nothing', withHarness({}, (t, h) => {
  h.device.reset();
  const state = roundTrip(vsockKind.saveState!(h.device));
  t.deepEqual(state, { muxer: null });
  const dev = restoreInto(h, state, { active: false });
  t.is(dev.mux, null);
  const e = t.throws(() => restoreInto(h, { muxer: {} }, { active: false }), { instanceOf: SnapshotStateError });
  t.is(e?.field, 'muxer');
}));

test.serial('snapshot: broken rings stay broken after restore, and no event is sent', withHarness({}, (t, h) => {
  h.guest.postEvents(2);
  h.tx.setAvailEntry(0, 4000);
  h.tx.setAvailIdx(1);
  h.device.queueNotify(V.VSOCK_QUEUE_TX);
  t.is(h.needsReset, 1);
  const state = roundTrip(vsockKind.saveState!(h.device) as VsockState);
  t.true(state.muxer!.broken);
  const starts = positions(h);
  t.throws(() => restoreInto(h, { muxer: { ...state.muxer, broken: false } }, { starts }), { instanceOf: SnapshotStateError, message: /^muxer\.broken: .*tx queue has 1 chains outstanding/ });
  const dev = restoreInto(h, state, { starts });
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, []);
  t.deepEqual(h.watcher.watchedFds.filter((fd) => fd === opened.at(-1)!.params.listenFd), [], 'the listener is not served');
  t.is(dev.mux!.connectionCount, 0);
}));

test.serial('snapshot: tampered states throw naming the field; the untampered one restores', withHarness(eagainHarness({ eagain: false }), (t, h) => {
  const good = roundTrip(vsockKind.saveState!(h.device) as VsockState);
  const m = good.muxer!;
  const chain = { head: 3, readable: [], writable: [[0x10_0000, 44], [0x10_0040, 4096]] };
  const cases: [unknown, string][] = [
    [null, 'state'],
    [{ muxer: 'on' }, 'muxer'],
    [{ muxer: { ...m, broken: null } }, 'muxer.broken'],
    [{ muxer: { ...m, nextPort: 5 } }, 'muxer.nextPort'],
    [{ muxer: { ...m, nextPort: 2 ** 32 } }, 'muxer.nextPort'],
    [{ muxer: { ...m, nextPort: '1073741824' } }, 'muxer.nextPort'],
    [{ muxer: { ...m, spareRx: {} } }, 'muxer.spareRx'],
    [{ muxer: { ...m, spareRx: [chain] } }, 'muxer.spareRx'],
    [{ muxer: { ...m, spareRx: Array.from({ length: 257 }, () => chain) } }, 'muxer.spareRx'],
    [{ muxer: { ...m, stats: { ...m.stats, bytesToHost: -1 } } }, 'muxer.stats.bytesToHost'],
    [{ muxer: { ...m, stats: undefined } }, 'muxer.stats'],
  ];
  for (const [state, field] of cases) {
    const e = t.throws(() => restoreInto(h, state), { instanceOf: SnapshotStateError }, field);
    t.is(e?.field, field, JSON.stringify(state).slice(0, 200));
  }
  // With one rx chain outstanding, the chain itself is checked.
  const starts = positions(h);
  starts[0] = { nextAvail: (starts[0]!.nextAvail + 1) & 0xffff, nextUsed: starts[0]!.nextUsed };
  const head = h.memory.readU16(h.rx.config.availAddr + 4 + (starts[0].nextUsed % h.rx.size) * 2);
  const held = (c: object) => ({ muxer: { ...m, spareRx: [{ ...chain, head, ...c }] } });
  const chainCases: [unknown, string][] = [
    [held({ writable: [[0x10_0000, 40]] }), 'muxer.spareRx[0]'],
    [held({ writable: [[48 * 1024 * 1024, 44]] }), 'muxer.spareRx[0].writable[0]'],
    [held({ head: 256 }), 'muxer.spareRx[0].head'],
    [{ muxer: { ...m, spareRx: [] } }, 'muxer.spareRx'],
  ];
  for (const [state, field] of chainCases) {
    const e = t.throws(() => restoreInto(h, state, { starts }), { instanceOf: SnapshotStateError }, field);
    t.is(e?.field, field, JSON.stringify(state).slice(0, 200));
  }
  t.notThrows(() => restoreInto(h, held({}), { starts }), 'a well-formed held chain restores');
}));
