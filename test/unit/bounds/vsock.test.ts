/**
 * docs/bounds.md, virtio-vsock rows: a hostile guest opens more connections
 * than allowed, sends more than its credit, sends tiny packets to a socket
 * that does not read, floods packets for no connection, or gives no credit
 * while the host has data. Each test asserts the bound held and what the
 * guest (or the host client) got.
 */
import test, { type ExecutionContext } from 'ava';
import { EPOLLIN } from '../../../lib/io/epoll.js';
import { createEventfd } from '../../../lib/io/epoll.js';
import { EAGAIN } from '../../../lib/sys.js';
import type { VsockSockets } from '../../../devices/virtio/vsock/backend.js';
import * as V from '../../../devices/virtio/vsock/constants.js';
import { encodeHeader, type VsockHeader } from '../../../devices/virtio/vsock/packet.js';
import { GUEST_CID, KiB, MiB, VsockHarness, boundSockets, md5, rawHeader, pattern, type GuestConn, type HarnessOptions, type HostPeer } from '../devices/virtio/vsock/vsock-harness.js';

type T = ExecutionContext;

function withHarness(opts: HarnessOptions, fn: (t: T, h: VsockHarness) => Promise<void>) {
  return async (t: T) => {
    const h = new VsockHarness(opts);
    try {
      await fn(t, h);
      t.deepEqual(h.guest.violations, [], 'every packet the device sent was within the guest\'s credit and well formed');
      t.is(h.needsReset, 0);
    } finally {
      h.close();
    }
  };
}


/** Real sockets whose writes to host sockets answer EAGAIN while `full.on` (a host peer that stopped reading, its socket buffer full). */
function fullSockets(full: { on: boolean }): (real: VsockSockets) => VsockSockets {
  return (real) => ({
    ...boundSockets(real),
    writev: (fd, m, s) => (full.on ? -EAGAIN : real.writev(fd, m, s)),
    send: (fd, b) => (full.on ? -EAGAIN : real.send(fd, b)),
  });
}



test('vsock connections: at most VSOCK_MAX_CONNECTIONS (1023); a guest REQUEST past it gets RST, a host client is closed', async (t) => {
  // Host "sockets" that are idle eventfds: the limit is the device's, not a listener's backlog.
  const h = new VsockHarness({ sockets: (real) => ({ ...boundSockets(real), connect: () => createEventfd() }) });
  try {
    const extra = 5;
    for (let sent = 0; sent < V.VSOCK_MAX_CONNECTIONS + extra; sent++) {
      h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, srcPort: 100_000 + sent, dstPort: 5600 }), new Uint8Array(0));
      if (sent % 100 === 0) h.step();
    }
    await h.run(50);
    t.is(V.VSOCK_MAX_CONNECTIONS, 1023);
    t.is(h.device.mux!.connectionCount, V.VSOCK_MAX_CONNECTIONS, 'the table is at its bound, not past it');
    t.is(h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RST).length, extra, 'RST for each REQUEST past the bound');
    t.is(h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RESPONSE).length, V.VSOCK_MAX_CONNECTIONS);
    const peer = h.connect(1);
    await h.until(() => peer.closed, 5000, 'host client closed');
    t.is(peer.text, '', 'no OK line');
    t.is(h.device.mux!.connectionCount, V.VSOCK_MAX_CONNECTIONS);
  } finally {
    h.close();
  }
});

