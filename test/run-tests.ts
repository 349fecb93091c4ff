#!/usr/bin/env node
/**
 * `npm test`'s runner (after test/setup.sh and the build): every test tier,
 * each where the KVM it needs is.
 *
 * | tier | what | where |
 * |---|---|---|
 * | unit | dist/test/unit and dist/test/package (the packed tarball, installed) | here |
 * | integration | dist/test/integration: tiny hand-assembled x86 guests against KVM | here when this is an x86_64 machine with a usable /dev/kvm, else inside the x86_64 test host |
 * | linux-x86_64 | dist/test/linux: real Linux guests | inside the x86_64 test host |
 * | linux-arm64 | the arm64 subset of dist/test/linux, and the `*-arm64` integration tests | inside the arm64 test host |
 *
 * The unit tier runs first. Then two lanes of test hosts run side by side
 * (each host is one single-threaded TCG process, so two of them fill a 2-core
 * machine): one lane starts with the integration tier, the other with
 * linux-arm64, and then both take the linux-x86_64 files, a group at a time,
 * longest group first, from one queue (one host boot per group). So neither
 * lane idles while the other still has half the x86_64 files to go.
 *
 * Every line a tier prints is passed through with its tier's name in front
 * (and, for linux-x86_64, its group's first file).
 * At the end one line per tier says where it ran and what it counted, and the
 * last line is the total, `tests: N passed, N failed, N skipped`. A test that
 * cannot run here says so through test/helpers/kvm.ts's skipOrFail: a
 * `[skip]` line, counted as skipped; in CI (CI=true) that is a failure
 * instead.
 *
 *   node dist/test/run-tests.js [--tiers unit,integration,linux-x86_64,linux-arm64]
 *
 * Exit status: 0 when every tier passed (and, in CI, nothing was skipped), else 1.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { haveKvm, inCi } from './helpers/kvm.js';
import { localKvmIsPvm } from '../lib/kvm/pvm.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const AVA = join(ROOT, 'node_modules', '.bin', 'ava');
const HOST_CLI = join(ROOT, 'dist', 'test', 'hosts', 'cli.js');

/** The Linux test files that run in the arm64 test host (the others need x86-only guest tools or set-up). */
export const ARM64_LINUX_FILES = [
  'dist/test/linux/boot.test.js', 'dist/test/linux/virtio.test.js', 'dist/test/linux/net.test.js', 'dist/test/linux/vsock.test.js',
  'dist/test/linux/snapshot.test.js', 'dist/test/linux/share-9p.test.js', 'dist/test/linux/share-virtiofs.test.js',
];

/**
 * The integration test files, split by the arch of their hand-made guests: `*-arm64.test.js` files run in
 * the arm64 tier (its host has arm64 KVM), every other one is x86 code for the integration tier.
 */
export function integrationFiles(arch: 'x86_64' | 'arm64'): string[] {
  const dir = join(ROOT, 'dist', 'test', 'integration');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.test.js') && f.endsWith('-arm64.test.js') === (arch === 'arm64'))
    .sort()
    .map((f) => `dist/test/integration/${f}`);
}

/**
 * Integration files whose tiny guests need a full KVM: the nested `kvm_pvm` of some build machines
 * (ENVIRONMENT.md §1) stops them with an emulation failure (vcpu-state's guest keeps a sum in XMM0 to test
 * the XSAVE state, and kvm_pvm cannot emulate its first `movq xmm1, rcx`). On such a machine these run in
 * the x86_64 test host and the rest of the tier runs here.
 */
export const FULL_KVM_INTEGRATION_FILES: readonly string[] = ['vcpu-state.test.js'];

type TierName = 'unit' | 'integration' | 'linux-x86_64' | 'linux-arm64';
const ALL_TIERS: readonly TierName[] = ['unit', 'integration', 'linux-x86_64', 'linux-arm64'];

/** One run of ava (here or in one test host boot); a tier is one or more of them. */
interface Tier {
  name: TierName;
  /** Where it runs, in words, for the summary. */
  where: string;
  cmd: string[];
  /** The tag on its output lines, when it is one of several runs of its tier. */
  tag?: string;
}

/**
 * The linux-x86_64 files in groups, by file name without `.test.js`, longest first (the lanes take them in
 * this order, so the long ones do not come last). Each group is one host boot; a file in no group gets a
 * group of its own. Host seconds per group in one CI run (warm, 2-core machine): lifecycle 845, boot 349,
 * share-9p 320, share-xattr 320, net 292, podman 289, snapshot 200.
 */
