import test from 'ava';
import { request } from 'node:http';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FirecrackerApi, MAX_BODY_BYTES, type FcInstanceState, type VmController } from '../../../lib/firecracker/api-server.js';
import type { MicroVMConfig } from '../../../lib/vm/config.js';

/** Test double: records calls; `failStart` makes start() reject (with `built` saying whether a VM was made). */
class FakeVm implements VmController {
  state: FcInstanceState = 'Not started';
  async snapshot(statePath: string, memoryPath: string): Promise<void> { this.calls.push(`snapshot ${statePath} ${memoryPath}`); }
  async load(statePath: string, memoryPath: string, resume: boolean, taps: ReadonlyMap<number, string>): Promise<void> {
    this.calls.push(`load ${statePath} ${memoryPath} ${resume} ${[...taps].join(';')}`);
    this.state = resume ? 'Running' : 'Paused';
  }
  started: MicroVMConfig[] = [];
  calls: string[] = [];
  failStart: { message: string; built: boolean } | null = null;
  async start(config: MicroVMConfig): Promise<void> {
    this.calls.push('start');
    if (this.failStart) {
      if (this.failStart.built) this.state = 'Running';
      throw new Error(this.failStart.message);
    }
    this.started.push(config);
    this.state = 'Running';
  }
  async pause(): Promise<void> { this.calls.push('pause'); this.state = 'Paused'; }
  async resume(): Promise<void> { this.calls.push('resume'); this.state = 'Running'; }
}

function setup(withCtrlAltDel = false) {
  const vm = new FakeVm();
  if (withCtrlAltDel) (vm as VmController).sendCtrlAltDel = async () => { vm.calls.push('ctrl-alt-del'); };
  const api = new FirecrackerApi(vm, { id: 'fc-test', vmmVersion: '9.9.9' });
  const call = (method: string, path: string, body?: unknown) => api.handle(method, path, body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body));
  return { vm, api, call };
}

const fault = (r: { body?: unknown }) => (r.body as { fault_message?: string } | undefined)?.fault_message ?? '';

const BOOT = { kernel_image_path: '/k/vmlinux', boot_args: 'console=ttyS0 reboot=k panic=1 pci=off' };