test('vsock receive buffers: the connections\' buf_alloc add up to at most VSOCK_DEVICE_BUF_BUDGET (32 MiB) plus VSOCK_MIN_CONN_BUF_ALLOC (16 KiB) for each past it; a freed budget goes to new connections', async (t) => {
  const h = new VsockHarness({ sockets: (real) => ({ ...boundSockets(real), connect: () => createEventfd() }) });
  try {
    const n = V.VSOCK_MAX_CONNECTIONS;
    for (let sent = 0; sent < n; sent++) {
      h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, srcPort: 200_000 + sent, dstPort: 5601 }), new Uint8Array(0));
      if (sent % 100 === 0) h.step();
    }
    await h.run(50);
    const responses = h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RESPONSE);
    t.is(responses.length, n);
    const allocs = responses.map((p) => p.hdr.bufAlloc);
    const full = V.VSOCK_DEVICE_BUF_BUDGET / V.VSOCK_CONN_BUF_ALLOC;
    t.is(full, 128);
    t.deepEqual(allocs.slice(0, full), Array<number>(full).fill(V.VSOCK_CONN_BUF_ALLOC), 'the first 128 get 256 KiB');
    t.deepEqual(allocs.slice(full), Array<number>(n - full).fill(V.VSOCK_MIN_CONN_BUF_ALLOC), 'the rest 16 KiB');
    const sum = allocs.reduce((a, b) => a + b, 0);
    t.is(h.device.mux!.advertisedBuffers, sum);
    t.true(sum <= V.VSOCK_DEVICE_BUF_BUDGET + (n - full) * V.VSOCK_MIN_CONN_BUF_ALLOC);
    t.true(sum < 48 * MiB, `${sum} bytes`);
    // The guest resets every small one and one full-size one: the budget they free goes to the next connection.
    const gone = [0, ...Array.from({ length: n - full }, (_, i) => full + i)];
    gone.forEach((i, k) => {
      h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RST, srcPort: 200_000 + i, dstPort: 5601 }), new Uint8Array(0));
      if (k % 100 === 0) h.step();
    });
    await h.run(50);
    t.is(h.device.mux!.connectionCount, full - 1);
    t.is(h.device.mux!.advertisedBuffers, (full - 1) * V.VSOCK_CONN_BUF_ALLOC);
    h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_REQUEST, srcPort: 300_000, dstPort: 5601 }), new Uint8Array(0));
    await h.run(20);
    const again = h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RESPONSE && p.hdr.dstPort === 300_000);
    t.is(again.length, 1);
    t.is(again[0]!.hdr.bufAlloc, V.VSOCK_CONN_BUF_ALLOC);
  } finally {
    h.close();
  }
});

const full = { on: false };

test.serial('vsock guest->host data: at most VSOCK_CONN_BUF_ALLOC (256 KiB) waits per connection; one byte more resets the connection (RST)', withHarness({ sockets: fullSockets(full) }, async (t, h) => {
  const { host, conn } = await h.guestToHost(5700);
  full.on = true;
  try {
    // Exactly the credit we advertised, to a socket that takes nothing: all of it waits in the VMM.
    const packet = pattern(V.VSOCK_MAX_PKT_PAYLOAD, 3);
    for (let i = 0; i < V.VSOCK_CONN_BUF_ALLOC / packet.length; i++) conn.send(V.VIRTIO_VSOCK_OP_RW, { len: packet.length }, packet);
    t.is(h.device.mux!.pendingBytes, V.VSOCK_CONN_BUF_ALLOC);
    t.false(conn.reset);
    t.is(h.device.stats!.creditViolations, 0);
    // One byte past it: the guest ignored our credit.
    conn.send(V.VIRTIO_VSOCK_OP_RW, { len: 1 }, new Uint8Array(1));
    t.is(h.device.stats!.creditViolations, 1);
    t.is(h.device.mux!.pendingBytes, 0, 'the waiting data is dropped with the connection');
    await h.until(() => conn.reset && (host.closed || host.ended), 5000, 'RST to the guest, host socket closed');
    t.true(conn.ops.includes(V.VIRTIO_VSOCK_OP_RST));
  } finally {
    full.on = false;
  }
}));

