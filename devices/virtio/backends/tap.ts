/**
 * TAP devices for virtio-net: opening one (main thread) and moving frames
 * through it (I/O worker), zero copy.
 *
 * The tap is opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte
 * vnet header (TUNSETVNETHDRSZ): every read and write on the fd is one packet
 * preceded by a struct virtio_net_hdr with num_buffers, exactly the layout of
 * virtio-net buffers (virtio 1.2 §5.1.6). So transmit is one writev straight
 * from the guest's segments, header included, and receive one readv straight
 * into the guest's buffers. The kernel checks the guest's header
 * (virtio_net_hdr_to_skb); TUNSETOFFLOAD says which offloaded packets (partial
 * checksums, TSO) the tap may hand us, per what the guest negotiated.
 *
 * Facts from linux/drivers/net/tun.c this relies on:
 * - a read whose buffers are smaller than the packet copies what fits, drops
 *   the rest, and returns only what it copied (tun_chr_read_iter clamps to
 *   the buffer size): so receive() adds one byte of host scratch after the
 *   guest's buffers, and a read that reaches it was truncated;
 * - the 2 bytes after the 10-byte header are skipped, not written, on read;
 * - a write to a tap that is down fails with EIO (the frame is dropped);
 * - a tap created by TUNSETIFF (not persistent) disappears when its last fd closes;
 * - attaching a second fd to a single-queue tap fails with EBUSY.
 */
import { existsSync } from 'node:fs';
import { ConfigError, errnoName, HostError } from '../../../lib/errors.js';
import { EPOLLERR, EPOLLHUP, EPOLLIN } from '../../../lib/io/epoll.js';
import * as ffi from '../../../lib/kvm/ffi.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { FdWatcher } from '../device.js';
import type { NetBackend, NetOffloads } from '../net/backend.js';
import { VIRTIO_NET_HDR_SIZE } from '../net/constants.js';
import { defaultMac, formatMac, parseMac } from '../net/mac.js';
import type { Segment } from '../queue/types.js';
import { IovecArray, skipEmpty, type IovecQueue, type SegmentCursor } from './iovec.js';
import * as libc from './libc.js';
import { EAGAIN, EBUSY, ENODEV, ENXIO } from '../../../lib/sys.js';
import { libc as sysLibc } from '../../../lib/sys.js';

const lib = sysLibc;
/** readv(fd, iov, iovcnt): bytes read, or -1. */
const readv = lib.func('readv', 'long', ['int', 'void *', 'int']) as (fd: number, iov: Uint8Array, iovcnt: number) => number;
/** writev(fd, iov, iovcnt): bytes written, or -1. */
const writev = lib.func('writev', 'long', ['int', 'void *', 'int']) as (fd: number, iov: Uint8Array, iovcnt: number) => number;

/** The TUN/TAP clone device. */
export const TUN_CLONE_DEVICE = '/dev/net/tun';

// linux/if_tun.h ioctls: _IOW('T', nr, int) = (1 << 30) | (4 << 16) | ('T' << 8) | nr; _IOR has 2 << 30.
export const TUNSETIFF = 0x400454ca; // nr 202
export const TUNSETOFFLOAD = 0x400454d0; // nr 208
export const TUNGETVNETHDRSZ = 0x800454d7; // nr 215
export const TUNSETVNETHDRSZ = 0x400454d8; // nr 216

// linux/if_tun.h TUNSETIFF flags.
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;

// linux/if_tun.h TUNSETOFFLOAD bits: what the reader of the fd can take.
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;

/** Interface names are at most IFNAMSIZ - 1 = 15 bytes (plus the NUL). */
export const IFNAMSIZ = 16;
/** sizeof(struct ifreq) on 64-bit Linux; ifr_flags (short) follows the 16-byte name. */
const IFREQ_SIZE = 40;
const IFR_FLAGS = IFNAMSIZ;
/** open(2) flag (x86-64 and arm64). */
const O_NONBLOCK = 0o4000;
/** Bytes of the overflow iovec: one is enough to tell "it did not fit". */
const OVERFLOW_BYTES = 1;
const OVERFLOW_BUFFER_SIZE = 4096;

