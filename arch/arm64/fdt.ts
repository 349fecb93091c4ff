/**
 * A flattened device tree (DTB, devicetree specification v0.4 chapter 5)
 * writer: nodes and properties in, the blob the kernel reads out. Big-endian
 * throughout; version 17, compatible back to 16; no memory reservations.
 */

const FDT_MAGIC = 0xd00dfeed;
const FDT_BEGIN_NODE = 1;
const FDT_END_NODE = 2;
const FDT_PROP = 3;
const FDT_END = 9;
const HEADER_SIZE = 40;
const RSVMAP_SIZE = 16; // the terminating { address 0, size 0 } entry only
const VERSION = 17;
const LAST_COMPATIBLE_VERSION = 16;

/** A property value: raw bytes, a string, a string list, u32 cells, or nothing (a boolean property). */
export type FdtValue = Uint8Array | string | readonly string[] | readonly number[] | null;

/** Cells of a 64-bit value as two u32 cells (high, low), for `reg`-style properties with 2 address/size cells. */
export function u64Cells(v: number | bigint): [number, number] {
  const b = BigInt(v);
  if (b < 0n || b > 0xffffffffffffffffn) throw new RangeError(`${v} does not fit 64 bits`);
  return [Number(b >> 32n), Number(b & 0xffffffffn)];
}

/** Node and property names: 1..31 characters of the spec's set; node names may have a `@unit-address`. */
const NODE_NAME = /^[A-Za-z0-9,._+-]{1,31}(@[A-Za-z0-9,._+-]+)?$/;
const PROP_NAME = /^[A-Za-z0-9,._+?#-]{1,31}$/;

export class FdtWriter {
  private readonly struct: number[] = [];
  private readonly strings: number[] = [];
  private readonly stringOffsets = new Map<string, number>();
  private depth = 0;
  private finished = false;

  /** Opens a node; the root is `''`. */
  beginNode(name: string): this {
    this.live();
    if (this.depth === 0 ? name !== '' : !NODE_NAME.test(name)) throw new RangeError(`bad device tree node name ${JSON.stringify(name)}`);
    if (this.depth === 0 && this.struct.length > 0) throw new RangeError('a device tree has one root node');
    this.token(FDT_BEGIN_NODE);
    this.bytes(cstring(name));
    this.depth++;
    return this;
  }

  endNode(): this {
    this.live();
    if (this.depth === 0) throw new RangeError('endNode() without an open node');
    this.token(FDT_END_NODE);
    this.depth--;
    return this;
  }

  /** Adds a property to the open node. Strings are NUL-terminated; numbers are u32 cells. */
  prop(name: string, value: FdtValue = null): this {
    this.live();
    if (this.depth === 0) throw new RangeError(`property ${name} outside a node`);
    if (!PROP_NAME.test(name)) throw new RangeError(`bad device tree property name ${JSON.stringify(name)}`);
    const data = encodeValue(name, value);
    this.token(FDT_PROP);
    this.u32(data.length);
    this.u32(this.stringOffset(name));
    this.bytes(data);
    return this;
  }

  /** Closes the tree and returns the blob. */
  finish(bootCpuId = 0): Uint8Array {
    this.live();
    if (this.depth !== 0 || this.struct.length === 0) throw new RangeError('finish() needs exactly one closed root node');
    this.token(FDT_END);
    this.finished = true;
    const offStruct = HEADER_SIZE + RSVMAP_SIZE;
    const offStrings = offStruct + this.struct.length;
    const total = offStrings + this.strings.length;
    const out = new Uint8Array(total);
    const d = new DataView(out.buffer);
    const header = [FDT_MAGIC, total, offStruct, offStrings, HEADER_SIZE, VERSION, LAST_COMPATIBLE_VERSION, bootCpuId, this.strings.length, this.struct.length];
    header.forEach((v, i) => d.setUint32(i * 4, v >>> 0, false));
    out.set(this.struct, offStruct);
    out.set(this.strings, offStrings);
    return out;
  }

  private live(): void {
    if (this.finished) throw new RangeError('the device tree is already finished');
  }

  private stringOffset(name: string): number {
    let off = this.stringOffsets.get(name);
    if (off === undefined) {
      off = this.strings.length;
      this.stringOffsets.set(name, off);
      for (const b of cstring(name)) this.strings.push(b);
    }
    return off;
  }

  private token(t: number): void {
    this.u32(t);
  }

  private u32(v: number): void {
    this.struct.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  }

  /** Appends bytes, padded with zeros to a 4-byte boundary. */
  private bytes(b: Uint8Array): void {
    for (const x of b) this.struct.push(x);
    while (this.struct.length % 4 !== 0) this.struct.push(0);
  }
}

function cstring(s: string): Uint8Array {
  if (s.includes('\0')) throw new RangeError('device tree strings must not contain NUL');
  const e = new TextEncoder().encode(s);
  const out = new Uint8Array(e.length + 1);
  out.set(e);
  return out;
}

function encodeValue(name: string, value: FdtValue): Uint8Array {
  if (value === null) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return cstring(value);
  if (value.length === 0) return new Uint8Array(0);
  if (typeof value[0] === 'string') {
    const parts = (value as readonly string[]).map(cstring);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  const cells = value as readonly number[];
  const out = new Uint8Array(cells.length * 4);
  const d = new DataView(out.buffer);
  cells.forEach((c, i) => {
    if (!Number.isInteger(c) || c < 0 || c > 0xffffffff) throw new RangeError(`property ${name}: cell ${c} is not a u32`);
    d.setUint32(i * 4, c, false);
  });
  return out;
}
