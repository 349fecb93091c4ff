/**
 * lib/agent/client.ts against a scripted stand-in for the VM's hybrid-vsock
 * socket (a Unix socket server on this machine): the CONNECT handshake and
 * its retries, frame routing to the right process's streams, ERROR replies,
 * and the connection's end.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient, AgentError } from '../../../../lib/agent/client.js';
import { AgentErrorCode, FrameDecoder, MsgType, decodeStartSpec, encodeFrame, type Frame } from '../../../../lib/agent/protocol.js';

const hello = (version = 1): Buffer => encodeFrame(MsgType.HELLO, 0, Buffer.concat([Buffer.from([version, 0, 0, 0]), Buffer.from('fake agent')]));
const u32 = (v: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const errorBody = (code: number, errno: number, msg: string): Buffer => Buffer.concat([u32(code), u32(errno), Buffer.from(msg)]);

/**
 * A hybrid-vsock stand-in at a fresh path: the first `refuse` clients are
 * closed after their CONNECT (nobody listens yet), later ones get `OK` and
 * HELLO; `onFrame` sees each frame and may answer on the socket.
 */
async function fakeAgent(opts: { refuse?: number; onFrame: (f: Frame, s: net.Socket) => void; version?: number }) {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-agent-client-'));
  const path = join(dir, 'v.sock');
  let connects = 0;
  const lines: string[] = [];
  const server = net.createServer((s) => {
    let line = '';
    let dec: FrameDecoder | null = null;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      if (!dec) {
        line += d.toString('latin1');
        if (!line.includes('\n')) return;
        lines.push(line);
        if (connects++ < (opts.refuse ?? 0)) return void s.destroy();
        s.write(Buffer.concat([Buffer.from('OK 1073741824\n'), hello(opts.version)]));
        dec = new FrameDecoder();
        return;
      }
      for (const f of dec.push(d)) opts.onFrame(f, s);
    });
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return {
    path, lines,
    close: () => { server.close(); rmSync(dir, { recursive: true, force: true }); },
  };
}

test('connect: sends CONNECT <port>, retries while refused, reads HELLO', async (t) => {
  const fake = await fakeAgent({ refuse: 3, onFrame: () => {} });
  try {
    const c = await AgentClient.connect({ udsPath: fake.path, port: 1024, timeoutMs: 10_000, retryMs: 5 });
    t.is(c.agentVersion, 1);
    t.is(c.agentName, 'fake agent');
    t.deepEqual(fake.lines, Array(4).fill('CONNECT 1024\n'));
    c.close();
  } finally {
    fake.close();
  }
});

