/**
 * Worker for byte-ring.test.ts: attaches to the ring in workerData.sab,
 * waits `delayMs` (so the main thread is already parked in waitReadable),
 * then writes `bytes` and/or closes the ring.
 */
import { workerData } from 'node:worker_threads';
import { ByteRing } from '../../../../lib/io/byte-ring.js';

const { sab, bytes, delayMs, close } = workerData as { sab: SharedArrayBuffer; bytes: number[]; delayMs: number; close: boolean };
const ring = new ByteRing(sab);
// Sleep without an event loop turn: Atomics.wait is allowed on a worker.
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, delayMs);
if (bytes.length) ring.write(Uint8Array.from(bytes));
if (close) ring.close();
