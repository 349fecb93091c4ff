import { EventEmitter } from 'node:events';
import { Kvm } from './kvm/kvm.js';
import type { Vm } from './kvm/vm.js';
import type { Vcpu } from './kvm/vcpu.js';
import { mapGuestMemory, saveGuestMemory, type HostGuestMemory, type MemorySource, type SavedMemoryStats } from './memory/host-memory.js';
import type { GuestMemory } from './memory/guest-memory.js';
import { VcpuHandle } from './vcpu/handle.js';
import { IrqLines } from './interrupt/line.js';
import type { WorkerPool } from './worker-pool.js';
import type { DeviceEvent, DeviceSpec, ExitInfo } from './vcpu/protocol.js';
import { StateError } from './errors.js';
import { log } from './log.js';
import { epochOffsetMs } from './sys.js';

const debug = log('machine');

/** What a machine is built from. The arch-specific parts come in as callbacks. */
export interface MachineSpec {
  /** Guest RAM ranges (page-aligned). */
  readonly memory: ReadonlyArray<{ gpa: number; size: number }>;
  /** Where guest RAM comes from: anonymous memory (default) or a snapshot's memory file, mapped private. */
  readonly memorySource?: MemorySource;
  readonly vcpus: number;
  /** Devices every vCPU worker maps on its buses. */
  readonly devices: readonly DeviceSpec[];
  /** Module URL exporting the device factory (see lib/vcpu/protocol.ts). */
  readonly deviceModule: string;
  /** Where vCPU workers come from when it has them ready (see WorkerPool). */
  readonly workerPool?: WorkerPool;
  /** Nice steps each vCPU thread lowers its priority by (MicroVMConfig.vcpuNice); 0 or absent: none. */
  readonly vcpuNice?: number;
  /** VM-wide setup before memory and vCPUs exist (irqchip, TSS…). */
  setupVm?(vm: Vm, kvm: Kvm): void | Promise<void>;
  /**
   * Loads images and sets every vCPU's registers. Runs after memory and the vCPUs exist (and its slots, but
   * with `slotsDuringSetup`, while they are being installed), while the vCPU workers are starting (they touch
   * no vCPU before start() lets them run).
   */
  setupVcpus(ctx: { kvm: Kvm; vm: Vm; memory: GuestMemory; vcpus: readonly Vcpu[] }): void | Promise<void>;
  /**
   * Starts helpers that serve the guest (the I/O worker). Runs after setupVcpus
   * (before it with `servicesEarly`), before any vCPU runs; the returned service is stopped after every vCPU
   * worker has stopped and before guest memory is unmapped. A service that
   * dies later calls `fail`: the machine then ends with reason 'error' and
   * that error as {@link Machine.failure}, and releases everything.
   */
  startServices?(ctx: { vm: Vm; memory: GuestMemory; fail: (error: Error) => void }): Promise<MachineService>;
  /**
   * Start the services with the vCPU workers, before the memory slots and setupVcpus, so that their
   * start overlaps the kernel's load too. Only for a fresh boot: there no device has state that could
   * signal an interrupt that early, where a restored device may, and a restore of the interrupt
   * controller's state in setupVcpus would overwrite it.
   */
  readonly servicesEarly?: boolean;
  /**
   * Install the memory slots while setupVcpus runs, not before it: each slot's ioctl waits in the kernel
   * for an SRCU grace period (7 ms on the nested kvm_pvm here), on a pool thread, which the kernel's load
   * and the registers' set-up then overlap. Only for a fresh boot, whose set-up has KVM look at no guest
   * address (its long-mode page tables need no PDPTR load); a restore's MSRs (kvmclock's among them) name
   * guest addresses, so there the slots come first.
   */
  readonly slotsDuringSetup?: boolean;
  /** Last step of release, after memory is unmapped: close fds that devices used. Also called when create() fails. */
  cleanup?(): void;
}

/** Something that runs beside the vCPUs for the machine's lifetime. */
export interface MachineService {
  stop(): Promise<void>;
}

export type MachineState = 'created' | 'running' | 'paused' | 'exited';

export interface MachineEvents {
  state: [MachineState];
  exit: [ExitInfo];
  'device-event': [DeviceEvent];
  'first-run': [number];
}

/**
 * A running KVM virtual machine: the KVM fds, guest memory and one worker per
 * vCPU, and nothing arch- or device-specific. Main thread only.
 * Every resource is released when the machine ends (guest exit or stop());
 * `create` releases what it built if any step fails.
 */
export class Machine extends EventEmitter<MachineEvents> {
  private stateValue: MachineState = 'created';
  private exitInfo: ExitInfo | null = null;
  private readonly exitPromise: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;
  private releasing: Promise<void> | null = null;
  private failureValue: Error | null = null;

  /** Pulses the VM's interrupt lines from the main thread, in step with the vCPU workers (see lib/interrupt/line.ts). */
  readonly irqLines: IrqLines;

