/**
 * Error types, one per layer. Every error carries a stable `code`, the
 * offending value where there is one, and wraps its `cause`.
 */

/**
 * The stable codes of {@link FlintvmError} (see the README's error table):
 * - `FLINTVM_E_CONFIG`: the config (or a CLI flag) is invalid ({@link ConfigError});
 * - `FLINTVM_E_KVM_IOCTL`: a KVM call failed, including opening /dev/kvm ({@link KvmError});
 * - `FLINTVM_E_HOST`: another host system call failed ({@link HostError});
 * - `FLINTVM_E_GUEST_ADDR`: a guest-physical access fell outside guest RAM ({@link GuestAddressError});
 * - `FLINTVM_E_LOADER`: a kernel or initrd image is malformed or does not fit ({@link LoaderError});
 * - `FLINTVM_E_STATE`: a lifecycle call in the wrong state ({@link StateError});
 * - `FLINTVM_E_GUEST`: the guest did something the VMM cannot continue from ({@link GuestError});
 * - `FLINTVM_E_GUEST_IMAGES`: the default guest images are missing or failed to build;
 * - `FLINTVM_E_VIRTQUEUE`: a guest's virtqueue is malformed (device level);
 * - `FLINTVM_E_HOSTDIR`: a share's host-directory operation failed or was refused (device level);
 * - `FLINTVM_E_WORKER`: a vCPU worker thread failed to start or died;
 * - `FLINTVM_E_IO_WORKER`: the VM's I/O worker died while the VM ran ({@link IoWorkerError}); that VM stops with reason `error`;
 * - `FLINTVM_E_SNAPSHOT_STATE`: saved vCPU/VM state is malformed or does not fit this host ({@link SnapshotStateError});
 * - `FLINTVM_E_SNAPSHOT`: a snapshot cannot be taken now or read at all: a device that cannot be saved, a VM not paused, a
 *   directory that is not a snapshot or is of another format version ({@link SnapshotError}).
 */
export type FlintvmErrorCode =
  | 'FLINTVM_E_CONFIG'
  | 'FLINTVM_E_KVM_IOCTL'
  | 'FLINTVM_E_HOST'
  | 'FLINTVM_E_GUEST_ADDR'
  | 'FLINTVM_E_LOADER'
  | 'FLINTVM_E_STATE'
  | 'FLINTVM_E_GUEST'
  | 'FLINTVM_E_GUEST_IMAGES'
  | 'FLINTVM_E_VIRTQUEUE'
  | 'FLINTVM_E_HOSTDIR'
  | 'FLINTVM_E_WORKER'
  | 'FLINTVM_E_IO_WORKER'
  | 'FLINTVM_E_SNAPSHOT_STATE'
  | 'FLINTVM_E_SNAPSHOT';

/** Base class of every error flintvm throws on purpose. */
export class FlintvmError extends Error {
  /** Stable machine-readable code, e.g. `FLINTVM_E_CONFIG`. */
  readonly code: FlintvmErrorCode;
  /** The offending value, if any. */
  readonly value?: unknown;

  constructor(code: FlintvmErrorCode, message: string, options: { value?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    if (options.value !== undefined) this.value = options.value;
  }
}

/** A KVM ioctl (or another kernel call) failed. `errno` is the positive errno value. */
export class KvmError extends FlintvmError {
  readonly ioctl: string;
  readonly errno: number;

  constructor(ioctl: string, errno: number, hint?: string) {
    const name = errnoName(errno);
    super('FLINTVM_E_KVM_IOCTL', `${ioctl} failed: ${name} (errno ${errno})${hint ? `: ${hint}` : ''}`, { value: errno });
    this.ioctl = ioctl;
    this.errno = errno;
  }
}

/** A host system call outside KVM (mmap, eventfd, epoll, open…) failed. */
export class HostError extends FlintvmError {
  readonly syscall: string;
  readonly errno: number;

  constructor(syscall: string, errno: number, detail?: string) {
    super('FLINTVM_E_HOST', `${syscall} failed: ${errnoName(errno)} (errno ${errno})${detail ? `: ${detail}` : ''}`, { value: errno });
    this.syscall = syscall;
    this.errno = errno;
  }
}

/** A guest-physical access fell outside guest RAM, or its arithmetic overflowed. */
export class GuestAddressError extends FlintvmError {
  readonly gpa: number;
  readonly length: number;

