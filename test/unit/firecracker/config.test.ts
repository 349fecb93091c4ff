import test, { type ExecutionContext } from 'ava';
import {
  FC_DEFAULT_MACHINE, FirecrackerConfigError, emptyVmConfig, parseBootSource, parseDrive, parseEntropy, parseLogger, parseMachineConfig,
  firecrackerFieldName, parseNetworkInterface, parseVmConfigFile, parseVsock, toMicroVMConfig, upsertDrive, upsertNetworkInterface,
} from '../../../lib/firecracker/config.js';
import { ConfigError } from '../../../lib/errors.js';

/** Asserts `fn` throws a FirecrackerConfigError on `field` whose message matches `message`. */
function refused(t: ExecutionContext, fn: () => unknown, field: string, message?: RegExp): void {
  const e = t.throws(fn, { instanceOf: FirecrackerConfigError }, `expected an error on ${field}`);
  if (!e) return;
  t.true(e instanceof ConfigError);
  t.is(e.field, field, e.message);
  t.true(e.message.startsWith(`${field}: `), e.message);
  if (message) t.regex(e.message, message);
}

const GETTING_STARTED = {
  'boot-source': { kernel_image_path: '/k/vmlinux', boot_args: 'console=ttyS0 reboot=k panic=1 pci=off', initrd_path: '/k/initrd' },
  drives: [
    { drive_id: 'scratch', path_on_host: '/d/scratch.img', is_root_device: false, is_read_only: true, cache_type: 'Writeback', io_engine: 'Async' },
    { drive_id: 'rootfs', path_on_host: '/d/rootfs.ext4', is_root_device: true, is_read_only: false, cache_type: 'Unsafe', io_engine: 'Sync', rate_limiter: null },
  ],
  'machine-config': { vcpu_count: 2, mem_size_mib: 1024, smt: false, track_dirty_pages: false, cpu_template: 'None', huge_pages: 'None' },
  'network-interfaces': [{ iface_id: 'net1', host_dev_name: 'tap0', guest_mac: '06:00:AC:10:00:02', rx_rate_limiter: { bandwidth: null, ops: null } }],
  vsock: { vsock_id: 'vsock0', guest_cid: 3, uds_path: '/tmp/v.sock' },
  entropy: {},
  logger: { log_path: '/tmp/fc.log', level: 'debug', show_level: true, show_log_origin: false },
};

test('a full config file translates field by field to a MicroVMConfig', (t) => {
  const cfg = parseVmConfigFile(GETTING_STARTED);
  t.is(cfg.logger?.level, 'Debug', 'levels are matched without regard to case');
  t.deepEqual(toMicroVMConfig(cfg), {
    kernel: '/k/vmlinux', initrd: '/k/initrd', cmdline: 'console=ttyS0 reboot=k panic=1 pci=off', memoryMiB: 1024, vcpus: 2,
    // The root drive comes first (/dev/vda), as Firecracker orders it; drive_id is the virtio-blk serial.
    drives: [
      { path: '/d/rootfs.ext4', readOnly: false, root: true, serial: 'rootfs' },
      { path: '/d/scratch.img', readOnly: true, root: false, serial: 'scratch' },
    ],
    net: [{ tap: 'tap0', mac: '06:00:ac:10:00:02' }],
    rng: true,
    vsock: { guestCid: 3, udsPath: '/tmp/v.sock' },
  });
});

