/**
 * The real guest agent (guest/agent), run on this machine with `--unix PATH`
 * instead of vsock, driven by lib/agent/client.ts: the protocol's behaviour
 * without a VM. The binary: $FLINTVM_AGENT_DIR/flintvm-agent, else what
 * `bash guest/agent/build.sh` prints (it needs musl-gcc; without it, and
 * outside CI, the test passes with a log line saying so). The processes are
 * this machine's own sh, cat, sleep; the uid/gid change is checked only as
 * root. The hostname is never set here (it is the machine's).
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../../../../lib/agent/client.js';
import { skipOrFail } from '../../../helpers/kvm.js';
import * as s from './scenarios.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../..');

function agentBinary(): string | null {
  const dir = process.env.FLINTVM_AGENT_DIR;
  if (dir) return join(dir, 'flintvm-agent');
  try {
    execFileSync('sh', ['-c', 'command -v musl-gcc'], { stdio: 'ignore' });
  } catch {
    return null;
  }
  const out = execFileSync('bash', [join(ROOT, 'guest/agent/build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return join(out.trim().split('\n').pop()!, 'flintvm-agent');
}

let agent: ChildProcess | null = null;
let sock = '';
let dir = '';
let console = '';

test.before(async () => {
  const bin = agentBinary();
  if (!bin || !existsSync(bin)) return;
  dir = mkdtempSync(join(tmpdir(), 'flintvm-agent-'));
  sock = join(dir, 'agent.sock');
  agent = spawn(bin, ['--unix', sock], { stdio: ['ignore', 'ignore', 'pipe'] });
  agent.stderr!.on('data', (d: Buffer) => { console += d.toString(); });
});

test.after.always(() => {
  agent?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const connect = (): Promise<AgentClient> => AgentClient.connect({ udsPath: sock, transport: 'unix', timeoutMs: 10_000 });

function withClient(name: string, body: (t: ExecutionContext, c: AgentClient) => Promise<unknown>): void {
  test.serial(name, async (t) => {
    if (!agent) return void skipOrFail(t, 'no agent binary: install musl-tools (apt-get install musl-tools) or set FLINTVM_AGENT_DIR');
    const c = await connect();
    try {
      t.is(c.agentVersion, 1);
      t.regex(c.agentName, /^flintvm-agent/);
      await body(t, c);
    } catch (e) {
      t.log(`agent's log:\n${console.slice(-2000)}`);
      throw e;
    } finally {
      c.close();
    }
  });
}

withClient('agent: stdout and stderr apart, exit code', (t, c) => s.stdoutStderrExit(t, c));
withClient('agent: stdin reaches cat and comes back (1 MiB)', (t, c) => s.stdinEcho(t, c));
withClient('agent: env, cwd (and uid, gid, groups as root)', (t, c) => s.envCwdUser(t, c, process.getuid?.() === 0));
withClient('agent: SIGTERM reaches the process; the exit names the signal', (t, c) => s.signalReachesProcess(t, c));
withClient('agent: a 16 MiB stdout stream arrives byte-exact', (t, c) => s.bigStdout(t, c));
withClient('agent: two processes at once on one connection', (t, c) => s.twoAtOnce(t, c));
withClient('agent: bad requests get an ERROR and the agent keeps serving', (t, c) => s.badRequests(t, c));
withClient('agent: an oversized frame ends only that connection', (t, c) => s.oversizedFrame(t, c, connect));
withClient('agent: a terminal with its size and a resize', (t, c) => s.terminal(t, c));
withClient('agent: closing the connection kills its processes', async (t, c) => {
  const p = await c.start({ args: ['sleep', '1000'], env: ['PATH=/usr/bin:/bin'] });
  c.close();
  const deadline = Date.now() + 5000;
  let alive = true;
  while (alive && Date.now() < deadline) {
    try { process.kill(p.pid, 0); await new Promise((r) => setTimeout(r, 50)); } catch { alive = false; }
  }
  t.false(alive, `pid ${p.pid} still runs after its connection closed`);
  await t.throwsAsync(p.wait(), { message: /connection closed/ });
});
