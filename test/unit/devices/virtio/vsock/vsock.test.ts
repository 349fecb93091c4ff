/**
 * virtio-vsock end to end without KVM: the guest is GuestStack over
 * VirtqDrivers (vsock-harness.ts), the host side real Unix sockets in a temp
 * dir, and the device runs on a real epoll set polled from the test thread.
 */
import test, { type ExecutionContext } from 'ava';
import * as C from '../../../../../devices/virtio/constants.js';
import * as V from '../../../../../devices/virtio/vsock/constants.js';
import { VsockDevice } from '../../../../../devices/virtio/vsock/device.js';
import { GUEST_CID, KiB, MiB, VsockHarness, md5, pattern, type GuestConn, type HarnessOptions, type HostPeer } from './vsock-harness.js';

const FIRST_PORT = V.VSOCK_FIRST_EPHEMERAL_PORT;

function withHarness(opts: HarnessOptions, fn: (t: ExecutionContext, h: VsockHarness) => Promise<void>) {
  return async (t: ExecutionContext) => {
    const h = new VsockHarness(opts);
    try {
      await fn(t, h);
      t.deepEqual(h.guest.violations, [], 'every packet the device sent followed the protocol');
      t.is(h.needsReset, 0, 'the device never asked for a reset');
    } finally {
      h.close();
    }
  };
}

/** Host client -> CONNECT -> guest listener; resolves with both ends once the client read OK. */
async function hostToGuest(h: VsockHarness, port: number, setup: (c: GuestConn) => void = () => {}): Promise<{ peer: HostPeer; conn: GuestConn }> {
  let conn: GuestConn | null = null;
  h.guest.listen(port, (c) => { setup(c); conn = c; });
  const peer = h.connect(port);
  await h.until(() => conn !== null && peer.text.includes('\n'), 10_000, 'OK line');
  return { peer, conn: conn! };
}

// ---- info ----

test('info: device 19, three 256-entry queues, guest_cid in the config, stream only', (t) => {
  const info = VsockDevice.info({ guestCid: 0x1234_5678 });
  t.is(info.deviceType, C.VIRTIO_ID_VSOCK);
  t.deepEqual(info.queueMaxSizes, [256, 256, 256]);
  t.is(info.config.length, 8);
  t.is(new DataView(info.config.buffer).getBigUint64(0, true), 0x1234_5678n);
  t.is(info.features, C.feature(V.VIRTIO_VSOCK_F_STREAM) | C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC));
  t.is(info.features & C.feature(V.VIRTIO_VSOCK_F_SEQPACKET), 0n);
});

test('info: reserved and out-of-range CIDs are refused', (t) => {
  for (const guestCid of [0, 1, 2, 0xffff_ffff, 2 ** 32, -3, 3.5, Number.NaN]) {
    t.throws(() => VsockDevice.info({ guestCid }), { instanceOf: RangeError }, String(guestCid));
  }
  t.notThrows(() => VsockDevice.info({ guestCid: 3 }));
  t.notThrows(() => VsockDevice.info({ guestCid: 0xffff_fffe }));
});

// ---- host-initiated ----

test('host-initiated: CONNECT, REQUEST to the guest, OK <port>, echo round trip', withHarness({}, async (t, h) => {
  h.guest.record = true;
  const { peer, conn } = await hostToGuest(h, 1234, (c) => { c.echo = true; });
  t.is(peer.text, `OK ${FIRST_PORT}\n`);
  const req = h.guest.log.find((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_REQUEST)!;
  t.is(req.hdr.srcCid, 2n);
  t.is(req.hdr.dstCid, BigInt(GUEST_CID));
  t.is(req.hdr.srcPort, FIRST_PORT);
  t.is(req.hdr.dstPort, 1234);
  t.is(req.hdr.bufAlloc, V.VSOCK_CONN_BUF_ALLOC);
  t.is(conn.peerPort, FIRST_PORT);
  peer.socket.write('hello, guest');
  await h.until(() => peer.payload.toString() === 'hello, guest', 5000, 'echo');
  t.is(h.device.mux!.connectionCount, 1);
}));

test('host-initiated: data the client sends right after the CONNECT line is not lost', withHarness({}, async (t, h) => {
  let conn: GuestConn | null = null;
  h.guest.listen(77, (c) => { c.autoRead = false; conn = c; });
  const peer = h.client();
  peer.socket.write('CONNECT 77\nearly bytes');
  await h.until(() => conn !== null && conn.receivedBytes === 11, 5000, 'early bytes');
  t.is(conn!.all.toString(), 'early bytes');
  t.is(peer.text, `OK ${FIRST_PORT}\n`);
}));

test('host-initiated: two connections get distinct host ports', withHarness({}, async (t, h) => {
  const a = await hostToGuest(h, 10);
  const b = await hostToGuest(h, 10);
  t.is(a.peer.text, `OK ${FIRST_PORT}\n`);
  t.is(b.peer.text, `OK ${FIRST_PORT + 1}\n`);
}));

test('host-initiated: bad CONNECT lines close the client; nothing reaches the guest', withHarness({}, async (t, h) => {
  h.guest.record = true;
  const bad = ['HELLO\n', 'CONNECT\n', 'CONNECT abc\n', 'CONNECT 99999999999\n', 'CONNECT 4294967296\n', 'connect 5\n', 'CONNECT -1\n', 'CONNECT 5 6\n', 'x'.repeat(40)];
  const peers = bad.map((line) => { const p = h.client(); p.socket.write(line); return p; });
  await h.until(() => peers.every((p) => p.closed), 5000, 'clients closed');
  for (const [i, p] of peers.entries()) t.is(p.text, '', `no OK for ${JSON.stringify(bad[i])}`);
  t.is(h.guest.log.length, 0, 'the guest saw nothing');
  t.is(h.device.mux!.handshakeCount, 0);
}));

test('host-initiated: a port nobody listens on: the guest answers RST, the client is closed', withHarness({}, async (t, h) => {
  const peer = h.connect(4321);
  await h.until(() => peer.closed, 5000, 'client closed');
  t.is(peer.text, '');
  t.is(h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_REQUEST).length, 1);
  t.is(h.device.mux!.connectionCount, 0);
}));

