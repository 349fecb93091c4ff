/**
 * Extended attributes of a regular file or directory: read through the
 * /proc/self/fd link of the node's fd, written on an open (not O_PATH) fd,
 * with the share's namespace policy for writes:
 *
 * - writable: `user.*`, `system.posix_acl_access`, `system.posix_acl_default`;
 * - `trusted.*` and `security.*`: EPERM. A guest must not give a host file
 *   file capabilities (security.capability), a security label
 *   (security.selinux, security.ima...), or overlayfs metadata (trusted.overlay.*);
 * - anything else: EOPNOTSUPP.
 *
 * Reads and lists are not filtered. Values and lists are capped at 64 KiB
 * (XATTR_SIZE_MAX / XATTR_LIST_MAX), names at 255 bytes.
 */
import { fail } from './errors.js';
import { cstr, type NameInput } from './names.js';
import * as S from './sys.js';

const encoder = new TextEncoder();
const latin1 = new TextDecoder('latin1');
/** Tries of the size-then-read dance when the value keeps growing under us. */
const SIZE_RETRIES = 4;

/** `name` as a C string: 1..255 bytes, no NUL (EINVAL / ERANGE as setxattr(2) says). */
export function xattrName(name: NameInput, op: string): Uint8Array {
  const b = typeof name === 'string' ? encoder.encode(name) : name;
  if (b.length === 0 || b.includes(0)) fail(S.EINVAL, op, 'xattr name empty or with NUL');
  if (b.length > S.XATTR_NAME_MAX) fail(S.ERANGE, op, `xattr name of ${b.length} bytes`);
  return cstr(b);
}

/** EPERM / EOPNOTSUPP unless the guest may set or remove xattr `name` (see the file comment). */
export function checkWritableXattr(name: Uint8Array, op: string): void {
  const s = latin1.decode(name.subarray(0, name.length - 1));
  if (s.startsWith('user.') && s.length > 'user.'.length) return;
  if (s === 'system.posix_acl_access' || s === 'system.posix_acl_default') return;
  if (s.startsWith('trusted.') || s.startsWith('security.')) fail(S.EPERM, op, `the share does not let the guest set ${s}`);
  fail(S.EOPNOTSUPP, op, `xattr namespace of ${s}`);
}

/**
 * The value of xattr `name` of the file `link` (a NUL-terminated /proc/self/fd/N
 * path of the node's own fd) leads to. By path, not by an fd: the node's fd is
 * O_PATH, which the f*xattr calls refuse, and opening a readable fd first costs
 * three more syscalls per call (a getxattr of a missing name, natively: 38 µs
 * that way, 14 µs this way). The kernel asks for
 * security.capability before every cached write(2) to a virtio-fs file.
 */
export function xattrGet(link: Uint8Array, name: NameInput): Uint8Array {
  const n = xattrName(name, 'getxattr');
  return sizedRead('getxattr', S.XATTR_SIZE_MAX, (buf, size) => S.getxattr(link, n, buf, size));
}

/** The NUL-separated xattr names of the file `link` (as for {@link xattrGet}) leads to. */
export function xattrList(link: Uint8Array): Uint8Array {
  return sizedRead('listxattr', S.XATTR_LIST_MAX, (buf, size) => S.listxattr(link, buf, size));
}

export function xattrSet(fd: number, name: NameInput, value: Uint8Array, flags: number): void {
  const n = xattrName(name, 'setxattr');
  if ((flags & ~(S.XATTR_CREATE | S.XATTR_REPLACE)) !== 0) fail(S.EINVAL, 'setxattr', `flags ${flags}`);
  if (value.length > S.XATTR_SIZE_MAX) fail(S.E2BIG, 'setxattr', `value of ${value.length} bytes`);
  checkWritableXattr(n, 'setxattr');
  if (S.fsetxattr(fd, n, value, value.length, flags) < 0) fail(S.errno(), 'setxattr');
}

export function xattrRemove(fd: number, name: NameInput): void {
  const n = xattrName(name, 'removexattr');
  checkWritableXattr(n, 'removexattr');
  if (S.fremovexattr(fd, n) < 0) fail(S.errno(), 'removexattr');
}

/** The usual two-step read: ask the size, then read; again if it grew meanwhile (ERANGE). */
function sizedRead(op: string, max: number, call: (buf: Uint8Array | null, size: number) => number): Uint8Array {
  for (let i = 0; i < SIZE_RETRIES; i++) {
    const size = call(null, 0);
    if (size < 0) fail(S.errno(), op);
    if (size > max) fail(S.E2BIG, op, `${size} bytes`);
    if (size === 0) return new Uint8Array(0);
    const buf = new Uint8Array(size);
    const got = call(buf, size);
    if (got >= 0) return buf.slice(0, got);
    const e = S.errno();
    if (e !== S.ERANGE) fail(e, op);
  }
  return fail(S.ERANGE, op, 'the value kept changing size');
}
