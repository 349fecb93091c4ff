/**
 * Loader for an uncompressed x86_64 ELF kernel (vmlinux). It validates the
 * ELF header and program headers with overflow-checked arithmetic, copies the
 * PT_LOAD segments to their physical addresses and finds the Xen PVH entry
 * note. It builds no boot structures (see boot-params.ts and pvh.ts).
 */
import { LoaderError } from '../../../lib/errors.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { HIGH_MEMORY_START, MiB } from '../layout.js';

/** ELF magic: "\x7fELF". */
export const ELF_MAGIC: readonly number[] = [0x7f, 0x45, 0x4c, 0x46];
/** e_ident[EI_CLASS] offset and its 64-bit value. */
export const EI_CLASS = 4;
export const ELFCLASS64 = 2;
/** e_ident[EI_DATA] offset and its little-endian value. */
export const EI_DATA = 5;
export const ELFDATA2LSB = 1;
/** e_ident[EI_VERSION] offset and the only defined version. */
export const EI_VERSION = 6;
export const EV_CURRENT = 1;
/** e_type of an executable (vmlinux is one). */
export const ET_EXEC = 2;
/** e_machine of x86_64. */
export const EM_X86_64 = 62;
/** Program header types used here. */
export const PT_LOAD = 1;
export const PT_NOTE = 4;
/** e_phnum value meaning "the real count is in section 0" (not supported). */
export const PN_XNUM = 0xffff;

/** Elf64_Ehdr field offsets and size. */
export const ELF64_EHDR = { e_type: 0x10, e_machine: 0x12, e_version: 0x14, e_entry: 0x18, e_phoff: 0x20, e_phentsize: 0x36, e_phnum: 0x38, size: 0x40 } as const;
/** Elf64_Phdr field offsets and size. */
export const ELF64_PHDR = { p_type: 0x00, p_offset: 0x08, p_vaddr: 0x10, p_paddr: 0x18, p_filesz: 0x20, p_memsz: 0x28, p_align: 0x30, size: 0x38 } as const;
/** Elf64_Nhdr field offsets and size (three u32, in 32- and 64-bit ELF alike). */
export const ELF_NHDR = { n_namesz: 0, n_descsz: 4, n_type: 8, size: 12 } as const;
/** Note alignment: 4 bytes, or 8 in a PT_NOTE whose p_align is 8 (gABI). */
const NOTE_ALIGN_DEFAULT = 4;
const NOTE_ALIGN_WIDE = 8;

/** Owner name of Xen notes, NUL included. */
export const XEN_ELFNOTE_NAME = 'Xen\0';
/** Xen note type holding the 32-bit physical PVH entry point (xen/include/public/elfnote.h). */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Where an ELF kernel went. All addresses are guest-physical. */
export interface ElfLoadResult {
  /** The 64-bit entry point (e_entry, translated to physical if it was virtual). */
  entry: number;
  /** The PVH 32-bit entry (XEN_ELFNOTE_PHYS32_ENTRY), when the image has one. */
  pvhEntry?: number;
  /** One past the highest byte of any PT_LOAD segment (bss included). */
  kernelEnd: number;
}

