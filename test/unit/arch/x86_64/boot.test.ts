import test from 'ava';
import { ConfigError, LoaderError } from '../../../../lib/errors.js';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import { detectKernelFormat, prepareX86Boot, X86_64_DEFAULT_CMDLINE } from '../../../../arch/x86_64/boot.js';
import { CMDLINE_ADDR, MP_FLOATING_POINTER_ADDR, PML4_ADDR, PVH_START_INFO_ADDR, ramRegions, ZERO_PAGE_ADDR, BOOT_GDT_ADDR } from '../../../../arch/x86_64/layout.js';
import { XEN_ELFNOTE_PHYS32_ENTRY } from '../../../../arch/x86_64/loader/elf.js';
import { longModeSregs } from '../../../../arch/x86_64/regs.js';
import type { KvmSregs } from '../../../../lib/kvm/types.js';
import { makeBzImage, makeElf, makeNote, pattern, PT_NOTE, u32 } from './images.js';

const MiB = 1024 ** 2;
const mem = (size = 64 * MiB): GuestMemory => GuestMemory.fromBuffers(ramRegions(size));
const text = pattern(4096, 3);
const elfWithPvh = (): Uint8Array =>
  makeElf({ entry: 0x1000000n, segments: [{ paddr: 0x1000000, data: text, memsz: 0x10000 }, { type: PT_NOTE, paddr: 0, data: makeNote('Xen\0', XEN_ELFNOTE_PHYS32_ENTRY, u32(0x1000100)) }] });

const cstring = (m: GuestMemory, addr: number): string => {
  let s = '';
  for (let a = addr; m.readU8(a) !== 0; a++) s += String.fromCharCode(m.readU8(a));
  return s;
};

const blankSregs = (): KvmSregs => {
  const seg = { base: 0n, limit: 0xffff, selector: 0, type: 3, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0 };
  return { cs: seg, ds: seg, es: seg, fs: seg, gs: seg, ss: seg, tr: seg, ldt: seg, gdt: { base: 0n, limit: 0 }, idt: { base: 0n, limit: 0 }, cr0: 0x60000010n, cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n, efer: 0n, apicBase: 0n, interruptBitmap: [0n, 0n, 0n, 0n] };
};

test('default cmdline: ttyS0 console, no PCI, no bogus nomodules', (t) => {
  t.regex(X86_64_DEFAULT_CMDLINE, /(^| )console=ttyS0( |$)/);
  t.regex(X86_64_DEFAULT_CMDLINE, /pci=off/);
  t.notRegex(X86_64_DEFAULT_CMDLINE, /nomodules/);
});

test('detects ELF and bzImage, refuses anything else', (t) => {
  t.is(detectKernelFormat(elfWithPvh()), 'elf');
  t.is(detectKernelFormat(makeBzImage()), 'bzimage');
  for (const junk of [new Uint8Array(0), new Uint8Array(3), pattern(4096)]) {
    t.throws(() => detectKernelFormat(junk), { instanceOf: LoaderError });
  }
});

test('ELF via linux64: zero page, cmdline, initrd, MP table, GDT, page tables, registers', (t) => {
  const m = mem();
  const initrd = pattern(100000, 7);
  const r = prepareX86Boot(m, { kernel: elfWithPvh(), initrd, cmdline: X86_64_DEFAULT_CMDLINE, vcpus: 2 });
  t.is(r.kernel, 'elf');
  t.is(r.protocol, 'linux64');
  t.is(r.entry, 0x1000000);
  t.is(r.regs.rip, 0x1000000n);
  t.is(r.regs.rsi, BigInt(ZERO_PAGE_ADDR));
  t.is(cstring(m, CMDLINE_ADDR), X86_64_DEFAULT_CMDLINE);
  t.deepEqual(r.initrd, { addr: 64 * MiB - 102400, size: 100000 });
  t.deepEqual(m.read(r.initrd!.addr, initrd.length), initrd);
  t.is(m.readU32(ZERO_PAGE_ADDR + 0x202), 0x53726448);
  t.is(m.readU32(ZERO_PAGE_ADDR + 0x228), CMDLINE_ADDR);
  t.is(m.readU32(ZERO_PAGE_ADDR + 0x218), r.initrd!.addr);
  t.is(m.readU32(ZERO_PAGE_ADDR + 0x21c), 100000);
  t.is(m.readU8(ZERO_PAGE_ADDR + 0x1e8), 4);
  t.is(m.readU32(MP_FLOATING_POINTER_ADDR), 0x5f504d5f); // "_MP_"
  t.is(m.readU64(BOOT_GDT_ADDR + 0x10), 0x00af9b000000ffffn);
  t.not(m.readU64(PML4_ADDR), 0n);
  const s = r.sregsFor(blankSregs());
  t.deepEqual(s, longModeSregs(blankSregs()));
  t.deepEqual(r.fpu, { fcw: 0x37f, mxcsr: 0x1f80 });
});

