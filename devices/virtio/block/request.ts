/**
 * virtio-blk requests (virtio 1.2 §5.2.6): a popped descriptor chain parsed
 * and validated into a typed request BEFORE any I/O happens.
 *
 * Chain layout: a 16-byte header { le32 type, le32 reserved, le64 sector } in
 * the first readable bytes (it may span segments), the data (readable for
 * OUT / DISCARD / WRITE_ZEROES, writable for IN / GET_ID), and one status
 * byte: the LAST writable byte of the chain. Every number in it is the
 * guest's, so each is checked here: direction, 512-byte multiples, and the
 * sector range, compared without overflow (see checkRange).
 *
 * Pure: reads guest memory, writes nothing, calls no backend. I/O worker thread.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { readChain, sliceSegments } from '../queue/chain-io.js';
import type { DescriptorChain, Segment } from '../queue/types.js';
import {
  BLOCK_MAX_DISCARD_SECTORS, BLOCK_MAX_DISCARD_SEG, BLOCK_MAX_WRITE_ZEROES_SECTORS, BLOCK_MAX_WRITE_ZEROES_SEG,
  VIRTIO_BLK_DISCARD_WZ_SIZE, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_REQ_HEADER_SIZE, VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './constants.js';

/** 2^32: the weight of a u64's high word. */
const U32_MODULUS = 0x1_0000_0000;

/** What the parser needs to know about the disk and the negotiation. */
export interface DiskLimits {
  /** Disk size in bytes (a multiple of 512, a safe integer). */
  readonly capacityBytes: number;
  readonly readOnly: boolean;
  /** VIRTIO_BLK_F_DISCARD / VIRTIO_BLK_F_WRITE_ZEROES were negotiated. */
  readonly discard: boolean;
  readonly writeZeroes: boolean;
}

/** A byte range of the disk (offset and length multiples of 512, inside the capacity). */
export interface DiskRange {
  readonly offset: number;
  readonly length: number;
}

/** A validated request; `offset`s are disk byte offsets, `data` guest segments (each inside one region). */
export type BlockRequest =
  | { readonly kind: 'read'; readonly offset: number; readonly length: number; readonly data: readonly Segment[] }
  | { readonly kind: 'write'; readonly offset: number; readonly length: number; readonly data: readonly Segment[] }
  | { readonly kind: 'flush' }
  | { readonly kind: 'get-id'; readonly data: readonly Segment[] }
  | { readonly kind: 'discard'; readonly ranges: readonly DiskRange[] }
  | { readonly kind: 'write-zeroes'; readonly ranges: readonly (DiskRange & { readonly unmap: boolean })[] }
  /** Rejected without I/O: answer with `status` (IOERR or UNSUPP). */
  | { readonly kind: 'reject'; readonly status: number; readonly reason: string };

/** A parsed chain: where its status byte goes, and what to do. */
export type ParsedChain =
  | { readonly statusAddr: number; readonly request: BlockRequest }
  /** No writable byte for a status: the chain can only go back with length 0 (a guest error). */
  | { readonly statusAddr: null; readonly reason: string };

/** Parses and validates `chain`. Never throws: anything unreadable becomes an IOERR rejection. */
export function parseRequest(memory: GuestMemory, chain: DescriptorChain, disk: DiskLimits): ParsedChain {
  const statusAddr = lastWritableByte(chain.writable);
  if (statusAddr === null) return { statusAddr: null, reason: 'no writable status byte' };
  try {
    return { statusAddr, request: parseBody(memory, chain, disk) };
  } catch (e) {
    // Only for segments outside guest RAM, which SplitQueue already rules out.
    return { statusAddr, request: ioerr(`unreadable request: ${(e as Error).message}`) };
  }
}

