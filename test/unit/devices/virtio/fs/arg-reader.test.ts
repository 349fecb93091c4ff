/**
 * The FUSE server copies every request's argument bytes into one reused
 * ArgReader buffer and its in header into one reused header buffer. A
 * request must see only its own bytes, and nothing it hands on may change
 * when the next request overwrites the buffer.
 */
import test from 'ava';
import * as F from '../../../../../devices/virtio/fs/constants.js';
import { ArgReader, FuseError, readInHeader } from '../../../../../devices/virtio/fs/wire.js';
import { bytes, text, withHarness } from './fuse-harness.js';
import { errnoOf } from '../share-harness.js';

const fuseErrno = (fn: () => unknown): number => errnoOf(fn, FuseError, 'a FUSE error');

/** Copies `b` to the start of the reader's buffer and starts a request of that length. */
function load(a: ArgReader, b: Uint8Array): ArgReader {
  a.buf.set(b);
  return a.reset(b.length);
}

test('ArgReader: reads stop at the request\'s own length, whatever an earlier, longer request left in the buffer', (t) => {
  const a = new ArgReader(64);
  load(a, bytes('longer-name\0\x01\x02\x03\x04\x05\x06\x07\x08'));
  t.is(text(a.cstr()), 'longer-name');
  t.is(a.remaining, 8);

  // Three bytes, no NUL of their own: the stale NUL at offset 11 must not terminate them.
  load(a, bytes('abc'));
  t.is(fuseErrno(() => a.cstr()), F.EINVAL);
  load(a, bytes('abc'));
  t.is(fuseErrno(() => a.u32()), F.EINVAL, 'a u32 past the request\'s 3 bytes is EINVAL, though the buffer has room');
  load(a, bytes('abcd'));
  t.is(a.u32(), 0x64636261);
  t.is(fuseErrno(() => a.u64()), F.EINVAL);
  load(a, bytes('abc'));
  t.deepEqual([...a.rest()], [...bytes('abc')], 'rest() is the request\'s bytes only');
  t.is(a.remaining, 0);
  load(a, new Uint8Array(0));
  t.is(fuseErrno(() => a.skip(1)), F.EINVAL);
});

test('ArgReader: names and byte strings are copies, unchanged when the next request overwrites the buffer', (t) => {
  const a = new ArgReader(64);
  load(a, bytes('first\0xattr-value'));
  const name = a.name();
  const value = a.rest();
  load(a, bytes('XXXXXXXXXXXXXXXXXXXXXXXX\0'));
  t.is(text(name), 'first');
  t.is(text(value), 'xattr-value');
});

test('ArgReader.reset: a length outside the buffer is a RangeError', (t) => {
  const a = new ArgReader(16);
  t.throws(() => a.reset(17), { instanceOf: RangeError });
  t.throws(() => a.reset(-1), { instanceOf: RangeError });
  t.throws(() => a.reset(1.5), { instanceOf: RangeError });
  t.notThrows(() => a.reset(16));
});

test('readInHeader decodes fuse_in_header fields from a DataView', (t) => {
  const dv = new DataView(new ArrayBuffer(F.IN_HEADER_SIZE));
  dv.setUint32(0, 123, true);
  dv.setUint32(4, F.FUSE_LOOKUP, true);
  dv.setBigUint64(8, 0xfedc_ba98_7654_3210n, true);
  dv.setBigUint64(16, 42n, true);
  dv.setUint32(24, 1000, true);
  dv.setUint32(28, 1001, true);
  t.deepEqual(readInHeader(dv), { len: 123, opcode: F.FUSE_LOOKUP, unique: 0xfedc_ba98_7654_3210n, nodeid: 42n, uid: 1000, gid: 1001 });
});

test('requests served one after another each see their own names (a long name, then a shorter one)', withHarness({}, (h, t) => {
  const long = h.mkdir(1, 'a-much-longer-directory-name');
  const short = h.mkdir(1, 'ab');
  t.not(long.nodeid, short.nodeid);
  t.is(h.lookup(1, 'ab').nodeid, short.nodeid);
  t.is(h.lookup(1, 'a-much-longer-directory-name').nodeid, long.nodeid);
  // "a" is a prefix of both earlier names: must not find either.
  t.is(h.errno(() => h.lookup(1, 'a')), F.ENOENT);
  t.deepEqual(h.readdir(1).map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort(), ['a-much-longer-directory-name', 'ab']);
}));
