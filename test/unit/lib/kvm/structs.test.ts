/**
 * Struct layouts against the kernel's: sizes and field offsets were printed
 * with sizeof/offsetof by a C program compiled against linux/kvm.h and
 * asm/kvm.h (x86-64) and are pinned here. Each encoder is checked by
 * putting a distinct value in every field and reading it back at the C
 * offset; each decoder by a random round trip.
 */
import test from 'ava';
import fc from 'fast-check';
import * as s from '../../../../lib/kvm/structs.js';
import type { CpuidEntry, KvmRegs, KvmSegment, KvmSregs } from '../../../../lib/kvm/types.js';

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** sizeof(struct ...) from the C program. */
const C_SIZES = {
  kvm_regs: 144, kvm_sregs: 312, kvm_segment: 24, kvm_dtable: 16, kvm_fpu: 416, kvm_lapic_state: 1024,
  kvm_cpuid_entry2: 40, kvm_cpuid2: 8, kvm_msr_entry: 16, kvm_msrs: 8, kvm_userspace_memory_region: 32,
  kvm_irqfd: 32, kvm_ioeventfd: 64, kvm_pit_config: 64, kvm_irq_level: 8, kvm_create_device: 12, kvm_device_attr: 24,
};

/** offsetof(struct kvm_regs, ...). */
const REGS_OFF: Record<keyof KvmRegs, number> = {
  rax: 0, rbx: 8, rcx: 16, rdx: 24, rsi: 32, rdi: 40, rsp: 48, rbp: 56, r8: 64, r9: 72, r10: 80, r11: 88,
  r12: 96, r13: 104, r14: 112, r15: 120, rip: 128, rflags: 136,
};
/** offsetof(struct kvm_sregs, ...). */
const SREGS_OFF = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168, gdt: 192, idt: 208,
  cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apicBase: 272, interruptBitmap: 280,
};
/** offsetof(struct kvm_segment, ...) with each field's width in bytes. */
const SEG_OFF: Record<keyof KvmSegment, [number, number]> = {
  base: [0, 8], limit: [8, 4], selector: [12, 2], type: [14, 1], present: [15, 1], dpl: [16, 1], db: [17, 1],
  s: [18, 1], l: [19, 1], g: [20, 1], avl: [21, 1], unusable: [22, 1],
};
/** offsetof(struct kvm_cpuid_entry2, ...), relative to the entry. The array starts at offsetof(kvm_cpuid2, entries) = 8. */
const CPUID_OFF: Record<keyof CpuidEntry, number> = { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 };
const CPUID2_ENTRIES = 8;
const MSRS_ENTRIES = 8;
const MSR_ENTRY_INDEX = 0;
const MSR_ENTRY_DATA = 8;
const FPU_FCW = 128;
const FPU_MXCSR = 408;

/** Little-endian unsigned read of `width` bytes as a bigint. */
function readLe(b: Uint8Array, off: number, width: number): bigint {
  let v = 0n;
  for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[off + i]!);
  return v;
}

test('struct sizes match sizeof() from the kernel headers', (t) => {
  t.is(s.KVM_REGS_SIZE, C_SIZES.kvm_regs);
  t.is(s.KVM_SREGS_SIZE, C_SIZES.kvm_sregs);
  t.is(s.KVM_SEGMENT_SIZE, C_SIZES.kvm_segment);
  t.is(s.KVM_DTABLE_SIZE, C_SIZES.kvm_dtable);
  t.is(s.KVM_FPU_SIZE, C_SIZES.kvm_fpu);
  t.is(s.KVM_LAPIC_STATE_SIZE, C_SIZES.kvm_lapic_state);
  t.is(s.KVM_CPUID_ENTRY2_SIZE, C_SIZES.kvm_cpuid_entry2);
  t.is(s.KVM_MSR_ENTRY_SIZE, C_SIZES.kvm_msr_entry);
  t.is(s.KVM_USERSPACE_MEMORY_REGION_SIZE, C_SIZES.kvm_userspace_memory_region);
  t.is(s.KVM_IRQFD_SIZE, C_SIZES.kvm_irqfd);
  t.is(s.KVM_IOEVENTFD_SIZE, C_SIZES.kvm_ioeventfd);
  t.is(s.KVM_PIT_CONFIG_SIZE, C_SIZES.kvm_pit_config);
});

