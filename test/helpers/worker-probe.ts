/** A worker entry for test/unit/lib/worker-modules.test.ts: reports how it was started. */
import { parentPort, workerData } from 'node:worker_threads';

parentPort!.postMessage({ argv: process.argv, data: workerData as unknown });
