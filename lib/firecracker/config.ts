/**
 * Firecracker compatibility: the resources of Firecracker's JSON config file
 * and REST API (`boot-source`, `drives`, `machine-config`, `network-interfaces`,
 * `vsock`, `entropy`, `logger`, `metrics`, ...), their validation, and their
 * translation to a {@link MicroVMConfig}.
 *
 * Field names and defaults follow Firecracker's published API description
 * (api_server/swagger/firecracker.yaml). Every body is checked strictly: an
 * unknown field, a wrong type or a setting that would change the VM's
 * behaviour in a way flintvm cannot honour (rate limiters, SMT, CPU templates,
 * dirty-page tracking, vhost-user drives, balloon, MMDS) is a
 * {@link FirecrackerConfigError} naming the field, rather than being ignored.
 */
import { ConfigError } from '../errors.js';
import type { DriveConfig, MicroVMConfig, NetConfig, VsockConfig } from '../vm/config.js';

/** A Firecracker resource or field that is malformed or that flintvm cannot honour. */
export class FirecrackerConfigError extends ConfigError {}

/** `boot-source`: the guest kernel, its command line and initrd. */
export interface FcBootSource {
  kernel_image_path: string;
  boot_args?: string;
  initrd_path?: string;
}

/** One `drives` entry (a virtio-blk disk). */
export interface FcDrive {
  drive_id: string;
  path_on_host: string;
  is_root_device: boolean;
  is_read_only?: boolean;
  partuuid?: string;
  cache_type?: 'Unsafe' | 'Writeback';
  io_engine?: 'Sync' | 'Async';
}

/** `machine-config`. */
export interface FcMachineConfig {
  vcpu_count: number;
  mem_size_mib: number;
  smt: boolean;
  track_dirty_pages: boolean;
  cpu_template?: string;
  huge_pages?: string;
}

/** One `network-interfaces` entry (a virtio-net NIC on a host TAP). */
export interface FcNetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac?: string;
}

/** `vsock`. */
export interface FcVsock {
  vsock_id?: string;
  guest_cid: number;
  uds_path: string;
}

/** `logger`: where flintvm's own log lines go in Firecracker mode. */
export interface FcLogger {
  log_path?: string;
  level?: FcLogLevel;
  show_level?: boolean;
  show_log_origin?: boolean;
}

/** Firecracker's log levels. `Debug` and `Trace` also enable flintvm's `flintvm:*` debug output. */
export type FcLogLevel = 'Off' | 'Error' | 'Warning' | 'Info' | 'Debug' | 'Trace';
const LOG_LEVELS: readonly FcLogLevel[] = ['Off', 'Error', 'Warning', 'Info', 'Debug', 'Trace'];

/** The whole pre-boot configuration, as the config file holds it and `GET /vm/config` returns it. */
export interface FirecrackerVmConfig {
  'boot-source'?: FcBootSource;
  drives: FcDrive[];
  'machine-config': FcMachineConfig;
  'network-interfaces': FcNetworkInterface[];
  vsock?: FcVsock;
  entropy?: Record<string, never>;
  logger?: FcLogger;
}

/** Firecracker's default machine: 1 vCPU, 128 MiB, no SMT, no dirty-page tracking. */
export const FC_DEFAULT_MACHINE: Readonly<FcMachineConfig> = { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false };
/** Firecracker's vCPU limit. */
export const FC_MAX_VCPUS = 32;
/** Firecracker's resource ids (drive_id, iface_id): ASCII letters, digits and '_', at most 64 bytes. */
const ID_PATTERN = /^[A-Za-z0-9_]{1,64}$/;
/** virtio-blk serial (GET_ID) length limit. */
const MAX_SERIAL_BYTES = 20;
/** Guest RAM granularity flintvm needs. */
const MEMORY_ALIGN_MIB = 2;

// --- Generic checks ----------------------------------------------------------

type Json = Record<string, unknown>;

function fail(field: string, message: string, value?: unknown): never {
  throw new FirecrackerConfigError(field, message, value);
}

function object(v: unknown, where: string, example: string): Json {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(where, `must be a JSON object like ${example}`, v);
  return v as Json;
}

