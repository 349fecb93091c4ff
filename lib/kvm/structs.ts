/**
 * Byte layouts of the KVM structures (x86-64 ABI, little-endian), as
 * encode/decode pairs between the shapes in types.ts and Uint8Arrays that are
 * passed to ioctl. Offsets follow linux/kvm.h and asm/kvm.h; the unit tests
 * pin the sizes.
 */
import type { CpuidEntry, KvmDtable, KvmFpu, KvmRegs, KvmSegment, KvmSregs, MsrEntry } from './types.js';

export const KVM_REGS_SIZE = 144;
export const KVM_SREGS_SIZE = 312;
export const KVM_SEGMENT_SIZE = 24;
export const KVM_DTABLE_SIZE = 16;
export const KVM_FPU_SIZE = 416;
export const KVM_LAPIC_STATE_SIZE = 1024;
export const KVM_CPUID_ENTRY2_SIZE = 40;
export const KVM_MSR_ENTRY_SIZE = 16;
export const KVM_USERSPACE_MEMORY_REGION_SIZE = 32;
export const KVM_IRQFD_SIZE = 32;
export const KVM_IOEVENTFD_SIZE = 64;
export const KVM_PIT_CONFIG_SIZE = 64;

const REG_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const;

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export function encodeRegs(r: KvmRegs): Uint8Array {
  const b = new Uint8Array(KVM_REGS_SIZE);
  const d = dv(b);
  REG_NAMES.forEach((n, i) => d.setBigUint64(i * 8, BigInt.asUintN(64, r[n]), true));
  return b;
}

export function decodeRegs(b: Uint8Array): KvmRegs {
  const d = dv(b);
  const r = {} as KvmRegs;
  REG_NAMES.forEach((n, i) => { r[n] = d.getBigUint64(i * 8, true); });
  return r;
}

/** A zeroed KvmRegs. */
export function emptyRegs(): KvmRegs {
  return decodeRegs(new Uint8Array(KVM_REGS_SIZE));
}

function encodeSegment(d: DataView, o: number, s: KvmSegment): void {
  d.setBigUint64(o, BigInt.asUintN(64, s.base), true);
  d.setUint32(o + 8, s.limit >>> 0, true);
  d.setUint16(o + 12, s.selector, true);
  d.setUint8(o + 14, s.type);
  d.setUint8(o + 15, s.present);
  d.setUint8(o + 16, s.dpl);
  d.setUint8(o + 17, s.db);
  d.setUint8(o + 18, s.s);
  d.setUint8(o + 19, s.l);
  d.setUint8(o + 20, s.g);
  d.setUint8(o + 21, s.avl);
  d.setUint8(o + 22, s.unusable);
}

function decodeSegment(d: DataView, o: number): KvmSegment {
  return {
    base: d.getBigUint64(o, true), limit: d.getUint32(o + 8, true), selector: d.getUint16(o + 12, true),
    type: d.getUint8(o + 14), present: d.getUint8(o + 15), dpl: d.getUint8(o + 16), db: d.getUint8(o + 17),
    s: d.getUint8(o + 18), l: d.getUint8(o + 19), g: d.getUint8(o + 20), avl: d.getUint8(o + 21),
    unusable: d.getUint8(o + 22),
  };
}

function encodeDtable(d: DataView, o: number, t: KvmDtable): void {
  d.setBigUint64(o, BigInt.asUintN(64, t.base), true);
  d.setUint16(o + 8, t.limit, true);
}

function decodeDtable(d: DataView, o: number): KvmDtable {
  return { base: d.getBigUint64(o, true), limit: d.getUint16(o + 8, true) };
}

const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SREGS_GDT = 192;
const SREGS_IDT = 208;
const SREGS_CRS = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const; // u64s from offset 224
const SREGS_CR0 = 224;
const SREGS_INTERRUPT_BITMAP = 280;