test('the getting-started sequence: 204s, then InstanceStart boots the translated config; GET / and GET /machine-config', async (t) => {
  const { vm, call } = setup();
  t.deepEqual(await call('GET', '/'), { status: 200, body: { id: 'fc-test', state: 'Not started', vmm_version: '9.9.9', app_name: 'Firecracker' } });
  t.deepEqual(await call('PUT', '/boot-source', BOOT), { status: 204 });
  t.deepEqual(await call('PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 512 }), { status: 204 });
  t.deepEqual(await call('PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: '/r.ext4', is_root_device: true, is_read_only: false }), { status: 204 });
  t.deepEqual(await call('PUT', '/network-interfaces/net1', { iface_id: 'net1', host_dev_name: 'tap0', guest_mac: '06:00:AC:10:00:02' }), { status: 204 });
  t.deepEqual(await call('PUT', '/vsock', { guest_cid: 3, uds_path: '/tmp/v.sock' }), { status: 204 });
  t.deepEqual(await call('PUT', '/entropy', {}), { status: 204 });
  t.deepEqual(await call('PUT', '/logger', { level: 'Info' }), { status: 204 });
  t.deepEqual(await call('GET', '/machine-config'), { status: 200, body: { vcpu_count: 2, mem_size_mib: 512, smt: false, track_dirty_pages: false } });
  t.deepEqual(await call('PUT', '/actions', { action_type: 'InstanceStart' }), { status: 204 });
  t.deepEqual(vm.started, [{
    kernel: '/k/vmlinux', cmdline: BOOT.boot_args, memoryMiB: 512, vcpus: 2,
    drives: [{ path: '/r.ext4', readOnly: false, root: true, serial: 'rootfs' }], net: [{ tap: 'tap0', mac: '06:00:ac:10:00:02' }],
    rng: true, vsock: { guestCid: 3, udsPath: '/tmp/v.sock' },
  }]);
  t.is(((await call('GET', '/')).body as { state: string }).state, 'Running');
  const cfg = (await call('GET', '/vm/config')).body as Record<string, unknown>;
  t.deepEqual(cfg['boot-source'], BOOT);
  t.is(cfg.balloon, null);
  t.is((cfg.drives as unknown[]).length, 1);
  t.deepEqual((await call('GET', '/version')).body, { firecracker_version: '9.9.9' });
});

test('InstanceStart before boot-source is 400 and starts nothing; a second InstanceStart is 400', async (t) => {
  const { vm, call } = setup();
  const early = await call('PUT', '/actions', { action_type: 'InstanceStart' });
  t.is(early.status, 400);
  t.regex(fault(early), /PUT \/boot-source first/);
  t.deepEqual(vm.calls, []);
  await call('PUT', '/boot-source', BOOT);
  t.is((await call('PUT', '/actions', { action_type: 'InstanceStart' })).status, 204);
  const again = await call('PUT', '/actions', { action_type: 'InstanceStart' });
  t.is(again.status, 400);
  t.regex(fault(again), /already started/);
  t.is(vm.started.length, 1);
});

test('pre-boot resources are 400 after the start', async (t) => {
  const { call } = setup();
  await call('PUT', '/boot-source', BOOT);
  await call('PUT', '/actions', { action_type: 'InstanceStart' });
  for (const [path, body] of [
    ['/boot-source', BOOT], ['/machine-config', { vcpu_count: 1, mem_size_mib: 128 }], ['/drives/a', { drive_id: 'a', path_on_host: '/a', is_root_device: false }],
    ['/network-interfaces/e', { iface_id: 'e', host_dev_name: 't' }], ['/vsock', { guest_cid: 3, uds_path: '/u' }], ['/entropy', {}], ['/logger', {}],
  ] as const) {
    const r = await call('PUT', path, body);
    t.is(r.status, 400, path);
    t.regex(fault(r), /only be set before the microVM starts/, path);
  }
  t.is((await call('PATCH', '/machine-config', { vcpu_count: 2 })).status, 400);
});

test('a failed start that built nothing may be retried; one whose VM failed may not', async (t) => {
  const { vm, call } = setup();
  await call('PUT', '/boot-source', BOOT);
  vm.failStart = { message: 'kernel: cannot read /k/vmlinux (ENOENT)', built: false };
  const r = await call('PUT', '/actions', { action_type: 'InstanceStart' });
  t.is(r.status, 400);
  t.is(fault(r), 'InstanceStart failed: kernel: cannot read /k/vmlinux (ENOENT)');
  t.is((await call('PUT', '/boot-source', BOOT)).status, 204, 'still pre-boot');
  vm.failStart = { message: 'KVM_RUN failed', built: true };
  t.is((await call('PUT', '/actions', { action_type: 'InstanceStart' })).status, 400);
  t.regex(fault(await call('PUT', '/actions', { action_type: 'InstanceStart' })), /already started/);
});

test('invalid bodies and unknown fields: 400 with a fault_message naming the field', async (t) => {
  const { call } = setup();
  const cases: [string, string, unknown, RegExp][] = [
    ['PUT', '/boot-source', '{"kernel_image_path": ', /not valid JSON/],
    ['PUT', '/boot-source', '', /needs a JSON body/],
    ['PUT', '/boot-source', [], /PUT \/boot-source: must be a JSON object/],
    ['PUT', '/boot-source', { kernel_image_path: '/k', kernel_args: 'x' }, /PUT \/boot-source\.kernel_args: unknown field/],
    ['PUT', '/machine-config', { vcpu_count: 'two', mem_size_mib: 128 }, /vcpu_count: must be a non-negative integer/],
    ['PUT', '/drives/rootfs', { drive_id: 'other', path_on_host: '/r', is_root_device: true }, /must match/],
    ['PUT', '/actions', { action_type: 'Reboot' }, /action_type: must be InstanceStart, SendCtrlAltDel or FlushMetrics/],
    ['PUT', '/actions', { action_type: 'InstanceStart', force: true }, /\.force: unknown field/],
    ['PATCH', '/vm', { state: 'Stopped' }, /must be "Paused" or "Resumed"/],
    ['PUT', '/metrics', { metrics_path: '/m' }, /metrics are not supported/],
    ['PUT', '/balloon', { amount_mib: 1 }, /virtio-balloon/],
    ['PUT', '/mmds', {}, /MMDS/],
    ['PUT', '/snapshot/create', { snapshot_path: '/s', mem_file_path: '/m', snapshot_type: 'Diff' }, /snapshot_type: "Diff" is not supported/],
    ['PUT', '/snapshot/create', { snapshot_path: '/s' }, /mem_file_path: required/],
    ['PUT', '/snapshot/load', { snapshot_path: '/s' }, /mem_file_path: required/],
    ['PUT', '/snapshot/load', { snapshot_path: '/s', mem_backend: { backend_type: 'Uffd', backend_path: '/u' } }, /backend_type: "Uffd" is not supported/],
    ['PUT', '/snapshot/load', { snapshot_path: '/s', mem_file_path: '/m', enable_diff_snapshots: true }, /enable_diff_snapshots: dirty-page tracking/],
    ['DELETE', '/drives/rootfs', undefined, /invalid request method and\/or path: DELETE \/drives\/rootfs/],
    ['GET', '/nonsense', undefined, /invalid request method/],
    ['PUT', '/actions', { action_type: 'FlushMetrics' }, /metrics are not configured/],
  ];
  for (const [method, path, body, message] of cases) {
    const r = await call(method, path, body);
    t.is(r.status, 400, `${method} ${path}`);
    t.regex(fault(r), message, `${method} ${path}`);
  }
});

test('PATCH /vm pauses and resumes a running VM; before the start it is 400', async (t) => {
  const { vm, call } = setup();
  t.regex(fault(await call('PATCH', '/vm', { state: 'Paused' })), /not running/);
  await call('PUT', '/boot-source', BOOT);
  await call('PUT', '/actions', { action_type: 'InstanceStart' });
  t.is((await call('PATCH', '/vm', { state: 'Paused' })).status, 204);
  t.is(((await call('GET', '/')).body as { state: string }).state, 'Paused');
  t.is((await call('PATCH', '/vm', { state: 'Resumed' })).status, 204);
  t.deepEqual(vm.calls, ['start', 'pause', 'resume']);
});

test('SendCtrlAltDel: 400 before the start and where the controller cannot; forwarded otherwise', async (t) => {
  for (const can of [false, true]) {
    const { vm, call } = setup(can);
    t.regex(fault(await call('PUT', '/actions', { action_type: 'SendCtrlAltDel' })), /not running/);
    await call('PUT', '/boot-source', BOOT);
    await call('PUT', '/actions', { action_type: 'InstanceStart' });
    const r = await call('PUT', '/actions', { action_type: 'SendCtrlAltDel' });
    if (can) {
      t.is(r.status, 204);
      t.deepEqual(vm.calls, ['start', 'ctrl-alt-del']);
    } else {
      t.is(r.status, 400);
      t.regex(fault(r), /SendCtrlAltDel is not supported/);
    }
  }
});

test('PUT /logger reaches the logger hook; a hook that throws is a 400', async (t) => {
  const seen: unknown[] = [];
  const api = new FirecrackerApi(new FakeVm(), { vmmVersion: '1', onLogger: (l) => { if (l.log_path === '/bad') throw new Error('logger.log_path: cannot open /bad'); seen.push(l); } });
  t.is((await api.handle('PUT', '/logger', JSON.stringify({ log_path: '/ok', level: 'Warning' }))).status, 204);
  t.deepEqual(seen, [{ log_path: '/ok', level: 'Warning' }]);
  const r = await api.handle('PUT', '/logger', JSON.stringify({ log_path: '/bad' }));
  t.is(r.status, 400);
  t.is(fault(r), 'PUT /logger: logger.log_path: cannot open /bad');
});

/** One HTTP/1.1 request over a Unix socket. */
function over(socketPath: string, method: string, path: string, body?: string): Promise<{ status: number; type?: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: body ? { 'Content-Type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('over a Unix socket: JSON answers, 204 without a body, oversized bodies refused, the socket removed on close', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-fc-api-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'api.sock');
  const { api } = setup();
  await api.listen(sock);
  const info = await over(sock, 'GET', '/');
  t.is(info.status, 200);
  t.is(info.type, 'application/json');
  t.is((JSON.parse(info.text) as { state: string }).state, 'Not started');
  const put = await over(sock, 'PUT', '/boot-source', JSON.stringify(BOOT));
  t.is(put.status, 204);
  t.is(put.text, '');
  const big = await over(sock, 'PUT', '/boot-source', JSON.stringify({ kernel_image_path: 'k'.repeat(MAX_BODY_BYTES) }));
  t.is(big.status, 400);
  t.regex((JSON.parse(big.text) as { fault_message: string }).fault_message, /larger than/);
  await api.close();
  t.false(existsSync(sock));
  // An existing path is refused (Firecracker does the same; remove a stale socket first).
  writeFileSync(sock, '');
  const e = await t.throwsAsync(api.listen(sock));
  t.regex(e?.message ?? '', /--api-sock: .* already exists/);
});

test('snapshots: create needs a paused VM; load replaces InstanceStart, with File backends and NIC overrides by position', async (t) => {
  const { vm, call } = setup();
  t.regex(fault(await call('PUT', '/snapshot/create', { snapshot_path: '/s', mem_file_path: '/m' })), /must be paused first.*Not started/);
  t.deepEqual(await call('PUT', '/snapshot/load', { snapshot_path: '/s', mem_backend: { backend_type: 'File', backend_path: '/m' }, resume_vm: true, network_overrides: [{ iface_id: 'eth1', host_dev_name: 'tap9' }] }), { status: 204 });
  t.deepEqual(vm.calls, ['load /s /m true 1,tap9']);
  t.is(((await call('GET', '/')).body as { state: string }).state, 'Running');
  t.regex(fault(await call('PUT', '/snapshot/load', { snapshot_path: '/s', mem_file_path: '/m' })), /only be set before the microVM starts/);
  t.regex(fault(await call('PUT', '/actions', { action_type: 'InstanceStart' })), /already started/);
  t.regex(fault(await call('PUT', '/snapshot/create', { snapshot_path: '/s2', mem_file_path: '/m2' })), /must be paused first.*Running/);
  t.deepEqual(await call('PATCH', '/vm', { state: 'Paused' }), { status: 204 });
  t.deepEqual(await call('PUT', '/snapshot/create', { snapshot_type: 'Full', snapshot_path: '/s2', mem_file_path: '/m2' }), { status: 204 });
  t.is(vm.calls.at(-1), 'snapshot /s2 /m2');
  const other = setup();
  t.regex(fault(await other.call('PUT', '/snapshot/load', { snapshot_path: '/s', mem_file_path: '/m', network_overrides: [{ iface_id: 'wan', host_dev_name: 't' }] })), /iface_id: "wan": flintvm restores NICs by position/);
  t.deepEqual(other.vm.calls, [], 'a refused load starts nothing');
});
