/**
 * 9P wire encoding: little-endian integers, strings as u16 length + bytes
 * (no NUL), qids as type[1] version[4] path[8].
 *
 * MessageReader reads a message the guest sent: every read is bounds-checked
 * against the message's own size and throws {@link WireError} past the end,
 * so a length field can never make the server read outside the message.
 * ReplyWriter builds a reply in a growable buffer. The message header
 * (size[4] type[1] tag[2]) is read and written only here (readHeader,
 * writeHeader, ReplyWriter.begin/finish). Pure, no I/O.
 */

import { P9_HEADER_SIZE } from './constants.js';

/** Offsets in the 7-byte header every 9P message starts with: size[4] type[1] tag[2]. */
export const P9_HDR_SIZE = 0;
export const P9_HDR_TYPE = 4;
export const P9_HDR_TAG = 5;

/** A message header: the size of the whole message (header included), its type and tag. */
export interface MessageHeader {
  readonly size: number;
  readonly type: number;
  readonly tag: number;
}

/** The header of the message in `bytes` (at least 7 bytes: RangeError otherwise). The size is not checked here. */
export function readHeader(bytes: Uint8Array): MessageHeader {
  if (bytes.length < P9_HEADER_SIZE) throw new RangeError(`a 9P header needs ${P9_HEADER_SIZE} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, P9_HEADER_SIZE);
  return { size: dv.getUint32(P9_HDR_SIZE, true), type: dv.getUint8(P9_HDR_TYPE), tag: dv.getUint16(P9_HDR_TAG, true) };
}

/** Writes `h` over the first 7 bytes of `bytes`. */
export function writeHeader(bytes: Uint8Array, h: MessageHeader): void {
  if (bytes.length < P9_HEADER_SIZE) throw new RangeError(`a 9P header needs ${P9_HEADER_SIZE} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, P9_HEADER_SIZE);
  dv.setUint32(P9_HDR_SIZE, h.size >>> 0, true);
  dv.setUint8(P9_HDR_TYPE, h.type);
  dv.setUint16(P9_HDR_TAG, h.tag, true);
}

/** A T-message ended before one of its fields (or a string ran past the end). */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

export class MessageReader {
  private readonly dv: DataView;
  private at: number;

  /** Reads `bytes` (one whole message) from offset `start` (after the header). */
  constructor(private readonly bytes: Uint8Array, start: number) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = start;
  }

  /** Bytes left unread. */
  get remaining(): number {
    return this.bytes.length - this.at;
  }

  private take(n: number, what: string): number {
    if (n > this.bytes.length - this.at) throw new WireError(`${what} runs past the end of the message (${this.remaining} bytes left, ${n} needed)`);
    const at = this.at;
    this.at += n;
    return at;
  }

  u8(): number {
    return this.dv.getUint8(this.take(1, 'u8'));
  }

  u16(): number {
    return this.dv.getUint16(this.take(2, 'u16'), true);
  }

  u32(): number {
    return this.dv.getUint32(this.take(4, 'u32'), true);
  }

  u64(): bigint {
    return this.dv.getBigUint64(this.take(8, 'u64'), true);
  }

  /** A string: u16 length, then that many bytes (returned as a copy; any bytes, NUL included: names are validated later). */
  str(): Uint8Array {
    const len = this.u16();
    const at = this.take(len, 'string');
    return this.bytes.slice(at, at + len);
  }
}

export interface Qid {
  readonly type: number;
  readonly version: number;
  readonly path: bigint;
}

export class ReplyWriter {
  private buf = new Uint8Array(256);
  private dv = new DataView(this.buf.buffer);
  private at = 0;

  /** Bytes written so far. */
  get length(): number {
    return this.at;
  }

  private room(n: number): number {
    if (this.at + n > this.buf.length) {
      const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.at + n));
      bigger.set(this.buf.subarray(0, this.at));
      this.buf = bigger;
      this.dv = new DataView(bigger.buffer);
    }
    const at = this.at;
    this.at += n;
    return at;
  }

  // Each setter calls room() before touching this.dv: room() may replace the buffer and its view.

  u8(v: number): this {
    const at = this.room(1);
    this.dv.setUint8(at, v);
    return this;
  }

  u16(v: number): this {
    const at = this.room(2);
    this.dv.setUint16(at, v, true);
    return this;
  }

  u32(v: number): this {
    const at = this.room(4);
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }

  u64(v: bigint): this {
    const at = this.room(8);
    this.dv.setBigUint64(at, BigInt.asUintN(64, v), true);
    return this;
  }

  /** Raw bytes (no length prefix). */
  raw(bytes: Uint8Array): this {
    const at = this.room(bytes.length); // first: room() may replace this.buf
    this.buf.set(bytes, at);
    return this;
  }

  /** A string of at most 65535 bytes (callers bound what they echo). */
  str(bytes: Uint8Array): this {
    if (bytes.length > 0xffff) throw new RangeError(`9P string of ${bytes.length} bytes`);
    this.u16(bytes.length);
    return this.raw(bytes);
  }

  qid(q: Qid): this {
    return this.u8(q.type).u32(q.version).u64(q.path);
  }

  /** Starts a message: empties the writer and reserves the header (filled by finish()). */
  begin(): this {
    this.at = 0;
    return this.u32(0).u8(0).u16(0);
  }

  /**
   * Fills the header of the message begun with begin(): size = bytes written
   * plus `inline` (data the caller places after them itself), type, tag.
   * Returns the size.
   */
  finish(type: number, tag: number, inline = 0): number {
    const size = this.at + inline;
    writeHeader(this.buf, { size, type, tag });
    return size;
  }

  /** Drops everything after the first `length` bytes. */
  truncate(length: number): void {
    if (length < this.at) this.at = length;
  }

  /** Overwrites a u32 already written at `offset`. */
  patchU32(offset: number, v: number): void {
    this.dv.setUint32(offset, v >>> 0, true);
  }

  /** The bytes written (a view: valid until the next write). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.at);
  }
}

/** The 13 bytes of a qid, for size arithmetic. */
export const QID_BYTES = 13;
