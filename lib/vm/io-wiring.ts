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
import { virtioKind } from './registry.js';

/** One virtio device as the I/O worker sees it: its transport state and the fds KVM signals/listens on. */
export interface VirtioDeviceWiring {
  readonly state: SharedArrayBuffer;
  /** Written by the transport (vCPU side) on DRIVER_OK and reset. */
  readonly controlFd: number;
  /** One per queue, registered with KVM_IOEVENTFD on QueueNotify with datamatch = queue index. */
  readonly queueFds: readonly number[];
  /** Registered with KVM_IRQFD on the device's interrupt line. */
  readonly irqFd: number;
  /** The device's kind in the registry (lib/vm/registry.ts), e.g. 'virtio-blk'. */
  readonly kind: string;
  /** The kind's params from its `open` on the main thread. */
  readonly params: unknown;
}

export interface IoWorkerSetup {
  readonly memory: readonly RegionDescriptor[];
  readonly devices: readonly VirtioDeviceWiring[];
}

/** The device model of one wiring, built by its kind. */
function createDevice(d: VirtioDeviceWiring): VirtioDevice {
  const kind = virtioKind(d.kind);
  if (!kind) throw new Error(`unknown virtio device kind '${d.kind}' (not in lib/vm/registry.ts)`);
  return kind.create(d.params);
}

/** Called on the I/O worker before its loop runs; returns the teardown run after the loop stops. */
export function setupIoWorker(data: unknown, loop: EventLoop): () => void {
  const setup = data as IoWorkerSetup;
  const memory = attachGuestMemory(setup.memory);
  const slots: VirtioMmioSlot[] = [];
  for (const d of setup.devices) {
    const slot = new VirtioMmioSlot(d.state, createDevice(d), memory, () => signalEventfd(d.irqFd), loop);
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
