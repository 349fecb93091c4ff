/**
 * virtio-net: flintvm against QEMU microvm's virtio-net-device, both on a
 * host tap (QEMU with vhost=off: the packet path goes through the VMM's own
 * userspace, as flintvm's does), same guest (vmlinux +
 * initramfs-tools.cpio.gz, 1 vCPU, 256 MiB), same test host run. Figures:
 * TCP throughput guest -> host and host -> guest (iperf3 both ends) and TCP
 * round-trip latency (1-byte echo); bench/net-inner.ts explains how each is
 * taken.
 *
 * Everything runs INSIDE the real-KVM test host, a Linux on QEMU's TCG
 * (software) CPU: both VMMs, the guest, iperf3 on the host side. Absolute
 * figures are far below hardware; compare the flintvm/QEMU ratios.
 *
 * Usage: node dist/bench/net.js [--reps 5] [--seconds 5] [--rtts 500] [--no-qemu] [--json]
 */
import { benchMain, runInnerBench, type InnerRun } from './test-host-bench.js';
import { NET_MARKER, type NetInnerResult, type NetRun } from './net-inner.js';
import type { RoleCpu } from './thread-cpu.js';
import { compareVmms, formatComparison, type Comparison, type FigureSpec } from './vmm-compare.js';

export interface NetResult extends InnerRun<NetInnerResult> {
  date: string;
  figures: Comparison[];
  notes: string[];
}

/** The figures, each over the boots that gave it: [name, unit, better, getter]. */
const FIGURES: FigureSpec<NetRun>[] = [
  ['TCP guest -> host (iperf3)', 'Mbit/s', 'higher', (r) => r.txMbps],
  ['TCP host -> guest (iperf3 -R)', 'Mbit/s', 'higher', (r) => r.rxMbps],
  ['TCP round trip, 1 byte (median per boot)', 'us', 'lower', (r) => r.rtt?.medianUs],
  ['TCP round trip, 1 byte (p99 per boot)', 'us', 'lower', (r) => r.rtt?.p99Us],
  ['round trip: CPU of every thread (VMM, guest, echo client)', 'us', 'lower', (r) => r.rttCpu?.totalUs],
  ['  the vCPU thread (guest time included)', 'us', 'lower', (r) => role(r, 'vcpu', (c) => c.userUs + c.sysUs)],
  ['  of which in the guest', 'us', 'lower', (r) => role(r, 'vcpu', (c) => c.guestUs)],
  ['  the I/O thread (flintvm: I/O worker; QEMU: main loop + others)', 'us', 'lower', (r) => role(r, 'io', (c) => c.userUs + c.sysUs)],
  ['  bench main thread (echo client; flintvm: + VMM main thread)', 'us', 'lower', (r) => role(r, 'client', (c) => c.userUs + c.sysUs)],
  ['  node\'s other threads in the bench process', 'us', 'lower', (r) => role(r, 'helpers', (c) => c.userUs + c.sysUs) ?? 0],
  ['round trip: KVM exits', 'count', 'lower', (r) => r.rttKvm?.exits],
  ['round trip: guest HLT exits', 'count', 'lower', (r) => r.rttKvm?.halt_exits],
];

/** One role's CPU per round trip of a run (undefined when the run has no CPU figures or no such thread). */
function role(r: NetRun, name: string, get: (c: RoleCpu) => number): number | undefined {
  const c = r.rttCpu?.roles[name];
  return c ? get(c) : undefined;
}

export async function benchNet(o: { reps: number; seconds: number; rtts: number; noQemu: boolean }): Promise<NetResult> {
  const perBootS = 2 * (o.seconds + 2) + 30 + o.rtts / 100;
  const boots = o.reps * (o.noQemu ? 1 : 2);
  const args = ['--reps', String(o.reps), '--seconds', String(o.seconds), '--rtts', String(o.rtts), ...(o.noQemu ? ['--no-qemu'] : [])];
  const r = await runInnerBench<NetInnerResult>({
    command: ['dist/bench/net-inner.js', ...args], marker: NET_MARKER, qemu: !o.noQemu, hostTools: ['/usr/bin/iperf3'],
    timeoutMs: (boots * perBootS + 600) * 1000,
  });
  const failed = r.inner.runs.filter((x) => !x.ok);
  return {
    ...r,
    date: new Date().toISOString(),
    figures: compareVmms(r.inner.runs, FIGURES),
    notes: [
      'Inside the real-KVM test host (Linux on QEMU TCG, 1 vCPU): both VMMs, the guest and the host-side iperf3/echo client share one emulated CPU.',
      `flintvm: virtio-net on a tap it creates; QEMU: ${r.inner.qemu ? '-netdev tap,vhost=off -device virtio-net-device' : 'not run'}. Guest 1 vCPU, ${r.inner.memoryMiB} MiB.`,
      `iperf3 ${r.inner.seconds} s per direction (-O 1), receiver-side rate; RTT: ${r.inner.rtts} one-byte round trips per boot from a node client on the host to socat PIPE in the guest.`,
      ...failed.map((x) => `${x.vmm} rep ${x.rep} failed: ${x.error}`),
    ],
  };
}

export function formatNet(r: NetResult): string[] {
  return [
    `virtio-net on a tap, flintvm vs QEMU microvm (vhost=off), ${r.inner.reps} boots each, INSIDE the TCG test host: compare the ratios`,
    ...formatComparison(r.figures),
    ...r.notes.map((n) => `  note: ${n}`),
    `  test host load ${r.inner.testHost.loadavgStart} -> ${r.inner.testHost.loadavgEnd}; this machine ${r.outerHost.loadavgBefore.map((x) => x.toFixed(2)).join(' ')} -> ${r.outerHost.loadavgAfter.map((x) => x.toFixed(2)).join(' ')}`,
  ];
}

await benchMain(import.meta.url, { reps: '5', seconds: '5', rtts: '500' },
  (v, noQemu) => benchNet({ reps: Number(v.reps), seconds: Number(v.seconds), rtts: Number(v.rtts), noQemu }), formatNet);
