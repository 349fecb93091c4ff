/**
 * flintvm-oci, the OCI runtime command line, on hand-made bundles: a
 * busybox rootfs, each container in its own microVM with the guest agent
 * (guest/agent) and the rootfs over virtio-fs. Runs in the x86_64 test host
 * (the agent is built for x86_64 only so far); the agent build comes from
 * $FLINTVM_AGENT_DIR (npm test sets it).
 *
 * Not here yet: podman/conmon/crun (issue #16 wants them in the test host).
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireKvm, skipOrFail } from '../helpers/kvm.js';
import { runCommand } from '../helpers/run-command.js';

const CLI = fileURLToPath(new URL('../../bin/flintvm-oci.js', import.meta.url));
const APPLETS = ['sh', 'echo', 'cat', 'id', 'pwd', 'hostname', 'sleep', 'ls', 'env', 'head', 'md5sum', 'yes', 'touch', 'true', 'trap', 'wc', 'nc', 'ip', 'grep'];
/** A container start (VM boot, agent, mounts) in the emulated test host takes about 10 s; leave room. */
const STEP_MS = 4 * 60_000;

/** Runs flintvm-oci; resolves when it exits (or `STEP_MS` passes: then it is killed and the code is null). */
const oci = (root: string, args: string[], input?: Buffer) => runCommand(process.execPath, [CLI, '--root', root, ...args], input, { timeoutMs: STEP_MS, until: 'exit' });

let rootfs = '';
let why = '';

test.before(() => {
  if (!process.env.FLINTVM_AGENT_DIR) { why = 'no agent build: set FLINTVM_AGENT_DIR=$(bash guest/agent/build.sh)'; return; }
  const bb = ['/bin/busybox', '/usr/bin/busybox', '/sbin/busybox'].find((p) => existsSync(p));
  if (!bb) { why = 'no /bin/busybox here to make a rootfs of'; return; }
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-oci-rootfs-'));
  chmodSync(dir, 0o755); // mkdtemp makes it 0700: a container user other than root could not enter its own /
  for (const d of ['bin', 'proc', 'dev', 'tmp', 'etc', 'data', 'sys']) mkdirSync(join(dir, d));
  chmodSync(join(dir, 'tmp'), 0o1777);
  copyFileSync(bb, join(dir, 'bin', 'busybox'));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', join(dir, 'bin', a));
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n');
  rootfs = dir;
});

/** A bundle over the shared rootfs; `over` replaces top-level keys of config.json. */
function bundle(over: Record<string, unknown> = {}, processOver: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-oci-bundle-'));
  const config = {
    ociVersion: '1.0.2',
    process: { args: ['sh', '-c', 'echo out; echo err >&2; exit 42'], env: ['PATH=/bin'], cwd: '/', ...processOver },
    root: { path: rootfs },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs' },
    ],
    ...over,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

const newRoot = () => mkdtempSync(join(tmpdir(), 'flintvm-oci-state-'));

function ready(t: ExecutionContext): boolean {
  if (!requireKvm(t)) return false;
  if (!rootfs) { skipOrFail(t, why); return false; }
  return true;
}

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test.serial('run: stdout and stderr apart, the exit status, nothing left under --root', async (t) => {
  if (!ready(t)) return;
  const root = newRoot();
  const r = await oci(root, ['run', '--bundle', bundle(), 'c-run']);
  t.is(r.stdout.toString(), 'out\n', r.stderr);
  t.is(r.stderr, 'err\n');
  t.is(r.code, 42);
  t.deepEqual(readdirSync(root), []);
});

test.serial('run: env, cwd, uid/gid, hostname, a read-only root, a directory and a file bind mount, stdin', async (t) => {
  if (!ready(t)) return;
  const root = newRoot();
  const host = mkdtempSync(join(tmpdir(), 'flintvm-oci-bind-'));
  chmodSync(host, 0o755);
  writeFileSync(join(host, 'x'), 'from-the-host-dir\n');
  const file = join(host, 'conf');
  writeFileSync(file, 'from-a-host-file\n');
  const script = 'id -u; id -g; pwd; hostname; echo "FOO=$FOO"; cat /data/x; cat /etc/conf; (touch /newfile 2>/dev/null && echo root-writable) || echo root-readonly; cat';
  const b = bundle({
    root: { path: rootfs, readonly: true }, hostname: 'oci-box',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs' },
      { destination: '/data', type: 'bind', source: host, options: ['rbind', 'ro'] },
      { destination: '/etc/conf', type: 'bind', source: file, options: ['bind', 'ro'] },
    ],
  }, { args: ['sh', '-c', script], env: ['PATH=/bin', 'FOO=bar'], cwd: '/tmp', user: { uid: 1000, gid: 1000 } });
  const r = await oci(root, ['run', '--bundle', b, 'c-env'], Buffer.from('stdin-line\n'));
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.toString(), '1000\n1000\n/tmp\noci-box\nFOO=bar\nfrom-the-host-dir\nfrom-a-host-file\nroot-readonly\nstdin-line\n', r.stderr);
  t.false(existsSync(join(rootfs, 'newfile')));
});

