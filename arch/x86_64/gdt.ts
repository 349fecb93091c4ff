/**
 * The boot GDT. Segments are defined once, in the form KVM's segment cache
 * takes (`KvmSegment`), and the GDT descriptors are encoded from those same
 * objects, so the selectors a kernel reloads match what the vCPU starts with.
 *
 * Slots follow Linux's boot GDT (arch/x86/include/asm/segment.h): the 64-bit
 * boot protocol requires __BOOT_CS = 0x10 and __BOOT_DS = 0x18. Slot 1 holds a
 * 32-bit code segment for the PVH entry, slot 4-5 a 16-byte TSS descriptor.
 */
import type { KvmDtable, KvmSegment } from '../../lib/kvm/types.js';
import { BOOT_GDT_ADDR, BOOT_GDT_MAX_SIZE, BOOT_IDT_ADDR } from './layout.js';

/** GDT slot numbers. */
export const GDT_ENTRY_BOOT_CS32 = 1;
export const GDT_ENTRY_BOOT_CS = 2;
export const GDT_ENTRY_BOOT_DS = 3;
export const GDT_ENTRY_BOOT_TSS = 4;
/** Slots used: the long-mode TSS descriptor takes two. */
export const GDT_ENTRIES = 6;
/** Bytes per GDT slot. */
export const GDT_DESCRIPTOR_SIZE = 8;

/** Selectors (slot * 8, RPL 0, GDT). */
export const BOOT_CS32 = GDT_ENTRY_BOOT_CS32 * GDT_DESCRIPTOR_SIZE;
export const BOOT_CS = GDT_ENTRY_BOOT_CS * GDT_DESCRIPTOR_SIZE;
export const BOOT_DS = GDT_ENTRY_BOOT_DS * GDT_DESCRIPTOR_SIZE;
export const BOOT_TSS = GDT_ENTRY_BOOT_TSS * GDT_DESCRIPTOR_SIZE;

/**
 * Segment types (Intel SDM vol. 3 §3.4.5.1 and §3.5). The accessed bit is
 * preset: VM entry requires it on usable segments, and it saves the CPU a
 * write to the GDT.
 */
export const SEG_TYPE_DATA_RW_ACCESSED = 0x3;
export const SEG_TYPE_CODE_XR_ACCESSED = 0xb;
/** System segment type: busy TSS (32-bit in protected mode, 64-bit in long mode). */
export const SEG_TYPE_TSS_BUSY = 0xb;
/** Byte limit of a flat 4 GiB segment (page granular in the descriptor). */
export const FLAT_LIMIT = 0xffffffff;
/** Byte limit of a TSS without I/O bitmap (104 bytes), as PVH requires. */
export const TSS_LIMIT = 0x67;
/** Shift from a byte limit to a 4 KiB-granular one. */
const PAGE_GRANULARITY_SHIFT = 12;

function segment(selector: number, type: number, fields: Partial<KvmSegment>): KvmSegment {
  return {
    base: 0n, limit: FLAT_LIMIT, selector, type, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 1, avl: 0, unusable: 0,
    ...fields,
  };
}

/** Flat 64-bit code segment (L=1), selector __BOOT_CS. Returns a fresh object. */
export function code64Segment(): KvmSegment {
  return segment(BOOT_CS, SEG_TYPE_CODE_XR_ACCESSED, { l: 1 });
}
/** Flat 32-bit code segment (D=1), for the PVH entry. Returns a fresh object. */
export function code32Segment(): KvmSegment {
  return segment(BOOT_CS32, SEG_TYPE_CODE_XR_ACCESSED, { db: 1 });
}
/** Flat read/write data segment, selector __BOOT_DS. Returns a fresh object. */
export function dataSegment(): KvmSegment {
  return segment(BOOT_DS, SEG_TYPE_DATA_RW_ACCESSED, { db: 1 });
}
/** Busy TSS at base 0, limit 0x67 (the PVH ABI's TR). Returns a fresh object. */
export function tssSegment(): KvmSegment {
  return segment(BOOT_TSS, SEG_TYPE_TSS_BUSY, { s: 0, g: 0, limit: TSS_LIMIT });
}

/** Bit positions in an 8-byte segment descriptor (SDM vol. 3 fig. 3-8). */
const D = { limitLow: 0n, baseLow: 16n, type: 40n, s: 44n, dpl: 45n, p: 47n, limitHigh: 48n, avl: 52n, l: 53n, db: 54n, g: 55n, baseHigh: 56n } as const;
const MASK_16 = 0xffffn;
const MASK_24 = 0xffffffn;
const MASK_8 = 0xffn;
const MASK_4 = 0xfn;
const MASK_2 = 0x3n;
const MASK_1 = 0x1n;
const LIMIT_LOW_BITS = 16n;
const BASE_LOW_BITS = 24n;

