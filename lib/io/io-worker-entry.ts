/**
 * The I/O worker's entry (spawned by io-worker.ts). Installs the kick
 * handler, imports the setup module, lets its `setupIoWorker` wire the loop,
 * reports ready, then blocks in the loop until stopped. After the loop
 * returns it runs the setup's teardown, closes the loop's fds and reports
 * 'closed', so the main thread can terminate the worker without leaking fds.
 */
import { parentPort } from 'node:worker_threads';
import * as ffi from '../kvm/ffi.js';
import { installKickHandler } from '../vcpu/kick.js';
import { nameThisThread } from '../sys.js';
import { entryData } from '../worker-data.js';
import { importWorkerModule } from '../worker-modules.js';
import { EventLoop } from './event-loop.js';
import type { IoWorkerContext, IoWorkerData, IoWorkerMessage, SetupIoWorker } from './io-worker.js';

// debug output from this thread: see lib/log.ts (written synchronously to fd 2 on workers).
import '../log.js';

const data = entryData<IoWorkerData>();
const port = parentPort!;
const post = (m: IoWorkerMessage): void => port.postMessage(m);

function describe(e: unknown): { message: string; stack?: string } {
  return e instanceof Error ? { message: e.message, ...(e.stack ? { stack: e.stack } : {}) } : { message: String(e) };
}

async function main(): Promise<void> {
  // First: a kick must never land on a thread without a handler (the default action kills the process).
  installKickHandler();
  nameThisThread('flintvm-io');
  const loop = new EventLoop({ stop: data.stop });
  let teardown: (() => void) | undefined;
  try {
    const mod = (await importWorkerModule(data.module)) as { setupIoWorker?: SetupIoWorker };
    if (typeof mod.setupIoWorker !== 'function') throw new TypeError(`${data.module} does not export a setupIoWorker function`);
    const ctx: IoWorkerContext = { post: (msg) => post({ type: 'message', data: msg }) };
    const r = await mod.setupIoWorker(data.data, loop, ctx);
    if (typeof r === 'function') teardown = r;
  } catch (e) {
    loop.close();
    post({ type: 'fatal', ...describe(e) });
    return;
  }
  // postMessage hands the message over at once: the main thread gets it while this thread blocks below.
  post({ type: 'ready', tid: ffi.gettid() });
  let failure: unknown;
  try {
    loop.run();
  } catch (e) {
    failure = e;
  }
  try {
    teardown?.();
  } catch (e) {
    failure ??= e;
  }
  loop.close();
  if (failure !== undefined) post({ type: 'fatal', ...describe(failure) });
  post({ type: 'closed' });
}

main().catch((e: unknown) => post({ type: 'fatal', ...describe(e) }));