test('encoders produce buffers of the C size', (t) => {
  t.is(s.encodeRegs(s.emptyRegs()).length, C_SIZES.kvm_regs);
  t.is(s.encodeSregs(s.decodeSregs(new Uint8Array(312))).length, C_SIZES.kvm_sregs);
  t.is(s.encodeFpu({ fcw: 0, mxcsr: 0 }).length, C_SIZES.kvm_fpu);
  t.is(s.encodeCpuid([]).length, C_SIZES.kvm_cpuid2);
  t.is(s.encodeCpuid([{ function: 0, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }]).length, C_SIZES.kvm_cpuid2 + C_SIZES.kvm_cpuid_entry2);
  t.is(s.encodeMsrs([{ index: 0, data: 0n }, { index: 1, data: 0n }]).length, C_SIZES.kvm_msrs + 2 * C_SIZES.kvm_msr_entry);
  t.is(s.encodeMemoryRegion(0, 0, 0, 0, 0n).length, C_SIZES.kvm_userspace_memory_region);
  t.is(s.encodeIrqfd(0, 0, 0).length, C_SIZES.kvm_irqfd);
  t.is(s.encodeIoeventfd(0, 0, 0, 0).length, C_SIZES.kvm_ioeventfd);
  t.is(s.encodePitConfig(0).length, C_SIZES.kvm_pit_config);
  t.is(s.encodeIrqLevel(0, 0).length, C_SIZES.kvm_irq_level);
  t.is(s.encodeCreateDevice(0).length, C_SIZES.kvm_create_device);
  t.is(s.encodeDeviceAttr(0, 0n, 0n).length, C_SIZES.kvm_device_attr);
});

test('kvm_regs: every register at its offsetof()', (t) => {
  const regs = s.emptyRegs();
  const names = Object.keys(REGS_OFF) as (keyof KvmRegs)[];
  // A distinct value per register, with bytes that differ (so a shifted field is caught).
  names.forEach((n, i) => { regs[n] = 0x0102030405060700n + BigInt(i) + (BigInt(i) << 56n); });
  const b = s.encodeRegs(regs);
  for (const n of names) t.is(readLe(b, REGS_OFF[n], 8), regs[n], n);
});

function distinctSegment(seed: number): KvmSegment {
  return {
    base: 0x1122334455667788n + BigInt(seed), limit: 0xa0b0c0d0 + seed, selector: 0x1000 + seed, type: 0x10 + seed,
    present: 0x20 + seed, dpl: 0x30 + seed, db: 0x40 + seed, s: 0x50 + seed, l: 0x60 + seed, g: 0x70 + seed,
    avl: 0x80 + seed, unusable: 0x90 + seed,
  };
}

function distinctSregs(): KvmSregs {
  return {
    cs: distinctSegment(1), ds: distinctSegment(2), es: distinctSegment(3), fs: distinctSegment(4), gs: distinctSegment(5),
    ss: distinctSegment(6), tr: distinctSegment(7), ldt: distinctSegment(8),
    gdt: { base: 0xfedcba9876543210n, limit: 0x1234 }, idt: { base: 0x0f1e2d3c4b5a6978n, limit: 0x5678 },
    cr0: 0x8000_0011n, cr2: 0xdead_0000_beefn, cr3: 0x1000_2000n, cr4: 0x20n, cr8: 0xfn, efer: 0x500n, apicBase: 0xfee0_0900n,
    interruptBitmap: [1n, 1n << 33n, 0x8000_0000_0000_0000n, 0x0123_4567_89ab_cdefn],
  };
}

