/**
 * A hostile guest against virtio-vsock: malformed and misaddressed packets,
 * credit lies, floods, broken rings. Nothing may throw, nothing may grow
 * without bound, and the device keeps serving well-behaved connections.
 */
import test, { type ExecutionContext } from 'ava';
import * as V from '../../../../../devices/virtio/vsock/constants.js';
import type { VsockSockets } from '../../../../../devices/virtio/vsock/backend.js';
import { encodeHeader, type VsockHeader } from '../../../../../devices/virtio/vsock/packet.js';
import { createEventfd } from '../../../../../lib/io/epoll.js';
import { GUEST_CID, KiB, MiB, VsockHarness, boundSockets, md5, rawHeader, pattern, type GuestConn, type HarnessOptions, type HostPeer, type RxPacket } from './vsock-harness.js';

function withHarness(opts: HarnessOptions, fn: (t: ExecutionContext, h: VsockHarness) => Promise<void>, expectReset = false) {
  return async (t: ExecutionContext) => {
    const h = new VsockHarness(opts);
    try {
      await fn(t, h);
      t.deepEqual(h.guest.violations, []);
      if (!expectReset) t.is(h.needsReset, 0);
    } finally {
      h.close();
    }
  };
}


/** Sends raw packets and returns the replies that arrived for no connection. */
async function replies(h: VsockHarness, send: () => void, ms = 50): Promise<RxPacket[]> {
  const before = h.guest.unmatched.length;
  send();
  await h.run(ms);
  return h.guest.unmatched.slice(before);
}


test('misaddressed and truncated packets are dropped without a reply', withHarness({}, async (t, h) => {
  const got = await replies(h, () => {
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW }).subarray(0, 43), new Uint8Array(0), { split: false }); // short header
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, srcCid: 7n }), new Uint8Array(0)); // not the guest's CID
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, srcCid: BigInt(GUEST_CID) | (1n << 32n) }), new Uint8Array(0)); // upper bits set
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, dstCid: 3n }), new Uint8Array(0)); // not to the host
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, dstCid: BigInt(GUEST_CID) }), new Uint8Array(0)); // loopback
  });
  t.deepEqual(got, []);
  t.is(h.device.stats!.guestErrors, 5);
  t.is(h.device.mux!.connectionCount, 0);
}));

test('unknown type, oversized or truncated payloads, unknown ops, packets for no connection: RST (never to an RST)', withHarness({}, async (t, h) => {
  const cases: [string, () => void, number | null][] = [
    ['type 2 (seqpacket)', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, type: 2, srcPort: 1 }), new Uint8Array(0)), 2],
    ['type 0', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, type: 0, srcPort: 2 }), new Uint8Array(0)), 0],
    ['len over 64 KiB', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, len: 64 * KiB + 1, srcPort: 3 }), new Uint8Array(64 * KiB + 1)), 1],
    ['len past the chain', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, len: 100, srcPort: 4 }), new Uint8Array(10)), 1],
    ['len 0xffffffff', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, len: 0xffff_ffff, srcPort: 5 }), new Uint8Array(10)), 1],
    ['RW for no connection', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, len: 3, srcPort: 6 }), new Uint8Array(3)), 1],
    ['op 0', () => h.guest.sendRaw(rawHeader({ op: 0, srcPort: 7 }), new Uint8Array(0)), 1],
    ['op 99', () => h.guest.sendRaw(rawHeader({ op: 99, srcPort: 8 }), new Uint8Array(0)), 1],
    ['SHUTDOWN for no connection', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_SHUTDOWN, flags: 3, srcPort: 9 }), new Uint8Array(0)), 1],
    ['CREDIT_REQUEST for no connection', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_CREDIT_REQUEST, srcPort: 10 }), new Uint8Array(0)), 1],
    ['RST for no connection', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RST, srcPort: 11 }), new Uint8Array(0)), null],
    ['RST of unknown type', () => h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RST, type: 9, srcPort: 12 }), new Uint8Array(0)), null],
  ];
  for (const [what, send, type] of cases) {
    const got = await replies(h, send);
    if (type === null) {
      t.deepEqual(got, [], what);
      continue;
    }
    t.is(got.length, 1, what);
    const r = got[0]!.hdr;
    t.is(r.op, V.VIRTIO_VSOCK_OP_RST, what);
    t.is(r.type, type, `${what}: the reply keeps the packet's type`);
    t.is(r.srcPort, 2000, what);
    t.is(r.dstCid, BigInt(GUEST_CID), what);
  }
  t.is(h.device.mux!.connectionCount, 0);
}));

