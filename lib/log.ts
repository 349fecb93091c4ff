import type createDebug from 'debug';
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { formatWithOptions, type InspectOptions } from 'node:util';
import { isMainThread } from 'node:worker_threads';

const STDERR_FD = 2;
type Debug = typeof createDebug;

/**
 * Set to true on `globalThis` by bin/launch.cjs before a flintvm command (`flintvm`, `flintvm-oci`) loads:
 * that process has no embedder, so only DEBUG in its environment or the command itself ({@link enableLogs})
 * can turn a logger on. Nothing else sets it; a library's process never has it.
 */
export const COMMAND_PROCESS = Symbol.for('flintvm.commandProcess');

/**
 * A command's main thread started without DEBUG: `debug` loads only if the command enables logs. Loading it
 * costs a cold command about 7 ms here (node's tty module, debug's own files, the stderr stream it probes for
 * colours), on the path of every `flintvm run` and of the OCI runtime's container holder (its short commands
 * never load this module).
 */
const deferred = isMainThread && !process.env['DEBUG'] && (globalThis as Record<symbol, unknown>)[COMMAND_PROCESS] === true;

/**
 * `debug` itself, or null on a worker thread started without DEBUG, and in a command started without it
 * until {@link enableLogs}. Loading `debug` loads node's tty and
 * net modules, which each worker thread (a new V8 isolate) compiles again: about 100 ms of a worker's
 * start in the emulated test host. A worker's namespaces can only come from DEBUG in the environment it
 * was started with (a copy of the main thread's, where `debug.enable()` also writes it), so without DEBUG
 * nothing could ever enable a logger there, and a silent one takes its place. A library's main thread always
 * loads it, so that an embedder's `debug.enable()` works at any time.
 */
let realDebug: Debug | null = (isMainThread && !deferred) || process.env['DEBUG'] ? loadDebug() : null;

function loadDebug(): Debug {
  return createRequire(import.meta.url)('debug') as Debug;
}

/** A deferred command's loggers, each told the real `debug` once {@link enableLogs} loads it. */
const waiting: Array<(d: Debug) => void> = [];

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
  const name = `flintvm:${namespace}`;
  if (realDebug) return realDebug(name);
  return deferred ? waitingLogger(name) : silent(name);
}

/**
 * Turns on `namespaces` (DEBUG's syntax) in this process, loading `debug` first in a command that deferred it,
 * and hands every line to `sink` when given, formatted (`%d`, `%s`…) as debug's own output would be. For a
 * command's own options (Firecracker's logger); an embedder calls `debug.enable()` itself.
 */
export function enableLogs(namespaces: string, sink?: (line: string) => void): void {
  const d = (realDebug ??= loadDebug());
  d.enable(namespaces);
  if (sink) d.log = (...args: unknown[]) => sink(formatWithOptions((d.inspectOpts ?? {}) as InspectOptions, ...args));
  for (const tell of waiting.splice(0)) tell(d);
}

/** A deferred command's logger: silent until {@link enableLogs} loads `debug`, then that namespace's real one. */
function waitingLogger(namespace: string): createDebug.Debugger {
  let real: createDebug.Debugger | undefined;
  const logger = (...args: unknown[]): void => {
    if (real) (real as (...a: unknown[]) => void)(...args);
  };
  Object.defineProperty(logger, 'enabled', { get: () => real?.enabled ?? false });
  waiting.push((d) => { real = d(namespace); });
  return Object.assign(logger, { namespace }) as unknown as createDebug.Debugger;
}

/** A logger that is never enabled (see realDebug): the part of `debug`'s Debugger that flintvm uses, plus its name. */
function silent(namespace: string): createDebug.Debugger {
  const logger = (): void => undefined;
  return Object.assign(logger, { enabled: false, namespace }) as unknown as createDebug.Debugger;
}
