/**
 * The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), as a BusDevice on
 * the vCPU workers. It owns the registers and the status state machine; it
 * knows nothing about what the device does. The device itself runs on the I/O
 * worker (transport/slot.ts): DRIVER_OK and reset reach it through the control
 * eventfd, queue notifications through ioeventfds (so they never exit to a vCPU
 * worker at all; the QueueNotify register here is only a fallback).
 *
 * With a register page mapped read-only into the guest (see state.ts), the
 * driver's reads never come here; every write still does, and each one that
 * changes what a read answers publishes the page again before the vCPU
 * returns to the guest.
 */
import type { BusDevice } from '../../../lib/bus/device.js';
import { log } from '../../../lib/log.js';
import * as C from '../constants.js';
import { decideStatus } from '../status.js';
import {
  Q_DESC_HI, Q_DESC_LO, Q_DEVICE_HI, Q_DEVICE_LO, Q_DRIVER_HI, Q_DRIVER_LO, Q_NUM, Q_NUM_MAX, Q_READY, queueSlot,
  REQ_ACTIVATE, REQ_RESET, S_CONFIG_GENERATION, S_CONFIG_LENGTH, S_CONTROL_REQUEST, S_DEVICE_FEATURES_HI, S_DEVICE_FEATURES_LO,
  S_DEVICE_FEATURES_SEL, S_DEVICE_TYPE, S_DRIVER_FEATURES_HI, S_DRIVER_FEATURES_LO, S_DRIVER_FEATURES_SEL,
  S_QUEUE_SEL, S_RESET_DONE, S_RESET_PENDING, S_RESET_SEQ, S_STATUS, TransportState,
} from './state.js';

const debug = log('virtio:mmio');

/**
 * How long a status write of 0 blocks its vCPU waiting for the I/O worker to
 * reset the device. Past it the reset stays pending (see writeStatus).
 */
const RESET_WAIT_MS = 1000;

export interface MmioTransportHooks {
  /** Wakes the I/O worker's handling of this device (writes its control eventfd). */
  kickControl(): void;
  /** A QueueNotify write that KVM did not consume through an ioeventfd. */
  notifyQueue(index: number): void;
}

/** Offsets of the per-queue address registers -> [queue slot, which word]. */
const QUEUE_ADDR_REGS: ReadonlyMap<number, number> = new Map([
  [C.VIRTIO_MMIO_QUEUE_DESC_LOW, Q_DESC_LO], [C.VIRTIO_MMIO_QUEUE_DESC_HIGH, Q_DESC_HI],
  [C.VIRTIO_MMIO_QUEUE_DRIVER_LOW, Q_DRIVER_LO], [C.VIRTIO_MMIO_QUEUE_DRIVER_HIGH, Q_DRIVER_HI],
  [C.VIRTIO_MMIO_QUEUE_DEVICE_LOW, Q_DEVICE_LO], [C.VIRTIO_MMIO_QUEUE_DEVICE_HIGH, Q_DEVICE_HI],
]);

export class VirtioMmioTransport implements BusDevice {
  private readonly st: TransportState;
  private readonly s: Int32Array;
  private warned = new Set<string>();

  /** @param registers the transport's register page, when it has one (see TransportState). */
  constructor(state: SharedArrayBuffer, private readonly hooks: MmioTransportHooks, registers: Int32Array | null = null) {
    this.st = new TransportState(state, registers);
    this.s = this.st.s;
  }

  /** Logs a guest mistake once per kind (never per access). */
  private guestBug(kind: string, detail: string): void {
    if (this.warned.has(kind)) return;
    this.warned.add(kind);
    debug('guest driver bug (%s): %s', kind, detail);
  }

