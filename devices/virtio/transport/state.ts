/**
 * The shared state of one virtio-mmio transport: every register the driver
 * can see, in a SharedArrayBuffer, so that every vCPU worker (which handles
 * the MMIO exits) and the I/O worker (which runs the device) work on the same
 * device. A three-state lock (lib/sync/lock.ts) guards multi-word updates.
 *
 * Layout: Int32 slots (below), then the config space at CONFIG_BYTE_OFFSET.
 */
import { SharedLock } from '../../../lib/sync/lock.js';
import { SnapshotStateError } from '../../../lib/errors.js';
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

/**
 * What a snapshot keeps of one transport: the registers the driver wrote
 * (status, negotiated features, selectors, pending interrupt bits, config
 * generation, and each queue's size, ready bit and ring addresses). The
 * device description and the config space are not kept: they come from the
 * device as the restored config opens it (a new vsock CID or MAC shows there).
 */
export interface SavedTransport {
  readonly status: number;
  /** The driver's accepted features, a hex string (64 bits). */
  readonly driverFeatures: string;
  readonly deviceFeaturesSel: number;
  readonly driverFeaturesSel: number;
  readonly queueSel: number;
  readonly interruptStatus: number;
  readonly configGeneration: number;
  readonly queues: readonly { num: number; ready: number; desc: number; driver: number; device: number }[];
}

/** The driver-written registers of `st`, for a snapshot (any thread; the vCPUs are paused). */
export function saveTransport(st: TransportState): SavedTransport {
  const s = st.s;
  const queues = [];
  for (let i = 0; i < st.numQueues; i++) {
    queues.push({ num: st.queueReg(i, Q_NUM), ready: st.queueReg(i, Q_READY), desc: st.queueAddr(i, Q_DESC_LO), driver: st.queueAddr(i, Q_DRIVER_LO), device: st.queueAddr(i, Q_DEVICE_LO) });
  }
  return {
    status: Atomics.load(s, S_STATUS) >>> 0,
    driverFeatures: `0x${st.driverFeatures.toString(16)}`,
    deviceFeaturesSel: Atomics.load(s, S_DEVICE_FEATURES_SEL) >>> 0,
    driverFeaturesSel: Atomics.load(s, S_DRIVER_FEATURES_SEL) >>> 0,
    queueSel: Atomics.load(s, S_QUEUE_SEL) >>> 0,
    interruptStatus: Atomics.load(s, S_INTERRUPT_STATUS) >>> 0,
    configGeneration: Atomics.load(s, S_CONFIG_GENERATION) >>> 0,
    queues,
  };
}

/** Highest guest-physical address a restored queue register may hold (the queue's own checks come later). */
const MAX_ADDR = Number.MAX_SAFE_INTEGER;
const U8 = 0xff;
const U32 = 0xffff_ffff;

/**
 * Writes a snapshot's registers into `st`, a transport freshly made by
 * TransportState.create for the same kind of device (before any thread uses
 * it). Everything is checked first and nothing is written when a value is
 * wrong: the state comes from a file. Throws SnapshotStateError naming the field: a
 * different number of queues, a queue size over the device's maximum or not
 * a power of 2, features the device does not offer (an override that changed
 * them, e.g. a read-only drive), values out of range.
 */
export function restoreTransport(st: TransportState, saved: unknown, field: string): void {
  const o = plain(saved, field);
  const num = (k: string, max: number, at = field, from: Record<string, unknown> = o): number => {
    const v = from[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new SnapshotStateError(`${at}.${k}`, `${JSON.stringify(v)} is not an integer in 0..${max}`);
    return v;
  };
  const status = num('status', U8);
  const featuresText = o.driverFeatures;
  if (typeof featuresText !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(featuresText)) throw new SnapshotStateError(`${field}.driverFeatures`, `${JSON.stringify(featuresText)} is not a 64-bit hex string`);
  const features = BigInt(featuresText);
  const extra = features & ~st.deviceFeatures;
  if (extra !== 0n) throw new SnapshotStateError(`${field}.driverFeatures`, `the driver accepted features 0x${extra.toString(16)} that this device does not offer (did an override change the device, e.g. make a drive read-only?)`);
  const regs = {
    deviceFeaturesSel: num('deviceFeaturesSel', U32), driverFeaturesSel: num('driverFeaturesSel', U32), queueSel: num('queueSel', U32),
    interruptStatus: num('interruptStatus', U8), configGeneration: num('configGeneration', U32),
  };
  if (!Array.isArray(o.queues) || o.queues.length !== st.numQueues) throw new SnapshotStateError(`${field}.queues`, `expected ${st.numQueues} queues for this device, got ${Array.isArray(o.queues) ? o.queues.length : typeof o.queues}`);
  const queues = o.queues.map((q, i) => {
    const at = `${field}.queues[${i}]`;
    const r = plain(q, at);
    const max = st.queueReg(i, Q_NUM_MAX);
    const n = num('num', max, at, r);
    if (n !== 0 && (n & (n - 1)) !== 0) throw new SnapshotStateError(`${at}.num`, `${n} is not a power of 2`);
    return { num: n, ready: num('ready', 1, at, r), desc: num('desc', MAX_ADDR, at, r), driver: num('driver', MAX_ADDR, at, r), device: num('device', MAX_ADDR, at, r) };
  });
  const s = st.s;
  s[S_STATUS] = status;
  s[S_DRIVER_FEATURES_LO] = Number(features & 0xffff_ffffn) | 0;
  s[S_DRIVER_FEATURES_HI] = Number(features >> 32n) | 0;
  s[S_DEVICE_FEATURES_SEL] = regs.deviceFeaturesSel | 0;
  s[S_DRIVER_FEATURES_SEL] = regs.driverFeaturesSel | 0;
  s[S_QUEUE_SEL] = regs.queueSel | 0;
  s[S_INTERRUPT_STATUS] = regs.interruptStatus;
  s[S_CONFIG_GENERATION] = regs.configGeneration | 0;
  queues.forEach((q, i) => {
    const b = queueSlot(i);
    s[b + Q_NUM] = q.num;
    s[b + Q_READY] = q.ready;
    for (const [lo, addr] of [[Q_DESC_LO, q.desc], [Q_DRIVER_LO, q.driver], [Q_DEVICE_LO, q.device]] as const) {
      s[b + lo] = (addr % 0x1_0000_0000) | 0;
      s[b + lo + 1] = Math.floor(addr / 0x1_0000_0000) | 0;
    }
  });
}

/** True while a driver-requested reset waits for the I/O worker: a snapshot then would catch the device half-reset. */
export function resetPending(st: TransportState): boolean {
  return Atomics.load(st.s, S_RESET_PENDING) !== 0;
}

function plain(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SnapshotStateError(`${field}`, `expected an object, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  return v as Record<string, unknown>;
}
