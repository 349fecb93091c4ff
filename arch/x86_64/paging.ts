/**
 * Identity-mapped page tables for entering long mode: the 64-bit boot
 * protocol needs the kernel, the zero page and the command line mapped 1:1.
 * One PML4 entry -> one PDPT -> four page directories of 2 MiB pages cover
 * 0..4 GiB. 2 MiB pages are used because 1 GiB pages (CPUID pdpe1gb) are not
 * available on every CPU.
 */
import type { GuestBlob } from './guest-blob.js';
import { GiB, MiB, PAGE_SIZE, PD_ADDR, PDPT_ADDR, PML4_ADDR } from './layout.js';

/** Page-table entry bits (SDM vol. 3 §4.5), as numbers: every entry of this map fits in 32 bits. */
export const PTE_PRESENT = 1 << 0;
export const PTE_WRITABLE = 1 << 1;
/** PS: in a page-directory entry, maps a 2 MiB page instead of pointing at a page table. */
export const PTE_PAGE_SIZE = 1 << 7;
/** Bytes per page-table entry. */
export const PTE_SIZE = 8;
/** Entries per 4 KiB table. */
export const PTES_PER_TABLE = PAGE_SIZE / PTE_SIZE;
/** Size of a large page mapped by a page-directory entry. */
export const LARGE_PAGE_SIZE = 2 * MiB;
/** Bytes identity mapped from address 0. */
export const IDENTITY_MAP_SIZE = 4 * GiB;
/** Number of page directories, one per GiB. */
export const PD_COUNT = IDENTITY_MAP_SIZE / GiB;

/**
 * Builds one 4 KiB table whose entry i is `entry(i)` for i < count. Every
 * entry here is an address below 4 GiB with flag bits, so only its low 32 bits
 * are written (setUint32 takes them modulo 2^32, so an entry above 2^31 that
 * `|` made a negative int32 comes out right) and the upper half stays 0. Plain
 * numbers: no BigInt, of which a VM start would make 2048.
 */
function table(count: number, entry: (i: number) => number): Uint8Array {
  const t = new Uint8Array(PAGE_SIZE);
  const dv = new DataView(t.buffer);
  for (let i = 0; i < count; i++) dv.setUint32(i * PTE_SIZE, entry(i), true);
  return t;
}

/**
 * The page tables identity-mapping [0, 4 GiB) with 2 MiB writable pages,
 * as blocks to write at PML4_ADDR, PDPT_ADDR and PD_ADDR + i * 4 KiB. CR3 is
 * PML4_ADDR. Pure.
 */
export function buildIdentityPageTables(): GuestBlob[] {
  const flags = PTE_PRESENT | PTE_WRITABLE;
  const pml4 = table(1, () => PDPT_ADDR | flags);
  const pdpt = table(PD_COUNT, (i) => (PD_ADDR + i * PAGE_SIZE) | flags);
  const blobs: GuestBlob[] = [{ gpa: PML4_ADDR, bytes: pml4 }, { gpa: PDPT_ADDR, bytes: pdpt }];
  for (let d = 0; d < PD_COUNT; d++) {
    const pd = table(PTES_PER_TABLE, (i) => ((d * PTES_PER_TABLE + i) * LARGE_PAGE_SIZE) | flags | PTE_PAGE_SIZE);
    blobs.push({ gpa: PD_ADDR + d * PAGE_SIZE, bytes: pd });
  }
  return blobs;
}
