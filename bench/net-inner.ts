/**
 * The inner half of bench/net.ts. It runs INSIDE the real-KVM test host
 * (test/hosts/run.ts), never on the build machine: it boots the guest with
 * the tools initramfs and one virtio-net NIC on a tap, under flintvm
 * (`net: [{ tap }]`, which creates the tap) and under QEMU microvm
 * (`-netdev tap,...,vhost=off -device virtio-net-device`, which creates its
 * own), and measures, per boot:
 *
 * - TCP throughput guest -> host and host -> guest: iperf3 in the guest as
 *   the client (`-c`, and `-R` for host -> guest) against `iperf3 -s` on the
 *   test host (the same Debian build, carried in from the tools initramfs);
 *   the figure is iperf3's receiver-side rate over `--seconds`, after 1 s
 *   omitted (`-O 1`, slow start);
 * - TCP round-trip latency: the guest runs `socat TCP-LISTEN:5202,nodelay
 *   PIPE` (an in-process echo that writes back what it reads), and a node
 *   client here (TCP_NODELAY too) sends one byte and waits for it to come
 *   back, `--rtts` times after 20 warm-up rounds. The figure is the per-boot
 *   median (and p99) round trip; it includes node's event loop on the host
 *   side, the same for both VMMs.
 * - Where the round trips' CPU goes (bench/thread-cpu.ts): over the measured
 *   round trips, each thread's user, system and guest time per round trip,
 *   summed by role: the vCPU thread, the I/O thread (flintvm's I/O worker;
 *   QEMU's main loop and its other threads), the bench process's main thread
 *   (the echo client, and for flintvm, which runs in this process, also the
 *   VMM's main thread) and node's other threads here; and KVM's exit
 *   counters per round trip (debugfs, mounted here if it is not).
 *
 * The host side of the tap is 10.0.2.1/24, the guest 10.0.2.15/24.
 * Prints progress, then one line `FLINTVM-NET-RESULT <json>` (NetInnerResult).
 *
 * Usage: node dist/bench/net-inner.js [--reps 5] [--seconds 5] [--rtts 500] [--memory-mib 256] [--no-qemu]
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import {
  consoleTail, flintvmExtraCmdline, guestFiles, qemuGuestArgs, runMain, startFlintvm, startQemu, testHostInfo,
  unpackHostTools, unpackQemu, waitForInterface, type GuestHandle, type QemuBin, type Vmm,
} from './guest-run.js';
import { percentile } from './common.js';
import { cpuPerOp, kvmExitStats, perOp, sampleThreads, type RoleCpu, type ThreadSample } from './thread-cpu.js';

export const NET_MARKER = 'FLINTVM-NET-RESULT ';

const HOST_IP = '10.0.2.1';
const GUEST_IP = '10.0.2.15';
const GUEST_MAC = '02:fc:00:00:00:0f';
const ECHO_PORT = 5202;
const TAPS: Record<Vmm, string> = { flintvm: 'flbnet0', qemu: 'flbnetq0' };
const WARMUP_RTTS = 20;

export interface NetRun {
  vmm: Vmm;
  rep: number;
  /** VMM start to its end, ms. */
  wallMs: number;
  ok: boolean;
  error?: string;
  /** iperf3 receiver rate, guest -> host, Mbit/s (10^6 bit/s). */
  txMbps?: number;
  /** iperf3 receiver rate, host -> guest (-R), Mbit/s. */
  rxMbps?: number;
  /** TCP echo round trips of 1 byte, microseconds. */
  rtt?: { medianUs: number; p99Us: number; minUs: number; n: number };
  /** CPU per measured round trip by thread role (vcpu, io, client, helpers; us), and all of it. */
  rttCpu?: { roles: Record<string, RoleCpu>; totalUs: number };
  /** KVM's counters per measured round trip (exits, halt_exits, mmio_exits, ...), where debugfs has them. */
  rttKvm?: Record<string, number>;
}

