/**
 * virtio-vsock flow control, back-pressure, half-close and abortive close,
 * with the guest simulator of vsock-harness.ts and real Unix sockets.
 */
import test, { type ExecutionContext } from 'ava';
import * as V from '../../../../../devices/virtio/vsock/constants.js';
import { KiB, MiB, VsockHarness, md5, pattern, type GuestConn, type HarnessOptions, type HostPeer } from './vsock-harness.js';

function withHarness(opts: HarnessOptions, fn: (t: ExecutionContext, h: VsockHarness) => Promise<void>) {
  return async (t: ExecutionContext) => {
    const h = new VsockHarness(opts);
    try {
      await fn(t, h);
      t.deepEqual(h.guest.violations, [], 'every packet the device sent followed the protocol');
      t.is(h.needsReset, 0);
    } finally {
      h.close();
    }
  };
}

async function hostToGuest(h: VsockHarness, port: number, opts: { allowHalfOpen?: boolean; setup?: (c: GuestConn) => void } = {}): Promise<{ peer: HostPeer; conn: GuestConn }> {
  let conn: GuestConn | null = null;
  h.guest.listen(port, (c) => { opts.setup?.(c); conn = c; });
  const peer = h.connect(port, opts);
  await h.until(() => conn !== null && peer.text.includes('\n'), 10_000, 'OK line');
  return { peer, conn: conn! };
}

async function guestToHost(h: VsockHarness, port: number, opts: { allowHalfOpen?: boolean } = {}): Promise<{ host: HostPeer; conn: GuestConn }> {
  let host: HostPeer | null = null;
  await h.listenHost(port, (p) => { host = p; }, opts);
  const conn = h.guest.connect(port);
  await h.until(() => conn.established && host !== null, 10_000, 'established');
  return { host: host!, conn };
}

// ---- credit ----

test('host -> guest never exceeds the guest\'s credit; CREDIT_REQUEST when out; resumes on CREDIT_UPDATE', withHarness({}, async (t, h) => {
  h.guest.bufAlloc = 8 * KiB;
  const { peer, conn } = await hostToGuest(h, 20, { setup: (c) => { c.autoRead = false; } });
  peer.socket.write(pattern(64 * KiB, 5));
  await h.until(() => conn.receivedBytes === 8 * KiB, 5000, 'first 8 KiB');
  await h.run(100);
  t.is(conn.receivedBytes, 8 * KiB, 'stopped at the credit');
  t.true(conn.ops.includes(V.VIRTIO_VSOCK_OP_CREDIT_REQUEST), 'asked for credit');
  // The app reads: Linux then sends CREDIT_UPDATE (its free space fell under 64 KiB).
  conn.autoRead = true;
  conn.read();
  await h.until(() => conn.receivedBytes === 64 * KiB, 5000, 'the rest');
  t.is(md5(conn.all), md5(pattern(64 * KiB, 5)));
}));

test('guest -> host: the device advertises 256 KiB and sends CREDIT_UPDATE as the socket drains', withHarness({}, async (t, h) => {
  const { host, conn } = await guestToHost(h, 5100);
  t.is(conn.peerBufAlloc, V.VSOCK_CONN_BUF_ALLOC);
  const data = pattern(2 * MiB, 6);
  conn.write(data);
  await h.until(() => host.data.length === data.length, 20_000, '2 MiB');
  t.is(md5(host.data), md5(data));
  // 2 MiB through a 256 KiB window: the guest only got there through our credit updates.
  t.true(conn.ops.filter((op) => op === V.VIRTIO_VSOCK_OP_CREDIT_UPDATE).length >= 4);
  // The last fwd_cnt the guest saw may lag, but never so far that it would stall.
  const seenFree = V.VSOCK_CONN_BUF_ALLOC - ((conn.txCnt - conn.peerFwdCnt) >>> 0);
  t.true(seenFree >= V.VSOCK_CONN_BUF_ALLOC / 2, `guest sees ${seenFree} bytes free`);
}));

