/**
 * The agent's behaviour, checked through lib/agent/client.ts against a real
 * agent: test/linux/agent.test.ts runs these in a MicroVM over vsock, and
 * agent-unix.test.ts runs them against the agent on a Unix socket on this
 * machine. Each takes a connected client (and a way to connect another one).
 */
import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { AgentClient, AgentError, type AgentProcess } from '../../../../lib/agent/client.js';
import { AgentErrorCode, MsgType, encodeFrame, type AgentErrorReply, type ExitStatus, type ProcessSpec } from '../../../../lib/agent/protocol.js';

const MiB = 1024 * 1024;
const PATH = 'PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin';

/** Everything a readable gives until its end. */
export function collect(r: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    r.on('data', (d: Buffer) => chunks.push(d));
    r.on('end', () => resolve(Buffer.concat(chunks)));
    r.on('error', reject);
  });
}

/** Runs a process to its end: its stdout, stderr and exit status; `input` is written to its stdin, which is then closed. */
export async function run(client: AgentClient, spec: ProcessSpec, input: Buffer = Buffer.alloc(0)): Promise<{ out: Buffer; err: Buffer; status: ExitStatus; proc: AgentProcess }> {
  const proc = await client.start({ env: [PATH], ...spec });
  const out = collect(proc.stdout);
  const err = collect(proc.stderr);
  proc.stdin.end(input);
  const [o, e, status] = await Promise.all([out, err, proc.wait()]);
  return { out: o, err: e, status, proc };
}

/** Deterministic bytes. */
export function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i + 4 <= n; i += 4) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** The next 'agent-error' the client reports. */
function nextAgentError(client: AgentClient): Promise<{ reply: AgentErrorReply; id: number }> {
  return new Promise((resolve) => client.once('agent-error', (reply: AgentErrorReply, id: number) => resolve({ reply, id })));
}

export async function stdoutStderrExit(t: ExecutionContext, client: AgentClient): Promise<void> {
  const r = await run(client, { args: ['sh', '-c', 'echo out; echo err >&2; exit 42'] });
  t.is(r.out.toString(), 'out\n', 'stdout');
  t.is(r.err.toString(), 'err\n', 'stderr');
  t.deepEqual(r.status, { code: 42, signal: null });
  t.true(r.proc.pid > 0);
}

export async function stdinEcho(t: ExecutionContext, client: AgentClient, bytes = MiB): Promise<void> {
  const data = pattern(bytes, 3);
  const r = await run(client, { args: ['cat'] }, data);
  t.is(r.out.length, data.length, 'cat echoed every byte');
  t.is(sha256(r.out), sha256(data), 'cat echoed the same bytes');
  t.deepEqual(r.status, { code: 0, signal: null });
}

/** env, cwd, uid, gid and additional gids; `asRoot` false skips the identity change (not root here). */
export async function envCwdUser(t: ExecutionContext, client: AgentClient, asRoot: boolean): Promise<void> {
  const ident = asRoot ? { uid: 65534, gid: 65534, additionalGids: [5] } : {};
  const r = await run(client, { args: ['sh', '-c', 'id -u; id -g; id -G; pwd; echo "$FOO"'], env: [PATH, 'FOO=bar baz'], cwd: '/tmp', ...ident });
  t.is(r.err.toString(), '');
  const lines = r.out.toString().split('\n');
  if (asRoot) {
    t.is(lines[0], '65534', 'uid');
    t.is(lines[1], '65534', 'gid');
    t.deepEqual(lines[2]!.split(' ').map(Number).sort((a, b) => a - b), [5, 65534], 'groups');
  }
  t.is(lines[3], '/tmp', 'cwd');
  t.is(lines[4], 'bar baz', 'env');
  t.deepEqual(r.status, { code: 0, signal: null });
}

export async function signalReachesProcess(t: ExecutionContext, client: AgentClient): Promise<void> {
  const proc = await client.start({ args: ['sleep', '1000'], env: [PATH] });
  proc.stdin.end();
  const out = collect(proc.stdout);
  proc.signal('SIGTERM');
  t.deepEqual(await proc.wait(), { code: null, signal: 15 }, 'killed by SIGTERM');
  t.is((await out).length, 0);
}

/** A 16 MiB stdout stream: the guest hashes what it sends (on stderr), the host what it got. */
export async function bigStdout(t: ExecutionContext, client: AgentClient, mib = 16): Promise<number> {
  const f = `/tmp/agent-blob-${process.pid}-${Date.now()}`;
  const r0 = await run(client, { args: ['sh', '-c', `head -c ${mib * MiB} /dev/urandom > ${f} && sha256sum ${f} >&2`] });
  t.deepEqual(r0.status, { code: 0, signal: null }, r0.err.toString());
  const t0 = performance.now();
  const r = await run(client, { args: ['sh', '-c', `cat ${f}; rm -f ${f}`] });
  const ms = performance.now() - t0;
  t.is(r.out.length, mib * MiB, 'stdout length');
  t.is(sha256(r.out), r0.err.toString().split(' ')[0], 'stdout sha256');
  t.deepEqual(r.status, { code: 0, signal: null });
  return ms;
}

