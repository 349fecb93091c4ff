/**
 * A virtio-net device over real host-mapped guest memory (mapGuestMemory, no
 * KVM), driven through its two split queues by the driver-side test double
 * (VirtqDriver) as Linux would drive it. The backend is a real TapBackend on
 * a SOCK_SEQPACKET socketpair by default (the test holds the peer end: what
 * the device writes there is what a tap would get), or anything else given.
 *
 * The FdWatcher is a fake that records callbacks; `pump()` plays the epoll
 * loop for the watched backend fd (level-triggered: calls back while readable).
 */
import * as C from '../../../../../devices/virtio/constants.js';
import type { ActivationContext, FdWatcher } from '../../../../../devices/virtio/device.js';
import { TapBackend, LIBC_TAP_SYSCALLS, type TapSyscalls } from '../../../../../devices/virtio/backends/tap.js';
import type { Wakeup } from '../../../../../devices/virtio/backends/wakeup.js';
import type { NetBackend } from '../../../../../devices/virtio/net/backend.js';
import * as N from '../../../../../devices/virtio/net/constants.js';
import { NetDevice, type NetDeviceOptions } from '../../../../../devices/virtio/net/device.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { mapGuestMemory } from '../../../../../lib/memory/host-memory.js';
import type { GuestMemory } from '../../../../../lib/memory/guest-memory.js';
import { EPOLLIN } from '../../../../../lib/io/epoll.js';
import { VirtqDriver, type DriverBuffer, type UsedElem } from '../../../../helpers/virtq-driver.js';
import { waitReadable } from '../../../../helpers/io-fds.js';
import { closeFd, seqpacketPair } from './net-sockets.js';

export const MiB = 1024 * 1024;
const GUEST_SIZE = 16 * MiB;
const RX_RINGS = { descAddr: 0x0, availAddr: 0x1000, usedAddr: 0x2000 };
const TX_RINGS = { descAddr: 0x4000, availAddr: 0x5000, usedAddr: 0x6000 };
const DATA_BASE = 0x10000;
const HDR = N.VIRTIO_NET_HDR_SIZE;

const bit = C.feature;
/** What Linux 6.1's virtio_net accepts of what NetDevice offers (plus VERSION_1). */
export const LINUX_FEATURES = [
  N.VIRTIO_NET_F_CSUM, N.VIRTIO_NET_F_GUEST_CSUM, N.VIRTIO_NET_F_MAC, N.VIRTIO_NET_F_GUEST_TSO4, N.VIRTIO_NET_F_GUEST_TSO6,
  N.VIRTIO_NET_F_GUEST_ECN, N.VIRTIO_NET_F_HOST_TSO4, N.VIRTIO_NET_F_HOST_TSO6, N.VIRTIO_NET_F_HOST_ECN, N.VIRTIO_NET_F_MRG_RXBUF,
  N.VIRTIO_NET_F_STATUS, C.VIRTIO_F_VERSION_1,
].reduce((m, b) => m | bit(b), 0n);
/** The bare minimum: MAC and VERSION_1 (no offloads, no mergeable buffers). */
export const PLAIN_FEATURES = bit(N.VIRTIO_NET_F_MAC) | bit(C.VIRTIO_F_VERSION_1);

export interface NetHarnessOptions {
  /** Driver-accepted features (default LINUX_FEATURES), plus EVENT_IDX/INDIRECT below. */
  features?: bigint;
  eventIdx?: boolean;
  queueSize?: number;
  options?: Partial<NetDeviceOptions>;
  /** Wraps the real syscalls of the socketpair TapBackend. */
  sys?: (real: TapSyscalls) => TapSyscalls;
  /** Replaces the socketpair backend (then `peer` is -1). */
  backend?: NetBackend;
  /** Use this fd as the device's end (e.g. a real tap), instead of a socketpair. */
  deviceFd?: number;
  wakeup?: Wakeup;
}

/** A Wakeup that only counts arms; tests fire it with `fire()`. */
export class FakeWakeup implements Wakeup {
  arms = 0;
  private onWake: (() => void) | null = null;
  watch(_fds: FdWatcher, onWake: () => void): void {
    this.onWake = onWake;
  }
  unwatch(): void {
    this.onWake = null;
  }
  arm(): void {
    this.arms++;
  }
  close(): void {}
  fire(): void {
    this.onWake?.();
  }
}

