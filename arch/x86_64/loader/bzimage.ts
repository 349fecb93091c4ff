/**
 * Loader for a Linux bzImage, for the 64-bit boot protocol
 * (Documentation/arch/x86/boot.rst). It validates the real-mode setup header,
 * copies the protected-mode kernel to 1 MiB and reports what the zero page
 * needs. The real-mode setup code is never run, so it is not loaded.
 */
import { LoaderError } from '../../../lib/errors.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { HIGH_MEMORY_START, MiB } from '../layout.js';

/**
 * Offsets of the setup header fields, in the image and equally in
 * `struct boot_params` (the header sits at 0x1f1 in both).
 */
export const SETUP_HEADER = {
  /** Start of `struct setup_header`. */
  start: 0x1f1,
  setup_sects: 0x1f1,
  boot_flag: 0x1fe,
  /** Byte 0x201 is the jump's displacement: the header ends at 0x202 plus its value. */
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  pref_address: 0x258,
  init_size: 0x260,
} as const;

/** The byte value of boot_flag. */
export const BOOT_FLAG_MAGIC = 0xaa55;
/** "HdrS", read as a little-endian u32. */
export const SETUP_HEADER_MAGIC = 0x53726448;
/** Oldest protocol accepted: 2.06, the first with cmdline_size (older kernels had a 255-byte limit we cannot see). */
export const BOOT_PROTOCOL_MIN = 0x0206;
/** Protocol 2.10 added pref_address and init_size. */
export const BOOT_PROTOCOL_2_10 = 0x020a;
/** Protocol 2.12 added xloadflags. */
export const BOOT_PROTOCOL_2_12 = 0x020c;
/** loadflags bit 0: the protected-mode code loads at 0x100000 (a bzImage, not a zImage). */
export const LOADED_HIGH = 1 << 0;
/** loadflags bit 7: heap_end_ptr is valid (only the real-mode setup code uses the heap). */
export const CAN_USE_HEAP = 1 << 7;
/** xloadflags bit 0: the kernel has the 64-bit entry point at load address + 0x200. */
export const XLF_KERNEL_64 = 1 << 0;
/** xloadflags bit 1: kernel, boot_params, cmdline and ramdisk may sit above 4 GiB. */
export const XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1;
/** Bytes per setup sector. */
export const SECTOR_SIZE = 512;
/** setup_sects value to assume when the field is 0 (boot.rst: "if 0, the real value is 4"). */
export const SETUP_SECTS_DEFAULT = 4;
/** Offset of startup_64 from the start of the protected-mode kernel. */
export const STARTUP_64_OFFSET = 0x200;
/** Where the protected-mode kernel is loaded. */
export const BZIMAGE_LOAD_ADDR = HIGH_MEMORY_START;
/** Largest header that fits boot_params (hdr is followed by other fields at 0x290). */
export const SETUP_HEADER_MAX_END = 0x290;

/** What a bzImage needs from the rest of the boot code. Addresses are guest-physical. */
export interface BzImageLoadResult {
  /** The 64-bit entry point: load address + {@link STARTUP_64_OFFSET}. */
  entry: number;
  /** Where the protected-mode kernel was copied. */
  loadAddr: number;
  /** Image bytes 0x1f1 up to the end of the setup header, to copy into boot_params. */
  setupHeader: Uint8Array;
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  version: number;
  /** Highest address the initrd's last byte may occupy. */
  initrdAddrMax: number;
  /** Alignment the kernel wants at run time, in bytes. */
  kernelAlignment: number;
  /** Longest command line the kernel accepts, terminating NUL excluded. */
  cmdlineSize: number;
  /** xloadflags (0 before protocol 2.12). */
  xloadflags: number;
  /** One past the highest byte the kernel uses before it reads the memory map. */
  kernelEnd: number;
}

