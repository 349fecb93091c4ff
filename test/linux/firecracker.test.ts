/**
 * Firecracker compatibility, end to end (x86_64 test host): `flintvm --api-sock`
 * driven by `curl --unix-socket` with the request sequence of Firecracker's
 * getting-started guide (our default guest's kernel and initramfs in place of
 * its hello kernel and rootfs), and `flintvm --config-file`. The guest is the
 * default guest running a command, so its console output and exit status show
 * that it booted.
 */
import test from 'ava';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultGuestImages, guestCommandCmdline } from '../../lib/index.js';
import { requireKvm } from '../helpers/kvm.js';

const FLINTVM = fileURLToPath(new URL('../../bin/flintvm.js', import.meta.url));
const BOOT_TIMEOUT_MS = 2 * 60_000;
/** The getting-started guide's boot_args. */
const GUIDE_BOOT_ARGS = 'console=ttyS0 reboot=k panic=1 pci=off';
const ARM64 = process.arch === 'arm64';

const dir = mkdtempSync(join(tmpdir(), 'flintvm-fc-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

/** `curl --unix-socket SOCK -X METHOD http://localhost/PATH [-d BODY]`: the status and the body. */
function curl(sock: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  const args = ['-s', '--unix-socket', sock, '-X', method, `http://localhost${path}`, '-H', 'Accept: application/json', '-w', '\n%{http_code}'];
  if (body !== undefined) args.push('-H', 'Content-Type: application/json', '-d', JSON.stringify(body));
  return new Promise((resolve, reject) => {
    execFile('curl', args, { timeout: 30_000 }, (err, stdout) => {
      if (err) return reject(err);
      const nl = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(nl + 1)), body: stdout.slice(0, nl) });
    });
  });
}

/** Spawns flintvm with these arguments; collects its output; resolves its exit status. */
function flintvm(args: string[]): { child: ChildProcess; out: () => string; waitFor: (re: RegExp) => Promise<void>; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [FLINTVM, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const onData = (c: Buffer) => {
    out += c.toString();
    for (const w of [...waiters]) if (w.re.test(out)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const timer = setTimeout(() => child.kill('SIGKILL'), BOOT_TIMEOUT_MS);
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => { clearTimeout(timer); r(code); }));
  const waitFor = (re: RegExp) => new Promise<void>((resolve, reject) => {
    if (re.test(out)) return resolve();
    waiters.push({ re, resolve });
    void exited.then(() => reject(new Error(`flintvm exited before ${re}: ${out.slice(-2000)}`)));
  });
  return { child, out: () => out, waitFor, exited };
}

async function socketReady(sock: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      await curl(sock, 'GET', '/');
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${sock} never answered`);
}

test.serial('--api-sock: the getting-started sequence through curl boots the default guest; pause/resume; pre-boot resources and a second start refused', async (t) => {
  if (ARM64) return t.pass('x86_64 test only');
  if (!requireKvm(t)) return;
  const imgs = await defaultGuestImages({ quiet: true });
  const sock = join(dir, 'firecracker.socket');
  const vm = flintvm(['--api-sock', sock]);
  await socketReady(sock);

  const info = await curl(sock, 'GET', '/');
  t.is(info.status, 200);
  t.like(JSON.parse(info.body), { state: 'Not started', app_name: 'Firecracker' });
  const early = await curl(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
  t.is(early.status, 400);
  t.regex(early.body, /"fault_message":".*boot-source/);

  const cmd = guestCommandCmdline(['sh', '-c', 'echo fc-ready; sleep 4; echo "fc-api-$((6*7)) cpus=$(grep -c ^processor /proc/cpuinfo)"; exit 7']);
  t.is((await curl(sock, 'PUT', '/boot-source', { kernel_image_path: imgs.kernel, initrd_path: imgs.initrd, boot_args: `${GUIDE_BOOT_ARGS} quiet ${cmd}` })).status, 204);
  t.is((await curl(sock, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 256 })).status, 204);
  const bad = await curl(sock, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 256, smt: true });
  t.is(bad.status, 400);
  t.regex(bad.body, /smt/);
  t.is((await curl(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status, 204);

  await vm.waitFor(/fc-ready/);
  t.like(JSON.parse((await curl(sock, 'GET', '/')).body), { state: 'Running' });
  const again = await curl(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
  t.is(again.status, 400, again.body);
  t.is((await curl(sock, 'PUT', '/boot-source', { kernel_image_path: imgs.kernel })).status, 400);
  t.is((await curl(sock, 'PATCH', '/vm', { state: 'Paused' })).status, 204);
  t.like(JSON.parse((await curl(sock, 'GET', '/')).body), { state: 'Paused' });
  t.is((await curl(sock, 'PATCH', '/vm', { state: 'Resumed' })).status, 204);
  t.like(JSON.parse((await curl(sock, 'GET', '/vm/config')).body), { 'machine-config': { vcpu_count: 2, mem_size_mib: 256 } });

  const code = await vm.exited;
  t.regex(vm.out(), /flintvm guest: Linux 6\.1\.\S+/, vm.out().slice(-2000));
  t.regex(vm.out(), /fc-api-42 cpus=2/, vm.out().slice(-2000));
  t.is(code, 7, 'the process exits with the guest command\'s status when the VM ends');
});

test.serial('--config-file: a Firecracker config with a drive and entropy boots the default guest', async (t) => {
  if (ARM64) return t.pass('x86_64 test only');
  if (!requireKvm(t)) return;
  const imgs = await defaultGuestImages({ quiet: true });
  const disk = join(dir, 'scratch.img');
  writeFileSync(disk, Buffer.alloc(1024 * 1024));
  const cmd = guestCommandCmdline(['sh', '-c', 'echo "serial=$(cat /sys/block/vda/serial) ro=$(cat /sys/block/vda/ro) rng=$(cat /sys/class/misc/hw_random/rng_current)"']);
  const file = join(dir, 'vm.json');
  writeFileSync(file, JSON.stringify({
    'boot-source': { kernel_image_path: imgs.kernel, initrd_path: imgs.initrd, boot_args: `${GUIDE_BOOT_ARGS} quiet ${cmd}` },
    drives: [{ drive_id: 'scratch', path_on_host: disk, is_root_device: false, is_read_only: true }],
    'machine-config': { vcpu_count: 1, mem_size_mib: 128, smt: false },
    entropy: {},
    'network-interfaces': [],
  }));
  const vm = flintvm(['--config-file', file]);
  const code = await vm.exited;
  t.regex(vm.out(), /serial=scratch ro=1 rng=virtio_rng/, vm.out().slice(-2000));
  t.is(code, 0, vm.out().slice(-2000));

  // A field that would change behaviour is refused before anything starts, naming the field (exit status 2).
  writeFileSync(file, JSON.stringify({ 'boot-source': { kernel_image_path: imgs.kernel }, 'machine-config': { vcpu_count: 1, mem_size_mib: 128, track_dirty_pages: true } }));
  const refused = flintvm(['--config-file', file]);
  t.is(await refused.exited, 2);
  t.regex(refused.out(), /machine-config\.track_dirty_pages/);
});
