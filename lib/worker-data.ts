/**
 * Where a worker entry (vCPU worker, I/O worker) finds its data. A worker
 * spawned for one job has it in `workerData`; a standby worker from a
 * {@link WorkerPool} is started before the job exists, so the standby entry
 * hands the job's data over here before importing the entry. The variable is
 * per worker thread (each thread has its own module instances), not per process.
 */
import { workerData } from 'node:worker_threads';

/** The tag a standby worker's own `workerData` carries, so entries never mistake it for a job. */
export const STANDBY_TAG = 'flintvm-standby';

let assigned: unknown;

/** Called by the standby entry, once, before it imports the job's entry module. */
export function assignEntryData(data: unknown): void {
  assigned = data;
}

/** The data of the job this worker runs. */
export function entryData<T>(): T {
  if (assigned !== undefined) return assigned as T;
  const wd = workerData as { tag?: unknown } | null;
  if (wd && wd.tag === STANDBY_TAG) throw new Error('a standby worker imported a job entry before it was assigned one');
  return workerData as T;
}
