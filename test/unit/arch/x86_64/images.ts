/**
 * Builders of synthetic kernel images for the x86_64 loader tests: small
 * ELF64 executables and bzImages laid out by hand from the published formats.
 */

/** One ELF program header plus the bytes it points at. */
export interface ElfSegmentSpec {
  type?: number;
  paddr: number;
  vaddr?: bigint;
  data: Uint8Array;
  memsz?: number;
  align?: bigint;
}

export const PT_LOAD = 1;
export const PT_NOTE = 4;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;

/** An ELF64 little-endian x86_64 ET_EXEC image; segment data follow the program headers. */
export function makeElf(opts: { entry: bigint; segments: ElfSegmentSpec[] }): Uint8Array {
  const phoff = EHDR_SIZE;
  let dataOff = phoff + PHDR_SIZE * opts.segments.length;
  const offsets = opts.segments.map((s) => {
    const at = dataOff;
    dataOff += s.data.length;
    return at;
  });
  const image = new Uint8Array(dataOff);
  const dv = new DataView(image.buffer);
  image.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  dv.setUint16(0x10, 2, true); // ET_EXEC
  dv.setUint16(0x12, 62, true); // EM_X86_64
  dv.setUint32(0x14, 1, true);
  dv.setBigUint64(0x18, opts.entry, true);
  dv.setBigUint64(0x20, BigInt(phoff), true);
  dv.setUint16(0x34, EHDR_SIZE, true);
  dv.setUint16(0x36, PHDR_SIZE, true);
  dv.setUint16(0x38, opts.segments.length, true);
  opts.segments.forEach((s, i) => {
    const ph = phoff + i * PHDR_SIZE;
    dv.setUint32(ph, s.type ?? PT_LOAD, true);
    dv.setUint32(ph + 4, 7, true);
    dv.setBigUint64(ph + 8, BigInt(offsets[i]!), true);
    dv.setBigUint64(ph + 0x10, s.vaddr ?? BigInt(s.paddr), true);
    dv.setBigUint64(ph + 0x18, BigInt(s.paddr), true);
    dv.setBigUint64(ph + 0x20, BigInt(s.data.length), true);
    dv.setBigUint64(ph + 0x28, BigInt(s.memsz ?? s.data.length), true);
    dv.setBigUint64(ph + 0x30, s.align ?? 4n, true);
    image.set(s.data, offsets[i]!);
  });
  return image;
}

/** One ELF note (name NUL-terminated by the caller), padded to `align`. */
export function makeNote(name: string, type: number, desc: Uint8Array, align = 4): Uint8Array {
  const pad = (n: number): number => Math.ceil(n / align) * align;
  const out = new Uint8Array(12 + pad(name.length) + pad(desc.length));
  const dv = new DataView(out.buffer);
  dv.setUint32(0, name.length, true);
  dv.setUint32(4, desc.length, true);
  dv.setUint32(8, type, true);
  for (let i = 0; i < name.length; i++) out[12 + i] = name.charCodeAt(i);
  out.set(desc, 12 + pad(name.length));
  return out;
}

/** Little-endian u32 / u64 bytes. */
export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}
export function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A deterministic byte pattern of length n. */
export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

export interface BzImageSpec {
  setupSects?: number;
  version?: number;
  loadflags?: number;
  xloadflags?: number;
  pm?: Uint8Array;
  initSize?: number;
  prefAddress?: bigint;
  kernelAlignment?: number;
  relocatable?: number;
  cmdlineSize?: number;
  initrdAddrMax?: number;
  /** Absolute offset one past the header (0x202 + byte at 0x201). */
  headerEnd?: number;
}

/** A bzImage: setup sectors with a setup header, then the protected-mode payload. */
export function makeBzImage(spec: BzImageSpec = {}): Uint8Array {
  const setupSects = spec.setupSects ?? 4;
  const pm = spec.pm ?? pattern(4096);
  const realSects = setupSects === 0 ? 4 : setupSects;
  const image = new Uint8Array((realSects + 1) * 512 + pm.length);
  const dv = new DataView(image.buffer);
  image[0x1f1] = setupSects;
  dv.setUint16(0x1fe, 0xaa55, true);
  image[0x200] = 0xeb;
  image[0x201] = (spec.headerEnd ?? 0x26c) - 0x202;
  dv.setUint32(0x202, 0x53726448, true);
  dv.setUint16(0x206, spec.version ?? 0x020f, true);
  image[0x211] = spec.loadflags ?? 0x01;
  dv.setUint32(0x22c, spec.initrdAddrMax ?? 0x7fffffff, true);
  dv.setUint32(0x230, spec.kernelAlignment ?? 0x200000, true);
  image[0x234] = spec.relocatable ?? 1;
  dv.setUint16(0x236, spec.xloadflags ?? 0x1, true);
  dv.setUint32(0x238, spec.cmdlineSize ?? 2047, true);
  dv.setBigUint64(0x258, spec.prefAddress ?? 0x1000000n, true);
  dv.setUint32(0x260, spec.initSize ?? 0x400000, true);
  image.set(pm, (realSects + 1) * 512);
  return image;
}