export const LINUX_X86_GROUPS: readonly (readonly string[])[] = [
  ['lifecycle'],
  ['boot', 'agent', 'oci'],
  ['share-9p', 'share-tarball'],
  ['share-xattr', 'share-bigfile', 'share-virtiofs', 'firecracker'],
  ['net', 'vsock', 'virtio'],
  ['podman'],
  ['snapshot', 'durability'],
];

/** The dist/test/linux files as {@link LINUX_X86_GROUPS} groups them, in that order, then the ungrouped ones. */
export function linuxX86Groups(files: readonly string[]): string[][] {
  const base = (f: string) => f.replace(/^.*\//, '').replace(/\.test\.js$/, '');
  const groups = LINUX_X86_GROUPS.map((g) => files.filter((f) => g.includes(base(f)))).filter((g) => g.length > 0);
  const grouped = new Set(groups.flat());
  return [...groups, ...files.filter((f) => !grouped.has(f)).map((f) => [f])];
}

function linuxFiles(): string[] {
  const dir = join(ROOT, 'dist', 'test', 'linux');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort().map((f) => `dist/test/linux/${f}`);
}

/** What one tier's ava run counted. */
export interface TierCounts {
  passed: number;
  failed: number;
  skipped: number;
}

/**
 * Reads the counts out of ava's output (its per-test ✔/✘ lines and its
 * closing `N tests passed` / `N tests failed` / `N tests skipped` lines) and the
 * `[skip]` lines of skipOrFail. A test that skipped itself passed in ava's
 * eyes, so it moves from passed to skipped.
 */
export function countTier(output: string): TierCounts {
  const num = (re: RegExp) => {
    let n = 0;
    for (const m of output.matchAll(re)) n += Number(m[1]);
    return n;
  };
  const lines = (re: RegExp) => (output.match(re) ?? []).length;
  const skippedBySelf = lines(/^(?:\S+\s+)?\[skip\] /gm);
  // ava prints `N tests passed` only when nothing failed, so passes are counted from its per-test ✔ lines.
  const passed = Math.max(lines(/^(?:\S+\s+)?\s*✔ /gm), num(/^(?:\S+\s+)?\s*(\d+) tests? passed\s*$/gm));
  const failed =
    Math.max(lines(/^(?:\S+\s+)?\s*✘ /gm), num(/^(?:\S+\s+)?\s*(\d+) tests? failed\s*$/gm)) +
    num(/^(?:\S+\s+)?\s*(\d+) (?:uncaught exceptions?|unhandled rejections?)\s*$/gm) +
    num(/^(?:\S+\s+)?\s*(\d+) tests? remained pending/gm);
  const avaSkipped = num(/^(?:\S+\s+)?\s*(\d+) tests? skipped\s*$/gm) + num(/^(?:\S+\s+)?\s*(\d+) tests? todo\s*$/gm);
  return { passed: Math.max(0, passed - skippedBySelf), failed, skipped: skippedBySelf + avaSkipped };
}

/**
 * The lines of ava's output that name what failed: its `✘` lines (a failed test, a time-out, an uncaught
 * exception) and its `◌` lines (a test still pending when a time-out stopped the run), trimmed, in order.
 * The summary repeats them, so the last lines of a long run say which test failed.
 */
export function failureLines(output: string): string[] {
  return [...output.matchAll(/^(?:\S+\s+)?\s*([✘◌] .*?)\s*$/gm)].map((m) => m[1]!);
}

/** The integration tier on a machine with a local /dev/kvm: here, but on kvm_pvm the files that need a full KVM in the test host. */
function localIntegration(host: (arch: string, timeoutSec: number, files: string[], silence?: string) => string[]): Tier[] {
  const files = integrationFiles('x86_64');
  const full = localKvmIsPvm() ? files.filter((f) => FULL_KVM_INTEGRATION_FILES.some((n) => f.endsWith(`/${n}`))) : [];
  const here: Tier = { name: 'integration', where: 'here (local /dev/kvm)', cmd: [AVA, ...files.filter((f) => !full.includes(f))] };
  if (full.length === 0) return [here];
  return [here, {
    name: 'integration', tag: 'integration:full-kvm', where: 'inside the x86_64 test host (these need a full KVM; the local one is the nested kvm_pvm)',
    cmd: host('x86_64', 1800, full, '5m'),
  }];
}

function plan(names: readonly TierName[]): Tier[][] {
  const localKvm = haveKvm() && process.arch === 'x64';
  // ava inside a host: files one at a time on its single vCPU (two at once only made each slower, and a guest that
  // boots in 3 s alone took a minute), with a per-test silence limit that fits an emulated CPU.
  // The silence limit: 20 min fits a Linux test on an emulated CPU; the integration tier's tiny guests take
  // seconds each, so there a hung test fails after 5 min instead of holding the lane for 20.
  const host = (arch: string, timeoutSec: number, files: string[], silence = '20m') => [
    process.execPath, HOST_CLI, '--arch', arch, '--timeout', String(timeoutSec),
    '--', 'node_modules/.bin/ava', `--timeout=${silence}`, '--no-worker-threads', '--concurrency=1', ...files,
  ];
  const tiers: Record<TierName, Tier[]> = {
    // The package test packs the tarball and installs it into an empty project (README's install path).
    unit: [{ name: 'unit', where: 'here', cmd: [AVA, 'dist/test/unit/**/*.test.js', 'dist/test/package/**/*.test.js'] }],
    integration: localKvm ? localIntegration(host) : [{
      name: 'integration',
      where: `inside the x86_64 test host (${process.arch !== 'x64' ? 'its tiny guests are x86 code' : 'no usable /dev/kvm here'})`,
      cmd: host('x86_64', 1800, integrationFiles('x86_64'), '5m'),
    }],
    'linux-x86_64': linuxX86Groups(linuxFiles()).map((g) => ({
      name: 'linux-x86_64', where: 'inside the x86_64 test host', cmd: host('x86_64', 3600, g),
      tag: `linux-x86_64:${g[0]!.replace(/^.*\//, '').replace(/\.test\.js$/, '')}`,
    })),
    'linux-arm64': [{
      name: 'linux-arm64', where: 'inside the arm64 test host (with the arm64 integration tests)',
      cmd: host('arm64', 3600, [...integrationFiles('arm64'), ...ARM64_LINUX_FILES]),
    }],
  };
  return names.map((n) => tiers[n]);
}

/**
 * What the OCI tests need, x86_64 only so far (test/setup.sh has built both, so these are cache hits; a failure
 * is printed and left to those tests): the guest agent (guest/agent: the unit tier runs the binary on a Unix
 * socket, the linux-x86_64 tier boots its initramfs) and podman, conmon and crun (test/hosts/podman.sh), which
 * test/hosts lays over the x86_64 test host.
 */
function findOciTools(): void {
  if (process.arch !== 'x64') return;
  const tools: [string, string[]][] = [
    ['FLINTVM_AGENT_DIR', ['guest', 'agent', 'build.sh']],
    ['FLINTVM_PODMAN_DIR', ['test', 'hosts', 'podman.sh']],
  ];
  for (const [env, script] of tools) {
    if (process.env[env]) continue;
    try {
      const out = execFileSync('bash', [join(ROOT, ...script)], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      process.env[env] = out.trim().split('\n').pop();
    } catch (e) {
      process.stdout.write(`[test] bash ${script.join('/')} failed: ${(e as Error).message.split('\n')[0]}\n`);
    }
  }
}

interface TierResult extends TierCounts {
  tier: Tier;
  code: number;
  seconds: number;
  /** How many runs (host boots) the figures add up. */
  runs: number;
  /** How many of those runs printed no test at all (a host that did not come up). */
  emptyRuns: number;
  /** {@link failureLines}, each after its run's tag. */
  failures: string[];
}

/** One result per tier: the counts and seconds of its runs added up, the worst exit status. */
function mergeRuns(runs: readonly TierResult[]): TierResult[] {
  const byTier = new Map<TierName, TierResult>();
  for (const r of runs) {
    const m = byTier.get(r.tier.name);
    if (!m) byTier.set(r.tier.name, { ...r });
    else {
      m.passed += r.passed;
      m.failed += r.failed;
      m.skipped += r.skipped;
      m.seconds += r.seconds;
      m.runs += r.runs;
      m.emptyRuns += r.emptyRuns;
      m.failures = [...m.failures, ...r.failures];
      if (m.code === 0) m.code = r.code;
    }
  }
  return [...byTier.values()];
}

/** Runs one tier, passing each line through with the tier's name in front. */
function runTier(tier: Tier): Promise<TierResult> {
  const t0 = Date.now();
  const tag = `[${tier.tag ?? tier.name}]`;
  process.stdout.write(`${tag} running ${tier.where}\n`);
  return new Promise((resolve) => {
    const child = spawn(tier.cmd[0]!, tier.cmd.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let all = '';
    const pass = (stream: NodeJS.ReadableStream) => {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        const lines = (partial + d).split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) {
          all += `${l}\n`;
          process.stdout.write(`${tag} ${l}\n`);
        }
      });
      stream.on('end', () => {
        if (partial) {
          all += `${partial}\n`;
          process.stdout.write(`${tag} ${partial}\n`);
        }
      });
    };
    pass(child.stdout!);
    pass(child.stderr!);
    child.on('close', (code, signal) => {
      const counts = countTier(all);
      const failures = failureLines(all).map((l) => `${tag} ${l}`);
      resolve({ tier, code: code ?? (signal ? 128 : 1), seconds: Math.round((Date.now() - t0) / 1000), runs: 1, emptyRuns: counts.passed + counts.skipped > 0 ? 0 : 1, failures, ...counts });
    });
  });
}

