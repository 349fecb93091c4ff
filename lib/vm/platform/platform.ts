/**
 * What the VM builder asks of an architecture: where virtio devices go, the
 * default command line, and a plan (memory, bus devices, VM and vCPU setup)
 * for one VM. lib/vm/builder.ts does everything arch-neutral (backends, virtio
 * transports, the I/O worker, the console) and picks the host's platform.
 * Part of the builder layer: platforms know devices and arch code both.
 */
import type { Kvm } from '../../kvm/kvm.js';
import type { Vm } from '../../kvm/vm.js';
import type { Vcpu } from '../../kvm/vcpu.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { DeviceSpec } from '../../vcpu/protocol.js';
import type { ResolvedConfig } from '../config.js';

/** A virtio-mmio window and its interrupt (the irqfd GSI; on arm64 an SPI number). */
export interface VirtioSlot {
  readonly base: number;
  readonly size: number;
  readonly irq: number;
}

export interface PlatformInputs {
  readonly cfg: ResolvedConfig;
  readonly kernel: Uint8Array;
  readonly initrd: Uint8Array | undefined;
  /** The final command line. */
  readonly cmdline: string;
  /** The virtio slots in use, in device order. */
  readonly virtio: readonly VirtioSlot[];
  /** Shared state of the console UART (Serial8250.createState()). */
  readonly serialState: SharedArrayBuffer;
  /** The console output ring's buffer. */
  readonly consoleOutput: SharedArrayBuffer;
  /** Registers the virtio irqfds and ioeventfds; call once the interrupt controller exists. */
  wireVirtio(vm: Vm): Promise<void>;
  /** Fds to close after the VM (e.g. an interrupt controller device). */
  adoptFd(fd: number): void;
  /** Timing marks. */
  mark(what: 'vmReady' | 'kernelLoaded'): void;
  /**
   * Set for a VM restored from a snapshot: the platform state `saveState`
   * returned then. setupVcpus restores it instead of loading a kernel
   * (guest RAM already holds the guest); `kernel` and `initrd` are empty.
   */
  readonly restore?: PlatformState;
}

/** A snapshot's VM-wide and per-vCPU KVM state, as the platform of `arch` saved it (JSON-able). */
export interface PlatformState {
  readonly arch: 'x86_64' | 'arm64';
  /** VM-wide state: x86_64 PIC/IOAPIC/PIT/kvmclock; arm64 the GICv3. */
  readonly vm: unknown;
  /** One per vCPU, in vCPU order. */
  readonly vcpus: readonly unknown[];
}

export interface PlatformPlan {
  readonly memory: ReadonlyArray<{ gpa: number; size: number }>;
  readonly devices: readonly DeviceSpec[];
  setupVm(vm: Vm, kvm: Kvm): Promise<void>;
  setupVcpus(ctx: { kvm: Kvm; vm: Vm; memory: GuestMemory; vcpus: readonly Vcpu[] }): Promise<void>;
  /** The `irq` value of KVM_IRQ_LINE for the console UART (pulsed for console input). */
  readonly consoleIrqLine: number;
  /**
   * Saves the VM's KVM state (main thread; every vCPU paused outside
   * KVM_RUN, its last exit completed). Throws KvmError.
   */
  saveState(ctx: { kvm: Kvm; vm: Vm; vcpus: readonly Vcpu[] }): PlatformState;
}

export interface Platform {
  readonly arch: 'x86_64' | 'arm64';
  readonly defaultCmdline: string;
  /** Most vCPUs the layout has room for. */
  readonly maxVcpus: number;
  /** Virtio slot `index`; throws ConfigError past the last one. */
  virtioSlot(index: number): VirtioSlot;
  /**
   * Whether the guest may read the virtio registers from read-only memory
   * (lib/vm/register-pages.ts): only where its loads of an MMIO window see
   * the host's cached writes.
   */
  readonly registerPagesInGuest: boolean;
  /** Command-line parameters that announce the virtio devices (x86: virtio_mmio.device=; arm64: none, the FDT does). */
  virtioCmdline(slots: readonly VirtioSlot[]): string[];
  plan(inputs: PlatformInputs): PlatformPlan;
}
