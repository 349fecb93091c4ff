import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OciError, loadBundle, parseBundle, planMounts, shQuote } from '../../../../lib/oci/bundle.js';
import { features, parseSignal } from '../../../../lib/oci/cli.js';

/** Every bundle directory a test made, removed when the file's tests are done. */
const made: string[] = [];
test.after.always(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

function bundleDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-oci-unit-'));
  made.push(dir);
  mkdirSync(join(dir, 'rootfs'));
  return dir;
}

const minimal = (over: Record<string, unknown> = {}) => ({ ociVersion: '1.0.2', process: { args: ['sh'] }, root: { path: 'rootfs' }, ...over });

test('parseBundle: a minimal config gets the documented defaults; root.path is resolved against the bundle', (t) => {
  const dir = bundleDir();
  const b = parseBundle(minimal(), dir);
  t.deepEqual(b.process, { args: ['sh'], env: [], cwd: '/', terminal: false, uid: 0, gid: 0, additionalGids: [], rlimits: [] });
  t.deepEqual(b.root, { path: join(dir, 'rootfs'), readonly: false });
  t.is(b.memoryMiB, 256);
  t.is(b.vcpus, 1);
  t.is(b.hostname, undefined);
});

test('parseBundle: user, env, cwd, rlimits, hostname, annotations that size the VM', (t) => {
  const dir = bundleDir();
  const b = parseBundle(minimal({
    ociVersion: '1.1.0',
    process: { args: ['id'], env: ['A=1'], cwd: '/tmp', terminal: false, user: { uid: 1000, gid: 100, additionalGids: [5, 6] }, rlimits: [{ type: 'RLIMIT_NOFILE', soft: 64, hard: 128 }] },
    hostname: 'box', annotations: { 'io.flintvm.memory_mib': '512', 'io.flintvm.vcpus': '2', other: 'x' },
    linux: { namespaces: [{ type: 'pid' }], seccomp: {} },
  }), dir);
  t.is(b.process.uid, 1000);
  t.deepEqual(b.process.additionalGids, [5, 6]);
  t.deepEqual(b.process.rlimits, [{ resource: 'RLIMIT_NOFILE', soft: 64, hard: 128 }]);
  t.is(b.hostname, 'box');
  t.is(b.memoryMiB, 512);
  t.is(b.vcpus, 2);
});

test('parseBundle: each bad field is an OciError naming it', (t) => {
  const dir = bundleDir();
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ociVersion: '2.0.0' }, /ociVersion "2.0.0"/],
    [{ ociVersion: 3 }, /ociVersion must be a string/],
    [{ process: { args: [] } }, /process.args must name a program/],
    [{ process: { args: 'sh' } }, /process.args must be an array of strings/],
    [{ process: { args: ['sh'], env: ['NOEQUALS'] } }, /process.env\[0\] must be KEY=VALUE/],
    [{ process: { args: ['sh'], cwd: 'rel' } }, /process.cwd must be an absolute path/],
    [{ process: { args: ['sh'], user: { uid: -1 } } }, /process.user.uid must be an integer/],
    [{ process: { args: ['sh'], rlimits: [{ type: 'RLIMIT_BOGUS', soft: 1, hard: 1 }] } }, /process.rlimits\[0\].type "RLIMIT_BOGUS"/],
    [{ root: { path: 'missing' } }, /root.path "missing" is not a directory/],
    [{ root: undefined }, /root is missing/],
    [{ mounts: [{ destination: 'rel', type: 'proc' }] }, /mounts\[0\].destination must be an absolute path/],
    [{ annotations: { 'io.flintvm.vcpus': '0' } }, /annotations\["io.flintvm.vcpus"\] must be a whole number from 1/],
    [{ annotations: { 'io.flintvm.memory_mib': 'lots' } }, /io.flintvm.memory_mib/],
    [{ hooks: { prestart: [{ path: '/bin/true' }] } }, /hooks are not supported/],
  ];
  for (const [over, re] of bad) {
    const e = t.throws(() => parseBundle(minimal(over), dir), { instanceOf: OciError }, JSON.stringify(over));
    t.regex(e!.message, re);
  }
  t.throws(() => parseBundle([], dir), { message: /top level must be a JSON object/ });
});

test('loadBundle: a missing config.json and invalid JSON are clear errors', (t) => {
  const dir = bundleDir();
  t.throws(() => loadBundle(dir), { instanceOf: OciError, message: /cannot read config.json \(ENOENT\)/ });
  writeFileSync(join(dir, 'config.json'), '{"ociVersion": ');
  t.throws(() => loadBundle(dir), { instanceOf: OciError, message: /config.json: invalid JSON/ });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(minimal()));
  t.is(loadBundle(dir).process.args[0], 'sh');
});

