import { HostError, KvmError } from '../errors.js';
import * as ffi from './ffi.js';
import * as io from './ioctls.js';
import type { Kvm } from './kvm.js';
import { ioctlOnPool, ioctlPtr, ioctlValue } from './call.js';
import {
  encodeCreateDevice, encodeDeviceAttr, encodeIoeventfd, encodeIrqfd, encodeIrqLevel, encodeMemoryRegion, encodePitConfig,
  KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO, KVM_IRQFD_FLAG_DEASSIGN,
} from './structs.js';
import { Vcpu } from './vcpu.js';
import { decodeVcpuInit, KVM_VCPU_INIT_SIZE, type ArmVcpuInit } from './arm64.js';
import {
  decodeClockData, encodeClockData, irqchipRequest, KVM_CLOCK_DATA_SIZE, KVM_IRQCHIP_SIZE, KVM_PIT_STATE2_SIZE,
  type KvmClockData,
} from './state-structs.js';

const EINVAL = 22;

function requireSize(ioctl: string, b: Uint8Array, size: number): void {
  if (b.length !== size) throw new KvmError(ioctl, EINVAL, `buffer must be ${size} bytes, got ${b.length}`);
}

/**
 * A KVM VM fd. One method per ioctl, no policy. Methods may be called from
 * any thread (fds are process-wide); `irqLine` is commonly called from vCPU
 * workers through their own `Vm.attach` instance.
 */
export class Vm {
  private closed = false;
  readonly vcpus: Vcpu[] = [];

  constructor(readonly kvm: Kvm | null, readonly fd: number) {}

  /** A non-owning handle on an existing VM fd (for workers). close() does nothing. */
  static attach(fd: number): Vm {
    const vm = new Vm(null, fd);
    vm.closed = true;
    return vm;
  }

  /**
   * KVM_SET_USER_MEMORY_REGION: map `size` bytes of host memory at `hostAddr` to guest `gpa`. size 0 deletes the slot.
   *
   * This and the other set-up calls that install something KVM's readers may be using (the irqchip, the
   * PIT, irqfds, ioeventfds) wait for an SRCU grace period in the kernel, milliseconds while the host's
   * CPUs are busy, so they run on a libuv pool thread (`ioctlOnPool`): the thread that builds VMs, which
   * serves every VM of the process, goes on meanwhile. On the kvm_pvm machine, 32 VMs started at once
   * spent 6.2 ms each asleep in this call alone, on the main thread.
   */
  async setUserMemoryRegion(slot: number, gpa: number, size: number, hostAddr: bigint, flags = 0): Promise<void> {
    await ioctlOnPool(this.fd, io.KVM_SET_USER_MEMORY_REGION, encodeMemoryRegion(slot, flags, gpa, size, hostAddr));
  }

  /** KVM_SET_TSS_ADDR (x86, Intel): three pages the VMX TSS may use, inside no RAM or MMIO. */
  setTssAddr(addr: number): void {
    ioctlValue(this.fd, io.KVM_SET_TSS_ADDR, addr);
  }

