/**
 * The snapshot directory: what `MicroVM.snapshot(dir)` writes and
 * `MicroVM.restore(dir)` reads.
 *
 * ```
 * dir/state.json   { format: 'flintvm-snapshot', version, flintvm, arch, createdAt,
 *                    config, memory: { file, size, written }, machine }
 * dir/memory       guest RAM, the layout's regions back to back; sparse (holes read as zeros)
 * ```
 *
 * `config` is the VM's resolved config (paths made absolute; no worker
 * pool), `machine` the KVM, bus-device and virtio state (lib/vm/builder.ts
 * MachineSnapshot). Both files are written under temporary names and renamed
 * into place, state.json last, so a directory with a state.json holds a
 * whole snapshot. Everything read back is checked before it reaches KVM.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, constants as fsc } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, SnapshotError } from '../errors.js';
import { hostArch, type HostArch } from '../sys.js';
import type { ConsoleMode, MicroVMConfig, ResolvedConfig } from './config.js';
import type { MachineSnapshot } from './builder.js';
import type { SavedMemoryStats } from '../memory/host-memory.js';
import type { WorkerPool } from '../worker-pool.js';

/** The `format` field of state.json. */
export const SNAPSHOT_FORMAT = 'flintvm-snapshot';
/** The format version this flintvm writes and the only one it reads; bump on any incompatible change. */
export const SNAPSHOT_VERSION = 1;
export const STATE_FILE = 'state.json';
export const MEMORY_FILE = 'memory';
/** A state.json larger than this is not one flintvm wrote (it is a few hundred KiB with many vCPUs). */
const MAX_STATE_BYTES = 64 * 1024 * 1024;

/** The config a snapshot keeps: the resolved config without the (process-local) worker pool. */
export type SnapshotConfig = Omit<ResolvedConfig, 'workerPool'>;

/** state.json. */
export interface SnapshotFile {
  readonly format: typeof SNAPSHOT_FORMAT;
  readonly version: number;
  /** The flintvm version that wrote it (information; `version` decides compatibility). */
  readonly flintvm: string;
  readonly arch: HostArch;
  readonly createdAt: string;
  readonly config: SnapshotConfig;
  readonly memory: { readonly file: string } & SavedMemoryStats;
  readonly machine: MachineSnapshot;
}

/**
 * Host resources a restored VM may take instead of the snapshot's, because
 * two live VMs cannot share them (a tap, a vsock socket path, a writable
 * disk) or because the caller wants another: each entry replaces fields of
 * the device at that index.
 */
export interface RestoreOverrides {
  /** Per drive, in config order: another image, e.g. a copy of the disk for a clone (`null` keeps the saved one). */
  readonly drives?: readonly ({ readonly path: string } | null | undefined)[];
  /**
   * Per NIC: another tap device and/or MAC. The new MAC is what the device's
   * config space shows; a running Linux driver keeps the MAC it read at probe.
   */
  readonly net?: readonly ({ readonly tap?: string; readonly mac?: string } | null | undefined)[];
  /** The vsock device's host socket path and/or guest CID (the guest re-reads its CID on the transport reset sent at restore). */
  readonly vsock?: { readonly udsPath?: string; readonly guestCid?: number };
  readonly console?: ConsoleMode;
  /** Take the restored VM's workers from this pool. */
  readonly workerPool?: WorkerPool;
}

/** The config to save: absolute paths (a restore may run elsewhere), no worker pool. */
export function snapshotConfig(cfg: ResolvedConfig): SnapshotConfig {
  const { workerPool: _pool, ...rest } = cfg;
  return {
    ...rest,
    kernel: resolve(cfg.kernel),
    initrd: cfg.initrd ? resolve(cfg.initrd) : undefined,
    drives: cfg.drives.map((d) => ({ ...d, path: resolve(d.path) })),
    shares: cfg.shares.map((s) => ({ ...s, path: resolve(s.path) })),
    vsock: cfg.vsock ? { ...cfg.vsock, udsPath: resolve(cfg.vsock.udsPath) } : undefined,
  };
}

