/**
 * Entry of a standby worker (see worker-pool.ts). It installs the kick
 * handler, imports the modules every job needs (koffi, the KVM bindings, the
 * bus and device wiring, the event loop), says it is ready, and waits for one
 * assignment: `{ entry, data }`. It then hands `data` to worker-data.ts and
 * imports `entry`, which runs the job exactly as a freshly spawned worker
 * would. A standby worker runs at most one job; it is never reused.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { installKickHandler } from './vcpu/kick.js';
import { assignEntryData } from './worker-data.js';
import { importWorkerModule } from './worker-modules.js';
import type { StandbyData } from './worker-spawn.js';
import './log.js';

export type { StandbyData } from './worker-spawn.js';

/** Main thread -> standby worker: the one job. */
export interface StandbyAssignment {
  readonly type: 'flintvm-assign';
  readonly entry: string;
  readonly data: unknown;
}

/** Standby worker -> main thread, before any job. */
export type StandbyMessage = { readonly type: 'flintvm-standby-ready' } | { readonly type: 'flintvm-standby-failed'; readonly message: string };

const port = parentPort!;
const wd = workerData as StandbyData;

// A kick (pause/stop of a vCPU, stop of an I/O loop) must never land on a thread without a handler.
installKickHandler();

port.once('message', (m: StandbyAssignment) => {
  if (m?.type !== 'flintvm-assign') return;
  assignEntryData(m.data);
  // The entry reports its own failures to the main thread; a failed import is an
  // unhandled rejection, which ends the worker with an 'error' event, as it would for a fresh worker.
  void importWorkerModule(m.entry);
});

Promise.all(wd.preload.map((u) => importWorkerModule(u))).then(
  () => port.postMessage({ type: 'flintvm-standby-ready' } satisfies StandbyMessage),
  (e: unknown) => port.postMessage({ type: 'flintvm-standby-failed', message: e instanceof Error ? e.message : String(e) } satisfies StandbyMessage),
);