test.serial('run: a 16 MiB stdout stream arrives byte-exact', async (t) => {
  if (!ready(t)) return;
  const bytes = 16 * 1024 * 1024;
  const r = await oci(newRoot(), ['run', '--bundle', bundle({}, { args: ['sh', '-c', `yes 0123456789abcdef | head -c ${bytes}`] }), 'c-big']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.length, bytes);
  const expected = createHash('md5').update(Buffer.from('0123456789abcdef\n'.repeat(Math.ceil(bytes / 17))).subarray(0, bytes)).digest('hex');
  t.is(createHash('md5').update(r.stdout).digest('hex'), expected);
});

test.serial('create, state, start, exec, kill, delete: the runc lifecycle', async (t) => {
  if (!ready(t)) return;
  const root = newRoot();
  const pidFile = join(root, '..', `pid-${process.pid}`);
  const b = bundle({}, { args: ['sh', '-c', 'trap "echo got-TERM; exit 7" TERM; echo started; while :; do sleep 1; done'] });
  const c = await oci(root, ['create', '--bundle', b, '--pid-file', pidFile, 'c-life']);
  t.is(c.code, 0, c.stderr);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  t.true(alive(pid), 'the pid file names a live holder process');
  const s1 = JSON.parse((await oci(root, ['state', 'c-life'])).stdout.toString()) as { status: string; pid: number; id: string; bundle: string };
  t.like(s1, { id: 'c-life', status: 'created', pid, bundle: b });
  t.is((await oci(root, ['start', 'c-life'])).code, 0);
  t.is((await oci(root, ['start', 'c-life'])).code, 1, 'a container starts once');
  t.is(JSON.parse((await oci(root, ['state', 'c-life'])).stdout.toString()).status, 'running');
  const e = await oci(root, ['exec', 'c-life', 'sh', '-c', 'echo exec-out; hostname >/dev/null; exit 3']);
  t.is(e.stdout.toString(), 'exec-out\n', e.stderr);
  t.is(e.code, 3);
  const del = await oci(root, ['delete', 'c-life']);
  t.is(del.code, 1, 'a running container is not deleted without --force');
  t.regex(del.stderr, /is running/);
  t.is((await oci(root, ['kill', 'c-life', 'TERM'])).code, 0);
  for (let i = 0; i < 300 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  t.false(alive(pid), 'the holder exits when the container process does');
  t.is(JSON.parse((await oci(root, ['state', 'c-life'])).stdout.toString()).status, 'stopped');
  t.is((await oci(root, ['delete', 'c-life'])).code, 0);
  t.deepEqual(readdirSync(root), []);
  t.regex((await oci(root, ['state', 'c-life'])).stderr, /does not exist/);
});

test.serial('delete --force of a created container; bad bundles: clear errors, nothing left', async (t) => {
  if (!ready(t)) return;
  const root = newRoot();
  const pidFile = join(root, '..', `pid2-${process.pid}`);
  t.is((await oci(root, ['create', '--bundle', bundle(), '--pid-file', pidFile, 'c-del'])).code, 0);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  // runtime-tools' create check: a second container with the same ID is refused, the first one untouched.
  const dup = await oci(root, ['create', '--bundle', bundle(), 'c-del']);
  t.is(dup.code, 1);
  t.regex(dup.stderr, /container c-del already exists/);
  t.true(alive(pid));
  t.is(JSON.parse((await oci(root, ['state', 'c-del'])).stdout.toString()).status, 'created');
  t.is((await oci(root, ['delete', '--force', 'c-del'])).code, 0);
  t.false(alive(pid));
  t.deepEqual(readdirSync(root), []);

  const invalid = mkdtempSync(join(tmpdir(), 'flintvm-oci-bad-'));
  writeFileSync(join(invalid, 'config.json'), '{"ociVersion": "1.0.2", ');
  const cases: [string, RegExp][] = [
    [invalid, /invalid JSON/],
    [bundle({ root: { path: '/nonexistent-rootfs' } }), /root.path "\/nonexistent-rootfs" is not a directory/],
    [bundle({ ociVersion: '9.9.9' }), /ociVersion "9.9.9"/],
  ];
  for (const [b, re] of cases) {
    const r = await oci(root, ['create', '--bundle', b, 'c-bad']);
    t.is(r.code, 1);
    t.regex(r.stderr, re);
  }
  const failing = await oci(root, ['run', '--bundle', bundle({}, { args: ['/no/such/program'] }), 'c-noexec']);
  t.not(failing.code, 0);
  t.regex(failing.stderr, /no\/such\/program/);
  t.deepEqual(readdirSync(root), [], 'nothing is left under --root');
});

test.serial('networking: io.flintvm.net.tap gives the container a NIC on a host tap, gone with the container', async (t) => {
  if (!ready(t)) return;
  const root = newRoot();
  const [tap, hostIp, guestIp, port] = ['fvoci0', '10.0.7.1', '10.0.7.15', 7077];
  const pidFile = join(root, '..', `pid-net-${process.pid}`);
  const script = `ip -4 addr show eth0 | grep -q ${guestIp}/24 || exit 2; i=0; until echo hello-over-the-tap | nc ${hostIp} ${port}; do i=$((i+1)); [ $i -lt 60 ] || exit 3; sleep 1; done`;
  const b = bundle({ annotations: { 'io.flintvm.net.tap': tap, 'io.flintvm.net.address': `${guestIp}/24`, 'io.flintvm.net.gateway': hostIp } }, { args: ['sh', '-c', script] });
  const c = await oci(root, ['create', '--bundle', b, '--pid-file', pidFile, 'c-net']);
  t.is(c.code, 0, c.stderr);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  t.true(existsSync(`/sys/class/net/${tap}`), 'the VM made its tap');
  execFileSync('ip', ['addr', 'add', `${hostIp}/24`, 'dev', tap]);
  execFileSync('ip', ['link', 'set', tap, 'up']);
  let received = '';
  const server = createServer((sock) => {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => { received += d; sock.end(); });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(port, hostIp, () => r()));
  try {
    t.is((await oci(root, ['start', 'c-net'])).code, 0);
    for (let i = 0; i < 1200 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
    t.false(alive(pid), 'the container ended');
    t.is(received, 'hello-over-the-tap\n');
    const s = JSON.parse((await oci(root, ['state', 'c-net'])).stdout.toString()) as { status: string };
    t.is(s.status, 'stopped');
  } finally {
    server.close();
  }
  t.is((await oci(root, ['delete', 'c-net'])).code, 0);
  t.false(existsSync(`/sys/class/net/${tap}`), 'the tap flintvm made is gone with the VM');
});
