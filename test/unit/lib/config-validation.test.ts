/**
 * Config validation at construction (issue #17 item 3, issue #19 item 4): unknown keys, file types and
 * access, ranges, the device-count limit, type names in messages, CLI naming, every problem at once;
 * and the `exit` event of a failed start() (#17 item 4).
 */
import test from 'ava';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configReference, DEFAULT_VCPU_NICE, MAX_VIRTIO_DEVICES, maxVcpus, resolveConfig, type MicroVMConfig } from '../../../lib/vm/config.js';
import { ConfigError } from '../../../lib/errors.js';
import { MicroVM, type VmExit } from '../../../lib/microvm.js';

const dir = mkdtempSync(join(tmpdir(), 'flintvm-config-v-'));
const kernel = join(dir, 'vmlinux');
writeFileSync(kernel, Buffer.from('\x7fELF fake kernel'));
const disk = join(dir, 'disk.img');
writeFileSync(disk, Buffer.alloc(4096));
const shareDir = mkdtempSync(join(dir, 'share-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function problems(t: import('ava').ExecutionContext, config: unknown, opts?: Parameters<typeof resolveConfig>[1]): ConfigError {
  const e = t.throws(() => resolveConfig(config as MicroVMConfig, opts), { instanceOf: ConfigError });
  if (!e) throw new Error('no ConfigError');
  return e;
}

test('unknown keys are refused with a did-you-mean hint, at every level', (t) => {
  const e = problems(t, { kernel, memoryMib: 512 });
  t.is(e.field, 'memoryMib');
  t.regex(e.message, /not a known field; did you mean 'memoryMiB'\?/);
  const d = problems(t, { kernel, drives: [{ path: disk, readonly: true }] });
  t.is(d.field, 'drives[0].readonly');
  t.regex(d.message, /did you mean 'readOnly'/);
  const v = problems(t, { kernel, vsock: { guestCid: 3, udsPath: join(dir, 'v.sock'), cid: 3 } });
  t.is(v.field, 'vsock.cid');
  t.regex(problems(t, { kernel, zzzzzzzz: 1 }).message, /not a known field \(known: kernel, /, 'no hint when nothing is close');
});

test('#19: vsock.guestCid must be 3..2^32-2 at construction (1, 2, 2^32-1 and 2^40 fail)', (t) => {
  const udsPath = join(dir, 'v.sock');
  for (const guestCid of [0, 1, 2, 2 ** 32 - 1, 2 ** 40]) {
    const e = problems(t, { kernel, vsock: { guestCid, udsPath } });
    t.is(e.field, 'vsock.guestCid');
    t.regex(e.message, /from 3 to 4294967294/);
  }
  for (const guestCid of [3, 2 ** 32 - 2]) t.is(resolveConfig({ kernel, vsock: { guestCid, udsPath } }).vsock?.guestCid, guestCid);
  t.regex(problems(t, { kernel, vsock: { guestCid: 3, udsPath: join(dir, 'no-such-dir', 'v.sock') } }).message, /ENOENT/);
  t.regex(problems(t, { kernel, vsock: { guestCid: 3, udsPath: `/tmp/${'x'.repeat(100)}` } }).message, /fit a Unix socket address/);
});

test('#19: too many devices fail at construction stating the real limit of this layout', (t) => {
  t.is(MAX_VIRTIO_DEVICES, process.arch === 'arm64' ? 32 : 17);
  const shares = Array.from({ length: 40 }, (_, i) => ({ tag: `s${i}`, path: shareDir, protocol: '9p' as const }));
  const e = problems(t, { kernel, shares: shares.slice(0, process.arch === 'arm64' ? 40 : 20) });
  t.is(e.field, 'shares');
  t.regex(e.message, new RegExp(`at most ${MAX_VIRTIO_DEVICES} fit`));
  t.notRegex(e.message, /at most 16\b/);
  // Exactly the limit is fine; devices of all kinds count together.
  t.is(resolveConfig({ kernel, shares: shares.slice(0, MAX_VIRTIO_DEVICES) }).shares.length, MAX_VIRTIO_DEVICES);
  problems(t, { kernel, rng: true, shares: shares.slice(0, MAX_VIRTIO_DEVICES) });
});

test('#19: type errors say the type they got', (t) => {
  t.regex(problems(t, { kernel, memoryMiB: '512' }).message, /memoryMiB: must be an integer .*got a string \("512"\)/);
  t.regex(problems(t, { kernel, vcpus: true }).message, /got the boolean true/);
  t.regex(problems(t, { kernel, drives: {} }).message, /drives: must be an array, got an object/);
  t.regex(problems(t, { kernel, rng: 'yes' }).message, /rng: must be true or false, got a string/);
});

test('drive files: missing, a directory, a FIFO, not writable unless readOnly', (t) => {
  t.regex(problems(t, { kernel, drives: [{ path: join(dir, 'missing.img') }] }).message, /drives\[0\]\.path: .*does not exist/);
  t.regex(problems(t, { kernel, drives: [{ path: dir }] }).message, /is a directory; give the path of a raw disk image/);
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  t.regex(problems(t, { kernel, drives: [{ path: fifo, readOnly: true }] }).message, /is a FIFO/);
  t.regex(problems(t, { kernel, drives: [{ path: '/dev/null' }] }).message, /is a character device/);
  const ro = join(dir, 'ro.img');
  writeFileSync(ro, Buffer.alloc(512));
  chmodSync(ro, 0o444);
  if (process.getuid?.() === 0) {
    t.log('root: permission bits do not apply; a 0444 image is writable');
    t.is(resolveConfig({ kernel, drives: [{ path: ro }] }).drives[0]!.readOnly, false);
  } else {
    t.regex(problems(t, { kernel, drives: [{ path: ro }] }).message, /for writing \(EACCES\).*readOnly: true/);
    t.regex(problems(t, { kernel, drives: [{ path: ro }] }, { cli: true }).message, /make the drive read-only \(ro\)/);
  }
  t.is(resolveConfig({ kernel, drives: [{ path: ro, readOnly: true }] }).drives[0]!.readOnly, true);
});

test('share paths must be directories; tags are checked against the protocol', (t) => {
  t.regex(problems(t, { kernel, shares: [{ tag: 'a', path: disk, protocol: '9p' }] }).message, /shares\[0\]\.path: .*is a regular file; a share must be a directory/);
  t.regex(problems(t, { kernel, shares: [{ tag: 'a', path: join(dir, 'nope'), protocol: 'virtiofs' }] }).message, /does not exist/);
  t.regex(problems(t, { kernel, shares: [{ tag: 'x'.repeat(32), path: shareDir, protocol: '9p' }] }).message, /shares\[0\]\.tag/);
  t.is(resolveConfig({ kernel, shares: [{ tag: 'x'.repeat(36), path: shareDir, protocol: 'virtiofs' }] }).shares.length, 1);
  t.is(resolveConfig({ kernel, shares: [{ tag: 'a', path: shareDir, protocol: 'virtiofs', cache: 'never' }] }).shares[0]!.cache, 'never');
  t.regex(problems(t, { kernel, shares: [{ tag: 'a', path: shareDir, protocol: '9p', cache: 'never' }] }).message, /shares\[0\]\.cache: applies to virtiofs shares only/);
  t.regex(problems(t, { kernel, shares: [{ tag: 'a', path: shareDir, protocol: 'virtiofs', cache: 'always' as 'never' }] }).message, /shares\[0\]\.cache/);
});

test('net: tap name at most 15 bytes, MAC format and unicast', (t) => {
  t.regex(problems(t, { kernel, net: [{ tap: 'a'.repeat(34) }] }).message, /net\[0\]\.tap: .*1 to 15 bytes.*34 bytes/);
  t.is(resolveConfig({ kernel, net: [{ tap: 'a'.repeat(15) }] }).net[0]!.tap, 'a'.repeat(15));
  t.regex(problems(t, { kernel, net: [{ tap: 'tap0', mac: '02:00:00:00:00' }] }).message, /net\[0\]\.mac: must be a MAC address/);
  t.regex(problems(t, { kernel, net: [{ tap: 'tap0', mac: 'ff:ff:ff:ff:ff:ff' }] }).message, /multicast or broadcast/);
  t.is(resolveConfig({ kernel, net: [{ tap: 'tap0', mac: '02:AB:00:00:00:01' }] }).net[0]!.mac, '02:AB:00:00:00:01');
});

test('vcpus: more than the host maximum fails at construction', (t) => {
  const max = maxVcpus();
  t.true(max >= 1 && max <= 255, `max ${max}`);
  t.regex(problems(t, { kernel, vcpus: 1000 }).message, new RegExp(`vcpus: 1000 is more than this host's maximum of ${max}`));
  t.is(resolveConfig({ kernel, vcpus: max }).vcpus, max);
});

test('every problem is reported together, in one ConfigError', (t) => {
  const e = problems(t, { kernel: join(dir, 'nope'), memoryMiB: 3, vcpus: 0, memoryMib: 1, net: [{ tap: 'a'.repeat(20) }], drives: [{ path: join(dir, 'missing') }] });
  t.deepEqual(e.problems.map((p) => p.field).sort(), ['drives[0].path', 'kernel', 'memoryMiB', 'memoryMib', 'net[0].tap', 'vcpus']);
  t.is(e.message.split('\n').length, 6, e.message);
});

test('with cli: true, fields are named by their flags', (t) => {
  const e = problems(t, { kernel, memoryMiB: 3, vcpus: 0, drives: [{ path: disk }, { path: join(dir, 'missing') }], vsock: { guestCid: 1, udsPath: join(dir, 'v') } }, { cli: true });
  t.deepEqual(e.problems.map((p) => p.field), ['--mem', '--cpus', '--drive #2 path', '--vsock cid']);
  t.true(e.message.startsWith('--mem: '));
});

test('skip leaves a file unchecked (the CLI before the default guest exists)', (t) => {
  t.is(resolveConfig({ kernel: '/not/yet/built' }, { skip: ['kernel'] }).kernel, '/not/yet/built');
});

test("the README's configuration reference is the schema's", (t) => {
  const readme = readFileSync(new URL('../../../../README.md', import.meta.url), 'utf8');
  t.true(readme.includes(configReference()), 'README.md must contain configReference() verbatim (regenerate it: node -e "import(\'./dist/lib/vm/config.js\').then(m => console.log(m.configReference()))")');
});

test('#17: a failed start() emits exit (reason error) as well as rejecting', async (t) => {
  // The image size (100 bytes, not a multiple of 512) is only found when start() opens it: before KVM is touched.
  const odd = join(dir, 'odd.img');
  writeFileSync(odd, Buffer.alloc(100));
  const vm = new MicroVM({ kernel, drives: [{ path: odd }] });
  const exits: VmExit[] = [];
  vm.on('exit', (e) => exits.push(e));
  await t.throwsAsync(vm.start(), { instanceOf: ConfigError, message: /not a multiple of 512/ });
  t.is(exits.length, 1);
  t.is(exits[0]!.reason, 'error');
  t.is(vm.state, 'exited');
  t.is(await vm.wait(), exits[0]);
});

test('vcpuNice: 0 to 19 nice steps, default DEFAULT_VCPU_NICE; anything else names the field and its range', (t) => {
  t.is(resolveConfig({ kernel }).vcpuNice, DEFAULT_VCPU_NICE);
  t.is(resolveConfig({ kernel, vcpuNice: 0 }).vcpuNice, 0);
  t.is(resolveConfig({ kernel, vcpuNice: 19 }).vcpuNice, 19);
  t.regex(problems(t, { kernel, vcpuNice: 20 }).message, /vcpuNice: must be from 0 to 19, got 20/);
  t.regex(problems(t, { kernel, vcpuNice: -1 }).message, /vcpuNice: must be from 0 to 19, got -1/);
  t.regex(problems(t, { kernel, vcpuNice: 2.5 }, { cli: true }).message, /--vcpu-nice: must be an integer from 0 to 19, got the number 2.5/);
});
