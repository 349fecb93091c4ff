/**
 * virtio-net without KVM: a VirtqDriver plays Linux on both queues, guest
 * memory is a real host mapping, and the backend is a real TapBackend on a
 * SOCK_SEQPACKET socketpair whose other end the test reads and writes (one
 * message = one tap packet: vnet header + frame).
 */
import test, { type ExecutionContext } from 'ava';
import * as C from '../../../../../devices/virtio/constants.js';
import { DeviceNeedsReset } from '../../../../../devices/virtio/device.js';
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN } from '../../../../../devices/virtio/backends/tap.js';
import * as N from '../../../../../devices/virtio/net/constants.js';
import { NetDevice } from '../../../../../devices/virtio/net/device.js';
import { EPOLLERR } from '../../../../../lib/io/epoll.js';
import {
  FakeWakeup, frame, LINUX_FEATURES, NetHarness, numBuffers, packet, PLAIN_FEATURES, split, vnetHeader, type NetHarnessOptions,
} from './net-harness.js';
import { closeFd, recvPacket, sendPacket } from './net-sockets.js';

const HDR = N.VIRTIO_NET_HDR_SIZE;
const bit = C.feature;

function withHarness(opts: NetHarnessOptions, fn: (t: ExecutionContext, h: NetHarness) => void) {
  return (t: ExecutionContext) => {
    const h = new NetHarness(opts);
    try {
      fn(t, h);
    } finally {
      h.close();
    }
  };
}

/** Every packet waiting on the peer end. */
function drainPeer(h: NetHarness): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let p = recvPacket(h.peer); p; p = recvPacket(h.peer)) out.push(p);
  return out;
}

// ---- info, activation ----

test('info: device 1, two 256-entry queues, MAC and link-up status in config, Linux-relevant features', (t) => {
  const info = NetDevice.info({ mac: '52:54:00:AB:cd:0f' });
  t.is(info.deviceType, C.VIRTIO_ID_NET);
  t.deepEqual(info.queueMaxSizes, [256, 256]);
  t.deepEqual([...info.config], [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f, N.VIRTIO_NET_S_LINK_UP, 0]);
  const want = [N.VIRTIO_NET_F_MAC, N.VIRTIO_NET_F_STATUS, N.VIRTIO_NET_F_MRG_RXBUF, N.VIRTIO_NET_F_CSUM, N.VIRTIO_NET_F_GUEST_CSUM,
    N.VIRTIO_NET_F_HOST_TSO4, N.VIRTIO_NET_F_HOST_TSO6, N.VIRTIO_NET_F_HOST_ECN, N.VIRTIO_NET_F_GUEST_TSO4, N.VIRTIO_NET_F_GUEST_TSO6,
    N.VIRTIO_NET_F_GUEST_ECN, C.VIRTIO_F_EVENT_IDX, C.VIRTIO_F_INDIRECT_DESC].reduce((m, b) => m | bit(b), 0n);
  t.is(info.features, want);
  t.is(info.features & bit(N.VIRTIO_NET_F_CTRL_VQ), 0n, 'no control queue');
  t.is(info.features & (bit(N.VIRTIO_NET_F_GUEST_UFO) | bit(N.VIRTIO_NET_F_HOST_UFO)), 0n, 'no UFO');
});

test('info: offloads and mergeable buffers can be left out', (t) => {
  const { features } = NetDevice.info({ mac: '02:00:00:00:00:01', offloads: false, mergeableRxBuffers: false });
  t.is(features, [N.VIRTIO_NET_F_MAC, N.VIRTIO_NET_F_STATUS, C.VIRTIO_F_EVENT_IDX, C.VIRTIO_F_INDIRECT_DESC].reduce((m, b) => m | bit(b), 0n));
});

test('info: rejects MACs that are not unicast addresses', (t) => {
  for (const mac of ['', '02:00:00:00:00', '02-00-00-00-00-01', 'zz:00:00:00:00:01', '01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00']) {
    t.throws(() => NetDevice.info({ mac }), { instanceOf: RangeError }, mac);
  }
});

test('activate without both queues throws DeviceNeedsReset', withHarness({}, (t, h) => {
  const dev = new NetDevice({ mac: '02:00:00:00:00:02' }, { send() {}, receive: () => null, setOffload() {}, watch() {}, unwatch() {} });
  t.throws(() => dev.activate(h.context(LINUX_FEATURES, [null, null])), { instanceOf: DeviceNeedsReset });
  const both = h.context(LINUX_FEATURES);
  t.throws(() => dev.activate(h.context(LINUX_FEATURES, [both.queues[0]!, null])), { instanceOf: DeviceNeedsReset });
}));