/**
 * Encodes a segment as an 8-byte descriptor (the low half, for a system
 * segment in long mode). The byte limit is stored page granular when `g` is set.
 */
export function encodeSegmentDescriptor(seg: KvmSegment): bigint {
  const raw = BigInt(seg.g ? seg.limit >>> PAGE_GRANULARITY_SHIFT : seg.limit);
  const base = BigInt.asUintN(32, seg.base);
  return (
    ((raw & MASK_16) << D.limitLow) |
    ((base & MASK_24) << D.baseLow) |
    ((BigInt(seg.type) & MASK_4) << D.type) |
    ((BigInt(seg.s) & MASK_1) << D.s) |
    ((BigInt(seg.dpl) & MASK_2) << D.dpl) |
    ((BigInt(seg.present) & MASK_1) << D.p) |
    (((raw >> LIMIT_LOW_BITS) & MASK_4) << D.limitHigh) |
    ((BigInt(seg.avl) & MASK_1) << D.avl) |
    ((BigInt(seg.l) & MASK_1) << D.l) |
    ((BigInt(seg.db) & MASK_1) << D.db) |
    ((BigInt(seg.g) & MASK_1) << D.g) |
    (((base >> BASE_LOW_BITS) & MASK_8) << D.baseHigh)
  );
}

/** Decodes an 8-byte descriptor into segment-cache form (inverse of the encoder; for tests and debugging). */
export function decodeSegmentDescriptor(desc: bigint, selector: number): KvmSegment {
  const bit = (pos: bigint, mask: bigint): number => Number((desc >> pos) & mask);
  const g = bit(D.g, MASK_1);
  const raw = bit(D.limitLow, MASK_16) | (bit(D.limitHigh, MASK_4) << Number(LIMIT_LOW_BITS));
  const limit = g ? ((raw << PAGE_GRANULARITY_SHIFT) | ((1 << PAGE_GRANULARITY_SHIFT) - 1)) >>> 0 : raw;
  const base = BigInt(bit(D.baseLow, MASK_24)) | (BigInt(bit(D.baseHigh, MASK_8)) << BASE_LOW_BITS);
  return {
    base, limit, selector, type: bit(D.type, MASK_4), present: bit(D.p, MASK_1), dpl: bit(D.dpl, MASK_2), db: bit(D.db, MASK_1),
    s: bit(D.s, MASK_1), l: bit(D.l, MASK_1), g, avl: bit(D.avl, MASK_1), unusable: 0,
  };
}

/**
 * The GDT image (GDT_ENTRIES * 8 bytes) to write at BOOT_GDT_ADDR: null,
 * 32-bit code, 64-bit code, data, then the TSS descriptor, whose upper
 * 8 bytes (base bits 63:32) are zero. Pure.
 */
export function buildGdt(): Uint8Array {
  const gdt = new Uint8Array(GDT_ENTRIES * GDT_DESCRIPTOR_SIZE);
  const dv = new DataView(gdt.buffer);
  for (const seg of [code32Segment(), code64Segment(), dataSegment(), tssSegment()]) {
    // A GDT selector with RPL 0 is the descriptor's byte offset in the table.
    dv.setBigUint64(seg.selector, encodeSegmentDescriptor(seg), true);
  }
  return gdt;
}

/** GDTR value for the boot GDT. */
export function bootGdtr(): KvmDtable {
  const size = GDT_ENTRIES * GDT_DESCRIPTOR_SIZE;
  if (size > BOOT_GDT_MAX_SIZE) throw new RangeError('boot GDT outgrew its layout slot');
  return { base: BigInt(BOOT_GDT_ADDR), limit: size - 1 };
}

/** Bytes of the boot IDT: one zero (not-present) 16-byte gate. */
export const BOOT_IDT_SIZE = 16;

/**
 * IDTR value for the boot IDT: a single not-present gate. An exception before
 * the kernel loads its own IDT escalates to a triple fault, which KVM reports
 * as a shutdown exit rather than running stray code.
 */
export function bootIdtr(): KvmDtable {
  return { base: BigInt(BOOT_IDT_ADDR), limit: BOOT_IDT_SIZE - 1 };
}
