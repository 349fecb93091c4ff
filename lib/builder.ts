/**
 * The one place that knows every layer: turns a validated MicroVMConfig into
 * a Machine (KVM VM, memory, vCPUs, devices) ready to start. The arch-neutral
 * part lives here (backends, virtio transports, the I/O worker, the console);
 * the host's platform (lib/platform) supplies memory, legacy devices and
 * VM/vCPU setup.
 */
import { readFile } from 'node:fs/promises';
import { Machine } from './machine.js';
import { Kvm } from './kvm/kvm.js';
import type { Vm } from './kvm/vm.js';
import type { ResolvedConfig } from './config.js';
import { ConfigError, IoWorkerError } from './errors.js';
import { ByteRing } from './io/byte-ring.js';
import type { BootTimings } from './microvm.js';
import { log } from './log.js';
import { hostPlatform, type Platform, type VirtioSlot } from './platform/index.js';
import type { DeviceParams } from './wiring.js';
import type { DeviceSpec } from './vcpu/protocol.js';
import { Serial8250 } from '../devices/legacy/serial-8250.js';
import { VIRTIO_MMIO_QUEUE_NOTIFY } from '../devices/virtio/constants.js';
import type { VirtioDeviceInfo } from '../devices/virtio/device.js';
import { TransportState } from '../devices/virtio/transport/state.js';
import { BlockDevice } from '../devices/virtio/block/device.js';
import { RngDevice } from '../devices/virtio/rng/device.js';
import { openDiskImage } from '../devices/virtio/backends/file.js';
import { NetDevice } from '../devices/virtio/net/device.js';
import { openTap } from '../devices/virtio/backends/tap.js';
import { Virtio9pDevice } from '../devices/virtio/9p/device.js';
import { openShareBackend } from '../devices/virtio/9p/index.js';
import { VirtioFsDevice, openFsShareBackend } from '../devices/virtio/fs/index.js';
import { VsockDevice, openVsockBackend } from '../devices/virtio/vsock/index.js';
import { createEventfd, closeFd } from './io/epoll.js';
import { IoWorker } from './io/io-worker.js';
import type { IoWorkerSetup, VirtioDeviceWiring, VirtioParams } from './io-wiring.js';

const debug = log('builder');
const DEVICE_MODULE = new URL('./wiring.js', import.meta.url).href;
const IO_MODULE = new URL('./io-wiring.js', import.meta.url).href;
const CONSOLE_RING_BYTES = 256 * 1024;

/** A built, not yet started VM and the main thread's ends of its devices. */
export interface BuiltVm {
  readonly machine: Machine;
  /** Console output from the guest's UART. */
  readonly ring: ByteRing;
  /** Feeds console input to the UART; returns how many bytes it took. */
  sendInput(bytes: Uint8Array): number;
  /** The VM's I/O worker (null without virtio devices). Internal: tests use it to make the worker die. */
  readonly ioWorker: IoWorker | null;
}

/** The command line the guest gets: the default (or the user's), the devices' and root's parameters, then extras. */
export function effectiveCmdline(cfg: ResolvedConfig, deviceArgs: readonly string[] = [], platform: Platform = hostPlatform()): string {
  return [cfg.cmdline ?? platform.defaultCmdline, ...deviceArgs, cfg.extraCmdline ?? ''].join(' ').trim();
}

/** Host resources a VM's devices hold (image fds, taps, eventfds): closed after the I/O worker has stopped, or on a failed build. */
interface OpenedResources {
  readonly closers: (() => void)[];
  readonly fds: number[];
}

/** A virtio device planned for the VM: what the guest sees and where. */
interface PlannedVirtio {
  readonly info: VirtioDeviceInfo;
  readonly params: VirtioParams;
  readonly slot: VirtioSlot;
  readonly wiring: VirtioDeviceWiring;
}

/**
 * Opens the backends (disk images: their errors are the user's and come
 * before anything touches KVM), makes each device's transport state and
 * eventfds, and says what to add to the command line. `opened` collects what
 * must be closed at the end, also on failure.
 */
