/**
 * The OCI runtime: `podman run --rm IMG true` and a 16 MiB stdout stream through podman and conmon, with
 * flintvm-oci (a microVM per container) against crun (no VM: the floor) in the same test host and run, plus
 * flintvm-oci's own breakdown (bench/oci-inner.ts has the details).
 *
 * Runs INSIDE the x86_64 test host (a Linux on QEMU's TCG CPU): absolute figures are far below what hardware
 * gives; the ratio says what the VM costs.
 *
 * Usage: node dist/bench/oci.js [--reps 5] [--json]
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { summarize, type Summary } from './stats.js';
import { benchMain, runInnerBench, type InnerRun } from './test-host-bench.js';
import { OCI_MARKER, type OciInnerResult } from './oci-inner.js';
import { fmtSummary } from './vmm-compare.js';

export interface OciResult extends InnerRun<OciInnerResult> {
  date: string;
  trueMs: { crun: Summary | null; flintvm: Summary | null; ratio: number | null };
  streamMs: { crun: Summary | null; flintvm: Summary | null; ratio: number | null };
  /** Medians of flintvm-oci's phases (ms), for the `true` runs. */
  phases: Record<string, Summary>;
  notes: string[];
}

const maybe = (xs: number[]) => (xs.length ? summarize(xs) : null);
const ratio = (a: Summary | null, b: Summary | null) => (a && b ? a.median / b.median : null);

/** Builds (or finds) what the test host needs for podman: the guest agent and the podman tree. */
function ociTools(): void {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  for (const [env, script] of [['FLINTVM_AGENT_DIR', 'guest/agent/build.sh'], ['FLINTVM_PODMAN_DIR', 'test/hosts/podman.sh']] as const) {
    if (!process.env[env]) process.env[env] = execFileSync('bash', [`${root}${script}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop();
  }
}

export async function benchOci(o: { reps: number }): Promise<OciResult> {
  ociTools();
  const r = await runInnerBench<OciInnerResult>({
    command: ['dist/bench/oci-inner.js', '--reps', String(o.reps)],
    marker: OCI_MARKER, qemu: false,
    timeoutMs: (300 + (o.reps + 1) * 120) * 1000,
  });
  const i = r.inner;
  const t = { crun: maybe(i.trueMs.crun), flintvm: maybe(i.trueMs['flintvm-oci']) };
  const s = { crun: maybe(i.streamMs.crun), flintvm: maybe(i.streamMs['flintvm-oci']) };
  const phases: Record<string, Summary> = {};
  for (const k of ['vmStartMs', 'agentReadyMs', 'mountedMs', 'processStartMs', 'processRunMs', 'vmStopMs'] as const) {
    const xs = i.phases.map((p) => p[k]).filter((x): x is number => typeof x === 'number');
    if (xs.length) phases[k] = summarize(xs);
  }
  return {
    ...r,
    date: new Date().toISOString(),
    trueMs: { ...t, ratio: ratio(t.flintvm, t.crun) },
    streamMs: { ...s, ratio: ratio(s.flintvm, s.crun) },
    phases,
    notes: [
      `Inside the real-KVM test host (Linux on QEMU TCG, 1 vCPU); ${i.podmanVersion || 'podman'} with conmon, storage vfs, no network; ` +
        `${i.reps} rounds after one uncounted warm-up, crun and flintvm-oci interleaved.`,
      'flintvm-oci: a 256 MiB, 1-vCPU microVM per container (default kernel, the agent initramfs, the rootfs over virtio-fs); crun: namespaces, no VM.',
      ...(i.error ? [`failed: ${i.error}`] : []),
    ],
  };
}

export function formatOci(r: OciResult): string[] {
  const x = (v: number | null) => (v === null ? '-' : `${v.toFixed(2)}x`);
  const p = (k: string) => fmtSummary(r.phases[k] ?? null);
  return [
    'OCI runtime through podman, INSIDE the TCG test host: median [min..max] (n), ms',
    `  podman run --rm IMG true:   flintvm-oci ${fmtSummary(r.trueMs.flintvm)}   crun ${fmtSummary(r.trueMs.crun)}   ratio ${x(r.trueMs.ratio)}`,
    `  16 MiB stdout stream:       flintvm-oci ${fmtSummary(r.streamMs.flintvm)}   crun ${fmtSummary(r.streamMs.crun)}   ratio ${x(r.streamMs.ratio)}`,
    `  flintvm-oci holder, from its start: VM started ${p('vmStartMs')}, agent ready ${p('agentReadyMs')}, mounts done ${p('mountedMs')}`,
    `  then: start -> process running ${p('processStartMs')}, process run ${p('processRunMs')}, VM stop ${p('vmStopMs')}`,
    ...r.notes.map((n) => `  note: ${n}`),
    `  test host load ${r.inner.testHost.loadavgStart} -> ${r.inner.testHost.loadavgEnd}`,
  ];
}

await benchMain(import.meta.url, { reps: '5' }, (v) => benchOci({ reps: Number(v.reps) }), formatOci);
