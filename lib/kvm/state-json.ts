/**
 * JSON encodings for saved KVM state and the checks that read them back.
 * A state file is untrusted input: every reader here checks type, range and
 * exact length, and throws SnapshotStateError naming the field, before the
 * value can reach an ioctl.
 */
import { SnapshotStateError } from '../errors.js';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const HEX64 = /^0x[0-9a-f]{1,16}$/;

/** Base64 of a byte buffer (a KVM struct saved as is). */
export function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

/** Decodes `value` at `field` as base64 of exactly `size` bytes (or any size in [size.min, size.max]). */
export function fromBase64(field: string, value: unknown, size: number | { min: number; max: number }): Uint8Array {
  if (typeof value !== 'string' || value.length % 4 !== 0 || !BASE64.test(value)) throw new SnapshotStateError(field, 'must be a base64 string', typeof value === 'string' ? value.slice(0, 32) : value);
  const bytes = new Uint8Array(Buffer.from(value, 'base64'));
  const ok = typeof size === 'number' ? bytes.length === size : bytes.length >= size.min && bytes.length <= size.max;
  if (!ok) {
    const want = typeof size === 'number' ? `${size}` : `${size.min}..${size.max}`;
    throw new SnapshotStateError(field, `holds ${bytes.length} bytes, must be ${want} (saved by a different KVM/host, or damaged)`, bytes.length);
  }
  return bytes;
}

/** A u64 as a lower-case 0x-prefixed hex string. */
export function toHex64(v: bigint): string {
  return `0x${BigInt.asUintN(64, v).toString(16)}`;
}

/** Reads a 0x-prefixed hex u64 at `field`. */
export function fromHex64(field: string, value: unknown): bigint {
  if (typeof value !== 'string' || !HEX64.test(value)) throw new SnapshotStateError(field, 'must be a 0x-prefixed hex number of at most 64 bits', value);
  return BigInt(value);
}

/** Reads an integer in [min, max] at `field`. */
export function intIn(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw new SnapshotStateError(field, `must be an integer in ${min}..${max}`, value);
  return value;
}

/** Reads a u32 at `field`. */
export function u32(field: string, value: unknown): number {
  return intIn(field, value, 0, 0xffff_ffff);
}

/** Checks `value` at `field` is a plain object and returns it for member access. */
export function object(field: string, value: unknown): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new SnapshotStateError(field, 'must be an object', value);
  return value as Record<string, unknown>;
}

/** Checks `value` at `field` is an array of at most `max` entries. */
export function array(field: string, value: unknown, max: number): unknown[] {
  if (!Array.isArray(value)) throw new SnapshotStateError(field, 'must be an array', value);
  if (value.length > max) throw new SnapshotStateError(field, `has ${value.length} entries, at most ${max} allowed`, value.length);
  return value;
}

/** Checks `value` at `field` equals `expected` (a version or architecture tag). */
export function expect<T>(field: string, value: unknown, expected: T, fix: string): T {
  if (value !== expected) throw new SnapshotStateError(field, `is ${JSON.stringify(value)}, expected ${JSON.stringify(expected)}: ${fix}`, value);
  return expected;
}

/** Checks every byte value of `names` in `fields` is 0 or 1 (C booleans stored as u8). */
export function flags01(field: string, fields: Record<string, number>): void {
  for (const [k, v] of Object.entries(fields)) if (v !== 0 && v !== 1) throw new SnapshotStateError(`${field}.${k}`, `must be 0 or 1, is ${v}`, v);
}