  /** KVM_SET_IDENTITY_MAP_ADDR (x86, Intel): one page for the real-mode identity map. */
  setIdentityMapAddr(addr: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(addr), true);
    ioctlPtr(this.fd, io.KVM_SET_IDENTITY_MAP_ADDR, b);
  }

  /** KVM_CREATE_IRQCHIP: in-kernel PIC, IOAPIC and LAPICs (x86), before any vCPU. On a pool thread (see setUserMemoryRegion). */
  async createIrqchip(): Promise<void> {
    await ioctlOnPool(this.fd, io.KVM_CREATE_IRQCHIP, 0);
  }

  /** KVM_CREATE_PIT2: in-kernel i8254 timer. On a pool thread (see setUserMemoryRegion). */
  async createPit2(flags: number): Promise<void> {
    await ioctlOnPool(this.fd, io.KVM_CREATE_PIT2, encodePitConfig(flags));
  }

  /** KVM_IRQ_LINE: set interrupt line `irq` (a GSI on x86) to `level`. */
  irqLine(irq: number, level: 0 | 1): void {
    ioctlPtr(this.fd, io.KVM_IRQ_LINE, encodeIrqLevel(irq, level));
  }

  /** KVM_IRQFD: writes to eventfd `fd` inject GSI `gsi`. On a pool thread (see setUserMemoryRegion). */
  async irqfd(fd: number, gsi: number, deassign = false): Promise<void> {
    await ioctlOnPool(this.fd, io.KVM_IRQFD, encodeIrqfd(fd, gsi, deassign ? KVM_IRQFD_FLAG_DEASSIGN : 0));
  }

  /** KVM_IOEVENTFD: guest writes of `len` bytes at `addr` (PIO or MMIO) signal eventfd `fd` without exiting to userspace. On a pool thread. */
  async ioeventfd(addr: number, len: number, fd: number, opts: { pio?: boolean; datamatch?: bigint; deassign?: boolean } = {}): Promise<void> {
    let flags = 0;
    if (opts.pio) flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (opts.datamatch !== undefined) flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (opts.deassign) flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    await ioctlOnPool(this.fd, io.KVM_IOEVENTFD, encodeIoeventfd(addr, len, fd, flags, opts.datamatch ?? 0n));
  }

  /** KVM_CREATE_DEVICE: returns the new device fd. */
  createDevice(type: number): number {
    const b = encodeCreateDevice(type);
    ioctlPtr(this.fd, io.KVM_CREATE_DEVICE, b);
    return new DataView(b.buffer).getUint32(4, true);
  }

  /** KVM_SET_DEVICE_ATTR on a device fd; `addr` points at the value (a buffer). */
  setDeviceAttr(deviceFd: number, group: number, attr: bigint, value: Uint8Array | null): void {
    const addr = value ? ffi.addressOf(value) : 0n;
    ioctlPtr(deviceFd, io.KVM_SET_DEVICE_ATTR, encodeDeviceAttr(group, attr, addr));
  }

  /** KVM_CHECK_EXTENSION on the VM fd (answers for this VM; KVM_CAP_XSAVE2 must be asked here). */
  checkExtension(cap: number): number {
    return ioctlValue(this.fd, io.KVM_CHECK_EXTENSION, cap);
  }

  /** KVM_GET_DEVICE_ATTR on a device fd: the kernel writes the value into `value` (its size is the attribute's). */
  getDeviceAttr(deviceFd: number, group: number, attr: bigint, value: Uint8Array): void {
    ioctlPtr(deviceFd, io.KVM_GET_DEVICE_ATTR, encodeDeviceAttr(group, attr, ffi.addressOf(value)));
  }

  /** KVM_HAS_DEVICE_ATTR on a device fd: whether the device implements (group, attr). */
  hasDeviceAttr(deviceFd: number, group: number, attr: bigint): boolean {
    return ffi.ioctlPtr(deviceFd, io.KVM_HAS_DEVICE_ATTR, encodeDeviceAttr(group, attr, 0n)) === 0;
  }

  /** KVM_GET_IRQCHIP (x86): struct kvm_irqchip of chip `chipId` (PIC master 0, PIC slave 1, IOAPIC 2). */
  getIrqchip(chipId: number): Uint8Array {
    const b = irqchipRequest(chipId);
    ioctlPtr(this.fd, io.KVM_GET_IRQCHIP, b);
    return b;
  }

  /** KVM_SET_IRQCHIP (x86): the chip is named by the buffer's chip_id. */
  setIrqchip(chip: Uint8Array): void {
    requireSize('KVM_SET_IRQCHIP', chip, KVM_IRQCHIP_SIZE);
    ioctlPtr(this.fd, io.KVM_SET_IRQCHIP, chip);
  }

  /** KVM_GET_PIT2: struct kvm_pit_state2 of the in-kernel i8254. */
  getPit2(): Uint8Array {
    const b = new Uint8Array(KVM_PIT_STATE2_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_PIT2, b);
    return b;
  }

  setPit2(state: Uint8Array): void {
    requireSize('KVM_SET_PIT2', state, KVM_PIT_STATE2_SIZE);
    ioctlPtr(this.fd, io.KVM_SET_PIT2, state);
  }

  /** KVM_GET_CLOCK: the VM's kvmclock (ns) and, per flags, the host realtime/TSC it was read at. */
  getClock(): KvmClockData {
    const b = new Uint8Array(KVM_CLOCK_DATA_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_CLOCK, b);
    return decodeClockData(b);
  }

  /** KVM_SET_CLOCK: sets kvmclock; with KVM_CLOCK_REALTIME in flags KVM adds the realtime elapsed since `realtime`. */
  setClock(c: KvmClockData): void {
    ioctlPtr(this.fd, io.KVM_SET_CLOCK, encodeClockData(c));
  }

  /** KVM_CREATE_VCPU and mmap of its kvm_run page. */
  /** KVM_ARM_PREFERRED_TARGET (arm64): the vCPU target (and default features) for KVM_ARM_VCPU_INIT. */
  armPreferredTarget(): ArmVcpuInit {
    const b = new Uint8Array(KVM_VCPU_INIT_SIZE);
    ioctlPtr(this.fd, io.KVM_ARM_PREFERRED_TARGET, b);
    return decodeVcpuInit(b);
  }

  createVcpu(id: number): Vcpu {
    if (!this.kvm) throw new KvmError('KVM_CREATE_VCPU', 0, 'attached VM handles cannot create vCPUs');
    const fd = ioctlValue(this.fd, io.KVM_CREATE_VCPU, id);
    const size = this.kvm.vcpuMmapSize();
    const addr = ffi.mmap(null, size, ffi.PROT_READ | ffi.PROT_WRITE, ffi.MAP_SHARED, fd, 0);
    if (addr === null || addr === ffi.MAP_FAILED) {
      const e = ffi.errno();
      ffi.close(fd);
      throw new HostError('mmap(kvm_run)', e);
    }
    const vcpu = new Vcpu(fd, id, addr, size, true);
    this.vcpus.push(vcpu);
    return vcpu;
  }

  /** Closes every vCPU this handle created, then the VM fd. */
  close(): void {
    if (!this.closeVcpus()) return;
    ffi.close(this.fd);
  }

  /**
   * close(), with the VM fd closed on a libuv pool thread: its last close destroys the VM, which waits
   * for grace periods in the kernel (15.7 ms per 128 MiB VM on the kvm_pvm machine, almost none of it
   * CPU). Resolves once the fd is closed; like close(), it ignores close(2)'s result (the fd is gone either way).
   */
  async closeOnPool(): Promise<void> {
    if (!this.closeVcpus()) return;
    await ffi.closeOnPool(this.fd);
  }

  /** Closes the vCPUs; false when the handle was already closed (or does not own its fd). */
  private closeVcpus(): boolean {
    if (this.closed) return false;
    this.closed = true;
    for (const v of this.vcpus) v.close();
    this.vcpus.length = 0;
    return true;
  }
}
