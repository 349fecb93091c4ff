/**
 * Fuzz target `9p`: the virtio-9p device and its 9P2000.L server over a real
 * temp share (the unit tests' P9Harness: real guest memory, real HostDir), one
 * session per episode. Each input is one T-message of any type, with fields
 * drawn from a small pool of fids (so walks, opens, creates, xattrs and
 * clunks build on each other across inputs), hostile names (.., /, NUL, 256
 * bytes, symlinks out of the share), edge numbers; some messages are mutated
 * or truncated after encoding, sent split across descriptors, or with a
 * writable part too small for the reply. A Tversion now and then restarts the
 * session.
 *
 * Oracles: the chain always comes back (once); no DEVICE_NEEDS_RESET; a reply's
 * size field equals the used length, it echoes the tag, and its type is the
 * request's + 1 or Rlerror; the fid table stays within its bound (maxFids)
 * and the share's fds within maxFds; after a Tversion no fid and no fd is
 * left; no reply carries the secret that sits next to the share; nothing
 * outside the share changes and no device node appears in it.
 */
import * as P from '../../../devices/virtio/9p/constants.js';
import { ReplyWriter } from '../../../devices/virtio/9p/wire.js';
import { MSIZE, P9Harness, ROOT_FID } from '../../../test/unit/devices/virtio/9p/p9-harness.js';
import type { Rng } from '../prng.js';
import { checkNoSecret, HostWatch, pickName, populateShare } from '../share-oracle.js';
import { check, type FuzzTarget } from '../target.js';

const MAX_FIDS = 64;
const MAX_FDS = 96;
const FID_POOL = 24;
const TYPES = [
  P.P9_TSTATFS, P.P9_TLOPEN, P.P9_TLCREATE, P.P9_TSYMLINK, P.P9_TMKNOD, P.P9_TRENAME, P.P9_TREADLINK, P.P9_TGETATTR, P.P9_TSETATTR,
  P.P9_TXATTRWALK, P.P9_TXATTRCREATE, P.P9_TREADDIR, P.P9_TFSYNC, P.P9_TLOCK, P.P9_TGETLOCK, P.P9_TLINK, P.P9_TMKDIR, P.P9_TRENAMEAT,
  P.P9_TUNLINKAT, P.P9_TVERSION, P.P9_TAUTH, P.P9_TATTACH, P.P9_TFLUSH, P.P9_TWALK, P.P9_TREAD, P.P9_TWRITE, P.P9_TCLUNK, P.P9_TREMOVE,
];
/** Linux open flags and mode bits worth trying (O_CREAT, O_TRUNC, O_DIRECTORY, O_NOFOLLOW, O_PATH...). */
const FLAGS = [0, 1, 2, 0o100, 0o1000, 0o2000, 0o200000, 0o400000, 0o10000000, 0o102, 0o1101];
const MODES = [0o644, 0o755, 0o100644, 0o40755, 0o10644, 0o140644, 0o20644, 0o60644, 0o4755, 0o7777, 0xffff_ffff];

/** A fid: most often one the session holds (`live`: the server said so), as a driver would use. */
function fid(rng: Rng, live: ReadonlySet<number>): number {
  if (live.size > 0 && rng.bool(0.85)) return [...live][rng.int(live.size)]!;
  return rng.weighted([[12, rng.int(FID_POOL)], [2, ROOT_FID], [1, P.P9_NOFID], [1, rng.u32()]]);
}

/** A fid for a new binding (Twalk's newfid, Tattach, Txattrwalk): mostly a free one from the pool. */
function newFid(rng: Rng, live: ReadonlySet<number>): number {
  if (rng.bool(0.15)) return fid(rng, live);
  for (let i = 0; i < 8; i++) {
    const f = rng.int(FID_POOL) + 2;
    if (!live.has(f)) return f;
  }
  return rng.u32();
}

