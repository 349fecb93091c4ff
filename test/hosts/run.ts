// Run a command inside a real-KVM test host.
//
// The local /dev/kvm cannot boot Linux (see ENVIRONMENT.md §1), so real-guest
// tests run inside a Linux "L1" booted by QEMU's TCG CPU (-cpu max), which
// emulates AMD SVM (x86_64) or ARM EL2 (arm64, QEMU's virt board with
// virtualization=on): the L1 has a real /dev/kvm, and the project runs there
// unchanged.
//
// Per run:
//   1. `bash test/hosts/<arch>-image.sh` gives the cached base image
//      (x86_64: vmlinuz + base.cpio: busybox, node, KVM modules, /init;
//      arm64: Image + base.cpio: busybox, node for linux-arm64 and its
//      libraries, /init, plus koffi's arm64 build, which goes into the
//      overlay's node_modules/@koromix/).
//   2. A second, uncompressed newc cpio archive is written after it (Linux
//      accepts concatenated archives as one initramfs) with the project
//      (/work/project: package.json, bin/*.cjs (and any bin/*.js), dist/, node_modules/, test/hosts/*.mjs),
//      the guest images (/work/guest), /work/env and /work/cmd.
//   3. QEMU boots it with the serial console on its stdout; the init prints
//      `FLINTVM-HOST-READY <uptime>` before the command and
//      `FLINTVM-HOST-EXIT <status>` after it, then powers off.
//   4. Meanwhile a watch (stall.ts) nudges a test host whose QEMU has not run
//      for 20 s: QEMU's TCG can leave a timer interrupt pending while the CPU
//      sleeps; a key press wakes it.
//
// Only node builtins are used here.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
import { MAX_NUDGES, STALL_LIMIT_MS, StallWatch, nudge, processActivity } from './stall.js';

export type TestHostArch = 'x86_64' | 'arm64';

export interface TestHostOptions {
  arch: TestHostArch;
  /** An argv array (exec'd as is) or a shell script (run by busybox sh). Runs in /work/project. */
  command: string[] | string;
  /** Kill the test host after this long. Default 15 minutes (x86_64) or 30 minutes (arm64, a slower emulation). */
  timeoutMs?: number;
  /** Extra environment for the command inside. DEBUG is passed through from process.env unless set here. */
  env?: Record<string, string>;
  /**
   * Directory of guest images to carry in as /work/guest. Default: $FLINTVM_GUEST_DIR, else the last
   * stdout line of `bash guest/build.sh`. Pass null (or '') for none.
   */
  guestDir?: string | null;
  /** Receives the test host's console output, line by line. Default: process.stdout. */
  onOutput?: (chunk: string) => void;
  /** Receives progress messages of the host side. Default: process.stderr. */
  onLog?: (line: string) => void;
  /** Keep kernel messages on the console (drops `quiet`). */
  verbose?: boolean;
  /** Memory of the test host in MiB. Default 4096 (or $FLINTVM_HOST_MEM). */
  memoryMiB?: number;
  /** vCPUs of the test host. Default 1 (or $FLINTVM_HOST_CPUS); more uses multi-threaded TCG. */
  cpus?: number;
  /** The repository root. Default: found from this module's location. */
  projectDir?: string;
  /** More repository-relative files or directories to carry into /work/project. */
  extraPaths?: string[];
  /** Called when the command starts, with the path of the test host's QMP socket (QEMU's machine protocol). */
  onReady?: (host: { qmpPath: string }) => void;
}

export interface TestHostResult {
  /** The command's exit status; 124 on timeout; 125 when the test host failed before or around the command. */
  exitCode: number;
  /** Everything the console printed (CRs removed). */
  output: string;
  /** What the command printed: the console output between the READY and EXIT lines. */
  commandOutput: string;
  /** From QEMU's start to the READY line (ms); -1 if it never came. */
  bootMs: number;
  /** The whole call, image and overlay included (ms). */
  totalMs: number;
  /** Getting the base image (ms): ~0.5 s when cached. */
  imageMs: number;
  /** Writing the per-run overlay (ms). */
  overlayMs: number;
  /** Bytes of the per-run overlay. */
  overlayBytes: number;
  /** The test host's own uptime (s) when the command started. */
  guestUptimeAtReady: number;
  timedOut: boolean;
  /** Why the run failed, when it did for a reason other than the command's own status. */
  error?: string;
  /** Where the guest images came from, or null if none were carried. */
  guestDir: string | null;
  /** How many times the test host used no CPU for STALL_LIMIT_MS and got a key press (stall.ts). */
  nudges: number;
}