/** The KVM counters a run keeps (per round trip). */
const KVM_KEYS = ['exits', 'halt_exits', 'mmio_exits', 'io_exits', 'insn_emulation', 'irq_injections', 'irq_window_exits', 'halt_wait_ns'];

/** Each thread's role in a round trip: its comm, whether it ran guest code, and which process it is in. */
function threadRole(vmmPid: number) {
  return (pid: number) => (tid: number, s: ThreadSample): string => {
    if (pid === vmmPid && (s.guest > 0 || s.comm.startsWith('flintvm-vcpu'))) return 'vcpu';
    if (s.comm === 'flintvm-io' || (pid === vmmPid && pid !== process.pid)) return 'io';
    return tid === process.pid ? 'client' : 'helpers';
  };
}

/** Samples the threads of the VMM's process and of this one, and the VMM's KVM counters, around the measured round trips. */
function rttProbe(vmmPid: number): { start(): void; end(n: number): Pick<NetRun, 'rttCpu' | 'rttKvm'> } {
  const pids = vmmPid === process.pid ? [vmmPid] : [vmmPid, process.pid];
  let before: Map<number, ThreadSample>[] = [];
  let kvmBefore: Record<string, number> | null = null;
  return {
    start() {
      kvmBefore = kvmExitStats(vmmPid);
      before = pids.map(sampleThreads);
    },
    end(n) {
      const after = pids.map(sampleThreads);
      const kvmAfter = kvmExitStats(vmmPid);
      const roles: Record<string, RoleCpu> = {};
      pids.forEach((pid, i) => {
        for (const [k, v] of Object.entries(cpuPerOp(before[i]!, after[i]!, n, threadRole(vmmPid)(pid)))) {
          const r = (roles[k] ??= { userUs: 0, sysUs: 0, guestUs: 0, threads: 0 });
          r.userUs += v.userUs; r.sysUs += v.sysUs; r.guestUs += v.guestUs; r.threads += v.threads;
        }
      });
      const totalUs = Object.values(roles).reduce((a, r) => a + r.userUs + r.sysUs, 0);
      const out: Pick<NetRun, 'rttCpu' | 'rttKvm'> = { rttCpu: { roles, totalUs } };
      if (kvmBefore && kvmAfter) {
        const all = perOp(kvmBefore, kvmAfter, n);
        out.rttKvm = Object.fromEntries(KVM_KEYS.filter((k) => all[k] !== undefined).map((k) => [k, all[k]!]));
      }
      return out;
    },
  };
}

export interface NetInnerResult {
  reps: number;
  seconds: number;
  rtts: number;
  memoryMiB: number;
  guestScript: string;
  qemu: { argv: string[]; version: string } | null;
  runs: NetRun[];
  testHost: ReturnType<typeof testHostInfo>;
}

/** The guest's script: bring eth0 up, wait for the host, iperf3 both ways, then serve the echo until the host is done. */
export function netGuestScript(seconds: number): string {
  return [
    `ip addr add ${GUEST_IP}/24 dev eth0 && ip link set eth0 up || exit 2`,
    `i=0; until ping -c 1 -W 1 ${HOST_IP} >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || exit 3; done`,
    'echo NET-UP',
    `for d in tx rx; do r=; [ $d = rx ] && r=-R; iperf3 -c ${HOST_IP} -t ${seconds} -O 1 -f m $r >/tmp/o 2>&1 || { echo NETERR $d; cat /tmp/o; exit 4; }; grep receiver /tmp/o | sed "s/^/NETRES $d /"; done`,
    `socat TCP-LISTEN:${ECHO_PORT},reuseaddr,nodelay PIPE & p=$!`,
    'sleep 1; echo ECHO-READY; wait $p; echo ECHO-DONE',
  ].join('\n');
}