async function main(argv: string[]): Promise<number> {
  let names: TierName[] = [...ALL_TIERS];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--tiers' || a.startsWith('--tiers=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i] ?? '';
      const want = v.split(',').filter(Boolean);
      const bad = want.filter((w) => !ALL_TIERS.includes(w as TierName));
      if (bad.length || !want.length) {
        process.stderr.write(`run-tests: --tiers takes a comma-separated list of ${ALL_TIERS.join(', ')}; got '${v}'\n`);
        return 2;
      }
      names = ALL_TIERS.filter((n) => want.includes(n));
    } else {
      process.stderr.write(`run-tests: unknown argument '${a}' (usage: --tiers ${ALL_TIERS.join(',')})\n`);
      return 2;
    }
  }
  if (!existsSync(AVA)) {
    process.stderr.write('run-tests: node_modules/.bin/ava is missing: run `npm install` first\n');
    return 2;
  }
  findOciTools();
  const tiers = plan(names);
  const runs: TierResult[] = [];
  const byName = (n: TierName) => tiers.find((t) => t[0]?.name === n) ?? [];
  const lane = async (first: Tier[], queue: Tier[]) => {
    for (const t of first) runs.push(await runTier(t));
    for (let t = queue.shift(); t; t = queue.shift()) runs.push(await runTier(t));
  };
  // The unit tier alone first: it uses both cores. Then two lanes of test hosts side by side.
  await lane(byName('unit'), []);
  const runsHere = (t: Tier) => t.where.startsWith('here');
  await lane(byName('integration').filter(runsHere), []);
  const x86Queue = [...byName('linux-x86_64')];
  await Promise.all([lane(byName('integration').filter((t) => !runsHere(t)), x86Queue), lane(byName('linux-arm64'), x86Queue)]);
  const results = mergeRuns(runs);

  const ci = inCi();
  const total: TierCounts = { passed: 0, failed: 0, skipped: 0 };
  let ok = true;
  process.stdout.write('\n');
  for (const r of ALL_TIERS.map((n) => results.find((x) => x.tier.name === n)).filter((x): x is TierResult => !!x)) {
    total.passed += r.passed;
    total.failed += r.failed;
    total.skipped += r.skipped;
    // A tier whose runner failed without a failed test (a host that did not come up, a time-out) still fails.
    const tierOk = r.code === 0 && r.failed === 0 && !(ci && r.skipped > 0) && r.emptyRuns === 0;
    if (!tierOk) ok = false;
    process.stdout.write(
      `[test] ${r.tier.name}: ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped; ran ${r.tier.where}; ` +
        `${r.seconds} s${r.runs > 1 ? ` in ${r.runs} host boots` : ''}${r.code !== 0 ? `; exit status ${r.code}` : ''}${tierOk ? '' : ' -- FAILED'}\n`,
    );
    for (const f of r.failures) process.stdout.write(`[test]   ${f}\n`);
  }
  if (total.skipped > 0) {
    process.stdout.write(`[test] ${total.skipped} skipped: no /dev/kvm or a missing host tool (see the [skip] lines)${ci ? '; CI=true, so this fails' : ''}\n`);
  }
  process.stdout.write(`tests: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped\n`);
  return ok ? 0 : 1;
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`run-tests: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
