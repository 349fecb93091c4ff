/**
 * koffi, for every flintvm module that reaches the kernel (lib/sys.ts and
 * lib/kvm/ffi.ts import it from here, not from the package).
 *
 * The package's loader, `require('koffi')`, cost 13 ms in a fresh process on
 * the build machine and 7 ms of CPU in each worker thread (a new V8 isolate),
 * against 3.5 and 1.8 ms for its native addon alone: it compiles three
 * scripts, resolves its platform package, reads node's own ELF header to tell
 * glibc from musl, and loads node:util for deprecation wrappers flintvm never
 * calls. Every VM starts at least one worker, and a cold `flintvm run` pays
 * the main thread's load before its VM can start.
 *
 * So this loads the addon file itself where it can name it, and checks that it
 * is the koffi version it expects:
 * - a worker thread: the main thread names the addon it loaded (path and
 *   version) in the worker's argv ({@link koffiWorkerArg});
 * - the main thread: `npm run build` records the addon it found
 *   (dist/lib/koffi-addon.json, {@link writeKoffiAddonRecord}): relative to
 *   dist/lib for a clone, and below its node_modules folder for a copy
 *   installed from npm ({@link addonCandidates}).
 * The addon's exports are the functions the package re-exports (`load`,
 * `func`, `errno`, `view`, ...), the same objects. Whenever the file is
 * absent, fails to load, or is another version (koffi updated after the
 * build, a package installed elsewhere), it falls back to `require('koffi')`.
 * Each thread loads its own; nothing here crosses threads or VMs.
 */
import { realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { KOFFI_ADDON_RECORD, KOFFI_ARG, addonRecord, recordedAddon } from './koffi-addon.js';

export { KOFFI_ADDON_RECORD, KOFFI_ARG, addonCandidates } from './koffi-addon.js';

type Koffi = typeof import('koffi');

const require = createRequire(import.meta.url);

/** The addon at `file` when it loads and reports `version`; else undefined. */
function addonAt(file: string, version: string): Koffi | undefined {
  if (!version || !isAbsolute(file) || !file.endsWith('.node')) return undefined;
  try {
    const addon = require(file) as Koffi & { version?: unknown };
    return addon.version === version && typeof addon.load === 'function' ? addon : undefined;
  } catch {
    return undefined;
  }
}

/** A worker: the addon its argv names. */
function fromArgv(): { koffi: Koffi; file: string } | undefined {
  const arg = process.argv.find((a) => a.startsWith(KOFFI_ARG));
  if (!arg) return undefined;
  const value = arg.slice(KOFFI_ARG.length);
  const at = value.indexOf('@');
  if (at <= 0) return undefined;
  const file = value.slice(at + 1);
  const k = addonAt(file, value.slice(0, at));
  return k && { koffi: k, file };
}

/** The main thread: the addon the build recorded, where the build found it or where an install put it (koffi-addon.ts). */
function fromRecord(): { koffi: Koffi; file: string } | undefined {
  const rec = recordedAddon();
  for (const file of rec?.files ?? []) {
    const k = addonAt(file, rec!.version);
    if (k) return { koffi: k, file };
  }
  return undefined;
}

/** The addon file the koffi package loaded in this thread, found in the module cache. */
function packageAddonFile(pkg: Koffi): string | undefined {
  const addon = (pkg as { default?: unknown }).default;
  for (const [file, mod] of Object.entries(require.cache)) {
    if (addon !== undefined && mod?.exports === addon && file.endsWith('.node')) return file;
  }
  return undefined;
}

const direct = isMainThread ? fromRecord() : fromArgv();
const koffi: Koffi = direct?.koffi ?? (require('koffi') as Koffi);
/** The addon this thread runs, when it can be named: what workers are told to load. */
const addonFile: string | undefined = direct?.file ?? packageAddonFile(koffi);
export default koffi;

/** Whether this thread loaded the addon directly rather than through the package (tests, diagnostics). */
export const KOFFI_LOADED_DIRECTLY = direct !== undefined;

/** The argv entry that lets a worker load koffi's addon directly, or undefined when this thread cannot name it. */
export function koffiWorkerArg(): string | undefined {
  const version = (koffi as { version?: unknown }).version;
  return addonFile !== undefined && typeof version === 'string' ? `${KOFFI_ARG}${version}@${addonFile}` : undefined;
}

/**
 * Build step (lib/bundles.ts): records the addon `require('koffi')` loads, so that the main thread of later
 * processes loads it directly. Returns the record's path, or undefined when the addon cannot be named.
 */
export function writeKoffiAddonRecord(): string | undefined {
  const pkg = require('koffi') as Koffi;
  const file = packageAddonFile(pkg);
  const version = (pkg as { version?: unknown }).version;
  if (file === undefined || typeof version !== 'string') return undefined;
  writeFileSync(KOFFI_ADDON_RECORD, `${JSON.stringify(addonRecord(version, realpathSync(file)))}\n`);
  return KOFFI_ADDON_RECORD;
}