test('defaults: Firecracker machine (1 vCPU, 128 MiB), our default cmdline when boot_args is absent, no rng', (t) => {
  const mc = toMicroVMConfig(parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k' } }));
  t.deepEqual(mc, { kernel: '/k', memoryMiB: FC_DEFAULT_MACHINE.mem_size_mib, vcpus: 1, drives: [], net: [], rng: false });
  t.is(mc.cmdline, undefined);
});

test('partuuid roots by PARTUUID (ro/rw follows is_read_only) instead of /dev/vda', (t) => {
  const mc = toMicroVMConfig(parseVmConfigFile({
    'boot-source': { kernel_image_path: '/k' },
    drives: [{ drive_id: 'root', path_on_host: '/d', is_root_device: true, is_read_only: true, partuuid: '1a2b3c4d-01' }],
  }));
  t.is(mc.extraCmdline, 'root=PARTUUID=1a2b3c4d-01 ro');
  t.false(mc.drives![0]!.root);
  refused(t, () => parseDrive({ drive_id: 'd', path_on_host: '/d', is_root_device: false, partuuid: 'ab' }, 'd'), 'd.partuuid', /root device/);
});

test('a long drive_id is cut to the 20-byte virtio-blk serial', (t) => {
  const id = 'a'.repeat(30);
  const mc = toMicroVMConfig(parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: id, path_on_host: '/d', is_root_device: false }] }));
  t.is(mc.drives![0]!.serial, 'a'.repeat(20));
});

test('unknown sections and fields are errors naming them', (t) => {
  refused(t, () => parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k' }, 'machine-cfg': {} }), 'machine-cfg', /unknown section/);
  refused(t, () => parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k', bootargs: 'x' } }), 'boot-source.bootargs', /unknown field.*boot_args/);
  refused(t, () => parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: 'a', path_on_host: '/d', is_root_device: false, readonly: true }] }), 'drives[0].readonly', /unknown field/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, memory: 1 }), 'machine-config.memory');
  refused(t, () => parseNetworkInterface({ iface_id: 'e', host_dev_name: 't', mac: 'x' }), 'network-interface.mac');
  refused(t, () => parseVsock({ guest_cid: 3, uds_path: '/u', cid: 3 }), 'vsock.cid');
  refused(t, () => parseEntropy({ rate: 1 }), 'entropy.rate');
  refused(t, () => parseLogger({ path: '/x' }), 'logger.path');
});

