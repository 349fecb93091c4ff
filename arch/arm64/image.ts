/**
 * The arm64 Linux `Image` format (Documentation/arch/arm64/booting.rst §4):
 * a 64-byte header, then the kernel, entered at its first byte. The header
 * says how far from a 2 MiB-aligned base the image must sit (text_offset)
 * and how much memory it needs from there, .bss included (image_size).
 * A gzip-compressed Image (Image.gz) is inflated first.
 */
import { createRequire } from 'node:module';
import type { gunzipSync as GunzipSync } from 'node:zlib';
import { LoaderError } from '../../lib/errors.js';
import { MiB } from '../../lib/sys.js';

export const IMAGE_HEADER_SIZE = 64;
/** "ARM\x64", little-endian, at offset 56. */
export const IMAGE_MAGIC = 0x644d5241;
const OFF_TEXT_OFFSET = 8;
const OFF_IMAGE_SIZE = 16;
const OFF_FLAGS = 24;
const OFF_MAGIC = 56;
/** Header flags bit 0: the kernel is big-endian. */
const FLAG_BIG_ENDIAN = 1n;
/** Kernels before 3.17 have image_size 0 and expect text_offset 0x80000 (booting.rst). */
const LEGACY_TEXT_OFFSET = 0x80000;
/** Inflating a compressed image stops here: no real arm64 kernel Image is this big. */
export const MAX_INFLATED_IMAGE = 256 * MiB;
/** The base the image is placed above must be 2 MiB-aligned. */
export const IMAGE_BASE_ALIGN = 2 * MiB;

export interface ArmImageHeader {
  /** Offset from the 2 MiB-aligned base where the image goes. */
  readonly textOffset: number;
  /** Bytes the kernel occupies from its load address, including .bss. */
  readonly imageSize: number;
  /** The raw image bytes (inflated if it came gzip'd). */
  readonly image: Uint8Array;
}

/** Validates an (optionally gzip'd) arm64 Image; throws {@link LoaderError} with what is wrong. */
export function parseArmImage(file: Uint8Array): ArmImageHeader {
  let image = file;
  if (file.length >= 2 && file[0] === 0x1f && file[1] === 0x8b) {
    try {
      // Required here, not imported: zlib is 20 ms of a cold start in the emulated host, and only an Image.gz needs it.
      const { gunzipSync } = createRequire(import.meta.url)('node:zlib') as { gunzipSync: typeof GunzipSync };
      image = new Uint8Array(gunzipSync(file, { maxOutputLength: MAX_INFLATED_IMAGE }));
    } catch (e) {
      throw new LoaderError(`kernel: a gzip file that does not inflate to an arm64 Image of at most ${MAX_INFLATED_IMAGE / 1024 / 1024} MiB: ${(e as Error).message}`);
    }
  }
  if (image.length < IMAGE_HEADER_SIZE) {
    throw new LoaderError(`kernel: ${image.length} bytes is shorter than the ${IMAGE_HEADER_SIZE}-byte arm64 Image header`);
  }
  const d = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (d.getUint32(OFF_MAGIC, true) !== IMAGE_MAGIC) {
    throw new LoaderError('kernel: not an arm64 Image (no "ARM\\x64" magic at offset 56); give the kernel\'s arch/arm64/boot/Image or Image.gz');
  }
  const flags = d.getBigUint64(OFF_FLAGS, true);
  if (flags & FLAG_BIG_ENDIAN) throw new LoaderError('kernel: a big-endian arm64 Image; only little-endian kernels are supported');
  const rawSize = d.getBigUint64(OFF_IMAGE_SIZE, true);
  const rawOffset = d.getBigUint64(OFF_TEXT_OFFSET, true);
  if (rawSize === 0n) return { textOffset: LEGACY_TEXT_OFFSET, imageSize: image.length, image };
  if (rawOffset >= BigInt(IMAGE_BASE_ALIGN) || rawOffset % 4096n !== 0n) {
    throw new LoaderError(`kernel: arm64 Image text_offset 0x${rawOffset.toString(16)} is not a page multiple below 2 MiB`);
  }
  if (rawSize < BigInt(image.length) || rawSize > BigInt(MAX_INFLATED_IMAGE) * 4n) {
    throw new LoaderError(`kernel: arm64 Image image_size ${rawSize} is smaller than the file (${image.length} bytes) or implausibly large`);
  }
  return { textOffset: Number(rawOffset), imageSize: Number(rawSize), image };
}
