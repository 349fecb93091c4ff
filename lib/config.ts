import { accessSync, constants, statSync } from 'node:fs';
import { totalmem } from 'node:os';
import { ConfigError } from './errors.js';
import { WorkerPool } from './worker-pool.js';
import { IS_ARM64 } from './sys.js';

/** What the guest console is connected to. */
export type ConsoleMode = 'pipe' | 'none';

/** Public configuration of a {@link MicroVM}. */
export interface MicroVMConfig {
  /** Path of the guest kernel: an ELF `vmlinux` or a `bzImage` on x86_64, an `Image` (or `Image.gz`) on arm64. Required. */
  kernel: string;
  /** Path of an initramfs (cpio, optionally compressed). */
  initrd?: string;
  /** Kernel command line. Replaces the default (see `defaultCmdline`); use `extraCmdline` to append instead. */
  cmdline?: string;
  /** Appended to the command line (default or given). */
  extraCmdline?: string;
  /** Guest RAM in MiB: a positive multiple of 2. Default 256. */
  memoryMiB?: number;
  /** Number of vCPUs, 1 to the KVM maximum. Default 1. */
  vcpus?: number;
  /** 'pipe' (default): `vm.console` is a Duplex on the guest's ttyS0. 'none': output is discarded. */
  console?: ConsoleMode;
  /** Boot protocol for an ELF vmlinux on x86_64: 'linux64' (default) or 'pvh'. Ignored on arm64. */
  bootProtocol?: 'linux64' | 'pvh';
  /** virtio-blk disks backed by raw image files, in order: the guest sees /dev/vda, /dev/vdb, … */
  drives?: DriveConfig[];
  /** A virtio-rng device fed by the host's getrandom (the guest's /dev/hwrng). */
  rng?: boolean;
  /** virtio-net NICs on host TAP devices, in order (the guest's eth0, eth1, …). */
  net?: NetConfig[];
  /** A virtio-vsock device in Firecracker's "hybrid" style: guest AF_VSOCK <-> host Unix sockets. */
  vsock?: VsockConfig;
  /** Host directories shared with the guest over virtio-9p or virtio-fs. */
  shares?: ShareConfig[];
  /** Take the VM's vCPU and I/O workers from this pool of ready workers (faster start()); see {@link WorkerPool}. */
  workerPool?: WorkerPool;
}

/** One virtio-net NIC. */
export interface NetConfig {
  /** Name of the host TAP device: attached if it exists, created otherwise (needs CAP_NET_ADMIN). */
  tap: string;
  /** Guest MAC address `xx:xx:xx:xx:xx:xx`. Default: a locally administered address derived from the tap name. */
  mac?: string;
}

/** The vsock device. */
export interface VsockConfig {
  /** The guest's context ID: 3 or more (0-2 are reserved). */
  guestCid: number;
  /**
   * Host Unix socket path. Host-initiated connections: connect to `udsPath`, send `CONNECT <port>\n`.
   * Guest-initiated connections to host port P go to the Unix socket `<udsPath>_P`.
   */
  udsPath: string;
}

/** One shared host directory. */
export interface ShareConfig {
  /** Mount tag the guest uses (`mount -t 9p TAG` / `mount -t virtiofs TAG`): 1-31 bytes for 9p, 1-36 for virtiofs. */
  tag: string;
  /** Host directory to share; nothing outside it is reachable. */
  path: string;
  readOnly?: boolean;
  protocol: '9p' | 'virtiofs';
}

/** One virtio-blk disk. */
export interface DriveConfig {
  /** Raw disk image; its size must be a multiple of 512 bytes. Writable drives are locked (flock) against a second user. */
  path: string;
  /** Expose the disk read-only (VIRTIO_BLK_F_RO); the image is then opened O_RDONLY. */
  readOnly?: boolean;
  /** Boot from this disk: adds `root=/dev/vdX` (and `rw` unless read-only) to the command line. */
  root?: boolean;
  /** Serial number the guest reads with GET_ID (at most 20 bytes). Default: `flintvm<index>`. */
  serial?: string;
}

/** A validated config with every default filled in. */
export interface ResolvedConfig {
  readonly kernel: string;
  readonly initrd: string | undefined;
  readonly cmdline: string | undefined;
  readonly extraCmdline: string | undefined;
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly console: ConsoleMode;
  readonly bootProtocol: 'linux64' | 'pvh';
  readonly drives: readonly Required<DriveConfig>[];
  readonly rng: boolean;
  readonly net: readonly NetConfig[];
  readonly shares: readonly ShareConfig[];
  readonly vsock: VsockConfig | undefined;
  readonly workerPool: WorkerPool | undefined;
}

export const DEFAULT_MEMORY_MIB = 256;
/** Guest RAM granularity: 2 MiB, the page size of the boot page tables and of huge pages. */
export const MEMORY_ALIGN_MIB = 2;
/** x86 COMMAND_LINE_SIZE is 2048 bytes including the NUL. */
export const MAX_CMDLINE_BYTES = 2047;