  private constructor(
    /** The /dev/kvm handle this machine owns (closed on release). */
    readonly kvm: Kvm,
    readonly vm: Vm,
    irqLock: SharedArrayBuffer,
    private readonly hostMemory: HostGuestMemory,
    private readonly handles: VcpuHandle[],
    private readonly service: MachineService | null,
    private readonly cleanup: (() => void) | undefined,
  ) {
    super();
    this.irqLines = new IrqLines(vm, irqLock);
    this.exitPromise = new Promise((r) => { this.resolveExit = r; });
    for (const h of handles) {
      h.on('exit', (e) => this.onVcpuExit(e));
      h.on('device-event', (e) => this.emit('device-event', e));
      h.on('first-run', (t) => { if (h.vcpu.id === 0) this.emit('first-run', t); });
    }
  }

  /** Guest RAM. Only while the machine has not been released: its views die with the mapping. */
  get memory(): GuestMemory {
    if (this.releasing) throw new StateError('guest memory is released once the machine has exited');
    return this.hostMemory.memory;
  }

  get state(): MachineState {
    return this.stateValue;
  }

  /** The vCPUs, in id order (their fds; the workers run them). Only while the machine has not been released. */
  get vcpus(): readonly Vcpu[] {
    if (this.releasing) throw new StateError('the vCPUs are released once the machine has exited');
    return this.handles.map((h) => h.vcpu);
  }

  /**
   * Writes guest RAM to `fd` (an empty file), sparse (see saveGuestMemory).
   * Only while paused: every vCPU is parked outside KVM_RUN.
   */
  saveMemory(fd: number): SavedMemoryStats {
    if (this.stateValue !== 'paused') throw new StateError(`saving guest memory needs a paused machine, it is ${this.stateValue}`);
    return saveGuestMemory(this.hostMemory, fd);
  }

  /** The host-side error that ended the machine (a service that died), or null. */
  get failure(): Error | null {
    return this.failureValue;
  }

  /** Builds the VM, maps memory, creates and configures vCPUs and spawns their workers (not yet running). */
  static async create(spec: MachineSpec, kvm: Kvm = Kvm.open()): Promise<Machine> {
    let vm: Vm | null = null;
    let mem: HostGuestMemory | null = null;
    const handles: VcpuHandle[] = [];
    let service: MachineService | null = null;
    let servicesStarting: Promise<MachineService | null> | null = null;
    let slotsInstalling: Promise<void> | null = null;
    const irqLock = IrqLines.createLock();
    // A service may die before the Machine exists to hear it: keep the first error until then.
    let machine: Machine | null = null;
    let earlyFailure: Error | null = null;
    const fail = (error: Error) => {
      if (machine) machine.serviceFailed(error);
      else earlyFailure ??= error;
    };
    try {
      vm = kvm.createVm();
      await spec.setupVm?.(vm, kvm);
      mem = mapGuestMemory(spec.memory, spec.memorySource);
      const vcpus: Vcpu[] = [];
      for (let i = 0; i < spec.vcpus; i++) vcpus.push(vm.createVcpu(i));
      for (const v of vcpus) handles.push(new VcpuHandle(v));
      const common = { vmFd: vm.fd, irqLock, memory: mem.memory.describe(), devices: spec.devices, deviceModule: spec.deviceModule, niceIncrement: spec.vcpuNice ?? 0, epochOffsetMs: epochOffsetMs() };
      // A worker's start is the longest step of a start(), so the vCPU workers start first and boot
      // while this thread installs the memory slots and sets up the vCPUs (the kernel's load, or a
      // snapshot's state). A worker only builds its bus devices before it is ready and makes no vCPU
      // ioctl before start() lets it run, so nothing it does depends on that set-up.
      const spawning = Promise.all(handles.map((h) => h.spawn(common, spec.workerPool)));
      // Settled below; if the set-up fails first, the catch stops the workers and this rejects unheard.
      spawning.catch(() => undefined);
      const memory = mem.memory;
      const startServices = () => (spec.startServices ? spec.startServices({ vm: vm!, memory, fail }) : Promise.resolve(null));
      if (spec.servicesEarly) {
        servicesStarting = startServices();
        servicesStarting.catch(() => undefined);
      }
      const regions = [...mem.memory.regions.entries()];
      slotsInstalling = (async () => {
        for (const [slot, r] of regions) await vm!.setUserMemoryRegion(slot, r.gpa, r.size, r.hostAddr);
      })();
      // Awaited below (or by the catch); a failure while setupVcpus runs must not count as unhandled meanwhile.
      slotsInstalling.catch(() => undefined);
      if (!spec.slotsDuringSetup) await slotsInstalling;
      await spec.setupVcpus({ kvm, vm, memory: mem.memory, vcpus });
      await slotsInstalling;
      // Without `servicesEarly` (a restore) the services (the I/O worker) start only now: a restored
      // device may signal an interrupt at once, which the restore of the interrupt controller's state
      // above must not overwrite. Either start failing fails the whole create, after both have
      // settled, so nothing is left half-started.
      servicesStarting ??= startServices();
      const [spawned, started] = await Promise.allSettled([spawning, servicesStarting]);
      if (started.status === 'fulfilled') service = started.value;
      if (spawned.status === 'rejected') throw spawned.reason;
      if (started.status === 'rejected') throw started.reason;
      machine = new Machine(kvm, vm, irqLock, mem, handles, service, spec.cleanup);
      if (earlyFailure) machine.serviceFailed(earlyFailure);
      return machine;
    } catch (e) {
      // A slot ioctl still in flight on a pool thread finishes before the VM fd closes and the memory goes.
      await slotsInstalling?.catch(() => undefined);
      await Promise.allSettled(handles.map((h) => h.stop()));
      // Services started early may still be starting when the set-up fails: stop them once they are up.
      if (!service && servicesStarting) service = await servicesStarting.catch(() => null);
      await service?.stop().catch(() => undefined);
      vm?.close();
      mem?.unmap();
      kvm.close();
      spec.cleanup?.();
      throw e;
    }
  }

