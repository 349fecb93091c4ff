/**
 * The MicroVM configuration: its schema (the single source of the types below, of the CLI's names for
 * the fields and of the README's config reference) and {@link resolveConfig}, which checks every field,
 * including the files it names, and reports every problem at once in one {@link ConfigError}.
 */
import { accessSync, constants, statSync, type Stats } from 'node:fs';
import { totalmem } from 'node:os';
import { dirname } from 'node:path';
import { ConfigError } from '../errors.js';
import { WorkerPool } from '../worker-pool.js';
import { IS_ARM64, NICE_MAX } from '../sys.js';
import { Kvm } from '../kvm/kvm.js';
import { hostPlatform } from './platform/index.js';
import { VIRTIO_MMIO_SLOT_COUNT as X86_VIRTIO_SLOTS } from '../../arch/x86_64/layout.js';
import { VIRTIO_MMIO_SLOT_COUNT as ARM64_VIRTIO_SLOTS } from '../../arch/arm64/layout.js';
import { VMADDR_CID_ANY, VSOCK_MIN_GUEST_CID, VSOCK_MAX_PORT } from '../../devices/virtio/vsock/constants.js';
import { parseMac } from '../../devices/virtio/net/mac.js';
import { mountTagBytes } from '../../devices/virtio/tag.js';
import { P9_MAX_TAG_BYTES } from '../../devices/virtio/9p/constants.js';
import { FS_TAG_BYTES } from '../../devices/virtio/fs/constants.js';
import {
  bool, custom, describe, displayName, int, list, obj, oneOf, optional, refine, schemaReference, str,
  type CheckContext, type ConfigIssue, type Infer,
} from '../config-schema.js';

export const DEFAULT_MEMORY_MIB = 256;
/**
 * Default of `vcpuNice`: the vCPUs run at the process's own priority. A
 * guest's request to a device (a disk read, a packet) wakes the I/O worker
 * while the vCPU that made it is still running; at equal priority Linux often
 * lets the vCPU run on until the guest idles, so on a busy or single CPU the
 * request waits for that. A positive vcpuNice fixes that (x86_64 test host,
 * 1 CPU: fio 1 MiB sequential reads at queue depth 1 over virtio-blk, 6
 * interleaved guest boots each, 112 MiB/s median at nice 0, 150 at +10), but
 * it also gives the guest less CPU against every other process in the same
 * scheduling group (cgroup or autogroup): with +10, iperf3 from the guest to
 * a server on the same one-CPU host fell from 91 to 5.4 Mbit/s (medians of
 * 3 interleaved boots), the server's process taking the CPU. So it is a knob for I/O-bound guests on a
 * host where they compete with nothing but their own VMM, not the default.
 */
export const DEFAULT_VCPU_NICE = 0;
/** Guest RAM granularity: 2 MiB, the page size of the boot page tables and of huge pages. */
export const MEMORY_ALIGN_MIB = 2;
/** x86 COMMAND_LINE_SIZE is 2048 bytes including the NUL. */
export const MAX_CMDLINE_BYTES = 2047;
/** Largest guest CID: VMADDR_CID_ANY (2^32-1) is reserved. */
export const MAX_GUEST_CID = VMADDR_CID_ANY - 1;
/** Linux IFNAMSIZ is 16 including the NUL. */
export const MAX_IFNAME_BYTES = 15;
/** sun_path holds 108 bytes including the NUL. */
const MAX_SUN_PATH_BYTES = 107;
const MAX_SERIAL_BYTES = 20;

/**
 * Virtio devices that fit this host's layout: one per free IOAPIC pin on x86_64 (17), 32 MMIO slots on arm64.
 * Every drive, NIC, share, the vsock and the rng device take one.
 */
export const MAX_VIRTIO_DEVICES = IS_ARM64 ? ARM64_VIRTIO_SLOTS : X86_VIRTIO_SLOTS;

