import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, MicroVM, WorkerPool } from '../../lib/index.js';
import { adoptEarlyStandbys } from '../../lib/worker-pool.js';
import { EARLY_STANDBY, startEarlyStandby, takeEarlyStandby } from '../../lib/worker-spawn.js';
import { requireKvm } from '../helpers/kvm.js';
import { printAndExitCode, spinCode, writeTempKernel } from '../helpers/tiny-elf.js';

const threads = () => readdirSync('/proc/self/task').length;
const fds = () => readdirSync('/proc/self/fd').length;

/** A thread count that has not changed for 200 ms: a terminated worker's thread is joined a little after terminate() resolves. */
async function stableThreads(): Promise<number> {
  let n = threads();
  for (let same = 0, i = 0; same < 10 && i < 200; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const m = threads();
    same = m === n ? same + 1 : 0;
    n = m;
  }
  return n;
}

/** Thread counts settle a little after terminate() resolves (the thread is joined asynchronously); up to 10 s on a loaded machine. */
async function settled(read: () => number, want: number): Promise<number> {
  for (let i = 0; i < 500 && read() !== want; i++) await new Promise((r) => setTimeout(r, 20));
  return read();
}

test('WorkerPool and workerPool are validated', (t) => {
  for (const size of [0, -1, 1.5, 65, Number.NaN]) {
    const e = t.throws(() => new WorkerPool({ size }), { instanceOf: ConfigError });
    t.regex(e!.message, /workerPool\.size/);
  }
  for (const refillDelayMs of [-1, 0.5, 600_001]) {
    const e = t.throws(() => new WorkerPool({ refillDelayMs }), { instanceOf: ConfigError });
    t.regex(e!.message, /workerPool\.refillDelayMs/);
  }
  const kernel = writeTempKernel(printAndExitCode('x', 0));
  const e = t.throws(() => new MicroVM({ kernel, workerPool: {} as WorkerPool }), { instanceOf: ConfigError });
  t.regex(e!.message, /workerPool.*WorkerPool/);
});

test.serial('VMs take their vCPU and I/O workers from the pool; every worker and fd is released', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(printAndExitCode('pooled\n', 7));
  const spin = writeTempKernel(spinCode());
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-pool-'));
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(1024 * 1024));
  // Warm up once without a pool so lazily loaded modules are not counted.
  const first = new MicroVM({ kernel, memoryMiB: 16, console: 'none' });
  await first.start();
  await first.wait();
  const threads0 = await stableThreads();
  const fds0 = fds();

  const pool = new WorkerPool({ size: 2 });
  await pool.warm();
  t.is(pool.idle, 2);
  t.is(await settled(threads, threads0 + 2), threads0 + 2, 'two standby threads');

  // A guest that exits by itself, one that is stopped, one with a virtio device (an I/O worker too).
  const out: string[] = [];
  const a = new MicroVM({ kernel, memoryMiB: 16, workerPool: pool });
  a.console.on('data', (c: Buffer) => out.push(c.toString()));
  await a.start();
  const ea = await a.wait();
  t.is(ea.reason, 'guest-exit');
  t.is(ea.exitStatus, 7);
  t.is(out.join(''), 'pooled\n');

  await pool.warm();
  const b = new MicroVM({ kernel: spin, memoryMiB: 16, console: 'none', workerPool: pool });
  await b.start();
  await b.pause();
  await b.resume();
  t.is((await b.stop()).reason, 'stopped', 'a pooled vCPU is kicked out of KVM_RUN like a spawned one');

  await pool.warm();
  const c = new MicroVM({ kernel, memoryMiB: 16, console: 'none', rng: true, drives: [{ path: disk }], workerPool: pool });
  await c.start();
  t.is((await c.wait()).reason, 'guest-exit');
  t.deepEqual(pool.stats, { taken: 4, missed: 0, started: 6 }, '1 + 1 + 2 workers taken, each replaced');

  // Two VMs at once with an empty pool: they spawn their own.
  const closedPool = new WorkerPool({ size: 1 });
  await closedPool.close();
  const d = new MicroVM({ kernel, memoryMiB: 16, console: 'none', workerPool: closedPool });
  await d.start();
  t.is((await d.wait()).reason, 'guest-exit', 'a closed pool hands out nothing and the VM spawns its own worker');
  t.is(closedPool.stats.missed, 1);

  await pool.warm();
  await pool.close();
  t.is(pool.idle, 0);
  t.is(await settled(threads, threads0), threads0, 'no thread left: taken workers ended with their VMs, standbys with close()');
  t.is(fds(), fds0, 'no fd left');
});

test.serial('refillDelayMs: no replacement before the delay; warm() starts it at once', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(printAndExitCode('x', 0));
  const pool = new WorkerPool({ size: 1, refillDelayMs: 600_000 });
  try {
    await pool.warm();
    const vm = new MicroVM({ kernel, memoryMiB: 16, console: 'none', workerPool: pool });
    await vm.start();
    t.is((await vm.wait()).reason, 'guest-exit');
    await new Promise((r) => setTimeout(r, 300));
    t.is(pool.stats.started, 1, 'no refill yet');
    t.is(pool.idle, 0);
    await pool.warm();
    t.is(pool.idle, 1);
    t.is(pool.stats.started, 2);
  } finally {
    await pool.close();
  }
});

