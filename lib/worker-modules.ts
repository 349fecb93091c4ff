/**
 * How a worker imports a module by URL (its entry, a device or I/O setup
 * module, a standby's preloads): from the worker bundle when this worker runs
 * it and the module is in it, else with a plain `import()`.
 *
 * The worker bundle (dist/lib/worker-bundle.cjs, built from worker-bundle.ts
 * by `npm run build`) holds every module a VM's workers run, in one file. A
 * worker that runs it loads one script instead of 30 to 100 ES modules, each
 * resolved, read, compiled and linked on its own: in the x86_64 test host that
 * took an I/O worker's start from 2.7 s to 1.0 s (median of 4). A module that
 * is not in the bundle (a test's own setup module) is imported as usual.
 */
import { WORKER_IMPORT } from './code-cache.js';

interface Bundled {
  /** URL of the directory the bundle stands for (dist/lib/), with a trailing slash. */
  readonly root: string;
  /** The bundled modules by their path under root ('vcpu/worker.js'). */
  readonly modules: Readonly<Record<string, () => Promise<unknown>>>;
}

let bundled: Bundled | undefined;

/** Called once by the worker bundle's entry, before it imports anything through {@link importWorkerModule}. */
export function registerBundledModules(b: Bundled): void {
  bundled = b;
}

/** `import(url)`, served from the worker bundle when this worker runs it and `url` is one of its modules. */
export function importWorkerModule(url: string): Promise<unknown> {
  if (bundled && url.startsWith(bundled.root)) {
    const load = bundled.modules[url.slice(bundled.root.length)];
    if (load) return load();
  }
  // Run by the worker loader from V8's code cache, the bundle cannot import() by itself: the loader can.
  const viaLoader = (globalThis as Record<symbol, unknown>)[WORKER_IMPORT] as ((u: string) => Promise<unknown>) | undefined;
  return viaLoader ? viaLoader(url) : import(url);
}

/**
 * What a worker bundle's entry runs (worker-bundle.ts, worker-vcpu-bundle.ts): registers the bundle's
 * `modules` (by their path under dist/lib/) and imports the worker's real entry, whose URL `startWorker`
 * passes as the worker's last argv. `root` is the bundle's directory URL (dist/lib/).
 */
export function runBundledEntry(root: string, modules: Bundled['modules']): void {
  registerBundledModules({ root, modules });
  const entry = process.argv[process.argv.length - 1];
  if (!entry?.startsWith('file:')) throw new Error(`the worker bundle expects its entry's URL as its last argv, got ${entry}`);
  // A failed import is an unhandled rejection, which ends the worker with an 'error' event, as for any entry.
  void importWorkerModule(entry);
}