test('activation turns on the tap offloads the guest negotiated for receive', (t) => {
  const cases: [bigint, number][] = [
    [LINUX_FEATURES, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN],
    [PLAIN_FEATURES, 0],
    [PLAIN_FEATURES | bit(N.VIRTIO_NET_F_GUEST_CSUM), TUN_F_CSUM],
    // TSO without GUEST_CSUM breaks §5.1.3.1: no TSO then.
    [PLAIN_FEATURES | bit(N.VIRTIO_NET_F_GUEST_TSO4) | bit(N.VIRTIO_NET_F_GUEST_ECN), 0],
    [PLAIN_FEATURES | bit(N.VIRTIO_NET_F_GUEST_CSUM) | bit(N.VIRTIO_NET_F_GUEST_TSO6) | bit(N.VIRTIO_NET_F_GUEST_ECN), TUN_F_CSUM | TUN_F_TSO6 | TUN_F_TSO_ECN],
    // Host-side offloads are the guest's transmit side: nothing to set on the tap.
    [PLAIN_FEATURES | bit(N.VIRTIO_NET_F_CSUM) | bit(N.VIRTIO_NET_F_HOST_TSO4), 0],
  ];
  for (const [features, flags] of cases) {
    const h = new NetHarness({ features });
    try {
      t.deepEqual(h.offloadCalls, [flags], `features 0x${features.toString(16)}`);
    } finally {
      h.close();
    }
  }
});

test('reset stops watching the tap, clears the offloads; activation again works', withHarness({}, (t, h) => {
  h.addRxBuffers(64, 2048);
  t.true(h.tapWatched);
  h.device.reset();
  t.false(h.tapWatched);
  t.is(h.offloadCalls.at(-1), 0);
  t.is(h.device.stats, null);
  sendPacket(h.peer, packet(frame(60)));
  t.is(h.pump(), 0, 'nothing watched after reset');
  // The driver sets up fresh rings and activates again.
  const h2 = h.context(h.features);
  h.device.activate(h2);
  t.false(h.tapWatched, 'no buffers yet on the new rings');
}));

test('setLinkUp writes the status field and is a no-op when unchanged', withHarness({}, (t, h) => {
  h.device.setLinkUp(true);
  t.is(h.configWrites.length, 0);
  h.device.setLinkUp(false);
  h.device.setLinkUp(true);
  t.deepEqual(h.configWrites.map((w) => [w.offset, ...w.bytes]), [[N.VIRTIO_NET_CFG_STATUS, 0, 0], [N.VIRTIO_NET_CFG_STATUS, N.VIRTIO_NET_S_LINK_UP, 0]]);
}));

// ---- transmit ----

test('tx: a packet (header + frame) reaches the tap intact; the chain comes back with length 0', withHarness({}, (t, h) => {
  const p = packet(frame(1514, 3));
  const used = h.transmit([p]);
  t.is(used.length, 1);
  t.is(used[0]!.len, 0);
  t.deepEqual(drainPeer(h), [p]);
  t.is(h.signals, 1);
  t.deepEqual(h.device.stats!.tx, { packets: 1, bytes: p.length, malformed: 0, hostErrors: 0 });
}));

test('tx: header and frame scattered over segments, direct and indirect, are gathered in order', withHarness({}, (t, h) => {
  const p = packet(frame(3000, 5), vnetHeader({ flags: N.VIRTIO_NET_HDR_F_NEEDS_CSUM, csumStart: 34, csumOffset: 16 }));
  const pieces = split(p, [5, 7, 1, 999, 1000, 13]);
  t.is(h.transmit(pieces).length, 1);
  t.is(h.transmit(pieces, { indirect: true }).length, 1);
  t.deepEqual(drainPeer(h), [p, p]);
}));

test('tx: a TSO packet the guest may send (HOST_TSO4 + ECN) goes through with its GSO header', withHarness({}, (t, h) => {
  const p = packet(frame(20_000, 2), vnetHeader({ flags: N.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: N.VIRTIO_NET_HDR_GSO_TCPV4 | N.VIRTIO_NET_HDR_GSO_ECN, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 }));
  h.transmit([p]);
  t.deepEqual(drainPeer(h), [p]);
}));

