/**
 * Snapshot, restore and clones (issue #15): flintvm against QEMU 7.2 microvm
 * (`migrate` to a file and `-incoming` from it), same guest, same run, inside
 * the x86_64 test host (the local /dev/kvm cannot boot Linux). One test-host
 * boot runs bench/snapshot-inner.ts, which explains each figure; this side
 * carries QEMU in (bench/.host-qemu, as linux-boot.ts does), summarizes
 * (medians), computes the ratios and the targets, and writes
 * bench/results/snapshot.json.
 *
 * Usage: node dist/bench/snapshot.js [--reps 5] [--clones 16,64] [--clone-reps 5,3] [--probe-ms 500]
 *          [--vmms flintvm,qemu] [--timeout-min 55] [--out FILE|-] [--json]
 *        node dist/bench/snapshot.js --from bench/results/snapshot.json   (recompute figures, run nothing)
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gitCommit, isMain, loadInfo, machineInfo, parseMarkedJson, round, type LoadInfo, type MachineInfo } from './common.js';
import { summarize, type Summary } from './stats.js';
import { fmtSummary, type Comparison } from './vmm-compare.js';
import { HOST_QEMU_REL, makeQemuBundle } from './linux-boot.js';
import { SNAPSHOT_MARKER } from './snapshot-guest.js';
import type { CloneSeries, SideResult, SnapshotInnerResult } from './snapshot-inner.js';
import { findProjectDir, runInTestHost } from '../test/hosts/run.js';

/** One of the targets, as measured (reported, not asserted). */
export interface Target { name: string; value: number | null; target: string; met: boolean | null }

export interface SnapshotResult {
  bench: 'snapshot';
  at: string;
  commit: string;
  where: 'x86_64 test host';
  machine: { local: MachineInfo; testHost?: MachineInfo };
  testHost: { bootMs: number; totalMs: number; exitCode: number; cpus: number; memoryMiB: number };
  figures: Comparison[];
  targets: Target[];
  notes: string[];
  inner?: SnapshotInnerResult;
  error?: string;
  outsideLoad: { before: LoadInfo; after: LoadInfo };
}

const MiB = 1048576;
const s = (xs: number[] | undefined, k = 1): Summary | null => (xs && xs.length ? summarize(xs.map((x) => round(x * k, 2))) : null);
const fig = (name: string, unit: string, better: 'lower' | 'higher', f: Summary | null, q: Summary | null): Comparison =>
  ({ name, unit, better, flintvm: f, qemu: q, ratio: f && q ? round(f.median / q.median, 3) : null });
const ok = (xs: CloneSeries | undefined) => (xs ? xs.reps.filter((r) => !r.error && r.ms !== undefined) : []);

