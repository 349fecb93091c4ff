/**
 * Fuzz target `vsock`: virtio-vsock's packet parser, connection state machine
 * and credit accounting (devices/virtio/vsock) over real Unix sockets (the
 * unit tests' VsockHarness and its Linux-like guest stack), one live device per
 * episode, driven synchronously (the test plays the epoll loop).
 *
 * Inputs, mixed: the guest connects to host ports with a listener (whose
 * connections the host accepts, reads, writes, shuts and closes at random),
 * without one, or anywhere; writes within credit, shuts down, resets; sends
 * hostile raw packets (any op, type, CIDs, ports of live connections or
 * random ones, len that lies, credit fields that lie, payloads up to 70 KB);
 * host clients connect to the device's socket and send CONNECT lines (good,
 * malformed, to ports the guest listens on or not) or close half way; the
 * guest withholds or posts rx buffers.
 *
 * Oracles: nothing throws; no DEVICE_NEEDS_RESET (every chain is valid); every
 * packet the device sends the guest passes the guest stack's checks (CIDs,
 * type, used length = 44 + len, no payload on control packets, payload <=
 * 64 KiB, never beyond the credit a well-behaved connection advertised); the
 * connection table, the handshake table and the data held for sockets stay
 * within their documented bounds (VSOCK_MAX_CONNECTIONS, VSOCK_MAX_HANDSHAKES,
 * VSOCK_CONN_BUF_ALLOC per connection).
 */
import { LibcVsockSockets, openUnixListener } from '../../../devices/virtio/backends/unix-socket.js';
import * as V from '../../../devices/virtio/vsock/constants.js';
import { encodeHeader } from '../../../devices/virtio/vsock/packet.js';
import { GUEST_CID, VsockHarness, type GuestConn } from '../../../test/unit/devices/virtio/vsock/vsock-harness.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const LISTEN_PORTS = [5000, 5001];
const NO_LISTENER = 6000;
const GUEST_LISTEN = 7000;
const MAX_HOST_FDS = 48;
const OPS = [V.VIRTIO_VSOCK_OP_INVALID, V.VIRTIO_VSOCK_OP_REQUEST, V.VIRTIO_VSOCK_OP_RESPONSE, V.VIRTIO_VSOCK_OP_RST, V.VIRTIO_VSOCK_OP_SHUTDOWN,
  V.VIRTIO_VSOCK_OP_RW, V.VIRTIO_VSOCK_OP_CREDIT_UPDATE, V.VIRTIO_VSOCK_OP_CREDIT_REQUEST];