test('tx: malformed chains are dropped and returned; good ones around them still go', withHarness({ features: PLAIN_FEATURES }, (t, h) => {
  const good = packet(frame(100, 1));
  const bad: [string, (Uint8Array | { len: number; write?: boolean })[]][] = [
    ['8-byte header', [new Uint8Array(8)]],
    ['header only', [vnetHeader()]],
    ['frame shorter than an Ethernet header', [packet(frame(14)).subarray(0, HDR + 13)]],
    ['over 65562 bytes', [vnetHeader(), new Uint8Array(65_551)]],
    ['writable buffer', [good, { len: 64, write: true }]],
    ['only writable', [{ len: 100, write: true }]],
    ['NEEDS_CSUM without CSUM', [packet(frame(100), vnetHeader({ flags: N.VIRTIO_NET_HDR_F_NEEDS_CSUM }))]],
    ['DATA_VALID on transmit', [packet(frame(100), vnetHeader({ flags: N.VIRTIO_NET_HDR_F_DATA_VALID }))]],
    ['GSO without HOST_TSO4', [packet(frame(100), vnetHeader({ gsoType: N.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1000 }))]],
    ['UDP GSO', [packet(frame(100), vnetHeader({ gsoType: N.VIRTIO_NET_HDR_GSO_UDP, gsoSize: 1000 }))]],
    ['ECN bit alone', [packet(frame(100), vnetHeader({ gsoType: N.VIRTIO_NET_HDR_GSO_ECN }))]],
  ];
  h.addTx([good]);
  for (const [, pieces] of bad) h.addTx(pieces);
  h.addTx([good]);
  h.txDriver.kick();
  h.device.queueNotify(N.NET_TX_QUEUE);
  const used = h.txDriver.used();
  t.is(used.length, bad.length + 2, 'every chain returned');
  t.true(used.every((u) => u.len === 0));
  t.deepEqual(drainPeer(h), [good, good]);
  t.is(h.device.stats!.tx.malformed, bad.length);
  t.is(h.resets, 0);
}));

test('tx: exactly 65562 bytes is accepted', withHarness({}, (t, h) => {
  const p = packet(frame(N.NET_MAX_PACKET - HDR, 9));
  h.transmit(split(p, [30_000, 30_000]));
  const got = drainPeer(h);
  t.is(got.length, 1);
  t.is(got[0]!.length, N.NET_MAX_PACKET);
}));

test('tx: GSO without HOST_TSO6 but with TSO4 only: TCPv6 GSO is refused', withHarness({ features: PLAIN_FEATURES | bit(N.VIRTIO_NET_F_CSUM) | bit(N.VIRTIO_NET_F_HOST_TSO4) }, (t, h) => {
  h.transmit([packet(frame(100), vnetHeader({ gsoType: N.VIRTIO_NET_HDR_GSO_TCPV6, gsoSize: 1000 }))]);
  h.transmit([packet(frame(100), vnetHeader({ gsoType: N.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1000 }))]);
  t.is(drainPeer(h).length, 1);
  t.is(h.device.stats!.tx.malformed, 1);
}));

test('tx: a chain with a buffer outside guest RAM breaks the queue: DEVICE_NEEDS_RESET, the packets before it sent (queue/serve.ts policy)', withHarness({}, (t, h) => {
  const first = h.addTx([packet(frame(59))]);
  const head = h.addTx([packet(frame(60))]);
  h.txDriver.writeDesc(head, { addr: 0xffff_0000_0000, len: 72, flags: 0, next: 0 });
  h.addTx([packet(frame(61))]);
  h.txDriver.kick();
  h.device.queueNotify(N.NET_TX_QUEUE);
  t.deepEqual(h.txDriver.used().map((u) => u.id), [first], 'the malformed chain and those after it are not returned');
  t.is(drainPeer(h).length, 1);
  t.is(h.resets, 1);
  h.device.queueNotify(N.NET_TX_QUEUE);
  t.is(h.resets, 1, 'stopped until reset');
}));

test('tx: a broken avail index asks for a reset and stops the queue', withHarness({}, (t, h) => {
  h.txDriver.setAvailIdx(1000);
  h.device.queueNotify(N.NET_TX_QUEUE);
  t.is(h.resets, 1);
  h.device.queueNotify(N.NET_TX_QUEUE);
  t.is(h.resets, 1, 'stopped until reset');
}));

test('tx: host errors drop the packet and return the chain', withHarness({ sys: (real) => ({ ...real, writev: () => -1, errno: () => 5 /* EIO: tap down */ }) }, (t, h) => {
  const used = h.transmit([packet(frame(60))]);
  t.is(used.length, 1);
  t.is(h.device.stats!.tx.hostErrors, 1);
  t.is(h.resets, 0);
}));

