import test from 'ava';
import type { KvmSegment, KvmSregs } from '../../../../lib/kvm/types.js';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import { BOOT_CS, BOOT_CS32, BOOT_DS, BOOT_TSS, bootGdtr, buildGdt, decodeSegmentDescriptor, encodeSegmentDescriptor } from '../../../../arch/x86_64/gdt.js';
import { writeBlobs } from '../../../../arch/x86_64/guest-blob.js';
import { BOOT_GDT_ADDR, BOOT_STACK_POINTER, PML4_ADDR } from '../../../../arch/x86_64/layout.js';
import { buildIdentityPageTables } from '../../../../arch/x86_64/paging.js';
import { defaultFpu, initialRegs, longModeSregs, protectedModeSregs, pvhInitialRegs } from '../../../../arch/x86_64/regs.js';

const GiB = 1024 ** 3;

/** What KVM_GET_SREGS returns after vCPU reset (real mode, CS base 0xffff0000). */
function resetSregs(): KvmSregs {
  const seg = (selector: number, type: number, base = 0n): KvmSegment => ({ base, limit: 0xffff, selector, type, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0 });
  return {
    cs: seg(0xf000, 11, 0xffff0000n), ds: seg(0, 3), es: seg(0, 3), fs: seg(0, 3), gs: seg(0, 3), ss: seg(0, 3),
    tr: { ...seg(0, 11), s: 0 }, ldt: { ...seg(0, 2), s: 0 },
    gdt: { base: 0n, limit: 0xffff }, idt: { base: 0n, limit: 0xffff },
    cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0xfee00900n,
    interruptBitmap: [0n, 0n, 0n, 0n],
  };
}

test('selectors follow the Linux boot protocol (__BOOT_CS 0x10, __BOOT_DS 0x18)', (t) => {
  t.is(BOOT_CS, 0x10);
  t.is(BOOT_DS, 0x18);
  t.is(BOOT_CS32, 0x08);
  t.is(BOOT_TSS, 0x20);
});

test('GDT descriptors encode the classic flat values', (t) => {
  const gdt = new DataView(buildGdt().buffer);
  t.is(gdt.getBigUint64(0, true), 0n, 'null descriptor');
  t.is(gdt.getBigUint64(BOOT_CS32, true), 0x00cf9b000000ffffn);
  t.is(gdt.getBigUint64(BOOT_CS, true), 0x00af9b000000ffffn);
  t.is(gdt.getBigUint64(BOOT_DS, true), 0x00cf93000000ffffn);
  t.is(gdt.getBigUint64(BOOT_TSS, true), 0x00008b0000000067n);
  t.is(gdt.getBigUint64(BOOT_TSS + 8, true), 0n, 'TSS base bits 63:32');
  t.deepEqual(bootGdtr(), { base: BigInt(BOOT_GDT_ADDR), limit: 6 * 8 - 1 });
});

test('long-mode sregs match the GDT and enable paging', (t) => {
  const cur = resetSregs();
  const s = longModeSregs(cur);
  const gdt = new DataView(buildGdt().buffer);
  for (const seg of [s.cs, s.ds, s.es, s.fs, s.gs, s.ss, s.tr]) {
    t.deepEqual(decodeSegmentDescriptor(gdt.getBigUint64(seg.selector, true), seg.selector), seg);
    t.is(encodeSegmentDescriptor(seg), gdt.getBigUint64(seg.selector, true));
  }
  t.is(s.cs.selector, 0x10);
  t.is(s.cs.l, 1);
  t.is(s.cs.db, 0);
  t.is(s.ss.selector, 0x18);
  t.is(s.cr0 & 1n, 1n, 'PE');
  t.is(s.cr0 & (1n << 31n), 1n << 31n, 'PG');
  t.is(s.cr0 & (3n << 29n), 0n, 'CD/NW cleared');
  t.is(s.cr4 & (1n << 5n), 1n << 5n, 'PAE');
  t.is(s.efer & 0x500n, 0x500n, 'LME|LMA');
  t.is(s.cr3, BigInt(PML4_ADDR));
  t.is(s.gdt.base, BigInt(BOOT_GDT_ADDR));
  t.is(s.apicBase, 0xfee00900n, 'kept from KVM');
  t.deepEqual(s.ldt, cur.ldt);
  t.deepEqual(cur, resetSregs(), 'input not mutated');
});

