/**
 * Entry of the vCPU worker's bundle, dist/lib/worker-vcpu-bundle.cjs: what a
 * freshly spawned vCPU worker runs (through dist/lib/worker-vcpu-loader.cjs)
 * instead of the whole worker bundle (worker-bundle.ts). A vCPU worker runs
 * the vCPU loop and the bus side of the devices, none of the I/O worker's
 * backends (block, net, virtio-fs, vsock, 9p), which are three quarters of
 * the whole bundle; a worker reads its bundle and deserializes its code cache
 * before it runs anything, and this one is about a quarter of the size.
 * Standby workers (worker-pool.ts) still run the whole bundle: they may
 * become either kind.
 */
import { runBundledEntry } from './worker-modules.js';

// In the bundle, import.meta.url is the bundle's own file (dist/lib/worker-vcpu-bundle.cjs): see bundles.ts.
runBundledEntry(new URL('./', import.meta.url).href, {
  'vcpu/worker.js': () => import('./vcpu/worker.js'),
  'vm/wiring.js': () => import('./vm/wiring.js'),
  // The build's produce run (bundles.ts) runs a standby with worker-pool.ts's VCPU_PRELOAD.
  'worker-standby.js': () => import('./worker-standby.js'),
  'kvm/vcpu.js': () => import('./kvm/vcpu.js'),
  'kvm/vm.js': () => import('./kvm/vm.js'),
  'memory/host-memory.js': () => import('./memory/host-memory.js'),
  'bus/bus.js': () => import('./bus/bus.js'),
});