  read(offset: number, size: number): number {
    if (offset >= C.VIRTIO_MMIO_CONFIG) return this.readConfig(offset - C.VIRTIO_MMIO_CONFIG, size);
    if (size !== 4 || offset % 4 !== 0) {
      this.guestBug('width', `register read of ${size} bytes at 0x${offset.toString(16)}`);
      return 0;
    }
    const s = this.s;
    const q = Atomics.load(s, S_QUEUE_SEL) >>> 0;
    const qOk = q < this.st.numQueues;
    switch (offset) {
      case C.VIRTIO_MMIO_MAGIC_VALUE: return C.VIRTIO_MMIO_MAGIC;
      case C.VIRTIO_MMIO_VERSION: return C.VIRTIO_MMIO_VERSION_2;
      case C.VIRTIO_MMIO_DEVICE_ID: return s[S_DEVICE_TYPE]!;
      case C.VIRTIO_MMIO_VENDOR_ID: return C.FLINTVM_VIRTIO_VENDOR_ID;
      case C.VIRTIO_MMIO_DEVICE_FEATURES: {
        const sel = Atomics.load(s, S_DEVICE_FEATURES_SEL);
        return sel === 0 ? s[S_DEVICE_FEATURES_LO]! >>> 0 : sel === 1 ? s[S_DEVICE_FEATURES_HI]! >>> 0 : 0;
      }
      case C.VIRTIO_MMIO_QUEUE_NUM_MAX: return qOk ? this.st.queueReg(q, Q_NUM_MAX) : 0;
      case C.VIRTIO_MMIO_QUEUE_READY: return qOk ? this.st.queueReg(q, Q_READY) : 0;
      case C.VIRTIO_MMIO_INTERRUPT_STATUS: return this.st.interruptStatus;
      case C.VIRTIO_MMIO_STATUS:
        if (Atomics.load(s, S_RESET_PENDING)) this.tryCompleteReset();
        return Atomics.load(s, S_STATUS) >>> 0;
      case C.VIRTIO_MMIO_CONFIG_GENERATION: return Atomics.load(s, S_CONFIG_GENERATION) >>> 0;
      // No shared memory regions: a length of all-ones means "no such region" (§4.2.2).
      case C.VIRTIO_MMIO_SHM_LEN_LOW: case C.VIRTIO_MMIO_SHM_LEN_HIGH: return 0xffff_ffff;
      default:
        this.guestBug('read', `read of write-only or unknown register 0x${offset.toString(16)}`);
        return 0;
    }
  }

  write(offset: number, size: number, value: number): void {
    if (offset >= C.VIRTIO_MMIO_CONFIG) {
      // No device here has writable config fields; drivers must not write others (§4.2.2.2).
      this.guestBug('config-write', `config write at 0x${(offset - C.VIRTIO_MMIO_CONFIG).toString(16)}`);
      return;
    }
    if (size !== 4 || offset % 4 !== 0) {
      this.guestBug('width', `register write of ${size} bytes at 0x${offset.toString(16)}`);
      return;
    }
    const v = value >>> 0;
    if (offset === C.VIRTIO_MMIO_STATUS && v === 0) return this.writeStatus(v);
    // Until the I/O worker has acknowledged a reset, the driver must not set the device up again
    // (it must first read status 0, §4.2.2.1): ignore everything but a repeated reset and interrupt acks.
    if (offset !== C.VIRTIO_MMIO_INTERRUPT_ACK && Atomics.load(this.s, S_RESET_PENDING) && !this.tryCompleteReset()) {
      this.guestBug('reset-pending', `register 0x${offset.toString(16)} written while a reset is pending (status not yet read as 0)`);
      return;
    }
    if (offset === C.VIRTIO_MMIO_STATUS) return this.writeStatus(v);
    if (offset === C.VIRTIO_MMIO_QUEUE_NOTIFY) {
      if (v < this.st.numQueues) this.hooks.notifyQueue(v);
      else this.guestBug('notify', `notify of queue ${v}`);
      return;
    }
    if (offset === C.VIRTIO_MMIO_INTERRUPT_ACK) {
      this.st.ackInterrupt(v);
      return;
    }
    const lock = this.st.lock;
    lock.acquire();
    try {
      this.writeLocked(offset, v);
      this.st.publish();
    } finally {
      lock.release();
    }
  }

  private writeLocked(offset: number, v: number): void {
    const s = this.s;
    const status = s[S_STATUS]!;
    switch (offset) {
      case C.VIRTIO_MMIO_DEVICE_FEATURES_SEL: s[S_DEVICE_FEATURES_SEL] = v; return;
      case C.VIRTIO_MMIO_DRIVER_FEATURES_SEL: s[S_DRIVER_FEATURES_SEL] = v; return;
      case C.VIRTIO_MMIO_DRIVER_FEATURES: {
        // Features are only negotiable between DRIVER and FEATURES_OK (§3.1.1).
        if ((status & C.VIRTIO_STATUS_DRIVER) === 0 || (status & C.VIRTIO_STATUS_FEATURES_OK) !== 0) {
          this.guestBug('features', 'driver features written outside negotiation');
          return;
        }
        const sel = s[S_DRIVER_FEATURES_SEL];
        if (sel === 0) s[S_DRIVER_FEATURES_LO] = v | 0;
        else if (sel === 1) s[S_DRIVER_FEATURES_HI] = v | 0;
        return;
      }
      case C.VIRTIO_MMIO_QUEUE_SEL: s[S_QUEUE_SEL] = v; return;
      default: break;
    }
    // Queue registers: only for an existing, not yet ready queue, before DRIVER_OK.
    const q = s[S_QUEUE_SEL]! >>> 0;
    if (q >= this.st.numQueues) return this.guestBug('queue-sel', `queue register write for queue ${q}`);
    if (status & C.VIRTIO_STATUS_DRIVER_OK) return this.guestBug('queue-live', 'queue register written after DRIVER_OK');
    const base = queueSlot(q);
    if (offset === C.VIRTIO_MMIO_QUEUE_READY) {
      s[base + Q_READY] = v & 1;
      return;
    }
    if (s[base + Q_READY]) return this.guestBug('queue-ready', 'queue register written while the queue is ready');
    if (offset === C.VIRTIO_MMIO_QUEUE_NUM) {
      const max = s[base + Q_NUM_MAX]!;
      if (v === 0 || v > max || (v & (v - 1)) !== 0) return this.guestBug('queue-num', `queue size ${v} (max ${max}, power of 2)`);
      s[base + Q_NUM] = v;
      return;
    }
    const reg = QUEUE_ADDR_REGS.get(offset);
    if (reg !== undefined) s[base + reg] = v | 0;
    else this.guestBug('write', `write to read-only or unknown register 0x${offset.toString(16)}`);
  }

