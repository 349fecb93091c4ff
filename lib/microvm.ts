import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { resolveConfig, type MicroVMConfig, type ResolvedConfig } from './vm/config.js';
import { buildVm, type BuiltVm, type MachineSnapshot, type RestoreInput } from './vm/builder.js';
import { readSnapshot, restoredConfig, writeSnapshot, SNAPSHOT_VERSION, type RestoreOverrides, type SnapshotConfig, type SnapshotLocation } from './vm/snapshot.js';
import { closeSync } from 'node:fs';
import * as ffi from './kvm/ffi.js';
import { HostError } from './errors.js';
import { flintvmVersion } from './version.js';
import { describeDevices } from './vm/registry.js';
import type { ExitInfo, ExitReason } from './vcpu/protocol.js';
import { StateError } from './errors.js';
import { log } from './log.js';

const debug = log('microvm');

/** A MicroVM's life cycle: new -> starting -> running (<-> paused) -> stopping -> exited. */
export type MicroVMState = 'new' | 'starting' | 'running' | 'paused' | 'stopping' | 'exited';

/** Wall-clock timestamps (ms, `performance.timeOrigin`-based) of one VM's life; absent if it did not happen. */
export interface BootTimings {
  startCalled?: number;
  vmReady?: number; // VM, memory and vCPUs exist
  kernelLoaded?: number; // images loaded, registers set
  workersReady?: number; // vCPU workers spawned and waiting
  firstRun?: number; // vCPU 0 entered KVM_RUN
  guestInit?: number; // the guest's init wrote the boot timer
  exited?: number; // the exit was reported
  released?: number; // every fd, mapping and worker released
}

/** How the VM ended, as `wait()` reports it. */
export interface VmExit extends ExitInfo {
  /** For `reason === 'guest-exit'`: the exit status of the command the guest ran. */
  readonly exitStatus?: number;
  /**
   * For `reason === 'error'` from the host side: the cause, with a stable
   * `code` (e.g. `FLINTVM_E_IO_WORKER` when the I/O worker died while the VM
   * ran, or the error start() threw).
   */
  readonly error?: Error;
  readonly timings: BootTimings;
}

/** Events a {@link MicroVM} emits, with their arguments. */
export interface MicroVMEvents {
  state: [MicroVMState];
  exit: [VmExit];
  /** The guest's init signalled the boot timer (ms timestamp). */
  'guest-init': [number];
}

const now = () => performance.timeOrigin + performance.now();

/** What {@link MicroVM.snapshot} wrote. */
export interface SnapshotInfo {
  /** Where it was written (the directory, or the state and memory files). */
  readonly where: SnapshotLocation;
  /** Snapshot format version (state.json's `version`). */
  readonly version: number;
  /** Guest RAM in bytes (the memory file's length) and the bytes written (the rest are holes). */
  readonly memoryBytes: number;
  readonly memoryWritten: number;
  /** Wall-clock time of the snapshot call, ms (including the pause and resume it did itself). */
  readonly ms: number;
}

/** Options of {@link MicroVM.restore} and {@link MicroVM.clone}. */
export interface RestoreOptions {
  /** Leave the restored VM paused (its vCPUs parked before running any guest code); resume() runs it. Default false. */
  readonly paused?: boolean;
}

/** {@link MicroVM.describe}'s answer. */
export interface VmDescription {
  readonly state: MicroVMState;
  readonly memoryMiB: number;
  readonly vcpus: number;
  /** One per virtio device, in slot order: `kind` ('virtio-blk'...), `field` (`drives[0]`...) and the kind's own description. */
  readonly devices: readonly { kind: string; field: string; [key: string]: unknown }[];
}

/**
 * A lightweight KVM virtual machine running a Linux kernel.
 *
 * ```ts
 * const vm = new MicroVM({ kernel: 'vmlinux', initrd: 'initramfs.cpio.gz', memoryMiB: 256, vcpus: 2 });
 * vm.console.pipe(process.stdout);
 * await vm.start();
 * const { reason } = await vm.wait();
 * ```
 * The constructor validates the config and throws ConfigError; start() throws
 * KvmError/LoaderError/HostError and leaves nothing behind when it fails.
 * Many MicroVMs can run in one process; each owns its fds, memory and workers,
 * and releases all of them when it exits or is stopped. Main thread only.
 */