test('close() while standbys are still starting ends them and lets a pending warm() return', async (t) => {
  const pool = new WorkerPool({ size: 3 });
  const warming = pool.warm();
  await pool.close();
  await warming;
  t.is(pool.idle, 0);
  t.is(pool.stats.started, 3);
});

test('idle standbys do not keep the process alive', async (t) => {
  const url = new URL('../../lib/index.js', import.meta.url).href;
  const script = `import { WorkerPool } from ${JSON.stringify(url)}; const p = new WorkerPool({ size: 2 }); await p.warm(); console.log('idle', p.idle);`;
  // A file, not -e: workers inherit execArgv, and --input-type is refused there.
  const file = join(mkdtempSync(join(tmpdir(), 'flintvm-pool-')), 'idle.mjs');
  writeFileSync(file, script);
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [file], { timeout: 120_000 /* node starts in 1.4 s in the TCG test host, longer under load */ }, (e, stdout) => (e ? reject(e) : resolve(stdout)));
  });
  t.is(out.trim(), 'idle 2', 'the process printed and exited on its own, without close()');
});

test.serial('a standby still importing is handed out rather than a new worker spawned', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(printAndExitCode('x', 3));
  const pool = new WorkerPool({ size: 1 });
  try {
    t.is(pool.idle, 0, 'just made: its standby is still importing');
    const vm = new MicroVM({ kernel, memoryMiB: 16, console: 'none', workerPool: pool });
    await vm.start();
    t.is((await vm.wait()).exitStatus, 3);
    t.is(pool.stats.taken, 1);
    t.is(pool.stats.missed, 0);
  } finally {
    await pool.close();
  }
});

test.serial('adoptEarlyStandbys: an early vCPU standby runs the vCPU, not the I/O worker; no refill; nothing left', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(printAndExitCode('early\n', 5));
  // Warm up once without a pool so lazily loaded modules are not counted.
  const first = new MicroVM({ kernel, memoryMiB: 16, console: 'none', rng: true });
  await first.start();
  await first.wait();
  const threads0 = await stableThreads();
  const fds0 = fds();

  const early = startEarlyStandby();
  t.is(early.kind, 'vcpu');
  const pool = adoptEarlyStandbys([early]);
  t.is(pool.size, 1);
  const out: string[] = [];
  const vm = new MicroVM({ kernel, memoryMiB: 16, rng: true, workerPool: pool });
  vm.console.on('data', (c: Buffer) => out.push(c.toString()));
  await vm.start();
  const exit = await vm.wait();
  t.is(exit.exitStatus, 5);
  t.is(out.join(''), 'early\n');
  await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(pool.stats, { taken: 1, missed: 1, started: 1 }, 'the vCPU took it, the I/O worker (whole bundle) was spawned, nothing refilled');
  await pool.close();
  t.is(await settled(threads, threads0), threads0, 'no thread left');
  t.is(fds(), fds0, 'no fd left');
});

// Serial: it counts this process's threads, and the concurrent tests above start and end standbys of their own.
test.serial('an adopted standby that is not taken ends with close(); takeEarlyStandby hands a standby over once', async (t) => {
  const threads0 = await stableThreads();
  t.is(takeEarlyStandby(), undefined, 'none was started in this process');
  const early = startEarlyStandby();
  (globalThis as Record<symbol, unknown>)[EARLY_STANDBY] = early;
  t.is(takeEarlyStandby(), early);
  t.is(takeEarlyStandby(), undefined, 'taken once');
  const pool = adoptEarlyStandbys([early]);
  await pool.warm();
  t.is(pool.idle, 1, 'it became ready under the pool');
  t.is(pool.take(new URL('../../lib/io/io-worker-entry.js', import.meta.url), {}), null, 'a vCPU standby never becomes an I/O worker');
  await pool.close();
  t.is(pool.idle, 0);
  t.is(await settled(threads, threads0), threads0, 'its thread ended');
});

test.serial('flintvm run takes the vCPU worker that bin/launch.cjs started before the command loaded', async (t) => {
  if (!requireKvm(t)) return;
  const kernel = writeTempKernel(printAndExitCode('launched\n', 6));
  const cli = fileURLToPath(new URL('../../../bin/flintvm.cjs', import.meta.url));
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, [cli, 'run', '--kernel', kernel, '--mem', '16'], { env: { ...process.env, DEBUG: 'flintvm:pool' }, timeout: 120_000 }, (_e, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }));
  });
  t.is(r.code, 6, r.stderr);
  t.is(r.stdout, 'launched\n');
  t.regex(r.stderr, /a vcpu standby \((ready|still importing)\) takes vcpu\/worker\.js/);
  t.regex(r.stderr, /closed \(0 standbys ended\)/);
});