const READY_RE = /^FLINTVM-HOST-READY ([0-9.]+)\s*$/;
const EXIT_RE = /^FLINTVM-HOST-EXIT (\d+)\s*$/;

interface ArchConfig {
  /** The image script, relative to the repository root. */
  imageScript: string;
  /** The kernel file in the image directory. */
  kernel: string;
  qemu: string;
  /** The Debian package that has `qemu`. */
  qemuPackage: string;
  /** QEMU arguments before the common ones (machine, accelerator, CPU). */
  machineArgs: (cpuModel: string, cpus: number) => string[];
  /** CPU model unless $FLINTVM_HOST_QEMU_CPU says otherwise. */
  defaultCpu: string;
  console: string;
  defaultTimeoutMs: number;
  /** Directories of the image directory that the overlay adds to /work/project (same relative path). */
  overlayTrees: string[];
}

const ARCHES: Record<TestHostArch, ArchConfig> = {
  x86_64: {
    imageScript: 'test/hosts/x86_64-image.sh',
    kernel: 'vmlinuz',
    qemu: 'qemu-system-x86_64',
    qemuPackage: 'qemu-system-x86',
    machineArgs: (cpu, cpus) => ['-accel', cpus > 1 ? 'tcg,thread=multi' : 'tcg', '-cpu', cpu],
    defaultCpu: 'max',
    console: 'ttyS0',
    defaultTimeoutMs: 15 * 60 * 1000,
    overlayTrees: [],
  },
  arm64: {
    imageScript: 'test/hosts/arm64-image.sh',
    kernel: 'Image',
    qemu: 'qemu-system-aarch64',
    qemuPackage: 'qemu-system-arm',
    // virtualization=on: the CPU has EL2, so the kernel boots there and KVM (built into Debian's arm64
    // kernel) comes up with VHE; gic-version=3 gives KVM a GICv3 to emulate for its guests.
    machineArgs: (cpu, cpus) => ['-M', 'virt,virtualization=on,gic-version=3', '-accel', cpus > 1 ? 'tcg,thread=multi' : 'tcg', '-cpu', cpu],
    // pauth-impdef: QEMU's own pointer-authentication hash instead of QARMA, which is costly to emulate
    // and which Debian's kernel uses on every function return.
    // sve=off,sme=off, a precaution: with SVE/SME on, a node process that ran KVM guests in the host
    // crashed (SIGSEGV, or a corrupted JS heap: "n.toString is not a function" on a module constant) in
    // 3 of 10 runs of the arm64 boot+virtio tests, all under heavy load on the build machine, and in 0 of 4
    // runs without them. Not proven, but SVE register state lost across the host kernel's KVM guest
    // switches under QEMU 7.2's emulated EL2 would do it (glibc's string functions use SVE). Guests do
    // not need SVE.
    defaultCpu: 'max,pauth-impdef=on,sve=off,sme=off',
    console: 'ttyAMA0',
    defaultTimeoutMs: 30 * 60 * 1000,
    overlayTrees: ['node_modules/@koromix/koffi-linux-arm64'],
  },
};

function archConfig(arch: string): ArchConfig {
  const a = arch === 'aarch64' ? 'arm64' : arch;
  if (a !== 'x86_64' && a !== 'arm64') throw new Error(`unknown test host arch ${JSON.stringify(arch)} (x86_64 or arm64)`);
  return ARCHES[a];
}