test('a guest that answers CREDIT_REQUEST-less: CREDIT_REQUEST from the guest gets a CREDIT_UPDATE', withHarness({}, async (t, h) => {
  const { conn } = await guestToHost(h, 5101);
  const before = conn.ops.length;
  conn.send(V.VIRTIO_VSOCK_OP_CREDIT_REQUEST);
  await h.until(() => conn.ops.length > before, 5000, 'reply');
  t.is(conn.ops.at(-1), V.VIRTIO_VSOCK_OP_CREDIT_UPDATE);
}));

// ---- back-pressure ----

test('a host socket that does not read: guest data waits only within the 256 KiB credit, then flows when it reads', withHarness({}, async (t, h) => {
  const { host, conn } = await guestToHost(h, 5102);
  host.socket.pause();
  const data = pattern(3 * MiB, 7);
  conn.write(data);
  let maxPending = 0;
  const end = Date.now() + 400;
  while (Date.now() < end) {
    h.step();
    maxPending = Math.max(maxPending, h.device.mux!.pendingBytes);
    await new Promise((r) => setImmediate(r));
  }
  t.true(conn.pendingOut > MiB, 'the guest is held back by credit');
  t.true(maxPending > 0 && maxPending <= V.VSOCK_CONN_BUF_ALLOC, `pending ${maxPending}`);
  host.socket.resume();
  await h.until(() => host.data.length === data.length, 20_000, 'all data');
  t.is(md5(host.data), md5(data));
  t.is(h.device.mux!.pendingBytes, 0);
}));

test('no rx buffers: nothing is read from sockets and nothing spins; data flows once buffers come', withHarness({ rxBuffers: 0 }, async (t, h) => {
  h.guest.autoRefill = false;
  h.guest.listen(30, (c) => { void c; });
  const peer = h.connect(30);
  await h.run(100);
  t.is(peer.text, '', 'the REQUEST waits for an rx buffer');
  h.guest.autoRefill = true;
  h.guest.postRx(256);
  await h.until(() => peer.text.includes('\n'), 5000, 'OK');
  const conn = [...h.guest.conns.values()][0]!;
  // Starve again, with data waiting in the socket.
  h.guest.autoRefill = false;
  await h.run(50);
  h.guest.collect();
  const data = pattern(512 * KiB, 8);
  peer.socket.write(data);
  const got0 = conn.receivedBytes;
  // Use up whatever buffers the guest still had posted.
  await h.run(100);
  const dispatched0 = h.watcher.dispatched;
  await h.run(300);
  t.true(h.watcher.dispatched - dispatched0 < 20, `no busy loop while starved (${h.watcher.dispatched - dispatched0} callbacks)`);
  t.true(conn.receivedBytes < data.length, `not all delivered while starved (${conn.receivedBytes - got0})`);
  h.guest.autoRefill = true;
  h.guest.postRx(256);
  await h.until(() => conn.receivedBytes === data.length, 10_000, 'all data');
  t.is(md5(conn.all), md5(data));
}));

test('single-descriptor rx buffers (header and data together) work too', withHarness({ rxBuffers: 0 }, async (t, h) => {
  h.guest.singleRx = true;
  h.guest.postRx(256, { single: true });
  const { peer, conn } = await hostToGuest(h, 31);
  const data = pattern(300 * KiB, 9);
  peer.socket.write(data);
  await h.until(() => conn.receivedBytes === data.length, 10_000, 'data');
  t.is(md5(conn.all), md5(data));
}));

// ---- half-close ----

test('guest SHUTDOWN(SEND): the host reads EOF but can still send; then host EOF ends the connection with RST', withHarness({}, async (t, h) => {
  const { peer, conn } = await hostToGuest(h, 40, { allowHalfOpen: true });
  conn.write(Buffer.from('last words'));
  conn.shutdown(V.VIRTIO_VSOCK_SHUTDOWN_F_SEND);
  await h.until(() => peer.ended, 5000, 'host EOF');
  t.is(peer.payload.toString(), 'last words');
  peer.socket.write('still talking');
  await h.until(() => conn.all.toString() === 'still talking', 5000, 'host -> guest after the guest shut its side');
  peer.socket.end();
  await h.until(() => conn.reset, 5000, 'RST after both sides are done');
  await h.until(() => peer.closed, 5000, 'host socket closed');
  t.is(h.device.mux!.connectionCount, 0);
}));

