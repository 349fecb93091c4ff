/**
 * Entry of the worker bundle, dist/lib/worker-bundle.cjs (`npm run build`
 * bundles this file and everything it imports into one CommonJS script; see
 * worker-modules.ts for why). Every flintvm worker runs it when it exists:
 * `startWorker` (worker-pool.ts) passes the URL of the worker's real entry
 * (the vCPU loop, the I/O loop, a pool standby) as the worker's one argv, and
 * this script imports that entry, from the bundle. Nothing here runs on the
 * main thread.
 */
import { registerBundledModules, importWorkerModule } from './worker-modules.js';

registerBundledModules({
  // In the bundle, import.meta.url is the bundle's own file (dist/lib/worker-bundle.cjs): see package.json's build.
  root: new URL('./', import.meta.url).href,
  modules: {
    'vcpu/worker.js': () => import('./vcpu/worker.js'),
    'io/io-worker-entry.js': () => import('./io/io-worker-entry.js'),
    'worker-standby.js': () => import('./worker-standby.js'),
    'vm/wiring.js': () => import('./vm/wiring.js'),
    'vm/io-wiring.js': () => import('./vm/io-wiring.js'),
    // The rest of a standby's preload list (worker-pool.ts's DEFAULT_PRELOAD).
    'kvm/vcpu.js': () => import('./kvm/vcpu.js'),
    'kvm/vm.js': () => import('./kvm/vm.js'),
    'memory/host-memory.js': () => import('./memory/host-memory.js'),
    'bus/bus.js': () => import('./bus/bus.js'),
    'io/event-loop.js': () => import('./io/event-loop.js'),
  },
});

const entry = process.argv[process.argv.length - 1];
if (!entry?.startsWith('file:')) throw new Error(`the worker bundle expects its entry's URL as its last argv, got ${entry}`);
// A failed import is an unhandled rejection, which ends the worker with an 'error' event, as for any entry.
void importWorkerModule(entry);
