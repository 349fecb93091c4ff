import test from 'ava';
import fc from 'fast-check';
import { LoaderError } from '../../../../lib/errors.js';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import { ELF64_EHDR, ELF64_PHDR, ELF_NHDR, EM_X86_64, ET_EXEC, loadElf, XEN_ELFNOTE_PHYS32_ENTRY } from '../../../../arch/x86_64/loader/elf.js';
import { concat, makeElf, makeNote, pattern, PT_NOTE, u32, u64 } from './images.js';

const MiB = 1024 ** 2;
const mem = (size = 32 * MiB): GuestMemory => GuestMemory.fromBuffers([{ gpa: 0, size }]);

const text = pattern(300, 1);
const data = pattern(100, 2);
const pvhNote = makeNote('Xen\0', XEN_ELFNOTE_PHYS32_ENTRY, u32(0x1000040));
const otherNote = makeNote('GNU\0', 3, pattern(20, 3));

/** A vmlinux-like image: text at 16 MiB with a virtual vaddr, data with bss, a note segment. */
function sampleElf(): Uint8Array {
  return makeElf({
    entry: 0x1000000n,
    segments: [
      { paddr: 0x1000000, vaddr: 0xffffffff81000000n, data: text },
      { paddr: 0x1200000, vaddr: 0xffffffff81200000n, data, memsz: 4096 },
      { type: PT_NOTE, paddr: 0, data: concat(otherNote, pvhNote) },
    ],
  });
}

test('ELF struct offsets match elf.h', (t) => {
  t.deepEqual(
    [ELF64_EHDR.e_type, ELF64_EHDR.e_machine, ELF64_EHDR.e_entry, ELF64_EHDR.e_phoff, ELF64_EHDR.e_phentsize, ELF64_EHDR.e_phnum, ELF64_EHDR.size],
    [0x10, 0x12, 0x18, 0x20, 0x36, 0x38, 64],
  );
  t.deepEqual([ELF64_PHDR.p_offset, ELF64_PHDR.p_vaddr, ELF64_PHDR.p_paddr, ELF64_PHDR.p_filesz, ELF64_PHDR.p_memsz, ELF64_PHDR.size], [8, 0x10, 0x18, 0x20, 0x28, 56]);
  t.is(ELF_NHDR.size, 12);
  t.is(EM_X86_64, 62);
  t.is(ET_EXEC, 2);
  t.is(XEN_ELFNOTE_PHYS32_ENTRY, 18);
});

test('loads PT_LOAD segments at p_paddr, zeroes bss, finds the PVH note', (t) => {
  const m = mem();
  m.fill(0x1200000, 4096, 0xaa); // stale bytes the bss must clear
  const r = loadElf(m, sampleElf());
  t.deepEqual(m.read(0x1000000, text.length), text);
  t.deepEqual(m.read(0x1200000, data.length), data);
  t.true(m.read(0x1200000 + data.length, 4096 - data.length).every((b) => b === 0));
  t.deepEqual(r, { entry: 0x1000000, pvhEntry: 0x1000040, kernelEnd: 0x1200000 + 4096 });
});

test('PVH note with a 64-bit descriptor (Linux _ASM_PTR) and 8-byte note alignment', (t) => {
  const note = makeNote('Xen\0', XEN_ELFNOTE_PHYS32_ENTRY, u64(0x1000010n), 8);
  const img = makeElf({ entry: 0x1000000n, segments: [{ paddr: 0x1000000, data: text }, { type: PT_NOTE, paddr: 0, data: note, align: 8n }] });
  t.is(loadElf(mem(), img).pvhEntry, 0x1000010);
});

test('no PVH note: pvhEntry absent', (t) => {
  const img = makeElf({ entry: 0x1000000n, segments: [{ paddr: 0x1000000, data: text }] });
  const r = loadElf(mem(), img);
  t.false('pvhEntry' in r);
});

test('a virtual e_entry is translated through its segment', (t) => {
  const img = makeElf({ entry: 0xffffffff81000010n, segments: [{ paddr: 0x1000000, vaddr: 0xffffffff81000000n, data: text }] });
  t.is(loadElf(mem(), img).entry, 0x1000010);
});

function throwsLoader(t: import('ava').ExecutionContext, image: Uint8Array, match?: RegExp, m = mem()): void {
  const e = t.throws(() => loadElf(m, image), { instanceOf: LoaderError });
  if (match) t.regex(e?.message ?? '', match);
}

test('every truncated prefix is a LoaderError', (t) => {
  const img = sampleElf();
  for (let n = 0; n < img.length; n++) throwsLoader(t, img.subarray(0, n));
});