test('host half-close: the guest gets SHUTDOWN(SEND) only, and can still send', withHarness({}, async (t, h) => {
  const { host, conn } = await guestToHost(h, 5103, { allowHalfOpen: true });
  host.socket.write('bye from the host');
  host.socket.end();
  await h.until(() => conn.peerShut !== 0, 5000, 'SHUTDOWN');
  t.is(conn.peerShut, V.VIRTIO_VSOCK_SHUTDOWN_F_SEND);
  t.is(conn.all.toString(), 'bye from the host');
  conn.write(Buffer.from('guest still writes'));
  await h.until(() => host.data.toString() === 'guest still writes', 5000, 'guest -> host after host EOF');
  conn.shutdown(V.VIRTIO_VSOCK_SHUTDOWN_F_SEND);
  await h.until(() => conn.reset && host.ended, 5000, 'RST, and EOF at the host');
  t.is(h.device.mux!.connectionCount, 0);
}));

test('clean close from the guest: SHUTDOWN(RCV|SEND) drains pending data, then RST; the host sees all data and EOF', withHarness({}, async (t, h) => {
  const { host, conn } = await guestToHost(h, 5104);
  const data = pattern(200 * KiB, 10);
  conn.write(data);
  conn.shutdown(V.VIRTIO_VSOCK_SHUTDOWN_MASK);
  await h.until(() => conn.reset, 5000, 'RST');
  await h.until(() => host.ended || host.closed, 5000, 'host EOF');
  t.is(md5(host.data), md5(data));
  t.is(h.device.mux!.connectionCount, 0);
}));

// ---- abortive close mid-transfer ----

test('the guest resets mid-transfer: the host client is closed, nothing leaks', withHarness({}, async (t, h) => {
  const { peer, conn } = await hostToGuest(h, 50);
  const big = pattern(4 * MiB, 11);
  peer.socket.write(big);
  await h.until(() => conn.receivedBytes > 256 * KiB, 5000, 'some data');
  conn.rst();
  await h.until(() => peer.closed, 5000, 'client closed');
  t.is(h.device.mux!.connectionCount, 0);
  t.deepEqual(h.watcher.watchedFds.length, 3, 'only the listener, the ticker and the wakeup are watched');
}));

test('the guest shuts both ways mid-transfer from the host: the device stops reading, RSTs, closes the client', withHarness({}, async (t, h) => {
  const { peer, conn } = await hostToGuest(h, 51);
  peer.socket.write(pattern(4 * MiB, 12));
  await h.until(() => conn.receivedBytes > 128 * KiB, 5000, 'some data');
  conn.shutdown(V.VIRTIO_VSOCK_SHUTDOWN_MASK);
  await h.until(() => conn.reset, 5000, 'RST');
  await h.until(() => peer.closed, 5000, 'client closed');
  t.is(h.device.mux!.connectionCount, 0);
}));

test('the host closes mid-transfer from the guest: the guest gets RST', withHarness({}, async (t, h) => {
  const { host, conn } = await guestToHost(h, 5105);
  conn.write(pattern(4 * MiB, 13));
  await h.until(() => host.data.length > 256 * KiB, 5000, 'some data');
  host.socket.destroy();
  await h.until(() => conn.reset, 5000, 'RST');
  t.is(h.device.mux!.connectionCount, 0);
}));

