/**
 * Malformed 9P messages and chains: every one gets Rlerror (with the tag
 * echoed) or, when not even a tag can be read or no reply fits, the chain back
 * with length 0. Nothing throws out of queueNotify, and nothing makes the
 * device ask for a reset (only a broken ring does). Ends with a fast-check
 * property over random messages.
 */
import test, { type ExecutionContext } from 'ava';
import fc from 'fast-check';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as P from '../../../../../devices/virtio/9p/constants.js';
import { readHeader, writeHeader } from '../../../../../devices/virtio/9p/wire.js';
import { bytes, message, MSIZE, P9Harness, ROOT_FID, snapshot, withHarness } from './p9-harness.js';

type T = ExecutionContext;
const EINVAL = 22;
const EMSGSIZE = 90;
const EOPNOTSUPP = 95;

/** Sends raw bytes; returns the decoded reply's type/errno/tag, or 'dropped'. */
function rawReply(h: P9Harness, msg: Uint8Array, replyLen = MSIZE, splitOut?: number[]): { type: number; errno: number; tag: number } | 'dropped' {
  const r = h.sendRaw(msg, { replyLen, ...(splitOut ? { splitOut } : {}) });
  if (r.len === 0) return 'dropped';
  const d = h.decode(r);
  return { type: d.type, errno: d.errno, tag: d.tag };
}

function header(size: number, type: number, tag: number): Uint8Array {
  const b = new Uint8Array(7);
  writeHeader(b, { size, type, tag });
  return b;
}

test('a chain shorter than a header, or with no room for Rlerror, goes back with length 0', withHarness({}, (h, t: T) => {
  t.is(rawReply(h, new Uint8Array([7, 0, 0])), 'dropped', '3 readable bytes');
  t.is(rawReply(h, new Uint8Array(0)), 'dropped', 'no readable bytes');
  t.is(rawReply(h, message(P.P9_TCLUNK, 1, (w) => w.u32(5)), 10), 'dropped', '10 writable bytes');
  t.is(rawReply(h, message(P.P9_TCLUNK, 1, (w) => w.u32(5)), 0), 'dropped', 'no writable bytes');
  t.is(h.resets, 0);
  t.is(h.device.stats!.dropped, 4);
}));

test('size fields that lie: too small, past the readable bytes, past msize, 2^32-1', withHarness({}, (h, t: T) => {
  for (const size of [0, 3, 6]) t.deepEqual(rawReply(h, header(size, P.P9_TCLUNK, 77)), { type: P.P9_RLERROR, errno: EINVAL, tag: 77 }, `size ${size}`);
  const clunk = message(P.P9_TCLUNK, 78, (w) => w.u32(ROOT_FID));
  new DataView(clunk.buffer).setUint32(0, clunk.length + 1, true);
  t.deepEqual(rawReply(h, clunk), { type: P.P9_RLERROR, errno: EINVAL, tag: 78 }, 'one byte past the chain');
  new DataView(clunk.buffer).setUint32(0, 0xffff_ffff, true);
  t.deepEqual(rawReply(h, clunk), { type: P.P9_RLERROR, errno: EINVAL, tag: 78 });
  const big = new Uint8Array(MSIZE + 100);
  big.set(header(big.length, P.P9_TWRITE, 79));
  t.deepEqual(rawReply(h, big), { type: P.P9_RLERROR, errno: EINVAL, tag: 79 }, 'larger than msize');
  t.is(h.getattr(ROOT_FID).qid.type, P.P9_QTDIR, 'the session survived');
  t.is(h.device.stats!.malformed, 6);
}));

