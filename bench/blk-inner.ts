/**
 * The inner half of bench/blk.ts. It runs INSIDE the real-KVM test host (the
 * TCG-emulated L1 of test/hosts/run.ts), never on the build machine: it boots
 * the same guest (vmlinux + initramfs-bench.cpio.gz, which has fio) on the same raw image
 * with flintvm (MicroVM, virtio-blk) and with QEMU microvm
 * (virtio-blk-device), and runs fio in the guest.
 *
 * It expects in $FLINTVM_GUEST_DIR (/work/guest, carried in by blk.ts):
 * `vmlinux`, `initramfs-bench.cpio.gz` and, unless --no-qemu,
 * `qemu-bundle.tar` (qemu-system-x86_64, its libraries and the microvm
 * firmware, which the test host image does not have).
 *
 * Prints progress, then one line `FLINTVM-BLK-RESULT <json>` (BlkInnerResult).
 * Usage: node dist/bench/blk-inner.js [--reps N] [--runtime S] [--ramp S]
 *          [--depths 1,16] [--no-again] [--image-mib 256] [--memory-mib 256] [--no-qemu]
 */
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { MicroVM } from '../lib/microvm.js';
import { guestCommandCmdline } from '../lib/guest-command.js';

export const RESULT_MARKER = 'FLINTVM-BLK-RESULT ';

/** One fio job: the guest runs them in this order, each on /dev/vda. */
export interface BlkJob {
  name: string;
  rw: 'read' | 'write' | 'randread' | 'randwrite';
  bs: string;
  iodepth: number;
}

/** What fio reported for one job (terse v3 fields), in the direction the job did. */
export interface JobResult {
  /** KiB/s, as fio reports it (1 KiB = 1024 B). */
  bwKiBs: number;
  iops: number;
  /** Completion latency mean (fio clat), microseconds. */
  clatUs: number;
  /** Total latency mean (fio lat = submission + completion), microseconds. */
  latUs: number;
}

export interface BootRun {
  vmm: 'flintvm' | 'qemu';
  rep: number;
  /** From spawning the VM to its exit, ms (boot + every fio job + shutdown). */
  wallMs: number;
  ok: boolean;
  error?: string;
  jobs: Record<string, JobResult>;
}

export interface BlkInnerResult {
  jobs: BlkJob[];
  reps: number;
  runtimeS: number;
  rampS: number;
  imageMiB: number;
  memoryMiB: number;
  flintvmCmdline: string;
  qemu: { argv: string[]; version: string } | null;
  runs: BootRun[];
  testHost: { loadavgStart: string; loadavgEnd: string; kernel: string; cpus: number };
}

const IMAGE = '/tmp/flintvm-blk.img';
const QEMU_DIR = '/tmp/flintvm-blk-qemu';
/** Kernel parameters both VMMs get (flintvm's own defaults come first on its side). */
const COMMON_CMDLINE = 'quiet';
/** QEMU's side: flintvm's default line (arch/x86_64/boot.ts) minus the i8042 knobs, with reboot=t (see guest/README.md). */
const QEMU_CMDLINE = 'console=ttyS0 reboot=t panic=1 pci=off tsc=reliable';

/** Suffix of the repeated jobs: the first depth's jobs run again, once every other job has run. */
export const AGAIN_SUFFIX = '-again';

/**
 * The guest runs these in order: for each depth, 1 MiB sequential read and write
 * and 4 KiB random read and write; then, unless `again` is false, the first
 * depth's four jobs once more, named `<job>-again`.
 *
 * Why the repeats: the first jobs of a boot are also where V8 tiers up
 * flintvm's I/O path. Its vCPU exit handler, queue walk and block request code
 * run in V8's interpreter first, and a helper thread then compiles each with
 * TurboFan once it is hot. In the TCG test host one such compile takes 20 to
 * 220 ms, and a 1 MiB qd1 job is only about 600 requests, so the first job of a
 * boot measures a cold VMM: a trace of one 8 s run (--trace-opt) compiled 15
 * functions of the I/O path in it. The repeats measure the same VMM warm.
 * QEMU, a C program, runs the same repeats, so the pair stays like for like.
 */
