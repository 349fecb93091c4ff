/**
 * docs/bounds.md, virtqueue rows: the chains a device holds, and what one
 * request may make the host do. A hostile driver publishes more than a
 * queue's worth, re-publishes buffers the device already holds, or asks
 * virtio-rng for a huge buffer.
 */
import test from 'ava';
import * as C from '../../../devices/virtio/constants.js';
import type { ActivationContext } from '../../../devices/virtio/device.js';
import * as B from '../../../devices/virtio/block/constants.js';
import * as N from '../../../devices/virtio/net/constants.js';
import { GetrandomSource } from '../../../devices/virtio/rng/backend.js';
import { RNG_MAX_BYTES_PER_REQUEST, RngDevice } from '../../../devices/virtio/rng/device.js';
import { SplitQueue } from '../../../devices/virtio/queue/split-queue.js';
import { mapGuestMemory } from '../../../lib/memory/host-memory.js';
import { VirtqDriver } from '../../helpers/virtq-driver.js';
import { BlkHarness, header } from '../devices/virtio/block/blk-harness.js';
import { frame, NetHarness, packet } from '../devices/virtio/net/net-harness.js';
import { sendPacket } from '../devices/virtio/net/net-sockets.js';

const MiB = 1024 * 1024;

test('queue backlog (blk as the example of the synchronous devices): every chain popped goes back before the notification returns; avail.idx more than a queue ahead -> DEVICE_NEEDS_RESET, nothing popped', (t) => {
  const h = new BlkHarness({ queueSize: 256 });
  try {
    const n = 80; // 3 descriptors each: 240 of 256
    for (let i = 0; i < n; i++) h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_IN, i) }, { len: 512, write: true }, { len: 1, write: true }]));
    h.driver.kick();
    h.device.queueNotify(0);
    t.is(h.driver.used().length, n, 'all answered in the same notification');
    t.is(h.driver.usedIdx, h.driver.availIdx, 'the device holds no chain');
    // A driver that claims 257 more chains than the device has seen: the ring is broken, not a backlog.
    const before = h.driver.usedIdx;
    h.driver.setAvailIdx(h.driver.availIdx + h.driver.size + 1);
    h.device.queueNotify(0);
    t.is(h.resets, 1, 'DEVICE_NEEDS_RESET');
    t.is(h.driver.usedIdx, before, 'nothing was popped');
    h.device.queueNotify(0);
    t.is(h.resets, 1, 'and nothing more is served until reset');
  } finally {
    h.close();
  }
});

test('queue backlog (net RX, the one device that holds chains): at most queue size chains, even when the driver re-publishes the ones held', (t) => {
  const size = 16;
  const h = new NetHarness({ queueSize: size }); // Linux features: mergeable buffers, so the device gathers many chains
  try {
    // The smallest legal receive buffers: 16 x 12 bytes is far less than a packet, so the device holds them all.
    h.addRxBuffers(size, N.VIRTIO_NET_HDR_SIZE);
    t.is(h.device.saveState().rx!.held.length, size);
    // The driver publishes the same heads again (a hostile driver; a real one has no free descriptors left).
    const d = h.rxDriver;
    for (let i = 0; i < size; i++) d.setAvailEntry(d.availIdx + i, i);
    d.setAvailIdx(d.availIdx + size);
    h.device.queueNotify(N.NET_RX_QUEUE);
    t.is(h.device.saveState().rx!.held.length, size, 'no more than the ring holds');
    t.is(h.resets, 0);
    // A packet larger than 192 bytes is dropped (the buffers stay held); the chains never exceed the ring.
    sendPacket(h.peer, packet(frame(1000, 1)));
    h.pump();
    t.is(h.device.stats!.rx.dropped, 1);
    t.true(h.device.saveState().rx!.held.length <= size);
  } finally {
    h.close();
  }
});

test('virtio-rng: no host buffer; one chain gets at most RNG_MAX_BYTES_PER_REQUEST (64 KiB) of getrandom, written straight into guest memory', (t) => {
  const { memory, unmap } = mapGuestMemory([{ gpa: 0, size: 2 * MiB }]);
  const driver = new VirtqDriver(memory, { size: 16, descAddr: 0, availAddr: 0x1000, usedAddr: 0x2000 });
  const device = new RngDevice(new GetrandomSource());
  let resets = 0;
  const ctx: ActivationContext = {
    memory, queues: [new SplitQueue(memory, driver.config)], features: C.feature(C.VIRTIO_F_VERSION_1),
    signalUsed: () => {}, updateConfig: () => {}, fds: { watch() {}, unwatch() {} }, needsReset: () => void resets++,
  };
  try {
    device.activate(ctx);
    driver.addChain([{ addr: 0x10_0000, len: MiB, write: true }]);
    driver.kick();
    device.queueNotify(0);
    const used = driver.used();
    t.is(used.length, 1);
    t.is(used[0]!.len, RNG_MAX_BYTES_PER_REQUEST);
    t.is(RNG_MAX_BYTES_PER_REQUEST, 64 * 1024);
    t.is(resets, 0);
  } finally {
    device.dispose();
    unmap();
  }
});