function onlyKnown(o: Json, where: string, known: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) fail(`${where}.${k}`, `unknown field (${where} accepts ${known.join(', ')})`, o[k]);
  }
}

function str(o: Json, key: string, where: string, required: true): string;
function str(o: Json, key: string, where: string, required: false): string | undefined;
function str(o: Json, key: string, where: string, required: boolean): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (required) fail(`${where}.${key}`, 'is required');
    return undefined;
  }
  if (typeof v !== 'string') fail(`${where}.${key}`, `must be a string, got ${JSON.stringify(v)}`, v);
  if (required && v.length === 0) fail(`${where}.${key}`, 'must not be empty', v);
  return v;
}

function bool(o: Json, key: string, where: string, required: boolean): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (required) fail(`${where}.${key}`, 'is required (true or false)');
    return undefined;
  }
  if (typeof v !== 'boolean') fail(`${where}.${key}`, `must be true or false, got ${JSON.stringify(v)}`, v);
  return v;
}

function uint(o: Json, key: string, where: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${where}.${key}`, `must be a non-negative integer, got ${JSON.stringify(v)}`, v);
  return v;
}

function oneOf<T extends string>(o: Json, key: string, where: string, allowed: readonly T[]): T | undefined {
  const v = str(o, key, where, false);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) fail(`${where}.${key}`, `must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`, v);
  return v as T;
}

function id(o: Json, key: string, where: string): string {
  const v = str(o, key, where, true);
  if (!ID_PATTERN.test(v)) fail(`${where}.${key}`, `must be 1-64 ASCII letters, digits or '_', got ${JSON.stringify(v)}`, v);
  return v;
}

/**
 * A rate limiter is `{ bandwidth?, ops? }` token buckets. flintvm does no I/O
 * rate limiting, so only an absent, null or empty limiter is accepted.
 */
function noRateLimiter(o: Json, key: string, where: string): void {
  const v = o[key];
  if (v === undefined || v === null) return;
  const rl = object(v, `${where}.${key}`, '{ "bandwidth": {...}, "ops": {...} }');
  onlyKnown(rl, `${where}.${key}`, ['bandwidth', 'ops']);
  if ((rl.bandwidth ?? null) !== null || (rl.ops ?? null) !== null) {
    fail(`${where}.${key}`, 'I/O rate limiting is not supported by flintvm; remove the limiter (or leave it empty)', v);
  }
}

// --- Resources ------------------------------------------------------------------

/** Checks a `boot-source` body. `where` names it in errors (`boot-source`, or the API path). */
export function parseBootSource(body: unknown, where = 'boot-source'): FcBootSource {
  const o = object(body, where, '{ "kernel_image_path": "vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1" }');
  onlyKnown(o, where, ['kernel_image_path', 'boot_args', 'initrd_path']);
  const out: FcBootSource = { kernel_image_path: str(o, 'kernel_image_path', where, true) };
  const bootArgs = str(o, 'boot_args', where, false);
  const initrd = str(o, 'initrd_path', where, false);
  if (bootArgs !== undefined) out.boot_args = bootArgs;
  if (initrd !== undefined) out.initrd_path = initrd;
  return out;
}

/** Checks a `drives` entry. `pathId` is the `{drive_id}` of `PUT /drives/{drive_id}`, which must match the body's. */
export function parseDrive(body: unknown, where = 'drive', pathId?: string): FcDrive {
  const o = object(body, where, '{ "drive_id": "rootfs", "path_on_host": "rootfs.ext4", "is_root_device": true, "is_read_only": false }');
  onlyKnown(o, where, ['drive_id', 'path_on_host', 'is_root_device', 'is_read_only', 'partuuid', 'cache_type', 'io_engine', 'rate_limiter', 'socket']);
  const driveId = id(o, 'drive_id', where);
  if (pathId !== undefined && pathId !== driveId) fail(`${where}.drive_id`, `is ${JSON.stringify(driveId)} but the path names drive ${JSON.stringify(pathId)}; they must match`, driveId);
  if (o.socket !== undefined && o.socket !== null) fail(`${where}.socket`, 'vhost-user drives are not supported by flintvm; give path_on_host (a raw image file) instead', o.socket);
  noRateLimiter(o, 'rate_limiter', where);
  const out: FcDrive = {
    drive_id: driveId,
    path_on_host: str(o, 'path_on_host', where, true),
    is_root_device: bool(o, 'is_root_device', where, true)!,
  };
  const ro = bool(o, 'is_read_only', where, false);
  if (ro !== undefined) out.is_read_only = ro;
  const partuuid = str(o, 'partuuid', where, false);
  if (partuuid !== undefined) {
    if (!/^[0-9A-Fa-f-]{1,64}$/.test(partuuid)) fail(`${where}.partuuid`, `must be a partition UUID (hex digits and '-'), got ${JSON.stringify(partuuid)}`, partuuid);
    if (!out.is_root_device) fail(`${where}.partuuid`, 'is only used for the root device (is_root_device: true)', partuuid);
    out.partuuid = partuuid;
  }
  // Both cache types are honoured as "flushes reach the disk" (Writeback); Unsafe only promises less.
  const cache = oneOf(o, 'cache_type', where, ['Unsafe', 'Writeback'] as const);
  if (cache !== undefined) out.cache_type = cache;
  // The I/O engine is an implementation choice with the same guest-visible behaviour.
  const engine = oneOf(o, 'io_engine', where, ['Sync', 'Async'] as const);
  if (engine !== undefined) out.io_engine = engine;
  return out;
}

/**
 * Checks a `machine-config` body. `PUT` replaces the whole config (vcpu_count and mem_size_mib required);
 * `PATCH` (`base` given) updates only the fields present.
 */
export function parseMachineConfig(body: unknown, where = 'machine-config', base?: FcMachineConfig): FcMachineConfig {
  const o = object(body, where, '{ "vcpu_count": 2, "mem_size_mib": 1024 }');
  onlyKnown(o, where, ['vcpu_count', 'mem_size_mib', 'smt', 'track_dirty_pages', 'cpu_template', 'huge_pages']);
  const vcpus = uint(o, 'vcpu_count', where);
  const mem = uint(o, 'mem_size_mib', where);
  if (base === undefined) {
    if (vcpus === undefined) fail(`${where}.vcpu_count`, 'is required');
    if (mem === undefined) fail(`${where}.mem_size_mib`, 'is required');
  }
  const out: FcMachineConfig = { ...(base ?? FC_DEFAULT_MACHINE) };
  if (vcpus !== undefined) {
    if (vcpus < 1 || vcpus > FC_MAX_VCPUS) fail(`${where}.vcpu_count`, `must be 1 to ${FC_MAX_VCPUS}, got ${vcpus}`, vcpus);
    out.vcpu_count = vcpus;
  }
  if (mem !== undefined) {
    if (mem === 0 || mem % MEMORY_ALIGN_MIB !== 0) fail(`${where}.mem_size_mib`, `must be a positive multiple of ${MEMORY_ALIGN_MIB} MiB for flintvm, got ${mem}`, mem);
    out.mem_size_mib = mem;
  }
  const smt = bool(o, 'smt', where, false);
  if (smt === true) fail(`${where}.smt`, 'SMT (two threads per core) is not supported by flintvm; use false', smt);
  const dirty = bool(o, 'track_dirty_pages', where, false);
  if (dirty === true) fail(`${where}.track_dirty_pages`, 'dirty-page tracking is for diff snapshots; flintvm writes full (sparse) snapshots only, so use false', dirty);
  const template = str(o, 'cpu_template', where, false);
  if (template !== undefined && template !== 'None') fail(`${where}.cpu_template`, `CPU templates are not supported by flintvm (the guest sees the host CPU's features); use "None", got ${JSON.stringify(template)}`, template);
  const huge = str(o, 'huge_pages', where, false);
  if (huge !== undefined && huge !== 'None') fail(`${where}.huge_pages`, `huge-page backed guest memory is not supported by flintvm; use "None", got ${JSON.stringify(huge)}`, huge);
  return out;
}

/** Checks a `network-interfaces` entry; `pathId` is the `{iface_id}` of `PUT /network-interfaces/{iface_id}`. */
export function parseNetworkInterface(body: unknown, where = 'network-interface', pathId?: string): FcNetworkInterface {
  const o = object(body, where, '{ "iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00:02" }');
  onlyKnown(o, where, ['iface_id', 'host_dev_name', 'guest_mac', 'rx_rate_limiter', 'tx_rate_limiter']);
  const ifaceId = id(o, 'iface_id', where);
  if (pathId !== undefined && pathId !== ifaceId) fail(`${where}.iface_id`, `is ${JSON.stringify(ifaceId)} but the path names interface ${JSON.stringify(pathId)}; they must match`, ifaceId);
  noRateLimiter(o, 'rx_rate_limiter', where);
  noRateLimiter(o, 'tx_rate_limiter', where);
  const out: FcNetworkInterface = { iface_id: ifaceId, host_dev_name: str(o, 'host_dev_name', where, true) };
  const mac = str(o, 'guest_mac', where, false);
  if (mac !== undefined) {
    if (!/^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$/.test(mac)) fail(`${where}.guest_mac`, `must be a MAC address like 06:00:AC:10:00:02, got ${JSON.stringify(mac)}`, mac);
    out.guest_mac = mac;
  }
  return out;
}

/** Checks a `vsock` body. */
export function parseVsock(body: unknown, where = 'vsock'): FcVsock {
  const o = object(body, where, '{ "guest_cid": 3, "uds_path": "./v.sock" }');
  onlyKnown(o, where, ['vsock_id', 'guest_cid', 'uds_path']);
  const cid = uint(o, 'guest_cid', where);
  if (cid === undefined) fail(`${where}.guest_cid`, 'is required');
  if (cid < 3 || cid > 0xffff_ffff) fail(`${where}.guest_cid`, `must be 3 to 4294967295 (0-2 are reserved), got ${cid}`, cid);
  const out: FcVsock = { guest_cid: cid, uds_path: str(o, 'uds_path', where, true) };
  const vsockId = str(o, 'vsock_id', where, false);
  if (vsockId !== undefined) out.vsock_id = vsockId;
  return out;
}

/** Checks an `entropy` body: a virtio-rng device. A rate limiter is refused. */
export function parseEntropy(body: unknown, where = 'entropy'): Record<string, never> {
  const o = object(body, where, '{}');
  onlyKnown(o, where, ['rate_limiter']);
  noRateLimiter(o, 'rate_limiter', where);
  return {};
}

/** Checks a `logger` body. `module` filtering is refused; `level` is matched without regard to case. */
export function parseLogger(body: unknown, where = 'logger'): FcLogger {
  const o = object(body, where, '{ "log_path": "fc.log", "level": "Info" }');
  onlyKnown(o, where, ['log_path', 'level', 'show_level', 'show_log_origin', 'module']);
  if (o.module !== undefined && o.module !== null) fail(`${where}.module`, 'filtering by module is not supported by flintvm; remove it', o.module);
  const out: FcLogger = {};
  const path = str(o, 'log_path', where, false);
  if (path !== undefined) out.log_path = path;
  const level = str(o, 'level', where, false);
  if (level !== undefined) {
    const match = LOG_LEVELS.find((l) => l.toLowerCase() === level.toLowerCase());
    if (match === undefined) fail(`${where}.level`, `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`, level);
    out.level = match;
  }
  for (const k of ['show_level', 'show_log_origin'] as const) {
    const v = bool(o, k, where, false);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** Resources flintvm refuses, with the reason given to the user. */
export const UNSUPPORTED_RESOURCES: Readonly<Record<string, string>> = {
  metrics: 'Firecracker metrics are not supported by flintvm (use DEBUG=flintvm:* and the logger); remove the metrics section',
  balloon: 'flintvm has no virtio-balloon device; remove the balloon section',
  'mmds-config': 'flintvm has no MMDS (microVM metadata service); remove the mmds-config section',
  'cpu-config': 'custom CPU templates are not supported by flintvm; remove the cpu-config section',
  'serial': 'the serial console is always this process\'s stdin/stdout in flintvm; remove the serial section',
};

const FILE_SECTIONS = ['boot-source', 'drives', 'machine-config', 'network-interfaces', 'vsock', 'entropy', 'logger'] as const;

/** An empty pre-boot configuration (what the API server starts from). */
export function emptyVmConfig(): FirecrackerVmConfig {
  return { drives: [], 'machine-config': { ...FC_DEFAULT_MACHINE }, 'network-interfaces': [] };
}

/** Inserts or replaces a drive by `drive_id` (a replaced drive keeps its place); at most one root device. */
export function upsertDrive(cfg: FirecrackerVmConfig, drive: FcDrive, where = 'drive'): void {
  const other = cfg.drives.find((d) => d.is_root_device && d.drive_id !== drive.drive_id);
  if (drive.is_root_device && other) fail(`${where}.is_root_device`, `drive ${JSON.stringify(other.drive_id)} is already the root device; only one drive can be`, true);
  const i = cfg.drives.findIndex((d) => d.drive_id === drive.drive_id);
  if (i >= 0) cfg.drives[i] = drive;
  else cfg.drives.push(drive);
}

/** Inserts or replaces a network interface by `iface_id`; two interfaces cannot share a TAP or a MAC. */
export function upsertNetworkInterface(cfg: FirecrackerVmConfig, iface: FcNetworkInterface, where = 'network-interface'): void {
  for (const n of cfg['network-interfaces']) {
    if (n.iface_id === iface.iface_id) continue;
    if (n.host_dev_name === iface.host_dev_name) fail(`${where}.host_dev_name`, `${iface.host_dev_name} is already used by interface ${JSON.stringify(n.iface_id)}`, iface.host_dev_name);
    if (iface.guest_mac !== undefined && n.guest_mac?.toLowerCase() === iface.guest_mac.toLowerCase()) {
      fail(`${where}.guest_mac`, `${iface.guest_mac} is already the MAC of interface ${JSON.stringify(n.iface_id)}`, iface.guest_mac);
    }
  }
  const i = cfg['network-interfaces'].findIndex((n) => n.iface_id === iface.iface_id);
  if (i >= 0) cfg['network-interfaces'][i] = iface;
  else cfg['network-interfaces'].push(iface);
}

/**
 * Parses a Firecracker config file (`firecracker --config-file`). Unknown sections and fields are errors;
 * `metrics`, `balloon`, `mmds-config`, `cpu-config` and `serial` are refused with the reason.
 */
export function parseVmConfigFile(json: unknown): FirecrackerVmConfig {
  const o = object(json, 'config file', '{ "boot-source": {...}, "drives": [...], "machine-config": {...} }');
  const cfg = emptyVmConfig();
  for (const [key, value] of Object.entries(o)) {
    if (value === null || value === undefined) continue;
    const refused = UNSUPPORTED_RESOURCES[key];
    if (refused !== undefined) fail(key, refused, value);
    if (!(FILE_SECTIONS as readonly string[]).includes(key)) fail(key, `unknown section (a Firecracker config file has ${FILE_SECTIONS.join(', ')})`, value);
  }
  if (o['boot-source'] == null) fail('boot-source', 'is required: { "kernel_image_path": "...", "boot_args": "..." }');
  cfg['boot-source'] = parseBootSource(o['boot-source']);
  if (o['machine-config'] != null) cfg['machine-config'] = parseMachineConfig(o['machine-config']);
  for (const [section, upsert, parse] of [
    ['drives', upsertDrive, parseDrive],
    ['network-interfaces', upsertNetworkInterface, parseNetworkInterface],
  ] as const) {
    const list = o[section];
    if (list == null) continue;
    if (!Array.isArray(list)) fail(section, 'must be an array', list);
    const seen = new Set<string>();
    list.forEach((entry: unknown, i) => {
      const where = `${section}[${i}]`;
      const item = parse(entry, where);
      const itemId = 'drive_id' in item ? item.drive_id : item.iface_id;
      if (seen.has(itemId)) fail(where, `duplicate id ${JSON.stringify(itemId)}`, itemId);
      seen.add(itemId);
      (upsert as (c: FirecrackerVmConfig, x: typeof item, w: string) => void)(cfg, item, where);
    });
  }
  if (o.vsock != null) cfg.vsock = parseVsock(o.vsock);
  if (o.entropy != null) cfg.entropy = parseEntropy(o.entropy);
  if (o.logger != null) cfg.logger = parseLogger(o.logger);
  return cfg;
}

/**
 * Translates a checked Firecracker configuration to a {@link MicroVMConfig}.
 * `boot_args`, when given, replaces flintvm's default command line (as it
 * replaces Firecracker's); the root drive becomes /dev/vda (Firecracker puts
 * it first too), or `root=PARTUUID=...` with `partuuid`; each drive's
 * `drive_id` is its virtio-blk serial (truncated to 20 bytes); `entropy`
 * adds the virtio-rng device. The MicroVM constructor then checks the files.
 */
export function toMicroVMConfig(cfg: FirecrackerVmConfig): MicroVMConfig {
  const boot = cfg['boot-source'];
  if (boot === undefined) fail('boot-source', 'must be set before the VM starts (PUT /boot-source)');
  const extra: string[] = [];
  const ordered = [...cfg.drives.filter((d) => d.is_root_device), ...cfg.drives.filter((d) => !d.is_root_device)];
  const drives = ordered.map((d): DriveConfig => {
    const readOnly = d.is_read_only ?? false;
    if (d.is_root_device && d.partuuid !== undefined) extra.push(`root=PARTUUID=${d.partuuid}`, readOnly ? 'ro' : 'rw');
    return { path: d.path_on_host, readOnly, root: d.is_root_device && d.partuuid === undefined, serial: Buffer.from(d.drive_id).subarray(0, MAX_SERIAL_BYTES).toString() };
  });
  const net = cfg['network-interfaces'].map((n): NetConfig => ({ tap: n.host_dev_name, ...(n.guest_mac !== undefined ? { mac: n.guest_mac.toLowerCase() } : {}) }));
  const vsock: VsockConfig | undefined = cfg.vsock && { guestCid: cfg.vsock.guest_cid, udsPath: cfg.vsock.uds_path };
  const m = cfg['machine-config'];
  return {
    kernel: boot.kernel_image_path,
    ...(boot.initrd_path !== undefined ? { initrd: boot.initrd_path } : {}),
    ...(boot.boot_args !== undefined ? { cmdline: boot.boot_args } : {}),
    ...(extra.length ? { extraCmdline: extra.join(' ') } : {}),
    memoryMiB: m.mem_size_mib,
    vcpus: m.vcpu_count,
    drives,
    net,
    rng: cfg.entropy !== undefined,
    ...(vsock ? { vsock } : {}),
  };
}

const SIMPLE_FIELDS: Readonly<Record<string, string>> = {
  kernel: 'boot-source.kernel_image_path', initrd: 'boot-source.initrd_path', cmdline: 'boot-source.boot_args',
  extraCmdline: 'boot-source.boot_args', memoryMiB: 'machine-config.mem_size_mib', vcpus: 'machine-config.vcpu_count',
  'vsock.guestCid': 'vsock.guest_cid', 'vsock.udsPath': 'vsock.uds_path', vsock: 'vsock',
};
const DRIVE_FIELDS: Readonly<Record<string, string>> = { path: 'path_on_host', readOnly: 'is_read_only', root: 'is_root_device', serial: 'drive_id' };
const NET_FIELDS: Readonly<Record<string, string>> = { tap: 'host_dev_name', mac: 'guest_mac' };

/**
 * The Firecracker name of a {@link MicroVMConfig} field that {@link toMicroVMConfig} produced from `cfg`
 * (`drives[0].path` -> `drives[rootfs].path_on_host`), so that errors name what the user wrote.
 * Unknown fields are returned unchanged.
 */
export function firecrackerFieldName(cfg: FirecrackerVmConfig, field: string): string {
  const simple = SIMPLE_FIELDS[field];
  if (simple !== undefined) return simple;
  const m = /^(drives|net)\[(\d+)\](?:\.(\w+))?$/.exec(field);
  if (!m) return field;
  const index = Number(m[2]);
  if (m[1] === 'drives') {
    const ordered = [...cfg.drives.filter((d) => d.is_root_device), ...cfg.drives.filter((d) => !d.is_root_device)];
    const d = ordered[index];
    if (!d) return field;
    return `drives[${d.drive_id}]${m[3] ? `.${DRIVE_FIELDS[m[3]] ?? m[3]}` : ''}`;
  }
  const n = cfg['network-interfaces'][index];
  if (!n) return field;
  return `network-interfaces[${n.iface_id}]${m[3] ? `.${NET_FIELDS[m[3]] ?? m[3]}` : ''}`;
}