/** NETRES lines -> Mbit/s per direction. */
export function parseNetRes(out: string): { txMbps?: number; rxMbps?: number } {
  const r: { txMbps?: number; rxMbps?: number } = {};
  for (const m of out.replace(/\r/g, '').matchAll(/^NETRES (tx|rx) .*?([\d.]+) ([KMG])bits\/sec.*receiver/gm)) {
    const scale = { K: 1e-3, M: 1, G: 1e3 }[m[3] as 'K' | 'M' | 'G'];
    r[m[1] === 'tx' ? 'txMbps' : 'rxMbps'] = Number(m[2]) * scale;
  }
  return r;
}

/** Connects (retrying while the guest does not listen yet) and times `n` one-byte round trips. */
async function echoRtts(n: number, deadline: number, probe?: { start(): void }): Promise<number[]> {
  let s: Socket;
  for (;;) {
    try {
      s = await new Promise<Socket>((resolve, reject) => {
        const c = createConnection({ host: GUEST_IP, port: ECHO_PORT, noDelay: true });
        c.once('connect', () => { c.off('error', reject); resolve(c); });
        c.once('error', reject);
      });
      break;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const rtts: number[] = [];
  const byte = Buffer.from([0x2a]);
  await new Promise<void>((resolve, reject) => {
    let i = 0;
    let t0 = 0n;
    const next = () => { t0 = process.hrtime.bigint(); s.write(byte); };
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      // One byte out, one byte back; a coalesced reply would carry more only if we had sent more.
      for (let k = 0; k < d.length; k++) {
        const us = Number(process.hrtime.bigint() - t0) / 1000;
        if (i++ >= WARMUP_RTTS) rtts.push(us);
        if (i >= n + WARMUP_RTTS) { s.end(); resolve(); return; }
        if (i === WARMUP_RTTS) probe?.start();
        next();
      }
    });
    next();
  });
  return rtts;
}

interface Ctx {
  kernel: string;
  initrd: string;
  memoryMiB: number;
  seconds: number;
  rtts: number;
  script: string;
  qemu: QemuBin | null;
  timeoutS: number;
}

function qemuNetArgs(c: Ctx): string[] {
  return [
    ...qemuGuestArgs({ kernel: c.kernel, initrd: c.initrd, memoryMiB: c.memoryMiB, vcpus: 1, dataDir: c.qemu!.dataDir, guestCommand: c.script }),
    '-netdev', `tap,id=n0,ifname=${TAPS.qemu},script=no,downscript=no,vhost=off`,
    '-device', `virtio-net-device,netdev=n0,mac=${GUEST_MAC}`,
  ];
}

