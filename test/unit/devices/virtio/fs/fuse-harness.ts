/**
 * A virtio-fs device over a real temp share and real host-mapped guest memory
 * (no KVM), driven through the request queue by VirtqDriver, with a small FUSE
 * client that encodes requests the way Linux's fs/fuse does.
 *
 * The share, the guest memory and the chain plumbing come from
 * ../share-harness.ts (ShareHarness); this file is the FUSE part.
 *
 * Requests are built here (W, cstr), not through devices/virtio/fs/wire.ts:
 * wire.ts decodes requests and encodes replies (the device's side) and has no
 * request encoders to reuse.
 */
import * as C from '../../../../../devices/virtio/constants.js';
import * as F from '../../../../../devices/virtio/fs/constants.js';
import { VirtioFsDevice } from '../../../../../devices/virtio/fs/device.js';
import { FuseServer } from '../../../../../devices/virtio/fs/server.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { VirtqDriver } from '../../../../helpers/virtq-driver.js';
import { bytes, errnoOf, MiB, runWithHarness, ShareHarness, text, type ShareOptions } from '../share-harness.js';

export { bytes, MiB, text } from '../share-harness.js';

const LAYOUT = { guestSize: 16 * MiB, dataBase: 0x20000, reserve: 2 * MiB };

export const cstr = (s: string | Uint8Array): Uint8Array => {
  const b = bytes(s);
  const o = new Uint8Array(b.length + 1);
  o.set(b);
  return o;
};

/** Little-endian builder for request args. */
export class W {
  private parts: number[] = [];
  u32(v: number): this { for (let i = 0; i < 4; i++) this.parts.push((v >>> (8 * i)) & 0xff); return this; }
  u64(v: bigint | number): this { const b = BigInt.asUintN(64, BigInt(v)); for (let i = 0n; i < 8n; i++) this.parts.push(Number((b >> (8n * i)) & 0xffn)); return this; }
  raw(b: Uint8Array): this { for (const x of b) this.parts.push(x); return this; }
  str(s: string | Uint8Array): this { return this.raw(cstr(s)); }
  bytes(): Uint8Array { return Uint8Array.from(this.parts); }
}

/** A decoded reply payload reader. */
export class R {
  at = 0;
  private readonly dv: DataView;
  constructor(readonly b: Uint8Array) { this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength); }
  u32(): number { const v = this.dv.getUint32(this.at, true); this.at += 4; return v; }
  u64(): bigint { const v = this.dv.getBigUint64(this.at, true); this.at += 8; return v; }
  skip(n: number): this { this.at += n; return this; }
  get remaining(): number { return this.b.length - this.at; }
}

export class FuseError extends Error {
  constructor(readonly errno: number, readonly opcode: number) { super(`FUSE error -${errno} for opcode ${opcode}`); }
}

export interface Attr { ino: bigint; size: bigint; mode: number; nlink: number; uid: number; gid: number; atime: bigint; mtime: bigint; mtimensec: number }
export interface Entry { nodeid: bigint; generation: bigint; attr: Attr }

export function readAttr(r: R): Attr {
  const ino = r.u64(); const size = r.u64(); r.u64();
  const atime = r.u64(); const mtime = r.u64(); r.u64();
  r.u32(); const mtimensec = r.u32(); r.u32();
  const mode = r.u32(); const nlink = r.u32(); const uid = r.u32(); const gid = r.u32();
  r.u32(); r.u32(); r.u32();
  return { ino, size, mode, nlink, uid, gid, atime, mtime, mtimensec };
}
export function readEntry(r: R): Entry {
  const nodeid = r.u64(); const generation = r.u64(); r.skip(24);
  return { nodeid, generation, attr: readAttr(r) };
}

export interface HarnessOptions extends ShareOptions { raw?: boolean; maxHandles?: number; directIo?: boolean }

export class FuseHarness extends ShareHarness<VirtioFsDevice> {
  /** The request queue (1). */
  readonly driver: VirtqDriver;
  /** The hiprio queue (0: FORGET, BATCH_FORGET). */
  readonly hiDriver: VirtqDriver;
  readonly device: VirtioFsDevice;
  readonly server: FuseServer;
  private unique = 1n;

  constructor(opts: HarnessOptions = {}, setup?: (share: string, outside: string) => void) {
    super('fs', LAYOUT, opts, setup);
    this.hiDriver = new VirtqDriver(this.memory, { size: 128, descAddr: 0x0, availAddr: 0x1000, usedAddr: 0x2000 });
    this.driver = new VirtqDriver(this.memory, { size: 128, descAddr: 0x4000, availAddr: 0x5000, usedAddr: 0x6000 });
    this.server = new FuseServer(this.fs, opts.maxHandles, { directIo: opts.directIo ?? false });
    this.device = new VirtioFsDevice({ tag: 'myfs' }, this.server);
    this.device.activate(this.context(C.feature(C.VIRTIO_F_VERSION_1), [new SplitQueue(this.memory, this.hiDriver.config), new SplitQueue(this.memory, this.driver.config)]));
    if (!opts.raw) this.init();
  }

