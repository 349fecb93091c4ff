/**
 * Fuzz target `fuse`: the virtio-fs device and its FUSE server over a real temp
 * share (the unit tests' FuseHarness), one session per episode. Each input is
 * one FUSE request of any opcode (and unknown ones) on the request or the
 * hiprio queue, built with Linux's argument layouts; nodeids and file handles
 * come mostly from what earlier replies handed out (so lookups, creates,
 * opens, reads, writes, forgets and releases build on each other), names are
 * hostile, numbers are edge values; some requests are mutated, truncated or
 * given a writable part too small for their reply. INIT, DESTROY and
 * re-INIT come now and then.
 *
 * Oracles: the chain always comes back (once); no DEVICE_NEEDS_RESET; a reply's
 * out-header len equals the used length and echoes `unique`; an error is a
 * negative errno and comes alone; FORGET gets no reply; the inode and handle
 * tables and the share's fds stay within their bounds (maxFds, maxHandles);
 * after DESTROY or a new INIT no inode but the root, no handle and no fd is
 * left; no reply carries the secret next to the share; nothing outside the
 * share changes and no device node appears in it.
 */
import * as F from '../../../devices/virtio/fs/constants.js';
import { FuseHarness, W } from '../../../test/unit/devices/virtio/fs/fuse-harness.js';
import type { Rng } from '../prng.js';
import { checkNoSecret, HostWatch, pickName, populateShare } from '../share-oracle.js';
import { check, type FuzzTarget } from '../target.js';

const MAX_FDS = 96;
const MAX_HANDLES = 32;
const IN_HEADER = 40;
const ENTRY_OUT = 128;
const OPCODES = [
  F.FUSE_LOOKUP, F.FUSE_FORGET, F.FUSE_GETATTR, F.FUSE_SETATTR, F.FUSE_READLINK, F.FUSE_SYMLINK, F.FUSE_MKNOD, F.FUSE_MKDIR, F.FUSE_UNLINK,
  F.FUSE_RMDIR, F.FUSE_RENAME, F.FUSE_LINK, F.FUSE_OPEN, F.FUSE_READ, F.FUSE_WRITE, F.FUSE_STATFS, F.FUSE_RELEASE, F.FUSE_FSYNC,
  F.FUSE_SETXATTR, F.FUSE_GETXATTR, F.FUSE_LISTXATTR, F.FUSE_REMOVEXATTR, F.FUSE_FLUSH, F.FUSE_OPENDIR, F.FUSE_READDIR, F.FUSE_RELEASEDIR,
  F.FUSE_FSYNCDIR, F.FUSE_ACCESS, F.FUSE_CREATE, F.FUSE_INTERRUPT, F.FUSE_BATCH_FORGET, F.FUSE_FALLOCATE, F.FUSE_READDIRPLUS, F.FUSE_LSEEK, F.FUSE_SYNCFS,
];
const MODES = [0o100644, 0o40755, 0o10644, 0o140644, 0o20644, 0o60644, 0o120777, 0o4755, 0o644, 0xffff_ffff];
const FLAGS = [0, 1, 2, 0o100, 0o1000, 0o2000, 0o200000, 0o400000, 0o10000000, 0o102, 0o20000000];
const XATTRS = ['user.a', 'user.b', 'trusted.x', 'security.capability', 'system.posix_acl_access', '', 'x'];

interface Pools { nodes: bigint[]; fhs: bigint[] }

function pickId(rng: Rng, pool: bigint[]): bigint {
  if (pool.length > 0 && rng.bool(0.8)) return pool[rng.int(pool.length)]!;
  return rng.weighted([[4, 1n], [2, BigInt(rng.int(40))], [1, rng.edgeU64()]]);
}

