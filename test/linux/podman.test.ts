/**
 * podman (with conmon) running containers through flintvm-oci, each in its own microVM, against crun (the
 * reference runtime, no VM) on the same image in the same run. Runs in the x86_64 test host with the tools of
 * `bash test/hosts/podman.sh` laid over it (npm test sets $FLINTVM_PODMAN_DIR; inside, $FLINTVM_PODMAN=1):
 * Debian 12's podman, conmon and crun, storage driver vfs, cgroupfs, no network (containers.conf's netns
 * "none"). The image is a busybox rootfs built here and `podman import`ed, offline.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireKvm, skipOrFail } from '../helpers/kvm.js';

const CLI = fileURLToPath(new URL('../../bin/flintvm-oci.js', import.meta.url));
/** containers.conf (test/hosts/podman.sh) names this wrapper as the runtime `flintvm-oci`. */
const WRAPPER = '/work/bin/flintvm-oci';
const IMAGE = 'localhost/flintvm-busybox';
const APPLETS = ['sh', 'echo', 'cat', 'id', 'pwd', 'sleep', 'ls', 'env', 'head', 'md5sum', 'yes', 'touch', 'true', 'trap', 'tty', 'stty', 'wc'];
/** One podman command: a flintvm container start (VM boot, agent, mounts) takes 10-20 s in the emulated host. */
const STEP_MS = 4 * 60_000;
const RUNTIMES = ['crun', 'flintvm-oci'] as const;
type Runtime = (typeof RUNTIMES)[number];

interface Result { code: number | null; stdout: Buffer; stderr: string }