/** The kernel's 'no such file' and 'no permission' errors, as a fix. */
function fsProblem(e: unknown, what: string): string {
  const code = (e as NodeJS.ErrnoException).code ?? 'error';
  if (code === 'ENOENT') return `${what} does not exist (ENOENT); check the path (relative paths resolve against the current directory)`;
  if (code === 'EACCES') return `${what}: permission denied (EACCES); make it accessible to this user`;
  if (code === 'ENOTDIR') return `${what}: a component of the path is not a directory (ENOTDIR)`;
  return `${what}: cannot access it (${code})`;
}

function statOf(p: string, path: string, ctx: CheckContext): Stats | undefined {
  if (p.includes('\0')) { ctx.issue(path, 'must not contain NUL characters', p); return undefined; }
  try {
    return statSync(p);
  } catch (e) {
    ctx.issue(path, fsProblem(e, p), p, e);
    return undefined;
  }
}

function kindOf(st: Stats): string {
  return st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : st.isSocket() ? 'a socket' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : 'a regular file';
}

function canAccess(p: string, mode: number): NodeJS.ErrnoException | undefined {
  try { accessSync(p, mode); return undefined; } catch (e) { return e as NodeJS.ErrnoException; }
}

/** A readable, non-empty regular file (kernel, initrd). */
function readableFile(p: string, path: string, ctx: CheckContext): boolean {
  if (ctx.skip.has(path)) return true;
  const st = statOf(p, path, ctx);
  if (!st) return false;
  if (!st.isFile()) { ctx.issue(path, `${p} is ${kindOf(st)}, not a regular file`, p); return false; }
  const e = canAccess(p, constants.R_OK);
  if (e) { ctx.issue(path, `cannot read ${p} (${e.code ?? 'error'}): make it readable by this user`, p, e); return false; }
  if (st.size === 0) { ctx.issue(path, `${p} is empty`, p); return false; }
  return true;
}

const nicSpec = obj({ doc: 'A virtio-net NIC on a host TAP device.', example: '{ tap: "tap0" }' }, {
  tap: str({ doc: 'Host TAP device name (at most 15 bytes): attached if it exists, created otherwise (needs CAP_NET_ADMIN).', cli: 'tap', nonEmpty: true }, (v, path, ctx) => {
    const n = Buffer.byteLength(v);
    if (n > MAX_IFNAME_BYTES || /[\s/:]/.test(v) || v === '.' || v === '..') {
      ctx.issue(path, `must be a network interface name of 1 to ${MAX_IFNAME_BYTES} bytes without whitespace, '/' or ':', got ${describe(v)} (${n} bytes)`, v);
      return false;
    }
    return true;
  }),
  mac: optional(str({ doc: 'Guest MAC address xx:xx:xx:xx:xx:xx (unicast). Default: derived from the tap name.', cli: 'mac' }, (v, path, ctx) => {
    const r = parseMac(v);
    if (typeof r === 'string') { ctx.issue(path, `${r}, got ${describe(v)}`, v); return false; }
    return true;
  })),
});

