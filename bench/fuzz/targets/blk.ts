/**
 * Fuzz target `blk`: virtio-blk requests (devices/virtio/block) over a real
 * temp image and real guest memory (the unit tests' BlkHarness), one live
 * device per episode. Each input is a batch of 1-4 chains: requests of every
 * type (and unknown ones) with hostile sectors, lengths that are not sector
 * multiples, headers split across or cut short of their descriptors, missing
 * or oversized status buffers, DISCARD/WRITE_ZEROES payloads with lying
 * counts, directions swapped, direct or indirect.
 *
 * Oracles: nothing throws out of queueNotify and no DEVICE_NEEDS_RESET (every
 * chain is a valid descriptor chain); every chain comes back exactly once, in
 * the same notification, with a used length no larger than its writable part;
 * the status byte is OK, IOERR or UNSUPP; an OK read returns exactly the bytes
 * of a model of the disk (updated by OK writes and WRITE_ZEROES; DISCARDed
 * bytes become unknown), an OK access lies inside the disk, a read-only disk
 * never takes a write; GET_ID writes at most 20 bytes.
 */
import { readFileSync } from 'node:fs';
import * as B from '../../../devices/virtio/block/constants.js';
import { BlkHarness } from '../../../test/unit/devices/virtio/block/blk-harness.js';
import type { DriverBuffer } from '../../../test/helpers/virtq-driver.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const DISK = 256 * 1024;
const DATA_BASE = 0x10000;
const POISON = 0xee;
const TYPES = [B.VIRTIO_BLK_T_IN, B.VIRTIO_BLK_T_OUT, B.VIRTIO_BLK_T_FLUSH, B.VIRTIO_BLK_T_GET_ID, B.VIRTIO_BLK_T_DISCARD, B.VIRTIO_BLK_T_WRITE_ZEROES];

interface Piece { bytes?: Uint8Array; len?: number; write: boolean }
interface Req { pieces: Piece[]; indirect: boolean }

function header(type: number, sector: bigint, reserved: number): Uint8Array {
  const h = new Uint8Array(B.VIRTIO_BLK_REQ_HEADER_SIZE);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, type, true);
  dv.setUint32(4, reserved, true);
  dv.setBigUint64(8, BigInt.asUintN(64, sector), true);
  return h;
}

/** Cuts `b` into 1-3 pieces. */
function cut(rng: Rng, b: Uint8Array, write: boolean): Piece[] {
  if (b.length < 2 || rng.bool(0.6)) return [{ bytes: b, write }];
  const at = 1 + rng.int(b.length - 1);
  return [{ bytes: b.subarray(0, at), write }, { bytes: b.subarray(at), write }];
}

function genRequest(rng: Rng): Req {
  const type = rng.weighted([[10, rng.pick(TYPES)], [1, rng.edgeU32()]]);
  const sectors = DISK / 512;
  const sector = rng.weighted([[8, BigInt(rng.int(sectors))], [2, BigInt(sectors - rng.int(4))], [1, rng.edgeU64()]]);
  const dataLen = rng.weighted([[8, 512 * rng.range(1, 16)], [2, rng.int(9000)], [1, 0]]);
  const well = rng.bool(0.7);
  const pieces: Piece[] = [];
  const hdr = header(type, sector, rng.bool(0.9) ? 0 : rng.u32());
  pieces.push(...cut(rng, well || rng.bool(0.5) ? hdr : hdr.subarray(0, rng.int(16)), false));
  const dataWrite = type === B.VIRTIO_BLK_T_IN || type === B.VIRTIO_BLK_T_GET_ID ? well || rng.bool(0.5) : !(well || rng.bool(0.5));
  if (type === B.VIRTIO_BLK_T_DISCARD || type === B.VIRTIO_BLK_T_WRITE_ZEROES) {
    const n = rng.weighted([[6, 1], [2, rng.range(2, 4)], [1, 0]]);
    const p = new Uint8Array(16 * n + (well ? 0 : rng.int(16)));
    const dv = new DataView(p.buffer);
    for (let i = 0; i < n; i++) {
      dv.setBigUint64(16 * i, rng.bool(0.8) ? BigInt(rng.int(sectors)) : rng.edgeU64(), true);
      dv.setUint32(16 * i + 8, rng.bool(0.8) ? rng.int(64) : rng.edgeU32(), true);
      dv.setUint32(16 * i + 12, rng.bool(0.8) ? rng.int(2) : rng.edgeU32(), true);
    }
    pieces.push(...cut(rng, p, false));
  } else if (type !== B.VIRTIO_BLK_T_FLUSH || !well) {
    if (dataLen > 0) {
      if (dataWrite) pieces.push({ len: dataLen, write: true });
      else pieces.push(...cut(rng, rng.bytes(dataLen), false));
    }
  }
  const status = rng.weighted([[10, 1], [1, 0], [1, rng.range(2, 16)]]);
  if (status > 0) pieces.push({ len: status, write: true });
  if (!well && rng.bool(0.2)) pieces.sort((a, b) => Number(a.write) - Number(b.write)); // keep readable-before-writable (a valid chain)
  return { pieces, indirect: rng.bool(0.3) };
}