  /** Sends raw readable bytes; the writable part is `replyLen` bytes (split at `splitIn`). */
  sendRaw(msg: Uint8Array, replyLen: number, opts: { queue?: number; splitIn?: number[]; splitOut?: number[] } = {}): { len: number; reply: Uint8Array } {
    const q = opts.queue ?? 1;
    return this.sendChain(q === 0 ? this.hiDriver : this.driver, q, msg, replyLen, opts);
  }

  /** Builds a request (header + args) and returns the payload reader; throws FuseError on -errno. */
  call(opcode: number, nodeid: bigint | number, args: Uint8Array = new Uint8Array(0), replyLen = 4096, extra: { uid?: number; splitIn?: number[] } = {}): R {
    const r = this.request(opcode, nodeid, args, replyLen, extra);
    if (r.error !== 0) throw new FuseError(-r.error, opcode);
    return new R(r.payload);
  }

  request(opcode: number, nodeid: bigint | number, args: Uint8Array, replyLen = 4096, extra: { uid?: number; splitIn?: number[]; queue?: number } = {}): { error: number; payload: Uint8Array; len: number } {
    const unique = this.unique++;
    const msg = new Uint8Array(40 + args.length);
    const dv = new DataView(msg.buffer);
    dv.setUint32(0, msg.length, true);
    dv.setUint32(4, opcode, true);
    dv.setBigUint64(8, unique, true);
    dv.setBigUint64(16, BigInt(nodeid), true);
    dv.setUint32(24, extra.uid ?? 0, true);
    msg.set(args, 40);
    const { len, reply } = this.sendRaw(msg, replyLen, { ...(extra.splitIn ? { splitIn: extra.splitIn } : {}), ...(extra.queue !== undefined ? { queue: extra.queue } : {}) });
    if (len === 0) return { error: 0, payload: new Uint8Array(0), len };
    const rv = new DataView(reply.buffer);
    if (rv.getUint32(0, true) !== len) throw new Error(`out header len ${rv.getUint32(0, true)} != used ${len}`);
    if (rv.getBigUint64(8, true) !== unique) throw new Error('unique mismatch');
    return { error: rv.getInt32(4, true), payload: reply.slice(16, len), len };
  }

  /** The errno of a call expected to fail (throws if it succeeded). */
  errno(fn: () => unknown): number {
    return errnoOf(fn, FuseError, 'a FUSE error');
  }

