import test from 'ava';
import { accessSync, chmodSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, DEFAULT_MEMORY_MIB, DEFAULT_VCPU_NICE, MAX_CMDLINE_BYTES, type MicroVMConfig } from '../../../lib/vm/config.js';
import { ConfigError, FlintvmError } from '../../../lib/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'flintvm-config-'));
const kernel = join(dir, 'vmlinux');
writeFileSync(kernel, Buffer.from('\x7fELF fake kernel'));
const initrd = join(dir, 'initrd.cpio');
writeFileSync(initrd, Buffer.from('070701'));
const empty = join(dir, 'empty');
writeFileSync(empty, '');

test.after.always(() => rmSync(dir, { recursive: true, force: true }));

/** Asserts that `config` is refused with a ConfigError on `field`, and returns it. */
function refused(t: import('ava').ExecutionContext, config: unknown, field: string, message?: RegExp): ConfigError | undefined {
  const e = t.throws(() => resolveConfig(config as MicroVMConfig), { instanceOf: ConfigError }, `expected a ConfigError on ${field}`);
  if (!e) return undefined;
  t.is(e.code, 'FLINTVM_E_CONFIG');
  t.is(e.field, field);
  t.true(e instanceof FlintvmError);
  t.true(e.message.startsWith(`${field}: `), `message names the field: ${e.message}`);
  if (message) t.regex(e.message, message);
  return e;
}

test('a minimal config resolves with every default filled', (t) => {
  t.deepEqual(resolveConfig({ kernel }), {
    kernel, initrd: undefined, cmdline: undefined, extraCmdline: undefined, memoryMiB: DEFAULT_MEMORY_MIB, vcpus: 1, vcpuNice: DEFAULT_VCPU_NICE,
    console: 'pipe', bootProtocol: 'linux64', drives: [], rng: false, net: [], shares: [], vsock: undefined, workerPool: undefined,
  });
  const full = resolveConfig({ kernel, initrd, cmdline: 'console=ttyS0', extraCmdline: 'quiet', memoryMiB: 64, vcpus: 2, console: 'none', bootProtocol: 'pvh' });
  t.is(full.initrd, initrd);
  t.is(full.memoryMiB, 64);
  t.is(full.vcpus, 2);
  t.is(full.console, 'none');
  t.is(full.bootProtocol, 'pvh');
});

test('not an object', (t) => {
  refused(t, null, 'config');
  refused(t, 'vmlinux', 'config');
});

test('missing kernel: ENOENT, names kernel and says how to fix it', (t) => {
  const e = refused(t, { kernel: join(dir, 'nope') }, 'kernel', /ENOENT/);
  t.regex(e?.message ?? '', /nope/, 'names the path');
  t.regex(e?.message ?? '', /check the path|npm run guest/, 'gives a fix');
  t.is((e?.cause as NodeJS.ErrnoException | undefined)?.code, 'ENOENT', 'wraps the fs error as cause');
  t.is(e?.value, join(dir, 'nope'));
});

test('kernel missing from the config, or not a string', (t) => {
  refused(t, {}, 'kernel', /path/);
  refused(t, { kernel: '' }, 'kernel');
  refused(t, { kernel: 42 }, 'kernel');
});

test('unreadable kernel (chmod 000) is refused unless we are root', (t) => {
  const f = join(dir, 'secret');
  writeFileSync(f, 'x');
  chmodSync(f, 0o000);
  let readable = true;
  try { accessSync(f, constants.R_OK); } catch { readable = false; }
  if (readable) {
    // Root bypasses permission bits, so the file really is readable here and must be accepted.
    t.log('running as root: chmod 000 does not make a file unreadable; checking that it is accepted instead');
    t.is(resolveConfig({ kernel: f }).kernel, f);
  } else {
    refused(t, { kernel: f }, 'kernel', /EACCES.*readable/);
  }
  // A path through a regular file fails for everyone, root included.
  refused(t, { kernel: join(kernel, 'sub') }, 'kernel', /ENOTDIR/);
});

test('a directory as kernel', (t) => {
  refused(t, { kernel: dir }, 'kernel', /not a regular file/);
});

