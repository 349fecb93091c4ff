/**
 * virtio-vsock (hybrid, Firecracker-style): throughput host -> guest and
 * guest -> host, and the latency of a host-initiated `CONNECT <port>` to a
 * guest listener, with socat in the guest (bench/vsock-inner.ts has the
 * details). Absolute figures only: QEMU 7.2 has vhost-vsock, which needs
 * the host kernel's vhost_vsock and talks AF_VSOCK on the host, not a Unix
 * socket, so there is no like-for-like peer.
 *
 * Runs INSIDE the real-KVM test host (a Linux on QEMU's TCG CPU): absolute
 * figures are far below what hardware gives.
 *
 * Usage: node dist/bench/vsock.js [--reps 5] [--mib 32] [--connects 200] [--json]
 */
import { summarize, type Summary } from './stats.js';
import { benchMain, runInnerBench, type InnerRun } from './test-host-bench.js';
import { VSOCK_MARKER, type VsockInnerResult } from './vsock-inner.js';
import { fmtSummary } from './vmm-compare.js';

export interface VsockResult extends InnerRun<VsockInnerResult> {
  date: string;
  hostToGuestMiBs: Summary | null;
  guestToHostMiBs: Summary | null;
  connectUs: Summary | null;
  notes: string[];
}

const maybe = (xs: number[]) => (xs.length ? summarize(xs) : null);

export async function benchVsock(o: { reps: number; mib: number; connects: number }): Promise<VsockResult> {
  const r = await runInnerBench<VsockInnerResult>({
    command: ['dist/bench/vsock-inner.js', '--reps', String(o.reps), '--mib', String(o.mib), '--connects', String(o.connects)],
    marker: VSOCK_MARKER, qemu: false,
    timeoutMs: (300 + o.reps * o.mib * 2 + o.connects / 2) * 1000,
  });
  const i = r.inner;
  return {
    ...r,
    date: new Date().toISOString(),
    hostToGuestMiBs: maybe(i.hostToGuestMiBs),
    guestToHostMiBs: maybe(i.guestToHostMiBs),
    connectUs: maybe(i.connectUs),
    notes: [
      'Inside the real-KVM test host (Linux on QEMU TCG, 1 vCPU); flintvm only (QEMU has no hybrid vsock).',
      `Guest 1 vCPU, ${i.memoryMiB} MiB, socat: ${i.reps} x ${i.mib} MiB each way after one uncounted warm-up round (host -> guest into /dev/null; guest -> host from /dev/zero), ` +
        `${i.connects} connects to a forking VSOCK-LISTEN (connect(2) on the Unix socket -> OK line).`,
      ...(i.error ? [`failed: ${i.error}`] : []),
    ],
  };
}

export function formatVsock(r: VsockResult): string[] {
  return [
    'virtio-vsock (hybrid), flintvm only, INSIDE the TCG test host: median [min..max] (n)',
    `  host -> guest: ${fmtSummary(r.hostToGuestMiBs)} MiB/s`,
    `  guest -> host: ${fmtSummary(r.guestToHostMiBs)} MiB/s`,
    `  CONNECT -> OK: ${fmtSummary(r.connectUs)} us (p99 ${r.inner.connect.p99Us.toFixed(0)} us)`,
    ...r.notes.map((n) => `  note: ${n}`),
    `  test host load ${r.inner.testHost.loadavgStart} -> ${r.inner.testHost.loadavgEnd}`,
  ];
}

await benchMain(import.meta.url, { reps: '5', mib: '32', connects: '200' },
  (v) => benchVsock({ reps: Number(v.reps), mib: Number(v.mib), connects: Number(v.connects) }), formatVsock);