test('fields and strings running past the message end are EINVAL', withHarness({}, (h, t: T) => {
  // Twalk claiming 3 names but carrying 1.
  const walk = message(P.P9_TWALK, 5, (w) => w.u32(ROOT_FID).u32(200).u16(3).str(bytes('a')));
  t.deepEqual(rawReply(h, walk), { type: P.P9_RLERROR, errno: EINVAL, tag: 5 });
  // A string whose length runs past the end.
  const mkdir = message(P.P9_TMKDIR, 6, (w) => w.u32(ROOT_FID).u16(500).raw(bytes('short')));
  t.deepEqual(rawReply(h, mkdir), { type: P.P9_RLERROR, errno: EINVAL, tag: 6 });
  // Every known message with an empty body.
  for (const type of [P.P9_TVERSION, P.P9_TATTACH, P.P9_TWALK, P.P9_TLOPEN, P.P9_TLCREATE, P.P9_TREAD, P.P9_TWRITE, P.P9_TCLUNK, P.P9_TREMOVE,
    P.P9_TGETATTR, P.P9_TSETATTR, P.P9_TREADDIR, P.P9_TMKDIR, P.P9_TSYMLINK, P.P9_TLINK, P.P9_TRENAME, P.P9_TRENAMEAT, P.P9_TUNLINKAT,
    P.P9_TREADLINK, P.P9_TSTATFS, P.P9_TFSYNC, P.P9_TLOCK, P.P9_TGETLOCK, P.P9_TXATTRWALK, P.P9_TXATTRCREATE, P.P9_TMKNOD, P.P9_TFLUSH]) {
    const r = rawReply(h, header(7, type, 9));
    t.deepEqual(r, { type: P.P9_RLERROR, errno: EINVAL, tag: 9 }, `empty type ${type}`);
    if (type === P.P9_TVERSION) h.version();
  }
}));

test('unknown and legacy message types are EOPNOTSUPP', withHarness({}, (h, t: T) => {
  for (const type of [0, 1, 6, 7, 99, 101, 106, 112, 114, 117, 124, 126, 200, 255]) {
    t.deepEqual(rawReply(h, header(7, type, 3)), { type: P.P9_RLERROR, errno: EOPNOTSUPP, tag: 3 }, `type ${type}`);
  }
}));

test('messages before Tversion are refused', withHarness({ raw: true }, (h, t: T) => {
  t.deepEqual(rawReply(h, message(P.P9_TATTACH, 4, (w) => w.u32(1).u32(P.P9_NOFID).str(bytes('')).str(bytes('')).u32(0))), { type: P.P9_RLERROR, errno: EINVAL, tag: 4 });
}));

test('Twrite whose count exceeds the data, or shorter than its header', withHarness({}, (h, t: T) => {
  writeFileSync(join(h.share, 'f'), '');
  const f = h.walkTo('f');
  h.lopen(f, P.P9_DOTL_WRONLY);
  const lying = message(P.P9_TWRITE, 8, (w) => w.u32(f).u64(0n).u32(1000).raw(bytes('only ten b')));
  t.deepEqual(rawReply(h, lying), { type: P.P9_RLERROR, errno: EINVAL, tag: 8 });
  t.deepEqual(rawReply(h, message(P.P9_TWRITE, 8, (w) => w.u32(f).u64(0n))), { type: P.P9_RLERROR, errno: EINVAL, tag: 8 });
  // Trailing bytes past count are ignored; the data count is what is written.
  const extra = message(P.P9_TWRITE, 8, (w) => w.u32(f).u64(0n).u32(3).raw(bytes('abcdef')));
  const r = h.decode(h.sendRaw(extra));
  t.is(r.type, P.P9_RWRITE);
  t.is(r.body.u32(), 3);
}));

test('replies that do not fit the writable buffer become Rlerror(EMSGSIZE), before any change is made', withHarness({}, (h, t: T) => {
  const before = snapshot(h.share);
  t.deepEqual(rawReply(h, message(P.P9_TGETATTR, 2, (w) => w.u32(ROOT_FID).u64(0x7ffn)), 20), { type: P.P9_RLERROR, errno: EMSGSIZE, tag: 2 });
  t.deepEqual(rawReply(h, message(P.P9_TMKDIR, 2, (w) => w.u32(ROOT_FID).str(bytes('d')).u32(0o755).u32(0)), 19), { type: P.P9_RLERROR, errno: EMSGSIZE, tag: 2 });
  t.deepEqual(snapshot(h.share), before, 'the mkdir did not happen');
  t.deepEqual(rawReply(h, message(P.P9_TVERSION, 2, (w) => w.u32(MSIZE).str(bytes('9P2000.L'))), 12), { type: P.P9_RLERROR, errno: EMSGSIZE, tag: 2 });
}));