export async function twoAtOnce(t: ExecutionContext, client: AgentClient): Promise<void> {
  const [a, b] = await Promise.all([client.start({ args: ['cat'] }), client.start({ args: ['cat'] })]);
  t.not(a.id, b.id);
  t.not(a.pid, b.pid);
  const outs = Promise.all([collect(a.stdout), collect(b.stdout)]);
  // Both run at once: b's input goes in and out while a still waits for its own.
  b.stdin.write('two\n');
  a.stdin.write('one\n');
  b.stdin.end('bye-b\n');
  a.stdin.end('bye-a\n');
  const [oa, ob] = await outs;
  t.is(oa.toString(), 'one\nbye-a\n');
  t.is(ob.toString(), 'two\nbye-b\n');
  t.deepEqual(await a.wait(), { code: 0, signal: null });
  t.deepEqual(await b.wait(), { code: 0, signal: null });
}

/** Bad requests get an ERROR naming the problem, and the agent keeps serving the same connection. */
export async function badRequests(t: ExecutionContext, client: AgentClient): Promise<void> {
  // Ids far above the client's own (it counts from 1), so none names a process of this test.
  const ID = 1_000_000_000;
  let e = nextAgentError(client);
  client.send(0x7f, ID + 9);
  let got = await e;
  t.is(got.reply.code, AgentErrorCode.BAD_FRAME);
  t.is(got.id, ID + 9);
  t.regex(got.reply.message, /unknown message type 0x7f/);

  e = nextAgentError(client);
  client.send(MsgType.START, ID + 10, Buffer.from([200, 0, 0, 0, 0]));
  got = await e;
  t.is(got.reply.code, AgentErrorCode.BAD_SPEC);
  t.regex(got.reply.message, /unknown field tag 200/);

  e = nextAgentError(client);
  client.send(MsgType.START, ID + 11, Buffer.from([1, 0xff, 0xff, 0, 0, 0x41]));
  got = await e;
  t.is(got.reply.code, AgentErrorCode.BAD_SPEC);
  t.regex(got.reply.message, /runs past the body/);

  e = nextAgentError(client);
  client.send(MsgType.SIGNAL, ID + 12, Buffer.from([15, 0, 0, 0]));
  got = await e;
  t.is(got.reply.code, AgentErrorCode.NO_SUCH_PROCESS);

  e = nextAgentError(client);
  client.sendRaw(encodeFrame(MsgType.SIGNAL, ID + 13, Buffer.alloc(2)));
  got = await e;
  t.is(got.reply.code, AgentErrorCode.NO_SUCH_PROCESS, 'an unknown id is reported before the body length');

  const noExec = await t.throwsAsync(client.start({ args: ['/no/such/program'] }), { instanceOf: AgentError });
  t.is(noExec?.agentCode, AgentErrorCode.START_FAILED);
  t.is(noExec?.errno, 2, 'ENOENT');
  t.regex(noExec?.message ?? '', /exec \/no\/such\/program: No such file or directory/);
  const noCwd = await t.throwsAsync(client.start({ args: ['true'], env: [PATH], cwd: '/no/such/dir' }), { instanceOf: AgentError });
  t.regex(noCwd?.message ?? '', /chdir \/no\/such\/dir/);
  const notTerm = await client.start({ args: ['cat'] });
  e = nextAgentError(client);
  notTerm.resize(10, 10);
  got = await e;
  t.is(got.reply.code, AgentErrorCode.NOT_TERMINAL);
  notTerm.stdin.end();
  await notTerm.wait();

  // Still serving on the same connection.
  const r = await run(client, { args: ['echo', 'still here'] });
  t.is(r.out.toString(), 'still here\n');
}

/** A frame longer than the protocol allows ends that connection only; a new one is served. */
export async function oversizedFrame(t: ExecutionContext, client: AgentClient, reconnect: () => Promise<AgentClient>): Promise<void> {
  const e = nextAgentError(client);
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  const h = Buffer.alloc(9);
  h.writeUInt32LE(0xffff_fff0, 0);
  h.writeUInt8(MsgType.STDIN, 4);
  h.writeUInt32LE(1, 5);
  client.sendRaw(h);
  const got = await e;
  t.is(got.reply.code, AgentErrorCode.FRAME_TOO_LONG);
  await closed;
  const again = await reconnect();
  try {
    const r = await run(again, { args: ['echo', 'new connection'] });
    t.is(r.out.toString(), 'new connection\n');
  } finally {
    again.close();
  }
}

/** A pty: the size given at start and after RESIZE, seen by stty inside. */
export async function terminal(t: ExecutionContext, client: AgentClient): Promise<void> {
  const proc = await client.start({ args: ['sh', '-c', 'stty size; read x; stty size'], env: [PATH], terminal: { rows: 24, cols: 80 } });
  const out = collect(proc.stdout);
  const err = collect(proc.stderr);
  let seen = '';
  await new Promise<void>((resolve) => {
    const on = (d: Buffer): void => {
      seen += d.toString();
      if (/24 80/.test(seen)) { proc.stdout.off('data', on); resolve(); }
    };
    proc.stdout.on('data', on);
  });
  proc.resize(40, 100);
  proc.stdin.write('go\n');
  t.deepEqual(await proc.wait(), { code: 0, signal: null });
  const text = (await out).toString();
  t.regex(text, /24 80\r\n[\s\S]*40 100\r\n/, JSON.stringify(text));
  t.is((await err).length, 0, 'with a terminal, stderr is empty');
}

/** `true` from start to exit, n times: the median in ms. */
export async function trueLatency(t: ExecutionContext, client: AgentClient, n = 5): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await run(client, { args: ['true'] });
    ms.push(performance.now() - t0);
    t.deepEqual(r.status, { code: 0, signal: null });
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(n / 2)]!;
}
