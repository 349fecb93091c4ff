import * as ffi from './ffi.js';
import * as io from './ioctls.js';
import { ioctlPtr, ioctlValue } from './call.js';
import { decodeExit, RUN_IMMEDIATE_EXIT, type VcpuExit } from './exit.js';
import {
  decodeFpu, decodeMsrs, decodeRegs, decodeSregs, encodeCpuid, encodeFpu, encodeMsrs, encodeRegs, encodeSregs,
  KVM_FPU_SIZE, KVM_LAPIC_STATE_SIZE, KVM_REGS_SIZE, KVM_SREGS_SIZE,
} from './structs.js';
import type { CpuidEntry, KvmFpu, KvmRegs, KvmSregs, MsrEntry } from './types.js';
import { KvmError } from '../errors.js';
import { encodeOneReg, encodeVcpuInit, REG_PC, REG_PSTATE, REG_SP, xRegId, type ArmCoreRegs, type ArmVcpuInit } from './arm64.js';
import { decodeCpuid as decodeCpuid2, KVM_CPUID_ENTRY2_SIZE } from './structs.js';
import {
  decodeRegList, KVM_DEBUGREGS_SIZE, KVM_VCPU_EVENTS_SIZE, KVM_XCRS_SIZE, KVM_XSAVE_SIZE, regListRequest,
} from './state-structs.js';
import { oneRegSize } from './arm64-state.js';

const E2BIG = 7;
const EINVAL = 22;
/** KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h). */
const KVM_MAX_CPUID_ENTRIES = 256;
/** Upper bound for KVM_GET_REG_LIST (arm64 vCPUs list a few hundred). */
const MAX_REG_LIST = 8192;

/** KVM_MP_STATE values (x86). */
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;
export const KVM_MP_STATE_HALTED = 3;

/**
 * A KVM vCPU fd and its kvm_run page. One method per ioctl, no policy.
 * KVM_RUN must only be issued from one thread (the vCPU worker); the run page
 * may be read by anyone, and `immediate_exit` may be set from any thread.
 */
export class Vcpu {
  /** The whole kvm_run mapping. */
  readonly run: Uint8Array;
  readonly runView: DataView;
  private closed: boolean;

  constructor(readonly fd: number, readonly id: number, readonly runAddr: bigint, readonly runSize: number, owned: boolean) {
    this.run = ffi.viewOf(runAddr, runSize);
    this.runView = new DataView(this.run.buffer, this.run.byteOffset, this.run.byteLength);
    this.closed = !owned;
  }

  /** A non-owning handle on an existing vCPU (for its worker): close() does nothing. */
  static attach(fd: number, id: number, runAddr: bigint, runSize: number): Vcpu {
    return new Vcpu(fd, id, runAddr, runSize, false);
  }

  /**
   * KVM_RUN. Returns 0 on an exit to decode, or the negative errno
   * (-EINTR when kicked by a signal or immediate_exit). Never throws:
   * this is the hot path and the caller decides.
   */
  runOnce(): number {
    const r = ffi.ioctlValue(this.fd, io.KVM_RUN, 0);
    return r < 0 ? -ffi.errno() : r;
  }

  /** Decodes the exit KVM_RUN just reported. */
  exit(): VcpuExit {
    return decodeExit(this.runView);
  }

  /** Sets or clears kvm_run.immediate_exit (KVM_CAP_IMMEDIATE_EXIT). */
  setImmediateExit(on: boolean): void {
    this.run[RUN_IMMEDIATE_EXIT] = on ? 1 : 0;
  }

  getRegs(): KvmRegs {
    const b = new Uint8Array(KVM_REGS_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_REGS, b);
    return decodeRegs(b);
  }

  setRegs(r: KvmRegs): void {
    ioctlPtr(this.fd, io.KVM_SET_REGS, encodeRegs(r));
  }

