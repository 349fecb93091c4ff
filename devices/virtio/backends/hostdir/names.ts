/**
 * Names the guest gives: validated to be ONE path component, and encoded as
 * the NUL-terminated bytes the syscalls take.
 *
 * A name is bytes, not text: Linux file names need not be UTF-8, and 9P and
 * FUSE carry raw bytes. Strings are accepted for convenience (tests, callers
 * with known-UTF-8 names) and encoded as UTF-8.
 */
import { fail } from './errors.js';
import { NAME_MAX, EINVAL, ENAMETOOLONG, PATH_MAX } from './sys.js';

/** A name as bytes (exact) or a string (encoded as UTF-8). */
export type NameInput = Uint8Array | string;

const SLASH = 0x2f;
const DOT = 0x2e;
const NUL = 0;
const encoder = new TextEncoder();

/** The empty C string, for the AT_EMPTY_PATH calls. */
export const EMPTY_PATH = new Uint8Array([NUL]);
/** "." as a C string: the directory an fd refers to. */
export const DOT_PATH = new Uint8Array([DOT, NUL]);

function bytesOf(name: NameInput): Uint8Array {
  return typeof name === 'string' ? encoder.encode(name) : name;
}

/**
 * Checks that `name` is one path component that names an entry of a
 * directory: 1..255 bytes, no '/', no NUL, and neither "." nor "..". Returns
 * the bytes. Throws FsError(EINVAL) (ENAMETOOLONG past 255 bytes).
 * "." and ".." are refused here on purpose: a protocol that means "parent"
 * resolves it through the backend's node table (HostDir.parent), never as a
 * name the kernel resolves.
 */
export function componentBytes(name: NameInput, op: string): Uint8Array {
  const b = bytesOf(name);
  if (b.length === 0) fail(EINVAL, op, 'empty name');
  if (b.length > NAME_MAX) fail(ENAMETOOLONG, op, `name of ${b.length} bytes`);
  if (b.length <= 2 && b[0] === DOT && (b.length === 1 || b[1] === DOT)) fail(EINVAL, op, `name '${b.length === 1 ? '.' : '..'}'`);
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c === SLASH || c === NUL) fail(EINVAL, op, c === SLASH ? "name contains '/'" : 'name contains NUL');
  }
  return b;
}

/** `bytes` plus a terminating NUL (a fresh array). */
export function cstr(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** A validated component as a C string. */
export function componentPath(name: NameInput, op: string): Uint8Array {
  return cstr(componentBytes(name, op));
}

/**
 * A symlink target: any bytes but NUL, 1..PATH_MAX-1 of them. It is data:
 * the backend never resolves it (symlinks are only ever read back).
 */
export function symlinkTarget(target: NameInput, op: string): Uint8Array {
  const b = bytesOf(target);
  if (b.length === 0) fail(EINVAL, op, 'empty symlink target');
  if (b.length >= PATH_MAX) fail(ENAMETOOLONG, op, `symlink target of ${b.length} bytes`);
  if (b.includes(NUL)) fail(EINVAL, op, 'symlink target contains NUL');
  return cstr(b);
}

/** The decimal digits of a non-negative integer as a C string (an fd number under /proc/self/fd). */
export function decimalPath(n: number): Uint8Array {
  return cstr(encoder.encode(String(n)));
}

/** Equal byte strings. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