test('host-initiated: a guest that never answers: the client is closed after the timeout, the guest gets RST', withHarness({ timeouts: { connectResponseMs: 150, tickMs: 20 } }, async (t, h) => {
  h.guest.record = true;
  // The guest swallows the REQUEST without answering.
  h.guest.silent.add(99);
  const peer = h.connect(99);
  await h.until(() => peer.closed, 5000, 'client closed');
  t.is(peer.text, '');
  t.true(h.guest.log.some((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_REQUEST && p.hdr.dstPort === 99));
  await h.until(() => h.guest.log.some((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RST && p.hdr.dstPort === 99), 5000, 'RST to the guest');
  t.is(h.device.mux!.connectionCount, 0);
}));

test('host-initiated: a client that never finishes its line is closed after the timeout', withHarness({ timeouts: { connectLineMs: 100, tickMs: 20 } }, async (t, h) => {
  const peer = h.client();
  peer.socket.write('CONNE');
  await h.until(() => peer.closed, 5000, 'client closed');
  t.is(h.device.mux!.handshakeCount, 0);
}));

// ---- guest-initiated ----

test('guest-initiated: REQUEST to port P connects to <udsPath>_P; RESPONSE; echo round trip', withHarness({}, async (t, h) => {
  let host: HostPeer | null = null;
  await h.listenHost(5000, (p) => { host = p; p.socket.on('data', (d) => p.socket.write(d)); });
  const c = h.guest.connect(5000);
  await h.until(() => c.established && host !== null, 5000, 'established');
  c.write(Buffer.from('ping from the guest'));
  await h.until(() => c.receivedBytes === 19, 5000, 'echo');
  t.is(h.device.stats!.connected, 1);
}));

test('guest-initiated: a port nobody listens on gets RST', withHarness({}, async (t, h) => {
  const c = h.guest.connect(6000);
  await h.until(() => c.reset, 5000, 'RST');
  t.true(c.refused);
  t.false(c.established);
  t.is(h.device.mux!.connectionCount, 0);
}));

// ---- bulk and many ----

test('1 MiB each way on one connection (host-initiated), intact', withHarness({}, async (t, h) => {
  const { peer, conn } = await hostToGuest(h, 7);
  const toGuest = pattern(MiB, 1);
  const toHost = pattern(MiB, 2);
  peer.socket.write(toGuest);
  conn.write(toHost);
  await h.until(() => conn.receivedBytes === MiB && peer.payload.length === MiB, 20_000, 'transfers');
  t.is(md5(conn.all), md5(toGuest));
  t.is(md5(peer.payload), md5(toHost));
}));

test('1 MiB each way on one connection (guest-initiated), intact', withHarness({}, async (t, h) => {
  const toGuest = pattern(MiB, 3);
  const toHost = pattern(MiB, 4);
  let host: HostPeer | null = null;
  await h.listenHost(5001, (p) => { host = p; p.socket.write(toGuest); });
  const c = h.guest.connect(5001);
  await h.until(() => c.established, 5000, 'established');
  c.write(toHost);
  await h.until(() => c.receivedBytes === MiB && host !== null && host.data.length === MiB, 20_000, 'transfers');
  t.is(md5(c.all), md5(toGuest));
  t.is(md5(host!.data), md5(toHost));
}));

test('64 concurrent connections, both directions, each echoing its own data', withHarness({}, async (t, h) => {
  const N = 32;
  const SIZE = 48 * KiB;
  // 32 host-initiated: the guest echoes.
  h.guest.listen(900, (c) => { c.echo = true; });
  const peers = Array.from({ length: N }, () => h.connect(900));
  // 32 guest-initiated: the host echoes.
  const hosts: HostPeer[] = [];
  await h.listenHost(901, (p) => { hosts.push(p); p.socket.on('data', (d) => p.socket.write(d)); });
  const conns = Array.from({ length: N }, () => h.guest.connect(901));
  await h.until(() => peers.every((p) => p.text.includes('\n')) && conns.every((c) => c.established), 10_000, 'all connected');
  t.is(h.device.mux!.connectionCount, 2 * N);
  const datas = peers.map((_, i) => pattern(SIZE, 100 + i));
  peers.forEach((p, i) => p.socket.write(datas[i]!));
  conns.forEach((c, i) => c.write(pattern(SIZE, 200 + i)));
  await h.until(() => peers.every((p) => p.payload.length === SIZE) && conns.every((c) => c.receivedBytes === SIZE), 30_000, 'all echoed');
  peers.forEach((p, i) => t.is(md5(p.payload), md5(datas[i]!), `host-initiated ${i}`));
  t.true(conns.every((c, i) => md5(c.all) === md5(pattern(SIZE, 200 + i))), 'guest-initiated data intact');
}));
