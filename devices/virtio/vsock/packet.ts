/**
 * virtio-vsock packets (virtio 1.2 §5.10.6): the 44-byte header, parsed from
 * a tx chain and validated before the device acts on it, and written into rx
 * chains. Also the host side's `CONNECT <port>\n` line (Firecracker's hybrid
 * vsock protocol).
 *
 * Pure: reads guest memory, calls no backend, never throws because of guest
 * data. I/O worker thread.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { readChain, sliceSegments, writeChain } from '../queue/chain-io.js';
import type { DescriptorChain, Segment } from '../queue/types.js';
import * as V from './constants.js';

/** A decoded header. CIDs are bigints (le64 on the wire); everything else fits a number. */
export interface VsockHeader {
  readonly srcCid: bigint;
  readonly dstCid: bigint;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly len: number;
  readonly type: number;
  readonly op: number;
  readonly flags: number;
  readonly bufAlloc: number;
  readonly fwdCnt: number;
}

/** A packet from the guest's tx queue, after validation. */
export type TxPacket =
  /** Acceptable: `payload` is exactly `hdr.len` bytes of the chain (RW), or empty (any other op). */
  | { readonly kind: 'ok'; readonly hdr: VsockHeader; readonly payload: readonly Segment[] }
  /** Not addressed to us (wrong CIDs) or unreadable: dropped without a reply. */
  | { readonly kind: 'drop'; readonly reason: string }
  /** Addressed to us but malformed: answer RST (and reset its connection). */
  | { readonly kind: 'reset'; readonly hdr: VsockHeader; readonly reason: string };

const HOST_CID = BigInt(V.VMADDR_CID_HOST);

/** Decodes the 44 header bytes at the start of `bytes`. */
export function decodeHeader(bytes: Uint8Array): VsockHeader {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, V.VSOCK_HDR_SIZE);
  return {
    srcCid: dv.getBigUint64(V.VSOCK_HDR_SRC_CID, true),
    dstCid: dv.getBigUint64(V.VSOCK_HDR_DST_CID, true),
    srcPort: dv.getUint32(V.VSOCK_HDR_SRC_PORT, true),
    dstPort: dv.getUint32(V.VSOCK_HDR_DST_PORT, true),
    len: dv.getUint32(V.VSOCK_HDR_LEN, true),
    type: dv.getUint16(V.VSOCK_HDR_TYPE, true),
    op: dv.getUint16(V.VSOCK_HDR_OP, true),
    flags: dv.getUint32(V.VSOCK_HDR_FLAGS, true),
    bufAlloc: dv.getUint32(V.VSOCK_HDR_BUF_ALLOC, true),
    fwdCnt: dv.getUint32(V.VSOCK_HDR_FWD_CNT, true),
  };
}

/** Encodes `h` into the first 44 bytes of `out` (u32 fields are taken modulo 2^32). */
export function encodeHeader(h: VsockHeader, out: Uint8Array): void {
  const dv = new DataView(out.buffer, out.byteOffset, V.VSOCK_HDR_SIZE);
  dv.setBigUint64(V.VSOCK_HDR_SRC_CID, h.srcCid, true);
  dv.setBigUint64(V.VSOCK_HDR_DST_CID, h.dstCid, true);
  dv.setUint32(V.VSOCK_HDR_SRC_PORT, h.srcPort >>> 0, true);
  dv.setUint32(V.VSOCK_HDR_DST_PORT, h.dstPort >>> 0, true);
  dv.setUint32(V.VSOCK_HDR_LEN, h.len >>> 0, true);
  dv.setUint16(V.VSOCK_HDR_TYPE, h.type, true);
  dv.setUint16(V.VSOCK_HDR_OP, h.op, true);
  dv.setUint32(V.VSOCK_HDR_FLAGS, h.flags >>> 0, true);
  dv.setUint32(V.VSOCK_HDR_BUF_ALLOC, h.bufAlloc >>> 0, true);
  dv.setUint32(V.VSOCK_HDR_FWD_CNT, h.fwdCnt >>> 0, true);
}