const shareSpec = refine(obj({ doc: 'A host directory shared with the guest.', example: "{ tag: 'data', path: '/srv/data', protocol: '9p' }" }, {
  tag: str({ doc: 'Mount tag the guest uses: 1-31 bytes for 9p, 1-36 for virtiofs.', cli: 'tag', nonEmpty: true }),
  path: str({ doc: 'Host directory to share; nothing outside it is reachable.', cli: 'path', nonEmpty: true }),
  readOnly: optional(bool({ doc: 'Share read-only.', cli: 'ro', default: 'false' })),
  protocol: oneOf({ doc: 'virtio-9p or virtio-fs.', cli: 'proto' }, ['9p', 'virtiofs'] as const),
  cache: optional(oneOf({
    doc: "virtio-fs only. 'auto': the guest caches file data in its page cache. 'never': every file is opened for direct I/O (FOPEN_DIRECT_IO), so each read and write goes to the host as the program made it (up to 1 MiB a request), as 9p does with cache=none; shared writable mmap of a file is then refused.",
    cli: 'cache', default: 'auto',
  }, ['auto', 'never'] as const)),
}), (s, path, ctx) => {
  let ok = true;
  if (s.cache !== undefined && s.protocol !== 'virtiofs') {
    ctx.issue(`${path}.cache`, "applies to virtiofs shares only (a 9p guest chooses its caching when it mounts: mount -t 9p -o cache=...); remove it or use protocol: 'virtiofs'", s.cache);
    ok = false;
  }
  try {
    mountTagBytes(s.tag, s.protocol === '9p' ? P9_MAX_TAG_BYTES : FS_TAG_BYTES);
  } catch (e) {
    ctx.issue(`${path}.tag`, (e as Error).message, s.tag);
    ok = false;
  }
  const st = statOf(s.path, `${path}.path`, ctx);
  if (!st) return false;
  if (!st.isDirectory()) { ctx.issue(`${path}.path`, `${s.path} is ${kindOf(st)}; a share must be a directory`, s.path); return false; }
  const e = canAccess(s.path, constants.R_OK | constants.X_OK);
  if (e) { ctx.issue(`${path}.path`, `cannot read directory ${s.path} (${e.code ?? 'error'})`, s.path, e); return false; }
  return ok;
});

const driveSpec = refine(obj({ doc: 'A virtio-blk disk backed by a raw image or a block device.', example: '{ path: "disk.img" }' }, {
  path: str({ doc: 'Raw disk image (size a multiple of 512) or block device; writable ones are locked against a second user.', cli: 'path', nonEmpty: true }),
  readOnly: optional(bool({ doc: 'Expose the disk read-only (VIRTIO_BLK_F_RO); the image is opened O_RDONLY.', cli: 'ro', default: 'false' })),
  root: optional(bool({ doc: 'Boot from this disk: adds root=/dev/vdX (and rw unless read-only) to the command line.', cli: 'root', default: 'false' })),
  serial: optional(str({ doc: `Serial number the guest reads with GET_ID (at most ${MAX_SERIAL_BYTES} bytes).`, cli: 'serial', default: 'flintvm0, flintvm1, ... by position' }, (v, path, ctx) => {
    if (Buffer.byteLength(v) <= MAX_SERIAL_BYTES) return true;
    ctx.issue(path, `must be at most ${MAX_SERIAL_BYTES} bytes, got ${Buffer.byteLength(v)}`, v);
    return false;
  })),
}), (d, path, ctx) => {
  const p = `${path}.path`;
  const st = statOf(d.path, p, ctx);
  if (!st) return false;
  if (!st.isFile() && !st.isBlockDevice()) { ctx.issue(p, `${d.path} is ${kindOf(st)}; give the path of a raw disk image file or a block device`, d.path); return false; }
  const e = canAccess(d.path, constants.R_OK | (d.readOnly ? 0 : constants.W_OK));
  if (e) {
    const fix = d.readOnly ? 'make it readable by this user' : `make it writable by this user, or make the drive read-only (${ctx.cli ? 'ro' : 'readOnly: true'})`;
    ctx.issue(p, `cannot open ${d.path} ${d.readOnly ? 'for reading' : 'for writing'} (${e.code ?? 'error'}): ${fix}`, d.path, e);
    return false;
  }
  return true;
});

