/**
 * The PVH boot structures (xen/include/public/arch-x86/hvm/start_info.h):
 * `struct hvm_start_info`, its module list (the initrd) and its memory map.
 * A PVH kernel is entered in 32-bit protected mode with %ebx pointing at
 * hvm_start_info; see regs.ts for the register state.
 */
import { LoaderError } from '../../lib/errors.js';
import type { E820Entry } from './e820.js';
import type { GuestBlob } from './guest-blob.js';
import { PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR, PVH_START_INFO_ADDR, ZERO_PAGE_ADDR } from './layout.js';

/** hvm_start_info.magic: "xEn3" with the top bit of 'E' set. */
export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
/** hvm_start_info.version: 1 adds memmap_paddr/memmap_entries. */
export const HVM_START_INFO_VERSION = 1;

/** struct hvm_start_info offsets and size. */
export const HVM_START_INFO = {
  magic: 0x00,
  version: 0x04,
  flags: 0x08,
  nr_modules: 0x0c,
  modlist_paddr: 0x10,
  cmdline_paddr: 0x18,
  rsdp_paddr: 0x20,
  memmap_paddr: 0x28,
  memmap_entries: 0x30,
  reserved: 0x34,
  size: 0x38,
} as const;

/** struct hvm_modlist_entry offsets and size. */
export const HVM_MODLIST_ENTRY = { paddr: 0x00, size: 0x08, cmdline_paddr: 0x10, reserved: 0x18, bytes: 0x20 } as const;

/** struct hvm_memmap_table_entry offsets and size. */
export const HVM_MEMMAP_TABLE_ENTRY = { addr: 0x00, size: 0x08, type: 0x10, reserved: 0x14, bytes: 0x18 } as const;

/** XEN_HVM_MEMMAP_TYPE_* equal the E820 types (RAM 1, RESERVED 2, ...), so E820 entries map 1:1. */
export const XEN_HVM_MEMMAP_TYPE_RAM = 1;

/** How many memmap entries fit between PVH_MEMMAP_ADDR and the zero page. */
export const PVH_MEMMAP_MAX_ENTRIES = Math.floor((ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) / HVM_MEMMAP_TABLE_ENTRY.bytes);

/** What goes into hvm_start_info. Addresses are guest-physical. */
export interface PvhStartInfoInput {
  /** Address of the NUL-terminated command line already in guest memory. */
  cmdlineAddr: number;
  /** The initrd, passed as module 0. */
  initrd?: { addr: number; size: number };
  /** The memory map. */
  e820: readonly E820Entry[];
}

/**
 * Builds hvm_start_info, the module list (only with an initrd) and the
 * memory map at their layout addresses. Pure: returns the blocks to write.
 * rsdp_paddr stays 0 since flintvm provides no ACPI tables.
 *
 * Throws {@link LoaderError} when the memory map exceeds {@link PVH_MEMMAP_MAX_ENTRIES}.
 */
export function buildPvhStartInfo(input: PvhStartInfoInput): GuestBlob[] {
  if (input.e820.length > PVH_MEMMAP_MAX_ENTRIES) {
    throw new LoaderError(`PVH memory map has ${input.e820.length} entries; ${PVH_MEMMAP_MAX_ENTRIES} fit`, input.e820.length);
  }
  const info = new Uint8Array(HVM_START_INFO.size);
  const dv = new DataView(info.buffer);
  dv.setUint32(HVM_START_INFO.magic, XEN_HVM_START_MAGIC_VALUE, true);
  dv.setUint32(HVM_START_INFO.version, HVM_START_INFO_VERSION, true);
  dv.setBigUint64(HVM_START_INFO.cmdline_paddr, BigInt(input.cmdlineAddr), true);
  dv.setBigUint64(HVM_START_INFO.memmap_paddr, BigInt(PVH_MEMMAP_ADDR), true);
  dv.setUint32(HVM_START_INFO.memmap_entries, input.e820.length, true);

  const memmap = new Uint8Array(input.e820.length * HVM_MEMMAP_TABLE_ENTRY.bytes);
  const mv = new DataView(memmap.buffer);
  input.e820.forEach((e, i) => {
    const at = i * HVM_MEMMAP_TABLE_ENTRY.bytes;
    mv.setBigUint64(at + HVM_MEMMAP_TABLE_ENTRY.addr, BigInt(e.addr), true);
    mv.setBigUint64(at + HVM_MEMMAP_TABLE_ENTRY.size, BigInt(e.size), true);
    mv.setUint32(at + HVM_MEMMAP_TABLE_ENTRY.type, e.type, true);
  });

  const blobs: GuestBlob[] = [{ gpa: PVH_START_INFO_ADDR, bytes: info }, { gpa: PVH_MEMMAP_ADDR, bytes: memmap }];
  if (input.initrd) {
    dv.setUint32(HVM_START_INFO.nr_modules, 1, true);
    dv.setBigUint64(HVM_START_INFO.modlist_paddr, BigInt(PVH_MODLIST_ADDR), true);
    const mod = new Uint8Array(HVM_MODLIST_ENTRY.bytes);
    const modv = new DataView(mod.buffer);
    modv.setBigUint64(HVM_MODLIST_ENTRY.paddr, BigInt(input.initrd.addr), true);
    modv.setBigUint64(HVM_MODLIST_ENTRY.size, BigInt(input.initrd.size), true);
    blobs.push({ gpa: PVH_MODLIST_ADDR, bytes: mod });
  }
  return blobs;
}