function podman(args: string[], input?: Buffer): Promise<Result> {
  return new Promise((resolve) => {
    const child = spawn('podman', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? Buffer.alloc(0));
    const timer = setTimeout(() => child.kill('SIGKILL'), STEP_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

const runWith = (rt: Runtime, args: string[], input?: Buffer) => podman(['--runtime', rt, ...args], input);

let why = '';

test.before(async () => {
  if (process.env.FLINTVM_PODMAN !== '1' || !existsSync('/usr/bin/podman')) {
    why = 'no podman here: npm test carries it into the x86_64 test host (FLINTVM_PODMAN_DIR=$(bash test/hosts/podman.sh))';
    return;
  }
  if (!process.env.FLINTVM_AGENT_DIR) { why = 'no agent build: set FLINTVM_AGENT_DIR=$(bash guest/agent/build.sh)'; return; }
  // crun needs the cgroup2 hierarchy (podman's cgroupfs manager); the test host's init does not mount it.
  if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    const m = spawn('mount', ['-t', 'cgroup2', 'none', '/sys/fs/cgroup'], { stdio: 'inherit' });
    await new Promise((r) => m.on('close', r));
  }
  // conmon runs the runtime with podman's environment cut down: the wrapper names what flintvm-oci needs.
  const env = ['FLINTVM_AGENT_DIR', 'FLINTVM_GUEST_DIR', 'FLINTVM_CACHE', 'DEBUG'].filter((k) => process.env[k]).map((k) => `export ${k}='${process.env[k]}'\n`).join('');
  mkdirSync('/work/bin', { recursive: true });
  writeFileSync(WRAPPER, `#!/bin/sh\n${env}exec '${process.execPath}' '${CLI}' "$@"\n`, { mode: 0o755 });

  const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!bb) { why = 'no busybox here to make an image of'; return; }
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-podman-rootfs-'));
  chmodSync(dir, 0o755);
  for (const d of ['bin', 'proc', 'dev', 'tmp', 'etc', 'sys', 'run', 'data']) mkdirSync(join(dir, d));
  chmodSync(join(dir, 'tmp'), 0o1777);
  copyFileSync(bb, join(dir, 'bin', 'busybox'));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', join(dir, 'bin', a));
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\nuser:x:1000:\n');
  const tar = join(tmpdir(), 'flintvm-busybox.tar');
  const tr = spawn('tar', ['-C', dir, '-cf', tar, '.'], { stdio: 'inherit' });
  await new Promise((r) => tr.on('close', r));
  const imp = await podman(['import', '--quiet', '--change', 'ENV=PATH=/bin', tar, IMAGE]);
  if (imp.code !== 0) why = `podman import failed: ${imp.stderr.trim()}`;
});

function ready(t: ExecutionContext): boolean {
  if (!requireKvm(t)) return false;
  if (why) { skipOrFail(t, why); return false; }
  return true;
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

test.serial('podman run --rm: stdout and stderr apart and the exit status, the same under crun and flintvm-oci', async (t) => {
  if (!ready(t)) return;
  for (const rt of RUNTIMES) {
    const r = await runWith(rt, ['run', '--rm', IMAGE, 'sh', '-c', 'echo out; echo err >&2; exit 42']);
    t.is(r.stdout.toString(), 'out\n', `${rt}: ${r.stderr}`);
    t.is(r.stderr, 'err\n', rt);
    t.is(r.code, 42, rt);
  }
  const left = await podman(['ps', '--all', '--quiet']);
  t.is(left.stdout.toString(), '', 'run --rm left no container');
});

test.serial('podman run: env, cwd, user, a read-only root and a -v bind mount, as under crun', async (t) => {
  if (!ready(t)) return;
  const host = mkdtempSync(join(tmpdir(), 'flintvm-podman-bind-'));
  chmodSync(host, 0o755);
  writeFileSync(join(host, 'x'), 'from-the-host\n');
  const script = 'id -u; id -g; pwd; echo "FOO=$FOO"; cat /data/x; (touch /newfile 2>/dev/null && echo root-writable) || echo root-readonly; echo in >/data/w 2>/dev/null || echo bind-readonly; cat';
  const outs: string[] = [];
  for (const rt of RUNTIMES) {
    const r = await runWith(rt, ['run', '--rm', '-i', '--read-only', '-e', 'FOO=bar', '-w', '/tmp', '-u', '1000:1000', '-v', `${host}:/data:ro`, IMAGE, 'sh', '-c', script], Buffer.from('stdin-line\n'));
    t.is(r.code, 0, `${rt}: ${r.stderr}`);
    outs.push(r.stdout.toString());
  }
  t.is(outs[1], '1000\n1000\n/tmp\nFOO=bar\nfrom-the-host\nroot-readonly\nbind-readonly\nstdin-line\n');
  t.is(outs[1], outs[0], 'flintvm-oci and crun print the same');
  t.false(existsSync(join(host, 'w')));
});

test.serial('podman run -d, exec, logs, stop (SIGTERM reaches the process) and stop -t 0 (killed)', async (t) => {
  if (!ready(t)) return;
  for (const rt of RUNTIMES) {
    const name = `c-${rt}`;
    const d = await runWith(rt, ['run', '-d', '--name', name, IMAGE, 'sh', '-c', 'trap "echo got-TERM; exit 3" TERM; echo started; while :; do sleep 0.2; done']);
    t.is(d.code, 0, `${rt}: ${d.stderr}`);
    const e = await podman(['exec', name, 'sh', '-c', 'echo in-exec; echo exec-err >&2; exit 5']);
    t.is(e.stdout.toString(), 'in-exec\n', `${rt}: ${e.stderr}`);
    t.is(e.stderr, 'exec-err\n', rt);
    t.is(e.code, 5, rt);
    const s = await podman(['stop', '-t', '60', name]);
    t.is(s.code, 0, `${rt}: ${s.stderr}`);
    const code = await podman(['inspect', '--format', '{{.State.ExitCode}}', name]);
    t.is(code.stdout.toString().trim(), '3', `${rt}: the process got SIGTERM and exited 3`);
    const logs = await podman(['logs', name]);
    t.is(logs.stdout.toString(), 'started\ngot-TERM\n', rt);
    t.is((await podman(['rm', name])).code, 0, rt);

    // A process that ignores SIGTERM: stop -t 0 kills it.
    const k = `k-${rt}`;
    t.is((await runWith(rt, ['run', '-d', '--name', k, IMAGE, 'sh', '-c', 'trap "" TERM; while :; do sleep 0.2; done'])).code, 0, rt);
    t.is((await podman(['stop', '-t', '0', k])).code, 0, rt);
    t.is((await podman(['inspect', '--format', '{{.State.ExitCode}}', k])).stdout.toString().trim(), '137', `${rt}: SIGKILL`);
    t.is((await podman(['rm', k])).code, 0, rt);
  }
  t.is((await podman(['ps', '--all', '--quiet'])).stdout.toString(), '');
});

test.serial('podman run: a 16 MiB stdout stream, the same checksum as under crun', async (t) => {
  if (!ready(t)) return;
  const bytes = 16 * 1024 * 1024;
  const sums: string[] = [];
  for (const rt of RUNTIMES) {
    const r = await runWith(rt, ['run', '--rm', IMAGE, 'sh', '-c', `yes 0123456789abcdef | head -c ${bytes}`]);
    t.is(r.code, 0, `${rt}: ${r.stderr}`);
    t.is(r.stdout.length, bytes, rt);
    sums.push(md5(r.stdout));
  }
  t.is(sums[1], sums[0]);
  t.is(sums[0], md5(Buffer.from('0123456789abcdef\n'.repeat(Math.ceil(bytes / 17))).subarray(0, bytes)));
});

test.serial('flintvm-oci leaves nothing behind: no holder processes, no state under its root', async (t) => {
  if (!ready(t)) return;
  const ps = await new Promise<string>((resolve) => {
    const c = spawn('ps', ['-o', 'args'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let o = '';
    c.stdout.on('data', (d: Buffer) => { o += d.toString(); });
    c.on('close', () => resolve(o));
  });
  t.false(/flintvm-oci\.js.*__(holder|exec)/.test(ps), ps);
  t.false(/conmon/.test(ps), ps);
  // podman passes no --root: flintvm-oci's default.
  const state = '/run/flintvm-oci';
  t.deepEqual(existsSync(state) ? readdirSync(state) : [], []);
});
