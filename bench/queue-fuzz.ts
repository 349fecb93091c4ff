/**
 * Long fuzz run of the split virtqueue's pop() against hostile queue states:
 * the same generator, reference model and checks as
 * test/unit/devices/virtio/queue/split-queue.fuzz.test.ts, for many more cases.
 * Prints progress, cases/s, the outcome mix and the slowest pop(); exits 1 on the
 * first disagreement (fast-check prints the seed and the shrunk counterexample).
 *
 * Usage: node dist/bench/queue-fuzz.js [CASES=1000000] [--seed S] [--json]
 */
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { fuzzMemory, hostileCaseArb, newFuzzStats, runCase } from '../test/helpers/virtq-driver.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { seed: { type: 'string' }, json: { type: 'boolean' } } });
const total = Number(positionals[0] ?? 1_000_000);
if (!Number.isSafeInteger(total) || total <= 0) throw new Error(`usage: queue-fuzz [CASES] [--seed S] [--json]; got ${positionals[0]}`);
const seed = values.seed === undefined ? Date.now() | 0 : Number(values.seed);
/** Cases per fast-check run: progress is printed after each, each with its own seed (seed + chunk number). */
const CHUNK = 100_000;

const memory = fuzzMemory();
const stats = newFuzzStats();
const arb = hostileCaseArb();
const t0 = performance.now();
let failures = 0;
for (let done = 0, chunk = 0; done < total; chunk++) {
  const n = Math.min(CHUNK, total - done);
  try {
    fc.assert(fc.property(arb, (c) => runCase(memory, c, stats)), { numRuns: n, seed: seed + chunk, includeErrorInReport: true });
  } catch (e) {
    failures++;
    console.error((e as Error).message);
    break;
  }
  done += n;
  const s = (performance.now() - t0) / 1000;
  if (!values.json) console.log(`${done} cases, ${stats.pops} pops, ${s.toFixed(1)} s, ${Math.round(done / s)} cases/s`);
}
const seconds = (performance.now() - t0) / 1000;
const result = { seed, seconds: +seconds.toFixed(1), casesPerSecond: Math.round(stats.cases / seconds), failures, ...stats };
if (values.json) console.log(JSON.stringify(result));
else {
  console.log(`seed ${seed}: ${stats.cases} cases (${stats.pops} pops) in ${seconds.toFixed(1)} s = ${result.casesPerSecond} cases/s, ${failures} failures`);
  console.log(`chains ${stats.chains} (indirect ${stats.indirectChains}, split at a region border ${stats.splitChains}), empty ${stats.empty}, slowest pop ${stats.maxPopMs.toFixed(2)} ms`);
  console.log('QueueError reasons:', JSON.stringify(stats.errors));
}
process.exitCode = failures === 0 ? 0 : 1;