export class NetHarness {
  readonly memory: GuestMemory;
  readonly rxDriver: VirtqDriver;
  readonly txDriver: VirtqDriver;
  /** The device under test; a snapshot test swaps in the restored one (with its own socketpair). */
  device: NetDevice;
  /** The device's end of the socketpair (or deviceFd). */
  deviceFd: number;
  /** The test's end of the socketpair, -1 when there is none. */
  peer: number;
  /** The queues of the last context() made (rx, tx): a snapshot test saves their positions. */
  queues: (SplitQueue | null)[] = [];
  readonly wakeup: FakeWakeup | Wakeup | undefined;
  /** Callbacks the device registered on the fake FdWatcher. */
  readonly watched = new Map<number, (events: number) => void>();
  /** Every watch() call, in order (fd numbers). */
  readonly watchCalls: number[] = [];
  signals = 0;
  resets = 0;
  readonly configWrites: { offset: number; bytes: Uint8Array }[] = [];
  /** Offload flags set through the syscalls (when the socketpair backend is used). */
  readonly offloadCalls: number[] = [];
  readonly features: bigint;
  private readonly unmap: () => void;
  private next = DATA_BASE;
  /** Buffers of each outstanding rx chain, by head. */
  private readonly rxChains = new Map<number, DriverBuffer[]>();
  private ownsFds: number[] = [];

  constructor(opts: NetHarnessOptions = {}) {
    const host = mapGuestMemory([{ gpa: 0, size: GUEST_SIZE }]);
    this.memory = host.memory;
    this.unmap = host.unmap;
    const eventIdx = opts.eventIdx ?? true;
    const size = opts.queueSize ?? 256;
    this.rxDriver = new VirtqDriver(this.memory, { size, ...RX_RINGS, eventIdx, indirect: true });
    this.txDriver = new VirtqDriver(this.memory, { size, ...TX_RINGS, eventIdx, indirect: true });
    let backend = opts.backend;
    this.peer = -1;
    this.deviceFd = -1;
    if (!backend) {
      if (opts.deviceFd !== undefined) {
        this.deviceFd = opts.deviceFd;
      } else {
        const [a, b] = seqpacketPair();
        this.deviceFd = a;
        this.peer = b;
        this.ownsFds = [a, b];
      }
      const recording: TapSyscalls = { ...LIBC_TAP_SYSCALLS, setOffload: (fd, flags) => {
        this.offloadCalls.push(flags);
        // A socketpair has no TUNSETOFFLOAD; a real tap does.
        return opts.deviceFd !== undefined ? LIBC_TAP_SYSCALLS.setOffload(fd, flags) : 0;
      } };
      backend = new TapBackend(this.deviceFd, opts.sys ? opts.sys(recording) : recording);
    }
    this.wakeup = opts.wakeup ?? new FakeWakeup();
    this.device = new NetDevice({ mac: '02:00:00:00:00:01', ...opts.options }, backend, this.wakeup);
    this.features = (opts.features ?? LINUX_FEATURES) | (eventIdx ? bit(C.VIRTIO_F_EVENT_IDX) : 0n) | bit(C.VIRTIO_F_INDIRECT_DESC);
    this.device.activate(this.context(this.features));
  }

  context(features: bigint, queues?: (SplitQueue | null)[]): ActivationContext {
    const fds: FdWatcher = {
      watch: (fd, _events, cb) => {
        this.watchCalls.push(fd);
        this.watched.set(fd, cb);
      },
      unwatch: (fd) => void this.watched.delete(fd),
    };
    this.queues = queues ?? [new SplitQueue(this.memory, this.rxDriver.config), new SplitQueue(this.memory, this.txDriver.config)];
    return {
      memory: this.memory,
      queues: this.queues,
      features,
      signalUsed: () => void this.signals++,
      updateConfig: (offset, bytes) => void this.configWrites.push({ offset, bytes: bytes.slice() }),
      fds,
      needsReset: () => void this.resets++,
    };
  }

  /** Whether the device watches its backend fd now. */
  get tapWatched(): boolean {
    return this.watched.has(this.deviceFd);
  }

  /** Guest memory for `len` bytes (16-byte aligned bump allocation), filled with `fill`. */
  alloc(len: number, fill = 0xee): number {
    const addr = this.next;
    this.next += Math.ceil(Math.max(len, 1) / 16) * 16 + 16;
    if (this.next > GUEST_SIZE) throw new Error('harness out of guest memory');
    this.memory.fill(addr, len, fill);
    return addr;
  }

  /**
   * Adds one rx chain per entry of `chains` (each entry: its segment sizes),
   * publishes them, and notifies the rx queue unless `notify` is false.
   */
  addRx(chains: readonly (readonly number[])[], opts: { notify?: boolean; indirect?: boolean } = {}): number[] {
    const heads = chains.map((sizes) => {
      const bufs = sizes.map((len) => ({ addr: this.alloc(len), len, write: true }));
      const head = this.rxDriver.addChain(bufs, opts.indirect ? { indirect: true, indirectAddr: this.alloc(16 * bufs.length) } : {});
      this.rxChains.set(head, bufs);
      return head;
    });
    this.rxDriver.kick();
    if (opts.notify ?? true) this.device.queueNotify(N.NET_RX_QUEUE);
    return heads;
  }

  /** `n` rx chains of one `size`-byte buffer each. */
  addRxBuffers(n: number, size: number, opts: { notify?: boolean } = {}): number[] {
    return this.addRx(Array.from({ length: n }, () => [size]), opts);
  }

