#!/usr/bin/env node
/**
 * `npm run fuzz`: the long mode of the fuzz benchmark (bench/fuzz/target.ts
 * describes targets, episodes and oracles). Runs every target (or one) for N
 * inputs, prints a table, and writes bench/results/fuzz.json: per target the
 * inputs, failures (with seed and input index for each), seconds, seed, host
 * and date. Exit status 1 when any target failed.
 *
 *   node dist/bench/fuzz/run.js [--inputs N=1000000] [--target NAME[,NAME]] [--seed S] [--max-seconds T] [--out FILE] [--no-write]
 *
 * --max-seconds stops each target at the first episode boundary past T seconds (fuzz.json then records
 * the inputs that ran). The file is rewritten after every target, keeping other targets' entries.
 *   node dist/bench/fuzz/run.js --target NAME --seed S --replay I    # rerun the episode of input I, throw its failure
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, hostname, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runTarget, type TargetResult } from './target.js';
import { TARGETS } from './targets/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const { values } = parseArgs({
  options: {
    inputs: { type: 'string', default: '1000000' },
    target: { type: 'string' },
    seed: { type: 'string' },
    replay: { type: 'string' },
    'max-seconds': { type: 'string' },
    out: { type: 'string', default: join(ROOT, 'bench', 'results', 'fuzz.json') },
    'no-write': { type: 'boolean', default: false },
  },
});

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got ${JSON.stringify(v)}`);
  return n;
}

const inputs = int('inputs', values.inputs, 1)!;
const seed = int('seed', values.seed, 0) ?? ((Date.now() % 2 ** 31) >>> 0);
const replay = int('replay', values.replay, 0);
const maxSeconds = int('max-seconds', values['max-seconds'], 1);
const names = values.target?.split(',').map((s) => s.trim()) ?? TARGETS.map((t) => t.name);
for (const n of names) if (!TARGETS.some((t) => t.name === n)) throw new Error(`--target: no target ${JSON.stringify(n)}; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
const chosen = TARGETS.filter((t) => names.includes(t.name));

if (replay !== undefined) {
  if (chosen.length !== 1) throw new Error('--replay needs exactly one --target');
  const r = runTarget(chosen[0]!, { inputs: replay + 1, seed, replay });
  console.log(`replayed ${chosen[0]!.name} seed ${seed} up to input ${replay}: no failure (${r.inputs} inputs)`);
  process.exit(0);
}

const results: TargetResult[] = [];

function write(results: readonly TargetResult[]): void {
  if (values['no-write']) return;
  const host = { hostname: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', kernel: release(), node: process.version };
  const date = new Date().toISOString();
  const prev = existsSync(values.out!) ? JSON.parse(readFileSync(values.out!, 'utf8')) as { targets?: Record<string, unknown> } : {};
  const targets: Record<string, unknown> = { ...(prev.targets ?? {}) };
  for (const r of results) {
    targets[r.target] = {
      inputs: r.inputs, requested: inputs, failures: r.failures, seconds: +r.seconds.toFixed(1), seed: r.seed, host, date,
      ...(maxSeconds !== undefined ? { maxSeconds } : {}),
      description: TARGETS.find((t) => t.name === r.target)!.description,
      ...(r.failureList.length > 0 ? { failureList: r.failureList } : {}),
    };
  }
  mkdirSync(dirname(values.out!), { recursive: true });
  writeFileSync(values.out!, `${JSON.stringify({ bench: 'fuzz', targets }, null, 2)}\n`);
}

console.log(`fuzz: ${chosen.length} targets, ${inputs} inputs each, seed ${seed}`);
for (const t of chosen) {
  let last = performance.now();
  const r = runTarget(t, {
    inputs, seed, ...(maxSeconds !== undefined ? { maxSeconds } : {}),
    progress: (done) => {
      if (performance.now() - last < 10_000) return;
      last = performance.now();
      process.stdout.write(`  ${t.name}: ${done} / ${inputs}\n`);
    },
  });
  results.push(r);
  write([r]);
  console.log(`${t.name}: ${r.inputs} inputs, ${r.failures} failures, ${r.seconds.toFixed(1)} s`);
  for (const f of r.failureList) console.log(`  FAIL seed ${f.seed} input ${f.input}: ${f.message.split('\n').slice(0, 6).join('\n    ')}\n  replay: node dist/bench/fuzz/run.js --target ${t.name} --seed ${f.seed} --replay ${f.input}`);
}

const pad = (s: string, n: number) => s.padEnd(n);
console.log(`\n${pad('target', 14)}${pad('inputs', 12)}${pad('failures', 10)}${pad('seconds', 10)}inputs/s`);
for (const r of results) console.log(`${pad(r.target, 14)}${pad(String(r.inputs), 12)}${pad(String(r.failures), 10)}${pad(r.seconds.toFixed(1), 10)}${Math.round(r.inputs / r.seconds)}`);

if (!values['no-write']) console.log(`wrote ${values.out}`);
process.exitCode = results.some((r) => r.failures > 0) ? 1 : 0;
