/**
 * Fuzz targets `uart-8250` and `pl031`: the legacy register files a guest
 * reaches by port I/O or MMIO, driven by random accesses of any width, offset
 * and value against one live device per episode.
 *
 * 8250 oracles: nothing throws; reads are bytes; an access raises the
 * interrupt at most once; a write transmits at most one byte, only from THR
 * (offset 0, DLAB clear, not in loopback), and that byte is the one written;
 * console input comes out of RBR in order and the free FIFO space agrees with
 * a model of it (the model is dropped whenever the guest rewrites FCR or MCR,
 * which may clear or redirect the FIFO, until the FIFO is seen empty again).
 *
 * PL031 oracles: a model of the RTC over an injected clock: DR is LR plus the
 * seconds since LR was written (mod 2^32), MR and LR read back, IMSC keeps bit
 * 0, RIS/MIS read 0, CR reads 1, accesses of the wrong width read all-ones.
 */
import { Pl031, PL031_CR, PL031_DR, PL031_ICR, PL031_IMSC, PL031_LR, PL031_MIS, PL031_MR, PL031_RIS } from '../../../devices/legacy/pl031.js';
import { Serial8250 } from '../../../devices/legacy/serial-8250.js';
import { RecordingTrigger } from '../../../lib/interrupt/trigger.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const THR = 0;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;

export const uart8250Target: FuzzTarget = {
  name: 'uart-8250',
  description: '16550A UART registers: random accesses and console input vs a model of THR output and the RX FIFO',
  episode: 10_000,
  create() {
    const trig = new RecordingTrigger();
    const out: number[] = [];
    const uart = new Serial8250(Serial8250.createState(), { trigger: trig, out: (b) => { for (const x of b) out.push(x); } });
    let rxModel: number[] | null = [];
    let feed = 0;
    return {
      step(rng: Rng) {
        const k = rng.int(10);
        const trig0 = trig.count;
        const out0 = out.length;
        if (k < 2) {
          const space = uart.inputSpace();
          check(space >= 0 && space <= Serial8250.RX_FIFO_SIZE, `inputSpace ${space}`);
          const loop = (uart.read(MCR, 1) & MCR_LOOP) !== 0;
          if (rxModel && !loop) check(space === Serial8250.RX_FIFO_SIZE - rxModel.length, () => `inputSpace ${space}, model holds ${rxModel!.length}`);
          const bytes = Uint8Array.from({ length: rng.int(80) }, () => feed++ & 0xff);
          const took = uart.enqueueInput(bytes);
          check(took >= 0 && took <= bytes.length && took <= space, `enqueueInput took ${took} of ${bytes.length} with ${space} free`);
          if (loop) check(took === 0, 'enqueueInput took bytes in loopback');
          if (rxModel) rxModel.push(...bytes.subarray(0, took));
          feed -= bytes.length - took; // offer the refused bytes again next time, as the console feeder does
          check(trig.count - trig0 <= 1, 'enqueueInput raised the interrupt more than once');
          return;
        }
        const offset = rng.weighted([[12, rng.int(8)], [1, rng.int(64)]]);
        const size = rng.weighted([[12, 1], [1, rng.pick([2, 4, 8])]]);
        const lcr = uart.read(LCR, 1);
        const mcr = uart.read(MCR, 1);
        if (k < 6) {
          const v = uart.read(offset, size);
          check(Number.isInteger(v) && v >= 0 && v <= 0xff, `read of offset ${offset} gave ${v}`);
          check(out.length === out0, 'a read transmitted');
          if ((offset & 0xff) === THR && offset < 8 && !(lcr & LCR_DLAB) && !(mcr & MCR_LOOP) && rxModel) {
            if (rxModel.length > 0) {
              const want = rxModel.shift()!;
              check(v === want, () => `RBR gave ${v}, the next input byte is ${want}`);
            }
          }
        } else {
          const value = rng.weighted([[6, rng.int(256)], [1, rng.u32()]]);
          uart.write(offset, size, value);
          const sent = out.length - out0;
          check(sent <= 1, `one write transmitted ${sent} bytes`);
          if (sent === 1) {
            check(offset === THR && !(lcr & LCR_DLAB) && !(mcr & MCR_LOOP), () => `a write to offset ${offset} (LCR 0x${lcr.toString(16)}, MCR 0x${mcr.toString(16)}) transmitted`);
            check(out[out.length - 1] === (value & 0xff), 'transmitted a byte other than the one written');
          }
          if (offset === FCR || offset === MCR || (offset === THR && (mcr & MCR_LOOP))) rxModel = null;
        }
        check(trig.count - trig0 <= 1, 'one access raised the interrupt more than once');
        if (!rxModel && !(uart.read(MCR, 1) & MCR_LOOP) && uart.inputSpace() === Serial8250.RX_FIFO_SIZE) rxModel = [];
        if (out.length > 100_000) out.length = 0;
      },
      close() {},
    };
  },
};

export const pl031Target: FuzzTarget = {
  name: 'pl031',
  description: 'PL031 RTC registers: random accesses over an injected clock vs a model (DR = LR + elapsed, MR/LR/IMSC read back)',
  episode: 10_000,
  create(rng: Rng) {
    let nowMs = rng.int(2 ** 31) * 1000 + rng.int(1000);
    const rtc = new Pl031(Pl031.createState(), { now: () => nowMs });
    let offset = 0n; // model: DR = host seconds + offset
    let mr = 0n;
    let lr = 0n;
    let imsc = 0n;
    const secs = () => BigInt(Math.floor(nowMs / 1000));
    return {
      step(r: Rng) {
        if (r.bool(0.2)) nowMs += r.weighted([[4, r.int(2000)], [1, r.int(2 ** 31)]]);
        const off = r.weighted([[8, r.int(8) * 4], [1, r.int(0x1000)]]);
        const size = r.weighted([[8, 4], [1, r.pick([1, 2, 8])]]);
        const bad = size !== 4 || off % 4 !== 0;
        if (r.bool(0.5)) {
          const v = rtc.read(off, size);
          check(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff, `read gave ${v}`);
          if (bad) return check(v === 0xffff_ffff, `a ${size}-byte read at 0x${off.toString(16)} gave ${v}, not all-ones`);
          const want = off === PL031_DR ? Number(BigInt.asUintN(32, secs() + offset)) : off === PL031_MR ? Number(BigInt.asUintN(32, mr))
            : off === PL031_LR ? Number(BigInt.asUintN(32, lr)) : off === PL031_CR ? 1 : off === PL031_IMSC ? Number(imsc)
              : off === PL031_RIS || off === PL031_MIS ? 0 : undefined;
          if (want !== undefined) check(v === want, () => `register 0x${off.toString(16)} read ${v}, the model says ${want}`);
        } else {
          const v = r.edgeU32();
          rtc.write(off, size, v);
          if (bad) return;
          const u = BigInt(v >>> 0);
          if (off === PL031_LR) { lr = u; offset = u - secs(); }
          if (off === PL031_MR) mr = u;
          if (off === PL031_IMSC) imsc = u & 1n;
          if (off === PL031_ICR || off === PL031_CR) { /* no state */ }
        }
      },
      close() {},
    };
  },
};
