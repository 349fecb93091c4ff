import test from 'ava';
import { constants } from 'node:os';
import {
  ConfigError, FlintvmError, GuestAddressError, GuestError, HostError, KvmError, LoaderError, StateError, errnoName, withoutStack,
} from '../../../lib/errors.js';
import { fail, FsError } from '../../../devices/virtio/backends/hostdir/errors.js';
import { err, FuseError } from '../../../devices/virtio/fs/wire.js';

test('every error class has its stable code, its own name and is a FlintvmError', (t) => {
  const cases: [Error & { code: string }, string, string][] = [
    [new KvmError('KVM_RUN', 4), 'FLINTVM_E_KVM_IOCTL', 'KvmError'],
    [new HostError('mmap', 12), 'FLINTVM_E_HOST', 'HostError'],
    [new GuestAddressError(0x1000, 4), 'FLINTVM_E_GUEST_ADDR', 'GuestAddressError'],
    [new ConfigError('vcpus', 'must be >= 1', 0), 'FLINTVM_E_CONFIG', 'ConfigError'],
    [new LoaderError('bad magic', 0x1234), 'FLINTVM_E_LOADER', 'LoaderError'],
    [new StateError('not running'), 'FLINTVM_E_STATE', 'StateError'],
    [new GuestError('bad descriptor'), 'FLINTVM_E_GUEST', 'GuestError'],
  ];
  for (const [e, code, name] of cases) {
    t.is(e.code, code, name);
    t.is(e.name, name);
    t.true(e instanceof FlintvmError, name);
    t.true(e instanceof Error, name);
    t.regex(String(e.stack), new RegExp(`^${name}: `), `${name} stack starts with its name`);
  }
});

test('KvmError and HostError carry the ioctl/syscall, errno and its name in the message', (t) => {
  const k = new KvmError('KVM_SET_USER_MEMORY_REGION', 17, 'slots overlap');
  t.is(k.ioctl, 'KVM_SET_USER_MEMORY_REGION');
  t.is(k.errno, 17);
  t.is(k.value, 17);
  t.is(k.message, 'KVM_SET_USER_MEMORY_REGION failed: EEXIST (errno 17): slots overlap');
  const h = new HostError('eventfd', 24);
  t.is(h.syscall, 'eventfd');
  t.is(h.message, 'eventfd failed: EMFILE (errno 24)');
  t.is(new HostError('mmap', 12, '4096 bytes').message, 'mmap failed: ENOMEM (errno 12): 4096 bytes');
});

test('GuestAddressError: gpa, length and a hex address in the message, even for garbage numbers', (t) => {
  const e = new GuestAddressError(0xfee0_0000, 8);
  t.is(e.gpa, 0xfee0_0000);
  t.is(e.length, 8);
  t.is(e.value, 0xfee0_0000);
  t.is(e.message, 'guest access [0xfee00000, +8) is outside guest memory');
  t.regex(new GuestAddressError(0, 1, 'spanning two memory regions').message, /spanning two memory regions$/);
  t.regex(new GuestAddressError(NaN, 1).message, /NaN/);
  t.regex(new GuestAddressError(-5, 1).message, /-5/);
});

test('cause is wrapped when given and absent otherwise', (t) => {
  const root = Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' });
  const e = new ConfigError('kernel', 'cannot read', '/x', root);
  t.is(e.cause, root);
  t.is(e.value, '/x');
  t.is(e.field, 'kernel');
  t.is(e.message, 'kernel: cannot read');
  const plain = new ConfigError('vcpus', 'bad');
  t.false('cause' in plain, 'no cause property when none was given');
  t.is(plain.value, undefined);
  const f = new FlintvmError('FLINTVM_E_STATE', 'outer', { cause: e, value: 0 });
  t.is(f.cause, e);
  t.is(f.value, 0, 'a falsy value is kept');
  t.is(f.name, 'FlintvmError');
});

test('errnoName: known values by name, unknown as E#n', (t) => {
  t.is(errnoName(1), 'EPERM');
  t.is(errnoName(4), 'EINTR');
  t.is(errnoName(13), 'EACCES');
  t.is(errnoName(22), 'EINVAL');
  t.is(errnoName(25), 'ENOTTY');
  t.is(errnoName(0), 'E#0');
  t.is(errnoName(9999), 'E#9999');
  t.is(errnoName(-1), 'E#-1');
});

test('errnoName agrees with the host errno table for every name it knows', (t) => {
  let named = 0;
  for (const [, num] of Object.entries(constants.errno)) {
    const name = errnoName(num);
    if (name.startsWith('E#')) continue;
    named++;
    // Aliases (EWOULDBLOCK = EAGAIN, ENOTSUP = EOPNOTSUPP) share a number; the name we give must map back to it.
    t.is((constants.errno as Record<string, number>)[name], num, `${name} is ${num} on this host`);
  }
  t.true(named >= 20, `${named} errnos have names`);
});

test('withoutStack: the error has no stack frames; the thread keeps its own limit, even when the constructor throws', (t) => {
  const before = Error.stackTraceLimit;
  const e = withoutStack(() => new FlintvmError('FLINTVM_E_HOSTDIR', 'no such file'));
  t.is(e.stack, 'FlintvmError: no such file', 'the message only, no "at ..." lines');
  t.is(Error.stackTraceLimit, before);
  t.throws(() => withoutStack(() => { throw new Error('boom'); }), { message: 'boom' });
  t.is(Error.stackTraceLimit, before, 'restored after a throw');
  t.regex(new FlintvmError('FLINTVM_E_HOSTDIR', 'x').stack ?? '', /\n\s+at /, 'other errors keep their stack');
});

test('the guest-errno errors (hostdir fail, FUSE err) carry no stack; their errno and message are intact', (t) => {
  const fs = t.throws(() => fail(2, 'lookup', 'nope')) as FsError;
  t.true(fs instanceof FsError);
  t.is(fs.errno, 2);
  t.is(fs.message, 'lookup: ENOENT (errno 2): nope');
  t.notRegex(fs.stack ?? '', /\n\s+at /);
  const fuse = t.throws(() => err(61, 'no xattr')) as FuseError;
  t.true(fuse instanceof FuseError);
  t.is(fuse.errno, 61);
  t.notRegex(fuse.stack ?? '', /\n\s+at /);
});
