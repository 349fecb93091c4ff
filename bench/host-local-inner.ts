/**
 * Inside the x86_64 test host: runs the "local KVM" benches (exits, boot,
 * memory, density) one after another, each in its own node process as
 * run-all.ts does outside, and prints each one's JSON on one line,
 * `BENCH-LOCAL-JSON <name> <json>`, for bench/host-local.ts to read. The
 * peers run here too: QEMU from the bundle bench/host-local.ts carries in
 * (on PATH, with FLINTVM_QEMU_DATADIR for its firmware), and the C exit loop
 * prebuilt outside (FLINTVM_EXIT_LOOP_BIN: the host has no compiler).
 *
 * Usage (inside the host): node dist/bench/host-local-inner.js NAME:FLAGS:ARGS ...
 *   where FLAGS and ARGS are space-separated lists, base64url-encoded as JSON.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadInfo, machineInfo } from './common.js';

const HERE = dirname(fileURLToPath(import.meta.url));

export interface HostLocalJob {
  name: string;
  script: string;
  flags: string[];
  args: string[];
  timeoutMin: number;
}

/** Encodes a job list for the command line (no shell quoting needed). */
export function encodeJobs(jobs: HostLocalJob[]): string {
  return Buffer.from(JSON.stringify(jobs)).toString('base64url');
}

function runJob(job: HostLocalJob): Promise<void> {
  return new Promise((resolve) => {
    const before = loadInfo();
    const child = spawn(process.execPath, [...job.flags, join(HERE, job.script), ...job.args, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), job.timeoutMin * 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let json: unknown;
      for (const text of [out.trim(), out.trim().split('\n').pop() ?? '']) {
        try { json = JSON.parse(text); break; } catch { /* the next form */ }
      }
      const load = { before, after: loadInfo() };
      const line = json !== undefined && code === 0
        ? { name: job.name, json, load }
        : { name: job.name, error: `${job.name} exited ${code ?? signal}${signal === 'SIGKILL' ? ` (${job.timeoutMin}-minute limit)` : ''}: ${out.trim().slice(-1500)}`, load };
      process.stdout.write(`BENCH-LOCAL-JSON ${JSON.stringify(line)}\n`);
      resolve();
    });
  });
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  const jobs = JSON.parse(Buffer.from(process.argv[2] ?? '', 'base64url').toString()) as HostLocalJob[];
  process.stdout.write(`BENCH-LOCAL-MACHINE ${JSON.stringify(machineInfo())}\n`);
  for (const job of jobs) {
    process.stderr.write(`host-local: ${job.name} ...\n`);
    await runJob(job);
  }
}
