import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, MicroVM, WorkerPool } from '../../lib/index.js';
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

/** Thread counts settle a little after terminate() resolves (the thread is joined asynchronously). */
async function settled(read: () => number, want: number): Promise<number> {
  for (let i = 0; i < 100 && read() !== want; i++) await new Promise((r) => setTimeout(r, 20));
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
