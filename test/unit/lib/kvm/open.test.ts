import test from 'ava';
import { readdirSync } from 'node:fs';
import { Kvm } from '../../../../lib/kvm/kvm.js';
import { KvmError } from '../../../../lib/errors.js';

test('a missing /dev/kvm gives a KvmError that says how to fix it', (t) => {
  const e = t.throws(() => Kvm.open('/nonexistent/kvm'), { instanceOf: KvmError });
  t.is(e?.code, 'FLINTVM_E_KVM_IOCTL');
  t.is(e?.errno, 2);
  t.regex(e!.message, /does not exist.*modprobe/);
});

test('a device that is not KVM is refused (ioctl fails), and nothing stays open', (t) => {
  const fds = () => readdirSync('/proc/self/fd').length;
  const before = fds();
  for (let i = 0; i < 10; i++) {
    const e = t.throws(() => Kvm.open('/dev/null'), { instanceOf: KvmError });
    t.regex(e!.message, /KVM_GET_API_VERSION/);
  }
  t.is(fds(), before);
});