/** Find the repository root: the nearest ancestor holding package.json and test/hosts/x86_64-image.sh. */
export function findProjectDir(start = path.dirname(fileURLToPath(import.meta.url))): string {
  let dir = start;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'test/hosts/x86_64-image.sh'))) {
      return dir;
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the flintvm repository root above ${start}`);
    dir = up;
  }
}

function findOnPath(cmd: string): string | null {
  for (const d of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')) {
    if (!d) continue;
    const p = path.join(d, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* keep looking */
    }
  }
  return null;
}

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Run a script, passing its stderr to log, and return the last non-empty line of its stdout. */
function runForLastLine(cmd: string, args: string[], cwd: string, log: (l: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errTail = '';
    let errBuf = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
    });
    child.stderr.on('data', (d: string) => {
      errBuf += d;
      const lines = errBuf.split('\n');
      errBuf = lines.pop() ?? '';
      for (const l of lines) log(l);
      errTail = (errTail + d).slice(-2000);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (errBuf) log(errBuf);
      if (code !== 0) {
        reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${errTail.trim().split('\n').slice(-5).join(' | ')}`));
        return;
      }
      const last = out.trim().split('\n').pop()?.trim() ?? '';
      resolve(last);
    });
  });
}

// ---------------------------------------------------------------------------
// newc cpio writer

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

class CpioWriter {
  private ino = 1;
  private chunks: Buffer[] = [];
  private pending = 0;
  bytes = 0;
  private readonly dirs = new Set<string>();

  constructor(private readonly fd: number) {}

  private push(b: Buffer): void {
    this.chunks.push(b);
    this.pending += b.length;
    this.bytes += b.length;
    if (this.pending >= 1 << 20) this.flush();
  }

  flush(): void {
    if (this.chunks.length === 0) return;
    const b = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    let off = 0;
    while (off < b.length) off += fs.writeSync(this.fd, b, off, b.length - off);
    this.chunks = [];
    this.pending = 0;
  }

  private pad(n: number): void {
    const p = (4 - (n % 4)) % 4;
    if (p) this.push(Buffer.alloc(p));
  }

  private entry(name: string, mode: number, data: Buffer | null, mtime: number): void {
    const size = data ? data.length : 0;
    if (size > 0xffffffff) throw new Error(`${name}: newc cpio cannot hold files of 4 GiB or more`);
    const nameBytes = Buffer.from(name + '\0', 'utf8');
    const h = (v: number) => (v >>> 0).toString(16).padStart(8, '0');
    const isDir = (mode & S_IFMT) === S_IFDIR;
    const header =
      '070701' +
      h(this.ino++) +
      h(mode) +
      h(0) + // uid
      h(0) + // gid
      h(isDir ? 2 : 1) +
      h(mtime) +
      h(size) +
      h(0) + h(0) + h(0) + h(0) + // dev major/minor, rdev major/minor
      h(nameBytes.length) +
      h(0); // check
    const hb = Buffer.from(header, 'ascii');
    this.push(hb);
    this.push(nameBytes);
    this.pad(hb.length + nameBytes.length);
    if (data && size) {
      this.push(data);
      this.pad(size);
    }
  }

  /** A directory and its missing parents (archive names have no leading slash). */
  dir(name: string, perm = 0o755): void {
    name = name.replace(/^\/+|\/+$/g, '');
    if (!name || this.dirs.has(name)) return;
    const parent = path.posix.dirname(name);
    if (parent !== '.') this.dir(parent);
    this.dirs.add(name);
    this.entry(name, S_IFDIR | (perm & 0o7777), null, 0);
  }

  file(name: string, data: Buffer, perm = 0o644, mtime = 0): void {
    name = name.replace(/^\/+/, '');
    this.dir(path.posix.dirname(name));
    this.entry(name, S_IFREG | (perm & 0o7777), data, mtime);
  }

  symlink(name: string, target: string): void {
    name = name.replace(/^\/+/, '');
    this.dir(path.posix.dirname(name));
    this.entry(name, S_IFLNK | 0o777, Buffer.from(target, 'utf8'), 0);
  }

  trailer(): void {
    this.entry('TRAILER!!!', 0, null, 0);
    // Pad the archive to a 512-byte multiple, as cpio does.
    const p = (512 - (this.bytes % 512)) % 512;
    if (p) this.push(Buffer.alloc(p));
    this.flush();
  }
}