/** The args of `opcode` in Linux's layouts, with fields from the pools. */
function args(rng: Rng, opcode: number, p: Pools): Uint8Array {
  const w = new W();
  const name = () => w.raw(pickName(rng)).raw(Uint8Array.of(0));
  const fh = () => w.u64(pickId(rng, p.fhs));
  const size = () => w.u32(rng.weighted([[6, rng.int(8192)], [1, rng.edgeU32()]]));
  switch (opcode) {
    case F.FUSE_LOOKUP: case F.FUSE_UNLINK: case F.FUSE_RMDIR: case F.FUSE_REMOVEXATTR: name(); break;
    case F.FUSE_FORGET: w.u64(rng.weighted([[6, 1n], [1, rng.edgeU64()]])); break;
    case F.FUSE_GETATTR: w.u32(rng.int(2)).u32(0); fh(); break;
    case F.FUSE_SETATTR: w.u32(rng.edgeU32()).u32(0); fh(); w.u64(rng.weighted([[6, BigInt(rng.int(20000))], [1, rng.edgeU64()]])).u64(0n).u64(rng.edgeU64()).u64(rng.edgeU64()).u64(rng.edgeU64())
      .u32(rng.edgeU32()).u32(rng.edgeU32()).u32(0).u32(rng.pick(MODES)).u32(0).u32(rng.edgeU32()).u32(rng.edgeU32()).u32(0); break;
    case F.FUSE_SYMLINK: name(); name(); break;
    case F.FUSE_MKNOD: w.u32(rng.pick(MODES)).u32(rng.edgeU32()).u32(0o022).u32(0); name(); break;
    case F.FUSE_MKDIR: w.u32(rng.pick(MODES)).u32(0o022); name(); break;
    case F.FUSE_RENAME: w.u64(pickId(rng, p.nodes)); name(); name(); break;
    case F.FUSE_LINK: w.u64(pickId(rng, p.nodes)); name(); break;
    case F.FUSE_OPEN: case F.FUSE_OPENDIR: w.u32(rng.pick(FLAGS)).u32(0); break;
    case F.FUSE_READ: case F.FUSE_READDIR: case F.FUSE_READDIRPLUS:
      fh(); w.u64(rng.weighted([[6, BigInt(rng.int(6000))], [1, rng.edgeU64()]])); size(); w.u32(0).u64(0n).u32(rng.pick([0, 2, rng.u32()])).u32(0); break;
    case F.FUSE_WRITE: {
      const data = rng.bytes(rng.int(3000));
      fh(); w.u64(rng.weighted([[6, BigInt(rng.int(6000))], [1, rng.edgeU64()]])).u32(rng.bool(0.9) ? data.length : rng.edgeU32()).u32(rng.int(8)).u64(0n).u32(rng.pick([0, 2])).u32(0).raw(data);
      break;
    }
    case F.FUSE_RELEASE: case F.FUSE_RELEASEDIR: fh(); w.u32(0).u32(rng.int(4)).u64(0n); break;
    case F.FUSE_FSYNC: case F.FUSE_FSYNCDIR: fh(); w.u32(rng.int(2)).u32(0); break;
    case F.FUSE_SETXATTR: {
      const v = rng.bytes(rng.int(64));
      w.u32(rng.bool(0.9) ? v.length : rng.edgeU32()).u32(rng.int(4)).raw(new TextEncoder().encode(rng.pick(XATTRS))).raw(Uint8Array.of(0)).raw(v);
      break;
    }
    case F.FUSE_GETXATTR: size(); w.u32(0).raw(new TextEncoder().encode(rng.pick(XATTRS))).raw(Uint8Array.of(0)); break;
    case F.FUSE_LISTXATTR: size(); w.u32(0); break;
    case F.FUSE_FLUSH: fh(); w.u32(0).u32(0).u64(0n); break;
    case F.FUSE_INIT: w.u32(rng.weighted([[8, 7], [1, rng.edgeU32()]])).u32(rng.weighted([[6, 31], [1, rng.int(40)]])).u32(128 * 1024).u32(rng.bool(0.7) ? 0x3fff_ffff : rng.u32()); break;
    case F.FUSE_ACCESS: w.u32(rng.int(8)).u32(0); break;
    case F.FUSE_CREATE: w.u32(rng.pick(FLAGS) | 0o100).u32(rng.pick(MODES)).u32(0o022).u32(0); name(); break;
    case F.FUSE_INTERRUPT: w.u64(rng.edgeU64()); break;
    case F.FUSE_BATCH_FORGET: {
      const n = rng.weighted([[6, rng.int(4)], [1, rng.edgeU32()]]);
      w.u32(n).u32(0);
      for (let i = 0; i < Math.min(n, 8); i++) w.u64(pickId(rng, p.nodes)).u64(rng.weighted([[6, 1n], [1, rng.edgeU64()]]));
      break;
    }
    case F.FUSE_FALLOCATE: fh(); w.u64(BigInt(rng.int(10000))).u64(rng.weighted([[6, BigInt(rng.int(10000))], [1, rng.edgeU64()]])).u32(rng.pick([0, 1, 2, 3, rng.u32()])).u32(0); break;
    case F.FUSE_LSEEK: fh(); w.u64(rng.edgeU64()).u32(rng.int(6)).u32(0); break;
    case F.FUSE_SYNCFS: w.u64(0n); break;
    default: w.raw(rng.bytes(rng.int(64)));
  }
  return w.bytes();
}

