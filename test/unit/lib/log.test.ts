/**
 * lib/log.ts: a worker thread started without DEBUG gets silent loggers and never loads `debug` (whose tty
 * and net modules each worker would compile again); with DEBUG, a worker's loggers write to fd 2 at once.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';

const LOG = pathToFileURL(new URL('../../../lib/log.js', import.meta.url).pathname).href;

/** Runs a worker that imports lib/log.js and logs one line, in a fresh node with `debugEnv` as DEBUG; returns its report and stderr. */
function inWorker(debugEnv: string | undefined): { report: { enabled: boolean; tty: boolean }; stderr: string } {
  const worker = `import(${JSON.stringify(LOG)}).then((m) => {
    const d = m.log('logtest');
    d('a line from the worker %d', 42);
    require('worker_threads').parentPort.postMessage({ enabled: d.enabled, tty: process.moduleLoadList.includes('NativeModule tty') });
  });`;
  const main = `const { Worker } = require('worker_threads');
    new Worker(${JSON.stringify(worker)}, { eval: true }).once('message', (m) => console.log(JSON.stringify(m)));`;
  const env = { ...process.env };
  delete env['DEBUG'];
  if (debugEnv !== undefined) env['DEBUG'] = debugEnv;
  const r = spawnSync(process.execPath, ['-e', main], { encoding: 'utf8', env, timeout: 60_000 });
  return { report: JSON.parse(r.stdout.trim()) as { enabled: boolean; tty: boolean }, stderr: r.stderr };
}

test('a worker without DEBUG: silent loggers, and debug (with tty) is not loaded', (t) => {
  const { report, stderr } = inWorker(undefined);
  t.false(report.enabled);
  t.false(report.tty, 'node:tty was loaded');
  t.false(stderr.includes('a line from the worker'));
});

test('a worker with DEBUG naming the namespace: its line reaches stderr', (t) => {
  const { report, stderr } = inWorker('flintvm:logtest');
  t.true(report.enabled);
  t.regex(stderr, /flintvm:logtest a line from the worker 42/);
});