export interface OverlaySpec {
  projectDir: string;
  guestDir: string | null;
  env: Record<string, string>;
  command: string[] | string;
  extraPaths?: string[];
  /** Directories from outside the repository to add, each at `dest` (relative to the archive root). */
  extraTrees?: { src: string; dest: string }[];
}

const SKIP_NODE_MODULES = (rel: string): boolean => {
  // rel is relative to node_modules
  const top = rel.split('/')[0] ?? '';
  return top === 'typescript' || top.startsWith('@typescript') || top === '.cache';
};

/**
 * Copy a file tree into the archive under `dest`. Symlinks that stay inside `root` are kept; others are
 * followed. `above` holds the directories (dev:ino) on the way down: a followed link that leads back to one
 * of them is a loop, which would otherwise copy the same tree again at every depth until the path grew past
 * PATH_MAX, so it is an error that names the link.
 */
function addTree(w: CpioWriter, src: string, dest: string, root: string, skip?: (rel: string) => boolean, rel = '', above: ReadonlySet<string> = new Set()): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(src);
  } catch {
    return;
  }
  if (st.isSymbolicLink()) {
    const target = fs.readlinkSync(src);
    const resolved = path.resolve(path.dirname(src), target);
    if (!path.isAbsolute(target) && (resolved === root || resolved.startsWith(root + path.sep))) {
      w.symlink(dest, target);
      return;
    }
    try {
      st = fs.statSync(src);
    } catch {
      return; // dangling and outside the tree: leave it out
    }
  }
  if (st.isDirectory()) {
    const key = `${st.dev}:${st.ino}`;
    if (above.has(key)) {
      throw new Error(`test host overlay: ${src} is a symbolic link back to a directory that contains it (a loop); remove the link or make it relative inside ${root}`);
    }
    const down = new Set(above).add(key);
    w.dir(dest, st.mode & 0o7777);
    const names = fs.readdirSync(src).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      if (skip?.(r)) continue;
      addTree(w, path.join(src, n), `${dest}/${n}`, root, skip, r, down);
    }
  } else if (st.isFile()) {
    w.file(dest, fs.readFileSync(src), st.mode & 0o7777, Math.floor(st.mtimeMs / 1000));
  }
}

/** Write the per-run overlay archive to `fd` (at its current end). Returns its size in bytes. */
export function writeOverlay(fd: number, spec: OverlaySpec): number {
  const w = new CpioWriter(fd);
  const root = spec.projectDir;
  const P = 'work/project';
  w.dir(P);
  w.file(`${P}/package.json`, fs.readFileSync(path.join(root, 'package.json')));
  const dist = path.join(root, 'dist');
  if (fs.existsSync(dist)) addTree(w, dist, `${P}/dist`, root);
  const nm = path.join(root, 'node_modules');
  if (fs.existsSync(nm)) addTree(w, nm, `${P}/node_modules`, root, SKIP_NODE_MODULES);
  // The package's commands as users run them (bin/<name>.cjs, which runs the bundled command: bin/launch.cjs).
  const binDir = path.join(root, 'bin');
  if (fs.existsSync(binDir)) for (const n of fs.readdirSync(binDir).sort()) if (/\.c?js$/.test(n)) addTree(w, path.join(binDir, n), `${P}/bin/${n}`, root);
  const hostsDir = path.join(root, 'test/hosts');
  for (const n of fs.readdirSync(hostsDir).sort()) {
    if (n.endsWith('.mjs')) addTree(w, path.join(hostsDir, n), `${P}/test/hosts/${n}`, root);
  }
  for (const e of spec.extraPaths ?? []) {
    const rel = path.normalize(e).replace(/^(\.\.(\/|$))+/, '').replace(/^\/+/, '');
    addTree(w, path.join(root, rel), `${P}/${rel}`, root);
  }
  for (const t of spec.extraTrees ?? []) {
    if (!fs.statSync(t.src, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`${t.src} is not a directory`);
    const dest = t.dest.replace(/^\/+/, '').replace(/\/+$/, '');
    // An empty dest lays the tree over the test host's own / (the directories already there are merged).
    if (dest === '') for (const n of fs.readdirSync(t.src).sort()) addTree(w, path.join(t.src, n), n, t.src);
    else addTree(w, t.src, dest, t.src);
  }
  if (spec.guestDir) {
    // Top-level regular files only (vmlinux, bzImage, initramfs.cpio.gz, disk images, ...).
    w.dir('work/guest');
    for (const n of fs.readdirSync(spec.guestDir).sort()) {
      const p = path.join(spec.guestDir, n);
      let st: fs.Stats;
      try {
        st = fs.statSync(p);
      } catch {
        continue;
      }
      if (st.isFile()) w.file(`work/guest/${n}`, fs.readFileSync(p), st.mode & 0o7777, Math.floor(st.mtimeMs / 1000));
    }
  }
  const envLines = Object.entries(spec.env).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad environment variable name: ${JSON.stringify(k)}`);
    return `export ${k}=${shQuote(v)}\n`;
  });
  w.file('work/env', Buffer.from(envLines.join('')), 0o644);
  const cmd =
    typeof spec.command === 'string'
      ? spec.command
      : spec.command.length === 0
        ? 'true'
        : 'exec ' + spec.command.map(shQuote).join(' ');
  w.file('work/cmd', Buffer.from(`#!/bin/sh\n${cmd}\n`), 0o755);
  w.trailer();
  return w.bytes;
}

// ---------------------------------------------------------------------------
// cleanup of QEMU children and temp dirs, also on exit and signals

const live = new Set<{ child: ChildProcess | null; tmp: string | null }>();
let handlersInstalled = false;

function killAll(): void {
  for (const r of live) {
    try {
      if (r.child && r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    } catch {
      /* ignore */
    }
    try {
      if (r.tmp) fs.rmSync(r.tmp, { recursive: true, force: true });
    } catch {
      /* ignore */
    }
  }
}

function onSignal(sig: NodeJS.Signals): void {
  killAll();
  uninstallHandlers();
  process.kill(process.pid, sig);
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killAll);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
}

function uninstallHandlers(): void {
  if (!handlersInstalled) return;
  handlersInstalled = false;
  process.off('exit', killAll);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal);
}

