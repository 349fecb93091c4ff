/** A worker entry for test/unit/lib/worker-modules.test.ts: reports how it was started. */
import { parentPort, workerData } from 'node:worker_threads';

// codeCacheUse: how the worker loader ran the bundle (lib/code-cache.ts).
parentPort!.postMessage({ argv: process.argv, data: workerData as unknown, codeCacheUse: (globalThis as Record<symbol, unknown>)[Symbol.for('flintvm.codeCacheUse')] });