export class MicroVM extends EventEmitter<MicroVMEvents> {
  readonly config: ResolvedConfig;
  /** The guest's serial console (ttyS0): read guest output, write guest input. */
  readonly console: Duplex;
  readonly timings: BootTimings = {};
  private stateValue: MicroVMState = 'new';
  private built: BuiltVm | null = null;
  private exitValue: VmExit | null = null;
  private readonly exitPromise: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  private consoleDone = false;
  private stopRequested = false;
  /** Set for a VM built from a snapshot (MicroVM.restore / clone) instead of a kernel. */
  private restoreFrom: { input: RestoreInput; paused: boolean } | null = null;

  /**
   * Validates `config` (ConfigError naming every bad field). The second
   * parameter is internal (restore() uses it: a restored VM does not need its
   * kernel file any more).
   * @internal second parameter
   */
  constructor(config: MicroVMConfig, internal?: { readonly restoring: true }) {
    super();
    this.config = resolveConfig(config, internal?.restoring ? { skip: ['kernel', 'initrd'] } : {});
    this.exitPromise = new Promise((r) => { this.resolveExit = r; });
    this.exitPromise.catch(() => undefined);
    this.console = new Duplex({
      read: () => undefined,
      write: (chunk: Buffer, _enc, cb) => this.writeInput(chunk, cb),
    });
  }

  get state(): MicroVMState {
    return this.stateValue;
  }

  private setState(s: MicroVMState): void {
    if (s === this.stateValue) return;
    this.stateValue = s;
    debug('state %s', s);
    this.emit('state', s);
  }

  /** Builds the VM and starts its vCPUs. Resolves once the guest is running. */
  async start(): Promise<void> {
    if (this.stateValue !== 'new') throw new StateError(`start() can only be called once; the VM is ${this.stateValue}`);
    this.timings.startCalled = now();
    this.setState('starting');
    try {
      this.built = await buildVm(this.config, { timings: this.timings, now }, this.restoreFrom?.input);
    } catch (e) {
      // Nothing was left running or open (buildVm cleans up); wait() reports the failure too.
      const v: VmExit = { reason: 'error', vcpu: -1, detail: { message: (e as Error).message }, error: e as Error, timings: { ...this.timings } };
      this.exitValue = v;
      this.resolveExit(v);
      this.setState('exited');
      this.console.push(null);
      this.emit('exit', v);
      throw e;
    }
    const { machine } = this.built;
    machine.on('device-event', (e) => {
      if (e.type === 'boot-timer' && this.timings.guestInit === undefined) {
        this.timings.guestInit = typeof e.time === 'number' ? e.time : now();
        this.emit('guest-init', this.timings.guestInit);
      }
    });
    machine.on('first-run', (t) => { this.timings.firstRun = t; });
    void machine.wait().then((e) => this.onExit(e));
    void this.pumpConsole();
    if (this.stopRequested) {
      // stop() was called while we were building: never run the guest.
      void machine.stop();
      return;
    }
    const paused = this.restoreFrom?.paused ?? false;
    this.restoreFrom = null;
    machine.start({ paused });
    this.setState(paused ? 'paused' : 'running');
  }

