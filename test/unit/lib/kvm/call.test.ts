/**
 * lib/kvm/call.ts: an ioctl that a signal interrupted (EINTR) is made again,
 * other errors become a KvmError at once, and a signal storm ends in a
 * KvmError rather than an endless loop. (Under `node --cpu-prof`, SIGPROF
 * made KVM_CREATE_VM fail with EINTR in the x86_64 test host.) The set-up
 * ioctls and the VM fd's close made on a libuv pool thread return their own
 * result and errno.
 */
import test from 'ava';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EINTR_RETRIES, ioctlOnPool, retried } from '../../../../lib/kvm/call.js';
import { closeOnPool } from '../../../../lib/kvm/ffi.js';
import { KVM_CREATE_VM, KVM_CREATE_IRQCHIP } from '../../../../lib/kvm/ioctls.js';
import { KvmError } from '../../../../lib/errors.js';

const EINTR = 4;
const EINVAL = 22;

/** A fake ioctl that fails with each errno of `errnos` in turn, then returns `result`. */
function fake(errnos: number[], result: number) {
  let calls = 0;
  let last = 0;
  return {
    call: () => {
      calls++;
      if (errnos.length === 0) return result;
      last = errnos.shift()!;
      return -1;
    },
    errno: () => last,
    get calls() { return calls; },
  };
}

test('EINTR: the ioctl is made again until it succeeds', (t) => {
  const f = fake([EINTR, EINTR, EINTR], 7);
  t.is(retried(KVM_CREATE_VM, f.call, f.errno), 7);
  t.is(f.calls, 4);
});

test('another errno is a KvmError at once, named by the ioctl and the errno', (t) => {
  const f = fake([EINTR, EINVAL], 7);
  const e = t.throws(() => retried(KVM_CREATE_VM, f.call, f.errno), { instanceOf: KvmError });
  t.regex(e!.message, /KVM_CREATE_VM.*EINVAL/);
  t.is(f.calls, 2);
});

test('a signal storm: after EINTR_RETRIES retries the EINTR is a KvmError', (t) => {
  const f = fake(new Array(EINTR_RETRIES + 5).fill(EINTR), 7);
  const e = t.throws(() => retried(KVM_CREATE_VM, f.call, f.errno), { instanceOf: KvmError });
  t.regex(e!.message, /EINTR/);
  t.is(f.calls, EINTR_RETRIES + 1);
});

/** FIONREAD (asm-generic/ioctls.h): on a regular file, the bytes from the file position to its end. */
const FIONREAD = 0x541b;
const EBADF = 9;

/** A file of `size` bytes opened for reading; `done()` removes it. */
function tempFile(size: number) {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-call-'));
  const path = join(dir, 'f');
  writeFileSync(path, Buffer.alloc(size, 1));
  return { fd: openSync(path, 'r'), done: () => rmSync(dir, { recursive: true, force: true }) };
}

test.serial('ioctlOnPool: a pointer argument is filled by the call on the pool thread', async (t) => {
  const f = tempFile(1234);
  try {
    const out = new Uint8Array(4);
    t.is(await ioctlOnPool(f.fd, FIONREAD, out), 0);
    t.is(new DataView(out.buffer).getInt32(0, true), 1234);
  } finally {
    closeSync(f.fd);
    f.done();
  }
});

test.serial('ioctlOnPool: a failure rejects with a KvmError carrying the errno of the pool thread\'s call', async (t) => {
  const e = await t.throwsAsync(ioctlOnPool(-1, KVM_CREATE_IRQCHIP, 0), { instanceOf: KvmError });
  t.is(e!.errno, EBADF);
  t.regex(e!.message, /KVM_CREATE_IRQCHIP.*EBADF/);
});

test.serial('closeOnPool closes the fd before it resolves', async (t) => {
  const f = tempFile(1);
  try {
    t.notThrows(() => fstatSync(f.fd));
    const r = await closeOnPool(f.fd);
    t.deepEqual(r, { result: 0, errno: 0 });
    t.throws(() => fstatSync(f.fd), { code: 'EBADF' });
  } finally {
    f.done();
  }
});