export function blkJobs(depths: readonly number[], again = true): BlkJob[] {
  const jobs: BlkJob[] = [];
  for (const qd of depths) {
    jobs.push({ name: `seqread-1M-qd${qd}`, rw: 'read', bs: '1M', iodepth: qd });
    jobs.push({ name: `seqwrite-1M-qd${qd}`, rw: 'write', bs: '1M', iodepth: qd });
    jobs.push({ name: `randread-4k-qd${qd}`, rw: 'randread', bs: '4k', iodepth: qd });
    jobs.push({ name: `randwrite-4k-qd${qd}`, rw: 'randwrite', bs: '4k', iodepth: qd });
  }
  if (again && jobs.length > 0) jobs.push(...jobs.slice(0, 4).map((j) => ({ ...j, name: j.name + AGAIN_SUFFIX })));
  return jobs;
}

/**
 * The guest's shell command: fio per job (libaio, O_DIRECT, time-based), each
 * reduced by awk to one line `BLKRES <name> <error> <read bw KiB/s> <read iops>
 * <read clat us> <read lat us> <write bw> <write iops> <write clat> <write lat>`
 * (fio terse v3 fields 5, 7, 8, 16, 40, 48, 49, 57, 81). Kept short: it
 * travels base64'd on the 2 KiB kernel command line.
 */
export function guestScript(jobs: readonly BlkJob[], runtimeS: number, rampS: number): string {
  const list = jobs.map((j) => `${j.name}:${j.rw}:${j.bs}:${j.iodepth}`).join(' ');
  const fio = `fio --name=$1 --filename=/dev/vda --direct=1 --ioengine=libaio --rw=$2 --bs=$3 --iodepth=$4 --runtime=${runtimeS} --ramp_time=${rampS} --time_based --output-format=terse --terse-version=3`;
  const awk = `awk -F';' -v j=$1 '$1==3{print "BLKRES",j,$5,$7,$8,$16,$40,$48,$49,$57,$81}' /tmp/o`;
  return `IFS=:; for j in ${list}; do set -- $j; ${fio} >/tmp/o || echo BLKERR $1 fio exit $?; ${awk}; done; echo BLKDONE`;
}

/** BLKRES lines -> results, in the direction each job did. */
export function parseGuestOutput(out: string, jobs: readonly BlkJob[]): { jobs: Record<string, JobResult>; done: boolean; errors: string[] } {
  const res: Record<string, JobResult> = {};
  const errors: string[] = [];
  for (const line of out.split('\n')) {
    const l = line.replace(/\r$/, '').trim();
    if (l.startsWith('BLKERR')) errors.push(l);
    if (!l.startsWith('BLKRES ')) continue;
    const [, name, err, ...f] = l.split(/\s+/);
    const job = jobs.find((j) => j.name === name);
    if (!job || f.length < 8) continue;
    if (err !== '0') { errors.push(`${name}: fio error ${err}`); continue; }
    const n = f.map(Number);
    const w = job.rw === 'write' || job.rw === 'randwrite' ? 4 : 0;
    res[job.name] = { bwKiBs: n[w]!, iops: n[w + 1]!, clatUs: n[w + 2]!, latUs: n[w + 3]! };
  }
  for (const j of jobs) if (!res[j.name] && !errors.some((e) => e.includes(j.name))) errors.push(`${j.name}: no result`);
  return { jobs: res, done: /^BLKDONE\s*$/m.test(out.replace(/\r/g, '')), errors };
}

function fillImage(path: string, mib: number): void {
  // Written through, not sparse: tmpfs holes read as zero pages and would flatter reads.
  const fd = openSync(path, 'w');
  try {
    const chunk = randomBytes(1 << 20);
    for (let i = 0; i < mib; i++) {
      chunk.writeUInt32LE(i, 0);
      writeSync(fd, chunk);
    }
  } finally {
    closeSync(fd);
  }
}

