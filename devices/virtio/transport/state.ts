/**
 * The shared state of one virtio-mmio transport: every register the driver
 * can see, in a SharedArrayBuffer, so that every vCPU worker (which handles
 * the MMIO exits) and the I/O worker (which runs the device) work on the same
 * device. A three-state lock (lib/sync/lock.ts) guards multi-word updates.
 *
 * Layout: Int32 slots (below), then the config space at CONFIG_BYTE_OFFSET.
 */
import { SharedLock } from '../../../lib/sync/lock.js';
import type { VirtioDeviceInfo } from '../device.js';
import { feature, VIRTIO_F_VERSION_1, VIRTQ_MAX_SIZE } from '../constants.js';

export const S_LOCK = 0;
export const S_STATUS = 1;
export const S_DEVICE_FEATURES_SEL = 2;
export const S_DRIVER_FEATURES_SEL = 3;
export const S_DRIVER_FEATURES_LO = 4;
export const S_DRIVER_FEATURES_HI = 5;
export const S_QUEUE_SEL = 6;
export const S_INTERRUPT_STATUS = 7;
export const S_CONFIG_GENERATION = 8;
/** Requests from the vCPU side to the I/O side (REQ_* bits), taken with Atomics.exchange. */
export const S_CONTROL_REQUEST = 9;
/** Incremented by the I/O side each time it completes a reset. */
export const S_RESET_DONE = 10;
export const S_DEVICE_TYPE = 11;
export const S_NUM_QUEUES = 12;
export const S_DEVICE_FEATURES_LO = 13;
export const S_DEVICE_FEATURES_HI = 14;
export const S_CONFIG_LENGTH = 15;
/** 1 while the device is activated on the I/O side. */
export const S_ACTIVE = 16;
/**
 * 1 while a driver-requested reset waits for the I/O worker's acknowledgement
 * (vCPU side only; see VirtioMmioTransport). Meanwhile the status reads
 * DEVICE_NEEDS_RESET and the driver's register writes are ignored.
 */
export const S_RESET_PENDING = 17;
/** The S_RESET_DONE value when the pending reset was requested: any later value means the worker has reset the device. */
export const S_RESET_SEQ = 18;
const S_QUEUES = 20;

// Per-queue slots, relative to queueSlot(i).
export const Q_NUM_MAX = 0;
export const Q_NUM = 1;
export const Q_READY = 2;
export const Q_DESC_LO = 3;
export const Q_DESC_HI = 4;
export const Q_DRIVER_LO = 5;
export const Q_DRIVER_HI = 6;
export const Q_DEVICE_LO = 7;
export const Q_DEVICE_HI = 8;
const Q_SLOTS = 9;

export const MAX_QUEUES = 16;
export const MAX_CONFIG_BYTES = 256;
const CONFIG_BYTE_OFFSET = (S_QUEUES + MAX_QUEUES * Q_SLOTS) * 4;
const STATE_BYTES = CONFIG_BYTE_OFFSET + MAX_CONFIG_BYTES;

export const REQ_ACTIVATE = 1;
export const REQ_RESET = 2;

/** Index of queue `i`'s first slot. */
export function queueSlot(i: number): number {
  return S_QUEUES + i * Q_SLOTS;
}

/** Typed views over one transport's shared state (cheap; make one per thread). */
export class TransportState {
  readonly s: Int32Array;
  readonly config: Uint8Array;
  readonly lock: SharedLock;

  constructor(readonly sab: SharedArrayBuffer) {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength !== STATE_BYTES) throw new TypeError('not a virtio transport state');
    this.s = new Int32Array(sab, 0, CONFIG_BYTE_OFFSET / 4);
    this.config = new Uint8Array(sab, CONFIG_BYTE_OFFSET, MAX_CONFIG_BYTES);
    this.lock = new SharedLock(this.s, S_LOCK);
  }

  /** Creates the state of a device in its reset state (main thread, at build time). */
  static create(info: VirtioDeviceInfo): SharedArrayBuffer {
    if (info.queueMaxSizes.length === 0 || info.queueMaxSizes.length > MAX_QUEUES) throw new RangeError(`a virtio device has 1..${MAX_QUEUES} queues`);
    for (const q of info.queueMaxSizes) {
      if (q < 1 || q > VIRTQ_MAX_SIZE || (q & (q - 1)) !== 0) throw new RangeError(`queue size ${q} is not a power of 2 in 1..${VIRTQ_MAX_SIZE}`);
    }
    if (info.config.length > MAX_CONFIG_BYTES) throw new RangeError(`config space over ${MAX_CONFIG_BYTES} bytes`);
    const sab = new SharedArrayBuffer(STATE_BYTES);
    const st = new TransportState(sab);
    const features = info.features | feature(VIRTIO_F_VERSION_1);
    st.s[S_DEVICE_TYPE] = info.deviceType;
    st.s[S_NUM_QUEUES] = info.queueMaxSizes.length;
    st.s[S_DEVICE_FEATURES_LO] = Number(features & 0xffff_ffffn) | 0;
    st.s[S_DEVICE_FEATURES_HI] = Number(features >> 32n) | 0;
    st.s[S_CONFIG_LENGTH] = info.config.length;
    st.config.set(info.config);
    info.queueMaxSizes.forEach((n, i) => { st.s[queueSlot(i) + Q_NUM_MAX] = n; });
    return sab;
  }

  get deviceFeatures(): bigint {
    return (BigInt(this.s[S_DEVICE_FEATURES_HI]! >>> 0) << 32n) | BigInt(this.s[S_DEVICE_FEATURES_LO]! >>> 0);
  }

  get driverFeatures(): bigint {
    return (BigInt(Atomics.load(this.s, S_DRIVER_FEATURES_HI) >>> 0) << 32n) | BigInt(Atomics.load(this.s, S_DRIVER_FEATURES_LO) >>> 0);
  }

  get numQueues(): number {
    return this.s[S_NUM_QUEUES]!;
  }

  /** A queue register as an unsigned number. */
  queueReg(i: number, reg: number): number {
    return Atomics.load(this.s, queueSlot(i) + reg) >>> 0;
  }

  /** A 64-bit queue address from its LO/HI register pair (exact up to 2^53; larger is rejected by queue validation). */
  queueAddr(i: number, lo: number): number {
    return this.queueReg(i, lo + 1) * 0x1_0000_0000 + this.queueReg(i, lo);
  }

  /** Clears every driver-written register (the device's reset state), keeping the device description. Caller holds the lock. */
  clearDriverState(): void {
    const s = this.s;
    for (const slot of [S_STATUS, S_DEVICE_FEATURES_SEL, S_DRIVER_FEATURES_SEL, S_DRIVER_FEATURES_LO, S_DRIVER_FEATURES_HI, S_QUEUE_SEL, S_INTERRUPT_STATUS]) {
      Atomics.store(s, slot, 0);
    }
    for (let i = 0; i < MAX_QUEUES; i++) {
      for (let r = Q_NUM; r < Q_SLOTS; r++) Atomics.store(s, queueSlot(i) + r, 0);
    }
  }
}