const vsockSpec = refine(obj({ doc: 'A virtio-vsock device: guest AF_VSOCK to and from host Unix sockets (Firecracker\'s hybrid style).', example: '{ guestCid: 3, udsPath: "/tmp/vm.sock" }' }, {
  guestCid: int({ doc: "The guest's context ID (0, 1 and 2 are reserved; 2 is the host).", cli: 'cid', min: VSOCK_MIN_GUEST_CID, max: MAX_GUEST_CID }),
  udsPath: str({ doc: 'Host Unix socket: host clients connect and send "CONNECT PORT"; guest connections to host port P go to udsPath_P.', cli: 'uds', nonEmpty: true }),
}), (v, path, ctx) => {
  const p = `${path}.udsPath`;
  const room = MAX_SUN_PATH_BYTES - 1 - String(VSOCK_MAX_PORT).length;
  if (Buffer.byteLength(v.udsPath) > room) { ctx.issue(p, `is ${Buffer.byteLength(v.udsPath)} bytes; at most ${room} fit a Unix socket address with the _<port> suffix`, v.udsPath); return false; }
  const st = statOf(dirname(v.udsPath), p, ctx);
  if (st && !st.isDirectory()) { ctx.issue(p, `${dirname(v.udsPath)} is not a directory`, v.udsPath); return false; }
  return st !== undefined;
});

const cmdlineCheck = (v: string, path: string, ctx: CheckContext): boolean => {
  if (!/[\0\n]/.test(v)) return true;
  ctx.issue(path, 'must not contain NUL or newline characters', v);
  return false;
};

/** The schema of {@link MicroVMConfig}. */
export const microVMConfigSchema = obj({ doc: 'MicroVM configuration.', example: '{ kernel, memoryMiB, vcpus }' }, {
  kernel: refine(str({ doc: 'The guest kernel file path: an ELF vmlinux or a bzImage on x86_64, an Image (or Image.gz) on arm64.', cli: '--kernel', nonEmpty: true, what: 'the path of a kernel image' }), (v, p, ctx) => readableFile(v, p, ctx)),
  initrd: optional(refine(str({ doc: 'An initramfs file path (cpio, optionally compressed).', cli: '--initrd', nonEmpty: true, what: 'the path of an initramfs' }), (v, p, ctx) => readableFile(v, p, ctx))),
  cmdline: optional(str({ doc: 'Kernel command line; replaces the default (extraCmdline, --append, appends instead).', cli: '--cmdline' }, cmdlineCheck)),
  extraCmdline: optional(str({ doc: 'Appended to the command line (default or given).', cli: '--append' }, cmdlineCheck)),
  memoryMiB: optional(int({ doc: 'Guest RAM in MiB, at most the host\'s RAM.', cli: '--mem', min: MEMORY_ALIGN_MIB, unit: 'MiB', multipleOf: MEMORY_ALIGN_MIB, default: String(DEFAULT_MEMORY_MIB) })),
  vcpus: optional(int({ doc: 'Number of vCPUs, up to KVM_CAP_MAX_VCPUS (or the layout\'s limit when /dev/kvm is absent).', cli: '--cpus', min: 1, default: '1' })),
  vcpuNice: optional(int({
    doc: "How many nice steps below the process each vCPU thread runs (0 to 19; 0: the process's own priority). The I/O worker, which a guest's request wakes, then gets the CPU before the vCPU that made the request instead of after the guest goes idle; but the guest also gets less CPU against every other process in the same cgroup or autogroup.",
    cli: '--vcpu-nice', min: 0, max: NICE_MAX, default: String(DEFAULT_VCPU_NICE),
  })),
  console: optional(oneOf({ doc: "'pipe': vm.console is a Duplex on the guest's serial console; 'none': output is discarded.", default: "'pipe'" }, ['pipe', 'none'] as const)),
  bootProtocol: optional(oneOf({ doc: 'x86_64 ELF vmlinux boot protocol; ignored on arm64.', cli: '--pvh', default: "'linux64'" }, ['linux64', 'pvh'] as const)),
  drives: optional(list({ doc: 'virtio-blk disks, in order: the guest sees /dev/vda, /dev/vdb, ...', cli: '--drive' }, driveSpec)),
  rng: optional(bool({ doc: "A virtio-rng device fed by the host's getrandom (the guest's /dev/hwrng).", cli: '--rng', default: 'false' })),
  net: optional(list({ doc: "virtio-net NICs on host TAP devices, in order (the guest's eth0, eth1, ...).", cli: '--net' }, nicSpec)),
  vsock: optional(vsockSpec),
  shares: optional(list({ doc: 'Host directories shared over virtio-9p or virtio-fs.', cli: '--share' }, shareSpec)),
  workerPool: optional(custom<WorkerPool>('WorkerPool', { doc: "Take the VM's vCPU and I/O workers from this pool of ready workers (faster start())." }, (v, path, ctx) => {
    if (v instanceof WorkerPool) return v;
    ctx.issue(path, `must be a WorkerPool (new WorkerPool({ size })) or left out, got ${describe(v)}`, v);
    return undefined;
  })),
});
// The vsock spec's CLI name and docs (refine keeps the object's).
Object.assign(microVMConfigSchema.fields!.vsock!, { cli: '--vsock' });