function planVirtio(cfg: ResolvedConfig, opened: OpenedResources, platform: Platform): { devices: PlannedVirtio[]; cmdline: string[] } {
  const wanted: { info: VirtioDeviceInfo; params: VirtioParams }[] = [];
  const rootArgs: string[] = [];
  cfg.drives.forEach((d, i) => {
    const img = openDiskImage(d.path, { readOnly: d.readOnly, field: `drives[${i}].path` });
    opened.closers.push(img.close);
    const options = { sizeBytes: img.sizeBytes, readOnly: d.readOnly, serial: d.serial };
    wanted.push({ info: BlockDevice.info(options), params: { kind: 'virtio-blk', fd: img.fd, options } });
    // Drives are probed in command-line order, so drive i is /dev/vd<a+i>.
    if (d.root) rootArgs.push(`root=/dev/vd${String.fromCharCode(97 + i)}`, d.readOnly ? 'ro' : 'rw');
  });
  if (cfg.rng) wanted.push({ info: RngDevice.info(), params: { kind: 'virtio-rng' } });
  cfg.net.forEach((n, i) => {
    const tap = openTap(n, `net[${i}]`);
    opened.closers.push(tap.close);
    wanted.push({ info: NetDevice.info({ mac: tap.params.mac }), params: { kind: 'virtio-net', ...tap.params } });
  });
  if (cfg.vsock) {
    const vsock = openVsockBackend(cfg.vsock, 'vsock');
    opened.closers.push(vsock.close);
    wanted.push({ info: VsockDevice.info(vsock.params), params: { kind: 'virtio-vsock', params: vsock.params } });
  }
  cfg.shares.forEach((s, i) => {
    if (s.protocol === '9p') {
      const share = openShareBackend(s, `shares[${i}]`);
      opened.closers.push(share.close);
      wanted.push({ info: Virtio9pDevice.info({ tag: s.tag }), params: { kind: 'virtio-9p', params: share.params } });
    } else {
      const share = openFsShareBackend(s, `shares[${i}]`);
      opened.closers.push(share.close);
      wanted.push({ info: VirtioFsDevice.info({ tag: s.tag }), params: { kind: 'virtio-fs', params: share.params } });
    }
  });
  const devices = wanted.map((w, i): PlannedVirtio => {
    const slot = platform.virtioSlot(i);
    const fd = () => { const f = createEventfd(); opened.fds.push(f); return f; };
    const wiring: VirtioDeviceWiring = {
      state: TransportState.create(w.info), controlFd: fd(), queueFds: w.info.queueMaxSizes.map(fd), irqFd: fd(), params: w.params,
    };
    return { ...w, slot, wiring };
  });
  const cmdline = [...platform.virtioCmdline(devices.map((d) => d.slot)), ...rootArgs];
  return { devices, cmdline };
}

export async function buildVm(cfg: ResolvedConfig, hooks: { timings: BootTimings; now: () => number }): Promise<BuiltVm> {
  const [kernel, initrd] = await Promise.all([readFile(cfg.kernel), cfg.initrd ? readFile(cfg.initrd) : Promise.resolve(undefined)]);
  const opened: OpenedResources = { closers: [], fds: [] };
  const closeOpened = () => {
    for (const close of opened.closers.splice(0)) close();
    for (const f of opened.fds.splice(0)) closeFd(f);
  };
  try {
    return await buildWith(cfg, kernel, initrd, hooks, opened, closeOpened);
  } catch (e) {
    closeOpened();
    throw e;
  }
}

