/**
 * The snapshot benchmark's inside half: runs INSIDE the x86_64 test host
 * (started by bench/snapshot.ts), flintvm and QEMU microvm side by side,
 * same guest (the default kernel + initramfs running bench/snapshot-guest.ts's
 * loop, 256 MiB, 1 vCPU, no devices but the serial console). Per repetition,
 * interleaved, each VMM:
 * - boots the guest (start / spawn -> the guest answers a line typed on its
 *   console): the cold-boot reference, and the booted VM's memory;
 * - snapshots it paused: flintvm `pause()` + `snapshot(dir)`; QEMU QMP `stop`
 *   + `migrate` to `exec:cat > FILE` until `query-migrate` says completed;
 *   the size is what the files take on disk (`du`; flintvm's memory file is
 *   sparse);
 * - restores it once: from the `MicroVM.restore` call / the `-incoming` spawn
 *   to the guest answering a line typed on its console.
 * Then, from the last repetition's snapshots, clone batches: N restores at
 * once (flintvm: Promise.all of MicroVM.restore in this process; QEMU: N
 * `-incoming` processes from the one file), timed until every guest answered,
 * with the memory they take (flintvm: this process's RSS/PSS with N clones
 * minus with 1, per extra clone; QEMU: each process's RSS and PSS).
 * Prints `BENCH-SNAPSHOT-JSON {json}` on one line.
 *
 * Usage (inside the host): node --expose-gc dist/bench/snapshot-inner.js
 *   [--reps 5] [--clones 16,64] [--clone-reps 5|3,1] [--probe-ms 500] [--vmms flintvm,qemu] [--qemu-dir DIR]
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MicroVM, defaultGuestImages } from '../lib/index.js';
import { loadInfo, machineInfo, monoMs, round, smapsRollupKiB, type LoadInfo, type MachineInfo } from './common.js';
import { ConsoleWatch, SNAPSHOT_MARKER, SNAP_BANNER, SNAP_CMDLINE, SNAP_EXTRA, SNAP_LOOP, SNAP_MEMORY_MIB, SNAP_VCPUS, apparentBytes, diskBytes, memAvailableMiB, sleep } from './snapshot-guest.js';
import { Qmp, killQemu, qemuIncoming, qemuMachineArgs, qemuMemKiB, qemuMigrateToFile, qemuPaths, spawnQemu, type QemuPaths, type QemuVm } from './snapshot-qemu.js';

/** How long one guest may take to answer (TCG: a batch of 64 guests shares one emulated CPU). */
const ANSWER_TIMEOUT_MS = 8 * 60_000;
/** Let the loop settle (pending probes read, back in `read -t 1`) before a snapshot. */
const SETTLE_MS = 1500;

export interface CloneRep {
  /** How many clones ran (fewer than asked when memory did not allow it). */
  n: number;
  /** Batch start -> the last clone answered, ms. */
  ms?: number;
  /** Batch start -> each clone answered, ms (sorted). */
  eachMs?: number[];
  /** flintvm: this process with 1 clone and with n clones (KiB); QEMU: the mean over the n processes (KiB). */
  rss1KiB?: number; rssNKiB?: number; pss1KiB?: number; pssNKiB?: number;
  rssMeanKiB?: number; pssMeanKiB?: number;
  memAvailableBeforeMiB: number;
  error?: string;
}

export interface CloneSeries { asked: number; reps: CloneRep[]; note?: string }

export interface SideResult {
  boot: { ms: number[]; rssKiB: number[]; pssKiB: number[] };
  snapshot: { ms: number[]; diskBytes: number[]; apparentBytes: number[]; stopMs: number[]; callMs?: number[]; memoryWritten?: number[] };
  restore: { ms: number[]; callMs?: number[] };
  clones: CloneSeries[];
  errors: string[];
}

export interface SnapshotInnerResult {
  reps: number;
  cloneReps: number;
  probeMs: number;
  memoryMiB: number;
  vcpus: number;
  cmdline: string;
  loop: string;
  qemuCommand?: string;
  machine: MachineInfo;
  memAvailableStartMiB: number;
  flintvm?: SideResult;
  qemu?: SideResult;
  load: { before: LoadInfo; after: LoadInfo };
}

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
const selfMem = () => { gc(); const m = smapsRollupKiB('self'); return { rss: m.rss, pss: m.pss }; };
const emptySide = (): SideResult => ({ boot: { ms: [], rssKiB: [], pssKiB: [] }, snapshot: { ms: [], diskBytes: [], apparentBytes: [], stopMs: [] }, restore: { ms: [] }, clones: [], errors: [] });
const log = (s: string) => console.log(`snapshot: ${s}`);

interface Ctx { vmlinux: string; initrd: string; probeMs: number; tmp: string; qemu: QemuPaths }

