/**
 * The zero page: `struct boot_params` of the Linux x86 boot protocol
 * (arch/x86/include/uapi/asm/bootparam.h), as the 64-bit entry point reads it
 * through %rsi. Only the fields flintvm fills are named here.
 */
import { LoaderError } from '../../lib/errors.js';
import type { E820Entry } from './e820.js';
import { BOOT_PROTOCOL_2_12, BOOT_FLAG_MAGIC, LOADED_HIGH, SETUP_HEADER, SETUP_HEADER_MAGIC, SETUP_HEADER_MAX_END } from './loader/bzimage.js';

/** Size of struct boot_params (one page). */
export const BOOT_PARAMS_SIZE = 4096;

/** Offsets in struct boot_params outside the setup header (see SETUP_HEADER for those). */
export const BOOT_PARAMS = {
  /** u32: bits 63:32 of the ramdisk address. */
  ext_ramdisk_image: 0x0c0,
  /** u32: bits 63:32 of the ramdisk size. */
  ext_ramdisk_size: 0x0c4,
  /** u32: bits 63:32 of the command-line address. */
  ext_cmd_line_ptr: 0x0c8,
  /** u8: number of entries in e820_table. */
  e820_entries: 0x1e8,
  /** u8: nonzero when a loader left the page dirty; must stay 0. */
  sentinel: 0x1ef,
  /** struct setup_header. */
  hdr: 0x1f1,
  /** struct boot_e820_entry[E820_MAX_ENTRIES_ZEROPAGE]. */
  e820_table: 0x2d0,
} as const;

/** Capacity of boot_params.e820_table (E820_MAX_ENTRIES_ZEROPAGE). */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
/** struct boot_e820_entry: u64 addr, u64 size, u32 type, packed. */
export const BOOT_E820_ENTRY = { addr: 0, size: 8, type: 16, bytes: 20 } as const;

/** type_of_loader for a loader without an assigned ID ("undefined"). */
export const LOADER_TYPE_UNDEFINED = 0xff;
/** kernel_alignment written into a synthesized header: x86_64's default CONFIG_PHYSICAL_ALIGN (2 MiB). */
export const DEFAULT_KERNEL_ALIGNMENT = 0x200000;

/** What goes into the zero page. Addresses are guest-physical. */
export interface BootParamsInput {
  /**
   * The bzImage's setup header (image bytes from 0x1f1), copied in first. When
   * absent (a vmlinux), a minimal header is synthesized.
   */
  setupHeader?: Uint8Array;
  /** Command line address; the string must already be in guest memory, NUL terminated. */
  cmdlineAddr: number;
  /** Longest command line, NUL excluded; only written into a synthesized header. */
  cmdlineSize: number;
  /** The initrd, if any. */
  initrd?: { addr: number; size: number };
  /** The memory map (at most {@link E820_MAX_ENTRIES_ZEROPAGE} entries). */
  e820: readonly E820Entry[];
}

const TWO_POW_32 = 2 ** 32;

/** Writes a 64-bit quantity as two u32 fields: low bits at `lo`, high bits at `hi`. */
function setSplit64(dv: DataView, lo: number, hi: number, value: number): void {
  dv.setUint32(lo, value % TWO_POW_32, true);
  dv.setUint32(hi, Math.floor(value / TWO_POW_32), true);
}

/** Fills the fields of a setup header a vmlinux does not provide. */
function writeMinimalHeader(dv: DataView, cmdlineSize: number): void {
  dv.setUint16(SETUP_HEADER.boot_flag, BOOT_FLAG_MAGIC, true);
  dv.setUint32(SETUP_HEADER.header, SETUP_HEADER_MAGIC, true);
  // 2.12: the version that introduced the 64-bit fields this loader fills (ext_*).
  dv.setUint16(SETUP_HEADER.version, BOOT_PROTOCOL_2_12, true);
  dv.setUint8(SETUP_HEADER.loadflags, LOADED_HIGH);
  // Only the bzImage decompressor reads kernel_alignment; set it to a sane value anyway.
  dv.setUint32(SETUP_HEADER.kernel_alignment, DEFAULT_KERNEL_ALIGNMENT, true);
  dv.setUint32(SETUP_HEADER.cmdline_size, cmdlineSize, true);
}

/**
 * Builds the 4096-byte zero page. Pure: returns new bytes to be written at
 * ZERO_PAGE_ADDR. CAN_USE_HEAP and heap_end_ptr stay clear: they describe the
 * heap of the real-mode setup code, which the 64-bit entry skips.
 *
 * Throws {@link LoaderError} when the e820 map or the setup header does not fit.
 */
export function buildBootParams(input: BootParamsInput): Uint8Array {
  const page = new Uint8Array(BOOT_PARAMS_SIZE);
  const dv = new DataView(page.buffer);
  if (input.setupHeader) {
    if (BOOT_PARAMS.hdr + input.setupHeader.length > SETUP_HEADER_MAX_END) {
      throw new LoaderError(`setup header of ${input.setupHeader.length} bytes does not fit boot_params`, input.setupHeader.length);
    }
    page.set(input.setupHeader, BOOT_PARAMS.hdr);
  } else {
    writeMinimalHeader(dv, input.cmdlineSize);
  }
  dv.setUint8(SETUP_HEADER.type_of_loader, LOADER_TYPE_UNDEFINED);
  setSplit64(dv, SETUP_HEADER.cmd_line_ptr, BOOT_PARAMS.ext_cmd_line_ptr, input.cmdlineAddr);
  if (input.initrd) {
    setSplit64(dv, SETUP_HEADER.ramdisk_image, BOOT_PARAMS.ext_ramdisk_image, input.initrd.addr);
    setSplit64(dv, SETUP_HEADER.ramdisk_size, BOOT_PARAMS.ext_ramdisk_size, input.initrd.size);
  }

  if (input.e820.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new LoaderError(`e820 map has ${input.e820.length} entries; boot_params holds ${E820_MAX_ENTRIES_ZEROPAGE}`, input.e820.length);
  }
  dv.setUint8(BOOT_PARAMS.e820_entries, input.e820.length);
  input.e820.forEach((e, i) => {
    const at = BOOT_PARAMS.e820_table + i * BOOT_E820_ENTRY.bytes;
    dv.setBigUint64(at + BOOT_E820_ENTRY.addr, BigInt(e.addr), true);
    dv.setBigUint64(at + BOOT_E820_ENTRY.size, BigInt(e.size), true);
    dv.setUint32(at + BOOT_E820_ENTRY.type, e.type, true);
  });
  return page;
}
