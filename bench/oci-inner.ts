/**
 * The inner half of bench/oci.ts. It runs INSIDE the x86_64 test host with podman, conmon and crun laid over
 * it (test/hosts/podman.sh): for `--reps` rounds, after one uncounted warm-up round, interleaved,
 *
 * - `podman --runtime R run --rm IMG true`, spawn to exit, for R = crun (no VM: the floor) and flintvm-oci;
 * - the same with `sh -c 'yes 0123456789abcdef | head -c 16777216'`, the 16 MiB read to its end here;
 *
 * and flintvm-oci's own breakdown of every container it ran (the holder writes one JSON line per container to
 * $FLINTVM_OCI_TIMINGS): VM start, agent ready, mounts done, process start, process run, VM stop.
 * Prints one line `FLINTVM-OCI-RESULT <json>`.
 *
 * Usage: node dist/bench/oci-inner.js [--reps 5]
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PODMAN_IMAGE, setUpPodman } from '../test/hosts/podman-setup.js';
import { runMain, testHostInfo } from './guest-run.js';
import type { HolderPhases } from '../lib/oci/holder.js';

export const OCI_MARKER = 'FLINTVM-OCI-RESULT ';
const STREAM_BYTES = 16 * 1024 * 1024;
const TIMINGS = '/tmp/flintvm-oci-timings.jsonl';
export const OCI_RUNTIMES = ['crun', 'flintvm-oci'] as const;
export type OciRuntime = (typeof OCI_RUNTIMES)[number];

export interface OciInnerResult {
  reps: number;
  /** Spawn of `podman run --rm` to its exit (ms), per runtime, counted rounds in order. */
  trueMs: Record<OciRuntime, number[]>;
  streamMs: Record<OciRuntime, number[]>;
  /** flintvm-oci's holders' phases, for the counted `true` runs. */
  phases: HolderPhases[];
  podmanVersion: string;
  error?: string;
  testHost: ReturnType<typeof testHostInfo>;
}

/** Runs podman; resolves with the wall time (ms) and the byte count of its stdout. Rejects on a non-zero exit. */
function timedPodman(args: string[]): Promise<{ ms: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('podman', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let bytes = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => { bytes += d.length; });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      if (code === 0) resolve({ ms, bytes });
      else reject(new Error(`podman ${args.join(' ')}: exit ${code}: ${err.trim().slice(-400)}`));
    });
  });
}

const readPhases = (): HolderPhases[] => {
  try {
    return readFileSync(TIMINGS, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as HolderPhases);
  } catch {
    return [];
  }
};

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { reps: { type: 'string', default: '5' } } });
  const reps = Number(values.reps);
  const loadavgStart = readFileSync('/proc/loadavg', 'utf8').trim();
  rmSync(TIMINGS, { force: true });
  const result: OciInnerResult = {
    reps, trueMs: { crun: [], 'flintvm-oci': [] }, streamMs: { crun: [], 'flintvm-oci': [] }, phases: [], podmanVersion: '',
    testHost: testHostInfo(loadavgStart),
  };
  try {
    const why = await setUpPodman({ FLINTVM_OCI_TIMINGS: TIMINGS });
    if (why) throw new Error(why);
    const v = await new Promise<string>((r) => {
      const c = spawn('podman', ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let o = '';
      c.stdout.on('data', (d: Buffer) => { o += d.toString(); });
      c.on('close', () => r(o.trim()));
    });
    result.podmanVersion = v;
    for (let round = 0; round <= reps; round++) {
      for (const rt of OCI_RUNTIMES) {
        const before = readPhases().length;
        const t = await timedPodman(['--runtime', rt, 'run', '--rm', PODMAN_IMAGE, 'true']);
        const s = await timedPodman(['--runtime', rt, 'run', '--rm', PODMAN_IMAGE, 'sh', '-c', `yes 0123456789abcdef | head -c ${STREAM_BYTES}`]);
        if (s.bytes !== STREAM_BYTES) throw new Error(`${rt}: the stream gave ${s.bytes} bytes, not ${STREAM_BYTES}`);
        if (round === 0) continue; // warm-up: page cache, podman's storage, node's compile cache
        result.trueMs[rt].push(t.ms);
        result.streamMs[rt].push(s.ms);
        if (rt === 'flintvm-oci') {
          const p = readPhases()[before];
          if (p) result.phases.push(p);
        }
        process.stderr.write(`oci-inner: round ${round} ${rt}: true ${t.ms.toFixed(0)} ms, 16 MiB ${s.ms.toFixed(0)} ms\n`);
      }
    }
  } catch (e) {
    result.error = (e as Error).message;
  }
  result.testHost = testHostInfo(loadavgStart);
  console.log(OCI_MARKER + JSON.stringify(result));
}

runMain(import.meta.url, 'oci-inner', main);