/** Reads header fields after checking each lies inside the declared header. */
class HeaderReader {
  private readonly dv: DataView;
  constructor(image: Uint8Array, private readonly end: number) {
    this.dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  }
  private check(off: number, len: number, name: string): void {
    if (off + len > this.end) throw new LoaderError(`bzImage: setup header ends at 0x${this.end.toString(16)}, before its ${name} field (corrupt header length)`, this.end);
  }
  u8(off: number, name: string): number {
    this.check(off, 1, name);
    return this.dv.getUint8(off);
  }
  u16(off: number, name: string): number {
    this.check(off, 2, name);
    return this.dv.getUint16(off, true);
  }
  u32(off: number, name: string): number {
    this.check(off, 4, name);
    return this.dv.getUint32(off, true);
  }
  /** A u64 that must be a safe integer. */
  u64(off: number, name: string): number {
    this.check(off, 8, name);
    const v = this.dv.getBigUint64(off, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LoaderError(`bzImage: ${name} 0x${v.toString(16)} is too large`, v);
    return Number(v);
  }
}

/** Validates magic numbers and the header length; returns the header's end offset. */
function checkMagic(image: Uint8Array): number {
  if (image.length < SETUP_HEADER.version + 2) throw new LoaderError(`bzImage: image is ${image.length} bytes, too short for a setup header (truncated)`, image.length);
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (dv.getUint32(SETUP_HEADER.header, true) !== SETUP_HEADER_MAGIC) throw new LoaderError('bzImage: no "HdrS" magic at 0x202 (not a bzImage)');
  const flag = dv.getUint16(SETUP_HEADER.boot_flag, true);
  if (flag !== BOOT_FLAG_MAGIC) throw new LoaderError(`bzImage: boot_flag is 0x${flag.toString(16)}, not 0xaa55`, flag);
  const version = dv.getUint16(SETUP_HEADER.version, true);
  if (version < BOOT_PROTOCOL_MIN) {
    throw new LoaderError(`bzImage: boot protocol ${fmtVersion(version)} is older than 2.06, the first to state its command-line limit (cmdline_size)`, version);
  }
  const end = SETUP_HEADER.header + image[SETUP_HEADER.jump + 1]!;
  if (end > image.length) throw new LoaderError(`bzImage: setup header runs to 0x${end.toString(16)}, past the end of the ${image.length}-byte image (truncated)`, end);
  if (end > SETUP_HEADER_MAX_END) throw new LoaderError(`bzImage: setup header runs to 0x${end.toString(16)}, longer than boot_params has room for`, end);
  return end;
}

/** The protocol version packs major.minor as two bytes. */
const VERSION_MINOR_BITS = 8;

/** "2.15" for 0x020f. */
function fmtVersion(v: number): string {
  const minor = v % (1 << VERSION_MINOR_BITS);
  return `${v >> VERSION_MINOR_BITS}.${minor.toString().padStart(2, '0')}`;
}

/** Rounds `n` up to `align` when that is a power of two; otherwise returns `n`. */
function alignUp(n: number, align: number): number {
  if (align <= 1 || (align & (align - 1)) !== 0) return n;
  return Math.ceil(n / align) * align;
}

/**
 * Validates a bzImage and copies its protected-mode kernel to
 * {@link BZIMAGE_LOAD_ADDR} (1 MiB). Nothing is written unless the header validates.
 *
 * 1 MiB is the classic load address; the 64-bit entry (the decompressor's
 * startup_64) is position independent and decompresses to the kernel's own run
 * address: the load address aligned to kernel_alignment, but not below
 * pref_address (LOAD_PHYSICAL_ADDR). `kernelEnd` covers that run area up to
 * init_size, so the initrd is never placed where the decompressor writes.
 *
 * Throws {@link LoaderError} for a malformed or truncated image, a protocol older
 * than 2.06, a kernel without XLF_KERNEL_64, or a kernel that does not fit RAM.
 */
export function loadBzImage(mem: GuestMemory, image: Uint8Array): BzImageLoadResult {
  const end = checkMagic(image);
  const h = new HeaderReader(image, end);
  const version = h.u16(SETUP_HEADER.version, 'version');
  const loadflags = h.u8(SETUP_HEADER.loadflags, 'loadflags');
  if ((loadflags & LOADED_HIGH) === 0) throw new LoaderError('bzImage: LOADED_HIGH is clear in loadflags (a zImage, which loads below 1 MiB; unsupported)', loadflags);
  const xloadflags = version >= BOOT_PROTOCOL_2_12 ? h.u16(SETUP_HEADER.xloadflags, 'xloadflags') : 0;
  if ((xloadflags & XLF_KERNEL_64) === 0) {
    throw new LoaderError(`bzImage: no 64-bit entry point (XLF_KERNEL_64 unset in xloadflags, protocol ${fmtVersion(version)}); a 64-bit kernel with protocol 2.12+ is required`, xloadflags);
  }
  const initrdAddrMax = h.u32(SETUP_HEADER.initrd_addr_max, 'initrd_addr_max');
  const kernelAlignment = h.u32(SETUP_HEADER.kernel_alignment, 'kernel_alignment');
  const relocatable = h.u8(SETUP_HEADER.relocatable_kernel, 'relocatable_kernel') !== 0;
  const cmdlineSize = h.u32(SETUP_HEADER.cmdline_size, 'cmdline_size');
  const prefAddress = version >= BOOT_PROTOCOL_2_10 ? h.u64(SETUP_HEADER.pref_address, 'pref_address') : 0;
  const initSize = version >= BOOT_PROTOCOL_2_10 ? h.u32(SETUP_HEADER.init_size, 'init_size') : 0;

  const setupSects = image[SETUP_HEADER.setup_sects] || SETUP_SECTS_DEFAULT;
  const pmOffset = (setupSects + 1) * SECTOR_SIZE;
  if (pmOffset >= image.length) {
    throw new LoaderError(`bzImage: protected-mode kernel starts at 0x${pmOffset.toString(16)} (setup_sects ${setupSects}), at or past the end of the ${image.length}-byte image (truncated)`, pmOffset);
  }
  const pmSize = image.length - pmOffset;
  const loadAddr = BZIMAGE_LOAD_ADDR;
  // Where the decompressor runs the kernel (arch/x86/boot/compressed/head_64.S).
  const runStart = Math.max(relocatable ? alignUp(loadAddr, kernelAlignment) : loadAddr, prefAddress);
  const kernelEnd = Math.max(loadAddr + pmSize, runStart + initSize);
  if (!mem.isValid(loadAddr, kernelEnd - loadAddr)) {
    throw new LoaderError(`bzImage: the kernel needs RAM from 1 MiB to 0x${kernelEnd.toString(16)} (image plus init_size); give the VM at least ${Math.ceil(kernelEnd / MiB)} MiB of memory`, kernelEnd);
  }

  mem.write(loadAddr, image.subarray(pmOffset));
  return {
    entry: loadAddr + STARTUP_64_OFFSET,
    loadAddr,
    setupHeader: image.slice(SETUP_HEADER.start, end),
    version,
    initrdAddrMax,
    kernelAlignment,
    cmdlineSize,
    xloadflags,
    kernelEnd,
  };
}
