/**
 * Entry of the worker bundle, dist/lib/worker-bundle.cjs (`npm run build`
 * bundles this file and everything it imports into one CommonJS script; see
 * worker-modules.ts for why). Every flintvm worker but a freshly spawned vCPU
 * worker (worker-vcpu-bundle.ts) runs it when it exists: `startWorker`
 * (worker-pool.ts) passes the URL of the worker's real entry (the I/O loop, a
 * pool standby, which may become a vCPU worker) as the worker's last argv, and
 * this script imports that entry, from the bundle. Nothing here runs on the
 * main thread.
 */
import { runBundledEntry } from './worker-modules.js';

// In the bundle, import.meta.url is the bundle's own file (dist/lib/worker-bundle.cjs): see bundles.ts.
runBundledEntry(new URL('./', import.meta.url).href, {
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
});
