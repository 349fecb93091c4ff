/**
 * The "local KVM" benches (exits, boot, memory, density) on a machine without
 * a usable /dev/kvm: run-all.ts hands them here, and they run in ONE boot of
 * the x86_64 test host (test/hosts/run.ts: Linux under QEMU's TCG CPU, whose
 * /dev/kvm is kvm_amd), each with its peer beside it in the same host and run:
 * QEMU microvm from this machine's qemu-system-x86_64 (carried in as a
 * bundle, bench/linux-boot.ts's makeQemuBundle) and the C exit loop
 * (bench/exit-loop.c, compiled here, static, since the host has no compiler).
 *
 * Everything in the host runs on an emulated CPU, ~100x slower than the
 * machine: read these figures as ratios inside the test host.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { runInTestHost } from '../test/hosts/run.js';
import { HOST_QEMU_REL, makeQemuBundle } from './linux-boot.js';
import { encodeJobs, type HostLocalJob } from './host-local-inner.js';
import { loadInfo, type LoadInfo } from './common.js';

/** One bench's outcome, as run-all's runBench returns it. */
export interface HostLocalOutcome {
  json?: unknown;
  error?: string;
  load: { before: LoadInfo; after: LoadInfo };
}

/** Where the host-side files of the peers live inside the host. */
const IN_HOST = `/work/project/${HOST_QEMU_REL}`;

/**
 * Runs `jobs` in one x86_64 test-host boot; resolves with each job's outcome
 * by name (a job that printed nothing gets an error naming the host's failure).
 */
export async function runLocalBenchesInTestHost(projectDir: string, jobs: HostLocalJob[], log: (s: string) => void): Promise<{ outcomes: Record<string, HostLocalOutcome>; hostMachine?: unknown }> {
  const before = loadInfo();
  const bundle = makeQemuBundle(projectDir);
  try {
    // The C loop: static, so it runs on the host's busybox userland without libraries.
    execFileSync('gcc', ['-O2', '-static', '-o', join(bundle, 'bin', 'exit-loop'), join(projectDir, 'bench', 'exit-loop.c')]);
    const timeoutMin = jobs.reduce((s, j) => s + j.timeoutMin, 0) + 3;
    const script = [
      `export PATH=${IN_HOST}/bin:$PATH`,
      // QEMU's libraries are this machine's, the same files node's are: one LD_LIBRARY_PATH serves both.
      `export LD_LIBRARY_PATH=${IN_HOST}/lib`,
      `export FLINTVM_QEMU_DATADIR=${IN_HOST}/share`,
      `export FLINTVM_EXIT_LOOP_BIN=${IN_HOST}/bin/exit-loop`,
      `exec node dist/bench/host-local-inner.js ${encodeJobs(jobs)}`,
    ].join('\n');
    let output = '';
    const r = await runInTestHost({
      arch: 'x86_64',
      command: script,
      extraPaths: [HOST_QEMU_REL],
      timeoutMs: timeoutMin * 60_000,
      guestDir: null,
      onOutput: (c) => {
        output += c;
        for (const l of c.split('\n')) if (l.trim() && !l.startsWith('BENCH-LOCAL-')) log(`  (in host) ${l.trimEnd()}`);
      },
      onLog: (l) => log(`  host: ${l}`),
    });
    const outcomes: Record<string, HostLocalOutcome> = {};
    for (const m of (r.commandOutput || output).matchAll(/^BENCH-LOCAL-JSON (.*)$/gm)) {
      const o = JSON.parse(m[1]!) as { name: string } & HostLocalOutcome;
      outcomes[o.name] = { ...(o.json !== undefined ? { json: o.json } : {}), ...(o.error ? { error: o.error } : {}), load: o.load };
    }
    for (const j of jobs) {
      outcomes[j.name] ??= { error: `${j.name}: no result from the test host (exit ${r.exitCode}${r.error ? `: ${r.error}` : ''})`, load: { before, after: loadInfo() } };
    }
    const m = /^BENCH-LOCAL-MACHINE (.*)$/m.exec(r.commandOutput || output);
    return { outcomes, ...(m ? { hostMachine: JSON.parse(m[1]!) as unknown } : {}) };
  } finally {
    execFileSync('rm', ['-rf', bundle]);
  }
}