/** The figures and targets of one inner result. */
export function snapshotFigures(i: SnapshotInnerResult): { figures: Comparison[]; targets: Target[]; notes: string[] } {
  const f: SideResult | undefined = i.flintvm;
  const q: SideResult | undefined = i.qemu;
  const figures: Comparison[] = [
    fig('boot (reference): start/spawn -> guest answers on console', 'ms', 'lower', s(f?.boot.ms), s(q?.boot.ms)),
    fig('snapshot of the paused VM: pause/stop + snapshot/migrate to file', 'ms', 'lower', s(f?.snapshot.ms), s(q?.snapshot.ms)),
    fig('snapshot size on disk (du)', 'MiB', 'lower', s(f?.snapshot.diskBytes, 1 / MiB), s(q?.snapshot.diskBytes, 1 / MiB)),
    fig('restore -> guest answers on console (restore call / -incoming spawn)', 'ms', 'lower', s(f?.restore.ms), s(q?.restore.ms)),
    fig('  of which: restore call -> VM running (restore() resolved / spawn -> cont returned)', 'ms', 'lower', s(f?.restore.callMs), s(q?.restore.callMs)),
    fig('one booted VM: memory (flintvm: process growth; QEMU: process) RSS', 'MiB', 'lower', s(f?.boot.rssKiB, 1 / 1024), s(q?.boot.rssKiB, 1 / 1024)),
  ];
  const notes: string[] = [];
  for (const fs of f?.clones ?? []) {
    const qs = q?.clones.find((x) => x.asked === fs.asked);
    const fr = ok(fs);
    const qr = ok(qs);
    const nf = fr[0]?.n ?? fs.asked;
    const nq = qr[0]?.n ?? qs?.asked;
    const label = nq === undefined || nf === nq ? `${nf}` : `${nf} (QEMU ${nq})`;
    figures.push(fig(`${label} clones at once: start -> all answer`, 'ms', 'lower', s(fr.map((r) => r.ms!)), s(qr.map((r) => r.ms!))));
    figures.push(fig(`${label} clones at once: clones/s`, 'clones/s', 'higher', s(fr.map((r) => r.n / (r.ms! / 1000))), s(qr.map((r) => r.n / (r.ms! / 1000)))));
    const per = (k: 'rss' | 'pss') => fr.filter((r) => r.n > 1).map((r) => ((k === 'rss' ? r.rssNKiB! - r.rss1KiB! : r.pssNKiB! - r.pss1KiB!) / (r.n - 1)) / 1024);
    figures.push(fig(`${label} clones: RSS per extra clone (QEMU: per process)`, 'MiB', 'lower', s(per('rss')), s(qr.map((r) => r.rssMeanKiB! / 1024))));
    figures.push(fig(`${label} clones: PSS per extra clone (QEMU: per process)`, 'MiB', 'lower', s(per('pss')), s(qr.map((r) => r.pssMeanKiB! / 1024))));
    for (const x of [fs, qs]) if (x?.note) notes.push(`${x === fs ? 'flintvm' : 'QEMU'}: ${x.note}`);
    for (const x of [...fs.reps, ...(qs?.reps ?? [])]) if (x.error) notes.push(`${fs.reps.includes(x) ? 'flintvm' : 'QEMU'} ${fs.asked} clones failed: ${x.error.slice(0, 400)}`);
  }
  for (const [n, side] of [['flintvm', f], ['QEMU', q]] as const) for (const e of side?.errors ?? []) notes.push(`${n}: ${e.slice(0, 600)}`);

  const med = (c: Summary | null | undefined) => c?.median ?? null;
  const restoreRatio = figures.find((x) => x.name.startsWith('restore ->'))!.ratio;
  const bootRss = med(s(f?.boot.rssKiB, 1 / 1024));
  const biggest = f?.clones.at(-1);
  const big = biggest ? ok(biggest) : [];
  const bigMs = big.length ? summarize(big.map((r) => r.ms!)).median : null;
  const fBoot = med(s(f?.boot.ms));
  const perCloneXs = big.filter((r) => r.n > 1).map((r) => (r.rssNKiB! - r.rss1KiB!) / (r.n - 1) / 1024);
  const perClone = perCloneXs.length ? summarize(perCloneXs).median : null;
  const targets: Target[] = [
    { name: 'restore-to-running, flintvm / QEMU -incoming', value: restoreRatio, target: '<= 0.2', met: restoreRatio === null ? null : restoreRatio <= 0.2 },
    {
      name: `RSS per extra clone (${big[0]?.n ?? '-'} clones) / one booted VM (flintvm)`, value: perClone !== null && bootRss ? round(perClone / bootRss, 3) : null, target: '<= 0.25',
      met: perClone !== null && bootRss ? perClone / bootRss <= 0.25 : null,
    },
    {
      name: `${big[0]?.n ?? '-'} clones of the booted guest / one cold boot (flintvm start -> answers, same run)`, value: bigMs !== null && fBoot ? round(bigMs / fBoot, 3) : null, target: '< 1',
      met: bigMs !== null && fBoot ? bigMs / fBoot < 1 : null,
    },
  ];
  return { figures, targets, notes };
}

export async function benchSnapshot(o: { reps: number; clones: string; cloneReps: string; probeMs: number; vmms: string; timeoutMin: number }, log: (s: string) => void = (l) => process.stderr.write(`snapshot: ${l}\n`)): Promise<SnapshotResult> {
  const before = loadInfo();
  const projectDir = findProjectDir(dirname(fileURLToPath(import.meta.url)));
  const bundle = makeQemuBundle(projectDir);
  const cpus = 1;
  const memoryMiB = 4096;
  let output = '';
  try {
    const args = ['--reps', String(o.reps), '--clones', o.clones, '--clone-reps', String(o.cloneReps), '--probe-ms', String(o.probeMs), '--vmms', o.vmms, '--qemu-dir', `/work/project/${HOST_QEMU_REL}`];
    const r = await runInTestHost({
      arch: 'x86_64',
      command: `node --expose-gc dist/bench/snapshot-inner.js ${args.join(' ')}`,
      extraPaths: [HOST_QEMU_REL],
      timeoutMs: o.timeoutMin * 60_000,
      cpus,
      memoryMiB,
      onOutput: (c) => {
        output += c;
        for (const l of c.split('\n')) if (l.startsWith('snapshot:')) log(`(in host) ${l.slice(10)}`);
      },
      onLog: (l) => log(`host: ${l}`),
    });
    const res: SnapshotResult = {
      bench: 'snapshot', at: new Date().toISOString(), commit: gitCommit(projectDir), where: 'x86_64 test host', machine: { local: machineInfo() },
      testHost: { bootMs: round(r.bootMs, 0), totalMs: round(r.totalMs, 0), exitCode: r.exitCode, cpus, memoryMiB },
      figures: [], targets: [], notes: [], outsideLoad: { before, after: loadInfo() },
    };
    try {
      // The inner half prints a result after every step: the last one is the fullest (a partial one if the host's time ran out).
      const lines = (r.commandOutput || output).split('\n').filter((l) => l.startsWith(`${SNAPSHOT_MARKER} `));
      res.inner = parseMarkedJson<SnapshotInnerResult>(lines.at(-1) ?? '', SNAPSHOT_MARKER);
    } catch (e) {
      res.error = `${r.error ?? ''} ${(e as Error).message}`.trim().slice(-3000);
      return res;
    }
    res.machine.testHost = res.inner.machine;
    Object.assign(res, snapshotFigures(res.inner));
    res.notes.unshift(
      'Inside the x86_64 test host (Linux on QEMU TCG, 1 vCPU, 4 GiB; /dev/kvm is kvm_amd on the emulated CPU): read the ratios, not the absolute figures.',
      `Guest: default vmlinux (PVH) + initramfs, ${res.inner.memoryMiB} MiB, ${res.inner.vcpus} vCPU, no devices but the serial console; loop: ${res.inner.loop}`,
      `"Answers": a line typed on the console once the VM runs (for a boot: once init's banner is out), again every ${res.inner.probeMs} ms until the reply, comes back as "got <line>". Snapshot files on the host's tmpfs.`,
      'flintvm clones: Promise.all of MicroVM.restore in one node process; RSS/PSS per extra clone = (process with N clones - with 1) / (N - 1). QEMU: N -incoming processes from one file, each its own RSS/PSS.',
      'QEMU snapshot: QMP stop + migrate exec:cat > FILE (max-bandwidth lifted) until query-migrate completed; restore: spawn with -incoming defer, QMP migrate-incoming exec:cat FILE, cont on the MIGRATION completed event (a stopped source restores paused).',
    );
    return res;
  } finally {
    rmSync(bundle, { recursive: true, force: true });
  }
}

