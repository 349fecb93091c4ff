/**
 * A virtio-blk device over a real temp image and real host-mapped guest
 * memory (mapGuestMemory, no KVM), driven through the split queue by the
 * driver-side test double (VirtqDriver), as Linux would drive it.
 */
import { mkdtempSync, openSync, closeSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as C from '../../../../../devices/virtio/constants.js';
import type { ActivationContext, FdWatcher } from '../../../../../devices/virtio/device.js';
import { FileBackend, LIBC_FILE_SYSCALLS, type FileSyscalls } from '../../../../../devices/virtio/backends/file.js';
import type { Wakeup } from '../../../../../devices/virtio/backends/wakeup.js';
import type { BlockBackend } from '../../../../../devices/virtio/block/backend.js';
import * as B from '../../../../../devices/virtio/block/constants.js';
import { BlockDevice } from '../../../../../devices/virtio/block/device.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { mapGuestMemory } from '../../../../../lib/memory/host-memory.js';
import type { GuestMemory } from '../../../../../lib/memory/guest-memory.js';
import { VirtqDriver, type DriverBuffer, type UsedElem } from '../../../../helpers/virtq-driver.js';

export const SECTOR = 512;
export const MiB = 1024 * 1024;
/** Guest RAM layout: rings at the bottom, buffers from DATA_BASE up. */
export const GUEST_SIZE = 16 * MiB;
const DESC_ADDR = 0x0;
const AVAIL_ADDR = 0x1000;
const USED_ADDR = 0x2000;
const DATA_BASE = 0x10000;

/** Features a Linux driver would accept of a writable disk. */
export const ALL_FEATURES = C.feature(B.VIRTIO_BLK_F_FLUSH) | C.feature(B.VIRTIO_BLK_F_DISCARD) | C.feature(B.VIRTIO_BLK_F_WRITE_ZEROES)
  | C.feature(B.VIRTIO_BLK_F_BLK_SIZE) | C.feature(B.VIRTIO_BLK_F_SEG_MAX) | C.feature(C.VIRTIO_F_VERSION_1);

export interface HarnessOptions {
  /** Image size in bytes (default 1 MiB), filled with `fill`. */
  sizeBytes?: number;
  fill?: (i: number) => number;
  readOnly?: boolean;
  serial?: string;
  /** Driver-accepted features (default ALL_FEATURES, plus the ring features below). */
  features?: bigint;
  queueSize?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Wraps the real libc syscalls (recording, fault injection). */
  sys?: (real: FileSyscalls) => FileSyscalls;
  /** Replaces the FileBackend altogether. */
  backend?: (fileBackend: BlockBackend) => BlockBackend;
  wakeup?: Wakeup;
  /** The FdWatcher the device gets (default: a fake that records callbacks in `watched`). */
  fds?: FdWatcher;
}

export interface Completion extends UsedElem {
  /** The status byte the device wrote (or the poison value 0xee when it wrote none). */
  status: number;
}

/** A request's buffers, as {bytes, write} pieces; the harness places them in guest memory. */
export interface Piece {
  bytes?: Uint8Array;
  len?: number;
  write?: boolean;
}

const POISON = 0xee;

export class BlkHarness {
  readonly dir = mkdtempSync(join(tmpdir(), 'flintvm-blk-'));
  readonly path = join(this.dir, 'disk.img');
  readonly fd: number;
  readonly memory: GuestMemory;
  readonly driver: VirtqDriver;
  readonly queue: SplitQueue;
  /** The device under test; a snapshot test swaps in the restored one. */
  device: BlockDevice;
  readonly sizeBytes: number;
  signals = 0;
  resets = 0;
  /** Callbacks the device registered on the fake FdWatcher. */
  readonly watched = new Map<number, (events: number) => void>();
  private readonly unmap: () => void;
  private next = DATA_BASE;

  constructor(opts: HarnessOptions = {}) {
    this.sizeBytes = opts.sizeBytes ?? MiB;
    const fill = opts.fill ?? ((i: number) => (i * 7 + (i >> 9)) & 0xff);
    const img = new Uint8Array(this.sizeBytes);
    for (let i = 0; i < img.length; i++) img[i] = fill(i);
    writeFileSync(this.path, img);
    this.fd = openSync(this.path, opts.readOnly ? 'r' : 'r+');
    const host = mapGuestMemory([{ gpa: 0, size: GUEST_SIZE }]);
    this.memory = host.memory;
    this.unmap = host.unmap;
    const eventIdx = opts.eventIdx ?? false;
    const indirect = opts.indirect ?? false;
    this.driver = new VirtqDriver(this.memory, { size: opts.queueSize ?? 256, descAddr: DESC_ADDR, availAddr: AVAIL_ADDR, usedAddr: USED_ADDR, eventIdx, indirect });
    this.queue = new SplitQueue(this.memory, this.driver.config);
    const sys = opts.sys ? opts.sys(LIBC_FILE_SYSCALLS) : LIBC_FILE_SYSCALLS;
    const fileBackend = new FileBackend(this.fd, sys);
    const backend = opts.backend ? opts.backend(fileBackend) : fileBackend;
    this.device = new BlockDevice({ sizeBytes: this.sizeBytes, readOnly: opts.readOnly ?? false, ...(opts.serial !== undefined ? { serial: opts.serial } : {}) }, backend, opts.wakeup);
    let features = opts.features ?? ALL_FEATURES;
    if (eventIdx) features |= C.feature(C.VIRTIO_F_EVENT_IDX);
    if (indirect) features |= C.feature(C.VIRTIO_F_INDIRECT_DESC);
    this.device.activate(this.context(features, [this.queue], opts.fds));
  }

  context(features: bigint, queues: (SplitQueue | null)[] = [this.queue], watcher?: FdWatcher): ActivationContext {
    const fds: FdWatcher = watcher ?? {
      watch: (fd, _events, cb) => void this.watched.set(fd, cb),
      unwatch: (fd) => void this.watched.delete(fd),
    };
    return {
      memory: this.memory,
      queues,
      features,
      signalUsed: () => void this.signals++,
      updateConfig: () => { throw new Error('virtio-blk never updates its config'); },
      fds,
      needsReset: () => void this.resets++,
    };
  }

  /** Guest memory for `len` bytes (16-byte aligned bump allocation). */
  alloc(len: number): number {
    const addr = this.next;
    this.next += Math.ceil(Math.max(len, 1) / 16) * 16 + 16;
    if (this.next > GUEST_SIZE) throw new Error('harness out of guest memory');
    return addr;
  }

  /** Places `pieces` in guest memory and returns them as driver buffers (writable ones poisoned). */
  place(pieces: readonly Piece[]): DriverBuffer[] {
    return pieces.map((p) => {
      const len = p.bytes ? p.bytes.length : p.len ?? 0;
      const addr = this.alloc(len);
      if (p.bytes) this.memory.write(addr, p.bytes);
      else this.memory.fill(addr, len, POISON);
      return { addr, len, write: p.write ?? false };
    });
  }

  /** Adds one chain without kicking. */
  add(bufs: readonly DriverBuffer[], indirect = false): number {
    return this.driver.addChain(bufs, indirect ? { indirect: true, indirectAddr: this.alloc(bufs.length * C.VIRTQ_DESC_SIZE) } : {});
  }

  /** Submits `pieces` as one chain, kicks, notifies the device, and returns the completion. */
  submit(pieces: readonly Piece[], opts: { indirect?: boolean } = {}): Completion & { bufs: DriverBuffer[] } {
    const bufs = this.place(pieces);
    this.add(bufs, opts.indirect);
    this.driver.kick();
    this.device.queueNotify(0);
    const used = this.driver.used();
    if (used.length !== 1) throw new Error(`expected 1 used element, got ${used.length}`);
    const last = [...bufs].reverse().find((b) => b.write && b.len > 0);
    const status = last ? this.memory.readU8(last.addr + last.len - 1) : POISON;
    return { ...used[0]!, status, bufs };
  }

  /** The usual 3-part chain: header, data, status. */
  request(type: number, sector: bigint | number, data: { out?: Uint8Array; inLen?: number } = {}): Completion & { data: Uint8Array } {
    const pieces: Piece[] = [{ bytes: header(type, sector) }];
    if (data.out) pieces.push({ bytes: data.out });
    if (data.inLen !== undefined) pieces.push({ len: data.inLen, write: true });
    pieces.push({ len: 1, write: true });
    const c = this.submit(pieces);
    const inBuf = data.inLen !== undefined ? c.bufs[c.bufs.length - 2]! : null;
    return { ...c, data: inBuf ? this.memory.read(inBuf.addr, inBuf.len) : new Uint8Array(0) };
  }

  read(sector: number | bigint, len: number) {
    return this.request(B.VIRTIO_BLK_T_IN, sector, { inLen: len });
  }

  write(sector: number | bigint, bytes: Uint8Array) {
    return this.request(B.VIRTIO_BLK_T_OUT, sector, { out: bytes });
  }

  fileBytes(): Uint8Array {
    return new Uint8Array(readFileSync(this.path));
  }

  close(): void {
    this.device.dispose();
    closeSync(this.fd);
    this.unmap();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** struct virtio_blk_req header bytes. */
export function header(type: number, sector: bigint | number): Uint8Array {
  const h = new Uint8Array(B.VIRTIO_BLK_REQ_HEADER_SIZE);
  const dv = new DataView(h.buffer);
  dv.setUint32(0, type, true);
  dv.setBigUint64(8, BigInt.asUintN(64, BigInt(sector)), true);
  return h;
}

/** DISCARD / WRITE_ZEROES payload. */
export function ranges(list: readonly { sector: number | bigint; sectors: number; flags?: number }[]): Uint8Array {
  const b = new Uint8Array(list.length * B.VIRTIO_BLK_DISCARD_WZ_SIZE);
  const dv = new DataView(b.buffer);
  list.forEach((r, i) => {
    dv.setBigUint64(i * 16, BigInt(r.sector), true);
    dv.setUint32(i * 16 + 8, r.sectors, true);
    dv.setUint32(i * 16 + 12, r.flags ?? 0, true);
  });
  return b;
}

/** `n` bytes of a recognisable pattern. */
export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return b;
}
