/**
 * The split-queue fuzz run, kept under its old name: a thin wrapper over the
 * `queue` target of the fuzz benchmark (bench/fuzz/targets/queue.ts: the
 * hostile-case generator and reference model of test/helpers/virtq-driver.ts,
 * plus a live queue). Same as `node dist/bench/fuzz/run.js --target queue --no-write`.
 *
 * Usage: node dist/bench/queue-fuzz.js [CASES=1000000] [--seed S] [--json]
 */
import { parseArgs } from 'node:util';
import { runTarget } from './fuzz/target.js';
import { queueTarget } from './fuzz/targets/queue.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { seed: { type: 'string' }, json: { type: 'boolean' } } });
const total = Number(positionals[0] ?? 1_000_000);
if (!Number.isSafeInteger(total) || total <= 0) throw new Error(`usage: queue-fuzz [CASES] [--seed S] [--json]; got ${positionals[0]}`);
const seed = values.seed === undefined ? (Date.now() % 2 ** 31) >>> 0 : Number(values.seed);
const r = runTarget(queueTarget, { inputs: total, seed, progress: values.json ? undefined : (done) => { if (done % 100_000 === 0) console.log(`${done} inputs`); } });
if (values.json) console.log(JSON.stringify({ seed, inputs: r.inputs, failures: r.failures, seconds: +r.seconds.toFixed(1), failureList: r.failureList }));
else {
  console.log(`seed ${seed}: ${r.inputs} inputs in ${r.seconds.toFixed(1)} s = ${Math.round(r.inputs / r.seconds)} inputs/s, ${r.failures} failures`);
  for (const f of r.failureList) console.log(`input ${f.input}: ${f.message}\n  replay: node dist/bench/fuzz/run.js --target queue --seed ${seed} --replay ${f.input}`);
}
process.exitCode = r.failures === 0 ? 0 : 1;