/** Public configuration of a {@link MicroVM}; see the README's configuration reference (generated from the schema). */
export type MicroVMConfig = Infer<typeof microVMConfigSchema>;
/** One virtio-blk disk. */
export type DriveConfig = Infer<typeof driveSpec>;
/** One virtio-net NIC. */
export type NetConfig = Infer<typeof nicSpec>;
/** One shared host directory. */
export type ShareConfig = Infer<typeof shareSpec>;
/** The vsock device. */
export type VsockConfig = Infer<typeof vsockSpec>;
/** What the guest console is connected to. */
export type ConsoleMode = NonNullable<MicroVMConfig['console']>;

/** A validated config with every default filled in. */
export interface ResolvedConfig {
  readonly kernel: string;
  readonly initrd: string | undefined;
  readonly cmdline: string | undefined;
  readonly extraCmdline: string | undefined;
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly vcpuNice: number;
  readonly console: ConsoleMode;
  readonly bootProtocol: 'linux64' | 'pvh';
  readonly drives: readonly Required<DriveConfig>[];
  readonly rng: boolean;
  readonly net: readonly NetConfig[];
  readonly shares: readonly ShareConfig[];
  readonly vsock: VsockConfig | undefined;
  readonly workerPool: WorkerPool | undefined;
}

/** Options of {@link resolveConfig}. */
export interface ResolveOptions {
  /** Name fields as the CLI does (`--mem`, `--drive #2 ro`) in messages. */
  readonly cli?: boolean;
  /** Field paths whose files are not checked (e.g. `kernel` while the default guest is still to be built). */
  readonly skip?: readonly string[];
}

/**
 * The most vCPUs a VM may have here: KVM_CAP_MAX_VCPUS when /dev/kvm can be opened, capped by the
 * platform's layout; the layout's limit alone otherwise (start() checks KVM's then).
 */
export function maxVcpus(): number {
  const layoutMax = hostPlatform().maxVcpus;
  let kvm: Kvm;
  try { kvm = Kvm.open(); } catch { return layoutMax; }
  try { return Math.min(kvm.maxVcpus(), layoutMax); } catch { return layoutMax; } finally { kvm.close(); }
}

/**
 * Checks every field (types, ranges, the files it names) and fills the defaults. Throws one
 * {@link ConfigError} listing every problem, each naming the field and the fix.
 */
export function resolveConfig(config: MicroVMConfig, opts: ResolveOptions = {}): ResolvedConfig {
  const issues: ConfigIssue[] = [];
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError('config', `must be an object like { kernel, memoryMiB, vcpus }, got ${describe(config)}`, config);
  }
  const ctx: CheckContext & { cli: boolean } = {
    issue: (path, message, value, cause) => { issues.push({ path, message, value, cause }); },
    skip: new Set(opts.skip ?? []),
    cli: opts.cli ?? false,
  };
  const c = microVMConfigSchema.check(config, '', ctx);
  crossChecks(config, ctx);
  if (issues.length) throw ConfigError.fromProblems(issues.map((i) => ({ ...i, field: displayName(microVMConfigSchema, i.path, ctx.cli) })));
  const r = c!;
  return {
    kernel: r.kernel, initrd: r.initrd, cmdline: r.cmdline, extraCmdline: r.extraCmdline, memoryMiB: r.memoryMiB ?? DEFAULT_MEMORY_MIB,
    vcpus: r.vcpus ?? 1, vcpuNice: r.vcpuNice ?? DEFAULT_VCPU_NICE, console: r.console ?? 'pipe', bootProtocol: r.bootProtocol ?? 'linux64',
    drives: (r.drives ?? []).map((d, i) => ({ path: d.path, readOnly: d.readOnly ?? false, root: d.root ?? false, serial: d.serial ?? `flintvm${i}` })),
    rng: r.rng ?? false, net: (r.net ?? []).map((n) => ({ ...n })), shares: (r.shares ?? []).map((s) => ({ ...s })),
    vsock: r.vsock ? { ...r.vsock } : undefined, workerPool: r.workerPool,
  };
}