export const blkTarget: FuzzTarget = {
  name: 'blk',
  description: 'virtio-blk requests of every type with hostile headers, sectors, layouts and payloads vs a model of the disk',
  episode: 2000,
  create(rng: Rng) {
    const readOnly = rng.bool(0.2);
    const h = new BlkHarness({ sizeBytes: DISK, readOnly, indirect: true, eventIdx: rng.bool(), fill: () => 0 });
    const model = new Uint8Array(DISK);
    const known = new Uint8Array(DISK).fill(1);
    let next = DATA_BASE;
    const alloc = (len: number) => {
      const a = next;
      next += Math.ceil(Math.max(len, 1) / 16) * 16 + 16;
      return a;
    };
    return {
      step(r: Rng) {
        next = DATA_BASE;
        const reqs = Array.from({ length: r.weighted([[6, 1], [2, r.range(2, 4)]]) }, () => genRequest(r));
        const placed = reqs.map((q) => {
          const bufs: DriverBuffer[] = q.pieces.map((p) => {
            const len = p.bytes ? p.bytes.length : p.len!;
            const addr = alloc(len);
            if (p.bytes) h.memory.write(addr, p.bytes);
            else h.memory.fill(addr, len, POISON);
            return { addr, len, write: p.write };
          });
          if (bufs.length === 0) bufs.push({ addr: alloc(1), len: 0 });
          const head = h.driver.addChain(bufs, q.indirect ? { indirect: true, indirectAddr: alloc(bufs.length * 16) } : {});
          return { q, bufs, head };
        });
        h.driver.kick();
        h.device.queueNotify(0);
        check(h.resets === 0, 'DEVICE_NEEDS_RESET for valid chains');
        const used = h.driver.used();
        check(used.length === placed.length, () => `${placed.length} chains sent, ${used.length} came back`);
        for (const p of placed) {
          const u = used.find((x) => x.id === p.head);
          check(u !== undefined, `chain ${p.head} did not come back`);
          const w = p.bufs.filter((b) => b.write && b.len > 0);
          const wTotal = w.reduce((n, b) => n + b.len, 0);
          check(u.len <= wTotal, () => `used length ${u.len} > writable ${wTotal}`);
          if (wTotal === 0) continue;
          check(u.len >= 1, 'a chain with room for a status came back with length 0');
          const last = w[w.length - 1]!;
          const status = h.memory.readU8(last.addr + last.len - 1);
          check(status === B.VIRTIO_BLK_S_OK || status === B.VIRTIO_BLK_S_IOERR || status === B.VIRTIO_BLK_S_UNSUPP, `status byte ${status}`);
          if (status !== B.VIRTIO_BLK_S_OK) continue;
          const r0 = p.bufs.filter((b) => !b.write && b.len > 0);
          const readable = new Uint8Array(r0.reduce((n, b) => n + b.len, 0));
          let at = 0;
          for (const b of r0) { readable.set(h.memory.read(b.addr, b.len), at); at += b.len; }
          // The request as the device reads it: the first 16 readable bytes (a cut-short header runs into the payload).
          check(readable.length >= B.VIRTIO_BLK_REQ_HEADER_SIZE, `OK status for a chain of ${readable.length} readable bytes: shorter than a header`);
          const hv = new DataView(readable.buffer);
          const type = hv.getUint32(0, true);
          const sector = hv.getBigUint64(8, true);
          const off = Number(sector) * 512;
          if (type === B.VIRTIO_BLK_T_IN) {
            const data = new Uint8Array(wTotal - 1);
            let k = 0;
            for (const b of w) { const bytes = h.memory.read(b.addr, b.len); data.set(bytes.subarray(0, Math.min(b.len, data.length - k)), k); k += b.len; }
            check(off + data.length <= DISK, `OK read past the disk: sector ${sector}, ${data.length} bytes`);
            check(u.len === data.length + 1, `read of ${data.length} bytes: used length ${u.len}`);
            for (let i = 0; i < data.length; i++) {
              if (known[off + i] && data[i] !== model[off + i]) check(false, `read at byte ${off + i}: ${data[i]}, the disk holds ${model[off + i]}`);
            }
          } else if (type === B.VIRTIO_BLK_T_OUT) {
            check(!readOnly, 'a read-only disk took a write');
            const data = readable.subarray(16);
            check(off + data.length <= DISK, `OK write past the disk: sector ${sector}, ${data.length} bytes`);
            model.set(data, off);
            known.fill(1, off, off + data.length);
          } else if (type === B.VIRTIO_BLK_T_WRITE_ZEROES || type === B.VIRTIO_BLK_T_DISCARD) {
            check(!readOnly, 'a read-only disk took a DISCARD/WRITE_ZEROES');
            const dv = new DataView(readable.buffer, 16);
            for (let i = 0; 16 * i + 16 <= readable.length - 16; i++) {
              const s = Number(dv.getBigUint64(16 * i, true)) * 512;
              const n = dv.getUint32(16 * i + 8, true) * 512;
              check(s + n <= DISK, `OK ${type === B.VIRTIO_BLK_T_DISCARD ? 'DISCARD' : 'WRITE_ZEROES'} past the disk: [${s}, +${n})`);
              if (type === B.VIRTIO_BLK_T_WRITE_ZEROES) { model.fill(0, s, s + n); known.fill(1, s, s + n); } else known.fill(0, s, s + n);
            }
          } else if (type === B.VIRTIO_BLK_T_GET_ID) {
            check(u.len <= B.VIRTIO_BLK_ID_BYTES + 1, `GET_ID wrote ${u.len} bytes`);
          }
        }
      },
      check() {
        const disk = new Uint8Array(readFileSync(h.path));
        check(disk.length === DISK, `the image is ${disk.length} bytes, not ${DISK}`);
        for (let i = 0; i < DISK; i++) if (known[i] && disk[i] !== model[i]) check(false, `image byte ${i}: ${disk[i]}, the model says ${model[i]}`);
      },
      close() { h.close(); },
    };
  },
};