/** flintvm: boot, snapshot (paused), stop; restore once. Returns the snapshot directory. */
async function flintvmRep(c: Ctx, side: SideResult, rep: number): Promise<string> {
  const before = selfMem();
  const t0 = monoMs();
  const vm = new MicroVM({ kernel: c.vmlinux, initrd: c.initrd, memoryMiB: SNAP_MEMORY_MIB, vcpus: SNAP_VCPUS, bootProtocol: 'pvh', cmdline: SNAP_CMDLINE, extraCmdline: SNAP_EXTRA });
  const w = new ConsoleWatch(vm.console, (s) => { vm.console.write(s); });
  const dir = join(c.tmp, `flintvm-${rep}`);
  try {
    await vm.start();
    const answered = await w.answer(`b${rep}x`, c.probeMs, ANSWER_TIMEOUT_MS, SNAP_BANNER);
    side.boot.ms.push(round(answered - t0, 1));
    const after = selfMem();
    side.boot.rssKiB.push(after.rss - before.rss);
    side.boot.pssKiB.push(after.pss - before.pss);
    await sleep(SETTLE_MS);
    const s0 = monoMs();
    await vm.pause();
    const stopMs = monoMs() - s0;
    const info = await vm.snapshot(dir);
    side.snapshot.ms.push(round(monoMs() - s0, 1));
    side.snapshot.stopMs.push(round(stopMs, 1));
    (side.snapshot.callMs ??= []).push(round(info.ms, 1));
    (side.snapshot.memoryWritten ??= []).push(info.memoryWritten);
    side.snapshot.diskBytes.push(diskBytes(dir));
    side.snapshot.apparentBytes.push(apparentBytes(dir));
  } finally {
    await vm.stop();
  }
  const r0 = monoMs();
  const r = await MicroVM.restore(dir);
  const called = monoMs();
  try {
    const rw = new ConsoleWatch(r.console, (s) => { r.console.write(s); });
    const answered = await rw.answer(`r${rep}x`, c.probeMs, ANSWER_TIMEOUT_MS);
    side.restore.ms.push(round(answered - r0, 1));
    (side.restore.callMs ??= []).push(round(called - r0, 1));
  } finally {
    await r.stop();
  }
  return dir;
}

/** QEMU: boot, `stop` + `migrate` to a file, quit; `-incoming` from it once. Returns the file. */
async function qemuRep(c: Ctx, side: SideResult, rep: number): Promise<string> {
  const args = qemuMachineArgs(c.vmlinux, c.initrd, c.qemu.share);
  const sock = join(c.tmp, `qmp-${rep}.sock`);
  const file = join(c.tmp, `qemu-${rep}.mig`);
  const q = spawnQemu(c.qemu, [...args, '-qmp', `unix:${sock},server=on,wait=off`]);
  try {
    const answered = await q.watch.answer(`b${rep}x`, c.probeMs, ANSWER_TIMEOUT_MS, SNAP_BANNER).catch((e: Error) => { throw new Error(`${e.message}; stderr: ${q.stderr()}`); });
    side.boot.ms.push(round(answered - q.spawnAt, 1));
    const m = qemuMemKiB(q);
    side.boot.rssKiB.push(m.rss);
    side.boot.pssKiB.push(m.pss);
    const qmp = await Qmp.open(sock);
    await sleep(SETTLE_MS);
    try {
      const mig = await qemuMigrateToFile(qmp, file);
      side.snapshot.ms.push(round(mig.ms, 1));
      side.snapshot.stopMs.push(round(mig.stopMs, 1));
    } finally {
      qmp.close();
    }
  } finally {
    await killQemu(q);
  }
  // `cat` may still be writing the tail when QEMU reports completed: wait for the size to settle (untimed).
  let last = -1;
  for (let i = 0; i < 50 && apparentBytes(file) !== last; i++) { last = apparentBytes(file); await sleep(200); }
  side.snapshot.diskBytes.push(diskBytes(file));
  side.snapshot.apparentBytes.push(apparentBytes(file));
  const { q: r, runningAt } = await qemuIncoming(c.qemu, args, file, join(c.tmp, `qmp-r${rep}.sock`));
  try {
    const answered = await r.watch.answer(`r${rep}x`, c.probeMs, ANSWER_TIMEOUT_MS).catch((e: Error) => { throw new Error(`${e.message}; stderr: ${r.stderr()}`); });
    side.restore.ms.push(round(answered - r.spawnAt, 1));
    (side.restore.callMs ??= []).push(round(runningAt - r.spawnAt, 1));
  } finally {
    await killQemu(r);
  }
  return file;
}

/** How many of `asked` fit in the memory available now, at `perMiB` each (with a margin). */
function fitting(asked: number, perMiB: number): { n: number; avail: number } {
  const avail = memAvailableMiB();
  const n = Math.max(1, Math.min(asked, Math.floor((avail - 300) / (perMiB * 1.3))));
  return { n, avail };
}