function parseBody(memory: GuestMemory, chain: DescriptorChain, disk: DiskLimits): BlockRequest {
  if (chain.readableLength < VIRTIO_BLK_REQ_HEADER_SIZE) {
    return ioerr(`header needs ${VIRTIO_BLK_REQ_HEADER_SIZE} readable bytes, chain has ${chain.readableLength}`);
  }
  const { type, sectorLo, sectorHi } = readHeader(memory, chain.readable);
  // Bytes besides the header and the status byte, in each direction.
  const readableData = chain.readableLength - VIRTIO_BLK_REQ_HEADER_SIZE;
  const writableData = chain.writableLength - 1;

  switch (type) {
    case VIRTIO_BLK_T_IN: {
      if (readableData !== 0) return ioerr(`read with ${readableData} device-readable data bytes`);
      const range = checkData(sectorLo, sectorHi, writableData, disk);
      if (typeof range === 'string') return ioerr(range);
      return { kind: 'read', offset: range.offset, length: range.length, data: sliceSegments(chain.writable, 0, writableData) };
    }
    case VIRTIO_BLK_T_OUT: {
      // §5.2.6.2: a write to a read-only device fails with IOERR and writes nothing.
      if (disk.readOnly) return ioerr('write to a read-only disk');
      if (writableData !== 0) return ioerr(`write with ${writableData} device-writable data bytes`);
      const range = checkData(sectorLo, sectorHi, readableData, disk);
      if (typeof range === 'string') return ioerr(range);
      return { kind: 'write', offset: range.offset, length: range.length, data: sliceSegments(chain.readable, VIRTIO_BLK_REQ_HEADER_SIZE, readableData) };
    }
    case VIRTIO_BLK_T_FLUSH:
      if (readableData !== 0 || writableData !== 0) return ioerr(`flush with data (${readableData} readable, ${writableData} writable bytes)`);
      return { kind: 'flush' };
    case VIRTIO_BLK_T_GET_ID:
      if (readableData !== 0 || writableData !== VIRTIO_BLK_ID_BYTES) {
        return ioerr(`get-id needs exactly ${VIRTIO_BLK_ID_BYTES} writable data bytes (has ${writableData} writable, ${readableData} readable)`);
      }
      return { kind: 'get-id', data: sliceSegments(chain.writable, 0, VIRTIO_BLK_ID_BYTES) };
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return parseRanges(memory, chain, type, readableData, writableData, disk);
    default:
      return { kind: 'reject', status: VIRTIO_BLK_S_UNSUPP, reason: `unsupported request type ${type}` };
  }
}

/** DISCARD / WRITE_ZEROES: an array of { le64 sector, le32 num_sectors, le32 flags } after the header. */
function parseRanges(memory: GuestMemory, chain: DescriptorChain, type: number, readableData: number, writableData: number, disk: DiskLimits): BlockRequest {
  const isDiscard = type === VIRTIO_BLK_T_DISCARD;
  const name = isDiscard ? 'discard' : 'write-zeroes';
  if (disk.readOnly) return ioerr(`${name} on a read-only disk`);
  if (!(isDiscard ? disk.discard : disk.writeZeroes)) {
    return { kind: 'reject', status: VIRTIO_BLK_S_UNSUPP, reason: `${name} without the negotiated feature` };
  }
  if (writableData !== 0) return ioerr(`${name} with ${writableData} device-writable data bytes`);
  const count = readableData / VIRTIO_BLK_DISCARD_WZ_SIZE;
  const maxSeg = isDiscard ? BLOCK_MAX_DISCARD_SEG : BLOCK_MAX_WRITE_ZEROES_SEG;
  const maxSectors = isDiscard ? BLOCK_MAX_DISCARD_SECTORS : BLOCK_MAX_WRITE_ZEROES_SECTORS;
  if (!Number.isInteger(count) || count < 1) return ioerr(`${name} payload of ${readableData} bytes is not 1 or more ${VIRTIO_BLK_DISCARD_WZ_SIZE}-byte ranges`);
  if (count > maxSeg) return ioerr(`${name} with ${count} ranges (max ${maxSeg})`);

  // At most maxSeg * 16 bytes: a bounded copy.
  const raw = readChain(memory, chain.readable, VIRTIO_BLK_REQ_HEADER_SIZE, readableData);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const ranges: (DiskRange & { unmap: boolean })[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * VIRTIO_BLK_DISCARD_WZ_SIZE;
    const sectorLo = dv.getUint32(at, true);
    const sectorHi = dv.getUint32(at + 4, true);
    const numSectors = dv.getUint32(at + 8, true);
    const flags = dv.getUint32(at + 12, true);
    // §5.2.6.2: unknown flags, and the unmap flag on a discard, are UNSUPP.
    if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 || (isDiscard && flags !== 0)) {
      return { kind: 'reject', status: VIRTIO_BLK_S_UNSUPP, reason: `${name} range ${i} has flags 0x${flags.toString(16)}` };
    }
    if (numSectors > maxSectors) return ioerr(`${name} range ${i} of ${numSectors} sectors (max ${maxSectors})`);
    const range = checkRange(sectorLo, sectorHi, numSectors * VIRTIO_BLK_SECTOR_SIZE, disk.capacityBytes);
    if (typeof range === 'string') return ioerr(`${name} range ${i}: ${range}`);
    ranges.push({ ...range, unmap: (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 });
  }
  return isDiscard ? { kind: 'discard', ranges } : { kind: 'write-zeroes', ranges };
}