  private writeStatus(v: number): void {
    const s = this.s;
    const lock = this.st.lock;
    lock.acquire();
    let wakeIo = false;
    let reset = false;
    try {
      const d = decideStatus(s[S_STATUS]!, v);
      switch (d.kind) {
        case 'reset':
          if (Atomics.load(s, S_RESET_PENDING)) {
            // A repeated reset while the worker has not answered: ask and wait again.
            reset = true;
          } else {
            reset = s[S_STATUS] !== 0 || Atomics.load(s, S_CONTROL_REQUEST) !== 0;
            if (reset) {
              // Taken before the request, under the lock: any later S_RESET_DONE means a reset done after this point.
              Atomics.store(s, S_RESET_SEQ, Atomics.load(s, S_RESET_DONE));
              Atomics.store(s, S_RESET_PENDING, 1);
            }
          }
          if (reset) {
            Atomics.or(s, S_CONTROL_REQUEST, REQ_RESET);
            wakeIo = true;
          }
          break;
        case 'failed':
          Atomics.or(s, S_STATUS, C.VIRTIO_STATUS_FAILED);
          break;
        case 'invalid':
          this.guestBug('status', `status 0x${s[S_STATUS]!.toString(16)} -> 0x${v.toString(16)}`);
          break;
        case 'set': {
          let value = d.value | (s[S_STATUS]! & C.VIRTIO_STATUS_DEVICE_NEEDS_RESET);
          // FEATURES_OK sticks only if the driver took VERSION_1 and nothing we did not offer (§3.1.1 step 5-6).
          if (d.featuresOk && !this.featuresAcceptable()) value &= ~C.VIRTIO_STATUS_FEATURES_OK;
          Atomics.store(s, S_STATUS, value);
          if (d.driverOk) {
            Atomics.or(s, S_CONTROL_REQUEST, REQ_ACTIVATE);
            wakeIo = true;
          }
          break;
        }
      }
      this.st.publish();
    } finally {
      lock.release();
    }
    if (!reset) {
      if (wakeIo) this.hooks.kickControl();
      return;
    }
    // A reset must be complete before the driver reuses the queue memory: wait
    // (bounded) for the I/O worker to stop the device, then clear the registers.
    const seq = Atomics.load(s, S_RESET_SEQ);
    this.hooks.kickControl();
    const deadline = Date.now() + RESET_WAIT_MS;
    while (Atomics.load(s, S_RESET_DONE) === seq && Date.now() < deadline) Atomics.wait(s, S_RESET_DONE, seq, 50);
    if (!this.tryCompleteReset()) {
      // The worker may still be using the rings: never clear or reuse queue state before it answers.
      // The reset stays pending and the status reads DEVICE_NEEDS_RESET (non-zero, without FEATURES_OK),
      // so a driver that waits for 0 (§4.2.2.1) keeps waiting and one that goes on fails its feature
      // check; the first access after the worker's acknowledgement completes the reset.
      debug('reset: the I/O worker did not acknowledge within %d ms; the reset stays pending', RESET_WAIT_MS);
    }
  }

  /** See TransportState.tryCompleteReset. */
  private tryCompleteReset(): boolean {
    return this.st.tryCompleteReset();
  }

  private featuresAcceptable(): boolean {
    const offered = this.st.deviceFeatures;
    const wanted = this.st.driverFeatures;
    return (wanted & ~offered) === 0n && (wanted & C.feature(C.VIRTIO_F_VERSION_1)) !== 0n;
  }

  /** Config space: little-endian, 1/2/4-byte reads; bytes past the device's config read as 0. */
  private readConfig(off: number, size: number): number {
    const len = this.s[S_CONFIG_LENGTH]!;
    if ((size !== 1 && size !== 2 && size !== 4) || off + size > len) return 0;
    const lock = this.st.lock;
    lock.acquire();
    try {
      const c = this.st.config;
      let v = 0;
      for (let i = size - 1; i >= 0; i--) v = v * 256 + c[off + i]!;
      return v;
    } finally {
      lock.release();
    }
  }
}