async function flintvmClones(c: Ctx, dir: string, asked: number, perMiB: number, tag: string): Promise<CloneRep> {
  const { n, avail } = fitting(asked, perMiB);
  const rep: CloneRep = { n, memAvailableBeforeMiB: round(avail, 0) };
  // This process with one clone that answered.
  const one = await MicroVM.restore(dir);
  try {
    await new ConsoleWatch(one.console, (s) => { one.console.write(s); }).answer(`${tag}o`, c.probeMs, ANSWER_TIMEOUT_MS);
    const m1 = selfMem();
    rep.rss1KiB = m1.rss;
    rep.pss1KiB = m1.pss;
  } finally {
    await one.stop();
  }
  gc();
  const vms: MicroVM[] = [];
  const t0 = monoMs();
  try {
    const each = await Promise.all(Array.from({ length: n }, async (_, i) => {
      const vm = await MicroVM.restore(dir);
      vms.push(vm);
      return await new ConsoleWatch(vm.console, (s) => { vm.console.write(s); }).answer(`${tag}c${i}x`, c.probeMs, ANSWER_TIMEOUT_MS);
    }));
    rep.eachMs = each.map((t) => round(t - t0, 1)).sort((a, b) => a - b);
    rep.ms = rep.eachMs[rep.eachMs.length - 1];
    const mN = selfMem();
    rep.rssNKiB = mN.rss;
    rep.pssNKiB = mN.pss;
  } catch (e) {
    rep.error = (e as Error).message.slice(0, 1500);
  } finally {
    await Promise.all(vms.map((v) => v.stop().catch(() => {})));
  }
  return rep;
}

