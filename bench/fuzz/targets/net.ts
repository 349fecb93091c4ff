/**
 * Fuzz target `net`: virtio-net's transmit and receive paths over a real
 * socketpair backend (the unit tests' NetHarness: real guest memory, the real
 * TapBackend), one live device per episode, with or without the offloads and
 * mergeable rx buffers Linux negotiates.
 *
 * TX inputs: chains of a hostile virtio_net_hdr (any flags, GSO type,
 * hdr_len, gso_size, csum_start/offset) and a frame of 0..70000 bytes, cut
 * into 1-5 segments, direct or indirect. RX inputs: the host side sends
 * packets (hostile headers, 0..66000 bytes) while the guest posts rx chains of
 * hostile shapes (buffers smaller than a header, many small segments) and the
 * test plays the epoll loop.
 *
 * Oracles: nothing throws; no DEVICE_NEEDS_RESET (every chain is valid);
 * every tx chain comes back with length 0; what reaches the host is exactly
 * the packets the guest sent, in order, some possibly dropped (packet.ts
 * rules); every rx used length fits its chain and holds at least a header;
 * with mergeable buffers num_buffers names how many chains the packet took;
 * what the guest receives is exactly the packets the host sent, in order
 * (some dropped), the header aside (the device sets num_buffers and
 * adjusts flags the guest did not negotiate).
 */
import * as N from '../../../devices/virtio/net/constants.js';
import { EPOLLIN } from '../../../lib/io/epoll.js';
import { LINUX_FEATURES, NetHarness, PLAIN_FEATURES } from '../../../test/unit/devices/virtio/net/net-harness.js';
import { recvPacket, sendPacket } from '../../../test/unit/devices/virtio/net/net-sockets.js';
import type { DriverBuffer } from '../../../test/helpers/virtq-driver.js';
import { waitReadable } from '../../../test/helpers/io-fds.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const HDR = N.VIRTIO_NET_HDR_SIZE;
const TX_BASE = 0x10000;
const RX_BASE = 8 * 1024 * 1024;
const RX_SLOT = 32 * 1024;
const RX_SLOTS = 256;

function hostileHeader(rng: Rng): Uint8Array {
  const h = new Uint8Array(HDR);
  const v = new DataView(h.buffer);
  if (rng.bool(0.4)) return h; // the plain header of a packet without offloads
  v.setUint8(N.VIRTIO_NET_HDR_FLAGS, rng.weighted([[4, rng.int(4)], [1, rng.int(256)]]));
  v.setUint8(N.VIRTIO_NET_HDR_GSO_TYPE, rng.weighted([[4, rng.pick([0, 1, 3, 4, 0x81, 0x83])], [1, rng.int(256)]]));
  v.setUint16(N.VIRTIO_NET_HDR_HDR_LEN, rng.weighted([[4, rng.int(128)], [1, rng.u32() & 0xffff]]), true);
  v.setUint16(N.VIRTIO_NET_HDR_GSO_SIZE, rng.weighted([[4, rng.int(9000)], [1, rng.u32() & 0xffff]]), true);
  v.setUint16(N.VIRTIO_NET_HDR_CSUM_START, rng.weighted([[4, rng.int(128)], [1, rng.u32() & 0xffff]]), true);
  v.setUint16(N.VIRTIO_NET_HDR_CSUM_OFFSET, rng.weighted([[4, rng.int(32)], [1, rng.u32() & 0xffff]]), true);
  v.setUint16(N.VIRTIO_NET_HDR_NUM_BUFFERS, rng.u32() & 0xffff, true);
  return h;
}

function packet(rng: Rng): Uint8Array {
  const frame = rng.bytes(rng.weighted([[6, rng.range(14, 1514)], [2, rng.int(14)], [1, rng.range(1514, 70_000)]]));
  const p = new Uint8Array(HDR + frame.length);
  p.set(hostileHeader(rng));
  p.set(frame, HDR);
  return p;
}