test('protected-mode (PVH) sregs: 32-bit flat, paging off, TR a 0x67 TSS at 0', (t) => {
  const cur = { ...resetSregs(), efer: 0x500n, cr4: 0x20n };
  const s = protectedModeSregs(cur);
  t.is(s.cs.selector, 0x08);
  t.is(s.cs.db, 1);
  t.is(s.cs.l, 0);
  t.is(s.cs.limit, 0xffffffff);
  t.is(s.ds.limit, 0xffffffff);
  t.is(s.ds.db, 1);
  t.deepEqual([s.tr.base, s.tr.limit, s.tr.type, s.tr.s, s.tr.present], [0n, 0x67, 11, 0, 1]);
  t.is(s.cr0, 0x11n, 'PE (+ET) only');
  t.is(s.cr4, 0n);
  t.is(s.efer & 0x500n, 0n);
  t.is(cur.efer, 0x500n, 'input not mutated');
});

test('initial registers', (t) => {
  const r = initialRegs(0x1000000, 0x7000);
  t.is(r.rip, 0x1000000n);
  t.is(r.rsi, 0x7000n);
  t.is(r.rflags, 2n);
  t.is(r.rsp, BigInt(BOOT_STACK_POINTER));
  t.is(r.rbp, BigInt(BOOT_STACK_POINTER));
  t.is(r.rax + r.rbx + r.rcx + r.rdx + r.rdi, 0n);
  const p = pvhInitialRegs(0x1000040, 0x6000);
  t.is(p.rip, 0x1000040n);
  t.is(p.rbx, 0x6000n);
  t.is(p.rsi, 0n);
  t.is(p.rflags, 2n);
  t.deepEqual(defaultFpu(), { fcw: 0x37f, mxcsr: 0x1f80 });
});

/** Walks the 4-level page tables like the MMU (2 MiB or 1 GiB leaves; 4 KiB leaves unsupported here). */
function translate(mem: GuestMemory, cr3: number, va: number): number | undefined {
  const idx = (shift: number): number => Math.floor(va / 2 ** shift) % 512;
  const addrOf = (e: bigint): number => Number(e & 0x000ffffffffff000n);
  const pml4e = mem.readU64(cr3 + idx(39) * 8);
  if (!(pml4e & 1n)) return undefined;
  const pdpte = mem.readU64(addrOf(pml4e) + idx(30) * 8);
  if (!(pdpte & 1n)) return undefined;
  if (pdpte & 0x80n) return addrOf(pdpte) - (addrOf(pdpte) % GiB) + (va % GiB);
  const pde = mem.readU64(addrOf(pdpte) + idx(21) * 8);
  if (!(pde & 1n) || !(pde & 2n)) return undefined;
  if (!(pde & 0x80n)) throw new Error('4 KiB pages not expected');
  const base = Number(pde & 0x000fffffffe00000n);
  return base + (va % (2 * 1024 * 1024));
}

test('page tables identity-map 0..4 GiB and nothing beyond', (t) => {
  const mem = GuestMemory.fromBuffers([{ gpa: 0, size: 1024 * 1024 }]);
  writeBlobs(mem, buildIdentityPageTables());
  for (let va = 0; va < 4 * GiB; va += 2 * 1024 * 1024) {
    if (translate(mem, PML4_ADDR, va + 0x1234) !== va + 0x1234) {
      t.fail(`0x${va.toString(16)} not identity mapped`);
      return;
    }
  }
  t.is(translate(mem, PML4_ADDR, 4 * GiB - 1), 4 * GiB - 1);
  t.is(translate(mem, PML4_ADDR, 4 * GiB), undefined);
  t.is(translate(mem, PML4_ADDR, 512 * GiB), undefined);
});