test('ELF via PVH: start_info, 32-bit entry, ebx', (t) => {
  const m = mem();
  const r = prepareX86Boot(m, { kernel: elfWithPvh(), initrd: pattern(5000), cmdline: 'console=ttyS0', vcpus: 1, bootProtocol: 'pvh' });
  t.is(r.protocol, 'pvh');
  t.is(r.entry, 0x1000100);
  t.is(r.regs.rip, 0x1000100n);
  t.is(r.regs.rbx, BigInt(PVH_START_INFO_ADDR));
  t.is(m.readU32(PVH_START_INFO_ADDR), 0x336ec578);
  t.is(m.readU32(PVH_START_INFO_ADDR + 0x0c), 1);
  t.is(Number(m.readU64(PVH_START_INFO_ADDR + 0x18)), CMDLINE_ADDR);
  const s = r.sregsFor(blankSregs());
  t.is(s.cs.db, 1);
  t.is(s.cs.l, 0);
  t.is(s.cr0 & (1n << 31n), 0n);
});

test('bzImage via linux64: header copied into the zero page, entry at 1 MiB + 0x200', (t) => {
  const m = mem();
  const r = prepareX86Boot(m, { kernel: makeBzImage({ cmdlineSize: 255 }), cmdline: 'console=ttyS0', vcpus: 4 });
  t.is(r.kernel, 'bzimage');
  t.is(r.entry, 0x100200);
  t.is(r.regs.rip, 0x100200n);
  t.is(m.readU32(ZERO_PAGE_ADDR + 0x238), 255);
  t.is(m.readU8(ZERO_PAGE_ADDR + 0x210), 0xff);
  t.is(m.readU16(ZERO_PAGE_ADDR + 0x236), 1);
  t.is(r.initrd, undefined);
});

test('cmdline limits: the kernel cmdline_size and the 2048-byte area, errors name cmdline', (t) => {
  const long = 'x'.repeat(256);
  const e = t.throws(() => prepareX86Boot(mem(), { kernel: makeBzImage({ cmdlineSize: 255 }), cmdline: long, vcpus: 1 }), { instanceOf: ConfigError });
  t.is(e?.field, 'cmdline');
  t.notThrows(() => prepareX86Boot(mem(), { kernel: makeBzImage({ cmdlineSize: 255 }), cmdline: 'x'.repeat(255), vcpus: 1 }));
  t.throws(() => prepareX86Boot(mem(), { kernel: makeBzImage({ cmdlineSize: 100000 }), cmdline: 'x'.repeat(2048), vcpus: 1 }), { instanceOf: ConfigError });
  t.notThrows(() => prepareX86Boot(mem(), { kernel: elfWithPvh(), cmdline: 'x'.repeat(2047), vcpus: 1 }));
  t.throws(() => prepareX86Boot(mem(), { kernel: elfWithPvh(), cmdline: 'é'.repeat(1024), vcpus: 1 }), { instanceOf: ConfigError }, 'limit counts UTF-8 bytes');
  t.throws(() => prepareX86Boot(mem(), { kernel: elfWithPvh(), cmdline: 'a\0b', vcpus: 1 }), { instanceOf: ConfigError });
});

test('PVH needs an ELF with a PVH note', (t) => {
  t.throws(() => prepareX86Boot(mem(), { kernel: makeBzImage(), cmdline: '', vcpus: 1, bootProtocol: 'pvh' }), { instanceOf: LoaderError, message: /bzImage/ });
  const noNote = makeElf({ entry: 0x1000000n, segments: [{ paddr: 0x1000000, data: text }] });
  t.throws(() => prepareX86Boot(mem(), { kernel: noNote, cmdline: '', vcpus: 1, bootProtocol: 'pvh' }), { instanceOf: LoaderError, message: /CONFIG_PVH/ });
});

test('bad vcpus, protocol, or memory are rejected before the kernel loads', (t) => {
  const m = mem();
  t.throws(() => prepareX86Boot(m, { kernel: elfWithPvh(), cmdline: '', vcpus: 0 }), { instanceOf: ConfigError });
  t.throws(() => prepareX86Boot(m, { kernel: elfWithPvh(), cmdline: '', vcpus: 1, bootProtocol: 'efi' as 'pvh' }), { instanceOf: ConfigError });
  t.true(m.read(0x1000000, 16).every((b) => b === 0), 'kernel not loaded');
  t.throws(() => prepareX86Boot(GuestMemory.fromBuffers([{ gpa: 0x100000, size: 32 * MiB }]), { kernel: elfWithPvh(), cmdline: '', vcpus: 1 }), { instanceOf: ConfigError });
});

test('an initrd too big for memory is a LoaderError naming memory', (t) => {
  const e = t.throws(() => prepareX86Boot(mem(20 * MiB), { kernel: elfWithPvh(), initrd: new Uint8Array(4 * MiB), cmdline: '', vcpus: 1 }), { instanceOf: LoaderError });
  t.regex(e?.message ?? '', /memory/);
});
