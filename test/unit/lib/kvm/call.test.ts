/**
 * lib/kvm/call.ts: an ioctl that a signal interrupted (EINTR) is made again,
 * other errors become a KvmError at once, and a signal storm ends in a
 * KvmError rather than an endless loop. (Under `node --cpu-prof`, SIGPROF
 * made KVM_CREATE_VM fail with EINTR in the x86_64 test host.)
 */
import test from 'ava';
import { EINTR_RETRIES, retried } from '../../../../lib/kvm/call.js';
import { KVM_CREATE_VM } from '../../../../lib/kvm/ioctls.js';
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