test('an empty kernel file', (t) => {
  refused(t, { kernel: empty }, 'kernel', /empty/);
});

test('initrd is checked like the kernel, under its own field', (t) => {
  refused(t, { kernel, initrd: join(dir, 'nope.cpio') }, 'initrd', /ENOENT/);
  refused(t, { kernel, initrd: empty }, 'initrd', /empty/);
  refused(t, { kernel, initrd: dir }, 'initrd', /not a regular file/);
});

test('memoryMiB: not a multiple of 2 (with the fix), zero, negative, non-integer, not a number', (t) => {
  refused(t, { kernel, memoryMiB: 3 }, 'memoryMiB', /multiple of 2.*use 4/);
  refused(t, { kernel, memoryMiB: 257 }, 'memoryMiB', /use 258/);
  refused(t, { kernel, memoryMiB: 0 }, 'memoryMiB', /positive/);
  refused(t, { kernel, memoryMiB: -2 }, 'memoryMiB', /positive/);
  refused(t, { kernel, memoryMiB: 2.5 }, 'memoryMiB', /integer/);
  refused(t, { kernel, memoryMiB: NaN }, 'memoryMiB');
  refused(t, { kernel, memoryMiB: Infinity }, 'memoryMiB');
  refused(t, { kernel, memoryMiB: '256' }, 'memoryMiB');
  t.is(resolveConfig({ kernel, memoryMiB: 2 }).memoryMiB, 2);
});

test('memoryMiB: more than the host has', (t) => {
  const hostMiB = Math.floor(totalmem() / (1024 * 1024));
  const tooMuch = hostMiB + 2 - (hostMiB % 2);
  const e = refused(t, { kernel, memoryMiB: tooMuch }, 'memoryMiB', /more than this host/);
  t.is(e?.value, tooMuch);
});

test('vcpus: 0, negative, fractional, not a number', (t) => {
  refused(t, { kernel, vcpus: 0 }, 'vcpus', />= 1/);
  refused(t, { kernel, vcpus: -1 }, 'vcpus');
  refused(t, { kernel, vcpus: 1.5 }, 'vcpus', /integer/);
  refused(t, { kernel, vcpus: NaN }, 'vcpus');
  refused(t, { kernel, vcpus: '2' }, 'vcpus');
});

test('cmdline: too long, newline, NUL, not a string', (t) => {
  refused(t, { kernel, cmdline: 'a'.repeat(3000) }, 'cmdline', /limit is 2047/);
  refused(t, { kernel, cmdline: 'a'.repeat(1500), extraCmdline: 'b'.repeat(1500) }, 'cmdline', /limit/);
  // Bytes, not UTF-16 units: 1100 two-byte characters are 2200 bytes.
  refused(t, { kernel, cmdline: 'é'.repeat(1100) }, 'cmdline', /22\d\d bytes/);
  refused(t, { kernel, cmdline: 'console=ttyS0\ninit=/bin/sh' }, 'cmdline', /newline/);
  refused(t, { kernel, cmdline: 'a\0b' }, 'cmdline', /NUL/);
  refused(t, { kernel, extraCmdline: 'x\ny' }, 'extraCmdline', /newline/);
  refused(t, { kernel, cmdline: 5 }, 'cmdline', /string/);
  t.is(resolveConfig({ kernel, cmdline: 'a'.repeat(2000) }).cmdline?.length, 2000);
});

// The limit itself is allowed (regression: the check once counted a phantom space).
test('cmdline of exactly MAX_CMDLINE_BYTES bytes is accepted', (t) => {
  t.is(resolveConfig({ kernel, cmdline: 'a'.repeat(MAX_CMDLINE_BYTES) }).cmdline?.length, MAX_CMDLINE_BYTES);
});

test('console and bootProtocol must be one of their values', (t) => {
  refused(t, { kernel, console: 'tty' }, 'console', /'pipe' or 'none'/);
  refused(t, { kernel, console: 'file' }, 'console');
  refused(t, { kernel, bootProtocol: 'multiboot' }, 'bootProtocol', /'linux64' or 'pvh'/);
  refused(t, { kernel, bootProtocol: 1 }, 'bootProtocol');
});