test.serial('vsock guest->host data in tiny packets: packed into chunks of >= VSOCK_PENDING_CHUNK_BYTES (4 KiB), at most 256 KiB / 4 KiB + 3 per connection; bytes intact', withHarness({ sockets: fullSockets(full) }, async (t, h) => {
  const { host, conn } = await h.guestToHost(5701);
  full.on = true;
  const sent: Uint8Array[] = [];
  let maxChunks = 0;
  let worst = 0;
  try {
    const c = h.device.mux!.connection(5701, conn.localPort)!;
    for (let i = 0; i < 8192; i++) {
      // Mostly one-byte packets, now and then one just over a chunk (the worst mix for packing).
      const p = i % 256 === 255 ? pattern(V.VSOCK_PENDING_CHUNK_BYTES + 1, i) : Uint8Array.of(i & 0xff);
      conn.send(V.VIRTIO_VSOCK_OP_RW, { len: p.length }, p);
      sent.push(p);
      maxChunks = Math.max(maxChunks, c.pendingChunks);
      worst = Math.max(worst, c.pendingChunks - (Math.ceil(c.pendingBytes / V.VSOCK_PENDING_CHUNK_BYTES) + 3));
    }
    const total = sent.reduce((n, p) => n + p.length, 0);
    t.is(c.pendingBytes, total);
    t.true(worst <= 0, `chunks exceeded ceil(bytes / 4 KiB) + 3 by ${worst}`);
    t.true(maxChunks <= V.VSOCK_CONN_BUF_ALLOC / V.VSOCK_PENDING_CHUNK_BYTES + 3, `${maxChunks} chunks for ${total} bytes in ${sent.length} packets`);
  } finally {
    full.on = false;
  }
  // The socket takes data again: everything arrives, in order.
  const want = Buffer.concat(sent);
  await h.until(() => host.data.length >= want.length, 10_000, 'data at the host');
  t.is(md5(host.data), md5(want));
  t.false(conn.reset);
}));

test('vsock host->guest data: nothing is buffered in the VMM; without guest credit the socket is not read (CREDIT_REQUEST to the guest)', withHarness({}, async (t, h) => {
  h.guest.bufAlloc = 4 * KiB;
  const { host, conn } = await h.guestToHost(5702);
  conn.autoRead = false; // the guest app never reads: no credit comes back
  host.socket.write(pattern(MiB, 4));
  await h.run(200);
  t.is(conn.receivedBytes, 4 * KiB, 'exactly the credit the guest gave');
  const c = h.device.mux!.connection(5702, conn.localPort)!;
  t.is(c.watched & EPOLLIN, 0, 'the host socket is not watched for input: its data waits in the kernel');
  t.is(c.pendingBytes, 0);
  t.true(conn.ops.includes(V.VIRTIO_VSOCK_OP_CREDIT_REQUEST));
  // The guest reads: credit comes back, data flows again.
  conn.read();
  await h.until(() => conn.receivedBytes === 8 * KiB, 5000, 'more data after credit');
}));

test('vsock replies to packets of no connection: at most VSOCK_MAX_ORPHAN_REPLIES (128) wait for rx buffers; the rest are dropped', withHarness({ rxBuffers: 0 }, async (t, h) => {
  h.guest.autoRefill = false;
  for (let i = 0; i < 1000; i++) h.guest.sendRaw(rawHeader({ op: V.VIRTIO_VSOCK_OP_RW, srcPort: i, len: 1 }), new Uint8Array(1));
  t.is(V.VSOCK_MAX_ORPHAN_REPLIES, 128);
  t.is(h.device.stats!.orphansDropped, 1000 - V.VSOCK_MAX_ORPHAN_REPLIES);
  h.guest.autoRefill = true;
  h.guest.postRx(256);
  await h.run(50);
  t.is(h.guest.unmatched.filter((p) => p.hdr.op === V.VIRTIO_VSOCK_OP_RST).length, V.VSOCK_MAX_ORPHAN_REPLIES, 'the guest got 128 RSTs, no more');
}));

test('vsock handshakes (host clients before their CONNECT line): at most VSOCK_MAX_HANDSHAKES (64); more are closed at once', withHarness({}, async (t, h) => {
  const extra = 6;
  const clients = Array.from({ length: V.VSOCK_MAX_HANDSHAKES + extra }, () => h.client());
  await h.until(() => clients.filter((c) => c.closed).length === extra, 5000, 'the extra clients closed');
  t.is(h.device.mux!.handshakeCount, V.VSOCK_MAX_HANDSHAKES);
  t.is(V.VSOCK_MAX_HANDSHAKES, 64);
}));