test('refused sections say why', (t) => {
  for (const [section, why] of [['metrics', /metrics are not supported/], ['balloon', /virtio-balloon/], ['mmds-config', /MMDS/], ['cpu-config', /CPU templates/]] as const) {
    refused(t, () => parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k' }, [section]: {} }), section, why);
  }
  refused(t, () => parseVmConfigFile({ drives: [] }), 'boot-source', /required/);
  refused(t, () => parseVmConfigFile([]), 'config file', /JSON object/);
  // null sections are "not set", as in GET /vm/config output.
  t.notThrows(() => parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k' }, balloon: null, metrics: null, vsock: null }));
});

test('boot-source: kernel_image_path required, strings only', (t) => {
  refused(t, () => parseBootSource({}), 'boot-source.kernel_image_path', /required/);
  refused(t, () => parseBootSource({ kernel_image_path: '' }), 'boot-source.kernel_image_path', /empty/);
  refused(t, () => parseBootSource({ kernel_image_path: 3 }), 'boot-source.kernel_image_path', /string/);
  refused(t, () => parseBootSource({ kernel_image_path: '/k', boot_args: ['a'] }), 'boot-source.boot_args', /string/);
  refused(t, () => parseBootSource('vmlinux'), 'boot-source', /JSON object/);
  t.deepEqual(parseBootSource({ kernel_image_path: '/k', initrd_path: null }), { kernel_image_path: '/k' });
});

test('drives: ids, types, enums, vhost-user and rate limiters', (t) => {
  refused(t, () => parseDrive({ drive_id: 'root fs', path_on_host: '/d', is_root_device: true }), 'drive.drive_id', /letters, digits/);
  refused(t, () => parseDrive({ drive_id: 'a', path_on_host: '/d', is_root_device: true }, 'PUT /drives/b', 'b'), 'PUT /drives/b.drive_id', /must match/);
  refused(t, () => parseDrive({ drive_id: 'a', path_on_host: '/d' }), 'drive.is_root_device', /required/);
  refused(t, () => parseDrive({ drive_id: 'a', path_on_host: '/d', is_root_device: 'yes' }), 'drive.is_root_device', /true or false/);
  refused(t, () => parseDrive({ drive_id: 'a', is_root_device: false }), 'drive.path_on_host', /required/);
  refused(t, () => parseDrive({ drive_id: 'a', path_on_host: '/d', is_root_device: false, cache_type: 'None' }), 'drive.cache_type', /Unsafe, Writeback/);
  refused(t, () => parseDrive({ drive_id: 'a', path_on_host: '/d', is_root_device: false, io_engine: 'Uring' }), 'drive.io_engine', /Sync, Async/);
  refused(t, () => parseDrive({ drive_id: 'a', is_root_device: false, socket: '/vhost.sock' }), 'drive.socket', /vhost-user/);
  refused(t, () => parseDrive({ drive_id: 'a', path_on_host: '/d', is_root_device: false, rate_limiter: { bandwidth: { size: 1, refill_time: 100 } } }), 'drive.rate_limiter', /rate limiting is not supported/);
  refused(t, () => parseDrive({ drive_id: 'a', path_on_host: '/d', is_root_device: false, rate_limiter: { burst: 1 } }), 'drive.rate_limiter.burst', /unknown field/);
  t.notThrows(() => parseDrive({ drive_id: 'a', path_on_host: '/d', is_root_device: false, rate_limiter: {} }));
});

test('only one root drive; PUT of an existing drive_id replaces it in place', (t) => {
  const cfg = emptyVmConfig();
  upsertDrive(cfg, parseDrive({ drive_id: 'a', path_on_host: '/a', is_root_device: true }));
  upsertDrive(cfg, parseDrive({ drive_id: 'b', path_on_host: '/b', is_root_device: false }));
  refused(t, () => upsertDrive(cfg, parseDrive({ drive_id: 'b', path_on_host: '/b', is_root_device: true })), 'drive.is_root_device', /"a" is already the root/);
  upsertDrive(cfg, parseDrive({ drive_id: 'a', path_on_host: '/a2', is_root_device: false }));
  t.deepEqual(cfg.drives.map((d) => `${d.drive_id}=${d.path_on_host}`), ['a=/a2', 'b=/b']);
  refused(t, () => parseVmConfigFile({ 'boot-source': { kernel_image_path: '/k' }, drives: [{ drive_id: 'a', path_on_host: '/a', is_root_device: false }, { drive_id: 'a', path_on_host: '/b', is_root_device: false }] }), 'drives[1]', /duplicate id/);
});

test('machine-config: PUT needs vcpu_count and mem_size_mib; PATCH updates; limits and refused features', (t) => {
  refused(t, () => parseMachineConfig({ mem_size_mib: 128 }), 'machine-config.vcpu_count', /required/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1 }), 'machine-config.mem_size_mib', /required/);
  refused(t, () => parseMachineConfig({ vcpu_count: 0, mem_size_mib: 128 }), 'machine-config.vcpu_count', /1 to 32/);
  refused(t, () => parseMachineConfig({ vcpu_count: 33, mem_size_mib: 128 }), 'machine-config.vcpu_count', /1 to 32/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1.5, mem_size_mib: 128 }), 'machine-config.vcpu_count', /integer/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1, mem_size_mib: 129 }), 'machine-config.mem_size_mib', /multiple of 2/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1, mem_size_mib: '128' }), 'machine-config.mem_size_mib', /integer/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, smt: true }), 'machine-config.smt', /SMT/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, track_dirty_pages: true }), 'machine-config.track_dirty_pages', /diff snapshots; flintvm writes full \(sparse\) snapshots only/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, cpu_template: 'T2' }), 'machine-config.cpu_template', /"T2"/);
  refused(t, () => parseMachineConfig({ vcpu_count: 1, mem_size_mib: 128, huge_pages: '2M' }), 'machine-config.huge_pages', /huge-page/);
  const base = parseMachineConfig({ vcpu_count: 2, mem_size_mib: 512 });
  t.deepEqual(parseMachineConfig({ mem_size_mib: 256 }, 'PATCH', base), { ...FC_DEFAULT_MACHINE, vcpu_count: 2, mem_size_mib: 256 });
});

