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
 * the entry count); reads return `readValue` and count in slot 1.
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
        const n = Atomics.load(log, 0);
        if (2 + (n + 1) * 3 <= log.length) {
          log[2 + n * 3] = offset; log[3 + n * 3] = size; log[4 + n * 3] = value;
          Atomics.store(log, 0, n + 1);
        }
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

/** Reads the entries a recorder logged. */
export function recorded(log: SharedArrayBuffer): { offset: number; size: number; value: number }[] {
  const a = new Int32Array(log);
  const n = Atomics.load(a, 0);
  return Array.from({ length: n }, (_, i) => ({ offset: a[2 + i * 3]!, size: a[3 + i * 3]!, value: a[4 + i * 3]! >>> 0 }));
}
