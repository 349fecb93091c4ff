/**
 * The one place that knows every layer: turns a validated MicroVMConfig into
 * a Machine (KVM VM, memory, vCPUs, devices) ready to start. The arch-neutral
 * part lives here (backends, virtio transports, the I/O worker, the console);
 * the host's platform (lib/vm/platform) supplies memory, legacy devices and
 * VM/vCPU setup.
 */
import { readFile as readFileCallback } from 'node:fs';
import { promisify } from 'node:util';
import { Machine } from '../machine.js';
import { Kvm } from '../kvm/kvm.js';
import type { Vm } from '../kvm/vm.js';
import type { ResolvedConfig } from './config.js';
import { ConfigError, IoWorkerError } from '../errors.js';
import { ByteRing } from '../io/byte-ring.js';
import type { BootTimings } from '../microvm.js';
import { log } from '../log.js';
import { hostPlatform, type Platform, type PlatformState, type VirtioSlot } from './platform/index.js';
import type { DeviceParams } from './wiring.js';
import type { DeviceSpec } from '../vcpu/protocol.js';
import { Serial8250 } from '../../devices/legacy/serial-8250.js';
import { VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_QUEUE_NOTIFY } from '../../devices/virtio/constants.js';
import type { VirtioDeviceInfo } from '../../devices/virtio/device.js';
import { resetPending, restoreTransport, saveTransport, TransportState, type SavedTransport } from '../../devices/virtio/transport/state.js';
import { SnapshotError, SnapshotStateError } from '../errors.js';
import { signalEventfd } from '../io/epoll.js';
import type { SavedMemoryStats } from '../memory/host-memory.js';
import { createEventfd, closeFd } from '../io/epoll.js';
import { IoWorker } from '../io/io-worker.js';
import { vcpuStandbyPool, type WorkerPool } from '../worker-pool.js';
import type { DeviceStateMessage, IoWorkerSetup, SavedVirtioDevice, VirtioDeviceWiring } from './io-wiring.js';
import { configuredDevices, loadConfiguredDevices, type ConfiguredDevice } from './registry.js';
import { installRegisterPages, mapRegisterPages, type RegisterPages } from './register-pages.js';

/** fs.readFile as a promise, without node:fs/promises, which costs 1-1.5 ms of a cold start to load. */
const readFile = promisify(readFileCallback);

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
  /**
   * Captures the machine for a snapshot (the machine must be paused): every
   * device's state, then the KVM state, then guest RAM into `memoryFd` (an
   * empty file). Throws SnapshotError naming a device that cannot be saved,
   * before anything is written.
   */
  capture(memoryFd: number): Promise<{ machine: MachineSnapshot; memory: SavedMemoryStats }>;
}

/**
 * Everything of a VM's machine a snapshot holds besides guest RAM and the
 * config: the KVM state, each bus device's shared state, and each virtio
 * device's transport registers and I/O-side state, in slot order.
 */
export interface MachineSnapshot {
  readonly platform: PlatformState;
  /** One per bus device of the platform, in its order: the kind and its shared state as base64 ('' when it has none). */
  readonly legacy: readonly { readonly kind: string; readonly state: string }[];
  readonly virtio: readonly { readonly kind: string; readonly field: string; readonly transport: SavedTransport; readonly io: SavedVirtioDevice }[];
}

/** A VM to build from a snapshot instead of a kernel: its machine state and its memory file. */
export interface RestoreInput {
  readonly machine: MachineSnapshot;
  /** An open fd of the memory file (the caller closes it after buildVm returns or throws). */
  readonly memoryFd: number;
  /** How to name the memory file in errors. */
  readonly memoryWhat: string;
}

/** How long capture() waits for the I/O worker's device states. */
const DEVICE_STATE_TIMEOUT_MS = 10_000;

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
  /** The main thread's view of its transport (with the register page). */
  readonly transport: TransportState;
}

/**
 * Opens every configured virtio device through its kind in the registry
 * (disk images, taps, sockets and share roots: their errors are the user's and
 * come before anything touches KVM), makes each device's transport state and
 * eventfds, and says what to add to the command line. `opened` collects what
 * must be closed at the end, also on failure.
 */