async function runFlintvm(rep: number, o: RunOpts): Promise<BootRun> {
  const t0 = performance.now();
  const vm = new MicroVM({
    kernel: o.kernel, initrd: o.initrd, memoryMiB: o.memoryMiB, vcpus: 1, drives: [{ path: IMAGE }],
    extraCmdline: `${COMMON_CMDLINE} ${guestCommandCmdline(['sh', '-c', o.script])}`,
  });
  let out = '';
  vm.console.on('data', (c: Buffer) => { out += c.toString(); });
  let error: string | undefined;
  try {
    await vm.start();
    const timer = setTimeout(() => { error = `timed out after ${o.timeoutS} s`; void vm.stop(); }, o.timeoutS * 1000);
    const exit = await vm.wait();
    clearTimeout(timer);
    if (exit.reason !== 'guest-exit' || exit.exitStatus !== 0) error ??= `VM ended ${exit.reason} status ${String(exit.exitStatus)}`;
  } catch (e) {
    error = (e as Error).message;
  }
  return finishRun('flintvm', rep, t0, out, error, o);
}

async function runQemu(rep: number, o: RunOpts): Promise<BootRun> {
  const t0 = performance.now();
  const child = spawn(join(QEMU_DIR, 'bin/qemu-system-x86_64'), o.qemuArgs, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LD_LIBRARY_PATH: join(QEMU_DIR, 'lib') },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr.on('data', (c: Buffer) => { err = (err + c.toString()).slice(-2000); });
  let error: string | undefined;
  const timer = setTimeout(() => { error = `timed out after ${o.timeoutS} s`; child.kill('SIGKILL'); }, o.timeoutS * 1000);
  const code = await new Promise<number | null>((resolve) => {
    child.on('error', (e) => { error ??= e.message; resolve(null); });
    child.on('close', (c) => resolve(c));
  });
  clearTimeout(timer);
  // -no-reboot: the guest's reboot (reboot=t) ends QEMU with status 0.
  if (code !== 0) error ??= `qemu exited ${String(code)}: ${err.trim().split('\n').slice(-3).join(' | ')}`;
  return finishRun('qemu', rep, t0, out, error, o);
}

function finishRun(vmm: 'flintvm' | 'qemu', rep: number, t0: number, out: string, error: string | undefined, o: RunOpts): BootRun {
  const wallMs = performance.now() - t0;
  const p = parseGuestOutput(out, o.jobs);
  const errs = [...(error ? [error] : []), ...(p.done ? [] : ['no BLKDONE from the guest']), ...p.errors];
  const run: BootRun = { vmm, rep, wallMs, ok: errs.length === 0, jobs: p.jobs };
  if (errs.length) {
    run.error = errs.join('; ');
    const tail = out.replace(/\r/g, '').trim().split('\n').slice(-15).join('\n');
    console.log(`blk: ${vmm} rep ${rep} FAILED: ${run.error}\n--- guest console tail ---\n${tail}\n---`);
  }
  const line = o.jobs.map((j) => {
    const r = p.jobs[j.name];
    return r ? `${j.name} ${(r.bwKiBs / 1024).toFixed(1)}MiB/s ${r.iops}iops clat ${r.clatUs.toFixed(0)}us` : `${j.name} -`;
  }).join(', ');
  console.log(`blk: ${vmm} rep ${rep}: ${(wallMs / 1000).toFixed(1)} s; ${line}`);
  return run;
}

interface RunOpts {
  kernel: string;
  initrd: string;
  memoryMiB: number;
  script: string;
  jobs: BlkJob[];
  qemuArgs: string[];
  timeoutS: number;
}