  private setState(s: MachineState): void {
    if (this.stateValue === s) return;
    this.stateValue = s;
    debug('state %s', s);
    this.emit('state', s);
  }

  /** Lets every vCPU run; with `paused`, the vCPUs start parked (resume() lets them run). */
  start(opts: { paused?: boolean } = {}): void {
    if (this.stateValue !== 'created') throw new StateError(`start() needs a created machine, it is ${this.stateValue}`);
    for (const h of this.handles) h.start(opts.paused ?? false);
    this.setState(opts.paused ? 'paused' : 'running');
  }

  async pause(): Promise<void> {
    if (this.stateValue !== 'running') throw new StateError(`pause() needs a running machine, it is ${this.stateValue}`);
    await Promise.all(this.handles.map((h) => h.pause()));
    if (this.stateValue === 'running') this.setState('paused');
  }

  resume(): void {
    if (this.stateValue !== 'paused') throw new StateError(`resume() needs a paused machine, it is ${this.stateValue}`);
    for (const h of this.handles) h.resume();
    this.setState('running');
  }

  /** Resolves with the first exit of any vCPU (or the host's stop). */
  wait(): Promise<ExitInfo> {
    return this.exitPromise;
  }

  /** Stops every vCPU and releases all resources. Idempotent; resolves when everything is released. */
  async stop(): Promise<ExitInfo> {
    this.finish({ reason: 'stopped', vcpu: -1 });
    await this.release();
    return this.exitPromise;
  }

  /**
   * A service (the I/O worker) died: the guest's devices are gone, so the
   * machine ends with reason 'error' (vCPU workers kicked and ended, fds
   * closed, memory unmapped). Ignored once the machine is already ending.
   */
  private serviceFailed(error: Error): void {
    if (this.exitInfo) return void debug('service failed while the machine was ending: %s', error.message);
    debug('service failed: %s', error.message);
    this.failureValue = error;
    const code = (error as { code?: unknown }).code;
    this.finish({ reason: 'error', vcpu: -1, detail: { message: error.message, ...(typeof code === 'string' ? { code } : {}) } });
    void this.release();
  }

  private onVcpuExit(e: ExitInfo): void {
    if (this.exitInfo) return;
    debug('vcpu %d exit: %s', e.vcpu, e.reason);
    this.finish(e);
    void this.release();
  }

  private finish(e: ExitInfo): void {
    if (this.exitInfo) return;
    this.exitInfo = e;
    this.resolveExit(e);
  }

  /** Tears down in dependency order: workers (they hold views of memory and the run pages), then fds, then memory. */
  private release(): Promise<void> {
    this.releasing ??= (async () => {
      await Promise.allSettled(this.handles.map((h) => h.stop()));
      this.noteForcedStops();
      await this.service?.stop().catch((e: unknown) => debug('service stop failed: %s', (e as Error).message));
      await this.vm.closeOnPool();
      this.hostMemory.unmap();
      this.kvm.close();
      this.cleanup?.();
      this.setState('exited');
      this.emit('exit', this.exitInfo!);
    })();
    return this.releasing;
  }

  /**
   * A stop() that had to terminate stuck vCPU workers says so in the exit it
   * resolves with (`detail.forced`, `detail.message`): the exit is read by
   * MicroVM only after the release, so the note reaches users too.
   */
  private noteForcedStops(): void {
    const stuck = this.handles.filter((h) => h.forcedStop).map((h) => h.vcpu.id);
    if (!stuck.length || !this.exitInfo) return;
    const message = `vCPU ${stuck.join(', ')} did not stop in time; the worker${stuck.length > 1 ? 's were' : ' was'} terminated`;
    (this.exitInfo as { detail?: ExitInfo['detail'] }).detail = { ...this.exitInfo.detail, forced: 1, message };
  }

  /** Resolves once every resource is released (after an exit or stop()). */
  async released(): Promise<void> {
    await this.exitPromise;
    await this.release();
  }
}