test('a malformed packet on a live connection resets that connection; others carry on', withHarness({}, async (t, h) => {
  const a = await h.guestToHost(5200);
  const b = await h.guestToHost(5201);
  h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, srcPort: a.conn.localPort, dstPort: 5200, len: 500 }), new Uint8Array(20));
  await h.until(() => a.conn.reset && a.host.closed, 5000, 'a reset');
  b.conn.write(Buffer.from('b is fine'));
  await h.until(() => b.host.data.toString() === 'b is fine', 5000, 'b');
  t.is(h.device.mux!.connectionCount, 1);
  t.is(h.device.stats!.guestErrors, 1);
}));

test('protocol violations on a live connection reset it: duplicate REQUEST, RESPONSE, unknown op, data after SHUTDOWN(SEND)', withHarness({}, async (t, h) => {
  const ops: [string, (c: GuestConn) => void][] = [
    ['REQUEST again', (c) => c.send(V.VIRTIO_VSOCK_OP_REQUEST)],
    ['RESPONSE', (c) => c.send(V.VIRTIO_VSOCK_OP_RESPONSE)],
    ['op 42', (c) => c.send(42)],
    ['RW after SHUTDOWN(SEND)', (c) => { c.shutdown(V.VIRTIO_VSOCK_SHUTDOWN_F_SEND); c.send(V.VIRTIO_VSOCK_OP_RW, { len: 3 }, new Uint8Array(3)); }],
  ];
  for (const [i, [what, act]] of ops.entries()) {
    const { host, conn } = await h.guestToHost(5300 + i);
    act(conn);
    await h.until(() => conn.reset, 5000, what);
    await h.until(() => host.closed || host.ended, 5000, `${what}: host closed`);
    t.pass(what);
  }
  await h.until(() => h.device.mux!.connectionCount === 0, 5000, 'all gone');
}));

test('a guest that ignores our credit is reset; the data waiting for the socket never exceeds 256 KiB', withHarness({}, async (t, h) => {
  const { host, conn } = await h.guestToHost(5400);
  host.socket.pause();
  // Blast 64 KiB packets regardless of credit.
  const chunk = pattern(64 * KiB, 1);
  let maxPending = 0;
  for (let i = 0; i < 40 && !conn.reset; i++) {
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, srcPort: conn.localPort, dstPort: 5400, len: chunk.length }), chunk);
    h.step();
    maxPending = Math.max(maxPending, h.device.mux!.pendingBytes);
    await new Promise((r) => setImmediate(r));
  }
  await h.until(() => conn.reset, 5000, 'reset');
  t.true(maxPending <= V.VSOCK_CONN_BUF_ALLOC, `pending peaked at ${maxPending}`);
  t.is(h.device.stats!.creditViolations, 1);
  t.is(h.device.mux!.pendingBytes, 0);
}));

test('credit lies from the guest (huge buf_alloc, fwd_cnt ahead of what we sent) never overflow an rx buffer', withHarness({}, async (t, h) => {
  let conn: GuestConn | null = null;
  h.guest.listen(80, (c) => { conn = c; c.bufAlloc = 0xffff_ffff; });
  h.guest.bufAlloc = 0xffff_ffff;
  const peer = h.connect(80);
  await h.until(() => conn !== null && peer.text.includes('\n'), 5000, 'OK');
  conn!.send(V.VIRTIO_VSOCK_OP_CREDIT_UPDATE, { fwdCnt: 0x7fff_0000 });
  conn!.send(V.VIRTIO_VSOCK_OP_CREDIT_UPDATE, { fwdCnt: 0 });
  const data = pattern(MiB, 2);
  peer.socket.write(data);
  await h.until(() => conn!.receivedBytes === data.length, 10_000, 'data');
  t.is(md5(conn!.all), md5(data));
  // The checks in collect() verified that every packet fit its 4 KiB buffer.
}));

test('a flood of packets for no connection while the guest posts no rx buffers: replies are capped, nothing spins', withHarness({ rxBuffers: 0 }, async (t, h) => {
  h.guest.autoRefill = false;
  for (let i = 0; i < 1000; i++) {
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, srcPort: i, len: 1 }), new Uint8Array(1));
  }
  t.is(h.device.stats!.orphansDropped, 1000 - V.VSOCK_MAX_ORPHAN_REPLIES);
  h.guest.autoRefill = true;
  h.guest.postRx(256);
  await h.run(50);
  t.is(h.guest.unmatched.length, V.VSOCK_MAX_ORPHAN_REPLIES);
}));