/**
 * Parses and validates a tx chain from a guest whose CID is `guestCid`. In order:
 * - fewer than 44 readable bytes: drop;
 * - src_cid is not the guest's, or dst_cid is not the host (2): drop (§5.10.6.3:
 *   the driver MUST use guest_cid as source; a reply to a forged address helps nobody);
 * - type is not STREAM: reset (§5.10.6.3: RST reply for an unknown type);
 * - len larger than 64 KiB, or than the chain holds after the header: reset;
 * - otherwise ok; the payload is taken only for RW (other ops carry none; extra bytes are ignored).
 */
export function parseTxPacket(memory: GuestMemory, chain: DescriptorChain, guestCid: bigint): TxPacket {
  if (chain.readableLength < V.VSOCK_HDR_SIZE) {
    return { kind: 'drop', reason: `header needs ${V.VSOCK_HDR_SIZE} readable bytes, chain has ${chain.readableLength}` };
  }
  let hdr: VsockHeader;
  try {
    hdr = decodeHeader(readChain(memory, chain.readable, 0, V.VSOCK_HDR_SIZE));
  } catch (e) {
    // Only for segments outside guest RAM, which SplitQueue already rules out.
    return { kind: 'drop', reason: `unreadable header: ${(e as Error).message}` };
  }
  if (hdr.srcCid !== guestCid) return { kind: 'drop', reason: `src_cid ${hdr.srcCid} is not the guest's CID ${guestCid}` };
  if (hdr.dstCid !== HOST_CID) return { kind: 'drop', reason: `dst_cid ${hdr.dstCid} is not the host (${V.VMADDR_CID_HOST})` };
  if (hdr.type !== V.VIRTIO_VSOCK_TYPE_STREAM) return { kind: 'reset', hdr, reason: `unsupported socket type ${hdr.type}` };
  if (hdr.op !== V.VIRTIO_VSOCK_OP_RW) return { kind: 'ok', hdr, payload: [] };
  if (hdr.len > V.VSOCK_MAX_PKT_PAYLOAD) return { kind: 'reset', hdr, reason: `payload of ${hdr.len} bytes exceeds ${V.VSOCK_MAX_PKT_PAYLOAD}` };
  const room = chain.readableLength - V.VSOCK_HDR_SIZE;
  if (hdr.len > room) return { kind: 'reset', hdr, reason: `len ${hdr.len} but the chain holds ${room} payload bytes` };
  return { kind: 'ok', hdr, payload: sliceSegments(chain.readable, V.VSOCK_HDR_SIZE, hdr.len) };
}

/**
 * Writes a packet header at the start of an rx chain's writable part. Returns
 * false (writing nothing useful) when the chain cannot hold a header.
 */
export function writeRxHeader(memory: GuestMemory, chain: DescriptorChain, h: VsockHeader, scratch: Uint8Array): boolean {
  if (chain.writableLength < V.VSOCK_HDR_SIZE) return false;
  encodeHeader(h, scratch);
  return writeChain(memory, chain.writable, 0, scratch.subarray(0, V.VSOCK_HDR_SIZE)) === V.VSOCK_HDR_SIZE;
}

/** The result of a host client's first line. */
export type ConnectLine =
  | { readonly kind: 'port'; readonly port: number }
  | { readonly kind: 'bad'; readonly reason: string };

const CONNECT_RE = /^CONNECT ([0-9]{1,10})\r?\n$/;

/**
 * Parses `CONNECT <port>\n` (a decimal u32; a CR before the LF is tolerated).
 * `line` must end at the first LF. Anything else is 'bad'.
 */
export function parseConnectLine(line: Uint8Array): ConnectLine {
  // latin1 maps each byte to one char, so no byte can sneak past the ASCII-only regex.
  const text = Buffer.from(line.buffer, line.byteOffset, line.byteLength).toString('latin1');
  const m = CONNECT_RE.exec(text);
  if (!m) return { kind: 'bad', reason: `not 'CONNECT <port>\\n': ${JSON.stringify(text.slice(0, V.VSOCK_MAX_CONNECT_LINE))}` };
  const port = Number(m[1]);
  if (port > V.VSOCK_MAX_PORT) return { kind: 'bad', reason: `port ${m[1]} is not a u32` };
  return { kind: 'port', port };
}

/** Index of the first LF in `bytes[0, n)`, or -1. */
export function findNewline(bytes: Uint8Array, n: number): number {
  const LF = 0x0a;
  for (let i = 0; i < n; i++) if (bytes[i] === LF) return i;
  return -1;
}