function readableFile(field: string, path: unknown, what: string): string {
  if (typeof path !== 'string' || path.length === 0) throw new ConfigError(field, `must be the path of ${what}`, path);
  let st;
  try {
    st = statSync(path);
    accessSync(path, constants.R_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    const fix = code === 'ENOENT' ? 'check the path (build the default guest with `npm run guest`)' : 'make it readable by this user';
    throw new ConfigError(field, `cannot read ${path} (${code}): ${fix}`, path, e);
  }
  if (!st.isFile()) throw new ConfigError(field, `${path} is not a regular file`, path);
  if (st.size === 0) throw new ConfigError(field, `${path} is empty`, path);
  return path;
}

/**
 * Checks every field and fills defaults. Throws {@link ConfigError} naming
 * the field and the fix. Does not open /dev/kvm (the vCPU maximum is checked
 * against KVM at start()).
 */
export function resolveConfig(config: MicroVMConfig): ResolvedConfig {
  if (config === null || typeof config !== 'object') throw new ConfigError('config', 'must be an object like { kernel, memoryMiB, vcpus }', config);
  const kernel = readableFile('kernel', config.kernel, IS_ARM64 ? 'an arm64 Image (or Image.gz)' : 'a vmlinux or bzImage');
  const initrd = config.initrd === undefined ? undefined : readableFile('initrd', config.initrd, 'an initramfs');

  const memoryMiB = config.memoryMiB ?? DEFAULT_MEMORY_MIB;
  if (!Number.isInteger(memoryMiB) || memoryMiB <= 0) throw new ConfigError('memoryMiB', `must be a positive integer number of MiB, got ${String(memoryMiB)}`, memoryMiB);
  if (memoryMiB % MEMORY_ALIGN_MIB !== 0) {
    throw new ConfigError('memoryMiB', `must be a multiple of ${MEMORY_ALIGN_MIB} MiB, got ${memoryMiB} (use ${memoryMiB + (MEMORY_ALIGN_MIB - (memoryMiB % MEMORY_ALIGN_MIB))})`, memoryMiB);
  }
  const hostMiB = Math.floor(totalmem() / (1024 * 1024));
  if (memoryMiB > hostMiB) throw new ConfigError('memoryMiB', `${memoryMiB} MiB is more than this host's ${hostMiB} MiB of RAM`, memoryMiB);

  const vcpus = config.vcpus ?? 1;
  if (!Number.isInteger(vcpus) || vcpus < 1) throw new ConfigError('vcpus', `must be an integer >= 1, got ${String(vcpus)}`, vcpus);

  for (const field of ['cmdline', 'extraCmdline'] as const) {
    const v = config[field];
    if (v !== undefined && typeof v !== 'string') throw new ConfigError(field, 'must be a string', v);
    if (v !== undefined && /[\0\n]/.test(v)) throw new ConfigError(field, 'must not contain NUL or newline characters', v);
  }
  // The default command line is the arch's; prepareX86Boot checks the final length against the kernel's limit too.
  const total = [config.cmdline, config.extraCmdline].filter((s) => s !== undefined).join(' ');
  if (Buffer.byteLength(total) > MAX_CMDLINE_BYTES) throw new ConfigError('cmdline', `is ${Buffer.byteLength(total)} bytes; the limit is ${MAX_CMDLINE_BYTES}`, total.length);

  const consoleMode = config.console ?? 'pipe';
  if (consoleMode !== 'pipe' && consoleMode !== 'none') throw new ConfigError('console', `must be 'pipe' or 'none', got ${String(consoleMode)}`, consoleMode);
  const bootProtocol = config.bootProtocol ?? 'linux64';
  if (bootProtocol !== 'linux64' && bootProtocol !== 'pvh') throw new ConfigError('bootProtocol', `must be 'linux64' or 'pvh'`, bootProtocol);

  const drives = resolveDrives(config.drives);
  if (config.rng !== undefined && typeof config.rng !== 'boolean') throw new ConfigError('rng', 'must be true or false', config.rng);

  if (config.workerPool !== undefined && !(config.workerPool instanceof WorkerPool)) {
    throw new ConfigError('workerPool', 'must be a WorkerPool (new WorkerPool({ size })) or left out', config.workerPool);
  }

  return {
    kernel, initrd, cmdline: config.cmdline, extraCmdline: config.extraCmdline, memoryMiB, vcpus, console: consoleMode, bootProtocol,
    drives, rng: config.rng ?? false, net: resolveNet(config.net), shares: resolveShares(config.shares),
    vsock: resolveVsock(config.vsock), workerPool: config.workerPool,
  };
}

/** Largest number of virtio devices flintvm places (the x86 layout has IRQs for 16; arm64 has room for 32). */
export const MAX_VIRTIO_DEVICES = 16;
const MAX_SERIAL_BYTES = 20;

/**
 * Shape checks for shares; the tag's length limit, the directory and openat2
 * support are checked when the share's backend opens it (before KVM is touched).
 */
function resolveShares(shares: unknown): ShareConfig[] {
  if (shares === undefined) return [];
  if (!Array.isArray(shares)) throw new ConfigError('shares', "must be an array of { tag, path, protocol: '9p' | 'virtiofs', readOnly? }", shares);
  const tags = new Set<string>();
  return shares.map((s: unknown, i): ShareConfig => {
    const field = `shares[${i}]`;
    if (s === null || typeof s !== 'object') throw new ConfigError(field, "must be an object like { tag: 'data', path: '/srv/data', protocol: '9p' }", s);
    const share = s as ShareConfig;
    if (share.protocol !== '9p' && share.protocol !== 'virtiofs') throw new ConfigError(`${field}.protocol`, "must be '9p' or 'virtiofs'", share.protocol);
    if (typeof share.tag !== 'string' || share.tag.length === 0) throw new ConfigError(`${field}.tag`, 'must be a non-empty mount tag', share.tag);
    if (typeof share.path !== 'string' || share.path.length === 0) throw new ConfigError(`${field}.path`, 'must be the path of a host directory', share.path);
    if (tags.has(share.tag)) throw new ConfigError(`${field}.tag`, `${share.tag} is already the tag of another share`, share.tag);
    tags.add(share.tag);
    return { ...share };
  });
}

/** Shape checks; the CID range and the socket path are checked when the backend opens (before KVM is touched). */
function resolveVsock(v: unknown): VsockConfig | undefined {
  if (v === undefined) return undefined;
  if (v === null || typeof v !== 'object') throw new ConfigError('vsock', 'must be an object like { guestCid: 3, udsPath: "/tmp/vm.sock" }', v);
  const { guestCid, udsPath } = v as VsockConfig;
  if (!Number.isInteger(guestCid)) throw new ConfigError('vsock.guestCid', 'must be an integer >= 3', guestCid);
  if (typeof udsPath !== 'string' || udsPath.length === 0) throw new ConfigError('vsock.udsPath', 'must be the path of the host Unix socket', udsPath);
  return { guestCid, udsPath };
}

function resolveNet(net: unknown): NetConfig[] {
  if (net === undefined) return [];
  if (!Array.isArray(net)) throw new ConfigError('net', 'must be an array of { tap, mac? }', net);
  const out = net.map((n: unknown, i): NetConfig => {
    const field = `net[${i}]`;
    if (n === null || typeof n !== 'object') throw new ConfigError(field, 'must be an object like { tap: "tap0" }', n);
    const { tap, mac } = n as NetConfig;
    if (typeof tap !== 'string' || tap.length === 0) throw new ConfigError(`${field}.tap`, 'must be the name of a TAP interface, e.g. "tap0"', tap);
    if (mac !== undefined && typeof mac !== 'string') throw new ConfigError(`${field}.mac`, 'must be a MAC address string like 02:00:00:12:34:56', mac);
    return mac === undefined ? { tap } : { tap, mac };
  });
  const taps = new Set<string>();
  for (const [i, n] of out.entries()) {
    if (taps.has(n.tap)) throw new ConfigError(`net[${i}].tap`, `${n.tap} is already used by another NIC`, n.tap);
    taps.add(n.tap);
  }
  return out;
}

function resolveDrives(drives: unknown): Required<DriveConfig>[] {
  if (drives === undefined) return [];
  if (!Array.isArray(drives)) throw new ConfigError('drives', 'must be an array of { path, readOnly?, root? }', drives);
  if (drives.length > MAX_VIRTIO_DEVICES - 1) throw new ConfigError('drives', `at most ${MAX_VIRTIO_DEVICES - 1} drives are supported`, drives.length);
  const out = drives.map((d: unknown, i): Required<DriveConfig> => {
    const field = `drives[${i}]`;
    if (d === null || typeof d !== 'object') throw new ConfigError(field, 'must be an object like { path: "disk.img" }', d);
    const { path, readOnly, root, serial } = d as DriveConfig;
    if (typeof path !== 'string' || path.length === 0) throw new ConfigError(`${field}.path`, 'must be the path of a raw disk image', path);
    for (const [k, v] of [['readOnly', readOnly], ['root', root]] as const) {
      if (v !== undefined && typeof v !== 'boolean') throw new ConfigError(`${field}.${k}`, 'must be true or false', v);
    }
    const s = serial ?? `flintvm${i}`;
    if (typeof s !== 'string' || Buffer.byteLength(s) > MAX_SERIAL_BYTES) throw new ConfigError(`${field}.serial`, `must be a string of at most ${MAX_SERIAL_BYTES} bytes`, serial);
    return { path, readOnly: readOnly ?? false, root: root ?? false, serial: s };
  });
  if (out.filter((d) => d.root).length > 1) throw new ConfigError('drives', 'only one drive can be the root device', out.map((d) => d.root));
  const paths = new Set<string>();
  for (const [i, d] of out.entries()) {
    if (paths.has(d.path)) throw new ConfigError(`drives[${i}].path`, `${d.path} is already attached as another drive`, d.path);
    paths.add(d.path);
  }
  return out;
}