test('the host half-closes: the guest gets SHUTDOWN(SEND) after the data; its own SHUTDOWN(SEND) then ends it', withHarness({}, async (t, h) => {
  const { peer, conn } = await hostToGuest(h, 54);
  peer.socket.end('half');
  await h.until(() => conn.peerShut !== 0, 5000, 'SHUTDOWN');
  t.is(conn.peerShut, V.VIRTIO_VSOCK_SHUTDOWN_F_SEND);
  t.is(conn.all.toString(), 'half');
  conn.shutdown(V.VIRTIO_VSOCK_SHUTDOWN_F_SEND);
  await h.until(() => conn.reset && peer.closed, 5000, 'RST and the client closed');
  t.is(h.device.mux!.connectionCount, 0);
}));

test('the host writes then closes: the guest gets every byte, then SHUTDOWN(RCV|SEND), answers RST', withHarness({}, async (t, h) => {
  const { peer, conn } = await hostToGuest(h, 52);
  const data = pattern(700 * KiB, 14);
  // A full close (not just end(), which Node follows with a wait for our EOF).
  peer.socket.end(data, () => peer.socket.destroy());
  await h.until(() => conn.reset, 10_000, 'closed');
  t.is(md5(conn.all), md5(data));
  t.is(conn.peerShut, V.VIRTIO_VSOCK_SHUTDOWN_MASK);
  await h.until(() => h.device.mux!.connectionCount === 0, 5000, 'gone');
}));

test('we told the guest SHUTDOWN(RCV|SEND) and it never answers: RST after the close timeout', withHarness({ timeouts: { closeMs: 100, tickMs: 20 } }, async (t, h) => {
  const { peer, conn } = await hostToGuest(h, 53, { setup: (c) => { c.autoRead = false; } });
  peer.socket.end('x', () => peer.socket.destroy());
  // The guest keeps the byte unread, so (like Linux) it does not answer with RST.
  await h.until(() => conn.peerShut === V.VIRTIO_VSOCK_SHUTDOWN_MASK, 5000, 'SHUTDOWN');
  t.false(conn.reset);
  await h.until(() => conn.reset, 5000, 'forced RST');
  t.is(h.device.mux!.connectionCount, 0);
}));

// ---- lifecycle ----

test('transport reset: connections closed, TRANSPORT_RESET on the event queue, new connections work after', withHarness({}, async (t, h) => {
  h.guest.postEvents(4);
  const a = await hostToGuest(h, 60);
  const b = await guestToHost(h, 5106);
  h.device.transportReset();
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [V.VIRTIO_VSOCK_EVENT_TRANSPORT_RESET]);
  await h.until(() => a.peer.closed && (b.host.closed || b.host.ended), 5000, 'host sockets closed');
  t.is(h.device.mux!.connectionCount, 0);
  // The driver drops its connections too; listeners stay.
  h.guest.conns.clear();
  const again = await hostToGuest(h, 60, { setup: (c) => { c.echo = true; } });
  again.peer.socket.write('after reset');
  await h.until(() => again.peer.payload.toString() === 'after reset', 5000, 'echo');
}));

test('transport reset with no event buffer: the event goes out when the driver adds one', withHarness({}, async (t, h) => {
  h.device.transportReset();
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, []);
  h.guest.postEvents(1);
  h.guest.collectEvents();
  t.deepEqual(h.guest.events, [V.VIRTIO_VSOCK_EVENT_TRANSPORT_RESET]);
}));

test('device reset closes every connection and host client; after re-activation everything works again', withHarness({}, async (t, h) => {
  const a = await hostToGuest(h, 70);
  const b = await guestToHost(h, 5107);
  const pendingClient = h.client();
  pendingClient.socket.write('CONN');
  await h.until(() => h.device.mux!.handshakeCount === 1, 5000, 'handshake');
  h.device.reset();
  t.is(h.device.mux, null);
  t.deepEqual(h.watcher.watchedFds, [], 'nothing watched after reset');
  await h.until(() => a.peer.closed && pendingClient.closed && (b.host.closed || b.host.ended), 5000, 'all host sockets closed');
  h.newGuest();
  const c = await hostToGuest(h, 71, { setup: (x) => { x.echo = true; } });
  c.peer.socket.write('again');
  await h.until(() => c.peer.payload.toString() === 'again', 5000, 'echo after re-activation');
}));
