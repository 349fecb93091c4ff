import * as ffi from '../kvm/ffi.js';
import { HostError } from '../errors.js';

/**
 * The real-time signal that kicks a thread out of a blocking KVM_RUN or
 * epoll_wait. SIGUSR1 is Node's inspector's, so we use SIGRTMIN+6 (40 on
 * glibc, where SIGRTMIN is 34).
 */
export const KICK_SIGNAL = 40;

const SIGACTION_SIZE = 152; // glibc struct sigaction on x86-64/arm64
const SA_HANDLER = 0;
const SA_FLAGS = 136;

let installed = false;

/**
 * Installs a no-op *native* handler for {@link KICK_SIGNAL} once per thread
 * group (signal dispositions are per process; this is the one piece of
 * process-wide state flintvm sets, and it is idempotent and harmless).
 * The handler is libc's getpid: a JS function must never run in signal
 * context. No SA_RESTART, so the interrupted ioctl returns EINTR.
 */
export function installKickHandler(): void {
  if (installed) return;
  const act = new Uint8Array(SIGACTION_SIZE);
  const d = new DataView(act.buffer);
  d.setBigUint64(SA_HANDLER, ffi.libcSymbol('getpid'), true);
  d.setBigUint64(SA_FLAGS, 0n, true);
  if (ffi.sigaction(KICK_SIGNAL, act, null) !== 0) throw new HostError('sigaction', ffi.errno());
  installed = true;
}

/** Sends the kick signal to thread `tid` of this process. Returns false if the thread is gone. */
export function kickThread(tid: number): boolean {
  return ffi.tgkill(ffi.getpid(), tid, KICK_SIGNAL) === 0;
}