/** The TUNSETOFFLOAD bits for a guest's receive offloads (the tap only uses TSO together with CSUM). */
export function tunOffloadFlags(guest: NetOffloads): number {
  if (!guest.csum) return 0;
  let flags = TUN_F_CSUM;
  if (guest.tso4) flags |= TUN_F_TSO4;
  if (guest.tso6) flags |= TUN_F_TSO6;
  if (guest.ecn && (guest.tso4 || guest.tso6)) flags |= TUN_F_TSO_ECN;
  return flags;
}

/** The syscalls TapBackend makes; tests substitute a recording or failing wrapper. */
export interface TapSyscalls {
  readv(fd: number, iov: Uint8Array, iovcnt: number): number;
  writev(fd: number, iov: Uint8Array, iovcnt: number): number;
  /** ioctl(fd, TUNSETOFFLOAD, flags). */
  setOffload(fd: number, flags: number): number;
  /** The errno of the call that just failed. */
  errno(): number;
}

/** The real libc calls. */
export const LIBC_TAP_SYSCALLS: TapSyscalls = {
  readv,
  writev,
  setOffload: (fd, flags) => ffi.ioctlValue(fd, TUNSETOFFLOAD, flags),
  errno: libc.errno,
};

/**
 * A {@link NetBackend} over an open, nonblocking tap fd with a 12-byte vnet
 * header ({@link openTap}). I/O worker only: one instance per device (it owns
 * a reusable iovec array). Does NOT own `fd`: openTap's close() closes it.
 * Works on any fd with packet-per-read/write semantics (tests use a
 * SOCK_SEQPACKET socketpair).
 */
export class TapBackend implements NetBackend {
  private readonly iov = new IovecArray();
  /**
   * Where a packet that overflows the guest's buffers spills (1 byte is
   * used). 4 KiB so V8 keeps its backing store off the moving heap; kept
   * alive, with its address, for the backend's lifetime.
   */
  private readonly overflow = new Uint8Array(OVERFLOW_BUFFER_SIZE);
  private readonly overflowAddress = Number(ffi.addressOf(this.overflow));

  constructor(readonly fd: number, private readonly sys: TapSyscalls = LIBC_TAP_SYSCALLS) {}

  /** One writev of the whole packet. Throws HostError (EIO: the tap is down; EINVAL: the kernel rejected the header). */
  send(packet: readonly Segment[], memory: GuestMemory): void {
    this.fill(packet, memory);
    for (;;) {
      const n = this.sys.writev(this.fd, this.iov.buffer, this.iov.count);
      if (n >= 0) return;
      const e = this.sys.errno();
      if (e !== libc.EINTR) throw new HostError('writev', e, `${this.iov.bytes}-byte packet to tap fd ${this.fd}`);
    }
  }

  /**
   * One readv into the first `count` entries of `buffers` (at most IOV_MAX - 1)
   * plus one overflow byte: the packet's length, or the buffers' size + 1 when
   * it did not fit (truncated); null on EAGAIN. Throws HostError.
   */
  receive(buffers: IovecQueue, count: number): number | null {
    if (count >= libc.IOV_MAX) throw new RangeError(`${count} receive segments leave no iovec for overflow detection`);
    const iov = buffers.withExtra(count, this.overflowAddress, OVERFLOW_BYTES);
    for (;;) {
      const n = this.sys.readv(this.fd, iov, count + 1);
      if (n >= 0) return n;
      const e = this.sys.errno();
      if (e === EAGAIN) return null;
      if (e !== libc.EINTR) throw new HostError('readv', e, `tap fd ${this.fd}`);
    }
  }

  setOffload(guest: NetOffloads): void {
    const flags = tunOffloadFlags(guest);
    if (this.sys.setOffload(this.fd, flags) !== 0) throw new HostError('ioctl(TUNSETOFFLOAD)', this.sys.errno(), `flags 0x${flags.toString(16)} on tap fd ${this.fd}`);
  }

