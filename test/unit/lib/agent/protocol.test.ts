/**
 * lib/agent/protocol.ts: frames, the START spec and the reply decoders, byte
 * for byte against docs/agent-protocol.md, and the streaming decoder over
 * every way a byte stream can be split.
 */
import test from 'ava';
import fc from 'fast-check';
import {
  AgentProtocolError, FRAME_HEADER_SIZE, FRAME_MAX_BODY, Field, FrameDecoder, MsgType, RLIM_INFINITY,
  decodeError, decodeExit, decodeHello, decodeStartSpec, decodeStarted, encodeFrame, encodeSignal, encodeStartSpec,
  encodeWindowSize, type ProcessSpec,
} from '../../../../lib/agent/protocol.js';

test('encodeFrame: u32 LE length, u8 type, u32 LE id, body', (t) => {
  const f = encodeFrame(MsgType.STDIN, 0x01020304, Buffer.from('hi'));
  t.deepEqual([...f], [2, 0, 0, 0, 0x02, 4, 3, 2, 1, 0x68, 0x69]);
  t.is(encodeFrame(MsgType.STDIN_CLOSE, 7).length, FRAME_HEADER_SIZE);
});

test('encodeFrame refuses a body over the limit and a bad id', (t) => {
  t.throws(() => encodeFrame(MsgType.STDIN, 1, Buffer.alloc(FRAME_MAX_BODY + 1)), { instanceOf: AgentProtocolError, message: /body/ });
  t.throws(() => encodeFrame(MsgType.STDIN, -1), { message: /^id:/ });
  t.throws(() => encodeFrame(MsgType.STDIN, 2 ** 32), { message: /^id:/ });
});

test('encodeStartSpec: one field per value, in the documented layout', (t) => {
  const b = encodeStartSpec({ args: ['sh'], uid: 5 });
  t.deepEqual([...b], [Field.ARG, 2, 0, 0, 0, 0x73, 0x68, Field.UID, 4, 0, 0, 0, 5, 0, 0, 0]);
  const r = encodeStartSpec({ args: ['x'], rlimits: [{ resource: 'RLIMIT_NOFILE', soft: 1024, hard: RLIM_INFINITY }] });
  const rl = r.subarray(6 + 5);
  t.is(r[6], Field.RLIMIT);
  t.is(r.readUInt32LE(7), 20);
  t.is(rl.readUInt32LE(0), 7, 'RLIMIT_NOFILE is 7');
  t.is(rl.readBigUInt64LE(4), 1024n);
  t.is(rl.readBigUInt64LE(12), RLIM_INFINITY);
  const term = encodeStartSpec({ args: ['x'], terminal: { rows: 24, cols: 80 } });
  t.deepEqual([...term.subarray(6)], [Field.TERMINAL, 4, 0, 0, 0, 24, 0, 80, 0]);
});

test('encodeStartSpec names the bad field', (t) => {
  const bad: [ProcessSpec, RegExp][] = [
    [{ args: [] }, /^args:/],
    [{ args: ['a\0b'] }, /^args\[0\]: contains a NUL/],
    [{ args: ['x'], env: ['NOEQUALS'] }, /^env\[0\]:.*KEY=VALUE/],
    [{ args: ['x'], env: ['=v'] }, /^env\[0\]/],
    [{ args: ['x'], cwd: 'relative' }, /^cwd:.*absolute/],
    [{ args: ['x'], rootfs: 'r' }, /^rootfs:/],
    [{ args: ['x'], uid: -1 }, /^uid:/],
    [{ args: ['x'], gid: 1.5 }, /^gid:/],
    [{ args: ['x'], additionalGids: [1, 2 ** 32] }, /^additionalGids\[1\]:/],
    [{ args: ['x'], rlimits: [{ resource: 'RLIMIT_NOPE', soft: 1, hard: 1 }] }, /^rlimits\[0\]: unknown resource/],
    [{ args: ['x'], rlimits: [{ resource: 7, soft: 2, hard: 1 }] }, /^rlimits\[0\]: soft limit above/],
    [{ args: ['x'], rlimits: [{ resource: 7, soft: -1, hard: 1 }] }, /^rlimits\[0\]\.soft:/],
    [{ args: ['x'], hostname: '' }, /^hostname:/],
    [{ args: ['x'], hostname: 'h'.repeat(65) }, /^hostname:/],
    [{ args: ['x'], terminal: { rows: 70000, cols: 1 } }, /^rows:/],
  ];
  for (const [spec, re] of bad) t.throws(() => encodeStartSpec(spec), { instanceOf: AgentProtocolError, message: re }, JSON.stringify(spec));
});