test('a header split across 1-byte descriptors is read correctly', withHarness({}, (h, t: T) => {
  const msg = message(P.P9_TGETATTR, 11, (w) => w.u32(ROOT_FID).u64(0x7ffn));
  const r = rawReply(h, msg, MSIZE, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  t.deepEqual(r, { type: P.P9_RGETATTR, errno: 0, tag: 11 });
}));

// ---- property: random messages ----

const KNOWN = [P.P9_TVERSION, P.P9_TATTACH, P.P9_TFLUSH, P.P9_TWALK, P.P9_TLOPEN, P.P9_TLCREATE, P.P9_TREAD, P.P9_TWRITE, P.P9_TCLUNK,
  P.P9_TREMOVE, P.P9_TGETATTR, P.P9_TSETATTR, P.P9_TREADDIR, P.P9_TMKDIR, P.P9_TSYMLINK, P.P9_TLINK, P.P9_TRENAME, P.P9_TRENAMEAT,
  P.P9_TUNLINKAT, P.P9_TREADLINK, P.P9_TSTATFS, P.P9_TFSYNC, P.P9_TLOCK, P.P9_TGETLOCK, P.P9_TXATTRWALK, P.P9_TXATTRCREATE, P.P9_TMKNOD, P.P9_TAUTH];

/** Body bytes biased towards what the server parses: small fids, short strings, flag-like words. */
const fieldArb = fc.oneof(
  fc.constantFrom(ROOT_FID, 100, 101, 102, 0, P.P9_NOFID).map((v) => le(v, 4)),
  fc.integer({ min: 0, max: 0xffff_ffff }).map((v) => le(v, 4)),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((v) => le64(v)),
  fc.constantFrom('a', 'dir', '..', '.', 'x/y', '', 'f\0g', 'file').map((s) => { const b = bytes(s); return Uint8Array.of(b.length, 0, ...b); }),
  fc.uint8Array({ maxLength: 12 }),
);

const messageArb = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 80 }) },
  {
    weight: 4,
    arbitrary: fc.record({
      type: fc.oneof(fc.constantFrom(...KNOWN), fc.integer({ min: 0, max: 255 })),
      tag: fc.integer({ min: 0, max: 0xffff }),
      fields: fc.array(fieldArb, { maxLength: 8 }),
      sizeDelta: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -10, max: 10 }) }),
    }).map(({ type, tag, fields, sizeDelta }) => {
      const body = concat(fields);
      const m = new Uint8Array(7 + body.length);
      writeHeader(m, { size: Math.max(0, m.length + sizeDelta), type, tag });
      m.set(body, 7);
      return m;
    }),
  },
);

test('property: random messages never throw, never reset the device, and get a well-formed reply or length 0', (t) => {
  const h = new P9Harness({}, (share) => {
    writeFileSync(join(share, 'file'), 'data');
  });
  try {
    const outside = snapshot(h.outside);
    // A live session with fids 1 and 100-102, so random messages reach real handlers; restored when one ends it.
    const session = () => {
      if (h.server.msize === MSIZE && h.server.fids.has(ROOT_FID) && h.server.fids.has(102)) return;
      // Random messages may have removed, renamed or replaced 'file'.
      rmSync(join(h.share, 'file'), { recursive: true, force: true });
      writeFileSync(join(h.share, 'file'), 'data');
      h.version();
      h.attach(ROOT_FID);
      h.walk(ROOT_FID, 100, []);
      h.walk(ROOT_FID, 101, ['file']);
      h.walk(ROOT_FID, 102, ['file']);
      h.lopen(102, P.P9_DOTL_RDWR);
    };
    let replies = 0;
    let dropped = 0;
    let handled = 0;
    const replyLenArb = fc.oneof({ weight: 3, arbitrary: fc.constant(8192) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 300 }) });
    fc.assert(fc.property(messageArb, replyLenArb, (msg, replyLen) => {
      session();
      const before = h.server.stats.requests;
      const r = h.sendRaw(msg, { replyLen });
      if (h.server.stats.requests > before) handled++;
      if (r.len === 0) {
        dropped++;
        return msg.length < 7 || replyLen < 11;
      }
      replies++;
      const { size, type, tag } = readHeader(r.reply);
      if (size !== r.len || size > replyLen || size < 7) return false;
      if (type !== P.P9_RLERROR && type % 2 !== 1) return false;
      if (msg.length >= 7 && tag !== readHeader(msg).tag) return false;
      return h.resets === 0;
    }), { numRuns: 3000 });
    t.true(replies > 1000, `${replies} replies, ${dropped} dropped`);
    t.true(handled > 1000, `${handled} messages reached the server`);
    t.log(`${replies} replies, ${dropped} dropped, server stats ${JSON.stringify(h.server.stats)}`);
    t.is(h.resets, 0);
    t.deepEqual(snapshot(h.outside), outside);
  } finally {
    h.close();
  }
});

function le(v: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (v >>> (8 * i)) & 0xff;
  return b;
}

function le64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