function planVirtio(
  cfg: ResolvedConfig, configured: readonly ConfiguredDevice[], opened: OpenedResources, platform: Platform, restore?: RestoreInput,
): { devices: PlannedVirtio[]; cmdline: string[]; pages: RegisterPages | null } {
  const devices: PlannedVirtio[] = [];
  // Every transport keeps its readable registers in a register page too; the platform decides whether the guest reads them there.
  const pages = configured.length ? mapRegisterPages(configured.length) : null;
  if (pages) opened.closers.push(() => pages.unmap());
  const deviceArgs: string[] = [];
  const saved = restore?.machine.virtio;
  if (saved && (!Array.isArray(saved) || saved.length !== configured.length)) {
    throw new SnapshotStateError('virtio', `the snapshot has ${Array.isArray(saved) ? saved.length : 'no list of'} virtio devices; its config has ${configured.length}`);
  }
  for (const [i, d] of configured.entries()) {
    const slot = platform.virtioSlot(i);
    const dev = d.kind.open(d.entry, { field: d.field, index: d.index, slot: i });
    opened.closers.push(dev.close);
    deviceArgs.push(...(dev.cmdline ?? []));
    const fd = () => { const f = createEventfd(); opened.fds.push(f); return f; };
    const state = TransportState.create(dev.info, { registerPage: true });
    const transport = new TransportState(state, pages!.view(i));
    const was = saved?.[i];
    if (saved) {
      if (was?.kind !== d.kind.name) throw new SnapshotStateError(`virtio[${i}].kind`, `the snapshot has ${JSON.stringify(was?.kind)} where its config has ${d.kind.name} (${d.field})`);
      restoreTransport(transport, was.transport, `virtio[${i}].transport`);
    } else {
      transport.publish();
    }
    const wiring: VirtioDeviceWiring = {
      state, registers: pages!.address(i), controlFd: fd(), queueFds: dev.info.queueMaxSizes.map(fd), irqFd: fd(), ackFd: fd(),
      kind: d.kind.name, params: dev.params, ...(was ? { restore: was.io } : {}),
    };
    devices.push({ info: dev.info, slot, wiring, transport });
  }
  const cmdline = [...platform.virtioCmdline(devices.map((d) => d.slot)), ...deviceArgs];
  return { devices, cmdline, pages };
}

/**
 * Builds the VM of `cfg`: from its kernel, or, with `restore`, from a
 * snapshot's machine state and memory file (the kernel is not read; guest
 * RAM is the file, mapped private).
 */
export async function buildVm(cfg: ResolvedConfig, hooks: { timings: BootTimings; now: () => number }, restore?: RestoreInput): Promise<BuiltVm> {
  // A VM without a pool of its own starts its first vCPU worker now, before the kernel is read and the VM is
  // made: a worker's start is the longest step of a start(). Its one-standby pool is closed once the VM has
  // its workers (or has failed: close() lets a standby that is still starting finish first).
  const own = cfg.workerPool ? undefined : vcpuStandbyPool();
  const pool = cfg.workerPool ?? own;
  try {
    const [kernel, initrd] = restore
      ? [new Uint8Array(0), undefined]
      : await Promise.all([readFile(cfg.kernel), cfg.initrd ? readFile(cfg.initrd) : Promise.resolve(undefined)]);
    const opened: OpenedResources = { closers: [], fds: [] };
    const closeOpened = () => {
      for (const close of opened.closers.splice(0)) close();
      for (const f of opened.fds.splice(0)) closeFd(f);
    };
    try {
      return await buildWith(cfg, pool, kernel, initrd, hooks, opened, closeOpened, restore);
    } catch (e) {
      closeOpened();
      throw e;
    }
  } finally {
    await own?.close();
  }
}