  watch(fds: FdWatcher, onReady: (failed: boolean) => void): void {
    // EPOLLERR/EPOLLHUP come unasked; without EPOLLIN they mean the tap is gone (tun polls EPOLLERR once detached).
    fds.watch(this.fd, EPOLLIN, (events) => onReady((events & EPOLLIN) === 0 && (events & (EPOLLERR | EPOLLHUP)) !== 0));
  }

  unwatch(fds: FdWatcher): void {
    fds.unwatch(this.fd);
  }

  /** Fills the iovec array with every byte of `segments` (the device keeps them within IOV_MAX entries). */
  private fill(segments: readonly Segment[], memory: GuestMemory): void {
    const cursor: SegmentCursor = { index: 0, offset: 0 };
    skipEmpty(segments, cursor);
    this.iov.fill(memory, segments, cursor);
    let total = 0;
    for (const s of segments) total += s.len;
    if (this.iov.bytes !== total) throw new RangeError(`${segments.length} segments do not fit one ${libc.IOV_MAX}-entry iovec array`);
  }
}

/** What the I/O worker needs for one NIC. Structured-cloneable. */
export interface TapParams {
  /** The open tap fd (process-wide number): nonblocking, vnet header of 12 bytes. */
  readonly tapFd: number;
  /** The guest's MAC, `xx:xx:xx:xx:xx:xx` (the user's, or the default derived from the tap name). */
  readonly mac: string;
  /** The tap's interface name as the kernel reports it. */
  readonly name: string;
}

/** An open tap. */
export interface OpenTap {
  readonly params: TapParams;
  /** Closes the fd (a tap openTap created then disappears). Idempotent. Only once no thread uses the fd any more. */
  close(): void;
}

/**
 * Why `name` cannot be an interface name (Linux dev_valid_name, plus no `%`:
 * a name template would create a different tap each time), or null.
 */
export function tapNameProblem(name: unknown): string | null {
  if (typeof name !== 'string' || name.length === 0) return 'must be the name of a TAP interface, e.g. "tap0"';
  if (Buffer.byteLength(name) > IFNAMSIZ - 1) return `'${name}' is ${Buffer.byteLength(name)} bytes; interface names are at most ${IFNAMSIZ - 1}`;
  if (name === '.' || name === '..') return `'${name}' is not a valid interface name`;
  if (/[/:%\s\x00-\x1f\x7f]/.test(name)) return `'${name}' contains a character interface names cannot have ('/', ':', '%', whitespace or control characters)`;
  return null;
}

/**
 * Opens the TAP interface of a NIC (main thread): attaches to `net.tap` if
 * it exists, creates it otherwise (needs CAP_NET_ADMIN; a created tap is not
 * persistent and goes away with the fd). The fd is nonblocking and
 * close-on-exec, with IFF_VNET_HDR, a 12-byte vnet header and no offloads
 * until a guest negotiates them.
 *
 * Throws ConfigError naming `field` (e.g. `net[0]`) and the fix: a bad name
 * (`field.tap`) or MAC (`field.mac`), no /dev/net/tun, no permission, a tap
 * used by another process, an interface of that name that is not a tap.
 * Nothing stays open when it throws.
 *
 * `opts.tunPath` replaces /dev/net/tun (tests).
 */