  // ---- typed ops ----
  init(minor = 31, flags = 0x3fffffff): { major: number; minor: number; flags: number; maxWrite: number; maxPages: number } {
    const r = this.call(F.FUSE_INIT, 0, new W().u32(7).u32(minor).u32(128 * 1024).u32(flags).bytes());
    const major = r.u32(); const mi = r.u32(); r.u32(); const fl = r.u32(); r.u32(); const maxWrite = r.u32(); r.u32();
    const maxPages = r.u32() & 0xffff;
    return { major, minor: mi, flags: fl, maxWrite, maxPages };
  }
  lookup(parent: bigint | number, name: string | Uint8Array): Entry { return readEntry(this.call(F.FUSE_LOOKUP, parent, cstr(name))); }
  forget(nodeid: bigint, n: bigint): void { this.request(F.FUSE_FORGET, nodeid, new W().u64(n).bytes(), 16, { queue: 0 }); }
  batchForget(items: [bigint, bigint][]): void {
    const w = new W().u32(items.length).u32(0);
    for (const [id, n] of items) w.u64(id).u64(n);
    this.request(F.FUSE_BATCH_FORGET, 0, w.bytes(), 16, { queue: 0 });
  }
  getattr(nodeid: bigint | number): Attr { return readAttr(this.call(F.FUSE_GETATTR, nodeid, new W().u32(0).u32(0).u64(0).bytes()).skip(16)); }
  setattr(nodeid: bigint | number, a: { valid: number; fh?: bigint; size?: bigint; atime?: bigint; mtime?: bigint; mtimensec?: number; mode?: number; uid?: number; gid?: number }): Attr {
    const w = new W().u32(a.valid).u32(0).u64(a.fh ?? 0n).u64(a.size ?? 0n).u64(0).u64(a.atime ?? 0n).u64(a.mtime ?? 0n).u64(0)
      .u32(0).u32(a.mtimensec ?? 0).u32(0).u32(a.mode ?? 0).u32(0).u32(a.uid ?? 0).u32(a.gid ?? 0).u32(0);
    return readAttr(this.call(F.FUSE_SETATTR, nodeid, w.bytes()).skip(16));
  }
  open(nodeid: bigint | number, flags = 0, dir = false): bigint { return this.openOut(nodeid, flags, dir).fh; }
  /** OPEN / OPENDIR -> fuse_open_out's fh and open_flags. */
  openOut(nodeid: bigint | number, flags = 0, dir = false): { fh: bigint; openFlags: number } {
    const r = this.call(dir ? F.FUSE_OPENDIR : F.FUSE_OPEN, nodeid, new W().u32(flags).u32(0).bytes());
    return { fh: r.u64(), openFlags: r.u32() };
  }
  release(fh: bigint, dir = false): void { this.call(dir ? F.FUSE_RELEASEDIR : F.FUSE_RELEASE, 0, new W().u64(fh).u32(0).u32(0).u64(0).bytes()); }
  create(parent: bigint | number, name: string | Uint8Array, flags = 0o102, mode = 0o100644): { entry: Entry; fh: bigint; openFlags: number } {
    const r = this.call(F.FUSE_CREATE, parent, new W().u32(flags).u32(mode).u32(0o022).u32(0).str(name).bytes());
    const entry = readEntry(r);
    return { entry, fh: r.u64(), openFlags: r.u32() };
  }
  read(fh: bigint, offset: number | bigint, size: number, splitIn?: number[]): Uint8Array {
    const r = this.call(F.FUSE_READ, 0, new W().u64(fh).u64(offset).u32(size).u32(0).u64(0).u32(0).u32(0).bytes(), 16 + size, splitIn ? { splitIn } : {});
    return r.b;
  }
  write(fh: bigint, offset: number | bigint, data: Uint8Array): number {
    return this.call(F.FUSE_WRITE, 0, new W().u64(fh).u64(offset).u32(data.length).u32(0).u64(0).u32(0).u32(0).raw(data).bytes()).u32();
  }
  mkdir(parent: bigint | number, name: string | Uint8Array, mode = 0o755): Entry { return readEntry(this.call(F.FUSE_MKDIR, parent, new W().u32(mode).u32(0o022).str(name).bytes())); }
  unlink(parent: bigint | number, name: string | Uint8Array): void { this.call(F.FUSE_UNLINK, parent, cstr(name)); }
  rmdir(parent: bigint | number, name: string | Uint8Array): void { this.call(F.FUSE_RMDIR, parent, cstr(name)); }
  rename(parent: bigint | number, name: string | Uint8Array, newParent: bigint | number, newName: string | Uint8Array, flags?: number): void {
    if (flags === undefined) this.call(F.FUSE_RENAME, parent, new W().u64(newParent).str(name).str(newName).bytes());
    else this.call(F.FUSE_RENAME2, parent, new W().u64(newParent).u32(flags).u32(0).str(name).str(newName).bytes());
  }
  symlink(parent: bigint | number, name: string | Uint8Array, target: string | Uint8Array): Entry { return readEntry(this.call(F.FUSE_SYMLINK, parent, new W().str(name).str(target).bytes())); }
  readlink(nodeid: bigint | number): string { return text(this.call(F.FUSE_READLINK, nodeid).b); }
  link(nodeid: bigint | number, parent: bigint | number, name: string | Uint8Array): Entry { return readEntry(this.call(F.FUSE_LINK, parent, new W().u64(nodeid).str(name).bytes())); }
  statfs(): { blocks: bigint; bsize: number; namelen: number } { const r = this.call(F.FUSE_STATFS, 1); const blocks = r.u64(); r.skip(32); return { blocks, bsize: r.u32(), namelen: r.u32() }; }
  setxattr(nodeid: bigint | number, name: string, value: Uint8Array, flags = 0): void { this.call(F.FUSE_SETXATTR, nodeid, new W().u32(value.length).u32(flags).str(name).raw(value).bytes()); }
  getxattr(nodeid: bigint | number, name: string, size = 1024): Uint8Array | number {
    const r = this.call(F.FUSE_GETXATTR, nodeid, new W().u32(size).u32(0).str(name).bytes(), 16 + Math.max(size, 8));
    return size === 0 ? r.u32() : r.b;
  }
  listxattr(nodeid: bigint | number, size = 1024): Uint8Array { return this.call(F.FUSE_LISTXATTR, nodeid, new W().u32(size).u32(0).bytes()).b; }
  removexattr(nodeid: bigint | number, name: string): void { this.call(F.FUSE_REMOVEXATTR, nodeid, cstr(name)); }
  /** READDIR(PLUS) pages until empty; returns names (and entries for plus). */
  readdir(nodeid: bigint | number, plus = false, size = 4096): { name: string; ino: bigint; type: number; entry?: Entry }[] {
    const fh = this.open(nodeid, 0, true);
    const out: { name: string; ino: bigint; type: number; entry?: Entry }[] = [];
    let off = 0n;
    for (;;) {
      const r = this.call(plus ? F.FUSE_READDIRPLUS : F.FUSE_READDIR, nodeid, new W().u64(fh).u64(off).u32(size).u32(0).u64(0).u32(0).u32(0).bytes(), 16 + size);
      if (r.remaining === 0) break;
      while (r.remaining > 0) {
        const entry = plus ? readEntry(r) : undefined;
        const ino = r.u64(); off = r.u64(); const namelen = r.u32(); const type = r.u32();
        const name = text(r.b.subarray(r.at, r.at + namelen));
        r.skip((namelen + 7) & ~7);
        out.push({ name, ino, type, ...(entry ? { entry } : {}) });
      }
    }
    this.release(fh, true);
    return out;
  }

}

export function withHarness<T>(opts: HarnessOptions, fn: (h: FuseHarness, t: T) => void, setup?: (share: string, outside: string) => void): (t: T) => void {
  return runWithHarness(() => new FuseHarness(opts, setup), fn);
}
