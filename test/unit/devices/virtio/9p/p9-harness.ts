/**
 * A virtio-9p device over a real temp share directory and real host-mapped
 * guest memory (mapGuestMemory, no KVM), driven through the split queue by the
 * driver-side test double (VirtqDriver), with a small 9P2000.L client that
 * encodes T-messages and decodes R-messages the way Linux does.
 *
 * The share, the guest memory and the chain plumbing come from
 * ../share-harness.ts (ShareHarness); this file is the 9P part.
 */
import * as C from '../../../../../devices/virtio/constants.js';
import type { ActivationContext } from '../../../../../devices/virtio/device.js';
import type { Wakeup } from '../../../../../devices/virtio/backends/wakeup.js';
import * as P from '../../../../../devices/virtio/9p/constants.js';
import { Virtio9pDevice } from '../../../../../devices/virtio/9p/device.js';
import { P9Server } from '../../../../../devices/virtio/9p/server.js';
import { MessageReader, readHeader, ReplyWriter, type Qid } from '../../../../../devices/virtio/9p/wire.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { VirtqDriver } from '../../../../helpers/virtq-driver.js';
import { bytes, errnoOf, MiB, runWithHarness, ShareHarness, text, type ChainOptions, type ShareOptions } from '../share-harness.js';

export { bytes, hostSetxattr, MiB, snapshot, text } from '../share-harness.js';

const LAYOUT = { guestSize: 32 * MiB, dataBase: 0x10000, reserve: MiB };
export const ROOT_FID = 1;
export const MSIZE = 256 * 1024;

export interface HarnessOptions extends ShareOptions {
  maxFids?: number;
  maxLockRanges?: number;
  /** Skip Tversion + Tattach (fid ROOT_FID, uid 0). */
  raw?: boolean;
  eventIdx?: boolean;
  indirect?: boolean;
  /** The device's wakeup (default none: each notification drains the queue). */
  wakeup?: Wakeup;
}

/** A decoded reply: its type and tag, the body after the header, and the used length. */
export interface Reply {
  type: number;
  tag: number;
  size: number;
  /** The used length the device reported (0: dropped). */
  len: number;
  body: MessageReader;
  /** Rlerror's errno, or 0. */
  errno: number;
}

export interface SendOptions extends ChainOptions {
  /** Bytes of the writable part (default msize). */
  replyLen?: number;
}

/** A 9P2000.L error: the errno of an Rlerror. */
export class P9Error extends Error {
  constructor(readonly errno: number, readonly type: number) {
    super(`Rlerror ${errno} for type ${type}`);
  }
}

export class P9Harness extends ShareHarness<Virtio9pDevice> {
  readonly driver: VirtqDriver;
  readonly queue: SplitQueue;
  readonly device: Virtio9pDevice;
  readonly server: P9Server;
  private nextTag = 1;
  /** The last fid number fid() handed out. */
  private nextFid = 100;

  constructor(opts: HarnessOptions = {}, setup?: (share: string, outside: string) => void) {
    super('9p', LAYOUT, opts, setup);
    this.driver = new VirtqDriver(this.memory, { size: P.P9_QUEUE_SIZE, descAddr: 0x0, availAddr: 0x1000, usedAddr: 0x2000, eventIdx: opts.eventIdx ?? false, indirect: opts.indirect ?? false });
    this.queue = new SplitQueue(this.memory, this.driver.config);
    this.server = new P9Server(this.fs, opts.maxFids, undefined, opts.maxLockRanges);
    this.device = new Virtio9pDevice({ tag: 'share0' }, this.server, opts.wakeup);
    let features = C.feature(P.VIRTIO_9P_MOUNT_TAG) | C.feature(C.VIRTIO_F_VERSION_1);
    if (opts.eventIdx) features |= C.feature(C.VIRTIO_F_EVENT_IDX);
    if (opts.indirect) features |= C.feature(C.VIRTIO_F_INDIRECT_DESC);
    this.device.activate(this.context(features));
    if (!opts.raw) {
      this.version();
      this.attach(ROOT_FID);
    }
  }

  override context(features: bigint, queues: (SplitQueue | null)[] = [this.queue]): ActivationContext {
    return super.context(features, queues);
  }

