/**
 * The short mode of the fuzz benchmark (bench/fuzz): every target for a few
 * thousand inputs, with a fixed seed (FLINTVM_FUZZ_SEED overrides it), each
 * asserting 0 failures. A failure names the seed and the input index; replay
 * it with `node dist/bench/fuzz/run.js --target NAME --seed S --replay I`.
 * The long mode (`npm run fuzz`, 10^6 inputs per target) is a bench, not a test.
 */
import test from 'ava';
import { runTarget } from '../../../bench/fuzz/target.js';
import { TARGETS } from '../../../bench/fuzz/targets/index.js';

const SEED = Number(process.env['FLINTVM_FUZZ_SEED'] ?? 20261204);
/** Inputs per target: about a second each on a shared 2-core machine. */
const INPUTS: Record<string, number> = {
  queue: 1500, blk: 1500, net: 2000, vsock: 2000, '9p': 1500, fuse: 2000, mmio: 5000, 'uart-8250': 5000, pl031: 5000, fdt: 5000, 'boot-params': 5000,
};

test('every target has a short-mode input count', (t) => {
  t.deepEqual(TARGETS.map((x) => x.name).filter((n) => INPUTS[n] === undefined), []);
});

for (const target of TARGETS) {
  test(`fuzz ${target.name}: ${INPUTS[target.name] ?? 1000} inputs, 0 failures (seed ${SEED})`, (t) => {
    const r = runTarget(target, { inputs: INPUTS[target.name] ?? 1000, seed: SEED });
    const report = r.failureList.map((f) => `seed ${f.seed} input ${f.input}: ${f.message}\n  replay: node dist/bench/fuzz/run.js --target ${target.name} --seed ${f.seed} --replay ${f.input}`).join('\n');
    t.is(r.failures, 0, report);
    t.is(r.inputs, INPUTS[target.name] ?? 1000);
  });
}
