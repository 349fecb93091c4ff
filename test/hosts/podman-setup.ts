/**
 * Inside the x86_64 test host, with the tools of test/hosts/podman.sh laid over it: what podman needs before
 * its first container (the cgroup2 hierarchy, the `flintvm-oci` runtime wrapper containers.conf names) and a
 * busybox image, `podman import`ed offline. Shared by test/linux/podman.test.ts and bench/oci-inner.ts.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runCommand } from '../helpers/run-command.js';

// The command as installed: the package's bin/flintvm-oci.cjs (bin/launch.cjs runs the bundle when it is current).
const CLI = fileURLToPath(new URL('../../../bin/flintvm-oci.cjs', import.meta.url));
/** containers.conf (test/hosts/podman.sh) names this wrapper as the runtime `flintvm-oci`. */
export const OCI_WRAPPER = '/work/bin/flintvm-oci';
export const PODMAN_IMAGE = 'localhost/flintvm-busybox';
const APPLETS = ['sh', 'echo', 'cat', 'id', 'pwd', 'sleep', 'ls', 'env', 'head', 'md5sum', 'yes', 'touch', 'true', 'trap', 'tty', 'stty', 'wc'];

/**
 * Gets podman ready and imports the busybox image; resolves with why it cannot ('' when ready). `env` names
 * extra variables the runtime wrapper exports (conmon runs the runtime with podman's environment cut down).
 */
export async function setUpPodman(extraEnv: Record<string, string> = {}): Promise<string> {
  if (process.env.FLINTVM_PODMAN !== '1' || !existsSync('/usr/bin/podman')) {
    return 'no podman here: npm test carries it into the x86_64 test host (FLINTVM_PODMAN_DIR=$(bash test/hosts/podman.sh))';
  }
  if (!process.env.FLINTVM_AGENT_DIR) return 'no agent build: set FLINTVM_AGENT_DIR=$(bash guest/agent/build.sh)';
  // crun needs the cgroup2 hierarchy (podman's cgroupfs manager); the test host's init does not mount it.
  if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    const m = await runCommand('mount', ['-t', 'cgroup2', 'none', '/sys/fs/cgroup']);
    if (m.code !== 0) return `mount -t cgroup2 failed: ${m.stderr.trim()}`;
  }
  const vars: Record<string, string> = {};
  for (const k of ['FLINTVM_AGENT_DIR', 'FLINTVM_GUEST_DIR', 'FLINTVM_CACHE', 'DEBUG']) if (process.env[k]) vars[k] = process.env[k]!;
  Object.assign(vars, extraEnv);
  const env = Object.entries(vars).map(([k, v]) => `export ${k}='${v.replace(/'/g, `'\\''`)}'\n`).join('');
  mkdirSync('/work/bin', { recursive: true });
  writeFileSync(OCI_WRAPPER, `#!/bin/sh\n${env}exec '${process.execPath}' '${CLI}' "$@"\n`, { mode: 0o755 });

  const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!bb) return 'no busybox here to make an image of';
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-podman-rootfs-'));
  chmodSync(dir, 0o755);
  for (const d of ['bin', 'proc', 'dev', 'tmp', 'etc', 'sys', 'run', 'data']) mkdirSync(join(dir, d));
  chmodSync(join(dir, 'tmp'), 0o1777);
  copyFileSync(bb, join(dir, 'bin', 'busybox'));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) symlinkSync('busybox', join(dir, 'bin', a));
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\nuser:x:1000:\n');
  const tar = join(tmpdir(), 'flintvm-busybox.tar');
  const tr = await runCommand('tar', ['-C', dir, '-cf', tar, '.']);
  if (tr.code !== 0) return `tar failed: ${tr.stderr.trim()}`;
  const imp = await runCommand('podman', ['import', '--quiet', '--change', 'ENV=PATH=/bin', tar, PODMAN_IMAGE]);
  return imp.code === 0 ? '' : `podman import failed: ${imp.stderr.trim()}`;
}
