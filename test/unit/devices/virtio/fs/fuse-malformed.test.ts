/**
 * Malformed FUSE requests and chains: each gets an -errno reply (EINVAL for a
 * broken frame) or, when no out header fits, the chain back with length 0.
 * Nothing throws out of queueNotify, and the device never asks for a reset.
 * Ends with fast-check properties over random requests.
 */
import test from 'ava';
import fc from 'fast-check';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as F from '../../../../../devices/virtio/fs/constants.js';
import { bytes, FuseHarness, W, withHarness } from './fuse-harness.js';
import { snapshot } from '../9p/p9-harness.js';

function header(len: number, opcode: number, nodeid = 1n, unique = 77n): Uint8Array {
  const b = new Uint8Array(40);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, len, true);
  dv.setUint32(4, opcode, true);
  dv.setBigUint64(8, unique, true);
  dv.setBigUint64(16, nodeid, true);
  return b;
}
function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
function errOf(r: { len: number; reply: Uint8Array }): number | 'dropped' {
  if (r.len === 0) return 'dropped';
  return -new DataView(r.reply.buffer).getInt32(4, true) | 0;
}

test('framing: short chain, len < 40, len > readable, no writable room', withHarness({}, (h, t) => {
  t.is(errOf(h.sendRaw(new Uint8Array(10), 64)), 'dropped');
  t.is(errOf(h.sendRaw(header(20, F.FUSE_GETATTR), 64)), F.EINVAL);
  t.is(errOf(h.sendRaw(header(4096, F.FUSE_GETATTR), 64)), F.EINVAL);
  t.is(errOf(h.sendRaw(concat(header(56, F.FUSE_GETATTR), new Uint8Array(16)), 8)), 'dropped');
  t.is(errOf(h.sendRaw(concat(header(56, F.FUSE_GETATTR), new Uint8Array(16)), 0)), 'dropped');
  // a reply that does not fit the writable part: ERANGE in the header instead
  t.is(errOf(h.sendRaw(concat(header(56, F.FUSE_GETATTR), new Uint8Array(16)), 40)), F.ERANGE);
  t.is(h.resets, 0);
}));

test('args: missing, unterminated names, empty names, WRITE size lies, BATCH_FORGET count lies', withHarness({}, (h, t) => {
  t.is(errOf(h.sendRaw(header(40, F.FUSE_GETATTR), 256)), 0); // GETATTR args are optional here? no: need 16
  t.is(errOf(h.sendRaw(header(40, F.FUSE_LOOKUP), 256)), F.EINVAL);
  t.is(errOf(h.sendRaw(concat(header(43, F.FUSE_LOOKUP), bytes('abc')), 256)), F.EINVAL);
  t.is(errOf(h.sendRaw(concat(header(41, F.FUSE_LOOKUP), new Uint8Array(1)), 256)), F.EINVAL);
  t.is(errOf(h.sendRaw(concat(header(40 + 8, F.FUSE_RENAME), new W().u64(1).bytes()), 256)), F.EINVAL);
  const { fh } = h.create(1, 'f');
  const w = new W().u64(fh).u64(0).u32(1000).u32(0).u64(0).u32(0).u32(0).raw(new Uint8Array(10)).bytes();
  t.is(errOf(h.sendRaw(concat(header(40 + w.length, F.FUSE_WRITE), w), 64)), F.EINVAL);
  const big = new W().u64(fh).u64(0).u32(F.MAX_WRITE + 1).u32(0).u64(0).u32(0).u32(0).bytes();
  t.is(errOf(h.sendRaw(concat(header(80, F.FUSE_WRITE), big), 64)), F.EINVAL);
  const bf = new W().u32(0xffffffff).u32(0).u64(1).u64(1).bytes();
  t.is(errOf(h.sendRaw(concat(header(40 + bf.length, F.FUSE_BATCH_FORGET), bf), 64, { queue: 0 })), 'dropped');
  t.is(errOf(h.sendRaw(concat(header(40 + 16, F.FUSE_READ), new Uint8Array(16)), 64)), F.EINVAL);
  const x = new W().u32(1_000_000).u32(0).str('user.a').raw(bytes('v')).bytes();
  t.is(errOf(h.sendRaw(concat(header(40 + x.length, F.FUSE_SETXATTR), x), 64)), F.EINVAL);
  t.is(h.resets, 0);
}));