  constructor(gpa: number, length: number, why = 'outside guest memory') {
    super('FLINTVM_E_GUEST_ADDR', `guest access [0x${hex(gpa)}, +${length}) is ${why}`, { value: gpa });
    this.gpa = gpa;
    this.length = length;
  }
}

/** One problem in a config: the field as the user named it, and what is wrong with it. */
export interface ConfigProblem {
  readonly field: string;
  readonly message: string;
  readonly value?: unknown;
  readonly cause?: unknown;
}

/**
 * The user's configuration is invalid. The message names the field and the fix; when several fields are
 * wrong, `problems` lists all of them (one per message line) and `field` is the first.
 */
export class ConfigError extends FlintvmError {
  readonly field: string;
  /** Every problem found, in order (at least one). */
  readonly problems: readonly ConfigProblem[];

  constructor(field: string, message: string, value?: unknown, cause?: unknown) {
    super('FLINTVM_E_CONFIG', `${field}: ${message}`, { value, cause });
    this.field = field;
    this.problems = [{ field, message, value, cause }];
  }

  /** One ConfigError for several problems (the first names `field`, `value` and `cause`). */
  static fromProblems(problems: readonly ConfigProblem[]): ConfigError {
    const [first, ...rest] = problems;
    if (!first) throw new RangeError('ConfigError.fromProblems needs at least one problem');
    const text = [first.message, ...rest.map((p) => `${p.field}: ${p.message}`)].join('\n');
    const e = new ConfigError(first.field, text, first.value, first.cause);
    (e as { problems: readonly ConfigProblem[] }).problems = [...problems];
    return e;
  }
}

/** A kernel/initrd image is malformed or does not fit. */
export class LoaderError extends FlintvmError {
  constructor(message: string, value?: unknown) {
    super('FLINTVM_E_LOADER', message, { value });
  }
}

/** A VM lifecycle call was made in the wrong state (e.g. resume() on a stopped VM). */
export class StateError extends FlintvmError {
  constructor(message: string, value?: unknown) {
    super('FLINTVM_E_STATE', message, { value });
  }
}

/** The guest did something the VMM cannot continue from (device level). */
export class GuestError extends FlintvmError {
  constructor(message: string, value?: unknown) {
    super('FLINTVM_E_GUEST', message, { value });
  }
}

/**
 * The VM's I/O worker (the thread serving its virtio devices) died while the
 * VM ran: that VM is stopped with exit reason 'error' and this as its cause.
 * Other VMs in the process are not affected. `cause` is the worker's error.
 */
export class IoWorkerError extends FlintvmError {
  constructor(message: string, cause?: unknown) {
    super('FLINTVM_E_IO_WORKER', message, { cause });
  }
}

/**
 * A saved vCPU/VM state (a snapshot's state file) is malformed, or does not
 * fit the VM it is restored into. `field` names the offending part (e.g.
 * `vcpus[0].xsave`); nothing reaches KVM until every field has passed.
 */
export class SnapshotStateError extends FlintvmError {
  readonly field: string;

  constructor(field: string, message: string, value?: unknown) {
    super('FLINTVM_E_SNAPSHOT_STATE', `${field}: ${message}`, { value });
    this.field = field;
  }
}

function hex(n: number): string {
  return Number.isFinite(n) && n >= 0 ? n.toString(16) : String(n);
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 4: 'EINTR', 5: 'EIO', 6: 'ENXIO', 7: 'E2BIG', 9: 'EBADF', 11: 'EAGAIN',
  12: 'ENOMEM', 13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 20: 'ENOTDIR',
  21: 'EISDIR', 22: 'EINVAL', 24: 'EMFILE', 25: 'ENOTTY', 28: 'ENOSPC', 30: 'EROFS', 38: 'ENOSYS',
  95: 'EOPNOTSUPP', 110: 'ETIMEDOUT',
};

/**
 * Runs `make` (an error's constructor) without capturing a stack trace. For
 * errors that are the guest's answer, an errno reply thrown and caught inside
 * one request: there V8's stack capture was most of the cost, about 10 us per
 * throw natively against 1.4 without it (a throw 12 frames deep, 200,000
 * rounds), and a guest can ask for one on every request (a LOOKUP of a name
 * that does not exist). `Error.stackTraceLimit` belongs to this thread's realm;
 * it is 0 only while `make` runs and is restored before anything else can run.
 */
export function withoutStack<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** Symbolic name of an errno value, e.g. 13 -> 'EACCES'. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E#${errno}`;
}

/**
 * A snapshot cannot be taken (a device without snapshot support, a VM that
 * is not paused or not running, a device mid-reset) or a directory cannot be
 * read as one (missing files, another format, a newer version). Nothing was
 * written, or nothing was started.
 */
export class SnapshotError extends FlintvmError {
  constructor(message: string, options?: { cause?: unknown; value?: unknown }) {
    super('FLINTVM_E_SNAPSHOT', message, options);
  }
}
