/**
 * The I/O-worker side of one virtio-mmio transport: turns the driver's
 * DRIVER_OK into `device.activate()` with validated queues, a reset into
 * `device.reset()`, ioeventfd kicks into `device.queueNotify()`, and the
 * device's interrupts into InterruptStatus bits plus an irqfd signal.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { log } from '../../../lib/log.js';
import * as C from '../constants.js';
import type { ActivationContext, FdWatcher, VirtioDevice } from '../device.js';
import { SplitQueue } from '../queue/split-queue.js';
import type { QueuePosition } from '../queue/types.js';
import {
  Q_DESC_LO, Q_DEVICE_LO, Q_DRIVER_LO, Q_NUM, Q_READY, REQ_ACTIVATE, REQ_RESET, S_ACTIVE, S_CONFIG_GENERATION, S_CONFIG_LENGTH,
  S_CONTROL_REQUEST, S_RESET_DONE, S_STATUS, TransportState,
} from './state.js';

const debug = log('virtio:slot');

export class VirtioMmioSlot {
  private readonly st: TransportState;
  private active = false;
  /** A VRING interrupt was raised since the ack eventfd was last drained (see applyVringAcks). */
  private vringRaisedSinceDrain = false;

  /**
   * @param interrupt signals the device's irqfd (edge); called on the I/O worker.
   * @param registers the transport's register page, when it has one (see TransportState).
   * @param takeVringAcks where KVM takes the driver's InterruptAck writes of the VRING bit alone without
   * an exit (an ioeventfd with datamatch 1): drains that eventfd and says whether it had any. The bit
   * then stays set after such an ack until this slot next raises a config interrupt or saves its state,
   * which first clear it when no VRING interrupt came between the ack and the drain. A driver may see VRING
   * set with no new used buffer, which it already handles (it looks at its rings), but never misses one,
   * since a drained ack clears the bit only when no raise of it came after the previous drain.
   */
  constructor(
    state: SharedArrayBuffer,
    readonly device: VirtioDevice,
    private readonly memory: GuestMemory,
    private readonly interrupt: () => void,
    private readonly fds: FdWatcher,
    registers: Int32Array | null = null,
    private readonly takeVringAcks: (() => boolean) | null = null,
  ) {
    this.st = new TransportState(state, registers);
  }

  /** The control eventfd fired: act on pending activate/reset requests, in that order. */
  onControl(): void {
    const req = Atomics.exchange(this.st.s, S_CONTROL_REQUEST, 0);
    if (req & REQ_ACTIVATE) this.activate();
    if (req & REQ_RESET) this.reset();
  }

  /** Queue `index`'s ioeventfd fired. Kicks before activation are dropped: activation polls every queue anyway. */
  onQueueNotify(index: number): void {
    if (!this.active) return;
    this.device.queueNotify(index);
  }

  /** Whether the device is activated (DRIVER_OK seen, not reset since). */
  get isActive(): boolean {
    return this.active;
  }

  /**
   * For a snapshot (vCPUs paused, between two loop turns): acts on any
   * activate/reset request the driver made that this worker has not seen yet,
   * then returns each queue's position (null for a queue not in use), or
   * null when the device is not active.
   */
  saveQueues(): (QueuePosition | null)[] | null {
    this.onControl();
    this.applyVringAcks();
    return this.active ? this.queues.map((q) => q?.saveState() ?? null) : null;
  }

  /**
   * A restored VM: the transport registers are already in place. If the
   * device was active, activates it with its queues at the saved positions
   * (validated against the rings in guest memory); then `restoreDevice(active)`
   * restores the device's own state; then every queue is polled once (the
   * driver may have published buffers after the snapshot's last kick), and a
   * pending interrupt is raised again. Throws (nothing left active) when the
   * saved positions or the device state are wrong.
   */
  restore(queues: readonly (QueuePosition | null)[] | null, restoreDevice: (active: boolean) => void): void {
    if (queues) {
      if (queues.length !== this.st.numQueues) throw new RangeError(`${queues.length} saved queue positions for a device with ${this.st.numQueues} queues`);
      this.activate(queues, false);
      if (!this.active) throw new Error('the device could not be activated with its saved queues (see the flintvm:virtio:slot log)');
    }
    try {
      restoreDevice(this.active);
    } catch (e) {
      if (this.active) this.device.reset();
      this.active = false;
      throw e;
    }
    if (this.active) this.queues.forEach((q, i) => { if (q) this.device.queueNotify(i); });
    if (this.st.interruptStatus !== 0) this.interrupt();
  }

  private queues: (SplitQueue | null)[] = [];

  private activate(starts: readonly (QueuePosition | null)[] | null = null, poll = true): void {
    const s = this.st.s;
    if (this.active || (Atomics.load(s, S_STATUS) & C.VIRTIO_STATUS_DRIVER_OK) === 0) return;
    const features = this.st.driverFeatures;
    try {
      const queues: (SplitQueue | null)[] = [];
      for (let i = 0; i < this.st.numQueues; i++) {
        if (!this.st.queueReg(i, Q_READY)) {
          queues.push(null);
          continue;
        }
        queues.push(new SplitQueue(this.memory, {
          size: this.st.queueReg(i, Q_NUM),
          descAddr: this.st.queueAddr(i, Q_DESC_LO),
          availAddr: this.st.queueAddr(i, Q_DRIVER_LO),
          usedAddr: this.st.queueAddr(i, Q_DEVICE_LO),
          eventIdx: (features & C.feature(C.VIRTIO_F_EVENT_IDX)) !== 0n,
          indirect: (features & C.feature(C.VIRTIO_F_INDIRECT_DESC)) !== 0n,
          ...(starts?.[i] ? { start: starts[i]! } : {}),
        }));
      }
      const ctx: ActivationContext = {
        memory: this.memory,
        queues,
        features,
        signalUsed: () => this.raise(C.VIRTIO_MMIO_INT_VRING),
        updateConfig: (offset, bytes) => this.updateConfig(offset, bytes),
        fds: this.fds,
        needsReset: () => this.needsReset(),
      };
      this.device.activate(ctx);
      this.active = true;
      this.queues = queues;
      Atomics.store(s, S_ACTIVE, 1);
      // The driver may have kicked before we got here: look at every queue once.
      if (poll) queues.forEach((q, i) => { if (q) this.device.queueNotify(i); });
    } catch (e) {
      debug('activation failed: %s', (e as Error).message);
      if (starts) throw e;
      this.needsReset();
    }
  }

  /** §2.1.2: tell the driver the device is broken, through status and a config interrupt. */
  needsReset(): void {
    this.st.lock.with(() => {
      Atomics.or(this.st.s, S_STATUS, C.VIRTIO_STATUS_DEVICE_NEEDS_RESET);
      this.st.publish();
    });
    this.raise(C.VIRTIO_MMIO_INT_CONFIG);
  }

  private reset(): void {
    if (this.active) {
      try {
        this.device.reset();
      } catch (e) {
        debug('device reset threw: %s', (e as Error).message);
      }
    }
    this.active = false;
    this.queues = [];
    Atomics.store(this.st.s, S_ACTIVE, 0);
    Atomics.add(this.st.s, S_RESET_DONE, 1);
    Atomics.notify(this.st.s, S_RESET_DONE);
    // Complete the driver's reset here too: with a register page its status reads never exit, so the
    // vCPU side would not hear of an acknowledgement that came after its bounded wait.
    this.st.tryCompleteReset();
  }

  /**
   * Clears the VRING bit if the driver acknowledged it through the ack eventfd since the last look, and
   * no VRING interrupt was raised in between: the eventfd is a count, so an ack drained then may be one of
   * the bit set before that raise or after it, and the bit stays set (a look at unchanged rings, never a
   * missed buffer).
   */
  private applyVringAcks(): void {
    if (!this.takeVringAcks) return;
    if (this.takeVringAcks() && !this.vringRaisedSinceDrain) this.st.ackInterrupt(C.VIRTIO_MMIO_INT_VRING);
    this.vringRaisedSinceDrain = false;
  }

  private raise(bit: number): void {
    // Raising VRING sets the bit whatever the acks say, so its drain would only empty the eventfd: skipped,
    // one read(2) less per used-buffer interrupt, the only kind a block or network device raises.
    if (bit === C.VIRTIO_MMIO_INT_VRING && this.takeVringAcks) this.vringRaisedSinceDrain = true;
    else this.applyVringAcks();
    // The bit is visible to the driver (in the page, or to a read that exits) before the interrupt is.
    this.st.raiseInterrupt(bit);
    this.interrupt();
  }

  private updateConfig(offset: number, bytes: Uint8Array): void {
    const len = this.st.s[S_CONFIG_LENGTH]!;
    if (offset < 0 || offset + bytes.length > len) throw new RangeError(`config update [${offset}, +${bytes.length}) outside ${len} bytes`);
    // The page takes the config a word at a time, and a driver reading it there is not serialized with this
    // update: a change that spans two words could be read half old, half new, under the same generation.
    if (this.st.registers && bytes.length > 0 && offset >> 2 !== (offset + bytes.length - 1) >> 2) {
      throw new RangeError(`config update [${offset}, +${bytes.length}) spans two aligned words, which a register page cannot change atomically`);
    }
    this.st.lock.with(() => {
      this.st.config.set(bytes, offset);
      Atomics.add(this.st.s, S_CONFIG_GENERATION, 1);
      this.st.publish();
    });
    this.raise(C.VIRTIO_MMIO_INT_CONFIG);
  }

  dispose(): void {
    if (this.active) this.device.reset();
    this.active = false;
    this.device.dispose();
  }
}