test('tx: at most a queue of packets per notification, then the wakeup continues', (t) => {
  const wakeup = new FakeWakeup();
  const h = new NetHarness({ queueSize: 8, wakeup });
  try {
    for (let i = 0; i < 8; i++) h.addTx([packet(frame(60, i))]);
    h.txDriver.kick();
    h.device.queueNotify(N.NET_TX_QUEUE);
    t.is(drainPeer(h).length, 8);
    t.is(wakeup.arms, 1, 'yielded after 8');
    t.is(h.txDriver.used().length, 8);
    for (let i = 0; i < 3; i++) h.addTx([packet(frame(60, i))]);
    h.txDriver.kick();
    wakeup.fire();
    t.is(drainPeer(h).length, 3, 'the wakeup picks up where the notification stopped');
    t.is(wakeup.arms, 1);
  } finally {
    h.close();
  }
});

test('tx: interrupts follow used_event (EVENT_IDX)', withHarness({}, (t, h) => {
  h.txDriver.setUsedEvent(5);
  for (let i = 0; i < 3; i++) h.transmit([packet(frame(60, i))]);
  t.is(h.signals, 0, 'the driver asked for an interrupt only after used index 5');
  for (let i = 0; i < 3; i++) h.transmit([packet(frame(60, i))]);
  t.is(h.signals, 1);
}));

// ---- receive ----

test('rx without mergeable buffers: one chain per packet, num_buffers = 1, length = header + frame', withHarness({ features: PLAIN_FEATURES }, (t, h) => {
  h.addRxBuffers(4, HDR + 1518);
  t.true(h.tapWatched, 'buffers given: the tap is watched');
  const a = packet(frame(60, 1), vnetHeader({ numBuffers: 77 }));
  const b = packet(frame(1514, 2));
  sendPacket(h.peer, a);
  sendPacket(h.peer, b);
  h.pump();
  const used = h.rxUsed();
  t.deepEqual(used.map((u) => u.len), [a.length, b.length]);
  t.is(numBuffers(used[0]!.data), 1, 'num_buffers written by the device');
  t.deepEqual(used[0]!.data.subarray(HDR), a.subarray(HDR));
  t.deepEqual(used[1]!.data.subarray(HDR), b.subarray(HDR));
  t.true(h.signals >= 1);
  t.deepEqual(h.device.stats!.rx, { packets: 2, bytes: a.length + b.length, dropped: 0, malformed: 0, pauses: 0 });
}));

test('rx with mergeable buffers: a packet spans chains; num_buffers counts them; the next packet starts in the next chain', withHarness({}, (t, h) => {
  const heads = h.addRxBuffers(40, 2048); // 80 KiB held: room for the largest packet
  const big = packet(frame(5000 - HDR, 4));
  const small = packet(frame(60, 5));
  sendPacket(h.peer, big);
  sendPacket(h.peer, small);
  h.pump();
  const used = h.rxUsed();
  t.deepEqual(used.map((u) => u.id), heads.slice(0, 4));
  t.deepEqual(used.map((u) => u.len), [2048, 2048, 904, small.length]);
  t.is(numBuffers(used[0]!.data), 3);
  const joined = new Uint8Array(5000);
  let at = 0;
  for (const u of used.slice(0, 3)) {
    joined.set(u.data, at);
    at += u.len;
  }
  t.deepEqual(joined.subarray(HDR), big.subarray(HDR));
  t.is(numBuffers(used[3]!.data), 1);
}));

test('rx with mergeable buffers: a 64 KiB packet over many small multi-segment chains', withHarness({}, (t, h) => {
  // 80 chains of 3 segments (500 + 300 + 700 bytes): 120 KB.
  h.addRx(Array.from({ length: 80 }, () => [500, 300, 700]));
  const p = packet(frame(N.NET_MAX_PACKET - HDR, 7));
  sendPacket(h.peer, p);
  h.pump();
  const used = h.rxUsed();
  t.is(used.length, Math.ceil(p.length / 1500));
  t.is(numBuffers(used[0]!.data), used.length);
  const joined = new Uint8Array(p.length);
  let at = 0;
  for (const u of used) {
    joined.set(u.data, at);
    at += u.len;
  }
  t.deepEqual(joined.subarray(HDR), p.subarray(HDR));
}));

