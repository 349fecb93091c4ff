/**
 * Property test: pop() over generated hostile queue states (arbitrary descriptor
 * tables, indirect tables, avail ring contents and indices, rings across region
 * borders) agrees with an independent reference model (test/helpers/virtq-driver.ts
 * RefQueue), returns only chains whose segments each lie inside one region with
 * consistent totals, and throws nothing but QueueError. The long run (10^6 cases)
 * is bench/queue-fuzz.ts.
 */
import test from 'ava';
import fc from 'fast-check';
import { fuzzMemory, hostileCaseArb, newFuzzStats, runCase } from '../../../../helpers/virtq-driver.js';

const RUNS = Number(process.env.FLINTVM_QUEUE_FUZZ_RUNS ?? 20_000);

test(`pop() on ${RUNS} hostile queue states matches the reference model and only throws QueueError`, (t) => {
  const memory = fuzzMemory();
  const stats = newFuzzStats();
  const t0 = performance.now();
  fc.assert(fc.property(hostileCaseArb(), (c) => runCase(memory, c, stats)), { numRuns: RUNS, includeErrorInReport: true });
  const ms = performance.now() - t0;
  t.log(`${stats.cases} cases, ${stats.pops} pops in ${(ms / 1000).toFixed(1)} s; ${stats.chains} chains (${stats.indirectChains} indirect, ${stats.splitChains} split at a region border), ${stats.empty} empty; slowest pop ${stats.maxPopMs.toFixed(2)} ms`);
  t.log('errors:', JSON.stringify(stats.errors));
  // A hang catcher (a loop the TTL failed to bound would not return at all), not a speed target: a GC pause on a
  // loaded 2-core machine made a healthy pop take over 250 ms.
  t.true(stats.maxPopMs < 2000, 'no pop() takes long');
  // The generator must reach the interesting outcomes, or the test proves little.
  for (const reason of ['too-long', 'indirect-not-negotiated', 'avail-idx', 'head-range', 'next-range', 'loop', 'indirect-nested', 'indirect-next', 'indirect-len', 'indirect-addr', 'buffer-addr', 'order']) {
    t.true((stats.errors[reason] ?? 0) > 0, `some case hit ${reason}`);
  }
  t.true(stats.chains > stats.cases / 10, 'many valid chains too');
  t.true(stats.indirectChains > stats.cases / 100, 'valid indirect chains too');
  t.true(stats.splitChains > stats.cases / 100, 'chains split at region borders too');
});
