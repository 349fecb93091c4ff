/**
 * The shared state of one virtio-mmio transport: every register the driver
 * can see, in a SharedArrayBuffer, so that every vCPU worker (which handles
 * the MMIO exits) and the I/O worker (which runs the device) work on the same
 * device. A three-state lock (lib/sync/lock.ts) guards multi-word updates.
 *
 * Layout: Int32 slots (below), then the config space at CONFIG_BYTE_OFFSET.
 *
 * A transport may also have a register page: one 4 KiB page of host memory
 * laid out as the device's MMIO window, holding every register the driver can
 * read. The builder maps it into the guest as a read-only memory slot where
 * the platform allows (lib/vm/register-pages.ts), so the driver's reads come
 * from memory instead of exiting to a vCPU worker; its writes still exit. The
 * page is a copy of this state, rewritten under the lock by {@link
 * TransportState.publish} after every change, except for InterruptStatus,
 * whose only copy is then in the page: the I/O worker sets its bits and the
 * driver's acknowledgement clears them, both atomically on that one word.
 */
import { SharedLock } from '../../../lib/sync/lock.js';
import { SnapshotStateError } from '../../../lib/errors.js';
import type { VirtioDeviceInfo } from '../device.js';
import {
  feature, VIRTIO_F_VERSION_1, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_SHM_LEN_HIGH, VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION, VIRTIO_MMIO_VERSION_2,
  FLINTVM_VIRTIO_VENDOR_ID, VIRTIO_STATUS_DEVICE_NEEDS_RESET, VIRTQ_MAX_SIZE,
} from '../constants.js';

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
/** 1 when the transport has a register page (TransportState.create's `registerPage`): every thread must then pass its view. */
const S_REGISTER_PAGE = 19;
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

