/**
 * The I/O worker's setup module (lib/io/io-worker.ts loads it on the worker):
 * builds each virtio device from structured-cloneable params, puts it behind
 * its transport slot, and watches the device's control eventfd and queue
 * ioeventfds on the epoll loop. Part of the builder layer: the one place on
 * the I/O side that knows every device type.
 */
import type { EventLoop } from '../io/event-loop.js';
import { EPOLLIN, readEventfd, signalEventfd } from '../io/epoll.js';
import { attachGuestMemory } from '../memory/host-memory.js';
import type { RegionDescriptor } from '../memory/guest-memory.js';
import { VirtioMmioSlot } from '../../devices/virtio/transport/slot.js';
import type { VirtioDevice } from '../../devices/virtio/device.js';
import { BlockDevice, type BlockDeviceOptions } from '../../devices/virtio/block/device.js';
import { FileBackend } from '../../devices/virtio/backends/file.js';
import { EventfdWakeup } from '../../devices/virtio/backends/wakeup.js';
import { RngDevice } from '../../devices/virtio/rng/device.js';
import { GetrandomSource } from '../../devices/virtio/rng/backend.js';
import { createNetDevice, type NetDeviceParams } from '../../devices/virtio/net/index.js';
import { create9pDevice, type Virtio9pParams } from '../../devices/virtio/9p/index.js';
import { createFsDevice, type VirtioFsParams } from '../../devices/virtio/fs/index.js';
import { createVsockDevice, type VsockDeviceParams } from '../../devices/virtio/vsock/index.js';

export type VirtioParams =
  | { kind: 'virtio-blk'; fd: number; options: BlockDeviceOptions }
  | { kind: 'virtio-rng' }
  | ({ kind: 'virtio-net' } & NetDeviceParams)
  | { kind: 'virtio-9p'; params: Virtio9pParams }
  | { kind: 'virtio-fs'; params: VirtioFsParams }
  | { kind: 'virtio-vsock'; params: VsockDeviceParams };

/** One virtio device as the I/O worker sees it: its transport state and the fds KVM signals/listens on. */
export interface VirtioDeviceWiring {
  readonly state: SharedArrayBuffer;
  /** Written by the transport (vCPU side) on DRIVER_OK and reset. */
  readonly controlFd: number;
  /** One per queue, registered with KVM_IOEVENTFD on QueueNotify with datamatch = queue index. */
  readonly queueFds: readonly number[];
  /** Registered with KVM_IRQFD on the device's interrupt line. */
  readonly irqFd: number;
  readonly params: VirtioParams;
}

export interface IoWorkerSetup {
  readonly memory: readonly RegionDescriptor[];
  readonly devices: readonly VirtioDeviceWiring[];
}

function createDevice(p: VirtioParams): VirtioDevice {
  switch (p.kind) {
    case 'virtio-blk': return new BlockDevice(p.options, new FileBackend(p.fd), new EventfdWakeup());
    case 'virtio-rng': return new RngDevice(new GetrandomSource(), new EventfdWakeup());
    case 'virtio-net': return createNetDevice(p);
    case 'virtio-9p': return create9pDevice(p.params);
    case 'virtio-fs': return createFsDevice(p.params);
    case 'virtio-vsock': return createVsockDevice(p.params);
  }
}

/** Called on the I/O worker before its loop runs; returns the teardown run after the loop stops. */
export function setupIoWorker(data: unknown, loop: EventLoop): () => void {
  const setup = data as IoWorkerSetup;
  const memory = attachGuestMemory(setup.memory);
  const slots: VirtioMmioSlot[] = [];
  for (const d of setup.devices) {
    const slot = new VirtioMmioSlot(d.state, createDevice(d.params), memory, () => signalEventfd(d.irqFd), loop);
    slots.push(slot);
    loop.watch(d.controlFd, EPOLLIN, () => {
      readEventfd(d.controlFd);
      slot.onControl();
    });
    d.queueFds.forEach((fd, i) => loop.watch(fd, EPOLLIN, () => {
      readEventfd(fd);
      slot.onQueueNotify(i);
    }));
  }
  return () => {
    for (const s of slots) s.dispose();
  };
}
