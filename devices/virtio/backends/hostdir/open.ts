/**
 * Opening a share's root directory on the main thread, with the checks that
 * must fail the VM's start rather than the guest's first request.
 */
import { ConfigError, errnoName, HostError } from '../../../../lib/errors.js';
import { cstr, DOT_PATH } from './names.js';
import * as S from './sys.js';

/** An open share root. `rootFd` is process-wide: pass the number to the I/O worker. */
export interface HostDirHandle {
  /** O_PATH | O_DIRECTORY fd of the shared directory. */
  readonly rootFd: number;
  readonly readOnly: boolean;
  /** Closes the fd. Idempotent. Only once no thread uses it any more (after the I/O worker stopped). */
  close(): void;
}

const encoder = new TextEncoder();

/**
 * Opens `path` as a share root (main thread): an existing directory, opened
 * O_PATH | O_DIRECTORY | O_CLOEXEC (the path itself may go through symlinks:
 * it is the host user's choice). Then checks what the backend relies on:
 * openat2(2) with RESOLVE_BENEATH (Linux 5.6 or later, and not blocked by a
 * seccomp filter) and a mounted /proc (/proc/self/fd). There is no fallback:
 * without openat2 the sandbox cannot be enforced, so the share is refused.
 *
 * Throws ConfigError naming `field` (e.g. `shares[0].path`) and the fix.
 * Nothing stays open when it throws.
 */
export function openHostDir(path: string, opts: { readOnly: boolean; field: string }): HostDirHandle {
  const { field, readOnly } = opts;
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    throw new ConfigError(field, 'must be the path of a host directory (non-empty, no NUL characters)', path);
  }
  const fd = S.openat(S.AT_FDCWD, cstr(encoder.encode(path)), S.O_PATH | S.O_DIRECTORY | S.O_CLOEXEC, 0);
  if (fd < 0) throw openError(path, S.errno(), field);
  try {
    checkOpenat2(fd, path, field);
    checkProc(field);
  } catch (e) {
    S.close(fd);
    throw e;
  }
  let open = true;
  return {
    rootFd: fd,
    readOnly,
    close: () => {
      if (open) S.close(fd);
      open = false;
    },
  };
}

/** The ConfigError for a failed open of the share root. */
export function openError(path: string, errno: number, field: string): ConfigError {
  const cause = new HostError('open', errno, path);
  switch (errno) {
    case S.ENOENT:
      return new ConfigError(field, `directory '${path}' does not exist; create it or fix the path (relative paths resolve against the current directory)`, path, cause);
    case S.ENOTDIR:
      return new ConfigError(field, `'${path}' is not a directory; share a directory, not a file`, path, cause);
    case S.EACCES:
    case S.EPERM:
      return new ConfigError(field, `permission denied opening '${path}'; grant this process search permission on it and its parents`, path, cause);
    case S.ELOOP:
      return new ConfigError(field, `'${path}' has a symlink loop`, path, cause);
    default:
      return new ConfigError(field, `cannot open directory '${path}': ${errnoName(errno)}`, path, cause);
  }
}

/** openat2 must exist and work: the sandbox rests on RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS. */
export function checkOpenat2(rootFd: number, path: string, field: string): void {
  const fd = S.openat2(rootFd, DOT_PATH, S.O_PATH | S.O_DIRECTORY | S.O_CLOEXEC, 0,
    S.RESOLVE_BENEATH | S.RESOLVE_NO_MAGICLINKS | S.RESOLVE_NO_SYMLINKS);
  if (fd >= 0) {
    S.close(fd);
    return;
  }
  throw openat2Error(S.errno(), path, field);
}

/** The ConfigError for a failed openat2 probe: ENOSYS (kernel before 5.6) and EPERM (seccomp) say so. */
export function openat2Error(e: number, path: string, field: string): ConfigError {
  const cause = new HostError('openat2', e, path);
  if (e === S.ENOSYS || e === S.EPERM) {
    return new ConfigError(field, `sharing a directory needs the openat2(2) system call (Linux 5.6 or later), which ${e === S.ENOSYS
      ? 'this kernel does not have; upgrade the host kernel'
      : 'is blocked here (EPERM: a seccomp filter, e.g. an old container runtime profile); allow openat2'}; flintvm will not share a directory without it`, path, cause);
  }
  return new ConfigError(field, `openat2 on '${path}' failed: ${errnoName(e)}`, path, cause);
}

function checkProc(field: string): void {
  const fd = S.openat(S.AT_FDCWD, cstr(encoder.encode('/proc/self/fd')), S.O_PATH | S.O_DIRECTORY | S.O_CLOEXEC, 0);
  if (fd < 0) {
    const e = S.errno();
    throw new ConfigError(field, `sharing a directory needs /proc mounted (/proc/self/fd: ${errnoName(e)}); mount procfs`, '/proc/self/fd', new HostError('open', e, '/proc/self/fd'));
  }
  S.close(fd);
}