export function encodeSregs(s: KvmSregs): Uint8Array {
  const b = new Uint8Array(KVM_SREGS_SIZE);
  const d = dv(b);
  SEGMENTS.forEach((n, i) => encodeSegment(d, i * KVM_SEGMENT_SIZE, s[n]));
  encodeDtable(d, SREGS_GDT, s.gdt);
  encodeDtable(d, SREGS_IDT, s.idt);
  SREGS_CRS.forEach((n, i) => d.setBigUint64(SREGS_CR0 + i * 8, BigInt.asUintN(64, s[n]), true));
  s.interruptBitmap.forEach((w, i) => d.setBigUint64(SREGS_INTERRUPT_BITMAP + i * 8, w, true));
  return b;
}

export function decodeSregs(b: Uint8Array): KvmSregs {
  const d = dv(b);
  const s = {} as KvmSregs;
  SEGMENTS.forEach((n, i) => { s[n] = decodeSegment(d, i * KVM_SEGMENT_SIZE); });
  s.gdt = decodeDtable(d, SREGS_GDT);
  s.idt = decodeDtable(d, SREGS_IDT);
  SREGS_CRS.forEach((n, i) => { s[n] = d.getBigUint64(SREGS_CR0 + i * 8, true); });
  s.interruptBitmap = [0, 1, 2, 3].map((i) => d.getBigUint64(SREGS_INTERRUPT_BITMAP + i * 8, true)) as KvmSregs['interruptBitmap'];
  return s;
}

/** struct kvm_cpuid2 { u32 nent; u32 padding; entries[] } */
export function encodeCpuid(entries: readonly CpuidEntry[]): Uint8Array {
  const b = new Uint8Array(8 + entries.length * KVM_CPUID_ENTRY2_SIZE);
  const d = dv(b);
  d.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    const o = 8 + i * KVM_CPUID_ENTRY2_SIZE;
    d.setUint32(o, e.function >>> 0, true);
    d.setUint32(o + 4, e.index >>> 0, true);
    d.setUint32(o + 8, e.flags >>> 0, true);
    d.setUint32(o + 12, e.eax >>> 0, true);
    d.setUint32(o + 16, e.ebx >>> 0, true);
    d.setUint32(o + 20, e.ecx >>> 0, true);
    d.setUint32(o + 24, e.edx >>> 0, true);
  });
  return b;
}

export function decodeCpuid(b: Uint8Array): CpuidEntry[] {
  const d = dv(b);
  const n = d.getUint32(0, true);
  if (8 + n * KVM_CPUID_ENTRY2_SIZE > b.length) throw new RangeError(`kvm_cpuid2 claims ${n} entries, buffer holds fewer`);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + i * KVM_CPUID_ENTRY2_SIZE;
    out.push({
      function: d.getUint32(o, true), index: d.getUint32(o + 4, true), flags: d.getUint32(o + 8, true),
      eax: d.getUint32(o + 12, true), ebx: d.getUint32(o + 16, true), ecx: d.getUint32(o + 20, true), edx: d.getUint32(o + 24, true),
    });
  }
  return out;
}

/** struct kvm_msrs { u32 nmsrs; u32 pad; struct kvm_msr_entry { u32 index; u32 reserved; u64 data; }[] } */
export function encodeMsrs(entries: readonly MsrEntry[]): Uint8Array {
  const b = new Uint8Array(8 + entries.length * KVM_MSR_ENTRY_SIZE);
  const d = dv(b);
  d.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    d.setUint32(8 + i * KVM_MSR_ENTRY_SIZE, e.index >>> 0, true);
    d.setBigUint64(8 + i * KVM_MSR_ENTRY_SIZE + 8, BigInt.asUintN(64, e.data), true);
  });
  return b;
}

export function decodeMsrs(b: Uint8Array, count: number): MsrEntry[] {
  const d = dv(b);
  const out: MsrEntry[] = [];
  for (let i = 0; i < count; i++) {
    out.push({ index: d.getUint32(8 + i * KVM_MSR_ENTRY_SIZE, true), data: d.getBigUint64(8 + i * KVM_MSR_ENTRY_SIZE + 8, true) });
  }
  return out;
}