async function buildWith(
  cfg: ResolvedConfig, pool: WorkerPool | undefined, kernel: Uint8Array, initrd: Uint8Array | undefined, hooks: { timings: BootTimings; now: () => number },
  opened: OpenedResources, closeOpened: () => void, restore: RestoreInput | undefined,
): Promise<BuiltVm> {
  const platform = hostPlatform();
  if (restore && restore.machine.platform?.arch !== platform.arch) {
    throw new SnapshotStateError('platform.arch', `the snapshot is of an ${String(restore.machine.platform?.arch)} guest; this host runs ${platform.arch} guests`);
  }
  const virtio = planVirtio(cfg, await loadConfiguredDevices(cfg), opened, platform, restore);
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
    async wireVirtio(vm: Vm) {
      for (const v of virtio.devices) {
        await vm.irqfd(v.wiring.irqFd, v.slot.irq);
        // Queue notifications go straight from KVM to the I/O worker's epoll, never through a vCPU worker.
        for (const [q, fd] of v.wiring.queueFds.entries()) await vm.ioeventfd(v.slot.base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, fd, { datamatch: BigInt(q) });
        // The driver's ack of a used-buffer interrupt (Linux writes back the InterruptStatus it read, 1 unless the
        // config changed too) stays in KVM: the I/O worker applies it before its next interrupt (VirtioMmioSlot).
        if (v.wiring.ackFd !== undefined) await vm.ioeventfd(v.slot.base + VIRTIO_MMIO_INTERRUPT_ACK, 4, v.wiring.ackFd, { datamatch: BigInt(VIRTIO_MMIO_INT_VRING) });
      }
      if (virtio.pages && platform.registerPagesInGuest) {
        const installed = await installRegisterPages(vm, virtio.pages, virtio.devices.map((v) => v.slot.base));
        debug('virtio register reads: %s', installed ? 'from a read-only memory slot' : 'exit (no KVM_CAP_READONLY_MEM)');
      }
    },
    adoptFd: (fd) => { opened.fds.push(fd); },
    mark: (what) => { hooks.timings[what] = hooks.now(); },
    ...(restore ? { restore: restore.machine.platform } : {}),
  });
  if (restore) restoreLegacy(plan.devices, restore.machine.legacy);
  const saveFd = createEventfd();
  opened.fds.push(saveFd);
  const saveHold = new Int32Array(new SharedArrayBuffer(4));
  let ioWorker: IoWorker | null = null;
  const params = (p: DeviceParams) => p;
  const devices: DeviceSpec[] = [...plan.devices];
  for (const v of virtio.devices) devices.push({ space: 'mmio', base: v.slot.base, length: v.slot.size, params: params({ kind: 'virtio-mmio', state: v.wiring.state, registers: v.wiring.registers, controlFd: v.wiring.controlFd, queueFds: v.wiring.queueFds }) });

  const machine = await Machine.create({
    memory: plan.memory,
    ...(restore ? { memorySource: { kind: 'file' as const, fd: restore.memoryFd, what: restore.memoryWhat } } : {}),
    vcpus: cfg.vcpus,
    vcpuNice: cfg.vcpuNice,
    devices,
    deviceModule: DEVICE_MODULE,
    ...(pool ? { workerPool: pool } : {}),
    setupVm: (vm, k) => plan.setupVm(vm, k),
    servicesEarly: !restore,
    slotsDuringSetup: !restore,
    setupVcpus: (ctx) => plan.setupVcpus(ctx),
    async startServices({ memory, fail }) {
      if (virtio.devices.length === 0) return { stop: async () => undefined };
      const data: IoWorkerSetup = { memory: memory.describe(), devices: virtio.devices.map((v) => v.wiring), saveFd, saveHold: saveHold.buffer as SharedArrayBuffer };
      let io: IoWorker;
      try {
        io = await IoWorker.start({ module: IO_MODULE, data, ...(pool ? { pool } : {}) });
      } catch (e) {
        // A restored device whose saved queues or state do not fit: the snapshot's fault, not the worker's.
        if (restore && e instanceof IoWorkerError) throw new SnapshotStateError('virtio', e.message.replace(/^I\/O worker failed: /, ''));
        throw e;
      }
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
  const lines = machine.irqLines;
  const inputSerial = new Serial8250(serialState, {
    trigger: {
      trigger: () => {
        // Input can race with the VM's exit; a closed VM fd just means nobody is listening.
        try {
          lines.pulse(plan.consoleIrqLine);
        } catch (e) {
          debug('console input interrupt dropped: %s', (e as Error).message);
        }
      },
    },
    out: (b) => { ring.write(b); },
  });
  const capture = async (memoryFd: number) => {
    if (machine.state !== 'paused') throw new SnapshotError(`a snapshot needs a paused VM; it is ${machine.state}`);
    const cannot = configuredDevices(cfg).filter((d) => !d.kind.saveState).map((d) => `${d.field} (${d.kind.name})`);
    if (cannot.length) throw new SnapshotError(`these devices cannot be snapshotted yet: ${cannot.join(', ')}`);
    const resetting = virtio.devices.findIndex((v) => resetPending(v.transport));
    if (resetting >= 0) throw new SnapshotError(`virtio device ${resetting} (${virtio.devices[resetting]!.wiring.kind}) is in the middle of a reset; try again`);
    // The I/O worker answers, then holds still (no device activity) until everything else is saved.
    Atomics.store(saveHold, 0, 1);
    try {
      const io = ioWorker ? await deviceStates(ioWorker, saveFd) : [];
      const fields = configuredDevices(cfg).map((d) => d.field);
      const snapshot: MachineSnapshot = {
        platform: plan.saveState({ kvm: machine.kvm, vm: machine.vm, vcpus: machine.vcpus }),
        legacy: saveLegacy(plan.devices),
        virtio: virtio.devices.map((v, i) => ({ kind: v.wiring.kind, field: fields[i]!, transport: saveTransport(v.transport), io: io[i]! })),
      };
      const memory = machine.saveMemory(memoryFd);
      return { machine: snapshot, memory };
    } finally {
      Atomics.store(saveHold, 0, 0);
      Atomics.notify(saveHold, 0);
    }
  };
  return { machine, ring, ioWorker, capture, sendInput: (b) => (machine.state === 'exited' ? b.length : inputSerial.enqueueInput(b)) };
}

/** Asks the I/O worker for every device's state (it answers between two loop turns) and waits for the answer. */
function deviceStates(io: IoWorker, saveFd: number): Promise<readonly SavedVirtioDevice[]> {
  return new Promise((resolve, reject) => {
    const done = (f: () => void) => { clearTimeout(timer); io.off('message', onMessage); io.off('exit', onExit); f(); };
    const onMessage = (m: unknown) => {
      const msg = m as DeviceStateMessage;
      if (msg?.type === 'device-state') done(() => resolve(msg.devices));
      else if (msg?.type === 'device-state-error') done(() => reject(new SnapshotError(`saving the virtio devices failed: ${msg.message}`)));
    };
    const onExit = () => done(() => reject(new SnapshotError('the I/O worker exited while saving the virtio devices')));
    const timer = setTimeout(() => done(() => reject(new SnapshotError(`the I/O worker did not answer with the devices' state within ${DEVICE_STATE_TIMEOUT_MS} ms`))), DEVICE_STATE_TIMEOUT_MS);
    io.on('message', onMessage);
    io.on('exit', onExit);
    signalEventfd(saveFd);
  });
}

/** The shared state of each bus device (UART, i8042, RTC), base64, in plan order. */
function saveLegacy(devices: readonly DeviceSpec[]): MachineSnapshot['legacy'] {
  return devices.map((d) => {
    const p = d.params as DeviceParams;
    const state = 'state' in p ? Buffer.from(new Uint8Array(p.state)).toString('base64') : '';
    return { kind: p.kind, state };
  });
}

/** Writes saved bus-device states into the new devices' shared buffers (before any worker exists). Checks kinds and sizes. */
function restoreLegacy(devices: readonly DeviceSpec[], saved: unknown): void {
  if (!Array.isArray(saved) || saved.length !== devices.length) throw new SnapshotStateError('legacy', `expected ${devices.length} bus devices, got ${Array.isArray(saved) ? saved.length : typeof saved}`);
  devices.forEach((d, i) => {
    const p = d.params as DeviceParams;
    const s = saved[i] as { kind?: unknown; state?: unknown } | null;
    if (s?.kind !== p.kind) throw new SnapshotStateError(`legacy[${i}].kind`, `expected ${p.kind}, got ${JSON.stringify(s?.kind)}`);
    if (!('state' in p)) return;
    const bytes = typeof s.state === 'string' ? Buffer.from(s.state, 'base64') : null;
    if (!bytes || bytes.length !== p.state.byteLength) throw new SnapshotStateError(`legacy[${i}].state`, `expected ${p.state.byteLength} bytes of base64 for ${p.kind}`);
    new Uint8Array(p.state).set(bytes);
  });
}
