/**
 * The one error type of the host-directory backend: a failed file operation,
 * carrying the Linux errno the protocol (9P's Rlerror, FUSE's out.error)
 * sends back to the guest.
 */
import { errnoName, FlintvmError, withoutStack } from '../../../../lib/errors.js';

/**
 * A file operation failed with `errno` (a positive Linux errno value). Thrown
 * for host failures (the syscall's own errno) and for requests the backend
 * refuses (EINVAL for a bad name, EROFS on a read-only share, EPERM for a
 * policy refusal). Code `FLINTVM_E_HOSTDIR`. Never a bug in the backend:
 * those throw plain Errors.
 */
export class FsError extends FlintvmError {
  constructor(readonly errno: number, readonly op: string, detail?: string) {
    super('FLINTVM_E_HOSTDIR', `${op}: ${fsErrnoName(errno)} (errno ${errno})${detail ? `: ${detail}` : ''}`, { value: errno });
  }
}

/** Names of the errnos file operations add to lib/errors.ts's table. */
const MORE_NAMES: Record<number, string> = {
  18: 'EXDEV', 23: 'ENFILE', 27: 'EFBIG', 31: 'EMLINK', 34: 'ERANGE', 36: 'ENAMETOOLONG', 37: 'ENOLCK', 39: 'ENOTEMPTY',
  40: 'ELOOP', 61: 'ENODATA', 71: 'EPROTO', 75: 'EOVERFLOW', 90: 'EMSGSIZE', 116: 'ESTALE',
};

/** Symbolic name of an errno value. */
export function fsErrnoName(errno: number): string {
  return MORE_NAMES[errno] ?? errnoName(errno);
}

/** Throws FsError(errno, op), without a stack trace: it is the guest's errno reply, not a bug (see withoutStack). */
export function fail(errno: number, op: string, detail?: string): never {
  throw withoutStack(() => new FsError(errno, op, detail));
}
