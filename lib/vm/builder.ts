/**
 * The one place that knows every layer: turns a validated MicroVMConfig into
 * a Machine (KVM VM, memory, vCPUs, devices) ready to start. The arch-neutral
 * part lives here (backends, virtio transports, the I/O worker, the console);
 * the host's platform (lib/vm/platform) supplies memory, legacy devices and
 * VM/vCPU setup.
 */
import { readFile } from 'node:fs/promises';
import { Machine } from '../machine.js';
import { Kvm } from '../kvm/kvm.js';
import type { Vm } from '../kvm/vm.js';
import type { ResolvedConfig } from './config.js';
import { ConfigError, IoWorkerError } from '../errors.js';
import { ByteRing } from '../io/byte-ring.js';
import type { BootTimings } from '../microvm.js';
import { log } from '../log.js';
import { hostPlatform, type Platform, type VirtioSlot } from './platform/index.js';
import type { DeviceParams } from './wiring.js';
import type { DeviceSpec } from '../vcpu/protocol.js';
import { Serial8250 } from '../../devices/legacy/serial-8250.js';
import { VIRTIO_MMIO_QUEUE_NOTIFY } from '../../devices/virtio/constants.js';
import type { VirtioDeviceInfo } from '../../devices/virtio/device.js';
import { TransportState } from '../../devices/virtio/transport/state.js';
import { createEventfd, closeFd } from '../io/epoll.js';
import { IoWorker } from '../io/io-worker.js';
import type { IoWorkerSetup, VirtioDeviceWiring } from './io-wiring.js';
import { configuredDevices } from './registry.js';

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
  readonly slot: VirtioSlot;
  readonly wiring: VirtioDeviceWiring;
}

/**
 * Opens every configured virtio device through its kind in the registry
 * (disk images, taps, sockets and share roots: their errors are the user's and
 * come before anything touches KVM), makes each device's transport state and
 * eventfds, and says what to add to the command line. `opened` collects what
 * must be closed at the end, also on failure.
 */
function planVirtio(cfg: ResolvedConfig, opened: OpenedResources, platform: Platform): { devices: PlannedVirtio[]; cmdline: string[] } {
  const devices: PlannedVirtio[] = [];
  const deviceArgs: string[] = [];
  for (const [i, d] of configuredDevices(cfg).entries()) {
    const slot = platform.virtioSlot(i);
    const dev = d.kind.open(d.entry, { field: d.field, index: d.index, slot: i });
    opened.closers.push(dev.close);
    deviceArgs.push(...(dev.cmdline ?? []));
    const fd = () => { const f = createEventfd(); opened.fds.push(f); return f; };
    const wiring: VirtioDeviceWiring = {
      state: TransportState.create(dev.info), controlFd: fd(), queueFds: dev.info.queueMaxSizes.map(fd), irqFd: fd(),
      kind: d.kind.name, params: dev.params,
    };
    devices.push({ info: dev.info, slot, wiring });
  }
  const cmdline = [...platform.virtioCmdline(devices.map((d) => d.slot)), ...deviceArgs];
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