/** A validated PT_LOAD segment. */
interface LoadSegment {
  /** Program header index, for messages. */
  index: number;
  offset: number;
  paddr: number;
  vaddr: bigint;
  filesz: number;
  memsz: number;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MAX_U32 = 0xffffffff;
const U32_SIZE = 4;
const U64_SIZE = 8;

/** Reads a u64 that must be a safe integer; `what` names the field in the error. */
function safeU64(dv: DataView, off: number, what: string): number {
  const v = dv.getBigUint64(off, true);
  if (v > MAX_SAFE) throw new LoaderError(`ELF: ${what} 0x${v.toString(16)} is too large`, v);
  return Number(v);
}

/** Checks that [off, off+len) lies in an `size`-byte file; names `what` when it does not. */
function checkInFile(off: number, len: number, size: number, what: string): void {
  // off and len are safe integers, so their sum is exact below 2^53.
  if (off + len > size) throw new LoaderError(`ELF: ${what} [0x${off.toString(16)}, +0x${len.toString(16)}) runs past the end of the ${size}-byte image (truncated?)`, off);
}

/** Validates the ELF identification and header fields this loader relies on. */
function checkHeader(image: Uint8Array, dv: DataView): void {
  if (image.length < ELF_MAGIC.length || ELF_MAGIC.some((b, i) => image[i] !== b)) throw new LoaderError('ELF: bad magic (not an ELF file)');
  if (image.length < ELF64_EHDR.size) throw new LoaderError(`ELF: image is ${image.length} bytes, shorter than the 64-byte ELF header (truncated)`, image.length);
  if (image[EI_CLASS] !== ELFCLASS64) throw new LoaderError(`ELF: class ${image[EI_CLASS]} is not ELFCLASS64 (a 32-bit kernel?)`, image[EI_CLASS]);
  if (image[EI_DATA] !== ELFDATA2LSB) throw new LoaderError(`ELF: data encoding ${image[EI_DATA]} is not little-endian`, image[EI_DATA]);
  if (image[EI_VERSION] !== EV_CURRENT) throw new LoaderError(`ELF: ident version ${image[EI_VERSION]} is not EV_CURRENT`, image[EI_VERSION]);
  const machine = dv.getUint16(ELF64_EHDR.e_machine, true);
  if (machine !== EM_X86_64) throw new LoaderError(`ELF: machine ${machine} is not EM_X86_64 (${EM_X86_64})`, machine);
  const type = dv.getUint16(ELF64_EHDR.e_type, true);
  if (type !== ET_EXEC) throw new LoaderError(`ELF: type ${type} is not ET_EXEC (${ET_EXEC}); a kernel is a static executable`, type);
}

/** Parses every PT_LOAD segment and checks it against the file and guest RAM. */
function parseSegments(image: Uint8Array, dv: DataView, mem: GuestMemory): { loads: LoadSegment[]; notes: Array<[number, number, number]> } {
  const phoff = safeU64(dv, ELF64_EHDR.e_phoff, 'e_phoff');
  const phentsize = dv.getUint16(ELF64_EHDR.e_phentsize, true);
  const phnum = dv.getUint16(ELF64_EHDR.e_phnum, true);
  if (phnum === 0 || phnum === PN_XNUM) throw new LoaderError(`ELF: e_phnum ${phnum} is unsupported (no program headers, or extended numbering)`, phnum);
  if (phentsize < ELF64_PHDR.size) throw new LoaderError(`ELF: e_phentsize ${phentsize} is smaller than Elf64_Phdr (${ELF64_PHDR.size})`, phentsize);
  checkInFile(phoff, phnum * phentsize, image.length, 'program header table');

  const loads: LoadSegment[] = [];
  const notes: Array<[number, number, number]> = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = dv.getUint32(ph + ELF64_PHDR.p_type, true);
    if (type !== PT_LOAD && type !== PT_NOTE) continue;
    const offset = safeU64(dv, ph + ELF64_PHDR.p_offset, `segment ${i} p_offset`);
    const filesz = safeU64(dv, ph + ELF64_PHDR.p_filesz, `segment ${i} p_filesz`);
    checkInFile(offset, filesz, image.length, `segment ${i}`);
    if (type === PT_NOTE) {
      const wide = dv.getBigUint64(ph + ELF64_PHDR.p_align, true) === BigInt(NOTE_ALIGN_WIDE);
      notes.push([offset, filesz, wide ? NOTE_ALIGN_WIDE : NOTE_ALIGN_DEFAULT]);
      continue;
    }
    const paddr = safeU64(dv, ph + ELF64_PHDR.p_paddr, `segment ${i} p_paddr`);
    const memsz = safeU64(dv, ph + ELF64_PHDR.p_memsz, `segment ${i} p_memsz`);
    if (filesz > memsz) throw new LoaderError(`ELF: segment ${i} p_filesz ${filesz} exceeds p_memsz ${memsz}`, i);
    if (memsz === 0) continue;
    if (paddr < HIGH_MEMORY_START) {
      throw new LoaderError(`ELF: segment ${i} loads at 0x${paddr.toString(16)}, below 1 MiB where the boot structures live`, paddr);
    }
    if (paddr + memsz > Number.MAX_SAFE_INTEGER) throw new LoaderError(`ELF: segment ${i} end 0x${(paddr + memsz).toString(16)} is too large`, paddr);
    loads.push({ index: i, offset, paddr, vaddr: dv.getBigUint64(ph + ELF64_PHDR.p_vaddr, true), filesz, memsz });
  }
  if (loads.length === 0) throw new LoaderError('ELF: no PT_LOAD segment with contents');
  // Checked after parsing all segments, so the error can name the memory the whole kernel needs.
  const end = Math.max(...loads.map((s) => s.paddr + s.memsz));
  for (const s of loads) {
    if (!mem.isValid(s.paddr, s.memsz)) {
      throw new LoaderError(`ELF: segment ${s.index} [0x${s.paddr.toString(16)}, +0x${s.memsz.toString(16)}) does not fit in guest RAM; the kernel needs at least ${Math.ceil(end / MiB)} MiB of memory`, s.paddr);
    }
  }
  return { loads, notes };
}