  /**
   * Writes a snapshot of this VM into `dir` (created if missing; it must be
   * empty or hold an older snapshot, which is replaced only once the new one
   * is complete): guest RAM as `dir/memory` (sparse: pages the guest never
   * touched or that are all zeros are holes) and `dir/state.json` (format
   * version, flintvm version, arch, config, every vCPU's and device's
   * state). A running VM is paused for the snapshot and resumed after it; a
   * paused one stays paused. The disk images are not copied: the snapshot
   * names them, and a writable drive's image must not change until a restore
   * (each device flushes its writes before the snapshot completes).
   * `MicroVM.restore(dir)` continues the guest where it was. Instead of a
   * directory, `{ statePath, memoryPath }` names the two files apart (as
   * Firecracker's API does).
   *
   * Throws StateError unless the VM is running or paused, SnapshotError when
   * a device cannot be saved (naming it; nothing is written) or the directory
   * is unusable, HostError when writing fails (nothing is left in `dir`).
   */
  async snapshot(dir: SnapshotLocation): Promise<SnapshotInfo> {
    const t0 = performance.now();
    const built = this.requireSnapshotable('snapshot()');
    const wasRunning = this.stateValue === 'running';
    if (wasRunning) await this.pause();
    try {
      const file = await writeSnapshot(dir, this.config, flintvmVersion(), (fd) => built.capture(fd));
      return { where: dir, version: file.version, memoryBytes: file.memory.size, memoryWritten: file.memory.written, ms: performance.now() - t0 };
    } finally {
      if (wasRunning && this.stateValue === 'paused') await this.resume();
    }
  }

  /**
   * A new, independent VM that continues from this VM's current state: the
   * in-process shortcut of snapshot() + restore(), with the memory kept in a
   * memfd instead of files (nothing touches the disk). This VM is paused for
   * the copy and resumed after it (a paused one stays paused). The clone's
   * unchanged pages are shared with the memfd, not with this VM. Host
   * resources two VMs cannot share (a tap, the vsock socket path, a writable
   * disk image, which is locked) must be replaced through `overrides`; the
   * clone's guest gets a vsock transport reset. Resolves once the clone runs
   * (or is paused, with `opts.paused`).
   */
  async clone(overrides: RestoreOverrides = {}, opts: RestoreOptions = {}): Promise<MicroVM> {
    const built = this.requireSnapshotable('clone()');
    const config = restoredConfig(snapshotConfigOf(this.config), overrides);
    const wasRunning = this.stateValue === 'running';
    const memfd = ffi.memfdCreate('flintvm-clone', ffi.MFD_CLOEXEC);
    if (memfd < 0) throw new HostError('memfd_create', ffi.errno());
    try {
      let machine: MachineSnapshot;
      if (wasRunning) await this.pause();
      try {
        ({ machine } = await built.capture(memfd));
      } finally {
        if (wasRunning && this.stateValue === 'paused') await this.resume();
      }
      const vm = new MicroVM(config, { restoring: true });
      vm.restoreFrom = { input: { machine, memoryFd: memfd, memoryWhat: 'the clone memfd' }, paused: opts.paused ?? false };
      await vm.start();
      return vm;
    } finally {
      closeSync(memfd);
    }
  }

  /**
   * Restores a VM from a snapshot directory written by {@link snapshot}: it
   * continues exactly where the guest was (running, or paused with
   * `opts.paused`). Guest RAM is the memory file mapped private, so nothing
   * is read up front and every VM restored from one snapshot shares the pages
   * none of them wrote. `overrides` replaces host resources (tap and MAC,
   * vsock socket path and CID, console, disk paths). Many restores of one
   * snapshot may run at once in one process. The guest sees a vsock
   * transport reset (its connections are gone); see the README for reseeding
   * its RNG.
   *
   * Throws SnapshotError (not a snapshot, another format version or arch),
   * SnapshotStateError (a damaged or tampered state, naming the field),
   * ConfigError (an override, or a file the config names that is gone), and
   * whatever start() throws; nothing is left running when it throws.
   */
  static async restore(dir: SnapshotLocation, overrides: RestoreOverrides = {}, opts: RestoreOptions = {}): Promise<MicroVM> {
    const snap = readSnapshot(dir);
    try {
      const vm = new MicroVM(restoredConfig(snap.file.config, overrides), { restoring: true });
      vm.restoreFrom = { input: { machine: snap.file.machine, memoryFd: snap.memoryFd, memoryWhat: snap.memoryWhat }, paused: opts.paused ?? false };
      await vm.start();
      return vm;
    } finally {
      closeSync(snap.memoryFd);
    }
  }

  private requireSnapshotable(what: string): BuiltVm {
    if ((this.stateValue !== 'running' && this.stateValue !== 'paused') || !this.built) throw new StateError(`${what} needs a running or paused VM; it is ${this.stateValue}`);
    return this.built;
  }