export function openTap(net: { tap: string; mac?: string | undefined }, field: string, opts: { tunPath?: string } = {}): OpenTap {
  if (net === null || typeof net !== 'object') throw new ConfigError(field, 'must be an object like { tap: "tap0" }', net);
  const name = net.tap;
  const nameProblem = tapNameProblem(name);
  if (nameProblem) throw new ConfigError(`${field}.tap`, nameProblem, name);
  let mac: string;
  if (net.mac === undefined) {
    mac = defaultMac(name);
  } else {
    const parsed = parseMac(net.mac);
    if (typeof parsed === 'string') throw new ConfigError(`${field}.mac`, parsed, net.mac);
    mac = formatMac(parsed);
  }

  const tunPath = opts.tunPath ?? TUN_CLONE_DEVICE;
  const fd = ffi.open(tunPath, ffi.O_RDWR | O_NONBLOCK | ffi.O_CLOEXEC, 0);
  if (fd < 0) throw cloneOpenError(tunPath, ffi.errno(), field);
  try {
    // /sys/class/net lists this network namespace's interfaces (as mounted): only used to word errors.
    const existed = existsSync(`/sys/class/net/${name}`);
    const ifr = new Uint8Array(IFREQ_SIZE);
    ifr.set(Buffer.from(name), 0);
    new DataView(ifr.buffer).setUint16(IFR_FLAGS, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
    if (ffi.ioctlPtr(fd, TUNSETIFF, ifr) !== 0) throw tunsetiffError(name, ffi.errno(), existed, field);
    const nul = ifr.indexOf(0);
    const actual = Buffer.from(ifr.subarray(0, nul < 0 ? IFNAMSIZ : Math.min(nul, IFNAMSIZ))).toString();

    const hdrSize = new Uint8Array(4);
    new DataView(hdrSize.buffer).setInt32(0, VIRTIO_NET_HDR_SIZE, true);
    if (ffi.ioctlPtr(fd, TUNSETVNETHDRSZ, hdrSize) !== 0) {
      const e = ffi.errno();
      throw new ConfigError(field, `tap '${actual}': the kernel refused a ${VIRTIO_NET_HDR_SIZE}-byte vnet header (${errnoName(e)})`, name, new HostError('ioctl(TUNSETVNETHDRSZ)', e));
    }
    // An attached tap keeps the offloads its last user set: start from none, as the guest has negotiated none yet.
    if (ffi.ioctlValue(fd, TUNSETOFFLOAD, 0) !== 0) {
      const e = ffi.errno();
      throw new ConfigError(field, `tap '${actual}': cannot reset its offloads (${errnoName(e)})`, name, new HostError('ioctl(TUNSETOFFLOAD)', e));
    }
    let open = true;
    return {
      params: { tapFd: fd, mac, name: actual },
      close: () => {
        if (open) ffi.close(fd);
        open = false;
      },
    };
  } catch (e) {
    ffi.close(fd);
    throw e;
  }
}

/** The ConfigError for a failed open of the clone device. */
function cloneOpenError(path: string, errno: number, field: string): ConfigError {
  const cause = new HostError('open', errno, path);
  switch (errno) {
    case libc.ENOENT:
      return new ConfigError(field, `${path} does not exist: load the TUN/TAP driver (modprobe tun), or create the device node (mkdir -p /dev/net && mknod ${path} c 10 200)`, path, cause);
    case ENODEV:
    case ENXIO:
      return new ConfigError(field, `${path} has no driver behind it: load the TUN/TAP driver (modprobe tun)`, path, cause);
    case libc.EACCES:
    case libc.EPERM:
      return new ConfigError(field, `permission denied opening ${path}; run as root, or give this user read-write access to it`, path, cause);
    default:
      return new ConfigError(field, `cannot open ${path}: ${errnoName(errno)}`, path, cause);
  }
}

/** The ConfigError for a failed TUNSETIFF on tap `name` (exported for tests: root never sees EPERM). */
export function tunsetiffError(name: string, errno: number, existed: boolean, field: string): ConfigError {
  const cause = new HostError('ioctl(TUNSETIFF)', errno, name);
  const at = `${field}.tap`;
  switch (errno) {
    case libc.EPERM:
      return new ConfigError(at, existed
        ? `not allowed to attach to tap '${name}': it belongs to another user or group; create it for this user (ip tuntap add dev ${name} mode tap user <uid>) or run as root`
        : `creating tap '${name}' needs CAP_NET_ADMIN; run as root, or create it beforehand for this user (ip tuntap add dev ${name} mode tap user <uid>)`, name, cause);
    case EBUSY:
      return new ConfigError(at, `tap '${name}' is already in use by another process (another VM?); give each VM its own tap`, name, cause);
    case libc.EINVAL:
      return new ConfigError(at, existed
        ? `'${name}' exists but is not a single-queue TAP device (a TUN device, a multi-queue tap, or another kind of interface); pick another name`
        : `cannot create tap '${name}': the kernel rejected the name`, name, cause);
    default:
      return new ConfigError(at, `cannot ${existed ? 'attach to' : 'create'} tap '${name}': ${errnoName(errno)}`, name, cause);
  }
}
