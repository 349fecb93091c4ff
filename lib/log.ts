import createDebug from 'debug';
import { writeSync } from 'node:fs';
import { formatWithOptions, type InspectOptions } from 'node:util';
import { isMainThread } from 'node:worker_threads';

const STDERR_FD = 2;

// On worker threads (vCPU and I/O workers), process.stderr forwards a chunk and
// then buffers until the thread's Node event loop turns, which it never does
// while the thread blocks in KVM_RUN or epoll_wait (and terminate() drops the
// buffer). So `debug` output from workers goes straight to fd 2, synchronously.
if (!isMainThread) {
  createDebug.log = (...args: unknown[]): void => {
    try {
      writeSync(STDERR_FD, formatWithOptions((createDebug.inspectOpts ?? {}) as InspectOptions, ...args) + '\n');
    } catch {
      // EAGAIN on a nonblocking stderr: losing a log line beats blocking a vCPU or the I/O thread.
    }
  };
}

/** A `debug` logger under the `flintvm:` prefix, one namespace per module (e.g. `log('vcpu')`). */
export function log(namespace: string): createDebug.Debugger {
  return createDebug(`flintvm:${namespace}`);
}
