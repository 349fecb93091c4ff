/**
 * virtio-rng without KVM: a VirtqDriver plays the guest, guest memory is a
 * real host mapping, and the bytes come from the host's getrandom.
 */
import test from 'ava';
import * as C from '../../../../../devices/virtio/constants.js';
import type { ActivationContext } from '../../../../../devices/virtio/device.js';
import { DeviceNeedsReset } from '../../../../../devices/virtio/device.js';
import { getrandom } from '../../../../../devices/virtio/backends/libc.js';
import { GetrandomSource, type GetrandomCall } from '../../../../../devices/virtio/rng/backend.js';
import { RNG_MAX_BYTES_PER_REQUEST, RngDevice } from '../../../../../devices/virtio/rng/device.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { mapGuestMemory } from '../../../../../lib/memory/host-memory.js';
import { VirtqDriver, type DriverBuffer } from '../../../../helpers/virtq-driver.js';

const KiB = 1024;

function setup(call: GetrandomCall = getrandom, errno?: () => number) {
  const { memory, unmap } = mapGuestMemory([{ gpa: 0, size: 1024 * KiB }]);
  const driver = new VirtqDriver(memory, { size: 16, descAddr: 0, availAddr: 0x1000, usedAddr: 0x2000, eventIdx: true });
  const queue = new SplitQueue(memory, driver.config);
  const device = new RngDevice(new GetrandomSource(call, errno));
  let signals = 0;
  let resets = 0;
  const ctx: ActivationContext = {
    memory, queues: [queue], features: C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_VERSION_1),
    signalUsed: () => void signals++,
    updateConfig: () => { throw new Error('no config'); },
    fds: { watch() {}, unwatch() {} },
    needsReset: () => void resets++,
  };
  device.activate(ctx);
  const submit = (bufs: DriverBuffer[]) => {
    driver.addChain(bufs);
    driver.kick();
    device.queueNotify(0);
    return driver.used();
  };
  return { memory, driver, device, submit, ctx, counts: () => ({ signals, resets }), close: () => { device.dispose(); unmap(); } };
}

test('info: device 4, one queue, only EVENT_IDX and INDIRECT, no config', (t) => {
  const info = RngDevice.info();
  t.is(info.deviceType, C.VIRTIO_ID_RNG);
  t.deepEqual(info.queueMaxSizes, [256]);
  t.is(info.features, C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC));
  t.is(info.config.length, 0);
});

test('random bytes arrive; two requests differ; used length is the bytes written', (t) => {
  const x = setup();
  try {
    x.memory.fill(0x10000, 64, 0);
    x.memory.fill(0x20000, 64, 0);
    const [a] = x.submit([{ addr: 0x10000, len: 64, write: true }]);
    x.driver.setUsedEvent(1); // EVENT_IDX: interrupt me again after the next one
    const [b] = x.submit([{ addr: 0x20000, len: 64, write: true }]);
    t.is(a!.len, 64);
    t.is(b!.len, 64);
    const ra = x.memory.read(0x10000, 64);
    const rb = x.memory.read(0x20000, 64);
    t.false(ra.every((v) => v === 0), 'not all zero');
    t.notDeepEqual(ra, rb);
    t.is(x.counts().signals, 2);
    t.is(x.device.bytesServed, 128);
  } finally {
    x.close();
  }
});

test('several writable segments are filled in order; readable ones are ignored', (t) => {
  const x = setup();
  try {
    x.memory.fill(0x10000, 4096, 0);
    x.memory.fill(0x30000, 4096, 0xcc);
    const [u] = x.submit([{ addr: 0x30000, len: 32 }, { addr: 0x10000, len: 100, write: true }, { addr: 0x11000, len: 300, write: true }]);
    t.is(u!.len, 400);
    t.true(x.memory.read(0x30000, 32).every((v) => v === 0xcc), 'readable buffer untouched');
    t.false(x.memory.read(0x11000, 300).every((v) => v === 0));
    const [none] = x.submit([{ addr: 0x30000, len: 32 }]);
    t.is(none!.len, 0, 'no writable buffer: nothing written');
  } finally {
    x.close();
  }
});

test('a request gets at most 64 KiB', (t) => {
  const x = setup();
  try {
    x.memory.fill(0x10000, 160 * KiB, 0);
    const [u] = x.submit([{ addr: 0x10000, len: 40 * KiB, write: true }, { addr: 0x10000 + 40 * KiB, len: 88 * KiB, write: true }]);
    t.is(u!.len, RNG_MAX_BYTES_PER_REQUEST);
    t.false(x.memory.read(0x10000 + 60 * KiB, 4 * KiB).every((v) => v === 0), 'the last bytes below the cap are random');
    t.true(x.memory.read(0x10000 + 64 * KiB, 64 * KiB).every((v) => v === 0), 'nothing past the cap');
  } finally {
    x.close();
  }
});

test('zero copy: getrandom writes at the host address of each segment, flags 0', (t) => {
  const calls: { addr: bigint; len: number; flags: number }[] = [];
  const x = setup((addr, len, flags) => (calls.push({ addr, len, flags }), getrandom(addr, len, flags)));
  try {
    x.submit([{ addr: 0x10000, len: 100, write: true }, { addr: 0x18000, len: 200, write: true }]);
    t.deepEqual(calls, [
      { addr: x.memory.hostAddress(0x10000, 100), len: 100, flags: 0 },
      { addr: x.memory.hostAddress(0x18000, 200), len: 200, flags: 0 },
    ]);
  } finally {
    x.close();
  }
});

test('short getrandom results are continued; a failure gives 0 bytes, not an exception', (t) => {
  let mode: 'short' | 'fail' = 'short';
  const x = setup((addr, len, flags) => (mode === 'short' ? getrandom(addr, Math.min(len, 7), flags) : -1), () => 5 /* EIO */);
  try {
    const [a] = x.submit([{ addr: 0x10000, len: 50, write: true }]);
    t.is(a!.len, 50);
    mode = 'fail';
    const [b] = x.submit([{ addr: 0x10000, len: 50, write: true }]);
    t.is(b!.len, 0);
    t.is(x.counts().resets, 0);
  } finally {
    x.close();
  }
});

test('a broken queue asks for reset once; activation without a queue throws DeviceNeedsReset', (t) => {
  const x = setup();
  try {
    x.driver.setAvailIdx(40);
    t.notThrows(() => {
      x.device.queueNotify(0);
      x.device.queueNotify(0);
    });
    t.is(x.counts().resets, 1);
    const dev = new RngDevice(new GetrandomSource());
    t.throws(() => dev.activate({ ...x.ctx, queues: [null] }), { instanceOf: DeviceNeedsReset });
  } finally {
    x.close();
  }
});