/**
 * The config of a restored VM: the snapshot's, with `overrides` applied.
 * Throws ConfigError for an override of a device the snapshot does not have.
 * The result is validated again by the MicroVM (files, taps, sockets).
 */
export function restoredConfig(saved: SnapshotConfig, overrides: RestoreOverrides = {}): MicroVMConfig {
  const each = <T extends object, O extends object>(key: string, list: readonly T[], ov: readonly (O | null | undefined)[] | undefined): T[] => {
    if (ov !== undefined && !Array.isArray(ov)) throw new ConfigError(`overrides.${key}`, 'must be an array (one entry per device, null to keep one)', ov);
    if (ov && ov.length > list.length) throw new ConfigError(`overrides.${key}[${list.length}]`, `the snapshot has ${list.length} ${key}; an override can only change one of them`, ov.length);
    return list.map((item, i) => ({ ...item, ...(ov?.[i] ?? {}) }));
  };
  if (overrides.vsock && !saved.vsock) throw new ConfigError('overrides.vsock', 'the snapshot has no vsock device', overrides.vsock);
  const cfg: Record<string, unknown> = {
    kernel: saved.kernel, memoryMiB: saved.memoryMiB, vcpus: saved.vcpus, console: overrides.console ?? saved.console,
    bootProtocol: saved.bootProtocol, rng: saved.rng,
    drives: each('drives', saved.drives, overrides.drives),
    net: each('net', saved.net, overrides.net),
    shares: saved.shares.map((s) => ({ ...s })),
  };
  if (saved.initrd !== undefined) cfg.initrd = saved.initrd;
  // Snapshots from before vcpuNice existed get today's default.
  if (saved.vcpuNice !== undefined) cfg.vcpuNice = saved.vcpuNice;
  if (saved.cmdline !== undefined) cfg.cmdline = saved.cmdline;
  if (saved.extraCmdline !== undefined) cfg.extraCmdline = saved.extraCmdline;
  if (saved.vsock) cfg.vsock = { ...saved.vsock, ...(overrides.vsock ?? {}) };
  if (overrides.workerPool) cfg.workerPool = overrides.workerPool;
  return cfg as MicroVMConfig;
}

/** Makes `dir` (or checks that it holds nothing but an older snapshot's files) for a new snapshot. */
function prepareDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new SnapshotError(`cannot create the snapshot directory ${dir}: ${(e as Error).message}`, { cause: e });
  }
  const ours = new Set([STATE_FILE, MEMORY_FILE, `${STATE_FILE}.tmp`, `${MEMORY_FILE}.tmp`]);
  const other = readdirSync(dir).filter((f) => !ours.has(f));
  if (other.length) throw new SnapshotError(`${dir} is not empty (${other.slice(0, 3).join(', ')}${other.length > 3 ? ', ...' : ''}); give a new or empty directory, or an older snapshot's`);
}

/**
 * Where a snapshot lives: a directory (`dir/state.json` + `dir/memory`), or
 * two files of the caller's choosing (Firecracker's API names them apart).
 */
export type SnapshotLocation = string | { readonly statePath: string; readonly memoryPath: string };

function paths(where: SnapshotLocation): { statePath: string; memoryPath: string; dir: string | null } {
  return typeof where === 'string'
    ? { statePath: join(where, STATE_FILE), memoryPath: join(where, MEMORY_FILE), dir: where }
    : { ...where, dir: null };
}

/**
 * Writes a snapshot to `where`: `capture(fd)` writes guest RAM into the
 * open memory file and returns the rest, which becomes the state file. On
 * any failure the temporary files are removed and an older snapshot there,
 * if any, is left as it was.
 */