/** Same frame: the header is the device's to adjust for the guest (num_buffers; flags it did not negotiate, rx-handler.ts). */
function sameFrame(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = HDR; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export const netTarget: FuzzTarget = {
  name: 'net',
  description: 'virtio-net TX headers/frames and RX buffers over a real socketpair backend vs in-order delivery (drops allowed) and used-length rules',
  episode: 1000,
  create(rng: Rng) {
    const mrg = rng.bool(0.7);
    const h = new NetHarness({ features: mrg ? LINUX_FEATURES : PLAIN_FEATURES, eventIdx: rng.bool() });
    const txSent: Uint8Array[] = [];
    const rxSent: Uint8Array[] = [];
    const rxChains = new Map<number, DriverBuffer[]>();
    let rxSlot = 0;
    /** Chains of the packet being reassembled (mergeable buffers). */
    let partial: { want: number; parts: Uint8Array[] } | null = null;

    const deliver = (pkt: Uint8Array) => {
      const head = rxSent[0];
      const diff = head ? `; the next packet sent was ${head.length} bytes${head.length === pkt.length ? `, first differing byte ${head.findIndex((x, i) => x !== pkt[i])}` : ''}, header ${Buffer.from(head.subarray(0, HDR)).toString('hex')} vs ${Buffer.from(pkt.subarray(0, HDR)).toString('hex')}` : '';
      while (rxSent.length > 0 && !sameFrame(rxSent[0]!, pkt)) rxSent.shift(); // dropped ones
      check(rxSent.length > 0, () => `the guest received a ${pkt.length}-byte packet the host never sent (or out of order)${diff}`);
      rxSent.shift();
    };
    const reapRx = () => {
      for (const u of h.rxDriver.used()) {
        const bufs = rxChains.get(u.id);
        check(bufs !== undefined, `rx used id ${u.id} is not an outstanding chain`);
        rxChains.delete(u.id);
        const room = bufs.reduce((n, b) => n + b.len, 0);
        check(u.len <= room, `rx used length ${u.len} > chain room ${room}`);
        if (u.len === 0) {
          // Documented (rx-handler.ts): a chain without room for a header goes back unused.
          check(room < HDR, `rx chain of ${room} bytes came back unused`);
          continue;
        }
        if (!mrg || !partial) check(u.len >= HDR, `rx used length ${u.len}: less than a header`);
        const data = new Uint8Array(u.len);
        let at = 0;
        for (const b of bufs) { const n = Math.min(b.len, u.len - at); if (n <= 0) break; data.set(h.memory.read(b.addr, n), at); at += n; }
        if (!mrg) { deliver(data); continue; }
        if (!partial) {
          const nb = new DataView(data.buffer).getUint16(N.VIRTIO_NET_HDR_NUM_BUFFERS, true);
          check(nb >= 1, `num_buffers ${nb}`);
          partial = { want: nb, parts: [] };
        }
        partial.parts.push(data);
        if (partial.parts.length === partial.want) {
          const total = partial.parts.reduce((n, p) => n + p.length, 0);
          const pkt = new Uint8Array(total);
          let o = 0;
          for (const p of partial.parts) { pkt.set(p, o); o += p.length; }
          partial = null;
          deliver(pkt);
        }
      }
    };
    const drainHost = () => {
      for (let p = recvPacket(h.peer); p !== null; p = recvPacket(h.peer)) {
        while (txSent.length > 0 && !(txSent[0]!.length === p.length && txSent[0]!.every((x, i) => x === p[i]))) txSent.shift();
        check(txSent.length > 0, `the host received a ${p.length}-byte packet the guest never sent (or out of order)`);
        txSent.shift();
      }
    };
    return {
      step(r: Rng) {
        const k = r.int(10);
        if (k < 5) {
          const p = packet(r);
          const n = Math.min(p.length, r.weighted([[5, 1], [3, 2], [1, r.range(3, 5)]]));
          const cuts = [0, ...Array.from({ length: n - 1 }, () => r.int(p.length + 1)).sort((a, b) => a - b), p.length];
          let at = TX_BASE;
          const bufs: DriverBuffer[] = [];
          for (let i = 0; i + 1 < cuts.length; i++) {
            const seg = p.subarray(cuts[i]!, cuts[i + 1]!);
            h.memory.write(at, seg);
            bufs.push({ addr: at, len: seg.length });
            at += seg.length + 64;
          }
          if (h.txDriver.freeCount < bufs.length + 1) return;
          h.txDriver.addChain(bufs, r.bool(0.3) ? { indirect: true, indirectAddr: at } : {});
          h.txDriver.kick();
          txSent.push(p);
          h.device.queueNotify(N.NET_TX_QUEUE);
          const used = h.txDriver.used();
          check(used.length === 1 && used[0]!.len === 0, () => `tx: ${used.length} used elements (lengths ${used.map((u) => u.len)}) for one chain`);
          drainHost();
        } else if (k < 8) {
          if (rxSent.length < 64) {
            const p = packet(r);
            try {
              sendPacket(h.peer, p);
              rxSent.push(p);
            } catch {
              // the socket is full: the host backs off, as a tap would
            }
          }
        } else {
          const chains = r.int(6);
          for (let c = 0; c < chains && h.rxDriver.freeCount >= 4; c++) {
            const base = RX_BASE + (rxSlot++ % RX_SLOTS) * RX_SLOT;
            const segs = r.weighted([[6, 1], [2, r.range(2, 4)]]);
            let at = base;
            const bufs: DriverBuffer[] = [];
            for (let i = 0; i < segs; i++) {
              const len = r.weighted([[4, 1526], [2, r.range(1, 64)], [2, r.range(1, RX_SLOT / 4 - 64)]]);
              bufs.push({ addr: at, len, write: true });
              at += len;
            }
            rxChains.set(h.rxDriver.addChain(bufs, r.bool(0.3) ? { indirect: true, indirectAddr: base + RX_SLOT - 128 } : {}), bufs);
          }
          h.rxDriver.kick();
          h.device.queueNotify(N.NET_RX_QUEUE);
        }
        // The epoll loop: the backend fd's callback while it is watched and readable.
        for (let i = 0; i < 64; i++) {
          const cb = h.watched.get(h.deviceFd);
          if (!cb || !waitReadable(h.deviceFd, 0)) break;
          cb(EPOLLIN);
        }
        reapRx();
        check(h.resets === 0, 'DEVICE_NEEDS_RESET for valid chains');
      },
      close() { h.close(); },
    };
  },
};