/**
 * Checks between fields and against the host: RAM, vCPUs, device count, duplicates, command-line length.
 * Runs on the raw config (each value only where its type is right) so they are reported with the other problems.
 */
function crossChecks(config: MicroVMConfig, ctx: CheckContext): void {
  const c = config as Record<string, unknown>;
  const arr = (k: string): Record<string, unknown>[] => (Array.isArray(c[k]) ? (c[k] as unknown[]).filter((x): x is Record<string, unknown> => x !== null && typeof x === 'object') : []);
  const hostMiB = Math.floor(totalmem() / (1024 * 1024));
  if (typeof c.memoryMiB === 'number' && c.memoryMiB > hostMiB) ctx.issue('memoryMiB', `${c.memoryMiB} MiB is more than this host's ${hostMiB} MiB of RAM`, c.memoryMiB);
  if (typeof c.vcpus === 'number' && Number.isInteger(c.vcpus) && c.vcpus > 1) {
    const max = maxVcpus();
    if (c.vcpus > max) ctx.issue('vcpus', `${c.vcpus} is more than this host's maximum of ${max} vCPUs`, c.vcpus);
  }
  const drives = arr('drives');
  const shares = arr('shares');
  const net = arr('net');
  const devices = drives.length + net.length + shares.length + (c.vsock !== undefined ? 1 : 0) + (c.rng === true ? 1 : 0);
  if (devices > MAX_VIRTIO_DEVICES) {
    ctx.issue(shares.length ? 'shares' : drives.length ? 'drives' : 'net',
      `${devices} virtio devices asked for (drives, NICs, shares, vsock and rng together); at most ${MAX_VIRTIO_DEVICES} fit the ${IS_ARM64 ? 'arm64' : 'x86_64'} layout`, devices);
  }
  const total = [c.cmdline, c.extraCmdline].filter((s): s is string => typeof s === 'string').join(' ');
  if (Buffer.byteLength(total) > MAX_CMDLINE_BYTES) ctx.issue('cmdline', `is ${Buffer.byteLength(total)} bytes; the limit is ${MAX_CMDLINE_BYTES}`, total.length);
  if (drives.filter((d) => d.root === true).length > 1) ctx.issue('drives', 'only one drive can be the root device', drives.map((d) => d.root ?? false));
  const dup = (items: Record<string, unknown>[], key: string, base: string, what: string) => {
    const seen = new Set<unknown>();
    items.forEach((it, i) => {
      if (typeof it[key] !== 'string') return;
      if (seen.has(it[key])) ctx.issue(`${base}[${i}].${key}`, `${String(it[key])} is already ${what}`, it[key]);
      seen.add(it[key]);
    });
  };
  dup(drives, 'path', 'drives', 'attached as another drive');
  dup(net, 'tap', 'net', 'used by another NIC');
  dup(shares, 'tag', 'shares', 'the tag of another share');
}

/** The configuration reference as Markdown table rows (the README's is generated from it; a test keeps them equal). */
export function configReference(): string {
  return ['| Field | CLI | Type | Default | Meaning |', '|---|---|---|---|---|', ...schemaReference(microVMConfigSchema)].join('\n');
}