test('kvm_sregs: segments, dtables, control registers and bitmap at their offsetof()', (t) => {
  const sr = distinctSregs();
  const b = s.encodeSregs(sr);
  for (const seg of ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const) {
    for (const [field, [off, width]] of Object.entries(SEG_OFF) as [keyof KvmSegment, [number, number]][]) {
      t.is(readLe(b, SREGS_OFF[seg] + off, width), BigInt(sr[seg][field]), `${seg}.${field}`);
    }
    t.is(b[SREGS_OFF[seg] + 23], 0, `${seg}.padding stays zero`);
  }
  // struct kvm_dtable { u64 base; u16 limit; u16 padding[3]; }
  t.is(readLe(b, SREGS_OFF.gdt, 8), sr.gdt.base);
  t.is(readLe(b, SREGS_OFF.gdt + 8, 2), BigInt(sr.gdt.limit));
  t.is(readLe(b, SREGS_OFF.idt, 8), sr.idt.base);
  t.is(readLe(b, SREGS_OFF.idt + 8, 2), BigInt(sr.idt.limit));
  for (const cr of ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const) t.is(readLe(b, SREGS_OFF[cr], 8), sr[cr], cr);
  sr.interruptBitmap.forEach((w, i) => t.is(readLe(b, SREGS_OFF.interruptBitmap + i * 8, 8), w, `interrupt_bitmap[${i}]`));
});

test('kvm_cpuid2 / kvm_cpuid_entry2: header and entry fields at their offsetof()', (t) => {
  const entries: CpuidEntry[] = [
    { function: 0x8000_0001, index: 2, flags: 1, eax: 0xaaaa_aaaa, ebx: 0xbbbb_bbbb, ecx: 0xcccc_cccc, edx: 0xdddd_dddd },
    { function: 7, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 },
  ];
  const b = s.encodeCpuid(entries);
  t.is(readLe(b, 0, 4), 2n, 'nent');
  entries.forEach((e, i) => {
    const base = CPUID2_ENTRIES + i * C_SIZES.kvm_cpuid_entry2;
    for (const [k, off] of Object.entries(CPUID_OFF) as [keyof CpuidEntry, number][]) t.is(readLe(b, base + off, 4), BigInt(e[k]), `entry ${i}.${k}`);
  });
});

test('kvm_msrs / kvm_msr_entry: header and entry fields at their offsetof()', (t) => {
  const b = s.encodeMsrs([{ index: 0xc000_0080, data: 0x0102_0304_0506_0708n }, { index: 0x10, data: 0xffff_ffff_ffff_ffffn }]);
  t.is(readLe(b, 0, 4), 2n, 'nmsrs');
  t.is(readLe(b, MSRS_ENTRIES + MSR_ENTRY_INDEX, 4), 0xc000_0080n);
  t.is(readLe(b, MSRS_ENTRIES + MSR_ENTRY_DATA, 8), 0x0102_0304_0506_0708n);
  t.is(readLe(b, MSRS_ENTRIES + 16 + MSR_ENTRY_INDEX, 4), 0x10n);
  t.is(readLe(b, MSRS_ENTRIES + 16 + MSR_ENTRY_DATA, 8), 0xffff_ffff_ffff_ffffn);
});

test('kvm_fpu: fcw and mxcsr at their offsetof()', (t) => {
  const b = s.encodeFpu({ fcw: 0x037f, mxcsr: 0x1f80 });
  t.is(readLe(b, FPU_FCW, 2), 0x037fn);
  t.is(readLe(b, FPU_MXCSR, 4), 0x1f80n);
  t.is(b.reduce((n, x) => n + (x ? 1 : 0), 0), 4, 'no other byte set');
});

test('kvm_userspace_memory_region fields at their offsetof()', (t) => {
  const b = s.encodeMemoryRegion(7, 2, 0x1_0000_0000, 0x4000_0000, 0x7f00_1234_5000n);
  t.is(readLe(b, 0, 4), 7n, 'slot');
  t.is(readLe(b, 4, 4), 2n, 'flags');
  t.is(readLe(b, 8, 8), 0x1_0000_0000n, 'guest_phys_addr');
  t.is(readLe(b, 16, 8), 0x4000_0000n, 'memory_size');
  t.is(readLe(b, 24, 8), 0x7f00_1234_5000n, 'userspace_addr');
});