test('truncation classes name what is wrong', (t) => {
  const img = sampleElf();
  throwsLoader(t, img.subarray(0, 40), /ELF header/);
  throwsLoader(t, img.subarray(0, 64 + 56 + 10), /program header table/);
  throwsLoader(t, img.subarray(0, img.length - 1), /segment 2 .*truncated/);
});

function corrupt(fn: (dv: DataView, b: Uint8Array) => void): Uint8Array {
  const img = sampleElf();
  fn(new DataView(img.buffer), img);
  return img;
}

test('corrupt headers are LoaderErrors naming the field', (t) => {
  throwsLoader(t, corrupt((_, b) => { b[1] = 0x46; }), /magic/);
  throwsLoader(t, corrupt((_, b) => { b[4] = 1; }), /ELFCLASS64/);
  throwsLoader(t, corrupt((_, b) => { b[5] = 2; }), /little-endian/);
  throwsLoader(t, corrupt((_, b) => { b[6] = 0; }), /version/);
  throwsLoader(t, corrupt((dv) => dv.setUint16(0x12, 3, true)), /EM_X86_64/);
  throwsLoader(t, corrupt((dv) => dv.setUint16(0x10, 3, true)), /ET_EXEC/);
  throwsLoader(t, corrupt((dv) => dv.setUint16(0x38, 0, true)), /e_phnum/);
  throwsLoader(t, corrupt((dv) => dv.setUint16(0x38, 0xffff, true)), /e_phnum/);
  throwsLoader(t, corrupt((dv) => dv.setUint16(0x36, 32, true)), /e_phentsize/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(0x20, 0xffffffffffffff00n, true)), /e_phoff/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(0x20, 2n ** 52n, true)), /program header table/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(0x18, 0x5000000n, true)), /e_entry/);
});

test('corrupt segments are LoaderErrors', (t) => {
  const ph0 = 64;
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(ph0 + 8, 0xfffffffffffffff0n, true)), /p_offset/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(ph0 + 8, BigInt(Number.MAX_SAFE_INTEGER), true)), /segment 0/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(ph0 + 0x20, 1n << 40n, true)), /segment 0/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(ph0 + 0x28, 10n, true)), /p_filesz .* exceeds p_memsz/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(ph0 + 0x18, 0x7000n, true)), /below 1 MiB/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(ph0 + 0x18, 0xfffffffffffff000n, true)), /p_paddr/);
  throwsLoader(t, corrupt((dv) => dv.setBigUint64(ph0 + 0x28, 1n << 40n, true)), /does not fit in guest RAM/);
  // The note segment's note claims a descriptor past its end.
  const noteAt = 64 + 3 * 56 + text.length + data.length;
  throwsLoader(t, corrupt((dv) => dv.setUint32(noteAt + 4, 0xfffffff0, true)), /note/);
  throwsLoader(t, corrupt((dv) => dv.setUint32(noteAt, 0xfffffff0, true)), /note/);
});

test('segments beyond guest RAM name the memory needed', (t) => {
  throwsLoader(t, sampleElf(), /at least 19 MiB of memory/, mem(16 * MiB));
});

test('a bad PVH note is a LoaderError', (t) => {
  const bad = (desc: Uint8Array): Uint8Array =>
    makeElf({ entry: 0x1000000n, segments: [{ paddr: 0x1000000, data: text }, { type: PT_NOTE, paddr: 0, data: makeNote('Xen\0', XEN_ELFNOTE_PHYS32_ENTRY, desc) }] });
  throwsLoader(t, bad(new Uint8Array(2)), /descriptor/);
  throwsLoader(t, bad(u64(0x100000000n)), /32-bit/);
  throwsLoader(t, bad(u32(0x5000000)), /PVH entry/);
});

test('nothing is written when validation fails', (t) => {
  const m = mem();
  const img = corrupt((dv) => dv.setBigUint64(0x18, 0x5000000n, true));
  t.throws(() => loadElf(m, img), { instanceOf: LoaderError });
  t.true(m.read(0x1000000, text.length).every((b) => b === 0));
});

test('fuzz: random byte corruption yields a result or a LoaderError, never another exception', (t) => {
  const base = sampleElf();
  const m = mem();
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(base.length - 1), fc.nat(255)), { minLength: 1, maxLength: 8 }), fc.nat(base.length), (edits, cut) => {
      const img = base.slice(0, Math.max(cut, 1));
      for (const [at, v] of edits) if (at < img.length) img[at] = v;
      try {
        loadElf(m, img);
      } catch (e) {
        if (!(e instanceof LoaderError)) throw e;
      }
    }),
    { numRuns: 300 },
  );
  t.pass();
});