/** Bytes of a register page: the device's whole MMIO window, registers and config space. */
export const REGISTER_PAGE_BYTES = 4096;
const R_INTERRUPT_STATUS = VIRTIO_MMIO_INTERRUPT_STATUS / 4;

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
  /** The config space as little-endian words (the page gets it a word at a time). */
  private readonly configWords: Int32Array;
  /** Where InterruptStatus lives: the register page's word when there is a page, else the state's slot. */
  private readonly isr: Int32Array;
  private readonly isrIndex: number;

  /**
   * @param registers this transport's register page (a view of its
   * {@link REGISTER_PAGE_BYTES} bytes), required when it was created with one
   * and refused otherwise: a thread that wrote InterruptStatus anywhere else
   * would lose interrupts.
   */
  constructor(readonly sab: SharedArrayBuffer, readonly registers: Int32Array | null = null) {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength !== STATE_BYTES) throw new TypeError('not a virtio transport state');
    this.s = new Int32Array(sab, 0, CONFIG_BYTE_OFFSET / 4);
    this.config = new Uint8Array(sab, CONFIG_BYTE_OFFSET, MAX_CONFIG_BYTES);
    this.configWords = new Int32Array(sab, CONFIG_BYTE_OFFSET, MAX_CONFIG_BYTES / 4);
    this.lock = new SharedLock(this.s, S_LOCK);
    const paged = this.s[S_REGISTER_PAGE] === 1;
    if (paged !== (registers !== null)) {
      throw new TypeError(paged ? 'this transport has a register page: pass its view' : 'this transport was created without a register page');
    }
    if (registers && registers.length * 4 !== REGISTER_PAGE_BYTES) throw new TypeError(`a register page is ${REGISTER_PAGE_BYTES} bytes`);
    this.isr = registers ?? this.s;
    this.isrIndex = registers ? R_INTERRUPT_STATUS : S_INTERRUPT_STATUS;
  }

  /**
   * Creates the state of a device in its reset state (main thread, at build
   * time). With `registerPage`, every thread must pass the page's view to
   * the constructor, and the creator calls {@link publish} once it has.
   */
  static create(info: VirtioDeviceInfo, opts: { registerPage?: boolean } = {}): SharedArrayBuffer {
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
    if (opts.registerPage) st.s[S_REGISTER_PAGE] = 1;
    return sab;
  }

  /** InterruptStatus (§4.2.2): the bits set since the driver last acknowledged them. */
  get interruptStatus(): number {
    return Atomics.load(this.isr, this.isrIndex) >>> 0;
  }

  /** Sets InterruptStatus bits (the device's side; any thread). */
  raiseInterrupt(bits: number): void {
    Atomics.or(this.isr, this.isrIndex, bits);
  }

  /** Clears the InterruptStatus bits the driver acknowledged (any thread). */
  ackInterrupt(bits: number): void {
    Atomics.and(this.isr, this.isrIndex, ~bits);
  }

  /**
   * Rewrites the register page from this state: every register the driver
   * can read, as a read of it would answer (the selectors applied), except
   * InterruptStatus, which lives in the page. The config space goes first,
   * a word at a time, then ConfigGeneration. No-op without a page. The caller
   * holds the lock, or no other thread uses the transport yet.
   */
  publish(): void {
    const r = this.registers;
    if (!r) return;
    const s = this.s;
    const w = (offset: number, v: number) => Atomics.store(r, offset / 4, v | 0);
    w(VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_MAGIC);
    w(VIRTIO_MMIO_VERSION, VIRTIO_MMIO_VERSION_2);
    w(VIRTIO_MMIO_DEVICE_ID, s[S_DEVICE_TYPE]!);
    w(VIRTIO_MMIO_VENDOR_ID, FLINTVM_VIRTIO_VENDOR_ID);
    const sel = Atomics.load(s, S_DEVICE_FEATURES_SEL);
    w(VIRTIO_MMIO_DEVICE_FEATURES, sel === 0 ? s[S_DEVICE_FEATURES_LO]! : sel === 1 ? s[S_DEVICE_FEATURES_HI]! : 0);
    const q = Atomics.load(s, S_QUEUE_SEL) >>> 0;
    const qOk = q < this.numQueues;
    w(VIRTIO_MMIO_QUEUE_NUM_MAX, qOk ? this.queueReg(q, Q_NUM_MAX) : 0);
    w(VIRTIO_MMIO_QUEUE_READY, qOk ? this.queueReg(q, Q_READY) : 0);
    w(VIRTIO_MMIO_STATUS, Atomics.load(s, S_STATUS));
    // No shared memory regions: a length of all-ones means "no such region" (§4.2.2).
    w(VIRTIO_MMIO_SHM_LEN_LOW, -1);
    w(VIRTIO_MMIO_SHM_LEN_HIGH, -1);
    // A driver reads ConfigGeneration before and after a field: a field of up to 4 aligned bytes is one store here.
    const base = VIRTIO_MMIO_CONFIG / 4;
    for (let i = 0; i < this.configWords.length; i++) Atomics.store(r, base + i, this.configWords[i]!);
    w(VIRTIO_MMIO_CONFIG_GENERATION, Atomics.load(s, S_CONFIG_GENERATION));
  }

  /**
   * Completes a pending reset if the I/O worker has acknowledged it: clears
   * every driver register (status reads 0) and publishes. Otherwise keeps it
   * pending with the status at DEVICE_NEEDS_RESET. Returns true when no reset
   * is pending. Either side calls it: the vCPU side after its bounded wait
   * and on the driver's next access, the I/O worker right after it acknowledges
   * (with a register page the driver's status reads never reach the vCPU side).
   */
  tryCompleteReset(): boolean {
    const s = this.s;
    return this.lock.with(() => {
      if (!Atomics.load(s, S_RESET_PENDING)) return true;
      if (Atomics.load(s, S_RESET_DONE) !== Atomics.load(s, S_RESET_SEQ)) {
        this.clearDriverState();
        Atomics.store(s, S_RESET_PENDING, 0);
        this.publish();
        return true;
      }
      Atomics.store(s, S_STATUS, VIRTIO_STATUS_DEVICE_NEEDS_RESET);
      this.publish();
      return false;
    });
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
    for (const slot of [S_STATUS, S_DEVICE_FEATURES_SEL, S_DRIVER_FEATURES_SEL, S_DRIVER_FEATURES_LO, S_DRIVER_FEATURES_HI, S_QUEUE_SEL]) {
      Atomics.store(s, slot, 0);
    }
    Atomics.store(this.isr, this.isrIndex, 0);
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
    interruptStatus: st.interruptStatus,
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
 * it), and publishes them to its register page if it has one. Everything is checked first and nothing is written when a value is
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
  st.ackInterrupt(~0);
  st.raiseInterrupt(regs.interruptStatus);
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
  st.publish();
}

/** True while a driver-requested reset waits for the I/O worker: a snapshot then would catch the device half-reset. */
export function resetPending(st: TransportState): boolean {
  return Atomics.load(st.s, S_RESET_PENDING) !== 0;
}

function plain(v: unknown, field: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SnapshotStateError(`${field}`, `expected an object, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  return v as Record<string, unknown>;
}
