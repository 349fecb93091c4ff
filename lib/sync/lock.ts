/**
 * A mutex in one Int32 slot of shared memory, for device state that several
 * threads (vCPU workers, the I/O worker, the main thread) touch.
 * Uncontended acquire is one compareExchange. Contended waiters sleep with
 * Atomics.wait, except on the main thread, where Atomics.wait is not allowed
 * and we spin (critical sections are a few register updates, so this is short).
 */
const UNLOCKED = 0;
const LOCKED = 1;
const CONTENDED = 2;

const canWait = (() => {
  try {
    // Atomics.wait throws on the main thread of Node when not permitted.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
})();

export class SharedLock {
  constructor(private readonly word: Int32Array, private readonly index: number) {}

  acquire(): void {
    const w = this.word;
    const i = this.index;
    let c = Atomics.compareExchange(w, i, UNLOCKED, LOCKED);
    if (c === UNLOCKED) return;
    // Classic three-state futex mutex (Drepper, "Futexes are tricky").
    if (c !== CONTENDED) c = Atomics.exchange(w, i, CONTENDED);
    while (c !== UNLOCKED) {
      if (canWait) Atomics.wait(w, i, CONTENDED, 10);
      c = Atomics.exchange(w, i, CONTENDED);
    }
  }

  release(): void {
    if (Atomics.exchange(this.word, this.index, UNLOCKED) === CONTENDED) Atomics.notify(this.word, this.index, 1);
  }

  /** Runs `fn` with the lock held. */
  with<T>(fn: () => T): T {
    this.acquire();
    try {
      return fn();
    } finally {
      this.release();
    }
  }
}