test('planMounts: the rootfs, kernel filesystems, /dev as devtmpfs, directory and file binds, cgroups ignored', (t) => {
  const dir = bundleDir();
  const b = parseBundle(minimal({
    root: { path: 'rootfs', readonly: true },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['ptmxmode=0666'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] },
      { destination: '/data', type: 'bind', source: '/host/data', options: ['rbind', 'ro', 'rprivate'] },
      { destination: "/etc/it's", type: 'bind', source: '/host/file', options: ['bind'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup' },
    ],
  }), dir);
  const p = planMounts(b, (path) => path === '/host/data');
  t.deepEqual(p.dirShares, [{ tag: 'm4', path: '/host/data', readOnly: true }]);
  t.deepEqual(p.fileCopies, [{ name: 'f5', source: '/host/file', destination: "/etc/it's" }]);
  t.is(p.ignored.length, 1);
  const s = p.script;
  t.true(s.startsWith('set -e\n'));
  t.regex(s, /mount -t virtiofs -o ro rootfs \/rootfs/);
  t.regex(s, /mount -t proc proc '\/rootfs\/proc'/);
  t.regex(s, /mount -t devtmpfs devtmpfs '\/rootfs\/dev'/);
  t.regex(s, /mount -t devpts -o 'newinstance,ptmxmode=0666' devpts '\/rootfs\/dev\/pts'/);
  t.regex(s, /mount -t tmpfs -o 'size=1m' tmpfs '\/rootfs\/tmp'/);
  t.regex(s, /mount -t virtiofs -o ro m4 '\/rootfs\/data'/);
  t.regex(s, /mount --bind '\/.ocifiles\/f5' '\/rootfs\/etc\/it'\\''s'/);
  t.throws(() => planMounts(parseBundle(minimal({ mounts: [{ destination: '/x', type: 'nfs' }] }), dir), () => false), { message: /mounts\[0\].type "nfs" is not supported/ });
});

test("planMounts: podman's runtime-only options (tmpcopyup, z/Z/U, rro) do not reach mount(8); tmpcopyup fills the tmpfs", (t) => {
  const dir = bundleDir();
  const b = parseBundle(minimal({
    mounts: [
      { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['rw', 'rprivate', 'nosuid', 'nodev', 'tmpcopyup'] },
      { destination: '/var/tmp', type: 'tmpfs', source: 'tmpfs', options: ['rro', 'Z', 'U', 'copy-symlink', 'idmap'] },
    ],
  }), dir);
  const s = planMounts(b, () => false).script;
  t.regex(s, /S=\$\(mktemp -d\) && mount -t tmpfs -o 'rw,nosuid,nodev' tmpfs "\$S" && cp -a '\/rootfs\/run'\/. "\$S"\/ && mount --move "\$S" '\/rootfs\/run'/);
  t.regex(s, /mount -t tmpfs -o 'ro' tmpfs '\/rootfs\/var\/tmp'/);
  t.notRegex(s, /tmpcopyup|rprivate|copy-symlink|idmap|,Z|,U/);
});

test('io.flintvm.net.* annotations: a tap, the guest address and gateway set up before the mounts; bad values name the annotation', (t) => {
  const dir = bundleDir();
  const b = parseBundle(minimal({ annotations: { 'io.flintvm.net.tap': 'fvt0', 'io.flintvm.net.address': '10.0.3.15/24', 'io.flintvm.net.gateway': '10.0.3.1', 'io.flintvm.net.mac': '02:00:00:00:00:07' } }), dir);
  t.deepEqual(b.net, { tap: 'fvt0', address: '10.0.3.15/24', gateway: '10.0.3.1', mac: '02:00:00:00:00:07' });
  const s = planMounts(b, () => false).script;
  t.regex(s, /^set -e\nip link set lo up \|\| true\nip link set eth0 up\nip addr add '10.0.3.15\/24' dev eth0\nip route add default via '10.0.3.1'\nmkdir -p \/rootfs\n/);
  t.is(parseBundle(minimal(), dir).net, undefined);
  t.notRegex(planMounts(parseBundle(minimal(), dir), () => false).script, /eth0/);
  const bad: [Record<string, string>, RegExp][] = [
    [{ 'io.flintvm.net.tap': 'tap with space' }, /annotations\["io.flintvm.net.tap"\] must be a network interface name/],
    [{ 'io.flintvm.net.tap': 't', 'io.flintvm.net.address': '10.0.3.300/24' }, /annotations\["io.flintvm.net.address"\] must be an IPv4 address with its prefix length/],
    [{ 'io.flintvm.net.tap': 't', 'io.flintvm.net.address': '10.0.3.3/33' }, /io.flintvm.net.address/],
    [{ 'io.flintvm.net.tap': 't', 'io.flintvm.net.gateway': '10.0.3.1' }, /io.flintvm.net.gateway"\] needs annotations\["io.flintvm.net.address"\]/],
    [{ 'io.flintvm.net.tap': 't', 'io.flintvm.net.mac': 'zz' }, /must be a MAC address/],
    [{ 'io.flintvm.net.address': '10.0.3.15/24' }, /needs annotations\["io.flintvm.net.tap"\]/],
  ];
  for (const [annotations, re] of bad) t.throws(() => parseBundle(minimal({ annotations }), dir), { instanceOf: OciError, message: re }, JSON.stringify(annotations));
});

test('shQuote survives quotes; parseSignal takes numbers and names; features says the isolation is a VM', (t) => {
  t.is(shQuote("a'b"), `'a'\\''b'`);
  t.is(parseSignal(undefined), 15);
  t.is(parseSignal('9'), 9);
  t.is(parseSignal('KILL'), 9);
  t.is(parseSignal('SIGUSR1'), 10);
  t.throws(() => parseSignal('NOPE'), { message: /not a signal/ });
  t.throws(() => parseSignal('99'), { message: /not a signal/ });
  t.is((features().annotations as Record<string, string>)['org.opencontainers.runtime-spec.features.isolation'], 'vm');
});