async function oneRun(vmm: Vmm, rep: number, c: Ctx): Promise<NetRun> {
  const tap = TAPS[vmm];
  const g: GuestHandle = vmm === 'flintvm'
    ? await startFlintvm({ kernel: c.kernel, initrd: c.initrd, memoryMiB: c.memoryMiB, vcpus: 1, net: [{ tap, mac: GUEST_MAC }], extraCmdline: `${flintvmExtraCmdline(c.script)}` }, c.timeoutS)
    : startQemu(c.qemu!, qemuNetArgs(c), c.timeoutS);
  const run: NetRun = { vmm, rep, wallMs: 0, ok: false };
  let hostError: string | undefined;
  try {
    await waitForInterface(tap, 60_000);
    execFileSync('ip', ['addr', 'add', `${HOST_IP}/24`, 'dev', tap]);
    execFileSync('ip', ['link', 'set', tap, 'up']);
    await g.waitFor(/^ECHO-READY/m, (c.timeoutS - 30) * 1000);
    const probe = g.pid === undefined ? undefined : rttProbe(g.pid);
    const rtts = await echoRtts(c.rtts, Date.now() + 60_000, probe);
    run.rtt = { medianUs: percentile(rtts, 50), p99Us: percentile(rtts, 99), minUs: Math.min(...rtts), n: rtts.length };
    if (probe) Object.assign(run, probe.end(rtts.length));
  } catch (e) {
    hostError = (e as Error).message;
  }
  const end = await g.end;
  const out = g.output();
  Object.assign(run, parseNetRes(out));
  run.wallMs = end.wallMs;
  const errs = [hostError, end.error, run.txMbps === undefined ? 'no guest->host iperf3 result' : undefined, run.rxMbps === undefined ? 'no host->guest iperf3 result' : undefined].filter(Boolean);
  run.ok = errs.length === 0;
  if (errs.length) {
    run.error = errs.join('; ');
    console.log(`net: ${vmm} rep ${rep} FAILED: ${run.error}\n--- guest console tail ---\n${consoleTail(out)}\n---`);
  }
  const cpu = run.rttCpu ? Object.entries(run.rttCpu.roles).map(([k, r]) => `${k} ${(r.userUs + r.sysUs).toFixed(0)}`).join(', ') : '-';
  console.log(`net: ${vmm} rep ${rep}: ${(run.wallMs / 1000).toFixed(1)} s; guest->host ${run.txMbps?.toFixed(1) ?? '-'} Mbit/s, host->guest ${run.rxMbps?.toFixed(1) ?? '-'} Mbit/s, RTT median ${run.rtt?.medianUs.toFixed(0) ?? '-'} us; CPU per round trip (us): ${cpu}; KVM exits ${run.rttKvm?.exits?.toFixed(1) ?? '-'}, HLT ${run.rttKvm?.halt_exits?.toFixed(2) ?? '-'}`);
  return run;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '5' },
      seconds: { type: 'string', default: '5' },
      rtts: { type: 'string', default: '500' },
      'memory-mib': { type: 'string', default: '256' },
      'no-qemu': { type: 'boolean', default: false },
    },
  });
  const reps = Number(values.reps);
  const seconds = Number(values.seconds);
  const rtts = Number(values.rtts);
  const memoryMiB = Number(values['memory-mib']);
  const { dir, kernel, initrd } = guestFiles();
  const loadavgStart = readFileSync('/proc/loadavg', 'utf8').trim();
  // KVM's exit counters are in debugfs (the test host does not mount it); without it the runs report no counters.
  if (!existsSync('/sys/kernel/debug/kvm')) {
    try {
      execFileSync('mount', ['-t', 'debugfs', 'debugfs', '/sys/kernel/debug'], { stdio: 'ignore' });
    } catch {
      console.log('net: debugfs could not be mounted: no KVM exit counters');
    }
  }
  const qemu = values['no-qemu'] ? null : unpackQemu(dir);
  const tool = unpackHostTools(dir);
  const [iperfBin, ...iperfArgs] = tool('iperf3');
  const server: ChildProcess = spawn(iperfBin!, [...iperfArgs, '-s'], { stdio: 'ignore' });
  const script = netGuestScript(seconds);
  const c: Ctx = { kernel, initrd, memoryMiB, seconds, rtts, script, qemu, timeoutS: 240 + 4 * seconds };
  console.log(`net: ${reps} reps, iperf3 ${seconds} s each way, ${rtts} echo round trips; ${qemu?.version ?? 'no QEMU'}`);
  const runs: NetRun[] = [];
  try {
    for (let rep = 0; rep < reps; rep++) {
      // Alternate which VMM goes first, so slow drift of the host hits both alike.
      const order: Vmm[] = qemu ? (rep % 2 ? ['qemu', 'flintvm'] : ['flintvm', 'qemu']) : ['flintvm'];
      for (const vmm of order) runs.push(await oneRun(vmm, rep, c));
    }
  } finally {
    server.kill();
  }
  const result: NetInnerResult = {
    reps, seconds, rtts, memoryMiB, guestScript: script,
    qemu: qemu ? { argv: ['qemu-system-x86_64', ...qemuNetArgs(c)], version: qemu.version } : null,
    runs, testHost: testHostInfo(loadavgStart),
  };
  console.log(NET_MARKER + JSON.stringify(result));
}

runMain(import.meta.url, 'net-inner', main);