test('connect: gives up after timeoutMs with an error naming the socket and port', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-agent-client-'));
  try {
    await t.throwsAsync(AgentClient.connect({ udsPath: join(dir, 'none.sock'), timeoutMs: 200, retryMs: 20 }), {
      instanceOf: AgentError, message: /none\.sock port 1024 within 200 ms/,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('connect: another protocol version is a clear error', async (t) => {
  const fake = await fakeAgent({ onFrame: () => {}, version: 2 });
  try {
    await t.throwsAsync(AgentClient.connect({ udsPath: fake.path, timeoutMs: 5000 }), { message: /protocol version 2, this client 1/ });
  } finally {
    fake.close();
  }
});

test('start, stdio routing, stdin frames, signal and exit', async (t) => {
  const seen: Frame[] = [];
  const fake = await fakeAgent({
    onFrame: (f, s) => {
      seen.push({ ...f, body: Buffer.from(f.body) });
      if (f.type === MsgType.START) {
        s.write(encodeFrame(MsgType.STARTED, f.id, u32(100 + f.id)));
        s.write(encodeFrame(MsgType.STDOUT, f.id, Buffer.from(`out${f.id}`)));
        s.write(encodeFrame(MsgType.STDERR, f.id, Buffer.from(`err${f.id}`)));
      }
      if (f.type === MsgType.SIGNAL) {
        s.write(encodeFrame(MsgType.EXIT, f.id, Buffer.from([1, f.body[0]!, 0, 0, 0])));
        // The late STDIN_CLOSE's answer: the client must not report it.
        s.write(encodeFrame(MsgType.ERROR, f.id, errorBody(AgentErrorCode.NO_SUCH_PROCESS, 0, 'no process')));
      }
      if (f.type === MsgType.STDIN_CLOSE) s.write(encodeFrame(MsgType.EXIT, f.id, Buffer.from([0, 3, 0, 0, 0])));
    },
  });
  const c = await AgentClient.connect({ udsPath: fake.path, timeoutMs: 5000 });
  try {
    const errors: unknown[] = [];
    c.on('agent-error', (r) => errors.push(r));
    const [a, b] = await Promise.all([c.start({ args: ['a'], env: ['X=1'] }), c.start({ args: ['b'] })]);
    t.is(a.pid, 100 + a.id);
    t.is(b.pid, 100 + b.id);
    const text = (r: NodeJS.ReadableStream) => new Promise<string>((res) => { let s = ''; r.on('data', (d) => (s += d)); r.on('end', () => res(s)); });
    const [ao, ae, bo] = [text(a.stdout), text(a.stderr), text(b.stdout)];
    a.stdin.write(Buffer.alloc(200_000, 1));
    a.stdin.end();
    b.signal('SIGKILL');
    t.deepEqual(await a.wait(), { code: 3, signal: null });
    t.deepEqual(await b.wait(), { code: null, signal: 9 });
    t.is(await ao, `out${a.id}`);
    t.is(await ae, `err${a.id}`);
    t.is(await bo, `out${b.id}`);
    const stdin = seen.filter((f) => f.type === MsgType.STDIN && f.id === a.id);
    t.is(stdin.reduce((n, f) => n + f.body.length, 0), 200_000, 'all stdin bytes');
    t.true(stdin.every((f) => f.body.length <= 65536), 'in frames of at most 64 KiB');
    t.deepEqual(decodeStartSpec(seen.find((f) => f.type === MsgType.START && f.id === a.id)!.body), { args: ['a'], env: ['X=1'] });
    t.deepEqual(errors, [], 'the late NO_SUCH_PROCESS is not reported');
  } finally {
    c.close();
    fake.close();
  }
});

test('a START the agent refuses rejects with its code, errno and message', async (t) => {
  const fake = await fakeAgent({
    onFrame: (f, s) => s.write(encodeFrame(MsgType.ERROR, f.id, errorBody(AgentErrorCode.START_FAILED, 2, 'exec nope: No such file or directory'))),
  });
  const c = await AgentClient.connect({ udsPath: fake.path, timeoutMs: 5000 });
  try {
    const e = await t.throwsAsync(c.start({ args: ['nope'] }), { instanceOf: AgentError });
    t.is(e?.agentCode, AgentErrorCode.START_FAILED);
    t.is(e?.errno, 2);
    t.regex(e?.message ?? '', /exec nope/);
  } finally {
    c.close();
    fake.close();
  }
});

test('the connection ending rejects pending starts and running processes', async (t) => {
  let sock: net.Socket | null = null;
  const fake = await fakeAgent({
    onFrame: (f, s) => {
      sock = s;
      if (f.id === 1) s.write(encodeFrame(MsgType.STARTED, 1, u32(7)));
    },
  });
  const c = await AgentClient.connect({ udsPath: fake.path, timeoutMs: 5000 });
  try {
    const p = await c.start({ args: ['x'] });
    const pending = c.start({ args: ['y'] });
    await new Promise((r) => setTimeout(r, 50));
    sock!.destroy();
    await t.throwsAsync(pending, { instanceOf: AgentError, message: /closed/ });
    await t.throwsAsync(p.wait(), { instanceOf: AgentError, message: /closed/ });
    await t.throwsAsync(c.start({ args: ['z'] }), { message: /closed/ });
  } finally {
    c.close();
    fake.close();
  }
});
