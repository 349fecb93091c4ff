// Worker for recorder.test.ts: appends `count` writes with values base..base+count-1 to a recorder.
import { workerData } from 'node:worker_threads';
import { createBusDevice } from '../../helpers/test-devices.js';
import type { DeviceContext } from '../../../lib/vcpu/protocol.js';

const { log, base, count, go } = workerData as { log: SharedArrayBuffer; base: number; count: number; go?: SharedArrayBuffer };
// Start together: count in, then wait for the go.
if (go) {
  const g = new Int32Array(go);
  Atomics.add(g, 1, 1);
  Atomics.notify(g, 1);
  while (Atomics.load(g, 0) === 0) Atomics.wait(g, 0, 0, 100);
}
const dev = createBusDevice({ kind: 'recorder', log, readValue: 0 }, {} as DeviceContext);
for (let i = 0; i < count; i++) dev.write(0, 4, base + i);
