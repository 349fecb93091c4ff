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

/**
 * Runs a fresh node whose main thread imports lib/log.js as a flintvm command's would (`command`: with the flag
 * bin/launch.cjs sets) and runs `body` (with `m`, the module, and `seen`, the lines a sink got); returns its JSON report.
 */
function inMain(command: boolean, debugEnv: string | undefined, body: string): { report: Record<string, unknown>; stderr: string } {
  const script = `${command ? "globalThis[Symbol.for('flintvm.commandProcess')] = true;" : ''}
    const loaded = () => Object.keys(require.cache).some((k) => k.includes('/node_modules/debug/'));
    import(${JSON.stringify(LOG)}).then((m) => {
      const seen = [];
      const report = {};
      ${body}
      console.log(JSON.stringify(report));
    });`;
  const env = { ...process.env };
  delete env['DEBUG'];
  if (debugEnv !== undefined) env['DEBUG'] = debugEnv;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`node exited ${r.status}: ${r.stderr}`);
  return { report: JSON.parse(r.stdout.trim()) as Record<string, unknown>, stderr: r.stderr };
}

test('a command without DEBUG loads debug only when it enables logs, and its loggers made before then log', (t) => {
  const { report } = inMain(true, undefined, `
    const d = m.log('logtest');
    report.loadedAtImport = loaded();
    report.ttyAtImport = process.moduleLoadList.includes('NativeModule tty');
    report.enabledBefore = d.enabled;
    d('dropped %d', 1);
    m.enableLogs('flintvm:logtest', (line) => seen.push(line));
    report.loadedAfter = loaded();
    report.enabledAfter = d.enabled;
    report.otherEnabled = m.log('other').enabled;
    d('kept %d', 2);
    m.log('logtest')('made after %s', 'enableLogs');
    report.seen = seen;`);
  t.false(report.loadedAtImport, 'debug was loaded at import');
  t.false(report.ttyAtImport, 'node:tty was loaded at import');
  t.false(report.enabledBefore);
  t.true(report.loadedAfter);
  t.true(report.enabledAfter);
  t.false(report.otherEnabled, 'a namespace not named was enabled');
  const seen = report.seen as string[];
  t.is(seen.length, 2, JSON.stringify(seen));
  t.regex(seen[0]!, /flintvm:logtest.*kept 2/);
  t.regex(seen[1]!, /flintvm:logtest.*made after enableLogs/);
});

test('a command with DEBUG naming the namespace logs from the start', (t) => {
  const { report, stderr } = inMain(true, 'flintvm:logtest', `
    report.loaded = loaded();
    const d = m.log('logtest');
    report.enabled = d.enabled;
    d('a line from the command %d', 7);`);
  t.true(report.loaded);
  t.true(report.enabled);
  t.regex(stderr, /flintvm:logtest a line from the command 7/);
});

test("a library's main thread (no command flag) loads debug at import, so that an embedder can enable it", (t) => {
  const { report } = inMain(false, undefined, `
    report.loaded = loaded();
    const d = m.log('logtest');
    report.enabledBefore = d.enabled;
    require(require.resolve('debug', { paths: [${JSON.stringify(new URL('../../../', import.meta.url).pathname)}] })).enable('flintvm:logtest');
    report.enabledAfter = d.enabled;`);
  t.true(report.loaded);
  t.falsy(report.enabledBefore); // debug's own getter gives undefined before any enable()
  t.true(report.enabledAfter);
});