test('rx with mergeable buffers on a small ring: all of it held is room enough', withHarness({ queueSize: 16 }, (t, h) => {
  h.addRxBuffers(16, 1536); // 24 KiB < 65562, but the driver cannot give more
  t.true(h.tapWatched);
  const p = packet(frame(3000, 1));
  sendPacket(h.peer, p);
  h.pump();
  const used = h.rxUsed();
  t.deepEqual(used.map((u) => u.len), [1536, p.length - 1536]);
  t.is(numBuffers(used[0]!.data), 2);
}));

test('rx back-pressure: without buffers the tap is not watched; a kick with buffers resumes delivery', withHarness({ features: PLAIN_FEATURES }, (t, h) => {
  t.false(h.tapWatched, 'no buffers: not watched');
  for (let i = 0; i < 5; i++) sendPacket(h.peer, packet(frame(100, i)));
  t.is(h.pump(), 0);
  h.addRxBuffers(2, 2048);
  h.pump();
  t.is(h.rxUsed().length, 2);
  t.false(h.tapWatched, 'out of buffers again: stopped watching');
  t.is(h.device.stats!.rx.pauses, 1);
  t.is(h.rxDriver.availEvent, h.rxDriver.availIdx, 'rx kicks enabled while waiting: the next buffer published is kicked');
  t.is(h.pump(), 0, 'no busy loop while the packets wait in the tap');
  h.addRxBuffers(3, 2048);
  h.pump();
  const used = h.rxUsed();
  t.is(used.length, 3);
  t.deepEqual(used.map((u) => u.data[HDR + 14]), [frame(100, 2)[14], frame(100, 3)[14], frame(100, 4)[14]], 'in order, none lost');
  t.is(h.device.stats!.rx.dropped, 0);
}));

test('rx back-pressure with mergeable buffers: too little room held waits for more (nothing truncated)', withHarness({}, (t, h) => {
  h.addRxBuffers(10, 2048); // 20 KiB: not enough for a 64 KiB packet on a 256 ring
  t.false(h.tapWatched);
  const p = packet(frame(30_000, 3));
  sendPacket(h.peer, p);
  t.is(h.pump(), 0);
  h.addRxBuffers(30, 2048); // 80 KiB now: the kick delivers the waiting packet
  const used = h.rxUsed();
  t.is(used.reduce((n, u) => n + u.len, 0), p.length);
  t.is(numBuffers(used[0]!.data), Math.ceil(p.length / 2048));
  t.is(h.device.stats!.rx.dropped, 0);
  t.false(h.tapWatched, '25 chains left (50 KiB): waiting for more again');
}));

test('rx: a packet larger than the buffers is dropped and the buffers reused; an exact fit is delivered', withHarness({ features: PLAIN_FEATURES }, (t, h) => {
  const [head] = h.addRxBuffers(1, 212);
  sendPacket(h.peer, packet(frame(500, 1)));
  sendPacket(h.peer, packet(frame(100, 2)));
  h.pump();
  const used = h.rxUsed();
  t.is(used.length, 1);
  t.is(used[0]!.id, head);
  t.is(used[0]!.len, HDR + 100);
  t.is(h.device.stats!.rx.dropped, 1);
  h.addRxBuffers(1, 212);
  sendPacket(h.peer, packet(frame(200, 3)));
  h.pump();
  t.deepEqual(h.rxUsed().map((u) => u.len), [212], 'a packet exactly the size of the buffer is not mistaken for a truncated one');
}));

test('rx: offloaded packets the guest did not negotiate are dropped; DATA_VALID is cleared', withHarness({ features: PLAIN_FEATURES }, (t, h) => {
  h.addRxBuffers(2, 4096);
  sendPacket(h.peer, packet(frame(3000, 1), vnetHeader({ flags: N.VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType: N.VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1448, hdrLen: 54 })));
  sendPacket(h.peer, packet(frame(100, 2), vnetHeader({ flags: N.VIRTIO_NET_HDR_F_NEEDS_CSUM })));
  sendPacket(h.peer, packet(frame(100, 3), vnetHeader({ flags: N.VIRTIO_NET_HDR_F_DATA_VALID })));
  h.pump();
  const used = h.rxUsed();
  t.is(used.length, 1);
  t.is(used[0]!.data[N.VIRTIO_NET_HDR_FLAGS], 0, 'DATA_VALID cleared for a guest without GUEST_CSUM');
  t.is(used[0]!.data[HDR + 14], frame(100, 3)[14]);
  t.is(h.device.stats!.rx.dropped, 2);
}));

