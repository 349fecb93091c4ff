/** `flintvm --config-file` / `--api-sock` as a process: exit statuses, messages, socket clean-up. No KVM needed. */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const FLINTVM = fileURLToPath(new URL('../../../bin/flintvm.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'flintvm-fc-mode-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[], onSpawn?: (kill: () => void) => void): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [FLINTVM, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, out }); });
    onSpawn?.(() => child.kill('SIGTERM'));
  });
}

function getRoot(sock: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ socketPath: sock, path: '/', method: 'GET' }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve(text));
    }).on('error', reject).end();
  });
}

test('a config file with an unsupported field exits 2 before anything starts, naming the field', async (t) => {
  const file = join(dir, 'bad.json');
  writeFileSync(file, JSON.stringify({ 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: 'r', path_on_host: '/r', is_root_device: true, rate_limiter: { ops: { size: 10, refill_time: 100 } } }] }));
  const { code, out } = await run(['--config-file', file]);
  t.is(code, 2, out);
  t.regex(out, /drives\[0\]\.rate_limiter: I\/O rate limiting is not supported/);
});

test('a config file that is not JSON, or missing, exits 2; an unknown flag exits 2', async (t) => {
  const file = join(dir, 'broken.json');
  writeFileSync(file, '{ "boot-source": ');
  t.regex((await run(['--config-file', file])).out, /--config-file .*not valid JSON/);
  const missing = await run(['--config-file', join(dir, 'none.json')]);
  t.is(missing.code, 2);
  t.regex(missing.out, /--config-file: cannot read .* \(ENOENT\)/);
  const flag = await run(['--api-sock', join(dir, 'x.sock'), '--seccomp-level', '2']);
  t.is(flag.code, 2);
  t.regex(flag.out, /seccomp-level/);
});

test('a kernel path that does not exist exits 2 (a config error), naming boot-source and the field', async (t) => {
  const file = join(dir, 'nokernel.json');
  writeFileSync(file, JSON.stringify({ 'boot-source': { kernel_image_path: join(dir, 'missing-vmlinux') } }));
  const { code, out } = await run(['--config-file', file]);
  t.is(code, 2, out);
  t.regex(out, /InstanceStart failed: boot-source\.kernel_image_path: .*missing-vmlinux.*\(ENOENT\)/);
});

test('a kernel that cannot boot: the config file run exits 1 with the reason', async (t) => {
  const kernel = join(dir, 'not-a-kernel');
  writeFileSync(kernel, Buffer.alloc(4096, 0x5a));
  const file = join(dir, 'vm.json');
  writeFileSync(file, JSON.stringify({ 'boot-source': { kernel_image_path: kernel }, 'machine-config': { vcpu_count: 1, mem_size_mib: 64 } }));
  const { code, out } = await run(['--config-file', file]);
  t.is(code, 1, out);
  t.regex(out, /InstanceStart failed: /);
});

test('logger level Debug: flintvm\'s own debug lines go to log_path, formatted', async (t) => {
  const kernel = join(dir, 'not-a-kernel-for-the-log');
  writeFileSync(kernel, Buffer.alloc(4096, 0x5a));
  const logPath = join(dir, 'fc-debug.log');
  writeFileSync(logPath, '');
  const file = join(dir, 'vm-debug.json');
  writeFileSync(file, JSON.stringify({ 'boot-source': { kernel_image_path: kernel }, 'machine-config': { vcpu_count: 1, mem_size_mib: 64 }, logger: { log_path: logPath, level: 'Debug' } }));
  const { code, out } = await run(['--config-file', file]);
  t.is(code, 1, out);
  const log = readFileSync(logPath, 'utf8');
  // `debug` loads only once the logger asks for it (lib/log.ts): its lines still reach the file, with their arguments in place.
  t.regex(log, /flintvm:microvm state starting/);
  t.regex(log, /flintvm:builder building \(\w+\): 64 MiB, 1 vCPUs/);
  t.notRegex(log, /%[sd]/);
});

test('--api-sock serves GET / until SIGTERM, then exits 0 and removes the socket', async (t) => {
  const sock = join(dir, 'api.sock');
  let body = '';
  const { code } = await run(['--api-sock', sock, '--id', 'mode-test'], (kill) => {
    void (async () => {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      body = await getRoot(sock);
      kill();
    })();
  });
  t.is(code, 0);
  t.deepEqual(JSON.parse(body), { id: 'mode-test', state: 'Not started', vmm_version: JSON.parse(body).vmm_version, app_name: 'Firecracker' });
  t.regex(JSON.parse(body).vmm_version, /^\d+\.\d+\.\d+/);
  t.false(existsSync(sock));
});