// ---------------------------------------------------------------------------

async function resolveGuestDir(opts: TestHostOptions, arch: TestHostArch, projectDir: string, log: (l: string) => void): Promise<string | null> {
  if (opts.guestDir !== undefined) {
    if (!opts.guestDir) return null;
    if (!fs.statSync(opts.guestDir, { throwIfNoEntry: false })?.isDirectory()) {
      throw new Error(`guest directory ${opts.guestDir} does not exist`);
    }
    return path.resolve(opts.guestDir);
  }
  const fromEnv = process.env.FLINTVM_GUEST_DIR;
  if (fromEnv) {
    if (fs.statSync(fromEnv, { throwIfNoEntry: false })?.isDirectory()) return path.resolve(fromEnv);
    log(`FLINTVM_GUEST_DIR=${fromEnv} is not a directory; running without guest images`);
    return null;
  }
  const script = path.join(projectDir, 'guest/build.sh');
  if (!fs.existsSync(script)) {
    log('guest/build.sh does not exist yet; running without guest images');
    return null;
  }
  try {
    const args = arch === 'arm64' ? ['--arch', 'arm64'] : [];
    log(`getting guest images: bash guest/build.sh ${args.join(' ')}`.trim());
    const dir = await runForLastLine('bash', [script, ...args], projectDir, (l) => log(`  ${l}`));
    if (dir && fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) return dir;
    log(`guest/build.sh printed ${JSON.stringify(dir)}, not a directory; running without guest images`);
  } catch (e) {
    log(`guest/build.sh failed; running without guest images (${(e as Error).message})`);
  }
  return null;
}

function lastOutput(output: string): string {
  const lines = output.split('\n').filter((l) => l.trim() !== '');
  const tail = lines.slice(-5).join(' | ');
  return tail.length > 600 ? '...' + tail.slice(-600) : tail || '(none)';
}