/** Rounds `n` up to a multiple of `align` (a power of two). */
function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/**
 * Finds XEN_ELFNOTE_PHYS32_ENTRY in one PT_NOTE segment. The descriptor is a
 * u32 (Xen's definition) or a u64 (Linux's `_ASM_PTR` on x86_64); either way it
 * must fit in 32 bits, since the PVH entry runs in 32-bit protected mode.
 */
function findPvhEntry(image: Uint8Array, dv: DataView, offset: number, size: number, align: number): number | undefined {
  const end = offset + size;
  let pos = offset;
  while (pos + ELF_NHDR.size <= end) {
    const namesz = dv.getUint32(pos + ELF_NHDR.n_namesz, true);
    const descsz = dv.getUint32(pos + ELF_NHDR.n_descsz, true);
    const type = dv.getUint32(pos + ELF_NHDR.n_type, true);
    const nameAt = pos + ELF_NHDR.size;
    const descAt = nameAt + alignUp(namesz, align);
    const next = descAt + alignUp(descsz, align);
    // Name and descriptor must stay inside the segment; the padding after the last note may not.
    if (descAt + descsz > end) throw new LoaderError(`ELF: note at file offset 0x${pos.toString(16)} runs past its PT_NOTE segment`, pos);
    const isXen = namesz === XEN_ELFNOTE_NAME.length && String.fromCharCode(...image.subarray(nameAt, nameAt + namesz)) === XEN_ELFNOTE_NAME;
    if (isXen && type === XEN_ELFNOTE_PHYS32_ENTRY) {
      if (descsz !== U32_SIZE && descsz !== U64_SIZE) throw new LoaderError(`ELF: XEN_ELFNOTE_PHYS32_ENTRY has a ${descsz}-byte descriptor (expected 4 or 8)`, descsz);
      const v = descsz === U32_SIZE ? BigInt(dv.getUint32(descAt, true)) : dv.getBigUint64(descAt, true);
      if (v > BigInt(MAX_U32)) throw new LoaderError(`ELF: PVH entry 0x${v.toString(16)} is not a 32-bit physical address`, v);
      return Number(v);
    }
    pos = next;
  }
  return undefined;
}

/**
 * The physical entry point. Linux's vmlinux already has a physical e_entry
 * (its linker script says `ENTRY(phys_startup_64)`), but an ELF whose entry is
 * a virtual address (e.g. 0xffffffff81000000) is translated through the
 * PT_LOAD segment whose p_vaddr range contains it.
 */
function physicalEntry(entry: bigint, loads: readonly LoadSegment[]): number {
  for (const s of loads) {
    if (entry >= BigInt(s.paddr) && entry < BigInt(s.paddr + s.filesz)) return Number(entry);
  }
  for (const s of loads) {
    if (entry >= s.vaddr && entry < s.vaddr + BigInt(s.filesz)) return Number(entry - s.vaddr) + s.paddr;
  }
  throw new LoaderError(`ELF: e_entry 0x${entry.toString(16)} lies in no loaded segment`, entry);
}

/**
 * Validates an x86_64 ELF kernel and loads it: each PT_LOAD segment's file
 * bytes go to p_paddr, and the rest of its p_memsz (bss) is zeroed.
 * Nothing is written unless the whole image validates.
 *
 * Throws {@link LoaderError} for a malformed or truncated image, a segment
 * below 1 MiB or outside guest RAM, or an entry point outside the image.
 */
export function loadElf(mem: GuestMemory, image: Uint8Array): ElfLoadResult {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  checkHeader(image, dv);
  const { loads, notes } = parseSegments(image, dv, mem);
  const entry = physicalEntry(dv.getBigUint64(ELF64_EHDR.e_entry, true), loads);
  let pvhEntry: number | undefined;
  for (const [offset, size, align] of notes) {
    pvhEntry ??= findPvhEntry(image, dv, offset, size, align);
  }
  if (pvhEntry !== undefined && !loads.some((s) => pvhEntry! >= s.paddr && pvhEntry! < s.paddr + s.filesz)) {
    throw new LoaderError(`ELF: PVH entry 0x${pvhEntry.toString(16)} lies in no loaded segment`, pvhEntry);
  }

  let kernelEnd = 0;
  for (const s of loads) {
    mem.write(s.paddr, image.subarray(s.offset, s.offset + s.filesz));
    if (s.memsz > s.filesz) mem.fill(s.paddr + s.filesz, s.memsz - s.filesz, 0);
    kernelEnd = Math.max(kernelEnd, s.paddr + s.memsz);
  }
  return pvhEntry === undefined ? { entry, kernelEnd } : { entry, pvhEntry, kernelEnd };
}
