/**
 * docs/bounds.md, virtio-9p rows: a hostile guest tries to grow the fid table,
 * the xattr data held by fids, the share's fds and the host lock records past
 * their bounds. Each
 * test asserts the table stayed within its bound and the Rlerror the guest got.
 */
import test, { type ExecutionContext } from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as P from '../../../devices/virtio/9p/constants.js';
import { P9Server } from '../../../devices/virtio/9p/server.js';
import { hostSetxattr, ROOT_FID, withHarness } from '../devices/virtio/9p/p9-harness.js';

type T = ExecutionContext;

test('9P fids: at most maxFids per session (default P9_MAX_FIDS = 65536); Twalk/Tattach past it get EMFILE', withHarness({ maxFids: 32 }, (h, t: T) => {
  const fids: number[] = [];
  // The guest clones the root fid until the table refuses (ROOT_FID already holds one entry).
  let errno = 0;
  for (let i = 0; i < 100 && errno === 0; i++) {
    const f = h.fid();
    try {
      h.walk(ROOT_FID, f, []);
      fids.push(f);
    } catch {
      errno = h.errno(() => h.walk(ROOT_FID, f, []));
    }
  }
  t.is(errno, P.EMFILE);
  t.is(fids.length, 31);
  t.is(h.server.fids.size, 32, 'the table is exactly at its bound');
  t.is(h.errno(() => h.attach(h.fid())), P.EMFILE, 'Tattach too');
  t.is(h.errno(() => h.xattrwalk(ROOT_FID, h.fid(), '')), P.EMFILE, 'Txattrwalk too');
  t.is(h.server.fids.size, 32);
  // Clunking one makes room for exactly one more.
  h.clunk(fids.pop()!);
  h.walk(ROOT_FID, h.fid(), []);
  t.is(h.errno(() => h.walk(ROOT_FID, h.fid(), [])), P.EMFILE);
  // The default the device is built with.
  t.is(P.P9_MAX_FIDS, 65536);
  t.is(new P9Server(h.fs).fids.max, P.P9_MAX_FIDS);
}));

test('9P xattr data: at most P9_MAX_XATTR_BYTES (16 MiB) held by a session\'s fids; Txattrcreate/Txattrwalk past it get ENOMEM', withHarness({}, (h, t: T) => {
  // Without this bound, 65536 fids x 64 KiB values = 4 GiB of host memory.
  const per = P.P9_XATTR_SIZE_MAX;
  const fits = P.P9_MAX_XATTR_BYTES / per;
  t.is(fits, 256);
  const xattrFile = withXattr(join(h.share, 'file'));
  const held: number[] = [];
  for (let i = 0; i < fits; i++) {
    const f = h.fid();
    h.walk(ROOT_FID, f, []);
    h.xattrcreate(f, `user.k${i}`, per); // never written, never clunked: the value stays allocated
    held.push(f);
  }
  t.is(h.server.fids.xattrBytes, P.P9_MAX_XATTR_BYTES);
  const f = h.fid();
  h.walk(ROOT_FID, f, []);
  t.is(h.errno(() => h.xattrcreate(f, 'user.one-more', per)), P.ENOMEM);
  t.is(h.errno(() => h.xattrcreate(f, 'user.one-byte', 1)), P.ENOMEM, 'even one byte');
  h.xattrcreate(f, 'user.empty', 0); // nothing held: allowed
  t.is(h.server.fids.xattrBytes, P.P9_MAX_XATTR_BYTES, 'the bound held');
  t.is(h.server.fids.get(held[0]!)?.kind, 'xattr-write');
  // Txattrwalk of a non-empty value is refused as well while the budget is spent.
  const file = xattrFile ? h.walkTo('file') : 0;
  if (xattrFile) t.is(h.errno(() => h.xattrwalk(file, h.fid(), 'user.a')), P.ENOMEM);
  // Clunking one value (Tclunk answers EINVAL: it was never written) gives its bytes back.
  t.is(h.errno(() => h.clunk(held.pop()!)), P.EINVAL);
  t.is(h.server.fids.xattrBytes, P.P9_MAX_XATTR_BYTES - per);
  const g = h.fid();
  h.walk(ROOT_FID, g, []);
  h.xattrcreate(g, 'user.again', per);
  t.is(h.server.fids.xattrBytes, P.P9_MAX_XATTR_BYTES);
  if (xattrFile) {
    t.is(h.errno(() => h.clunk(held.pop()!)), P.EINVAL);
    t.is(h.xattrwalk(file, h.fid(), 'user.a'), 5n);
    t.is(h.server.fids.xattrBytes, P.P9_MAX_XATTR_BYTES - per + 5);
  }
  // Tversion (a new session) drops it all.
  h.version();
  t.is(h.server.fids.xattrBytes, 0);
  t.is(h.server.fids.size, 0);
}));