test('kvm_irqfd, kvm_ioeventfd, kvm_pit_config, kvm_irq_level fields at their offsetof()', (t) => {
  const irqfd = s.encodeIrqfd(9, 5, s.KVM_IRQFD_FLAG_DEASSIGN);
  t.is(readLe(irqfd, 0, 4), 9n, 'irqfd.fd');
  t.is(readLe(irqfd, 4, 4), 5n, 'irqfd.gsi');
  t.is(readLe(irqfd, 8, 4), 1n, 'irqfd.flags');
  t.is(readLe(irqfd, 12, 4), 0n, 'irqfd.resamplefd');

  const ioev = s.encodeIoeventfd(0xd000_0050, 4, 11, s.KVM_IOEVENTFD_FLAG_DATAMATCH | s.KVM_IOEVENTFD_FLAG_PIO, 0xdead_beef_cafen);
  t.is(readLe(ioev, 0, 8), 0xdead_beef_cafen, 'ioeventfd.datamatch');
  t.is(readLe(ioev, 8, 8), 0xd000_0050n, 'ioeventfd.addr');
  t.is(readLe(ioev, 16, 4), 4n, 'ioeventfd.len');
  t.is(readLe(ioev, 20, 4), 11n, 'ioeventfd.fd');
  t.is(readLe(ioev, 24, 4), 3n, 'ioeventfd.flags');
  t.is(dv(s.encodeIoeventfd(0, 0, -1, 0)).getInt32(20, true), -1, 'ioeventfd.fd is signed');

  t.is(readLe(s.encodePitConfig(s.KVM_PIT_SPEAKER_DUMMY), 0, 4), 1n, 'pit_config.flags');
  const lvl = s.encodeIrqLevel(4, 1);
  t.is(readLe(lvl, 0, 4), 4n, 'irq_level.irq');
  t.is(readLe(lvl, 4, 4), 1n, 'irq_level.level');
});

test('kvm_create_device and kvm_device_attr fields at their offsetof()', (t) => {
  const cd = s.encodeCreateDevice(5, 1);
  t.is(readLe(cd, 0, 4), 5n, 'type');
  t.is(readLe(cd, 4, 4), 0n, 'fd (output)');
  t.is(readLe(cd, 8, 4), 1n, 'flags');
  const da = s.encodeDeviceAttr(3, 0x0102_0304_0506n, 0x7fff_0000_1000n);
  t.is(readLe(da, 0, 4), 0n, 'flags');
  t.is(readLe(da, 4, 4), 3n, 'group');
  t.is(readLe(da, 8, 8), 0x0102_0304_0506n, 'attr');
  t.is(readLe(da, 16, 8), 0x7fff_0000_1000n, 'addr');
});

test('ioctl flag constants match linux/kvm.h', (t) => {
  t.is(s.KVM_IRQFD_FLAG_DEASSIGN, 1);
  t.is(s.KVM_IOEVENTFD_FLAG_DATAMATCH, 1);
  t.is(s.KVM_IOEVENTFD_FLAG_PIO, 2);
  t.is(s.KVM_IOEVENTFD_FLAG_DEASSIGN, 4);
  t.is(s.KVM_PIT_SPEAKER_DUMMY, 1);
});

// --- random round trips ---

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });

const regsArb = fc.record(Object.fromEntries(Object.keys(REGS_OFF).map((k) => [k, u64])) as Record<keyof KvmRegs, fc.Arbitrary<bigint>>);
const segArb: fc.Arbitrary<KvmSegment> = fc.record({
  base: u64, limit: u32, selector: u16, type: u8, present: u8, dpl: u8, db: u8, s: u8, l: u8, g: u8, avl: u8, unusable: u8,
});
const dtArb = fc.record({ base: u64, limit: u16 });
const sregsArb: fc.Arbitrary<KvmSregs> = fc.record({
  cs: segArb, ds: segArb, es: segArb, fs: segArb, gs: segArb, ss: segArb, tr: segArb, ldt: segArb,
  gdt: dtArb, idt: dtArb, cr0: u64, cr2: u64, cr3: u64, cr4: u64, cr8: u64, efer: u64, apicBase: u64,
  interruptBitmap: fc.tuple(u64, u64, u64, u64),
});
const cpuidArb: fc.Arbitrary<CpuidEntry> = fc.record({ function: u32, index: u32, flags: u32, eax: u32, ebx: u32, ecx: u32, edx: u32 });

test('regs round trip encode -> decode (random)', (t) => {
  fc.assert(fc.property(regsArb, (r) => { t.deepEqual(s.decodeRegs(s.encodeRegs(r)), r); }), { numRuns: 300 });
});

test('sregs round trip encode -> decode (random)', (t) => {
  fc.assert(fc.property(sregsArb, (sr) => { t.deepEqual(s.decodeSregs(s.encodeSregs(sr)), sr); }), { numRuns: 300 });
});