export async function writeSnapshot(
  where: SnapshotLocation, cfg: ResolvedConfig, version: string,
  capture: (memoryFd: number) => Promise<{ machine: MachineSnapshot; memory: SavedMemoryStats }>,
): Promise<SnapshotFile> {
  const { statePath, memoryPath, dir } = paths(where);
  if (dir !== null) prepareDir(dir);
  if (resolve(statePath) === resolve(memoryPath)) throw new SnapshotError(`the state and memory files must differ (both are ${statePath})`);
  const memTmp = `${memoryPath}.tmp`;
  const stateTmp = `${statePath}.tmp`;
  let fd = -1;
  try {
    try {
      fd = openSync(memTmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
    } catch (e) {
      throw new SnapshotError(`cannot create the memory file ${memTmp} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
    }
    const { machine, memory } = await capture(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    const file: SnapshotFile = {
      format: SNAPSHOT_FORMAT, version: SNAPSHOT_VERSION, flintvm: version, arch: hostArch(), createdAt: new Date().toISOString(),
      config: snapshotConfig(cfg), memory: { file: dir !== null ? MEMORY_FILE : resolve(memoryPath), ...memory }, machine,
    };
    writeFileSync(stateTmp, JSON.stringify(file), { mode: 0o600 });
    // The memory first: a state file always names a complete memory file.
    renameSync(memTmp, memoryPath);
    renameSync(stateTmp, statePath);
    return file;
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    rmSync(memTmp, { force: true });
    rmSync(stateTmp, { force: true });
    throw e;
  }
}

/** A snapshot read back: its state and an open fd of its memory file (the caller closes it). */
export interface LoadedSnapshot {
  readonly file: SnapshotFile;
  readonly memoryFd: number;
  readonly memoryWhat: string;
}

/**
 * Reads `dir`'s state.json and opens its memory file. Checks what decides
 * whether it can be restored here at all: the format, its version, the
 * architecture, and the memory file's size (the deeper checks happen while
 * building: every KVM and device field). Throws SnapshotError.
 */
export function readSnapshot(where: SnapshotLocation): LoadedSnapshot {
  const { statePath, memoryPath, dir: inDir } = paths(where);
  const dir = inDir ?? statePath;
  let text: string;
  try {
    text = readFileSync(statePath, 'utf8');
  } catch (e) {
    throw new SnapshotError(`${dir} is not a flintvm snapshot: cannot read ${statePath} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  if (text.length > MAX_STATE_BYTES) throw new SnapshotError(`${statePath} is ${text.length} bytes, more than a flintvm snapshot's state can be`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new SnapshotError(`${statePath} is not valid JSON (${(e as Error).message}): the snapshot is damaged`, { cause: e });
  }
  const f = parsed as Partial<SnapshotFile> | null;
  if (!f || typeof f !== 'object' || f.format !== SNAPSHOT_FORMAT) throw new SnapshotError(`${statePath} is not a flintvm snapshot (format ${JSON.stringify(f?.format)})`);
  if (f.version !== SNAPSHOT_VERSION) {
    throw new SnapshotError(`${dir} is snapshot format version ${JSON.stringify(f.version)} (written by flintvm ${String(f.flintvm)}); this flintvm reads version ${SNAPSHOT_VERSION} only`);
  }
  const arch = hostArch();
  if (f.arch !== arch) throw new SnapshotError(`${dir} is a snapshot of an ${String(f.arch)} guest; this host runs ${arch} guests`);
  if (!f.config || typeof f.config !== 'object' || !f.machine || typeof f.machine !== 'object' || !f.memory || typeof f.memory !== 'object') {
    throw new SnapshotError(`${statePath} lacks its config, machine or memory section: the snapshot is damaged`);
  }
  // A directory's memory file is always dir/memory; the name inside the state is not followed.
  if (inDir !== null && f.memory.file !== MEMORY_FILE) throw new SnapshotError(`${statePath} names memory file ${JSON.stringify(f.memory.file)}; a snapshot directory has '${MEMORY_FILE}'`);
  let memoryFd: number;
  try {
    memoryFd = openSync(memoryPath, fsc.O_RDONLY);
  } catch (e) {
    throw new SnapshotError(`cannot open the snapshot's memory file ${memoryPath} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  return { file: f as SnapshotFile, memoryFd, memoryWhat: memoryPath };
}