  /** Plays the epoll loop: calls the backend fd's callback while it is watched and readable (at most `rounds` times). */
  pump(rounds = 1000): number {
    let calls = 0;
    while (calls < rounds) {
      const cb = this.watched.get(this.deviceFd);
      if (!cb || !waitReadable(this.deviceFd, 0)) break;
      cb(EPOLLIN);
      calls++;
    }
    return calls;
  }

  /** Used rx elements since the last call, each with the bytes the device wrote (across the chain's buffers). */
  rxUsed(): (UsedElem & { data: Uint8Array })[] {
    return this.rxDriver.used().map((u) => {
      const bufs = this.rxChains.get(u.id)!;
      this.rxChains.delete(u.id);
      const data = new Uint8Array(u.len);
      let at = 0;
      for (const b of bufs) {
        const n = Math.min(b.len, u.len - at);
        if (n <= 0) break;
        data.set(this.memory.read(b.addr, n), at);
        at += n;
      }
      return { ...u, data };
    });
  }

  /** Places `pieces` (readable segments, or `{len, write}` writable ones) as one tx chain without kicking. */
  addTx(pieces: readonly (Uint8Array | { len: number; write?: boolean })[], opts: { indirect?: boolean } = {}): number {
    const bufs = pieces.map((p) => {
      if (p instanceof Uint8Array) {
        const addr = this.alloc(p.length);
        this.memory.write(addr, p);
        return { addr, len: p.length, write: false };
      }
      return { addr: this.alloc(p.len), len: p.len, write: p.write ?? false };
    });
    return this.txDriver.addChain(bufs, opts.indirect ? { indirect: true, indirectAddr: this.alloc(16 * bufs.length) } : {});
  }

  /** One tx chain of `pieces`, published and notified; returns the used elements that came back. */
  transmit(pieces: readonly (Uint8Array | { len: number; write?: boolean })[], opts: { indirect?: boolean } = {}): UsedElem[] {
    this.addTx(pieces, opts);
    this.txDriver.kick();
    this.device.queueNotify(N.NET_TX_QUEUE);
    return this.txDriver.used();
  }

  close(): void {
    this.device.dispose();
    for (const fd of this.ownsFds) closeFd(fd);
    this.unmap();
  }
}

/** A 12-byte virtio_net_hdr. */
export function vnetHeader(f: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number; numBuffers?: number } = {}): Uint8Array {
  const h = new Uint8Array(HDR);
  const v = new DataView(h.buffer);
  v.setUint8(N.VIRTIO_NET_HDR_FLAGS, f.flags ?? 0);
  v.setUint8(N.VIRTIO_NET_HDR_GSO_TYPE, f.gsoType ?? 0);
  v.setUint16(N.VIRTIO_NET_HDR_HDR_LEN, f.hdrLen ?? 0, true);
  v.setUint16(N.VIRTIO_NET_HDR_GSO_SIZE, f.gsoSize ?? 0, true);
  v.setUint16(N.VIRTIO_NET_HDR_CSUM_START, f.csumStart ?? 0, true);
  v.setUint16(N.VIRTIO_NET_HDR_CSUM_OFFSET, f.csumOffset ?? 0, true);
  v.setUint16(N.VIRTIO_NET_HDR_NUM_BUFFERS, f.numBuffers ?? 0, true);
  return h;
}

/** A local-experimental EtherType (IEEE 802 "Local Experimental Ethertype 1"): test frames are easy to pick out. */
export const TEST_ETHERTYPE = 0x88b5;

/** An Ethernet frame of `len` bytes (>= 14): broadcast destination, `src`, TEST_ETHERTYPE, then a pattern from `seed`. */
export function frame(len: number, seed = 1, src = [0x02, 0, 0, 0, 0, 0x01]): Uint8Array {
  const f = new Uint8Array(len);
  f.fill(0xff, 0, 6);
  f.set(src, 6);
  f[12] = TEST_ETHERTYPE >> 8;
  f[13] = TEST_ETHERTYPE & 0xff;
  for (let i = 14; i < len; i++) f[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return f;
}

/** Header + frame as one packet. */
export function packet(frameBytes: Uint8Array, hdr = vnetHeader()): Uint8Array {
  const p = new Uint8Array(HDR + frameBytes.length);
  p.set(hdr);
  p.set(frameBytes, HDR);
  return p;
}

/** The num_buffers field of a packet's header. */
export function numBuffers(p: Uint8Array): number {
  return p[N.VIRTIO_NET_HDR_NUM_BUFFERS]! | (p[N.VIRTIO_NET_HDR_NUM_BUFFERS + 1]! << 8);
}

/** Splits `bytes` at the given cut sizes (the rest is the last piece). */
export function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  for (const c of cuts) {
    out.push(bytes.slice(at, at + c));
    at += c;
  }
  out.push(bytes.slice(at));
  return out;
}