  /** A fresh fid number. */
  fid(): number {
    return this.nextFid++;
  }

  /** Sends raw message bytes as one chain; returns the used length and the writable bytes. */
  sendRaw(msg: Uint8Array, opts: SendOptions = {}): { len: number; reply: Uint8Array; used: number } {
    return { ...this.sendChain(this.driver, 0, msg, opts.replyLen ?? MSIZE, opts), used: 1 };
  }

  /** Sends a T-message of `type` with `body`; decodes the reply (throws when the chain was dropped or malformed). */
  send(type: number, body: (w: ReplyWriter) => void, opts: SendOptions = {}): Reply {
    const tag = this.nextTag++ & 0xfffe;
    return this.decode(this.sendRaw(message(type, tag, body), opts), tag);
  }

  decode(r: { len: number; reply: Uint8Array }, tag?: number): Reply {
    if (r.len === 0) throw new Error('chain dropped (used length 0)');
    const { size, type, tag: rtag } = readHeader(r.reply);
    if (size !== r.len) throw new Error(`reply size ${size} differs from the used length ${r.len}`);
    if (tag !== undefined && rtag !== tag) throw new Error(`reply tag ${rtag}, sent ${tag}`);
    const body = new MessageReader(r.reply.subarray(0, size), P.P9_HEADER_SIZE);
    const errno = type === P.P9_RLERROR ? new MessageReader(r.reply.subarray(0, size), P.P9_HEADER_SIZE).u32() : 0;
    return { type, tag: rtag, size, len: r.len, body, errno };
  }

  /** Sends and expects `want` (else throws P9Error with the Rlerror's errno). */
  call(type: number, body: (w: ReplyWriter) => void, opts: SendOptions = {}): MessageReader {
    const r = this.send(type, body, opts);
    if (r.type === P.P9_RLERROR) throw new P9Error(r.errno, type);
    if (r.type !== type + 1) throw new Error(`reply type ${r.type} to ${type}`);
    return r.body;
  }

  /** The errno of a call expected to fail (throws if it succeeded). */
  errno(fn: () => unknown): number {
    return errnoOf(fn, P9Error, 'an Rlerror');
  }

  // ---- typed client calls (Linux's encodings) ----

  version(msize = MSIZE, version = '9P2000.L'): { msize: number; version: string } {
    const r = this.call(P.P9_TVERSION, (w) => w.u32(msize).str(bytes(version)));
    return { msize: r.u32(), version: text(r.str()) };
  }

  attach(fid: number, nUname = 0, aname = ''): Qid {
    return readQid(this.call(P.P9_TATTACH, (w) => w.u32(fid).u32(P.P9_NOFID).str(bytes('root')).str(bytes(aname)).u32(nUname)));
  }

  walk(fid: number, newfid: number, names: (string | Uint8Array)[]): Qid[] {
    const r = this.call(P.P9_TWALK, (w) => {
      w.u32(fid).u32(newfid).u16(names.length);
      for (const n of names) w.str(bytes(n));
    });
    const n = r.u16();
    return Array.from({ length: n }, () => readQid(r));
  }

  /** Walks from the root to a new fid; returns it. */
  walkTo(...names: string[]): number {
    const f = this.fid();
    const q = this.walk(ROOT_FID, f, names);
    if (q.length !== names.length) throw new Error(`partial walk: ${q.length} of ${names.length}`);
    return f;
  }

  lopen(fid: number, flags: number): { qid: Qid; iounit: number } {
    const r = this.call(P.P9_TLOPEN, (w) => w.u32(fid).u32(flags));
    return { qid: readQid(r), iounit: r.u32() };
  }

  lcreate(fid: number, name: string | Uint8Array, flags: number, mode: number, gid = 0): Qid {
    return readQid(this.call(P.P9_TLCREATE, (w) => w.u32(fid).str(bytes(name)).u32(flags).u32(mode).u32(gid)));
  }

  read(fid: number, offset: bigint | number, count: number, opts: SendOptions = {}): Uint8Array {
    const r = this.call(P.P9_TREAD, (w) => w.u32(fid).u64(BigInt(offset)).u32(count), opts);
    const n = r.u32();
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = r.u8();
    return out;
  }