async function qemuClones(c: Ctx, file: string, asked: number, perMiB: number, tag: string): Promise<CloneRep> {
  const { n, avail } = fitting(asked, perMiB);
  const rep: CloneRep = { n, memAvailableBeforeMiB: round(avail, 0) };
  const args = qemuMachineArgs(c.vmlinux, c.initrd, c.qemu.share);
  const qs: QemuVm[] = [];
  const t0 = monoMs();
  try {
    const each = await Promise.all(Array.from({ length: n }, async (_, i) => {
      const { q } = await qemuIncoming(c.qemu, args, file, join(c.tmp, `qmp-${tag}-${i}.sock`));
      qs.push(q);
      return await q.watch.answer(`${tag}c${i}x`, c.probeMs, ANSWER_TIMEOUT_MS).catch((e: Error) => { throw new Error(`${e.message}; stderr: ${q.stderr()}`); });
    }));
    rep.eachMs = each.map((t) => round(t - t0, 1)).sort((a, b) => a - b);
    rep.ms = rep.eachMs[rep.eachMs.length - 1];
    const ms = qs.map(qemuMemKiB);
    rep.rssMeanKiB = round(ms.reduce((s, m) => s + m.rss, 0) / ms.length, 0);
    rep.pssMeanKiB = round(ms.reduce((s, m) => s + m.pss, 0) / ms.length, 0);
  } catch (e) {
    rep.error = (e as Error).message.slice(0, 1500);
  } finally {
    await Promise.all(qs.map(killQemu));
  }
  return rep;
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN; };

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    reps: { type: 'string', default: '5' }, clones: { type: 'string', default: '16,64' }, 'clone-reps': { type: 'string', default: '5' },
    'probe-ms': { type: 'string', default: '500' }, vmms: { type: 'string', default: 'flintvm,qemu' }, 'qemu-dir': { type: 'string', default: '/work/project/bench/.host-qemu' },
  } });
  const reps = Number(values.reps);
  const cloneCounts = values.clones!.split(',').filter(Boolean).map(Number);
  // One count for every N, or one per N ("3,1").
  const cloneRepList = values['clone-reps']!.split(',').map(Number);
  const cloneReps = cloneRepList[0]!;
  const probeMs = Number(values['probe-ms']);
  const vmms = values.vmms!.split(',');
  const before = loadInfo();
  const imgs = await defaultGuestImages({ quiet: true });
  const qemu = qemuPaths(values['qemu-dir']!);
  const c: Ctx = { vmlinux: imgs.vmlinux, initrd: imgs.initrd, probeMs, tmp: mkdtempSync(join(tmpdir(), 'snapbench-')), qemu };
  const res: SnapshotInnerResult = {
    reps, cloneReps, probeMs, memoryMiB: SNAP_MEMORY_MIB, vcpus: SNAP_VCPUS, cmdline: `${SNAP_CMDLINE} ${SNAP_EXTRA}`, loop: SNAP_LOOP,
    machine: machineInfo(), memAvailableStartMiB: round(memAvailableMiB(), 0), load: { before, after: before },
  };
  const f = vmms.includes('flintvm') ? (res.flintvm = emptySide()) : undefined;
  let qs: SideResult | undefined;
  if (vmms.includes('qemu')) {
    qs = res.qemu = emptySide();
    res.qemuCommand = `qemu-system-x86_64 ${qemuMachineArgs('vmlinux', 'initramfs.cpio.gz', 'share').join(' ')} [-qmp unix:SOCK,server=on,wait=off | -incoming exec:cat FILE]`;
    if (!existsSync(qemu.bin)) { qs.errors.push(`no QEMU bundle at ${qemu.bin}`); qs = undefined; }
  }
  const emit = () => { res.load.after = loadInfo(); console.log(`${SNAPSHOT_MARKER} ${JSON.stringify(res)}`); };
  let fSnap: string | undefined;
  let qSnap: string | undefined;
  for (let rep = 0; rep < reps; rep++) {
    if (f && f.errors.length === 0) {
      try {
        const d = await flintvmRep(c, f, rep);
        if (fSnap) rmSync(fSnap, { recursive: true, force: true });
        fSnap = d;
      } catch (e) { f.errors.push(`rep ${rep}: ${(e as Error).stack ?? e}`.slice(0, 3000)); }
    }
    if (qs && qs.errors.length === 0) {
      try {
        const file = await qemuRep(c, qs, rep);
        if (qSnap) rmSync(qSnap, { force: true });
        qSnap = file;
      } catch (e) { qs.errors.push(`rep ${rep}: ${(e as Error).stack ?? e}`.slice(0, 3000)); }
    }
    log(`rep ${rep}: flintvm boot ${f?.boot.ms.at(-1)} snapshot ${f?.snapshot.ms.at(-1)} restore ${f?.restore.ms.at(-1)}; QEMU boot ${qs?.boot.ms.at(-1)} migrate ${qs?.snapshot.ms.at(-1)} incoming ${qs?.restore.ms.at(-1)} (ms); MemAvailable ${memAvailableMiB().toFixed(0)} MiB`);
    emit();
  }
  // Per-clone memory estimates for the fit check: flintvm from the previous batch (a first guess until then), QEMU from its booted process.
  let fPer = 24; // MiB; measured in the test host: ~14 per clone (RSS), ~62 for a booted VM
  let qPer = qs && qs.boot.rssKiB.length ? median(qs.boot.rssKiB) / 1024 : 160;
  for (const [ci, asked] of cloneCounts.entries()) {
    const fs: CloneSeries | undefined = f && fSnap ? { asked, reps: [] } : undefined;
    const qsr: CloneSeries | undefined = qs && qSnap ? { asked, reps: [] } : undefined;
    if (fs) f!.clones.push(fs);
    if (qsr) qs!.clones.push(qsr);
    for (let rep = 0; rep < (cloneRepList[ci] ?? cloneReps); rep++) {
      if (fs && !fs.reps.some((r) => r.error)) {
        const r = await flintvmClones(c, fSnap!, asked, fPer, `f${asked}r${rep}`).catch((e: Error): CloneRep => ({ n: 0, memAvailableBeforeMiB: round(memAvailableMiB(), 0), error: e.message.slice(0, 1500) }));
        fs.reps.push(r);
        if (!r.error && r.n > 1) fPer = Math.max(8, (r.rssNKiB! - r.rss1KiB!) / (r.n - 1) / 1024); // measured; the guess only until then
        log(`flintvm ${r.n} clones: ${r.ms ?? r.error} ms, RSS ${r.rss1KiB} -> ${r.rssNKiB} KiB`);
      }
      if (qsr && !qsr.reps.some((r) => r.error)) {
        const r = await qemuClones(c, qSnap!, asked, qPer, `q${asked}r${rep}`).catch((e: Error): CloneRep => ({ n: 0, memAvailableBeforeMiB: round(memAvailableMiB(), 0), error: e.message.slice(0, 1500) }));
        qsr.reps.push(r);
        if (!r.error && r.rssMeanKiB) qPer = r.rssMeanKiB / 1024;
        log(`QEMU ${r.n} clones: ${r.ms ?? r.error} ms, RSS ${r.rssMeanKiB} KiB each`);
      }
      for (const x of [fs, qsr]) if (x && x.reps.some((r) => !r.error && r.n < asked)) x.note = `${asked} did not fit in the test host's memory: ran ${Math.min(...x.reps.map((r) => r.n))}`;
      emit(); // a partial result, should the host's time run out
    }
  }
  rmSync(c.tmp, { recursive: true, force: true });
  emit();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t0 = monoMs();
  await main();
  log(`inner part took ${((monoMs() - t0) / 1000).toFixed(1)} s`);
}