test('encodeStartSpec and decodeStartSpec round-trip', (t) => {
  const spec: ProcessSpec = {
    args: ['sh', '-c', 'echo ü'], env: ['A=1', 'B=x=y'], cwd: '/w', uid: 1000, gid: 1001, additionalGids: [5, 6],
    rlimits: [{ resource: 7, soft: 10n, hard: 20n }], hostname: 'h', terminal: { rows: 1, cols: 2 }, rootfs: '/r',
  };
  t.deepEqual(decodeStartSpec(encodeStartSpec(spec)), spec);
  fc.assert(fc.property(
    fc.array(fc.string({ minLength: 0, maxLength: 20 }).filter((s) => !s.includes('\0')), { minLength: 1, maxLength: 8 }),
    fc.array(fc.tuple(fc.stringMatching(/^[A-Z_]{1,8}$/), fc.string().filter((s) => !s.includes('\0'))).map(([k, v]) => `${k}=${v}`), { maxLength: 5 }),
    fc.option(fc.integer({ min: 0, max: 2 ** 32 - 1 }), { nil: undefined }),
    (args, env, uid) => {
      const sp: ProcessSpec = { args, ...(env.length ? { env } : {}), ...(uid !== undefined ? { uid } : {}) };
      t.deepEqual(decodeStartSpec(encodeStartSpec(sp)), sp);
    },
  ));
});

test('decodeStartSpec refuses truncated fields and unknown tags', (t) => {
  t.throws(() => decodeStartSpec(Buffer.from([1, 0, 0])), { message: /truncated/ });
  t.throws(() => decodeStartSpec(Buffer.from([1, 9, 0, 0, 0, 0x41])), { message: /runs past/ });
  t.throws(() => decodeStartSpec(Buffer.from([99, 0, 0, 0, 0])), { message: /unknown field tag 99/ });
  t.throws(() => decodeStartSpec(Buffer.from([Field.UID, 2, 0, 0, 0, 1, 2])), { message: /UID/ });
});

test('FrameDecoder: frames come out whole however the stream is split', (t) => {
  const frames = [
    encodeFrame(MsgType.HELLO, 0, Buffer.from([1, 0, 0, 0, 0x61])),
    encodeFrame(MsgType.STDOUT, 1, Buffer.alloc(70_000, 7)),
    encodeFrame(MsgType.EXIT, 1, Buffer.from([0, 42, 0, 0, 0])),
    encodeFrame(MsgType.STDIN_CLOSE, 3),
  ];
  const stream = Buffer.concat(frames);
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: stream.length }), { maxLength: 12 }), (cuts) => {
    const points = [...new Set(cuts)].sort((a, b) => a - b);
    const dec = new FrameDecoder();
    const got = [];
    let prev = 0;
    for (const p of [...points, stream.length]) {
      got.push(...dec.push(stream.subarray(prev, p)));
      prev = p;
    }
    t.is(got.length, 4);
    t.is(dec.pending, 0);
    t.deepEqual(got.map((f) => [f.type, f.id, f.body.length]), [[MsgType.HELLO, 0, 5], [MsgType.STDOUT, 1, 70_000], [MsgType.EXIT, 1, 5], [MsgType.STDIN_CLOSE, 3, 0]]);
    t.true(got[1]!.body.every((b) => b === 7));
  }), { numRuns: 200 });
});

test('FrameDecoder: a header announcing more than the limit throws', (t) => {
  const h = Buffer.alloc(FRAME_HEADER_SIZE);
  h.writeUInt32LE(FRAME_MAX_BODY + 1, 0);
  t.throws(() => new FrameDecoder().push(h), { instanceOf: AgentProtocolError, message: /over/ });
});

test('reply decoders: HELLO, STARTED, EXIT, ERROR', (t) => {
  t.deepEqual(decodeHello(Buffer.from([1, 0, 0, 0, ...Buffer.from('flintvm-agent 1')])), { version: 1, agent: 'flintvm-agent 1' });
  t.is(decodeStarted(Buffer.from([0x39, 0x05, 0, 0])), 1337);
  t.deepEqual(decodeExit(Buffer.from([0, 42, 0, 0, 0])), { code: 42, signal: null });
  t.deepEqual(decodeExit(Buffer.from([1, 15, 0, 0, 0])), { code: null, signal: 15 });
  t.throws(() => decodeExit(Buffer.from([2, 0, 0, 0, 0])), { message: /unknown kind 2/ });
  t.throws(() => decodeExit(Buffer.from([0, 0])), { message: /EXIT: body of 2 bytes/ });
  t.throws(() => decodeStarted(Buffer.alloc(3)), { message: /STARTED/ });
  const e = Buffer.concat([Buffer.from([5, 0, 0, 0, 2, 0, 0, 0]), Buffer.from('exec x: No such file or directory')]);
  t.deepEqual(decodeError(e), { code: 5, errno: 2, message: 'exec x: No such file or directory' });
  t.throws(() => decodeError(Buffer.alloc(7)), { message: /ERROR/ });
});

test('encodeWindowSize and encodeSignal check their ranges', (t) => {
  t.deepEqual([...encodeWindowSize(0x0102, 0x0304)], [2, 1, 4, 3]);
  t.deepEqual([...encodeSignal(15)], [15, 0, 0, 0]);
  t.throws(() => encodeSignal(0), { message: /^signal:/ });
  t.throws(() => encodeSignal(65), { message: /^signal:/ });
  t.throws(() => encodeWindowSize(1, -1), { message: /^cols:/ });
});
