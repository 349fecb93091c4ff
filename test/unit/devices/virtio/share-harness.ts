/**
 * What the two shared-directory device harnesses (9p/p9-harness.ts for
 * virtio-9p, fs/fuse-harness.ts for virtio-fs) have in common, below their
 * protocols:
 *
 *   - a temp dir holding `share` (the served directory) and `outside` (a
 *     sibling the guest must never reach, with a `secret` in it), and the
 *     sandboxed HostDir over `share`;
 *   - real host-mapped guest memory (mapGuestMemory, no KVM) and an
 *     ActivationContext that counts resets and used-buffer signals;
 *   - one request chain at a time through a VirtqDriver: the readable message
 *     and a poisoned writable part, each cut into descriptors where asked
 *     (optionally through an indirect table), the notification, the single
 *     used element and the bytes the device wrote back;
 *   - close(), withHarness's try/finally, and host-side helpers on the tree.
 *
 * Encoding requests and decoding replies (9P2000.L T/R-messages, FUSE
 * in/out headers and arg structs) stays in the two harnesses, which extend
 * ShareHarness and keep their own exported APIs.
 */
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { ActivationContext, FdWatcher, VirtioDevice } from '../../../../devices/virtio/device.js';
import { HostDir } from '../../../../devices/virtio/backends/hostdir/index.js';
import { openHostDir, type HostDirHandle } from '../../../../devices/virtio/backends/hostdir/open.js';
import type { SplitQueue } from '../../../../devices/virtio/queue/split-queue.js';
import { mapGuestMemory } from '../../../../lib/memory/host-memory.js';
import type { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import type { DriverBuffer, VirtqDriver } from '../../../helpers/virtq-driver.js';

export const MiB = 1024 * 1024;
/** What a writable buffer holds before the device writes it. */
const POISON = 0xee;

const enc = new TextEncoder();
const dec = new TextDecoder();
export const bytes = (s: string | Uint8Array): Uint8Array => (typeof s === 'string' ? enc.encode(s) : s);
export const text = (b: Uint8Array): string => dec.decode(b);

/** The options both harnesses take (each extends them with its own). */
export interface ShareOptions {
  readOnly?: boolean;
  /** HostDir's limit on open fds. */
  maxFds?: number;
  /** Serve this existing directory instead of a fresh `share` (a second server over one tree: snapshot tests). Not removed by close(). */
  sharePath?: string;
}

/** Fills `share` and `outside` before the device opens the share. */
export type ShareSetup = (share: string, outside: string) => void;

/** Where a harness's request chains live in guest memory (its rings sit below dataBase). */
export interface ShareLayout {
  /** Bytes of guest memory, at GPA 0. */
  guestSize: number;
  /** The first address alloc() hands out. */
  dataBase: number;
  /** alloc() starts again at dataBase once it passes guestSize - reserve: every chain is used up before the next is built. */
  reserve: number;
}

/** How a chain is laid out in descriptors. */
export interface ChainOptions {
  /** Cut the readable part at these offsets (several descriptors). */
  splitOut?: number[];
  /** Cut the writable part at these offsets. */
  splitIn?: number[];
  /** Put the chain in an indirect table (the device must have VIRTIO_F_INDIRECT_DESC). */
  indirect?: boolean;
}

/**
 * The share, the guest memory and the chain plumbing of a shared-directory
 * device harness. A subclass builds its drivers, queues, server and device
 * (`device`) after super(), then activates it with context().
 */
export abstract class ShareHarness<D extends VirtioDevice> {
  readonly dir: string;
  readonly share: string;
  readonly outside: string;
  readonly memory: GuestMemory;
  readonly fs: HostDir;
  readonly handle: HostDirHandle;
  abstract readonly device: D;
  /** needsReset() calls. */
  resets = 0;
  /** signalUsed() calls. */
  signals = 0;
  private readonly unmap: () => void;
  private next: number;

  /** `kind` names the temp dir (flintvm-KIND-…) and the device in errors (virtio-KIND). */
  protected constructor(private readonly kind: string, private readonly layout: ShareLayout, opts: ShareOptions, setup?: ShareSetup) {
    this.dir = mkdtempSync(join(tmpdir(), `flintvm-${kind}-`));
    this.share = opts.sharePath ?? join(this.dir, 'share');
    this.outside = join(this.dir, 'outside');
    if (opts.sharePath === undefined) mkdirSync(this.share);
    mkdirSync(this.outside);
    writeFileSync(join(this.outside, 'secret'), 'TOP-SECRET\n');
    setup?.(this.share, this.outside);
    const host = mapGuestMemory([{ gpa: 0, size: layout.guestSize }]);
    this.memory = host.memory;
    this.unmap = host.unmap;
    this.next = layout.dataBase;
    this.handle = openHostDir(this.share, { readOnly: opts.readOnly ?? false, field: 'shares[0].path' });
    this.fs = new HostDir(this.handle.rootFd, { readOnly: opts.readOnly ?? false, ...(opts.maxFds !== undefined ? { maxFds: opts.maxFds } : {}) });
  }

  /** The context the device is activated with: these queues and features, no fds, counted resets and signals. */
  context(features: bigint, queues: (SplitQueue | null)[]): ActivationContext {
    const fds: FdWatcher = { watch: () => {}, unwatch: () => {} };
    return {
      memory: this.memory, queues, features, fds,
      signalUsed: () => void this.signals++,
      updateConfig: () => { throw new Error(`virtio-${this.kind} never updates its config`); },
      needsReset: () => void this.resets++,
    };
  }

  /** `len` bytes of guest memory for a buffer (64-byte aligned, a 64-byte gap after it). */
  alloc(len: number): number {
    const addr = this.next;
    this.next += Math.ceil(Math.max(len, 1) / 64) * 64 + 64;
    if (this.next > this.layout.guestSize - this.layout.reserve) this.next = this.layout.dataBase;
    return addr;
  }

  /**
   * Offers `msg` (readable) and `replyLen` poisoned bytes (writable) as one
   * chain on `driver`, notifies queue `queue` of the device, and returns the
   * used length and the writable part as the device left it. Throws unless
   * exactly one chain was used.
   */
  protected sendChain(driver: VirtqDriver, queue: number, msg: Uint8Array, replyLen: number, opts: ChainOptions = {}): { len: number; reply: Uint8Array } {
    const out = msg.length > 0 ? this.pieces(msg, opts.splitOut, false) : [];
    const inBufs = replyLen > 0 ? this.pieces(replyLen, opts.splitIn, true) : [];
    const bufs = [...out, ...inBufs];
    if (bufs.length === 0) bufs.push({ addr: this.alloc(1), len: 0 });
    driver.addChain(bufs, opts.indirect ? { indirect: true, indirectAddr: this.alloc(bufs.length * 16) } : {});
    driver.kick();
    this.device.queueNotify(queue);
    const used = driver.used();
    if (used.length !== 1) throw new Error(`expected 1 used element, got ${used.length}`);
    const reply = new Uint8Array(replyLen);
    let at = 0;
    for (const b of inBufs) {
      reply.set(this.memory.read(b.addr, b.len), at);
      at += b.len;
    }
    return { len: used[0]!.len, reply };
  }

  /** Places `data` (or `data` poisoned bytes) in guest memory as buffers cut at `cuts`. */
  private pieces(data: Uint8Array | number, cuts: number[] | undefined, write: boolean): DriverBuffer[] {
    const len = typeof data === 'number' ? data : data.length;
    const points = [0, ...[...new Set(cuts ?? [])].filter((c) => c > 0 && c < len).sort((a, b) => a - b), len];
    const out: DriverBuffer[] = [];
    for (let i = 0; i + 1 < points.length; i++) {
      const n = points[i + 1]! - points[i]!;
      const addr = this.alloc(n);
      if (typeof data === 'number') this.memory.fill(addr, n, POISON);
      else this.memory.write(addr, data.subarray(points[i]!, points[i + 1]!));
      out.push({ addr, len: n, write });
    }
    return out;
  }

  close(): void {
    this.device.dispose();
    this.handle.close();
    this.unmap();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A test body run against the harness `make` builds, closed afterwards (each harness's withHarness). */
export function runWithHarness<H extends { close(): void }, T>(make: () => H, fn: (h: H, t: T) => void): (t: T) => void {
  return (t: T) => {
    const h = make();
    try {
      fn(h, t);
    } finally {
      h.close();
    }
  };
}

/**
 * The errno of `fn`, a call expected to fail with an error of class `kind`
 * (P9Error, FuseError); throws what else it throws, and when it succeeds
 * (`what` names the expected error in that message).
 */
export function errnoOf(fn: () => unknown, kind: new (...args: never[]) => { readonly errno: number }, what: string): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof kind) return e.errno;
    throw e;
  }
  throw new Error(`expected ${what}, the call succeeded`);
}

/** The host tree under `dir`: names, modes, sizes, mtimes, link counts, owners (to assert that nothing changed). */
export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      out[`${rel}${name}`] = `${st.mode}:${st.size}:${st.mtimeMs}:${st.nlink}:${st.uid}:${st.gid}`;
      if (st.isDirectory()) walk(p, `${rel}${name}/`);
    }
  };
  walk(dir, '');
  return out;
}

/** Sets an xattr on a host file through the backend itself (Node has no xattr API). */
export function hostSetxattr(path: string, name: string, value: string): void {
  const dir = openHostDir(dirname(path), { readOnly: false, field: 'x' });
  const fs = new HostDir(dir.rootFd, { readOnly: false });
  try {
    const n = fs.lookup(fs.root, basename(path));
    fs.setxattr(n, name, bytes(value), 0);
    fs.release(n);
  } finally {
    fs.dispose();
    dir.close();
  }
}
