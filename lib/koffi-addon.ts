/**
 * Where koffi's native addon is, without loading it: the record `npm run
 * build` writes (dist/lib/koffi-addon.json) and the files it may name. The
 * main thread's loader (lib/koffi.ts) tries these files in order; the vCPU
 * worker bin/launch.cjs starts before the command loads (lib/worker-spawn.ts)
 * is told the first that exists, and checks the version when it loads it.
 * Only node builtins are imported here: that early spawner loads this module
 * before anything else of flintvm.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The argv prefix that carries `<version>@<path of koffi.node>` to a worker. */
export const KOFFI_ARG = '--flintvm-koffi-addon=';

/** Where the build records the addon: beside this module (in every bundle, import.meta.url is a file of dist/lib/). */
export const KOFFI_ADDON_RECORD = fileURLToPath(new URL('./koffi-addon.json', import.meta.url));

/** What the build records (dist/lib/koffi-addon.json). */
export interface AddonRecord {
  version?: unknown;
  /** The addon, relative to dist/lib: where it is in the tree that ran the build. */
  file?: unknown;
  /** The addon below its node_modules folder (`@koromix/koffi-linux-x64/linux_x64/koffi.node`), and the build's platform and arch. */
  inNodeModules?: unknown;
  platform?: unknown;
  arch?: unknown;
}

/** The record of the addon at `real` (a resolved path) for this platform and arch: what the build writes. */
export function addonRecord(version: string, real: string): AddonRecord {
  const at = real.lastIndexOf(`${sep}node_modules${sep}`);
  const inNodeModules = at >= 0 ? real.slice(at + `${sep}node_modules${sep}`.length) : undefined;
  return { version, file: relative(dirname(KOFFI_ADDON_RECORD), real), inNodeModules, platform: process.platform, arch: process.arch };
}

/**
 * Where an installed copy of flintvm finds the addon: `<dir>/node_modules/<inNodeModules>` for each folder
 * above dist/lib, nearest first, as node resolves flintvm's own `require('koffi')`. In a clone the addon is in
 * the clone's node_modules (the record's `file`); installed from npm, the package manager puts koffi's
 * platform package beside flintvm, at a place no relative path from the build can name.
 */
export function addonCandidates(libDir: string, inNodeModules: string): string[] {
  const out: string[] = [];
  for (let dir = libDir; ; dir = dirname(dir)) {
    if (!dir.endsWith(`${sep}node_modules`)) out.push(join(dir, 'node_modules', inNodeModules));
    if (dirname(dir) === dir) return out;
  }
}

/**
 * The koffi version the build recorded and the files that may hold its addon, in the order to try them
 * (only those that exist); undefined without a usable record.
 */
export function recordedAddon(): { version: string; files: string[] } | undefined {
  let rec: AddonRecord;
  try {
    rec = JSON.parse(readFileSync(KOFFI_ADDON_RECORD, 'utf8')) as AddonRecord;
  } catch {
    return undefined;
  }
  if (typeof rec.version !== 'string' || typeof rec.file !== 'string') return undefined;
  const libDir = dirname(KOFFI_ADDON_RECORD);
  const candidates = [resolve(libDir, rec.file)];
  // Another platform's addon is never tried: its platform package has another name anyway, and a file of the
  // same name built for another libc must not be dlopen'ed.
  const inNodeModules = rec.inNodeModules;
  if (typeof inNodeModules === 'string' && !inNodeModules.split(/[\\/]/).includes('..') && rec.platform === process.platform && rec.arch === process.arch) {
    candidates.push(...addonCandidates(libDir, inNodeModules));
  }
  return { version: rec.version, files: candidates.filter((f) => existsSync(f)) };
}

/** The argv entry naming the recorded addon to a worker (which checks the version when it loads it), or undefined. */
export function recordedWorkerArg(): string | undefined {
  const rec = recordedAddon();
  const file = rec?.files[0];
  return rec && file !== undefined ? `${KOFFI_ARG}${rec.version}@${file}` : undefined;
}