export async function runInTestHost(opts: TestHostOptions): Promise<TestHostResult> {
  const t0 = performance.now();
  const arch: TestHostArch = opts.arch === ('aarch64' as string) ? 'arm64' : opts.arch;
  const cfg = archConfig(arch);
  const log = opts.onLog ?? ((l: string) => process.stderr.write(`flintvm-host: ${l}\n`));
  const onOutput = opts.onOutput ?? ((c: string) => process.stdout.write(c));
  const projectDir = opts.projectDir ? path.resolve(opts.projectDir) : findProjectDir();
  const timeoutMs = opts.timeoutMs ?? cfg.defaultTimeoutMs;
  const memoryMiB = opts.memoryMiB ?? (Number(process.env.FLINTVM_HOST_MEM) || 4096);
  // One vCPU by default: on the 2-core build machines, -smp 2 with multi-threaded TCG booted ~1-1.5 s
  // slower and ran two CPU-bound processes no faster than -smp 1 (measured; see the report).
  const cpus = opts.cpus ?? (Number(process.env.FLINTVM_HOST_CPUS) || 1);
  // Only for testing the harness itself (e.g. 'qemu64,-svm' to check the no-/dev/kvm path).
  const cpuModel = process.env.FLINTVM_HOST_QEMU_CPU || cfg.defaultCpu;

  // (a) base image
  const tImg = performance.now();
  const imageDir = await runForLastLine('bash', [path.join(projectDir, cfg.imageScript)], projectDir, log);
  const imageMs = performance.now() - tImg;
  const kernel = path.join(imageDir, cfg.kernel);
  const base = path.join(imageDir, 'base.cpio');
  const scriptName = path.basename(cfg.imageScript);
  if (!fs.existsSync(kernel) || !fs.existsSync(base)) {
    throw new Error(`${scriptName} printed ${JSON.stringify(imageDir)}, which has no ${cfg.kernel} and base.cpio`);
  }
  const extraTrees = cfg.overlayTrees.map((t) => ({ src: path.join(imageDir, t), dest: `work/project/${t}` }));
  for (const t of extraTrees) {
    if (!fs.existsSync(t.src)) throw new Error(`${scriptName} printed ${JSON.stringify(imageDir)}, which has no ${path.relative(imageDir, t.src)}`);
  }
  // A guest agent build (bash guest/agent/build.sh), carried in as /work/agent when $FLINTVM_AGENT_DIR names one.
  const agentDir = process.env.FLINTVM_AGENT_DIR;
  if (agentDir) {
    if (!fs.statSync(agentDir, { throwIfNoEntry: false })?.isDirectory()) {
      throw new Error(`FLINTVM_AGENT_DIR=${agentDir} is not a directory: set it to the last line \`bash guest/agent/build.sh\` prints`);
    }
    extraTrees.push({ src: path.resolve(agentDir), dest: 'work/agent' });
  }
  // The container tools (bash test/hosts/podman.sh: podman, conmon, crun and /etc/containers), laid over / when
  // $FLINTVM_PODMAN_DIR names them; x86_64 only.
  const podmanDir = arch === 'x86_64' ? process.env.FLINTVM_PODMAN_DIR : undefined;
  if (podmanDir) {
    if (!fs.existsSync(path.join(podmanDir, 'usr/bin/podman'))) {
      throw new Error(`FLINTVM_PODMAN_DIR=${podmanDir} has no usr/bin/podman: set it to the last line \`bash test/hosts/podman.sh\` prints`);
    }
    extraTrees.push({ src: path.resolve(podmanDir), dest: '' });
  }
  const qemu = findOnPath(cfg.qemu);
  if (!qemu) {
    throw new Error(`${cfg.qemu} not found on PATH: install the Debian package ${cfg.qemuPackage} (apt-get install ${cfg.qemuPackage})`);
  }

  const guestDir = await resolveGuestDir(opts, arch, projectDir, log);
  if (!fs.existsSync(path.join(projectDir, 'dist'))) log('warning: dist/ does not exist; run `npx tsc` first');

  const env: Record<string, string> = {};
  if (process.env.DEBUG !== undefined) env.DEBUG = process.env.DEBUG;
  // CI=true makes a test that would skip for lack of KVM (or of a tool) fail, inside the host as outside.
  if (process.env.CI !== undefined) env.CI = process.env.CI;
  env.FLINTVM_IN_TEST_HOST = '1';
  env.HOME = '/root';
  if (guestDir) env.FLINTVM_GUEST_DIR = '/work/guest';
  if (agentDir) env.FLINTVM_AGENT_DIR = '/work/agent';
  if (podmanDir) env.FLINTVM_PODMAN = '1';
  if (opts.verbose) env.FLINTVM_HOST_VERBOSE = '1';
  Object.assign(env, opts.env ?? {});

  const rec: { child: ChildProcess | null; tmp: string | null } = { child: null, tmp: null };
  live.add(rec);
  installHandlers();
  try {
    // (b) overlay: base.cpio, zero padding to 4 bytes, then the overlay archive.
    const tOv = performance.now();
    rec.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'flintvm-host-'));
    const initrd = path.join(rec.tmp, 'initrd.cpio');
    const qmpPath = path.join(rec.tmp, 'qmp.sock');
    fs.copyFileSync(base, initrd);
    const fd = fs.openSync(initrd, 'a');
    let overlayBytes: number;
    try {
      const baseSize = fs.fstatSync(fd).size;
      const pad = (4 - (baseSize % 4)) % 4;
      if (pad) fs.writeSync(fd, Buffer.alloc(pad));
      overlayBytes = writeOverlay(fd, {
        projectDir,
        guestDir,
        env,
        command: opts.command,
        extraPaths: opts.extraPaths,
        extraTrees,
      });
    } finally {
      fs.closeSync(fd);
    }
    const overlayMs = performance.now() - tOv;
    log(
      `overlay ${(overlayBytes / 1048576).toFixed(1)} MiB in ${overlayMs.toFixed(0)} ms` +
        (guestDir ? `, guest images from ${guestDir}` : ', no guest images'),
    );

    // (c) boot
    const append = [`console=${cfg.console}`, 'panic=-1'];
    // The x86_64 host's timer: the local APIC's one-shot count, not its TSC-deadline mode. On 2026-12-06 a
    // test host went fully idle three times, its emulated CPU asleep with no CPU time used for minutes: an L1
    // kernel always wakes within seconds, so its timer interrupt was lost. Those hosts used TSC deadlines;
    // a fourth stall came with this one-shot mode too, so the stall watch below is what acts on one.
    if (arch === 'x86_64') append.push('lapic=notscdeadline');
    if (!opts.verbose) append.push('quiet', 'loglevel=1');
    const args = [
      ...cfg.machineArgs(cpuModel, cpus),
      '-m',
      String(memoryMiB),
      '-smp',
      String(cpus),
      '-display',
      'none',
      '-nodefaults',
      '-no-user-config',
      '-no-reboot',
      '-serial',
      'stdio',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
      '-kernel',
      kernel,
      '-initrd',
      initrd,
      '-append',
      append.join(' '),
    ];
    log(`booting the ${arch} test host (${cpus} vCPU, ${memoryMiB} MiB, TCG -cpu ${cpuModel})`);
    const tBoot = performance.now();
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    rec.child = child;
    // The stall watch (stall.ts): whether QEMU's threads ran, sampled every 5 s while it runs.
    let nudges = 0;
    const stall = new StallWatch(STALL_LIMIT_MS);
    const watch = setInterval(() => {
      if (child.pid === undefined || !stall.observe(processActivity(child.pid), performance.now()) || nudges >= MAX_NUDGES) return;
      const n = ++nudges;
      void nudge(qmpPath).then((what) => log(`the test host used no CPU for ${STALL_LIMIT_MS / 1000} s (nudge ${n} of at most ${MAX_NUDGES}): ${what}`));
    }, 5000);
    watch.unref();
    child.once('close', () => clearInterval(watch));

    return await new Promise<TestHostResult>((resolve) => {
      const decoder = new StringDecoder('utf8');
      let output = '';
      let commandOutput = '';
      let partial = '';
      let bootMs = -1;
      let uptime = -1;
      let exitStatus: number | null = null;
      let timedOut = false;
      let stderr = '';
      let settled = false;
      let killTimer: NodeJS.Timeout | undefined;

      const handleLine = (line: string, complete: boolean) => {
        const text = complete ? line + '\n' : line;
        output += text;
        if (complete) {
          const r = READY_RE.exec(line);
          if (r && bootMs < 0) {
            bootMs = performance.now() - tBoot;
            uptime = Number(r[1]);
            opts.onReady?.({ qmpPath });
            if (!opts.verbose) {
              log(`test host ready after ${(bootMs / 1000).toFixed(1)} s (its uptime ${uptime.toFixed(2)} s); running the command`);
              return;
            }
          }
          const e = EXIT_RE.exec(line);
          if (e && exitStatus === null) {
            exitStatus = Number(e[1]);
            // The result is in; nothing in the test host needs to outlive it (its disk is RAM).
            // Powering off takes another 1-2 s of emulated shutdown, so end QEMU now.
            killTimer = setTimeout(() => child.kill('SIGKILL'), opts.verbose ? 3000 : 0);
            if (!opts.verbose) return;
          }
        }
        if (bootMs >= 0 && exitStatus === null) commandOutput += text;
        // Quiet runs show only the command's output (and anything before READY, which is trouble).
        if (opts.verbose || exitStatus === null) onOutput(text);
      };

      const feed = (s: string) => {
        partial += s.replace(/\r/g, '');
        let i: number;
        while ((i = partial.indexOf('\n')) >= 0) {
          handleLine(partial.slice(0, i), true);
          partial = partial.slice(i + 1);
        }
      };

      child.stdout!.on('data', (d: Buffer) => feed(decoder.write(d)));
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (d: string) => {
        stderr = (stderr + d).slice(-4000);
      });

      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);

      const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearTimeout(killTimer);
        feed(decoder.end());
        if (partial) {
          handleLine(partial, false);
          partial = '';
        }
        const totalMs = performance.now() - t0;
        const base = {
          output,
          commandOutput,
          bootMs,
          totalMs,
          imageMs,
          overlayMs,
          overlayBytes,
          guestUptimeAtReady: uptime,
          timedOut,
          guestDir,
          nudges,
        };
        if (timedOut) {
          resolve({
            ...base,
            exitCode: 124,
            error:
              `test host timed out after ${Math.round(timeoutMs / 1000)}s ` +
              (bootMs < 0
                ? `before the command started (last output: ${lastOutput(output)})`
                : `(last output: ${commandOutput.trim() ? lastOutput(commandOutput) : 'none from the command'})`),
          });
        } else if (exitStatus !== null) {
          resolve({ ...base, exitCode: exitStatus, ...(exitStatus === 125 && bootMs < 0 ? { error: 'test host setup failed (see the FLINTVM-HOST lines above)' } : {}) });
        } else {
          const why = spawnError
            ? `cannot start ${qemu}: ${spawnError.message}`
            : `QEMU ended (${signal ?? `exit ${code}`}) without a result from the test host`;
          const qerr = stderr.trim() ? `; qemu stderr: ${stderr.trim().split('\n').slice(-5).join(' | ')}` : '';
          resolve({ ...base, exitCode: 125, error: `${why}${qerr} (last output: ${lastOutput(output)})` });
        }
      };
      child.on('error', (e) => finish(null, null, e));
      child.on('close', (code, signal) => finish(code, signal));
    });
  } finally {
    if (rec.child && rec.child.exitCode === null && rec.child.signalCode === null) rec.child.kill('SIGKILL');
    if (rec.tmp) fs.rmSync(rec.tmp, { recursive: true, force: true });
    live.delete(rec);
    if (live.size === 0) uninstallHandlers();
  }
}

/** Whether QEMU for the test host of `arch` is installed (the image script installs it when run as root). */
export function haveTestHostQemu(arch: TestHostArch = 'x86_64'): boolean {
  return findOnPath(archConfig(arch).qemu) !== null;
}

/** Step (a) alone, synchronously: build or find the base image of `arch` and return its directory. */
export function imageDirSync(projectDir = findProjectDir(), arch: TestHostArch = 'x86_64'): string {
  const script = archConfig(arch).imageScript;
  const r = spawnSync('bash', [path.join(projectDir, script)], {
    cwd: projectDir,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`${path.basename(script)} failed (exit ${r.status})`);
  return r.stdout.trim().split('\n').pop()?.trim() ?? '';
}