  write(fid: number, offset: bigint | number, data: Uint8Array, opts: SendOptions = {}): number {
    return this.call(P.P9_TWRITE, (w) => w.u32(fid).u64(BigInt(offset)).u32(data.length).raw(data), opts).u32();
  }

  clunk(fid: number): void {
    this.call(P.P9_TCLUNK, (w) => w.u32(fid));
  }

  remove(fid: number): void {
    this.call(P.P9_TREMOVE, (w) => w.u32(fid));
  }

  readdir(fid: number, offset: bigint, count: number): { qid: Qid; offset: bigint; type: number; name: string }[] {
    const r = this.call(P.P9_TREADDIR, (w) => w.u32(fid).u64(offset).u32(count));
    const total = r.u32();
    const out: { qid: Qid; offset: bigint; type: number; name: string }[] = [];
    const start = r.remaining;
    while (start - r.remaining < total) out.push({ qid: readQid(r), offset: r.u64(), type: r.u8(), name: text(r.str()) });
    return out;
  }

  /** Every entry name of directory fid (opens a clone, reads it all, clunks). */
  listdir(fid: number): string[] {
    const f = this.fid();
    this.walk(fid, f, []);
    this.lopen(f, P.P9_DOTL_RDONLY);
    const names: string[] = [];
    let off = 0n;
    for (;;) {
      const ents = this.readdir(f, off, 8192);
      if (ents.length === 0) break;
      for (const e of ents) names.push(e.name);
      off = ents[ents.length - 1]!.offset;
    }
    this.clunk(f);
    return names.sort();
  }

  getattr(fid: number): GetattrReply {
    const r = this.call(P.P9_TGETATTR, (w) => w.u32(fid).u64(0x3fffn));
    const valid = r.u64();
    const qid = readQid(r);
    const mode = r.u32();
    const uid = r.u32();
    const gid = r.u32();
    const nlink = r.u64();
    const rdev = r.u64();
    const size = r.u64();
    const blksize = r.u64();
    const blocks = r.u64();
    const t = () => ({ sec: r.u64(), nsec: r.u64() });
    return { valid, qid, mode, uid, gid, nlink, rdev, size, blksize, blocks, atime: t(), mtime: t(), ctime: t(), btime: t() };
  }

  setattr(fid: number, a: { valid: number; mode?: number; uid?: number; gid?: number; size?: bigint; atime?: [bigint, bigint]; mtime?: [bigint, bigint] }): void {
    this.call(P.P9_TSETATTR, (w) => w.u32(fid).u32(a.valid).u32(a.mode ?? 0).u32(a.uid ?? 0).u32(a.gid ?? 0).u64(a.size ?? 0n)
      .u64(a.atime?.[0] ?? 0n).u64(a.atime?.[1] ?? 0n).u64(a.mtime?.[0] ?? 0n).u64(a.mtime?.[1] ?? 0n));
  }

  mkdir(dfid: number, name: string | Uint8Array, mode = 0o755, gid = 0): Qid {
    return readQid(this.call(P.P9_TMKDIR, (w) => w.u32(dfid).str(bytes(name)).u32(mode).u32(gid)));
  }

  symlink(dfid: number, name: string | Uint8Array, target: string | Uint8Array, gid = 0): Qid {
    return readQid(this.call(P.P9_TSYMLINK, (w) => w.u32(dfid).str(bytes(name)).str(bytes(target)).u32(gid)));
  }

  mknod(dfid: number, name: string | Uint8Array, mode: number, major = 0, minor = 0, gid = 0): Qid {
    return readQid(this.call(P.P9_TMKNOD, (w) => w.u32(dfid).str(bytes(name)).u32(mode).u32(major).u32(minor).u32(gid)));
  }

  link(dfid: number, fid: number, name: string | Uint8Array): void {
    this.call(P.P9_TLINK, (w) => w.u32(dfid).u32(fid).str(bytes(name)));
  }

  rename(fid: number, dfid: number, name: string | Uint8Array): void {
    this.call(P.P9_TRENAME, (w) => w.u32(fid).u32(dfid).str(bytes(name)));
  }