/** Offsets inside struct kvm_fpu. */
const FPU_FCW = 128;
const FPU_MXCSR = 408;

export function encodeFpu(f: KvmFpu): Uint8Array {
  const b = new Uint8Array(KVM_FPU_SIZE);
  const d = dv(b);
  d.setUint16(FPU_FCW, f.fcw, true);
  d.setUint32(FPU_MXCSR, f.mxcsr >>> 0, true);
  return b;
}

export function decodeFpu(b: Uint8Array): KvmFpu {
  const d = dv(b);
  return { fcw: d.getUint16(FPU_FCW, true), mxcsr: d.getUint32(FPU_MXCSR, true) };
}

/** struct kvm_userspace_memory_region. */
export function encodeMemoryRegion(slot: number, flags: number, gpa: number, size: number, hostAddr: bigint): Uint8Array {
  const b = new Uint8Array(KVM_USERSPACE_MEMORY_REGION_SIZE);
  const d = dv(b);
  d.setUint32(0, slot, true);
  d.setUint32(4, flags, true);
  d.setBigUint64(8, BigInt(gpa), true);
  d.setBigUint64(16, BigInt(size), true);
  d.setBigUint64(24, hostAddr, true);
  return b;
}

/** struct kvm_irq_level { u32 irq; u32 level; } */
export function encodeIrqLevel(irq: number, level: number): Uint8Array {
  const b = new Uint8Array(8);
  const d = dv(b);
  d.setUint32(0, irq, true);
  d.setUint32(4, level, true);
  return b;
}

export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;

/** struct kvm_irqfd { u32 fd; u32 gsi; u32 flags; u32 resamplefd; u8 pad[16]; } */
export function encodeIrqfd(fd: number, gsi: number, flags: number): Uint8Array {
  const b = new Uint8Array(KVM_IRQFD_SIZE);
  const d = dv(b);
  d.setUint32(0, fd, true);
  d.setUint32(4, gsi, true);
  d.setUint32(8, flags, true);
  return b;
}

export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

/** struct kvm_ioeventfd { u64 datamatch; u64 addr; u32 len; s32 fd; u32 flags; u8 pad[36]; } */
export function encodeIoeventfd(addr: number, len: number, fd: number, flags: number, datamatch = 0n): Uint8Array {
  const b = new Uint8Array(KVM_IOEVENTFD_SIZE);
  const d = dv(b);
  d.setBigUint64(0, datamatch, true);
  d.setBigUint64(8, BigInt(addr), true);
  d.setUint32(16, len, true);
  d.setInt32(20, fd, true);
  d.setUint32(24, flags, true);
  return b;
}

/** KVM_PIT_SPEAKER_DUMMY: emulate the PC speaker port so guests don't trap on it. */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** struct kvm_pit_config { u32 flags; u32 pad[15]; } */
export function encodePitConfig(flags: number): Uint8Array {
  const b = new Uint8Array(KVM_PIT_CONFIG_SIZE);
  dv(b).setUint32(0, flags, true);
  return b;
}

/** struct kvm_create_device { u32 type; u32 fd; u32 flags; } */
export function encodeCreateDevice(type: number, flags = 0): Uint8Array {
  const b = new Uint8Array(12);
  const d = dv(b);
  d.setUint32(0, type, true);
  d.setUint32(8, flags, true);
  return b;
}

/** struct kvm_device_attr { u32 flags; u32 group; u64 attr; u64 addr; } */
export function encodeDeviceAttr(group: number, attr: bigint, addr: bigint): Uint8Array {
  const b = new Uint8Array(24);
  const d = dv(b);
  d.setUint32(4, group, true);
  d.setBigUint64(8, attr, true);
  d.setBigUint64(16, addr, true);
  return b;
}
