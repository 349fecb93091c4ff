/**
 * Plain TypeScript shapes of the KVM structures that cross the ioctl layer.
 * Encoding/decoding to the kernel's byte layout lives in structs.ts.
 * All 64-bit register values are bigint.
 */

/** struct kvm_regs (x86-64). */
export interface KvmRegs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint;
  rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint;
  r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/** struct kvm_segment. */
export interface KvmSegment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** struct kvm_dtable (GDTR/IDTR). */
export interface KvmDtable {
  base: bigint;
  limit: number;
}

/** struct kvm_sregs (x86-64). */
export interface KvmSregs {
  cs: KvmSegment; ds: KvmSegment; es: KvmSegment; fs: KvmSegment; gs: KvmSegment; ss: KvmSegment;
  tr: KvmSegment; ldt: KvmSegment;
  gdt: KvmDtable; idt: KvmDtable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** 256-bit pending-interrupt bitmap as four u64. */
  interruptBitmap: [bigint, bigint, bigint, bigint];
}

/** struct kvm_cpuid_entry2. */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry is selected by `index` (ECX) too. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

/** struct kvm_msr_entry (index + data). */
export interface MsrEntry {
  index: number;
  data: bigint;
}

/** struct kvm_fpu, the parts a VMM sets at boot. */
export interface KvmFpu {
  /** FPU control word (FCW). */
  fcw: number;
  /** MXCSR. */
  mxcsr: number;
}