/** Encodes the body of a T-message of `type` with fields from the pools. */
function body(rng: Rng, type: number, w: ReplyWriter, live: ReadonlySet<number>): void {
  const name = () => w.str(pickName(rng));
  const u64 = () => w.u64(rng.edgeU64());
  switch (type) {
    case P.P9_TVERSION: w.u32(rng.weighted([[6, MSIZE], [1, rng.edgeU32()]])).str(new TextEncoder().encode(rng.weighted([[6, '9P2000.L'], [1, '9P2000'], [1, '9P2000.u'], [1, '']]))); break;
    case P.P9_TATTACH: w.u32(newFid(rng, live)).u32(rng.bool(0.9) ? P.P9_NOFID : fid(rng, live)).str(new TextEncoder().encode('root')); name(); w.u32(rng.weighted([[4, 0], [1, 1000], [1, P.P9_NOFID], [1, rng.u32()]])); break;
    case P.P9_TAUTH: w.u32(fid(rng, live)).str(new TextEncoder().encode('root')); name(); w.u32(0); break;
    case P.P9_TWALK: {
      w.u32(fid(rng, live)).u32(newFid(rng, live));
      const n = rng.weighted([[6, rng.int(3)], [1, rng.int(20)], [1, rng.u32() & 0xffff]]);
      w.u16(n);
      for (let i = 0; i < Math.min(n, 20); i++) name();
      break;
    }
    case P.P9_TLOPEN: w.u32(fid(rng, live)).u32(rng.bool(0.8) ? rng.pick(FLAGS) : rng.u32()); break;
    case P.P9_TLCREATE: w.u32(fid(rng, live)); name(); w.u32(rng.pick(FLAGS)).u32(rng.pick(MODES)).u32(rng.edgeU32()); break;
    case P.P9_TREAD: w.u32(fid(rng, live)); u64(); w.u32(rng.weighted([[6, rng.int(8192)], [1, rng.edgeU32()]])); break;
    case P.P9_TWRITE: {
      w.u32(fid(rng, live)).u64(rng.weighted([[6, BigInt(rng.int(10000))], [1, rng.edgeU64()]]));
      const data = rng.bytes(rng.int(3000));
      w.u32(rng.bool(0.9) ? data.length : rng.edgeU32()).raw(data);
      break;
    }
    case P.P9_TCLUNK: case P.P9_TREMOVE: case P.P9_TREADLINK: case P.P9_TSTATFS: w.u32(fid(rng, live)); break;
    case P.P9_TREADDIR: w.u32(fid(rng, live)); w.u64(rng.bool(0.7) ? BigInt(rng.int(20)) : rng.edgeU64()); w.u32(rng.weighted([[6, rng.int(8192)], [1, rng.edgeU32()]])); break;
    case P.P9_TGETATTR: w.u32(fid(rng, live)); u64(); break;
    case P.P9_TSETATTR: w.u32(fid(rng, live)).u32(rng.edgeU32()).u32(rng.pick(MODES)).u32(rng.edgeU32()).u32(rng.edgeU32()).u64(rng.weighted([[6, BigInt(rng.int(20000))], [1, rng.edgeU64()]])); for (let i = 0; i < 4; i++) u64(); break;
    case P.P9_TMKDIR: w.u32(fid(rng, live)); name(); w.u32(rng.pick(MODES)).u32(0); break;
    case P.P9_TSYMLINK: w.u32(fid(rng, live)); name(); name(); w.u32(0); break;
    case P.P9_TMKNOD: w.u32(fid(rng, live)); name(); w.u32(rng.pick(MODES)).u32(rng.edgeU32()).u32(rng.edgeU32()).u32(0); break;
    case P.P9_TLINK: w.u32(fid(rng, live)).u32(fid(rng, live)); name(); break;
    case P.P9_TRENAME: w.u32(fid(rng, live)).u32(fid(rng, live)); name(); break;
    case P.P9_TRENAMEAT: w.u32(fid(rng, live)); name(); w.u32(fid(rng, live)); name(); break;
    case P.P9_TUNLINKAT: w.u32(fid(rng, live)); name(); w.u32(rng.pick([0, 0x200, rng.u32()])); break;
    case P.P9_TXATTRWALK: w.u32(fid(rng, live)).u32(newFid(rng, live)).str(new TextEncoder().encode(rng.pick(['', 'user.a', 'user.b', 'trusted.x', 'security.capability', 'system.posix_acl_access', 'x']))); break;
    case P.P9_TXATTRCREATE: w.u32(fid(rng, live)).str(new TextEncoder().encode(rng.pick(['user.a', 'user.b', 'trusted.x', 'security.capability', '']))).u64(rng.weighted([[6, BigInt(rng.int(100))], [1, rng.edgeU64()]])).u32(rng.pick([0, 1, 2, rng.u32()])); break;
    case P.P9_TFSYNC: w.u32(fid(rng, live)).u32(rng.int(2)); break;
    case P.P9_TLOCK: w.u32(fid(rng, live)).u8(rng.int(4)).u32(rng.pick([0, 1, 2, rng.u32()])); u64(); u64(); w.u32(rng.u32()).str(new TextEncoder().encode('guest')); break;
    case P.P9_TGETLOCK: w.u32(fid(rng, live)).u8(rng.int(4)); u64(); u64(); w.u32(rng.u32()).str(new TextEncoder().encode('guest')); break;
    case P.P9_TFLUSH: w.u16(rng.u32() & 0xffff); break;
    default: w.raw(rng.bytes(rng.int(64)));
  }
}

