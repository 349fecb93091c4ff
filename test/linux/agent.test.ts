/**
 * The guest agent as PID 1 of its own initramfs (guest/agent), in a MicroVM
 * with the default guest kernel, driven over hybrid vsock by
 * lib/agent/client.ts: the scenarios of test/unit/lib/agent/scenarios.ts
 * (the same ones agent-unix.test.ts runs without a VM) plus the hostname, and
 * two timings: VM start -> agent ready of a second VM (the CONNECT succeeds
 * and HELLO arrives; bench/oci.ts takes the median over boots), and start ->
 * exit of `true` (median of 5).
 *
 * The agent build comes from $FLINTVM_AGENT_DIR (the directory
 * `bash guest/agent/build.sh` prints; test/hosts/run.ts carries it in as
 * /work/agent when the variable is set outside):
 *   FLINTVM_AGENT_DIR=$(bash guest/agent/build.sh) node dist/test/hosts/cli.js --arch x86_64 --files dist/test/linux/agent.test.js
 * Without it the test passes with a log line saying so (fails under CI).
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient } from '../../lib/agent/client.js';
import { MicroVM, defaultGuestImages } from '../../lib/index.js';
import { haveKvm, requireKvm, skipOrFail } from '../helpers/kvm.js';
import * as s from '../unit/lib/agent/scenarios.js';

/** Boot plus agent start in the emulated test host (measured well under a minute; see the log line). */
const READY_TIMEOUT_MS = 3 * 60_000;
const GUEST_CID = 3;

interface Env {
  vm: MicroVM;
  client: AgentClient;
  udsPath: string;
  dir: string;
  console: () => string;
}

let env: Env | null = null;
let why = '';

function agentInitrd(): string | null {
  const dir = process.env.FLINTVM_AGENT_DIR;
  if (!dir) return null;
  const p = join(dir, 'initramfs-agent.cpio.gz');
  if (!existsSync(p)) throw new Error(`FLINTVM_AGENT_DIR=${dir} has no initramfs-agent.cpio.gz: rebuild it with bash guest/agent/build.sh`);
  return p;
}

/** A MicroVM booting the agent initramfs, with vsock at `udsPath`. */
async function agentVm(initrd: string, udsPath: string): Promise<MicroVM> {
  const imgs = await defaultGuestImages({ quiet: true });
  return new MicroVM({ kernel: imgs.kernel, initrd, memoryMiB: 256, vcpus: 2, extraCmdline: 'quiet', vsock: { guestCid: GUEST_CID, udsPath } });
}

test.before(async (t) => {
  if (!haveKvm()) return;
  const initrd = agentInitrd();
  if (!initrd) { why = 'no agent build: set FLINTVM_AGENT_DIR=$(bash guest/agent/build.sh)'; return; }
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-agent-'));
  const udsPath = join(dir, 'v.sock');
  const vm = await agentVm(initrd, udsPath);
  let out = '';
  vm.console.on('data', (c: Buffer) => { out += c.toString(); });
  const t0 = performance.now();
  try {
    await vm.start();
    const client = await AgentClient.connect({ udsPath, timeoutMs: READY_TIMEOUT_MS });
    t.log(`VM start -> agent ready (HELLO received): ${(performance.now() - t0).toFixed(0)} ms`);
    env = { vm, client, udsPath, dir, console: () => out };
  } catch (e) {
    t.log(`guest console:\n${out.slice(-3000)}`);
    await vm.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
});

test.after.always(async () => {
  if (!env) return;
  env.client.close();
  await env.vm.stop().catch(() => {});
  rmSync(env.dir, { recursive: true, force: true });
});

function inVm(name: string, body: (t: ExecutionContext, c: AgentClient, e: Env) => Promise<unknown>): void {
  test.serial(name, async (t) => {
    if (!requireKvm(t)) return;
    if (!env) return void skipOrFail(t, why);
    try {
      await body(t, env.client, env);
    } catch (e) {
      t.log(`guest console:\n${env.console().slice(-3000)}`);
      throw e;
    }
  });
}

inVm('agent in a VM: stdout and stderr apart, exit code 42', (t, c) => s.stdoutStderrExit(t, c));
inVm('agent in a VM: stdin through cat (1 MiB)', (t, c) => s.stdinEcho(t, c));
inVm('agent in a VM: env, cwd, uid, gid and groups', (t, c) => s.envCwdUser(t, c, true));
inVm('agent in a VM: SIGTERM reaches a sleeping process, exit says signal 15', (t, c) => s.signalReachesProcess(t, c));
inVm('agent in a VM: a 16 MiB stdout stream arrives byte-exact', async (t, c) => {
  const ms = await s.bigStdout(t, c);
  t.log(`16 MiB stdout in ${ms.toFixed(0)} ms (${(16 / (ms / 1000)).toFixed(1)} MiB/s, nested KVM on TCG)`);
});
inVm('agent in a VM: two processes at once', (t, c) => s.twoAtOnce(t, c));
inVm('agent in a VM: bad requests get an ERROR, the agent keeps serving', (t, c) => s.badRequests(t, c));
inVm('agent in a VM: an oversized frame ends only its connection', async (t, c, e) => {
  try {
    await s.oversizedFrame(t, c, () => AgentClient.connect({ udsPath: e.udsPath, timeoutMs: 30_000 }));
  } finally {
    // The old connection is gone either way: the later tests get a new one.
    c.close();
    e.client = await AgentClient.connect({ udsPath: e.udsPath, timeoutMs: 30_000 });
  }
});
inVm('agent in a VM: a terminal, its size and a resize', (t, c) => s.terminal(t, c));
inVm('agent in a VM: the hostname', async (t, c) => {
  const r = await s.run(c, { args: ['hostname'], hostname: 'box-1' });
  t.is(r.out.toString(), 'box-1\n');
});
inVm('agent in a VM: `true` start -> exit, median of 5', async (t, c) => {
  const ms = await s.trueLatency(t, c, 5);
  t.log(`true: start -> exit median of 5: ${ms.toFixed(1)} ms`);
});
inVm('agent in a VM: a second VM: start -> agent ready, and it runs a command', async (t) => {
  // One boot: the median over repeated boots is bench/oci.ts's (the holder's "agent ready" phase).
  const udsPath = join(env!.dir, 'ready.sock');
  const vm = await agentVm(agentInitrd()!, udsPath);
  const t0 = performance.now();
  try {
    await vm.start();
    const c = await AgentClient.connect({ udsPath, timeoutMs: READY_TIMEOUT_MS });
    const ms = performance.now() - t0;
    const r = await s.run(c, { args: ['true'] });
    t.deepEqual(r.status, { code: 0, signal: null });
    c.close();
    t.log(`VM start -> agent ready: ${ms.toFixed(0)} ms`);
  } finally {
    await vm.stop().catch(() => {});
  }
});