test('network interfaces: MAC format, one TAP and one MAC per interface', (t) => {
  refused(t, () => parseNetworkInterface({ iface_id: 'e', host_dev_name: 't', guest_mac: '06:00:AC:10:00' }), 'network-interface.guest_mac', /MAC address/);
  refused(t, () => parseNetworkInterface({ iface_id: 'e' }), 'network-interface.host_dev_name', /required/);
  refused(t, () => parseNetworkInterface({ iface_id: 'e', host_dev_name: 't', tx_rate_limiter: { ops: { size: 1, refill_time: 1 } } }), 'network-interface.tx_rate_limiter', /not supported/);
  const cfg = emptyVmConfig();
  upsertNetworkInterface(cfg, parseNetworkInterface({ iface_id: 'a', host_dev_name: 'tap0', guest_mac: '06:00:00:00:00:01' }));
  refused(t, () => upsertNetworkInterface(cfg, parseNetworkInterface({ iface_id: 'b', host_dev_name: 'tap0' })), 'network-interface.host_dev_name', /already used/);
  refused(t, () => upsertNetworkInterface(cfg, parseNetworkInterface({ iface_id: 'b', host_dev_name: 'tap1', guest_mac: '06:00:00:00:00:01' })), 'network-interface.guest_mac', /already the MAC/);
  upsertNetworkInterface(cfg, parseNetworkInterface({ iface_id: 'a', host_dev_name: 'tap0', guest_mac: '06:00:00:00:00:01' }));
  t.is(cfg['network-interfaces'].length, 1, 'a PUT of the same iface_id replaces it');
});

test('vsock: guest_cid range and uds_path required; logger: module refused, levels checked', (t) => {
  refused(t, () => parseVsock({ guest_cid: 2, uds_path: '/u' }), 'vsock.guest_cid', /reserved/);
  refused(t, () => parseVsock({ guest_cid: 2 ** 32, uds_path: '/u' }), 'vsock.guest_cid', /4294967295/);
  refused(t, () => parseVsock({ uds_path: '/u' }), 'vsock.guest_cid', /required/);
  refused(t, () => parseVsock({ guest_cid: 3 }), 'vsock.uds_path', /required/);
  refused(t, () => parseLogger({ level: 'Verbose' }), 'logger.level', /Off, Error/);
  refused(t, () => parseLogger({ module: 'api_server' }), 'logger.module', /not supported/);
  refused(t, () => parseEntropy({ rate_limiter: { bandwidth: { size: 1, refill_time: 1 } } }), 'entropy.rate_limiter', /not supported/);
});

test('toMicroVMConfig needs a boot source', (t) => {
  refused(t, () => toMicroVMConfig(emptyVmConfig()), 'boot-source', /PUT \/boot-source/);
});

test('MicroVMConfig field names map back to the Firecracker fields they came from', (t) => {
  const cfg = parseVmConfigFile(GETTING_STARTED);
  t.is(firecrackerFieldName(cfg, 'kernel'), 'boot-source.kernel_image_path');
  t.is(firecrackerFieldName(cfg, 'memoryMiB'), 'machine-config.mem_size_mib');
  // The root drive was moved first: drives[0] is "rootfs", drives[1] is "scratch".
  t.is(firecrackerFieldName(cfg, 'drives[0].path'), 'drives[rootfs].path_on_host');
  t.is(firecrackerFieldName(cfg, 'drives[1]'), 'drives[scratch]');
  t.is(firecrackerFieldName(cfg, 'net[0].mac'), 'network-interfaces[net1].guest_mac');
  t.is(firecrackerFieldName(cfg, 'vsock.guestCid'), 'vsock.guest_cid');
  t.is(firecrackerFieldName(cfg, 'drives[5].path'), 'drives[5].path', 'unknown indexes are left alone');
});