export const vsockTarget: FuzzTarget = {
  name: 'vsock',
  description: 'virtio-vsock packets, connection state machine and credit accounting over real Unix sockets vs guest-side checks and table bounds',
  episode: 1000,
  create() {
    const h = new VsockHarness({});
    const sockets = new LibcVsockSockets();
    const listeners = LISTEN_PORTS.map((p) => openUnixListener(`${h.udsPath}_${p}`, { field: 'fuzz', suffixBytes: 11 }));
    const hostFds: number[] = [];
    /** Guest ports whose connection got hostile raw packets: the guest lied about its credit there. */
    const tainted = new Set<number>();
    const buf = new Uint8Array(70_000);
    h.guest.listen(GUEST_LISTEN);
    const closeHost = (i: number) => { sockets.close(hostFds[i]!); hostFds.splice(i, 1); };
    const conns = (): GuestConn[] => [...h.guest.conns.values()];
    return {
      step(r: Rng) {
        const k = r.int(20);
        if (k < 3) {
          if (h.guest.txRoom() > 0) h.guest.connect(r.weighted([[6, r.pick(LISTEN_PORTS)], [2, NO_LISTENER], [1, r.u32()]]));
        } else if (k < 7) {
          const live = conns().filter((c) => c.established && !c.reset);
          if (live.length > 0) {
            const c = r.pick(live);
            const op = r.int(10);
            if (op < 7) c.write(r.bytes(r.weighted([[6, r.int(4096)], [1, r.int(200_000)]])));
            else if (op < 9) c.shutdown(r.range(1, 3));
            else c.rst();
          }
        } else if (k < 10) {
          if (h.guest.txRoom() > 0) {
            const live = conns();
            const c = live.length > 0 && r.bool(0.6) ? r.pick(live) : null;
            if (c) tainted.add(c.localPort);
            const payload = r.bytes(r.weighted([[6, r.int(256)], [1, r.int(70_000)]]));
            const hdr = new Uint8Array(V.VSOCK_HDR_SIZE);
            encodeHeader({
              srcCid: r.bool(0.9) ? BigInt(GUEST_CID) : r.edgeU64(), dstCid: r.bool(0.9) ? 2n : r.edgeU64(),
              srcPort: c ? c.localPort : r.weighted([[3, r.int(16) + 40_000], [1, r.u32()]]),
              dstPort: c ? c.peerPort : r.weighted([[3, r.pick([...LISTEN_PORTS, NO_LISTENER])], [1, r.u32()]]),
              len: r.bool(0.8) ? payload.length : r.edgeU32(), type: r.bool(0.9) ? V.VIRTIO_VSOCK_TYPE_STREAM : r.int(4), op: r.weighted([[8, r.pick(OPS)], [1, r.int(65536)]]),
              flags: r.weighted([[4, r.int(4)], [1, r.u32()]]), bufAlloc: r.weighted([[4, 256 * 1024], [1, r.edgeU32()]]), fwdCnt: r.edgeU32(),
            }, hdr);
            if (r.bool(0.1)) hdr.set(r.mutate(hdr));
            if (!c) tainted.add(new DataView(hdr.buffer).getUint32(V.VSOCK_HDR_SRC_PORT, true));
            h.guest.sendRaw(hdr, payload, { split: r.bool(0.8) });
          }
        } else if (k < 14) {
          for (const l of listeners) {
            for (let fd = sockets.accept(l.fd); fd >= 0; fd = sockets.accept(l.fd)) hostFds.push(fd);
          }
          while (hostFds.length > MAX_HOST_FDS) closeHost(0);
          if (hostFds.length > 0) {
            const i = r.int(hostFds.length);
            const fd = hostFds[i]!;
            const op = r.int(10);
            if (op < 5) sockets.recv(fd, buf, r.weighted([[4, buf.length], [1, r.int(100)]]), false);
            else if (op < 8) sockets.send(fd, r.bytes(r.weighted([[6, r.int(4096)], [1, r.int(70_000)]])));
            else if (op < 9) sockets.shutdown(fd, r.pick(['read', 'write'] as const));
            else closeHost(i);
          }
        } else if (k < 16) {
          const fd = sockets.connect(h.udsPath);
          if (fd >= 0) {
            hostFds.push(fd);
            const line = r.weighted([[6, `CONNECT ${r.pick([GUEST_LISTEN, GUEST_LISTEN + 1, r.u32()])}\n`], [1, `CONNECT ${'9'.repeat(r.int(40))}\n`], [1, 'connect 7000\n'], [1, String.fromCharCode(...r.bytes(r.int(40)))], [1, 'CONNECT 7000']]);
            if (r.bool(0.9)) sockets.send(fd, new TextEncoder().encode(line));
            while (hostFds.length > MAX_HOST_FDS) closeHost(0);
          }
        } else if (k < 17) {
          h.guest.autoRefill = r.bool(0.8);
          if (h.guest.autoRefill) h.guest.postRx();
        }
        h.step();
        const bad = h.guest.violations.filter((v) => !/^conn (\d+):/.test(v) || !tainted.has(Number(/^conn (\d+):/.exec(v)![1])));
        check(bad.length === 0, () => `packets from the device broke the rules: ${bad.slice(0, 3).join('; ')}`);
        h.guest.violations.length = 0;
        check(h.needsReset === 0, 'DEVICE_NEEDS_RESET for valid chains');
        const mux = h.device.mux!;
        check(mux.connectionCount <= V.VSOCK_MAX_CONNECTIONS, `${mux.connectionCount} connections (bound ${V.VSOCK_MAX_CONNECTIONS})`);
        check(mux.handshakeCount <= V.VSOCK_MAX_HANDSHAKES, `${mux.handshakeCount} handshakes (bound ${V.VSOCK_MAX_HANDSHAKES})`);
        check(mux.pendingBytes <= mux.connectionCount * V.VSOCK_CONN_BUF_ALLOC, `${mux.pendingBytes} bytes held for ${mux.connectionCount} connections (bound ${V.VSOCK_CONN_BUF_ALLOC} each)`);
      },
      close() {
        for (const fd of hostFds) sockets.close(fd);
        for (const l of listeners) l.close();
        h.close();
      },
    };
  },
};
