/**
 * Model-specific registers set before boot. Values are the architectural
 * reset state a kernel expects from firmware (Intel SDM vol. 4). Only MSRs in
 * KVM_GET_MSR_INDEX_LIST are set: some hosts (nested KVM) reject others.
 */
import type { MsrEntry } from '../../lib/kvm/types.js';

/** IA32_TSC: time-stamp counter. */
export const MSR_IA32_TSC = 0x10;
/** IA32_SYSENTER_CS/ESP/EIP: SYSENTER target. */
export const MSR_IA32_SYSENTER_CS = 0x174;
export const MSR_IA32_SYSENTER_ESP = 0x175;
export const MSR_IA32_SYSENTER_EIP = 0x176;
/** IA32_MISC_ENABLE. */
export const MSR_IA32_MISC_ENABLE = 0x1a0;
/** IA32_MTRR_DEF_TYPE: default memory type and MTRR enable. */
export const MSR_MTRR_DEF_TYPE = 0x2ff;
/** STAR, LSTAR, CSTAR, SFMASK (SYSCALL_MASK): SYSCALL targets and flag mask. */
export const MSR_STAR = 0xc0000081;
export const MSR_LSTAR = 0xc0000082;
export const MSR_CSTAR = 0xc0000083;
export const MSR_SYSCALL_MASK = 0xc0000084;
/** KERNEL_GS_BASE: the GS base SWAPGS exchanges. */
export const MSR_KERNEL_GS_BASE = 0xc0000102;

/** IA32_MISC_ENABLE bit 0: fast-string operations (REP MOVS/STOS) enabled, as firmware leaves it. */
export const MSR_IA32_MISC_ENABLE_FAST_STRING = 1n << 0n;
/** IA32_MTRR_DEF_TYPE bit 11: MTRRs enabled. */
export const MTRR_ENABLE = 1n << 11n;
/** Memory type write-back (SDM vol. 3 table 12-8). */
export const MTRR_TYPE_WRBACK = 6n;

/** The boot MSRs, in the order they are set. */
function bootMsrList(): MsrEntry[] {
  return [
    { index: MSR_IA32_SYSENTER_CS, data: 0n },
    { index: MSR_IA32_SYSENTER_ESP, data: 0n },
    { index: MSR_IA32_SYSENTER_EIP, data: 0n },
    { index: MSR_STAR, data: 0n },
    { index: MSR_CSTAR, data: 0n },
    { index: MSR_KERNEL_GS_BASE, data: 0n },
    { index: MSR_SYSCALL_MASK, data: 0n },
    { index: MSR_LSTAR, data: 0n },
    { index: MSR_IA32_TSC, data: 0n },
    { index: MSR_IA32_MISC_ENABLE, data: MSR_IA32_MISC_ENABLE_FAST_STRING },
    // Without ACPI or MTRR ranges the whole of RAM should be write-back.
    { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE | MTRR_TYPE_WRBACK },
  ];
}

/**
 * The MSRs to set on each vCPU before boot, keeping only indices in
 * `supportedIndices` (KVM_GET_MSR_INDEX_LIST). `skipped` lists the indices left
 * out, so the caller can log them once. Pure.
 */
export function bootMsrs(supportedIndices: ReadonlySet<number>): { entries: MsrEntry[]; skipped: number[] } {
  const entries: MsrEntry[] = [];
  const skipped: number[] = [];
  for (const m of bootMsrList()) {
    if (supportedIndices.has(m.index)) entries.push(m);
    else skipped.push(m.index);
  }
  return { entries, skipped };
}