test('READ larger than the chain is cut to the chain; READDIR size larger than the chain too', withHarness({}, (h, t) => {
  writeFileSync(join(h.share, 'f'), 'x'.repeat(5000));
  const e = h.lookup(1, 'f');
  const fh = h.open(e.nodeid, 0);
  const args = new W().u64(fh).u64(0).u32(1 << 20).u32(0).u64(0).u32(0).u32(0).bytes();
  const r = h.sendRaw(concat(header(80, F.FUSE_READ), args), 16 + 100);
  t.is(r.len, 116);
  for (let i = 0; i < 300; i++) writeFileSync(join(h.share, `n${i}`), '');
  const dfh = h.open(1, 0, true);
  const d = h.sendRaw(concat(header(80, F.FUSE_READDIRPLUS), new W().u64(dfh).u64(0).u32(1 << 20).u32(0).u64(0).u32(0).u32(0).bytes()), 16 + 1000);
  t.true(d.len <= 1016 && d.len > 16);
}));

test('requests before INIT get EIO; unknown opcodes ENOSYS', withHarness({ raw: true }, (h, t) => {
  t.is(errOf(h.sendRaw(concat(header(56, F.FUSE_GETATTR), new Uint8Array(16)), 256)), F.EIO);
  t.is(errOf(h.sendRaw(header(40, F.FUSE_INIT), 256)), F.EINVAL);
  h.init();
  for (const op of [0, 7, 19, 31, 32, 33, 37, 39, 40, 41, 47, 48, 49, 4096, 0xffffffff]) {
    t.is(errOf(h.sendRaw(concat(header(104, op), new Uint8Array(64)), 256)), F.ENOSYS, `opcode ${op}`);
  }
}));

const hostile = fc.record({
  opcode: fc.oneof(fc.integer({ min: 0, max: 52 }), fc.nat()),
  nodeid: fc.oneof(fc.constantFrom(0n, 1n, 2n, 3n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
  lenDelta: fc.integer({ min: -50, max: 50 }),
  body: fc.uint8Array({ maxLength: 300 }),
  replyLen: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 4096 })),
  cuts: fc.array(fc.integer({ min: 1, max: 400 }), { maxLength: 3 }),
});

test('fast-check: random requests never throw, never reset, always give a well-formed answer', (t) => {
  const h = new FuseHarness({}, (share) => {
    writeFileSync(join(share, 'a'), 'aaa');
  });
  try {
    const outsideBefore = JSON.stringify(snapshot(h.outside));
    fc.assert(fc.property(hostile, (m) => {
      const len = Math.max(0, 40 + m.body.length + m.lenDelta);
      const msg = concat(header(len >>> 0, m.opcode >>> 0, m.nodeid), m.body);
      const r = h.sendRaw(msg, m.replyLen, { splitOut: m.cuts, splitIn: m.cuts });
      if (r.len !== 0) {
        const dv = new DataView(r.reply.buffer);
        if (dv.getUint32(0, true) !== r.len) return false;
        if (dv.getBigUint64(8, true) !== 77n) return false;
        const e = dv.getInt32(4, true);
        if (e > 0 || e < -4095) return false;
      }
      return h.resets === 0;
    }), { numRuns: 3000 });
    // plus: random args after a valid header for every known opcode
    fc.assert(fc.property(fc.integer({ min: 1, max: 50 }), fc.uint8Array({ maxLength: 200 }), (op, body) => {
      if (op === F.FUSE_DESTROY || op === F.FUSE_INIT) return true;
      const r = h.sendRaw(concat(header(40 + body.length, op, 1n), body), 4096);
      return r.len === 0 || new DataView(r.reply.buffer).getUint32(0, true) === r.len;
    }), { numRuns: 3000 });
    t.is(JSON.stringify(snapshot(h.outside)), outsideBefore);
    t.is(h.resets, 0);
  } finally {
    h.close();
  }
});

