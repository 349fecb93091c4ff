/**
 * The I/O worker's setup module (lib/io/io-worker.ts loads it on the worker):
 * builds each virtio device from structured-cloneable params, puts it behind
 * its transport slot, and watches the device's control eventfd and queue
 * ioeventfds on the epoll loop. Part of the builder layer: the one place on
 * the I/O side that knows every device type.
 */
import type { EventLoop } from '../io/event-loop.js';
import type { IoWorkerContext } from '../io/io-worker.js';
import type { QueuePosition } from '../../devices/virtio/queue/types.js';
import { EPOLLET, EPOLLIN, readEventfd, signalEventfd } from '../io/epoll.js';
import { attachGuestMemory } from '../memory/host-memory.js';
import type { RegionDescriptor } from '../memory/guest-memory.js';
import { VirtioMmioSlot } from '../../devices/virtio/transport/slot.js';
import type { VirtioDevice } from '../../devices/virtio/device.js';
import { loadVirtioKinds, virtioKind } from './registry.js';
import { registerPageView } from './register-pages.js';

/** One virtio device as the I/O worker sees it: its transport state and the fds KVM signals/listens on. */
export interface VirtioDeviceWiring {
  readonly state: SharedArrayBuffer;
  /** Host address of the transport's register page (lib/vm/register-pages.ts), when it has one. */
  readonly registers?: bigint;
  /** Registered with KVM_IOEVENTFD on InterruptAck with datamatch VRING (1): the driver's acks of that bit alone. */
  readonly ackFd?: number;
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
  /** For a VM restored from a snapshot: what the device saved (its transport registers are already in `state`). */
  readonly restore?: SavedVirtioDevice;
}

/** One virtio device's I/O-side state in a snapshot: its queue positions (null: not active) and its kind's own state. */
export interface SavedVirtioDevice {
  readonly queues: readonly (QueuePosition | null)[] | null;
  readonly device: unknown;
}

export interface IoWorkerSetup {
  readonly memory: readonly RegionDescriptor[];
  readonly devices: readonly VirtioDeviceWiring[];
  /** Written by the main thread to ask for every device's state (a snapshot); the answer is a {@link DeviceStateMessage}. */
  readonly saveFd?: number;
  /**
   * With saveFd: an Int32Array's buffer whose word 0 the main thread sets to 1 before asking. After
   * answering, the worker waits (its loop stopped: no device touches guest memory or raises an
   * interrupt) until the main thread has saved the rest of the VM and sets it back to 0, or for at most
   * {@link SAVE_HOLD_MAX_MS}.
   */
  readonly saveHold?: SharedArrayBuffer;
}

/** The longest the I/O worker stays held for a snapshot (the main thread writes guest RAM meanwhile). */
export const SAVE_HOLD_MAX_MS = 120_000;

/** The I/O worker's answer to a save request (posted through the IoWorker's 'message'). */
export type DeviceStateMessage =
  | { readonly type: 'device-state'; readonly devices: readonly SavedVirtioDevice[] }
  | { readonly type: 'device-state-error'; readonly message: string };

/** The device model of one wiring, built by its kind. */
function createDevice(d: VirtioDeviceWiring): VirtioDevice {
  const kind = virtioKind(d.kind);
  if (!kind) throw new Error(`unknown virtio device kind '${d.kind}' (not in lib/vm/registry.ts)`);
  return kind.create(d.params);
}

/** Called on the I/O worker before its loop runs; returns the teardown run after the loop stops. */
export async function setupIoWorker(data: unknown, loop: EventLoop, ctx: IoWorkerContext): Promise<() => void> {
  const setup = data as IoWorkerSetup;
  // This thread loads the device code of its VM's kinds only.
  await loadVirtioKinds(setup.devices.map((d) => d.kind));
  const memory = attachGuestMemory(setup.memory);
  const slots: VirtioMmioSlot[] = [];
  try {
    for (const [i, d] of setup.devices.entries()) {
      const registers = d.registers === undefined ? null : registerPageView(d.registers);
      const ackFd = d.ackFd;
      const takeVringAcks = ackFd === undefined ? null : () => readEventfd(ackFd) !== 0n;
      const slot = new VirtioMmioSlot(d.state, createDevice(d), memory, () => signalEventfd(d.irqFd), loop, registers, takeVringAcks);
      slots.push(slot);
      if (d.restore) restoreDevice(slot, d, i);
    }
  } catch (e) {
    // A device that cannot be built or restored: release the ones built so far (the worker then reports the error).
    for (const s of slots) s.dispose();
    throw e;
  }
  for (const [i, d] of setup.devices.entries()) {
    const slot = slots[i]!;
    loop.watch(d.controlFd, EPOLLIN, () => {
      readEventfd(d.controlFd);
      slot.onControl();
    });
    // Edge-triggered and never read: every kick (KVM's ioeventfd write, or the vCPU worker's own) wakes the
    // loop once, and the device serves its whole ring each time, so the count itself says nothing the ring
    // does not. That saves a read(2) per kick. The count saturates in the kernel rather than blocking KVM's
    // write (eventfd_signal), and no one else reads these fds.
    d.queueFds.forEach((fd, i) => loop.watch(fd, EPOLLIN | EPOLLET, () => slot.onQueueNotify(i)));
  }
  const saveFd = setup.saveFd;
  if (saveFd !== undefined) loop.watch(saveFd, EPOLLIN, () => {
    readEventfd(saveFd);
    let answer: DeviceStateMessage;
    try {
      answer = { type: 'device-state', devices: setup.devices.map((d, i) => saveDevice(slots[i]!, d)) };
    } catch (e) {
      answer = { type: 'device-state-error', message: (e as Error).message };
    }
    ctx.post(answer);
    // Stay quiet until the snapshot is complete: a packet or a host socket's data served now would change guest
    // RAM and the rings after their positions were saved.
    if (setup.saveHold && answer.type === 'device-state') {
      const hold = new Int32Array(setup.saveHold);
      const end = Date.now() + SAVE_HOLD_MAX_MS;
      while (Atomics.load(hold, 0) === 1 && Date.now() < end) Atomics.wait(hold, 0, 1, 1000);
    }
  });
  return () => {
    for (const s of slots) s.dispose();
  };
}

/** A snapshot of one device: runs between two loop turns, with the vCPUs paused. */
function saveDevice(slot: VirtioMmioSlot, d: VirtioDeviceWiring): SavedVirtioDevice {
  const kind = virtioKind(d.kind)!;
  if (!kind.saveState) throw new Error(`${d.kind} cannot be snapshotted`);
  const queues = slot.saveQueues();
  return { queues, device: kind.saveState(slot.device) ?? null };
}

/** Puts a restored device back where it was: active with its queues at their positions, then its own state. */
function restoreDevice(slot: VirtioMmioSlot, d: VirtioDeviceWiring, index: number): void {
  const kind = virtioKind(d.kind)!;
  const saved = d.restore!;
  try {
    if (!kind.restoreState) throw new Error(`${d.kind} cannot be restored`);
    const restore = kind.restoreState;
    slot.restore(saved.queues, (active) => restore(slot.device, saved.device, { active }));
  } catch (e) {
    throw new Error(`devices[${index}] (${d.kind}): ${(e as Error).message}`);
  }
}