/** An earlier result with its figures, targets and generated notes recomputed from its raw `inner` part. */
export function rerender(r: SnapshotResult): SnapshotResult {
  if (!r.inner) return r;
  const { figures, targets, notes } = snapshotFigures(r.inner);
  return { ...r, figures, targets, notes: [...r.notes.filter((n) => !/^(flintvm|QEMU)[: ]/.test(n)), ...notes] };
}

export function formatSnapshot(r: SnapshotResult): string[] {
  const lines = ['Snapshot / restore / clones, flintvm vs QEMU 7.2 microvm (migrate to file, -incoming), INSIDE the x86_64 TCG test host; medians [min..max] (n)'];
  if (!r.inner) return [...lines, `  not measured: ${r.error}`];
  const rows = r.figures.map((c) => [c.name, c.unit, fmtSummary(c.flintvm), fmtSummary(c.qemu), c.ratio === null ? '' : c.ratio.toFixed(2)]);
  const head = ['figure', 'unit', 'flintvm', 'QEMU', 'flintvm/QEMU'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i]!.length)));
  for (const row of [head, ...rows]) lines.push('  ' + row.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd());
  lines.push('  targets (issue #15; reported, not asserted):');
  for (const t of r.targets) lines.push(`    ${t.name}: ${t.value ?? '-'} (target ${t.target}) ${t.met === null ? 'not measured' : t.met ? 'MET' : 'NOT MET'}`);
  for (const n of r.notes) lines.push(`  note: ${n}`);
  lines.push(`  test host: boot ${(r.testHost.bootMs / 1000).toFixed(1)} s, whole call ${(r.testHost.totalMs / 1000).toFixed(1)} s; load inside ${r.inner.load.before.loadavg[0]} -> ${r.inner.load.after.loadavg[0]}, outside ${r.outsideLoad.before.loadavg[0]} -> ${r.outsideLoad.after.loadavg[0]}`);
  return lines;
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: {
    reps: { type: 'string', default: '5' }, clones: { type: 'string', default: '16,64' }, 'clone-reps': { type: 'string', default: '5,3' },
    'probe-ms': { type: 'string', default: '500' }, vmms: { type: 'string', default: 'flintvm,qemu' }, 'timeout-min': { type: 'string', default: '55' },
    out: { type: 'string' }, json: { type: 'boolean', default: false }, from: { type: 'string' },
  } });
  // --from FILE: recompute the figures of an earlier result (its `inner`) without running anything.
  const r = values.from ? rerender(JSON.parse(readFileSync(values.from, 'utf8')) as SnapshotResult) : await benchSnapshot({
    reps: Number(values.reps), clones: values.clones!, cloneReps: values['clone-reps']!, probeMs: Number(values['probe-ms']), vmms: values.vmms!, timeoutMin: Number(values['timeout-min']),
  });
  const out = values.out ?? join(findProjectDir(dirname(fileURLToPath(import.meta.url))), 'bench/results/snapshot.json');
  if (out !== '-') {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, JSON.stringify(r, null, 2) + '\n');
  }
  console.log(values.json ? JSON.stringify(r) : formatSnapshot(r).join('\n'));
  if (!r.inner) process.exitCode = 1;
}