test('9P share fds: at most maxFds nodes and open files (default a quarter of RLIMIT_NOFILE, 256..65536); Twalk/Tlopen past it get EMFILE', withHarness({ maxFds: 16 }, (h, t: T) => {
  for (let i = 0; i < 40; i++) writeFileSync(join(h.share, `f${i}`), 'x');
  const opened: number[] = [];
  let errno = 0;
  for (let i = 0; i < 40 && errno === 0; i++) {
    try {
      const f = h.walkTo(`f${i}`);
      h.lopen(f, P.P9_DOTL_RDONLY);
      opened.push(f);
    } catch (e) {
      errno = (e as { errno?: number }).errno ?? -1;
    }
  }
  t.is(errno, P.EMFILE);
  t.true(h.fs.fdsInUse <= 16, `${h.fs.fdsInUse} fds`);
  t.is(h.fs.fdsInUse, 16, 'the budget is used up, not exceeded');
  h.clunk(opened.pop()!);
  t.is(h.fs.fdsInUse, 14, 'clunk gives back the node fd and the open file');
}));

test('9P lock ranges: at most maxLockRanges per session (default P9_MAX_LOCK_RANGES = 4096); Tlock past it gets ENOLCK and takes nothing', withHarness({ maxLockRanges: 8 }, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), 'x'.repeat(100));
  const a = h.walkTo('f');
  const b = h.walkTo('f');
  h.lopen(a, P.P9_DOTL_RDWR);
  h.lopen(b, P.P9_DOTL_RDWR);
  const W = P.P9_LOCK_TYPE_WRLCK;
  // Every other byte: ranges the host cannot merge, one kernel record each.
  for (let i = 0; i < 8; i++) t.is(h.lock(a, W, BigInt(2 * i), 1n), P.P9_LOCK_SUCCESS);
  t.is(h.server.fids.lockRanges, 8);
  t.is(h.errno(() => h.lock(a, W, 20n, 1n)), P.ENOLCK);
  t.is(h.errno(() => h.lock(b, W, 40n, 1n)), P.ENOLCK, 'the bound is the session\'s, not one file\'s');
  t.is(h.server.fids.lockRanges, 8);
  t.is(h.getlock(b, W, 20n, 1n).type, P.P9_LOCK_TYPE_UNLCK, 'the refused lock was not taken in the host');
  t.is(h.getlock(b, W, 2n, 1n).type, W, 'the held ones were');
  // Re-locking a held range, or one range over all of them, needs no more room.
  t.is(h.lock(a, P.P9_LOCK_TYPE_RDLCK, 0n, 1n), P.P9_LOCK_SUCCESS);
  t.is(h.lock(a, W, 0n, 16n), P.P9_LOCK_SUCCESS);
  t.is(h.server.fids.lockRanges, 1);
  // Unlocking the middle splits it in two; to the end of the file (length 0) too.
  t.is(h.lock(a, P.P9_LOCK_TYPE_UNLCK, 4n, 2n), P.P9_LOCK_SUCCESS);
  t.is(h.server.fids.lockRanges, 2);
  t.is(h.lock(b, W, 50n, 0n), P.P9_LOCK_SUCCESS);
  t.is(h.lock(b, P.P9_LOCK_TYPE_UNLCK, 60n, 5n), P.P9_LOCK_SUCCESS);
  t.is(h.server.fids.lockRanges, 4);
  // A lock the host refuses (BLOCKED) holds nothing.
  t.is(h.lock(b, W, 0n, 1n), P.P9_LOCK_BLOCKED);
  t.is(h.server.fids.lockRanges, 4);
  // Clunking a file gives its ranges back (the host dropped them with its fd).
  h.clunk(a);
  t.is(h.server.fids.lockRanges, 2);
  for (let i = 0; i < 6; i++) t.is(h.lock(b, W, BigInt(2 * i), 1n), P.P9_LOCK_SUCCESS);
  t.is(h.errno(() => h.lock(b, W, 30n, 1n)), P.ENOLCK);
  // Tversion (a new session) drops them all.
  h.version();
  t.is(h.server.fids.lockRanges, 0);
  t.is(P.P9_MAX_LOCK_RANGES, 4096);
  t.is(new P9Server(h.fs).fids.maxLockRanges, P.P9_MAX_LOCK_RANGES);
}));

/** Creates `path` with xattr user.a = "value"; false when the host filesystem has no user xattrs. */
function withXattr(path: string): boolean {
  writeFileSync(path, 'x');
  try {
    hostSetxattr(path, 'user.a', 'value');
    return true;
  } catch {
    return false;
  }
}
