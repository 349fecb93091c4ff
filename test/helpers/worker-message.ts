/** Test helper: a worker's first message, then the worker terminated. */
import type { Worker } from 'node:worker_threads';

/** Resolves with `w`'s first message (rejects on its error, or its exit without one), and terminates it either way. */
export async function firstMessage<T>(w: Worker): Promise<T> {
  try {
    return await new Promise<T>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`worker exited ${code} without a message`)));
    });
  } finally {
    await w.terminate();
  }
}