async function buildWith(
  cfg: ResolvedConfig, kernel: Uint8Array, initrd: Uint8Array | undefined, hooks: { timings: BootTimings; now: () => number },
  opened: OpenedResources, closeOpened: () => void,
): Promise<BuiltVm> {
  const platform = hostPlatform();
  const virtio = planVirtio(cfg, opened, platform);
  const kvm = Kvm.open();
  let maxVcpus: number;
  try {
    maxVcpus = Math.min(kvm.maxVcpus(), platform.maxVcpus);
  } catch (e) {
    kvm.close();
    throw e;
  }
  if (cfg.vcpus > maxVcpus) {
    kvm.close();
    throw new ConfigError('vcpus', `${cfg.vcpus} is more than this host's maximum of ${maxVcpus}`, cfg.vcpus);
  }

  const ring = ByteRing.create(CONSOLE_RING_BYTES);
  const serialState = Serial8250.createState();
  const cmdline = effectiveCmdline(cfg, virtio.cmdline, platform);
  debug('building (%s): %d MiB, %d vCPUs, cmdline %s', platform.arch, cfg.memoryMiB, cfg.vcpus, cmdline);
  const plan = platform.plan({
    cfg, kernel, initrd, cmdline, serialState, consoleOutput: ring.sab,
    virtio: virtio.devices.map((v) => v.slot),
    wireVirtio(vm: Vm) {
      for (const v of virtio.devices) {
        vm.irqfd(v.wiring.irqFd, v.slot.irq);
        // Queue notifications go straight from KVM to the I/O worker's epoll, never through a vCPU worker.
        v.wiring.queueFds.forEach((fd, q) => vm.ioeventfd(v.slot.base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, fd, { datamatch: BigInt(q) }));
      }
    },
    adoptFd: (fd) => { opened.fds.push(fd); },
    mark: (what) => { hooks.timings[what] = hooks.now(); },
  });
  let ioWorker: IoWorker | null = null;
  const params = (p: DeviceParams) => p;
  const devices: DeviceSpec[] = [...plan.devices];
  for (const v of virtio.devices) devices.push({ space: 'mmio', base: v.slot.base, length: v.slot.size, params: params({ kind: 'virtio-mmio', state: v.wiring.state, controlFd: v.wiring.controlFd, queueFds: v.wiring.queueFds }) });

  const machine = await Machine.create({
    memory: plan.memory,
    vcpus: cfg.vcpus,
    devices,
    deviceModule: DEVICE_MODULE,
    ...(cfg.workerPool ? { workerPool: cfg.workerPool } : {}),
    setupVm: (vm, k) => plan.setupVm(vm, k),
    setupVcpus: (ctx) => plan.setupVcpus(ctx),
    async startServices({ memory, fail }) {
      if (virtio.devices.length === 0) return { stop: async () => undefined };
      const data: IoWorkerSetup = { memory: memory.describe(), devices: virtio.devices.map((v) => v.wiring) };
      const io = await IoWorker.start({ module: IO_MODULE, data, ...(cfg.workerPool ? { pool: cfg.workerPool } : {}) });
      // Without a listener a dying worker's 'error' would take the whole process (every VM in it) down.
      // With it, only this VM ends: its devices cannot serve the guest any more.
      io.on('error', (e) => fail(new IoWorkerError(
        `the I/O worker serving this VM's virtio devices died (${e.message}); the VM was stopped`, e)));
      ioWorker = io;
      return { stop: () => io.stop() };
    },
    cleanup: closeOpened,
  }, kvm);
  hooks.timings.workersReady = hooks.now();

  // The main thread's own instance over the UART's shared state, for console input.
  const vmForIrq = machine.vm;
  const inputSerial = new Serial8250(serialState, {
    trigger: {
      trigger: () => {
        // Input can race with the VM's exit; a closed VM fd just means nobody is listening.
        try {
          vmForIrq.irqLine(plan.consoleIrqLine, 1);
          vmForIrq.irqLine(plan.consoleIrqLine, 0);
        } catch (e) {
          debug('console input interrupt dropped: %s', (e as Error).message);
        }
      },
    },
    out: (b) => { ring.write(b); },
  });
  return { machine, ring, ioWorker, sendInput: (b) => (machine.state === 'exited' ? b.length : inputSerial.enqueueInput(b)) };
}