  getSregs(): KvmSregs {
    const b = new Uint8Array(KVM_SREGS_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_SREGS, b);
    return decodeSregs(b);
  }

  setSregs(s: KvmSregs): void {
    ioctlPtr(this.fd, io.KVM_SET_SREGS, encodeSregs(s));
  }

  getFpu(): KvmFpu {
    const b = new Uint8Array(KVM_FPU_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_FPU, b);
    return decodeFpu(b);
  }

  setFpu(f: KvmFpu): void {
    ioctlPtr(this.fd, io.KVM_SET_FPU, encodeFpu(f));
  }

  /** KVM_SET_CPUID2. */
  setCpuid2(entries: readonly CpuidEntry[]): void {
    ioctlPtr(this.fd, io.KVM_SET_CPUID2, encodeCpuid(entries));
  }

  /** KVM_SET_MSRS: returns how many of `entries` were set (KVM stops at the first it rejects). */
  setMsrs(entries: readonly MsrEntry[]): number {
    return ioctlPtr(this.fd, io.KVM_SET_MSRS, encodeMsrs(entries));
  }

  /** KVM_GET_MSRS for the given indices; returns the ones KVM could read. */
  getMsrs(indices: readonly number[]): MsrEntry[] {
    const b = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    const n = ioctlPtr(this.fd, io.KVM_GET_MSRS, b);
    return decodeMsrs(b, n);
  }

  /** KVM_GET_LAPIC: the 1024-byte local APIC register page. */
  getLapic(): Uint8Array {
    const b = new Uint8Array(KVM_LAPIC_STATE_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_LAPIC, b);
    return b;
  }

  setLapic(regs: Uint8Array): void {
    if (regs.length !== KVM_LAPIC_STATE_SIZE) throw new KvmError('KVM_SET_LAPIC', 22, `lapic state must be ${KVM_LAPIC_STATE_SIZE} bytes`);
    ioctlPtr(this.fd, io.KVM_SET_LAPIC, regs);
  }

  getMpState(): number {
    const b = new Uint8Array(4);
    ioctlPtr(this.fd, io.KVM_GET_MP_STATE, b);
    return new DataView(b.buffer).getUint32(0, true);
  }