export const p9Target: FuzzTarget = {
  name: '9p',
  description: '9P2000.L server over a real share: stateful T-message sequences (fid pool, hostile names, mutations) vs reply framing, table bounds, leaks and escapes',
  episode: 1000,
  checkEvery: 250,
  create(rng: Rng) {
    const h = new P9Harness({ maxFids: MAX_FIDS, maxFds: MAX_FDS, indirect: true, eventIdx: rng.bool() }, (share) => populateShare(share));
    const watch = new HostWatch(h.dir);
    const live = new Set<number>([ROOT_FID]);
    return {
      step(r: Rng) {
        if (!h.server.fids.has(ROOT_FID) && r.bool(0.2)) {
          // A driver that lost its root fid attaches again (in a new session if the old one is gone).
          if (h.server.fids.size === 0) h.version();
          h.attach(ROOT_FID);
          live.add(ROOT_FID);
        }
        const type = r.weighted([[60, r.pick(TYPES.filter((t) => t !== P.P9_TVERSION))], [20, P.P9_TWALK], [6, P.P9_TLOPEN], [6, P.P9_TCLUNK], [1, P.P9_TVERSION], [1, r.int(256)]]);
        const tag = r.weighted([[8, r.u32() & 0xfffe], [1, P.P9_NOTAG]]);
        const w = new ReplyWriter().begin();
        body(r, type, w, live);
        w.finish(type, tag);
        let msg: Uint8Array = w.bytes().slice();
        if (r.bool(0.1)) msg = r.mutate(msg);
        if (r.bool(0.05)) msg = msg.subarray(0, r.int(msg.length + 1));
        const replyLen = r.weighted([[8, 8192], [1, MSIZE], [1, r.int(64)]]);
        const cuts = r.bool(0.2) ? [r.int(msg.length + 1), r.int(msg.length + 1)] : undefined;
        const res = h.sendRaw(msg, { replyLen, ...(cuts ? { splitOut: cuts } : {}), indirect: r.bool(0.3) });
        check(h.resets === 0, 'DEVICE_NEEDS_RESET for a valid chain');
        check(res.len <= replyLen, `used length ${res.len} > writable ${replyLen}`);
        const dv = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
        const framed = msg.length >= P.P9_HEADER_SIZE && dv.getUint32(0, true) === msg.length;
        if (res.len > 0) {
          const rd = new DataView(res.reply.buffer);
          check(res.len >= P.P9_HEADER_SIZE, `reply of ${res.len} bytes: shorter than a header`);
          const size = rd.getUint32(0, true);
          check(size === res.len, () => `reply size field ${size}, used length ${res.len}`);
          const rtype = rd.getUint8(4);
          if (framed) {
            const ttype = dv.getUint8(4);
            check(rd.getUint16(5, true) === dv.getUint16(5, true), 'reply tag differs from the request tag');
            check(rtype === P.P9_RLERROR || rtype === ttype + 1, () => `reply type ${rtype} to request type ${ttype}`);
            if (ttype === P.P9_TVERSION) {
              if (rtype === P.P9_RVERSION) check(h.server.fids.size === 0 && h.fs.fdsInUse === 0, () => `after Tversion: ${h.server.fids.size} fids, ${h.fs.fdsInUse} fds left`);
              live.clear();
              // Any Tversion ends the session (a failed one leaves none): mostly start a new one, as a driver would.
              if (r.bool(0.9)) {
                h.version();
                h.attach(ROOT_FID);
                live.add(ROOT_FID);
              }
            }
            const f0 = msg.length >= 11 ? dv.getUint32(7, true) : -1;
            if (rtype === P.P9_RWALK && msg.length >= 15) live.add(dv.getUint32(11, true));
            if (rtype === P.P9_RATTACH || rtype === P.P9_RXATTRWALK && msg.length >= 15) live.add(rtype === P.P9_RATTACH ? f0 : dv.getUint32(11, true));
            if (rtype === P.P9_RCLUNK || ttype === P.P9_TREMOVE) live.delete(f0); // Tremove clunks even when it fails
          }
          checkNoSecret(res.reply.subarray(0, res.len), '9p');
        } else check(!framed || replyLen < P.P9_HEADER_SIZE + 4, () => `a well-framed request (type ${dv.getUint8(4)}) with ${replyLen} writable bytes was dropped`);
        check(h.server.fids.size <= MAX_FIDS, `${h.server.fids.size} fids (bound ${MAX_FIDS})`);
        check(h.fs.fdsInUse <= MAX_FDS, `${h.fs.fdsInUse} fds held (bound ${MAX_FDS})`);
      },
      check() {
        watch.check(h.share);
      },
      close() {
        try {
          // End of session: Tversion must release every fid and fd.
          h.version();
          check(h.server.fids.size === 0 && h.fs.fdsInUse === 0, () => `after the final Tversion: ${h.server.fids.size} fids, ${h.fs.fdsInUse} fds left`);
        } finally {
          h.close();
        }
      },
    };
  },
};
