/**
 * One cold flintvm boot, in a fresh node process (spawned by bench/boot.ts).
 * Usage: node dist/bench/boot-child.js KERNEL [linux64|pvh] [MEMORY_MIB]
 *
 * The guest console goes to stdout (as with `flintvm run`), so the parent can
 * see the guest's first byte the same way it sees QEMU's. The stamps go to
 * stderr as one `BENCH-BOOT-CHILD {json}` line, all in CLOCK_MONOTONIC ms
 * (see common.ts: comparable with the parent's spawn stamp).
 * Only node builtins are imported statically: loading flintvm (and koffi) is
 * timed as its own phase.
 */
import { performance } from 'node:perf_hooks';
import { monoMs, wallToMonoOffset } from './clock.js';

const mainAt = monoMs();
const offset = wallToMonoOffset();
const [kernel, protocol = 'pvh', mem = '128'] = process.argv.slice(2);
if (!kernel) throw new Error('usage: boot-child.js KERNEL [linux64|pvh] [MEMORY_MIB]');

// The package's own entry (package.json's exports: the library bundle), as an embedder imports it.
const { MicroVM } = await import('flintvm');
const libLoaded = monoMs();
const vm = new MicroVM({ kernel, memoryMiB: Number(mem), vcpus: 1, bootProtocol: protocol as 'pvh' | 'linux64' });
vm.console.pipe(process.stdout, { end: false });
await vm.start();
const exit = await vm.wait();

const toMono = (t: number | undefined) => (t === undefined ? undefined : t - offset);
const nt = performance.nodeTiming;
const out = {
  // Node's own milestones (relative to timeOrigin in nodeTiming) converted to monotonic ms.
  processStart: toMono(performance.timeOrigin),
  nodeBootstrapped: toMono(performance.timeOrigin + nt.bootstrapComplete),
  mainAt,
  libLoaded,
  timings: Object.fromEntries(Object.entries(exit.timings).map(([k, v]) => [k, toMono(v)])),
  reason: exit.reason,
  exitStatus: exit.exitStatus,
};
process.stderr.write(`BENCH-BOOT-CHILD ${JSON.stringify(out)}\n`);