  setMpState(state: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, state, true);
    ioctlPtr(this.fd, io.KVM_SET_MP_STATE, b);
  }

  /** KVM_GET_ONE_REG for a 64-bit register (arm64 core and system registers; see lib/kvm/arm64.ts). */
  getOneReg(id: bigint): bigint {
    const value = new Uint8Array(8);
    ioctlPtr(this.fd, io.KVM_GET_ONE_REG, encodeOneReg(id, ffi.addressOf(value)));
    return new DataView(value.buffer).getBigUint64(0, true);
  }

  /** KVM_SET_ONE_REG for a 64-bit register. */
  setOneReg(id: bigint, v: bigint): void {
    const value = new Uint8Array(8);
    new DataView(value.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
    ioctlPtr(this.fd, io.KVM_SET_ONE_REG, encodeOneReg(id, ffi.addressOf(value)));
  }

  /** arm64: X0..X30, SP, PC and PSTATE through KVM_GET_ONE_REG (arm64 has no KVM_GET_REGS). */
  getArmCoreRegs(): ArmCoreRegs {
    const x = Array.from({ length: 31 }, (_, n) => this.getOneReg(xRegId(n)));
    return { x, sp: this.getOneReg(REG_SP), pc: this.getOneReg(REG_PC), pstate: this.getOneReg(REG_PSTATE) };
  }

  /** KVM_ARM_VCPU_INIT (arm64): resets the vCPU to the target's state with the given features. */
  armInit(init: ArmVcpuInit): void {
    ioctlPtr(this.fd, io.KVM_ARM_VCPU_INIT, encodeVcpuInit(init));
  }

  // ---- state save/restore (x86): raw structs, see lib/kvm/state-structs.ts ----

  /**
   * KVM_GET_CPUID2: the CPUID entries last set with KVM_SET_CPUID2 (none on
   * a fresh vCPU). Kernels up to at least 6.1 write `nent` back only when the
   * call fails (E2BIG), so a successful call does not say how many entries
   * it filled; the count is found as the smallest `nent` KVM accepts (the
   * call succeeds exactly when nent >= the vCPU's count), then read with it.
   */
  getCpuid2(): CpuidEntry[] {
    const fits = (n: number): boolean => {
      const r = ffi.ioctlPtr(this.fd, io.KVM_GET_CPUID2, cpuid2Request(n));
      if (r >= 0) return true;
      const e = ffi.errno();
      if (e !== E2BIG) throw new KvmError('KVM_GET_CPUID2', e);
      return false;
    };
    if (fits(0)) return [];
    let hi = 1;
    while (!fits(hi)) {
      hi *= 2;
      if (hi > KVM_MAX_CPUID_ENTRIES * 2) throw new KvmError('KVM_GET_CPUID2', E2BIG, `more than ${KVM_MAX_CPUID_ENTRIES * 2} entries`);
    }
    let lo = hi / 2; // fits(lo) is false (or lo is 0.5 when hi is 1)
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (fits(mid)) hi = mid; else lo = mid;
    }
    const b = cpuid2Request(hi);
    ioctlPtr(this.fd, io.KVM_GET_CPUID2, b);
    new DataView(b.buffer).setUint32(0, hi, true); // what this kernel may not have written
    return decodeCpuid2(b);
  }

  /** KVM_GET_VCPU_EVENTS: pending/injected exception, interrupt, NMI, SMI state (struct kvm_vcpu_events). */
  getVcpuEvents(): Uint8Array {
    const b = new Uint8Array(KVM_VCPU_EVENTS_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_VCPU_EVENTS, b);
    return b;
  }

  setVcpuEvents(events: Uint8Array): void {
    requireSize('KVM_SET_VCPU_EVENTS', events, KVM_VCPU_EVENTS_SIZE);
    ioctlPtr(this.fd, io.KVM_SET_VCPU_EVENTS, events);
  }

  /** KVM_GET_DEBUGREGS: DR0-3, DR6, DR7 (struct kvm_debugregs). */
  getDebugregs(): Uint8Array {
    const b = new Uint8Array(KVM_DEBUGREGS_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_DEBUGREGS, b);
    return b;
  }

  setDebugregs(regs: Uint8Array): void {
    requireSize('KVM_SET_DEBUGREGS', regs, KVM_DEBUGREGS_SIZE);
    ioctlPtr(this.fd, io.KVM_SET_DEBUGREGS, regs);
  }

  /** KVM_GET_XSAVE: the 4 KiB XSAVE image (fails with EINVAL when the guest's state needs more: use getXsave2). */
  getXsave(): Uint8Array {
    const b = new Uint8Array(KVM_XSAVE_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_XSAVE, b);
    return b;
  }

  /** KVM_GET_XSAVE2: the XSAVE image of `size` bytes, the VM's KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2). */
  getXsave2(size: number): Uint8Array {
    if (!Number.isInteger(size) || size < KVM_XSAVE_SIZE || size > MAX_XSAVE_SIZE) throw new KvmError('KVM_GET_XSAVE2', EINVAL, `xsave size ${size} is outside ${KVM_XSAVE_SIZE}..${MAX_XSAVE_SIZE}`);
    const b = new Uint8Array(size);
    ioctlPtr(this.fd, io.KVM_GET_XSAVE2, b);
    return b;
  }

  /**
   * KVM_SET_XSAVE. The kernel reads the VM's KVM_CAP_XSAVE2 size (at least
   * 4096) from the buffer, so the caller must pass exactly that many bytes.
   */
  setXsave(image: Uint8Array): void {
    if (image.length < KVM_XSAVE_SIZE || image.length > MAX_XSAVE_SIZE) throw new KvmError('KVM_SET_XSAVE', EINVAL, `xsave image of ${image.length} bytes is outside ${KVM_XSAVE_SIZE}..${MAX_XSAVE_SIZE}`);
    ioctlPtr(this.fd, io.KVM_SET_XSAVE, image);
  }

  /** KVM_GET_XCRS: the extended control registers (XCR0) (struct kvm_xcrs). */
  getXcrs(): Uint8Array {
    const b = new Uint8Array(KVM_XCRS_SIZE);
    ioctlPtr(this.fd, io.KVM_GET_XCRS, b);
    return b;
  }

  setXcrs(xcrs: Uint8Array): void {
    requireSize('KVM_SET_XCRS', xcrs, KVM_XCRS_SIZE);
    ioctlPtr(this.fd, io.KVM_SET_XCRS, xcrs);
  }

  /** KVM_GET_TSC_KHZ: the guest TSC frequency in kHz. */
  getTscKhz(): number {
    return ioctlValue(this.fd, io.KVM_GET_TSC_KHZ);
  }

  /** KVM_SET_TSC_KHZ (KVM_CAP_TSC_CONTROL): fails when the host can neither match nor scale to `khz`. */
  setTscKhz(khz: number): void {
    ioctlValue(this.fd, io.KVM_SET_TSC_KHZ, khz);
  }

  // ---- state save/restore (arm64) ----

  /** KVM_GET_REG_LIST (arm64): the ids of every register KVM_GET/SET_ONE_REG can move for this vCPU. */
  getRegList(): bigint[] {
    const probe = regListRequest(0);
    const r = ffi.ioctlPtr(this.fd, io.KVM_GET_REG_LIST, probe);
    if (r >= 0) return [];
    const e = ffi.errno();
    if (e !== E2BIG) throw new KvmError('KVM_GET_REG_LIST', e);
    const n = Number(new DataView(probe.buffer).getBigUint64(0, true)); // the kernel wrote the count it needs
    if (n > MAX_REG_LIST) throw new KvmError('KVM_GET_REG_LIST', E2BIG, `${n} registers (more than ${MAX_REG_LIST})`);
    const b = regListRequest(n);
    ioctlPtr(this.fd, io.KVM_GET_REG_LIST, b);
    return decodeRegList(b);
  }

  /** KVM_GET_ONE_REG for a register of any size (the size is encoded in the id). */
  getOneRegBytes(id: bigint): Uint8Array {
    const value = new Uint8Array(oneRegSize(id));
    ioctlPtr(this.fd, io.KVM_GET_ONE_REG, encodeOneReg(id, ffi.addressOf(value)));
    return value;
  }

  /** KVM_SET_ONE_REG for a register of any size; `value` must be exactly the id's size. */
  setOneRegBytes(id: bigint, value: Uint8Array): void {
    requireSize('KVM_SET_ONE_REG', value, oneRegSize(id));
    ioctlPtr(this.fd, io.KVM_SET_ONE_REG, encodeOneReg(id, ffi.addressOf(value)));
  }

  /** Unmaps the run page and closes the fd (owning handles only). No view of the run page may be used afterwards. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    ffi.munmap(this.runAddr, this.runSize);
    ffi.close(this.fd);
  }
}


/** Largest XSAVE image accepted (AMX state makes it ~11 KiB today; the ABI allows growth). */
const MAX_XSAVE_SIZE = 64 * 1024;

function requireSize(ioctl: string, b: Uint8Array, size: number): void {
  if (b.length !== size) throw new KvmError(ioctl, EINVAL, `buffer must be ${size} bytes, got ${b.length}`);
}

/** A struct kvm_cpuid2 buffer with room for `n` entries, nent = n. */
function cpuid2Request(n: number): Uint8Array {
  const b = new Uint8Array(8 + n * KVM_CPUID_ENTRY2_SIZE);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}
