/**
 * Initial vCPU register state for the two entry protocols:
 * - linux64: 64-bit long mode, paging on with the identity map, %rsi = zero page
 *   (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol");
 * - PVH: 32-bit protected mode, paging off, %ebx = hvm_start_info
 *   (Xen docs/misc/pvh.pandoc).
 * The sregs functions start from what KVM returned and change only what the
 * protocol requires; they never mutate their argument.
 */
import type { KvmFpu, KvmRegs, KvmSegment, KvmSregs } from '../../lib/kvm/types.js';
import { bootGdtr, bootIdtr, code32Segment, code64Segment, dataSegment, tssSegment } from './gdt.js';
import { BOOT_STACK_POINTER, PML4_ADDR } from './layout.js';

/** CR0 bits. */
export const X86_CR0_PE = 1n << 0n;
export const X86_CR0_ET = 1n << 4n;
export const X86_CR0_NW = 1n << 29n;
export const X86_CR0_CD = 1n << 30n;
export const X86_CR0_PG = 1n << 31n;
/** CR4.PAE: required for long-mode paging. */
export const X86_CR4_PAE = 1n << 5n;
/** EFER bits: long mode enable and long mode active. */
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
/** RFLAGS bit 1 is reserved and always reads as one; IF and everything else clear. */
export const X86_EFLAGS_FIXED = 1n << 1n;

/** x87 control word after FNINIT: all exceptions masked, 64-bit precision, round to nearest. */
export const FPU_FCW_DEFAULT = 0x37f;
/** MXCSR at reset: all SSE exceptions masked, round to nearest. */
export const MXCSR_DEFAULT = 0x1f80;

/** Copies a segment so the result shares no object with its input. */
function copySegments(s: KvmSregs): KvmSregs {
  const c = (seg: KvmSegment): KvmSegment => ({ ...seg });
  return {
    ...s,
    cs: c(s.cs), ds: c(s.ds), es: c(s.es), fs: c(s.fs), gs: c(s.gs), ss: c(s.ss), tr: c(s.tr), ldt: c(s.ldt),
    gdt: { ...s.gdt }, idt: { ...s.idt },
    interruptBitmap: [...s.interruptBitmap],
  };
}

/** Loads the boot GDT/IDT and the flat data segments into every data selector. */
function withBootTables(s: KvmSregs, code: KvmSegment): KvmSregs {
  return {
    ...s,
    cs: code, ds: dataSegment(), es: dataSegment(), fs: dataSegment(), gs: dataSegment(), ss: dataSegment(),
    tr: tssSegment(),
    gdt: bootGdtr(), idt: bootIdtr(),
  };
}

/**
 * Special registers for the linux64 entry, derived from `current` (KVM_GET_SREGS):
 * CS = __BOOT_CS (64-bit), DS/ES/FS/GS/SS = __BOOT_DS, TR = boot TSS, GDTR/IDTR =
 * boot tables, CR3 = PML4, CR4 += PAE, EFER += LME|LMA, CR0 += PE|PG|ET.
 * CR0.CD/NW are cleared: caches are on when firmware hands over, and the kernel
 * expects that. Everything else (APIC base, CR8, pending interrupts) is kept.
 */
export function longModeSregs(current: KvmSregs): KvmSregs {
  const s = withBootTables(copySegments(current), code64Segment());
  s.cr0 = (s.cr0 | X86_CR0_PE | X86_CR0_PG | X86_CR0_ET) & ~(X86_CR0_CD | X86_CR0_NW);
  s.cr3 = BigInt(PML4_ADDR);
  s.cr4 = s.cr4 | X86_CR4_PAE;
  s.efer = s.efer | EFER_LME | EFER_LMA;
  return s;
}

/**
 * Special registers for the PVH entry, derived from `current`: 32-bit flat CS,
 * flat DS/ES/FS/GS/SS, TR a busy 32-bit TSS at base 0 with limit 0x67, CR0 =
 * PE (with the always-one ET) and every other CR0 and CR4 bit clear as the PVH
 * ABI asks, paging and long mode off (EFER.LME/LMA clear, CR3 0).
 */
export function protectedModeSregs(current: KvmSregs): KvmSregs {
  const s = withBootTables(copySegments(current), code32Segment());
  s.cr0 = X86_CR0_PE | X86_CR0_ET;
  s.cr3 = 0n;
  s.cr4 = 0n;
  s.efer = s.efer & ~(EFER_LME | EFER_LMA);
  return s;
}

/** All general-purpose registers zero, RFLAGS = reserved bit only. */
function zeroRegs(): KvmRegs {
  return {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
    r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
    rip: 0n, rflags: X86_EFLAGS_FIXED,
  };
}

/**
 * General registers for the linux64 entry: RIP = `entry`, RSI = `bootParamsAddr`
 * (the zero page), RSP = RBP = the boot stack, RFLAGS = 2 (interrupts off).
 */
export function initialRegs(entry: number, bootParamsAddr: number): KvmRegs {
  return { ...zeroRegs(), rip: BigInt(entry), rsi: BigInt(bootParamsAddr), rsp: BigInt(BOOT_STACK_POINTER), rbp: BigInt(BOOT_STACK_POINTER) };
}

/**
 * General registers for the PVH entry: EIP = `entry`, EBX = `startInfoAddr`
 * (hvm_start_info), RFLAGS = 2 (IF, TF and VM clear), a usable stack in RSP/RBP.
 */
export function pvhInitialRegs(entry: number, startInfoAddr: number): KvmRegs {
  return { ...zeroRegs(), rip: BigInt(entry), rbx: BigInt(startInfoAddr), rsp: BigInt(BOOT_STACK_POINTER), rbp: BigInt(BOOT_STACK_POINTER) };
}

/** The FPU state to set before boot: FCW 0x37f, MXCSR 0x1f80. */
export function defaultFpu(): KvmFpu {
  return { fcw: FPU_FCW_DEFAULT, mxcsr: MXCSR_DEFAULT };
}