test('rx: a guest with GUEST_CSUM/TSO gets GSO packets and their header as is', withHarness({}, (t, h) => {
  h.addRxBuffers(40, 4096);
  const hdr = vnetHeader({ flags: N.VIRTIO_NET_HDR_F_NEEDS_CSUM | N.VIRTIO_NET_HDR_F_DATA_VALID, gsoType: N.VIRTIO_NET_HDR_GSO_TCPV6, gsoSize: 1428, hdrLen: 74, csumStart: 54, csumOffset: 16 });
  const p = packet(frame(40_000, 1), hdr);
  sendPacket(h.peer, p);
  h.pump();
  const used = h.rxUsed();
  t.is(used.length, 10);
  t.deepEqual(used[0]!.data.subarray(0, 10), hdr.subarray(0, 10));
}));

test('rx: malformed receive chains are returned unused', withHarness({ features: PLAIN_FEATURES }, (t, h) => {
  // A readable buffer in a receive chain, and a chain too small for the header.
  const r = h.rxDriver.addChain([{ addr: h.alloc(64), len: 64 }, { addr: h.alloc(2048), len: 2048, write: true }]);
  const s = h.rxDriver.addChain([{ addr: h.alloc(11), len: 11, write: true }]);
  const [good] = h.addRxBuffers(1, 2048);
  sendPacket(h.peer, packet(frame(60, 1)));
  h.pump();
  const used = h.rxDriver.used();
  t.deepEqual(used.map((u) => [u.id, u.len]), [[r, 0], [s, 0], [good, HDR + 60]]);
  t.is(h.device.stats!.rx.malformed, 2);
}));

test('rx: at most 64 packets per wakeup; the level-triggered fd brings the device back for the rest', withHarness({}, (t, h) => {
  h.addRxBuffers(200, 2048);
  for (let i = 0; i < 100; i++) sendPacket(h.peer, packet(frame(60, i)));
  h.watched.get(h.deviceFd)!(1);
  t.is(h.rxUsed().length, N.NET_RX_BUDGET);
  t.true(h.tapWatched);
  h.pump();
  t.is(h.rxUsed().length, 100 - N.NET_RX_BUDGET);
}));

test('rx: the backend hanging up stops the watch (no spinning on a dead fd)', withHarness({}, (t, h) => {
  h.addRxBuffers(40, 2048);
  t.true(h.tapWatched);
  closeFd(h.peer);
  h.pump(10);
  t.false(h.tapWatched, 'end of file: unwatched');
  t.is(h.resets, 0, 'the device itself is fine');
}));

test('rx: an EPOLLERR-only wakeup stops the watch', withHarness({}, (t, h) => {
  h.addRxBuffers(40, 2048);
  h.watched.get(h.deviceFd)!(EPOLLERR);
  t.false(h.tapWatched);
}));

test('rx: a broken rx ring asks for a reset and stops watching', withHarness({}, (t, h) => {
  h.addRxBuffers(40, 2048);
  h.rxDriver.setAvailIdx(h.rxDriver.availIdx + 1000);
  sendPacket(h.peer, packet(frame(60)));
  h.pump();
  h.device.queueNotify(N.NET_RX_QUEUE);
  t.is(h.resets, 1);
  t.false(h.tapWatched);
}));

test('rx and tx together, without EVENT_IDX, indirect rx chains', withHarness({ eventIdx: false }, (t, h) => {
  h.addRx(Array.from({ length: 60 }, () => [1600]), { indirect: true });
  for (let i = 0; i < 10; i++) {
    sendPacket(h.peer, packet(frame(1000 + i, i)));
    h.transmit([packet(frame(500 + i, i))]);
  }
  h.pump();
  t.is(h.rxUsed().length, 10);
  t.is(drainPeer(h).length, 10);
  t.is(h.rxDriver.usedFlags & C.VIRTQ_USED_F_NO_NOTIFY, C.VIRTQ_USED_F_NO_NOTIFY, 'holding enough buffers: rx kicks suppressed');
}));

test('rx: a ring full of malformed chains is returned without holding anything or watching the tap', withHarness({}, (t, h) => {
  for (let i = 0; i < 256; i++) h.rxDriver.addChain([{ addr: h.alloc(8), len: 8, write: true }]);
  h.rxDriver.kick();
  h.device.queueNotify(N.NET_RX_QUEUE);
  t.is(h.rxDriver.used().length, 256);
  t.is(h.device.stats!.rx.malformed, 256);
  t.false(h.tapWatched);
  h.addRxBuffers(40, 2048);
  t.true(h.tapWatched, 'good buffers after them work');
}));