test('rx buffers too small for a header, or read-only, go back unused; the device carries on', withHarness({ rxBuffers: 0 }, async (t, h) => {
  h.guest.autoRefill = false;
  // Three bad buffers first.
  h.rx.addChain([{ addr: 0x30_0000, len: 20, write: true }]);
  h.rx.addChain([{ addr: 0x30_0100, len: 4096 }]);
  h.rx.addChain([{ addr: 0x30_1100, len: 43, write: true }]);
  h.rx.kick();
  h.device.queueNotify(V.VSOCK_QUEUE_RX);
  const c = h.guest.connect(6000); // its RST reply needs a buffer
  t.is(h.device.stats!.badRxBuffers, 3);
  const bad = h.rx.used();
  t.deepEqual(bad.map((u) => u.len), [0, 0, 0]);
  h.guest.autoRefill = true;
  h.guest.postRx(8);
  await h.until(() => c.reset, 5000, 'RST');
}));

test('tx chains with no readable part, or with writable buffers, are handled without harm', withHarness({}, async (t, h) => {
  h.tx.addChain([{ addr: 0x30_0000, len: 64, write: true }]);
  h.tx.addChain([{ addr: 0x30_1000, len: 44 }, { addr: 0x30_2000, len: 64, write: true }]);
  h.memory.write(0x30_1000, rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, len: 0, srcPort: 77 }));
  h.tx.kick();
  h.device.queueNotify(V.VSOCK_QUEUE_TX);
  const used = h.tx.used();
  t.deepEqual(used.map((u) => u.len), [0, 0]);
  await h.run(20);
  t.is(h.guest.unmatched.filter((p) => p.hdr.srcPort === 2000 && p.hdr.dstPort === 77).length, 1, 'RST for the RW to no connection');
}));

test('a broken tx ring asks for DEVICE_NEEDS_RESET, stops, and closes every host socket', withHarness({}, async (t, h) => {
  const { host } = await h.guestToHost(5150);
  const client = h.client();
  client.socket.write('CONN');
  await h.until(() => h.device.mux!.handshakeCount === 1, 5000, 'handshake');
  h.tx.setAvailIdx(1000);
  h.device.queueNotify(V.VSOCK_QUEUE_TX);
  t.is(h.needsReset, 1);
  h.device.queueNotify(V.VSOCK_QUEUE_TX);
  t.is(h.needsReset, 1, 'once');
  await h.until(() => (host.closed || host.ended) && client.closed, 5000, 'host sockets closed');
  t.is(h.device.mux!.connectionCount, 0);
  t.deepEqual(h.watcher.watchedFds.length, 2, 'only the ticker and the wakeup are still watched (the listener is not)');
  // A client that connects now waits in the backlog until the driver resets the device.
  const late = h.connect(9);
  await h.run(100);
  t.false(late.closed);
  t.is(late.text, '');
}, true));

test('SHUTDOWN with unknown flag bits: only RCV and SEND count', withHarness({}, async (t, h) => {
  const { host, conn } = await h.guestToHost(5500);
  conn.send(V.VIRTIO_VSOCK_OP_SHUTDOWN, { flags: 0xffff_fffc });
  await h.run(50);
  t.false(conn.reset);
  conn.write(Buffer.from('still open'));
  await h.until(() => host.data.toString() === 'still open', 5000, 'data');
}));

test('the connection limit: REQUESTs beyond VSOCK_MAX_CONNECTIONS get RST', async (t) => {
  // Host "sockets" that are idle eventfds: the limit is the device's, not a listener's accept backlog.
  const h = new VsockHarness({ sockets: (real) => ({ ...boundSockets(real), connect: () => createEventfd() }) });
  try {
    const N = V.VSOCK_MAX_CONNECTIONS + 5;
    for (let sent = 0; sent < N; sent++) {
      h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, srcPort: 100_000 + sent, dstPort: 5600 }), new Uint8Array(0));
      if (sent % 100 === 0) h.step();
    }
    await h.run(50);
    t.is(h.device.mux!.connectionCount, V.VSOCK_MAX_CONNECTIONS);
    t.is(h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RST).length, 5);
    t.is(h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RESPONSE).length, V.VSOCK_MAX_CONNECTIONS);
    // A host client is refused too (closed at once) while the device is full.
    const peer = h.connect(1);
    await h.until(() => peer.closed, 5000, 'client closed');
    t.is(peer.text, '');
  } finally {
    h.close();
  }
});