  renameat(oldDir: number, oldName: string | Uint8Array, newDir: number, newName: string | Uint8Array): void {
    this.call(P.P9_TRENAMEAT, (w) => w.u32(oldDir).str(bytes(oldName)).u32(newDir).str(bytes(newName)));
  }

  unlinkat(dfid: number, name: string | Uint8Array, flags = 0): void {
    this.call(P.P9_TUNLINKAT, (w) => w.u32(dfid).str(bytes(name)).u32(flags));
  }

  readlink(fid: number): string {
    return text(this.call(P.P9_TREADLINK, (w) => w.u32(fid)).str());
  }

  statfs(fid: number): { type: number; bsize: number; blocks: bigint; bfree: bigint; bavail: bigint; files: bigint; ffree: bigint; fsid: bigint; namelen: number } {
    const r = this.call(P.P9_TSTATFS, (w) => w.u32(fid));
    return { type: r.u32(), bsize: r.u32(), blocks: r.u64(), bfree: r.u64(), bavail: r.u64(), files: r.u64(), ffree: r.u64(), fsid: r.u64(), namelen: r.u32() };
  }

  fsync(fid: number, datasync = 0): void {
    this.call(P.P9_TFSYNC, (w) => w.u32(fid).u32(datasync));
  }

  lock(fid: number, type: number, start: bigint, length: bigint, flags = 0): number {
    return this.call(P.P9_TLOCK, (w) => w.u32(fid).u8(type).u32(flags).u64(start).u64(length).u32(42).str(bytes('guest'))).u8();
  }

  getlock(fid: number, type: number, start: bigint, length: bigint): { type: number; start: bigint; length: bigint; procId: number; clientId: string } {
    const r = this.call(P.P9_TGETLOCK, (w) => w.u32(fid).u8(type).u64(start).u64(length).u32(42).str(bytes('guest')));
    return { type: r.u8(), start: r.u64(), length: r.u64(), procId: r.u32(), clientId: text(r.str()) };
  }

  xattrwalk(fid: number, newfid: number, name: string): bigint {
    return this.call(P.P9_TXATTRWALK, (w) => w.u32(fid).u32(newfid).str(bytes(name))).u64();
  }

  xattrcreate(fid: number, name: string, size: number | bigint, flags = 0): void {
    this.call(P.P9_TXATTRCREATE, (w) => w.u32(fid).str(bytes(name)).u64(BigInt(size)).u32(flags));
  }

  /** getxattr as Linux does it: clone, xattrwalk, read, clunk. */
  getxattr(fid: number, name: string): Uint8Array {
    const f = this.fid();
    const size = this.xattrwalk(fid, f, name);
    const data = size > 0n ? this.read(f, 0, Number(size)) : new Uint8Array(0);
    this.clunk(f);
    return data;
  }

  /** setxattr as Linux does it: clone the fid, xattrcreate, write, clunk (the clunk sets it). */
  setxattr(fid: number, name: string, value: Uint8Array, flags = 0): void {
    const f = this.fid();
    this.walk(fid, f, []);
    this.xattrcreate(f, name, value.length, flags);
    if (value.length > 0) this.write(f, 0, value);
    this.clunk(f);
  }

}

export interface GetattrReply {
  valid: bigint; qid: Qid; mode: number; uid: number; gid: number; nlink: bigint; rdev: bigint; size: bigint; blksize: bigint; blocks: bigint;
  atime: { sec: bigint; nsec: bigint }; mtime: { sec: bigint; nsec: bigint }; ctime: { sec: bigint; nsec: bigint }; btime: { sec: bigint; nsec: bigint };
}

export function readQid(r: MessageReader): Qid {
  return { type: r.u8(), version: r.u32(), path: r.u64() };
}

/** A whole T-message: size[4] type[1] tag[2] body. */
export function message(type: number, tag: number, body: (w: ReplyWriter) => void): Uint8Array {
  const w = new ReplyWriter().begin();
  body(w);
  w.finish(type, tag);
  return w.bytes().slice();
}

/** A body run against a fresh harness, closed afterwards. */
export function withHarness<T>(opts: HarnessOptions, fn: (h: P9Harness, t: T) => void, setup?: (share: string, outside: string) => void): (t: T) => void {
  return runWithHarness(() => new P9Harness(opts, setup), fn);
}