export const fuseTarget: FuzzTarget = {
  name: 'fuse',
  description: 'FUSE server over a real share: stateful request sequences (nodeid/fh pools, hostile names, mutations) vs reply framing, table bounds, leaks and escapes',
  episode: 1000,
  checkEvery: 250,
  create() {
    const h = new FuseHarness({ maxFds: MAX_FDS, maxHandles: MAX_HANDLES }, (share) => populateShare(share));
    const watch = new HostWatch(h.dir);
    const pools: Pools = { nodes: [1n], fhs: [] };
    let unique = 1000n;
    const emptyTables = (what: string) => check(h.server.inodeCount === 1 && h.server.handleCount === 0 && h.fs.fdsInUse === 0,
      () => `after ${what}: ${h.server.inodeCount} inodes, ${h.server.handleCount} handles, ${h.fs.fdsInUse} fds left`);
    return {
      step(r: Rng) {
        const opcode = r.weighted([[60, r.pick(OPCODES)], [15, F.FUSE_LOOKUP], [5, F.FUSE_OPEN], [5, F.FUSE_READ], [1, F.FUSE_INIT], [1, F.FUSE_DESTROY], [1, r.int(64)]]);
        const a = args(r, opcode, pools);
        const nodeid = opcode === F.FUSE_INIT ? 0n : pickId(r, pools.nodes);
        let msg: Uint8Array = new Uint8Array(IN_HEADER + a.length);
        const dv = new DataView(msg.buffer);
        unique += 1n;
        dv.setUint32(0, r.bool(0.95) ? msg.length : r.edgeU32(), true);
        dv.setUint32(4, opcode, true);
        dv.setBigUint64(8, unique, true);
        dv.setBigUint64(16, nodeid, true);
        dv.setUint32(24, r.weighted([[6, 0], [1, 1000]]), true);
        msg.set(a, IN_HEADER);
        if (r.bool(0.05)) msg = r.mutate(msg);
        if (r.bool(0.03)) msg = msg.subarray(0, r.int(msg.length + 1));
        const hiprio = opcode === F.FUSE_FORGET || opcode === F.FUSE_BATCH_FORGET || opcode === F.FUSE_INTERRUPT;
        const queue = r.bool(0.9) ? (hiprio ? 0 : 1) : r.int(2);
        const replyLen = r.weighted([[8, 8192], [1, r.int(200)], [1, 0]]);
        const res = h.sendRaw(msg, replyLen, { queue, ...(r.bool(0.2) ? { splitIn: [r.int(replyLen + 1)], splitOut: [r.int(msg.length + 1)] } : {}) });
        check(h.resets === 0, 'DEVICE_NEEDS_RESET for a valid chain');
        check(res.len <= replyLen, `used length ${res.len} > writable ${replyLen}`);
        const md = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
        const framed = msg.length >= IN_HEADER && md.getUint32(0, true) === msg.length;
        const op = framed ? md.getUint32(4, true) : -1;
        if (res.len > 0) {
          check(res.len >= F.OUT_HEADER_SIZE, `reply of ${res.len} bytes`);
          const rd = new DataView(res.reply.buffer);
          check(rd.getUint32(0, true) === res.len, () => `out header len ${rd.getUint32(0, true)}, used length ${res.len}`);
          const error = rd.getInt32(4, true);
          check(error <= 0 && error > -4096, `error ${error}`);
          if (error !== 0) check(res.len === F.OUT_HEADER_SIZE, `an error reply of ${res.len} bytes`);
          if (framed) check(rd.getBigUint64(8, true) === md.getBigUint64(8, true), 'reply unique differs from the request');
          check(op !== F.FUSE_FORGET && op !== F.FUSE_BATCH_FORGET, 'FORGET got a reply');
          checkNoSecret(res.reply.subarray(0, res.len), 'fuse');
          if (error === 0 && framed) {
            const payload = res.reply.subarray(F.OUT_HEADER_SIZE, res.len);
            const pv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
            if ((op === F.FUSE_LOOKUP || op === F.FUSE_MKDIR || op === F.FUSE_MKNOD || op === F.FUSE_SYMLINK || op === F.FUSE_LINK || op === F.FUSE_CREATE) && payload.length >= 8) {
              const id = pv.getBigUint64(0, true);
              if (id !== 0n) pools.nodes.push(id);
            }
            if ((op === F.FUSE_OPEN || op === F.FUSE_OPENDIR) && payload.length >= 8) pools.fhs.push(pv.getBigUint64(0, true));
            if (op === F.FUSE_CREATE && payload.length >= ENTRY_OUT + 8) pools.fhs.push(pv.getBigUint64(ENTRY_OUT, true));
            // A newer major gets our version only, without a new session (the kernel retries): only a major-7 INIT starts one.
            if (op === F.FUSE_INIT && queue === 1 && msg.length >= IN_HEADER + 4 && md.getUint32(IN_HEADER, true) === F.FUSE_KERNEL_VERSION) { emptyTables('a new FUSE_INIT'); pools.nodes = [1n]; pools.fhs = []; }
            if (op === F.FUSE_DESTROY && queue === 1) { emptyTables('FUSE_DESTROY'); pools.nodes = [1n]; pools.fhs = []; }
          }
        }
        if (op === F.FUSE_DESTROY && queue === 1 && r.bool(0.9)) {
          h.init();
          emptyTables('FUSE_INIT after DESTROY');
        }
        if (pools.nodes.length > 200) pools.nodes.splice(1, 100);
        if (pools.fhs.length > 200) pools.fhs.splice(0, 100);
        check(h.server.handleCount <= MAX_HANDLES, `${h.server.handleCount} handles (bound ${MAX_HANDLES})`);
        check(h.fs.fdsInUse <= MAX_FDS, `${h.fs.fdsInUse} fds held (bound ${MAX_FDS})`);
        check(h.server.inodeCount <= MAX_FDS + 1, `${h.server.inodeCount} inodes (bound: maxFds ${MAX_FDS} + the root)`);
      },
      check() {
        watch.check(h.share);
      },
      close() {
        try {
          if (h.server.initialized) {
            const r = h.request(F.FUSE_DESTROY, 0, new Uint8Array(0));
            check(r.error === 0, `final FUSE_DESTROY: error ${r.error}`);
            emptyTables('the final FUSE_DESTROY');
          } else emptyTables('the end of an episode with no session');
        } finally {
          h.close();
        }
      },
    };
  },
};
