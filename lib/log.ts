import type createDebug from 'debug';
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { formatWithOptions, type InspectOptions } from 'node:util';
import { isMainThread } from 'node:worker_threads';

const STDERR_FD = 2;
type Debug = typeof createDebug;

/**
 * `debug` itself, or null on a worker thread started without DEBUG. Loading `debug` loads node's tty and
 * net modules, which each worker thread (a new V8 isolate) compiles again: about 100 ms of a worker's
 * start in the emulated test host. A worker's namespaces can only come from DEBUG in the environment it
 * was started with (a copy of the main thread's, where `debug.enable()` also writes it), so without DEBUG
 * nothing could ever enable a logger there, and a silent one takes its place. The main thread always
 * loads it, so that an embedder's `debug.enable()` works at any time.
 */
const realDebug: Debug | null = isMainThread || process.env['DEBUG'] ? (createRequire(import.meta.url)('debug') as Debug) : null;

// On worker threads (vCPU and I/O workers), process.stderr forwards a chunk and
// then buffers until the thread's Node event loop turns, which it never does
// while the thread blocks in KVM_RUN or epoll_wait (and terminate() drops the
// buffer). So `debug` output from workers goes straight to fd 2, synchronously.
if (!isMainThread && realDebug) {
  const createDebug = realDebug;
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
  return realDebug ? realDebug(`flintvm:${namespace}`) : silent(`flintvm:${namespace}`);
}

/** A logger that is never enabled (see realDebug): the part of `debug`'s Debugger that flintvm uses, plus its name. */
function silent(namespace: string): createDebug.Debugger {
  const logger = (): void => undefined;
  return Object.assign(logger, { enabled: false, namespace }) as unknown as createDebug.Debugger;
}