  /**
   * What this VM is made of, as JSON-able data for APIs and tools: its state,
   * memory, vCPUs, and each virtio device from the device registry (its kind,
   * config path and the kind's description; lib/vm/registry.ts), in the order
   * of their transport slots. Any thread that owns the handle may call it.
   */
  describe(): VmDescription {
    return { state: this.stateValue, memoryMiB: this.config.memoryMiB, vcpus: this.config.vcpus, devices: describeDevices(this.config) };
  }

  /** Resolves with how the VM ended (after every resource is released). */
  wait(): Promise<VmExit> {
    return this.exitPromise;
  }

  async pause(): Promise<void> {
    if (this.stateValue !== 'running' || !this.built) throw new StateError(`pause() needs a running VM; it is ${this.stateValue}`);
    await this.built.machine.pause();
    if (this.stateValue === 'running') this.setState('paused');
  }

  async resume(): Promise<void> {
    if (this.stateValue !== 'paused' || !this.built) throw new StateError(`resume() needs a paused VM; it is ${this.stateValue}`);
    this.built.machine.resume();
    this.setState('running');
  }

  /** Stops the VM (if running) and resolves once every fd, mapping and worker is released. */
  async stop(): Promise<VmExit> {
    if (this.stateValue === 'new') {
      this.setState('exited');
      this.console.push(null);
      const e: VmExit = { reason: 'stopped', vcpu: -1, timings: this.timings };
      this.exitValue = e;
      this.resolveExit(e);
      return e;
    }
    if (this.stateValue === 'starting') {
      this.stopRequested = true;
      this.setState('stopping');
      return this.exitPromise;
    }
    if (this.stateValue !== 'exited') this.setState('stopping');
    await this.built?.machine.stop();
    return this.exitPromise;
  }

  private async onExit(e: ExitInfo): Promise<void> {
    this.timings.exited ??= now();
    if (this.stateValue !== 'exited') this.setState('stopping');
    await this.built!.machine.released();
    this.timings.released = now();
    // Drain what the guest printed last, then end the console stream.
    this.drainConsole();
    this.consoleDone = true;
    this.built!.ring.close();
    const exitStatus = e.reason === 'guest-exit' && typeof e.detail?.status === 'number' ? e.detail.status : undefined;
    const failure = this.built!.machine.failure;
    const v: VmExit = { ...e, ...(exitStatus !== undefined ? { exitStatus } : {}), ...(failure ? { error: failure } : {}), timings: { ...this.timings } };
    this.exitValue = v;
    this.setState('exited');
    this.console.push(null);
    this.emit('exit', v);
    this.resolveExit(v);
  }

  private drainConsole(): void {
    if (!this.built) return;
    const b = this.built.ring.read();
    if (b.length && this.config.console === 'pipe') this.console.push(Buffer.from(b.buffer, b.byteOffset, b.length));
  }

  private async pumpConsole(): Promise<void> {
    const ring = this.built!.ring;
    while (!this.consoleDone && !ring.closed) {
      await ring.waitReadable();
      if (this.consoleDone) break;
      this.drainConsole();
    }
  }

  private writeInput(chunk: Buffer, cb: (e?: Error | null) => void): void {
    if (!this.built || this.stateValue === 'exited' || this.stateValue === 'stopping') {
      cb();
      return;
    }
    let off = 0;
    const push = () => {
      if (!this.built || this.exitValue) return cb();
      off += this.built.sendInput(chunk.subarray(off));
      if (off >= chunk.length) cb();
      else setTimeout(push, 2); // RX FIFO full: the guest drains it at its own pace
    };
    push();
  }

  /** How the VM ended, once it has. */
  get exit(): VmExit | null {
    return this.exitValue;
  }
}

/** The config a snapshot of `cfg` keeps (for clone(): no files involved). */
function snapshotConfigOf(cfg: ResolvedConfig): SnapshotConfig {
  const { workerPool: _pool, ...rest } = cfg;
  return rest;
}

export { SNAPSHOT_VERSION };
export type { ExitReason, RestoreOverrides, SnapshotLocation };
