/**
 * A device module for integration tests: devices that record what the guest
 * does into shared memory so the test (main thread) can assert on it.
 */
import type { BusDevice } from '../../lib/bus/device.js';
import type { DeviceContext } from '../../lib/vcpu/protocol.js';

export type TestDeviceParams =
  | { kind: 'recorder'; log: SharedArrayBuffer; readValue: number }
  | { kind: 'exit-on-write'; reason: 'guest-exit' }
  | { kind: 'counter'; log: SharedArrayBuffer }
  | { kind: 'stuck'; log: SharedArrayBuffer };

/**
 * recorder: each write appends [offset, size, value] to `log` (Int32 slot 0 is
 * the entry count, read it with {@link recordedCount}); reads return
 * `readValue` and count in slot 1. Several vCPU threads may write at once: a
 * writer holds RECORDER_LOCK in slot 0 while it appends, so no entry is lost
 * when one thread is preempted between reading the count and storing it.
 * exit-on-write: a write ends the VM with a guest-exit carrying the value.
 * stuck: a write sets slot 0 to 1, then spins in JavaScript forever: the vCPU
 * worker never returns to KVM_RUN nor sees a kick (a worker that hangs).
 */
export function createBusDevice(params: unknown, ctx: DeviceContext): BusDevice {
  const p = params as TestDeviceParams;
  if (p.kind === 'recorder') {
    const log = new Int32Array(p.log);
    return {
      read: () => { Atomics.add(log, 1, 1); return p.readValue; },
      write: (offset, size, value) => {
        let n: number;
        // Take the lock: set its bit on an unlocked count. A holder preempted mid-append makes us wait, not lose it.
        for (;;) {
          n = Atomics.load(log, 0);
          if ((n & RECORDER_LOCK) === 0 && Atomics.compareExchange(log, 0, n, n | RECORDER_LOCK) === n) break;
          Atomics.wait(log, 0, Atomics.load(log, 0), 1);
        }
        if (2 + (n + 1) * 3 <= log.length) {
          log[2 + n * 3] = offset; log[3 + n * 3] = size; log[4 + n * 3] = value;
          n++;
        }
        Atomics.store(log, 0, n); // publishes the entry and releases the lock
        Atomics.notify(log, 0);
      },
    };
  }
  if (p.kind === 'counter') {
    // Counts writes in slot 0 (one worker writes, so a plain increment is enough).
    const c = new Int32Array(p.log);
    return { read: () => 0, write: () => { c[0]!++; } };
  }
  if (p.kind === 'stuck') {
    const flag = new Int32Array(p.log);
    return {
      read: () => 0,
      write: () => {
        Atomics.store(flag, 0, 1);
        for (;;) { /* hang on purpose */ }
      },
    };
  }
  return { read: () => 0, write: (_o, _s, value) => ctx.requestExit(p.reason, { status: value }) };
}

/** Bit of a recorder's slot 0 held by a writer while it appends (the rest is the count). */
const RECORDER_LOCK = 0x4000_0000;

/** Entries a recorder has logged so far (live, from any thread). */
export function recordedCount(log: SharedArrayBuffer): number {
  return Atomics.load(new Int32Array(log), 0) & ~RECORDER_LOCK;
}

/** Reads the entries a recorder logged. */
export function recorded(log: SharedArrayBuffer): { offset: number; size: number; value: number }[] {
  const a = new Int32Array(log);
  const n = recordedCount(log);
  return Array.from({ length: n }, (_, i) => ({ offset: a[2 + i * 3]!, size: a[3 + i * 3]!, value: a[4 + i * 3]! >>> 0 }));
}