test('cpuid round trip encode -> decode (random)', (t) => {
  fc.assert(fc.property(fc.array(cpuidArb, { maxLength: 40 }), (es) => { t.deepEqual(s.decodeCpuid(s.encodeCpuid(es)), es); }), { numRuns: 300 });
});

test('msrs round trip encode -> decode (random)', (t) => {
  const msrArb = fc.array(fc.record({ index: u32, data: u64 }), { maxLength: 40 });
  fc.assert(fc.property(msrArb, (ms) => { t.deepEqual(s.decodeMsrs(s.encodeMsrs(ms), ms.length), ms); }), { numRuns: 300 });
});

test('fpu round trip encode -> decode (random)', (t) => {
  fc.assert(fc.property(fc.record({ fcw: u16, mxcsr: u32 }), (f) => { t.deepEqual(s.decodeFpu(s.encodeFpu(f)), f); }), { numRuns: 300 });
});

test('decodeCpuid refuses an nent larger than the buffer', (t) => {
  const b = s.encodeCpuid([{ function: 0, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }]);
  dv(b).setUint32(0, 2, true);
  t.throws(() => s.decodeCpuid(b), { instanceOf: RangeError });
  dv(b).setUint32(0, 0xffff_ffff, true);
  t.throws(() => s.decodeCpuid(b), { instanceOf: RangeError });
});

test('decodeMsrs reads only `count` entries (what KVM_GET_MSRS returned)', (t) => {
  const b = s.encodeMsrs([{ index: 1, data: 10n }, { index: 2, data: 20n }, { index: 3, data: 30n }]);
  t.deepEqual(s.decodeMsrs(b, 2), [{ index: 1, data: 10n }, { index: 2, data: 20n }]);
  t.deepEqual(s.decodeMsrs(b, 0), []);
});

// --- bigint masking: negative or oversized values are stored modulo 2^64 ---

test('negative bigints are masked to u64 two\'s complement', (t) => {
  const r = { ...s.emptyRegs(), rax: -1n, rbx: -2n, rip: -(1n << 63n) };
  const back = s.decodeRegs(s.encodeRegs(r));
  t.is(back.rax, 0xffff_ffff_ffff_ffffn);
  t.is(back.rbx, 0xffff_ffff_ffff_fffen);
  t.is(back.rip, 0x8000_0000_0000_0000n);

  const sr = distinctSregs();
  sr.cs.base = -4096n;
  sr.cr3 = -1n;
  sr.gdt.base = -8n;
  sr.interruptBitmap = [-1n, 0n, 0n, 0n];
  const sb = s.decodeSregs(s.encodeSregs(sr));
  t.is(sb.cs.base, 0xffff_ffff_ffff_f000n);
  t.is(sb.cr3, 0xffff_ffff_ffff_ffffn);
  t.is(sb.gdt.base, 0xffff_ffff_ffff_fff8n);
  t.is(sb.interruptBitmap[0], 0xffff_ffff_ffff_ffffn);

  t.deepEqual(s.decodeMsrs(s.encodeMsrs([{ index: 0x1b, data: -1n }]), 1), [{ index: 0x1b, data: 0xffff_ffff_ffff_ffffn }]);
  // Values wider than 64 bits keep their low 64 bits.
  t.is(s.decodeRegs(s.encodeRegs({ ...s.emptyRegs(), rcx: (1n << 64n) + 5n })).rcx, 5n);
});

test('negative u32 fields are stored as their unsigned value', (t) => {
  const [e] = s.decodeCpuid(s.encodeCpuid([{ function: -1, index: -2, flags: 0, eax: -1, ebx: 0, ecx: 0, edx: 0 }]));
  t.is(e!.function, 0xffff_ffff);
  t.is(e!.index, 0xffff_fffe);
  t.is(e!.eax, 0xffff_ffff);
  t.is(s.decodeMsrs(s.encodeMsrs([{ index: -1, data: 0n }]), 1)[0]!.index, 0xffff_ffff);
  t.is(s.decodeFpu(s.encodeFpu({ fcw: 0x37f, mxcsr: -1 })).mxcsr, 0xffff_ffff);
});
