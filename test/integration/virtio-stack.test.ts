/**
 * The whole virtio path without KVM: this test plays the guest driver (MMIO
 * register accesses on the transport, rings in host-mapped guest memory) and
 * the real I/O worker runs the real virtio-blk device on a real image file,
 * woken through the same eventfds KVM's ioeventfd/irqfd would use.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mapGuestMemory } from '../../lib/memory/host-memory.js';
import { IoWorker } from '../../lib/io/io-worker.js';
import { closeFd, createEventfd, readEventfd, signalEventfd } from '../../lib/io/epoll.js';
import type { IoWorkerSetup } from '../../lib/vm/io-wiring.js';
import * as C from '../../devices/virtio/constants.js';
import { TransportState } from '../../devices/virtio/transport/state.js';
import { VirtioMmioTransport } from '../../devices/virtio/transport/mmio.js';
import { BlockDevice } from '../../devices/virtio/block/device.js';
import * as B from '../../devices/virtio/block/constants.js';
import { openDiskImage } from '../../devices/virtio/backends/file.js';
import { VirtqDriver } from '../helpers/virtq-driver.js';

const IO_MODULE = new URL('../../lib/vm/io-wiring.js', import.meta.url).href;
const RING = { descAddr: 0x10000, availAddr: 0x11000, usedAddr: 0x12000 };
const HDR = 0x20000;
const DATA = 0x30000;
const STATUS = 0x40000;

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

test('virtio-blk end to end through transport, I/O worker, eventfds and a real image', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-stack-'));
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(1024 * 1024));
  const img = openDiskImage(path, { readOnly: false, field: 'drives[0].path' });
  const host = mapGuestMemory([{ gpa: 0, size: 1024 * 1024 }]);
  const mem = host.memory;
  const options = { sizeBytes: img.sizeBytes, readOnly: false, serial: 'stack' };
  const state = TransportState.create(BlockDevice.info(options));
  const controlFd = createEventfd();
  const queueFd = createEventfd();
  const irqFd = createEventfd();
  const data: IoWorkerSetup = { memory: mem.describe(), devices: [{ state, controlFd, queueFds: [queueFd], irqFd, kind: 'virtio-blk', params: { fd: img.fd, ...options } }] };
  const io = await IoWorker.start({ module: IO_MODULE, data });
  const tr = new VirtioMmioTransport(state, { kickControl: () => signalEventfd(controlFd), notifyQueue: () => signalEventfd(queueFd) });
  const w = (off: number, v: number) => tr.write(off, 4, v);
  const r = (off: number) => tr.read(off, 4) >>> 0;
  let interrupts = 0n;
  const takeIrq = () => { interrupts += readEventfd(irqFd); return interrupts; };
  try {
    // §3.1.1 driver initialization, as Linux's virtio_mmio does it.
    w(C.VIRTIO_MMIO_STATUS, C.VIRTIO_STATUS_ACKNOWLEDGE);
    w(C.VIRTIO_MMIO_STATUS, C.VIRTIO_STATUS_ACKNOWLEDGE | C.VIRTIO_STATUS_DRIVER);
    t.is(r(C.VIRTIO_MMIO_DEVICE_ID), C.VIRTIO_ID_BLOCK);
    w(C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    w(C.VIRTIO_MMIO_DRIVER_FEATURES, 1); // VERSION_1
    const ok = C.VIRTIO_STATUS_ACKNOWLEDGE | C.VIRTIO_STATUS_DRIVER | C.VIRTIO_STATUS_FEATURES_OK;
    w(C.VIRTIO_MMIO_STATUS, ok);
    t.is(r(C.VIRTIO_MMIO_STATUS), ok);
    t.is(tr.read(C.VIRTIO_MMIO_CONFIG, 4), 2048, 'capacity in sectors');
    w(C.VIRTIO_MMIO_QUEUE_SEL, 0);
    w(C.VIRTIO_MMIO_QUEUE_NUM, 16);
    w(C.VIRTIO_MMIO_QUEUE_DESC_LOW, RING.descAddr);
    w(C.VIRTIO_MMIO_QUEUE_DRIVER_LOW, RING.availAddr);
    w(C.VIRTIO_MMIO_QUEUE_DEVICE_LOW, RING.usedAddr);
    w(C.VIRTIO_MMIO_QUEUE_READY, 1);
    const drv = new VirtqDriver(mem, { size: 16, ...RING });
    w(C.VIRTIO_MMIO_STATUS, ok | C.VIRTIO_STATUS_DRIVER_OK);

    // A write of one 4 KiB block at sector 8.
    const hdr = new DataView(new ArrayBuffer(16));
    hdr.setUint32(0, B.VIRTIO_BLK_T_OUT, true);
    hdr.setBigUint64(8, 8n, true);
    mem.write(HDR, new Uint8Array(hdr.buffer));
    mem.fill(DATA, 4096, 0x5a);
    mem.writeU8(STATUS, 0xff);
    drv.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 4096 }, { addr: STATUS, len: 1, write: true }]);
    drv.kick();
    w(C.VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    let used = drv.used();
    await waitFor(() => (used = used.length ? used : drv.used()).length > 0, 'the write to complete');
    t.is(mem.readU8(STATUS), B.VIRTIO_BLK_S_OK);
    await waitFor(() => takeIrq() > 0n, 'the interrupt');
    t.true((r(C.VIRTIO_MMIO_INTERRUPT_STATUS) & C.VIRTIO_MMIO_INT_VRING) !== 0);
    w(C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_INT_VRING);
    const file = readFileSync(path);
    t.is(file[8 * 512], 0x5a);
    t.is(file[8 * 512 + 4095], 0x5a);
    t.is(file[8 * 512 + 4096], 0);

    // Read it back into a cleared buffer.
    hdr.setUint32(0, B.VIRTIO_BLK_T_IN, true);
    mem.write(HDR, new Uint8Array(hdr.buffer));
    const readBack = async (what: string) => {
      mem.fill(DATA, 4096, 0);
      drv.addChain([{ addr: HDR, len: 16 }, { addr: DATA, len: 4096, write: true }, { addr: STATUS, len: 1, write: true }]);
      drv.kick();
      w(C.VIRTIO_MMIO_QUEUE_NOTIFY, 0);
      used = [];
      await waitFor(() => (used = drv.used()).length > 0, what);
      t.is(used[0]!.len, 4097);
      t.is(mem.readU8(DATA + 100), 0x5a);
      t.is(mem.readU8(DATA + 4095), 0x5a);
    };
    await readBack('the read to complete');

    // The queue's eventfd is watched edge-triggered and never read: both kicks are still counted there.
    t.is(readEventfd(queueFd), 2n, 'the I/O worker left the kicks in the queue eventfd');
    // Emptied by someone else meanwhile, it still wakes the worker for the next kick.
    await readBack('a third request to complete');

    // Reset: returns only once the I/O worker has stopped the device.
    w(C.VIRTIO_MMIO_STATUS, 0);
    t.is(r(C.VIRTIO_MMIO_STATUS), 0);
    t.is(r(C.VIRTIO_MMIO_QUEUE_READY), 0);
  } finally {
    await io.stop();
    host.unmap();
    img.close();
    for (const fd of [controlFd, queueFd, irqFd]) closeFd(fd);
  }
});
