/**
 * koffi, for every flintvm module that reaches the kernel (lib/sys.ts and
 * lib/kvm/ffi.ts import it from here, not from the package).
 *
 * On the main thread this is `require('koffi')`. A worker thread is a new V8
 * isolate, and there the package's loader (`require('koffi')`) cost 7 ms of
 * CPU on the build machine against 1.8 ms for its native addon alone: it
 * compiles three scripts, resolves its platform package, reads node's own ELF
 * header to tell glibc from musl, and loads node:util for deprecation
 * wrappers flintvm never calls. Every VM starts at least one worker, so with
 * 32 VMs starting at once that is 0.2 s of CPU per batch.
 *
 * So the main thread names the addon it loaded (its path and koffi's version)
 * in each worker's argv ({@link koffiWorkerArg}), and a worker requires that
 * file directly. The addon's exports are the functions the package re-exports
 * (`load`, `func`, `errno`, `view`, ...), the same objects. The worker checks
 * the version and falls back to `require('koffi')` when the addon is absent,
 * fails to load, or is another version, so a worker is never left without
 * koffi. No state here outlives or crosses threads: each thread loads its own.
 */
import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';

type Koffi = typeof import('koffi');

/** The argv prefix that carries `<version>@<path of koffi.node>` to a worker. */
export const KOFFI_ARG = '--flintvm-koffi-addon=';

const require = createRequire(import.meta.url);

/** The addon named in this worker's argv, when it loads and is koffi's expected version; else undefined. */
function addonFromArgv(): Koffi | undefined {
  const arg = process.argv.find((a) => a.startsWith(KOFFI_ARG));
  if (!arg) return undefined;
  const value = arg.slice(KOFFI_ARG.length);
  const at = value.indexOf('@');
  if (at <= 0) return undefined;
  const version = value.slice(0, at);
  try {
    const addon = require(value.slice(at + 1)) as Koffi & { version?: unknown };
    return addon.version === version && typeof addon.load === 'function' ? addon : undefined;
  } catch {
    return undefined;
  }
}

const koffi: Koffi = (!isMainThread && addonFromArgv()) || (require('koffi') as Koffi);
export default koffi;

/**
 * The argv entry that lets a worker load koffi's addon directly, or undefined when this thread cannot name
 * it (koffi loaded from somewhere the module cache does not show). Main thread; computed once per call.
 */
export function koffiWorkerArg(): string | undefined {
  const pkg = require('koffi') as Koffi & { default?: unknown };
  const addon = pkg.default as { version?: unknown } | undefined;
  if (!addon || typeof addon.version !== 'string') return undefined;
  for (const [file, mod] of Object.entries(require.cache)) {
    if (mod?.exports === addon && file.endsWith('.node')) return `${KOFFI_ARG}${addon.version}@${file}`;
  }
  return undefined;
}