export function qemuArgs(o: { kernel: string; initrd: string; memoryMiB: number; image: string; dataDir: string; cmdline: string }): string[] {
  return [
    '-M', 'microvm,x-option-roms=off,rtc=off,isa-serial=on,acpi=off',
    // -nodefaults drops the serial backend -nographic would add, so the console goes to stdout explicitly.
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
    '-enable-kvm', '-cpu', 'host', '-smp', '1', '-m', String(o.memoryMiB),
    '-L', o.dataDir,
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.cmdline,
    // Buffered host I/O on the image through QEMU's thread pool, flushes as fdatasync: the closest match to
    // flintvm's virtio-blk (synchronous preadv/pwritev on a buffered fd, fdatasync on VIRTIO_BLK_T_FLUSH).
    '-drive', `id=d0,file=${o.image},format=raw,if=none,cache=writeback,aio=threads`,
    '-device', 'virtio-blk-device,drive=d0',
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '5' },
      runtime: { type: 'string', default: '5' },
      ramp: { type: 'string', default: '1' },
      depths: { type: 'string', default: '1,16' },
      'image-mib': { type: 'string', default: '256' },
      'memory-mib': { type: 'string', default: '256' },
      'no-qemu': { type: 'boolean', default: false },
      'no-again': { type: 'boolean', default: false },
    },
  });
  const reps = Number(values.reps);
  const runtimeS = Number(values.runtime);
  const rampS = Number(values.ramp);
  const depths = values.depths.split(',').map(Number);
  const imageMiB = Number(values['image-mib']);
  const memoryMiB = Number(values['memory-mib']);
  const dir = process.env.FLINTVM_GUEST_DIR ?? '/work/guest';
  const kernel = join(dir, 'vmlinux');
  const initrd = join(dir, 'initramfs-bench.cpio.gz');
  for (const f of [kernel, initrd]) if (!existsSync(f)) throw new Error(`${f} missing (carry the guest images in; see bench/blk.ts)`);
  const loadavgStart = readFileSync('/proc/loadavg', 'utf8').trim();

  const jobs = blkJobs(depths, !values['no-again']);
  const script = guestScript(jobs, runtimeS, rampS);
  const cmd = guestCommandCmdline(['sh', '-c', script]);
  console.log(`blk: ${jobs.length} fio jobs per boot, ${reps} reps; guest command ${script.length} bytes, ${cmd.length} on the command line`);

  let qemu: BlkInnerResult['qemu'] = null;
  let qArgs: string[] = [];
  if (!values['no-qemu']) {
    const bundle = join(dir, 'qemu-bundle.tar');
    if (!existsSync(bundle)) throw new Error(`${bundle} missing; run with --no-qemu or carry it in (bench/blk.ts does)`);
    rmSync(QEMU_DIR, { recursive: true, force: true });
    mkdirSync(QEMU_DIR, { recursive: true });
    execFileSync('tar', ['-xf', bundle, '-C', QEMU_DIR]);
    const env = { ...process.env, LD_LIBRARY_PATH: join(QEMU_DIR, 'lib') };
    const version = execFileSync(join(QEMU_DIR, 'bin/qemu-system-x86_64'), ['--version'], { env, encoding: 'utf8' }).split('\n')[0]!.trim();
    qArgs = qemuArgs({
      kernel, initrd, memoryMiB, image: IMAGE, dataDir: join(QEMU_DIR, 'share/qemu'),
      cmdline: `${QEMU_CMDLINE} ${COMMON_CMDLINE} ${cmd}`,
    });
    qemu = { argv: ['qemu-system-x86_64', ...qArgs], version };
    console.log(`blk: ${version}`);
  }

  console.log(`blk: writing a ${imageMiB} MiB raw image at ${IMAGE} (tmpfs)`);
  fillImage(IMAGE, imageMiB);

  const perBootS = jobs.length * (runtimeS + rampS);
  const o: RunOpts = { kernel, initrd, memoryMiB, script, jobs, qemuArgs: qArgs, timeoutS: Math.max(300, perBootS * 6 + 240) };
  const runs: BootRun[] = [];
  for (let rep = 0; rep < reps; rep++) {
    // Alternate which VMM goes first, so slow drift of the host hits both alike.
    const order: ('flintvm' | 'qemu')[] = qemu ? (rep % 2 ? ['qemu', 'flintvm'] : ['flintvm', 'qemu']) : ['flintvm'];
    for (const vmm of order) runs.push(vmm === 'flintvm' ? await runFlintvm(rep, o) : await runQemu(rep, o));
  }

  const result: BlkInnerResult = {
    jobs, reps, runtimeS, rampS, imageMiB, memoryMiB,
    flintvmCmdline: `<flintvm default> virtio_mmio.device=... ${COMMON_CMDLINE} ${cmd}`,
    qemu, runs,
    testHost: {
      loadavgStart,
      loadavgEnd: readFileSync('/proc/loadavg', 'utf8').trim(),
      kernel: readFileSync('/proc/version', 'utf8').trim(),
      cpus: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    },
  };
  rmSync(IMAGE, { force: true });
  console.log(RESULT_MARKER + JSON.stringify(result));
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(`blk-inner: ${(e as Error).stack ?? String(e)}`);
      process.exit(1);
    },
  );
}