/** A data length for a read or write: a multiple of 512 inside the disk. Returns the range, or why not. */
function checkData(sectorLo: number, sectorHi: number, length: number, disk: DiskLimits): DiskRange | string {
  if (length % VIRTIO_BLK_SECTOR_SIZE !== 0) return `data length ${length} is not a multiple of ${VIRTIO_BLK_SECTOR_SIZE}`;
  return checkRange(sectorLo, sectorHi, length, disk.capacityBytes);
}

/**
 * `sector * 512 + length <= capacity` for the guest's u64 sector, given as its
 * two u32 words, with no arithmetic that can wrap or round the answer wrong:
 * the sector is compared with the last one a range of `length` may start at,
 * `(capacity - length) / 512`, which is exact (both are safe integers, and a
 * division by a power of two is exact in a double). A sector of 2^53 or more
 * does not convert exactly, but it is then far past any disk whose size is
 * a safe integer, so the comparison still refuses it. The returned offset is
 * at most `capacity - length`: a safe integer.
 */
export function checkRange(sectorLo: number, sectorHi: number, length: number, capacityBytes: number): DiskRange | string {
  const sector = sectorHi * U32_MODULUS + sectorLo;
  const lastStart = (capacityBytes - length) / VIRTIO_BLK_SECTOR_SIZE;
  if (!(sector <= lastStart)) {
    const named = sectorHi === 0 ? String(sectorLo) : ((BigInt(sectorHi) << 32n) | BigInt(sectorLo)).toString();
    return `sectors ${named}+${length / VIRTIO_BLK_SECTOR_SIZE} run past the end of the disk (${capacityBytes / VIRTIO_BLK_SECTOR_SIZE} sectors)`;
  }
  return { offset: sector * VIRTIO_BLK_SECTOR_SIZE, length };
}

/** The header's type and sector (as its two u32 words). Fast path when the first segment holds all 16 bytes (as Linux sends it). */
function readHeader(memory: GuestMemory, readable: readonly Segment[]): { type: number; sectorLo: number; sectorHi: number } {
  const first = readable[0]!;
  if (first.len >= VIRTIO_BLK_REQ_HEADER_SIZE) {
    return { type: memory.readU32(first.addr), sectorLo: memory.readU32(first.addr + 8), sectorHi: memory.readU32(first.addr + 12) };
  }
  const h = readChain(memory, readable, 0, VIRTIO_BLK_REQ_HEADER_SIZE);
  const dv = new DataView(h.buffer, h.byteOffset, h.byteLength);
  return { type: dv.getUint32(0, true), sectorLo: dv.getUint32(8, true), sectorHi: dv.getUint32(12, true) };
}

/** Guest address of the last writable byte (skipping empty trailing segments), or null when there is none. */
function lastWritableByte(writable: readonly Segment[]): number | null {
  for (let i = writable.length - 1; i >= 0; i--) {
    const s = writable[i]!;
    if (s.len > 0) return s.addr + s.len - 1;
  }
  return null;
}

function ioerr(reason: string): BlockRequest {
  return { kind: 'reject', status: VIRTIO_BLK_S_IOERR, reason };
}
