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
import { chmodSync, existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKvm, skipOrFail } from '../helpers/kvm.js';
import { PODMAN_IMAGE as IMAGE, setUpPodman } from '../hosts/podman-setup.js';
import { runCommand } from '../helpers/run-command.js';

const RUNTIMES = ['crun', 'flintvm-oci'] as const;
type Runtime = (typeof RUNTIMES)[number];

const podman = (args: string[], input?: Buffer) => runCommand('podman', args, input);
const runWith = (rt: Runtime, args: string[], input?: Buffer) => podman(['--runtime', rt, ...args], input);

let why = '';
test.before(async () => { why = await setUpPodman(); });

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

test.serial('podman run -t and -i -t, and exec -t: a terminal (the pty master through the console socket), as under crun', async (t) => {
  if (!ready(t)) return;
  for (const rt of RUNTIMES) {
    const r = await runWith(rt, ['run', '--rm', '-t', IMAGE, 'sh', '-c', 'tty; echo hi; exit 4']);
    t.is(r.code, 4, `${rt}: ${r.stderr}`);
    // The guest's line discipline turns \n into \r\n, as a local terminal does; stderr is the terminal too.
    t.regex(r.stdout.toString(), /^\/dev\/pts\/\d+\r\nhi\r\n$/, rt);
    const i = await runWith(rt, ['run', '--rm', '-i', '-t', IMAGE, 'sh'], Buffer.from('echo typed-$((6*7))\nexit 9\n'));
    t.is(i.code, 9, `${rt}: ${i.stderr}`);
    t.regex(i.stdout.toString(), /typed-42\r\n/, rt);
    const name = `t-${rt}`;
    t.is((await runWith(rt, ['run', '-d', '--name', name, IMAGE, 'sleep', '600'])).code, 0, rt);
    const e = await podman(['exec', '-t', name, 'sh', '-c', 'tty; exit 6']);
    t.is(e.code, 6, `${rt}: ${e.stderr}`);
    t.regex(e.stdout.toString(), /^\/dev\/pts\/\d+\r\n$/, rt);
    t.is((await podman(['rm', '-f', '-t', '0', name])).code, 0, rt);
  }
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
