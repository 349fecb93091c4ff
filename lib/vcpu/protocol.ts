/**
 * What the main thread and a vCPU worker exchange. Everything here is
 * structured-cloneable (SharedArrayBuffers are shared, not copied).
 */
import type { Trigger } from '../interrupt/trigger.js';
import type { RegionDescriptor } from '../memory/guest-memory.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { BusDevice } from '../bus/device.js';
import type { ArmCoreRegs } from '../kvm/arm64.js';
import type { KvmRegs } from '../kvm/types.js';

/** Slots of the per-vCPU control Int32Array. */
export const CTL_CMD = 0; // main -> worker: one of CMD_*
export const CTL_STATE = 1; // worker -> main: one of STATE_*
export const CTL_TID = 2; // worker's kernel thread id
export const CTL_WORDS = 4;

export const CMD_RUN = 0;
export const CMD_PAUSE = 1;
export const CMD_STOP = 2;

export const STATE_STARTING = 0;
export const STATE_RUNNING = 1;
export const STATE_PAUSED = 2;
export const STATE_EXITED = 3;

/** A device the vCPU worker maps on its bus; `params` go to the device module's factory. */
export interface DeviceSpec {
  readonly space: 'pio' | 'mmio';
  readonly base: number;
  readonly length: number;
  readonly params: unknown;
}

export interface VcpuWorkerData {
  readonly vmFd: number;
  readonly vcpuFd: number;
  readonly vcpuId: number;
  readonly runAddr: bigint;
  readonly runSize: number;
  readonly control: SharedArrayBuffer;
  /** The VM's lock for KVM_IRQ_LINE pulses (see lib/interrupt/line.ts), shared by every thread that pulses its lines. */
  readonly irqLock: SharedArrayBuffer;
  readonly memory: readonly RegionDescriptor[];
  readonly devices: readonly DeviceSpec[];
  /** URL of a module exporting `createBusDevice(params, ctx): BusDevice` (see {@link DeviceFactory}). */
  readonly deviceModule: string;
  /** Nice steps the worker lowers its own thread's priority by before it runs the guest (see MicroVMConfig.vcpuNice). */
  readonly niceIncrement: number;
  /** The main thread's {@link epochOffsetMs}: the worker stamps times as this + `monotonicMs()`, without perf_hooks. */
  readonly epochOffsetMs: number;
}

/** How a VM (or one vCPU of it) ended. `reason` is the stable field callers branch on. */
export type ExitReason =
  | 'halt' // HLT with no in-kernel irqchip
  | 'triple-fault' // KVM_EXIT_SHUTDOWN
  | 'reset' // the guest asked for a reboot (i8042 reset line, PSCI/system-event reset)
  | 'poweroff' // system-event shutdown
  | 'crash' // system-event crash
  | 'guest-exit' // the guest's init reported its command's exit status
  | 'internal-error' // KVM could not emulate or deliver something
  | 'fail-entry' // hardware refused to enter the guest
  | 'exception' // unhandled guest exception reported by KVM
  | 'unknown' // KVM_EXIT_UNKNOWN or an exit reason flintvm does not know
  | 'stopped' // the host called stop()
  | 'error'; // a host-side failure (ioctl error) ended the vCPU

/** How a vCPU (and so the VM) ended: the reason, the vCPU, and what KVM reported. */
export interface ExitInfo {
  readonly reason: ExitReason;
  /** The vCPU that saw it (-1 for host stop). */
  readonly vcpu: number;
  /** Reason-specific numbers: suberror/data, hardware reason, exit status, errno… */
  readonly detail?: Record<string, number | bigint | string | readonly bigint[]>;
  /** Registers of that vCPU at the exit, when they could be read (x86_64). */
  readonly regs?: KvmRegs;
  /** The same on arm64: X0..X30, SP, PC, PSTATE. */
  readonly armRegs?: ArmCoreRegs;
}

export type VcpuMessage =
  | { type: 'ready'; tid: number }
  | { type: 'first-run'; time: number }
  | { type: 'exit'; exit: ExitInfo }
  | { type: 'device-event'; event: DeviceEvent }
  | { type: 'fatal'; message: string };

/** An event a device raises for the main thread (boot timer, exit status…). */
export interface DeviceEvent {
  readonly type: string;
  readonly [key: string]: unknown;
}

/** What a device factory gets on the vCPU worker. */
export interface DeviceContext {
  readonly vcpuId: number;
  readonly memory: GuestMemory;
  /** A Trigger that pulses interrupt line `gsi` (KVM_IRQ_LINE). */
  irqLine(gsi: number): Trigger;
  /** Sends an event to the main thread (asynchronous; never blocks the vCPU). */
  emit(event: DeviceEvent): void;
  /** Ends the VM once this access completes, with the given exit. */
  requestExit(reason: ExitReason, detail?: ExitInfo['detail']): void;
  /** Now, as the main thread's `performance.timeOrigin + performance.now()` (ms), for events' stamps. */
  now(): number;
}

/** The factory a device module exports. */
export type DeviceFactory = (params: unknown, ctx: DeviceContext) => BusDevice;
