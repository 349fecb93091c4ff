/**
 * ARM PrimeCell PL031 real-time clock (ARM DDI 0224): a seconds counter the
 * guest reads at boot to set its clock (Linux `rtc-pl031`, an AMBA driver
 * that identifies the cell by its PeriphID/PCellID registers).
 *
 * The counter is host wall-clock seconds plus an offset the guest sets by
 * writing the load register. State (offset, load, match, mask) lives in a
 * SharedArrayBuffer made by {@link Pl031.createState}, so the instance on
 * every vCPU worker is the same clock.
 * Not modelled: the match interrupt (alarms never fire; RIS reads 0).
 */
import type { BusDevice } from '../../lib/bus/device.js';

/** Register offsets. */
export const PL031_DR = 0x00; // data: current seconds (RO)
export const PL031_MR = 0x04; // match (RW)
export const PL031_LR = 0x08; // load: sets the counter (RW)
export const PL031_CR = 0x0c; // control: bit 0 starts the counter (RW, reads 1 once started)
export const PL031_IMSC = 0x10; // interrupt mask (RW)
export const PL031_RIS = 0x14; // raw interrupt status (RO)
export const PL031_MIS = 0x18; // masked interrupt status (RO)
export const PL031_ICR = 0x1c; // interrupt clear (WO)
/** PeriphID0..3 at 0xfe0..0xfec then PCellID0..3 at 0xff0..0xffc: part 0x031, ARM, rev 1, PrimeCell. */
const ID_BASE = 0xfe0;
const ID_BYTES = [0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1] as const;

// State slots (BigInt64Array).
const OFFSET = 0; // seconds added to host time
const LOAD = 1;
const MATCH = 2;
const MASK = 3;
const SLOTS = 4;

export interface Pl031Options {
  /** Host time in milliseconds since the epoch (default Date.now); injectable for tests. */
  readonly now?: () => number;
}

export class Pl031 implements BusDevice {
  static readonly STATE_BYTES = SLOTS * 8;
  private readonly s: BigInt64Array;
  private readonly now: () => number;

  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(Pl031.STATE_BYTES);
  }

  constructor(state: SharedArrayBuffer, opts: Pl031Options = {}) {
    if (state.byteLength !== Pl031.STATE_BYTES) throw new RangeError(`PL031 state must be ${Pl031.STATE_BYTES} bytes`);
    this.s = new BigInt64Array(state);
    this.now = opts.now ?? Date.now;
  }

  private hostSeconds(): bigint {
    return BigInt(Math.floor(this.now() / 1000));
  }

  /** 32-bit reads of the registers; anything else reads 0 (reserved) or all-ones (wrong width). */
  read(offset: number, size: number): number {
    if (size !== 4 || offset % 4 !== 0) return 0xffffffff;
    switch (offset) {
      case PL031_DR: return Number(BigInt.asUintN(32, this.hostSeconds() + Atomics.load(this.s, OFFSET)));
      case PL031_MR: return Number(BigInt.asUintN(32, Atomics.load(this.s, MATCH)));
      case PL031_LR: return Number(BigInt.asUintN(32, Atomics.load(this.s, LOAD)));
      case PL031_CR: return 1;
      case PL031_IMSC: return Number(Atomics.load(this.s, MASK) & 1n);
      case PL031_RIS:
      case PL031_MIS: return 0;
    }
    if (offset >= ID_BASE && offset < ID_BASE + 4 * ID_BYTES.length) return ID_BYTES[(offset - ID_BASE) / 4]!;
    return 0;
  }

  write(offset: number, size: number, value: number): void {
    if (size !== 4 || offset % 4 !== 0) return;
    const v = BigInt(value >>> 0);
    switch (offset) {
      case PL031_LR:
        Atomics.store(this.s, LOAD, v);
        Atomics.store(this.s, OFFSET, v - this.hostSeconds());
        return;
      case PL031_MR: Atomics.store(this.s, MATCH, v); return;
      case PL031_IMSC: Atomics.store(this.s, MASK, v & 1n); return;
      default: // CR (always running), ICR (no interrupt pending), RO and reserved registers
    }
  }
}
