/**
 * A 16550A-compatible UART as a pure state machine over its eight registers
 * (in the spirit of rust-vmm vm-superio's `Serial`).
 *
 * All register state lives in a SharedArrayBuffer made by
 * {@link Serial8250.createState}. Each thread that handles the UART's ports
 * (every vCPU worker) and the thread that feeds console input (the main
 * thread) builds its own `Serial8250` over the same state; the per-device
 * {@link SharedLock} in that state makes them behave as one device.
 *
 * Modelled: THR/RBR, IER, IIR with 16550A priorities, FCR (FIFO enable, RX
 * clear, IIR FIFO bits), LCR with the divisor latch, MCR with loopback
 * (TX looped to RX, MCR outputs looped to MSR inputs), LSR, MSR with delta
 * bits, SCR. Transmission is instantaneous: THR is always empty again right
 * after a write, so LSR.THRE and LSR.TEMT are always set.
 * Not modelled: baud rate timing, parity/framing errors, break, the
 * character-timeout interrupt (received data always reports RDI, which Linux
 * handles identically), the RX trigger level.
 */
import type { BusDevice } from '../../lib/bus/device.js';
import type { Trigger } from '../../lib/interrupt/trigger.js';
import { ConfigError } from '../../lib/errors.js';
import { log } from '../../lib/log.js';
import { SharedLock } from '../../lib/sync/lock.js';
import {
  UART_FCR_CLEAR_RCVR, UART_FCR_DMA_SELECT, UART_FCR_ENABLE_FIFO, UART_FCR_TRIGGER_MASK,
  UART_IER, UART_IER_ALL_INTR, UART_IER_MSI, UART_IER_RDI, UART_IER_RLSI, UART_IER_THRI,
  UART_IIR, UART_IIR_FIFO_ENABLED, UART_IIR_MSI, UART_IIR_NO_INT, UART_IIR_RDI, UART_IIR_RLSI, UART_IIR_THRI,
  UART_LCR, UART_LCR_DLAB, UART_LSR, UART_LSR_DR, UART_LSR_OE, UART_LSR_TEMT, UART_LSR_THRE,
  UART_MCR, UART_MCR_DTR, UART_MCR_LOOP, UART_MCR_OUT1, UART_MCR_OUT2, UART_MCR_RTS, UART_MCR_WRITABLE,
  UART_MSR, UART_MSR_CTS, UART_MSR_DCD, UART_MSR_DCTS, UART_MSR_DDCD, UART_MSR_DDSR, UART_MSR_DSR,
  UART_MSR_RI, UART_MSR_TERI, UART_RX, UART_SCR,
} from './serial-regs.js';

const debug = log('legacy:serial');

// --- Shared state layout: Int32 slots, then the receive FIFO bytes. -----------
const LOCK = 0;
const MAGIC = 1;
const IER = 2;
const LCR = 3;
const MCR = 4;
/** Pending LSR error bits (only OE is ever produced), cleared by an LSR read. */
const LSR_ERRORS = 5;
/** MSR delta bits (0-3), cleared by an MSR read. */
const MSR_DELTAS = 6;
const SCR = 7;
const DLL = 8;
const DLM = 9;
const FCR = 10;
/** 1 while the THR-empty interrupt is armed (set on THRI 0->1 and after each THR write; IIR read clears). */
const THRE_ARMED = 11;
const RX_HEAD = 12;
const RX_TAIL = 13;
const RX_COUNT = 14;
/** 1 when enqueueInput refused bytes; the next drain to empty calls onInputSpace once. */
const INPUT_WAITING = 15;
const SLOTS = 16;
const FIFO_OFFSET = SLOTS * 4;

const STATE_MAGIC = 0x3835_3530; // "8550" in ASCII, marks a buffer made by createState()

/** Bytes the receive ring holds for console input. */
const RX_FIFO_SIZE = 64;
/**
 * Depth of the 16550A's own receive FIFO, used for looped-back bytes. Linux's
 * size_fifo() counts how many looped bytes the receiver keeps: 64 would make
 * it name the port a "U6_16550A" instead of a "16550A".
 */
const LOOPBACK_FIFO_DEPTH = 16;
/** With FIFOs disabled the 16550A is a 16450: a one-byte receiver buffer. */
const LOOPBACK_CHAR_MODE_DEPTH = 1;

/** Divisor 12 = 9600 baud from the 1.8432 MHz clock: what vm-superio and most firmware leave. */
const DEFAULT_DIVISOR_LOW = 12;
/** Modem inputs outside loopback: a host "cable" that is always connected (Linux waits for DCD without CLOCAL). */
const MSR_INPUTS_CONNECTED = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;

/** Bits of {@link Serial8250.warnOnce}'s mask: one debug line per kind of guest oddity per instance. */
const ODD_SIZE = 1;
const ODD_OFFSET = 2;
const ODD_READ_ONLY = 4;
const ODD_OVERRUN = 8;

/** What a {@link Serial8250} instance is wired to; give every instance over one state the same kinds of sinks. */
export interface Serial8250Options {
  /** Raises the UART's interrupt (edge). Called outside the device lock, on the thread that caused it. */
  trigger: Trigger;
  /**
   * Receives transmitted bytes, in order, on the vCPU thread that wrote THR,
   * with the device lock held (so output from several vCPUs stays ordered).
   * The array is reused: copy what you keep. Must not call back into this UART.
   * An exception it throws propagates to the caller of `write`.
   */
  out: (bytes: Uint8Array) => void;
  /**
   * Optional: called (outside the lock, on a vCPU thread) when the guest has
   * drained the receive FIFO after {@link Serial8250.enqueueInput} refused
   * bytes, so the feeder can push more without polling. Must not block.
   */
  onInputSpace?: () => void;
}

/**
 * One 16550A UART: a {@link BusDevice} over 8 ports (offsets 0-7).
 *
 * Threads: `read`/`write` run on vCPU workers; `enqueueInput`/`inputSpace`
 * on any thread (normally the main thread). Every call takes the device lock
 * briefly. Nothing here throws because of guest values: accesses wider than
 * one byte use the low byte only, writes to read-only registers and offsets
 * past 7 are ignored (reads there return 0xff), each logged once.
 *
 * Interrupts: an interrupt source (receiver line status, received data,
 * THR empty, modem status) counts as pending when its condition holds and its
 * IER bit is set. `trigger()` fires once whenever an access makes a source
 * pending that was not pending before it; the guest then finds every pending
 * source through IIR, highest priority first.
 */
export class Serial8250 implements BusDevice {
  /** Size in bytes of the shared state made by {@link createState}. */
  static readonly STATE_BYTES = FIFO_OFFSET + RX_FIFO_SIZE;
  /** Capacity of the receive FIFO for console input, in bytes. */
  static readonly RX_FIFO_SIZE = RX_FIFO_SIZE;

  /** Makes the shared state of one UART, in its power-on reset state. Call once per UART, on any thread. */
  static createState(): SharedArrayBuffer {
    const sab = new SharedArrayBuffer(Serial8250.STATE_BYTES);
    const s = new Int32Array(sab, 0, SLOTS);
    // Reset values from the datasheet: every register 0 except LSR (THRE|TEMT,
    // computed) and IIR (no interrupt, computed); the divisor is undefined at
    // reset, so give it a common value.
    s[DLL] = DEFAULT_DIVISOR_LOW;
    Atomics.store(s, MAGIC, STATE_MAGIC);
    return sab;
  }

  private readonly s: Int32Array;
  private readonly fifo: Uint8Array;
  private readonly lock: SharedLock;
  private readonly trigger: Trigger;
  private readonly out: (bytes: Uint8Array) => void;
  private readonly onInputSpace: (() => void) | undefined;
  /** One-byte buffer reused for every transmitted byte. */
  private readonly txByte = new Uint8Array(1);
  private warned = 0;

  /** @throws ConfigError if `state` is not a buffer made by {@link createState}. */
  constructor(state: SharedArrayBuffer, options: Serial8250Options) {
    if (!(state instanceof SharedArrayBuffer) || state.byteLength !== Serial8250.STATE_BYTES ||
        Atomics.load(new Int32Array(state, 0, SLOTS), MAGIC) !== STATE_MAGIC) {
      throw new ConfigError('serial.state', 'expected a SharedArrayBuffer made by Serial8250.createState()',
        state instanceof SharedArrayBuffer ? state.byteLength : typeof state);
    }
    this.s = new Int32Array(state, 0, SLOTS);
    this.fifo = new Uint8Array(state, FIFO_OFFSET, RX_FIFO_SIZE);
    this.lock = new SharedLock(this.s, LOCK);
    this.trigger = options.trigger;
    this.out = options.out;
    this.onInputSpace = options.onInputSpace;
  }

  /** BusDevice read: the register at `offset` (0-7), as a byte. */
  read(offset: number, size: number): number {
    if (size !== 1) this.warnOnce(ODD_SIZE, 'read of size %d at offset %d: using the low byte', size, offset);
    let value: number;
    let notify: boolean;
    this.lock.acquire();
    try {
      // Reads only ever clear conditions, so they never raise the interrupt.
      value = this.readRegister(offset);
      notify = this.takeInputSpaceNotice();
    } finally {
      this.lock.release();
    }
    if (notify) this.onInputSpace!();
    return value;
  }

  /** BusDevice write: the low byte of `value` to the register at `offset` (0-7). */
  write(offset: number, size: number, value: number): void {
    if (size !== 1) this.warnOnce(ODD_SIZE, 'write of size %d at offset %d: using the low byte', size, offset);
    const byte = value & 0xff;
    let raise: boolean;
    let notify: boolean;
    this.lock.acquire();
    try {
      const before = this.pendingSources();
      this.writeRegister(offset, byte);
      raise = (this.pendingSources() & ~before) !== 0;
      notify = this.takeInputSpaceNotice();
    } finally {
      this.lock.release();
    }
    if (raise) this.trigger.trigger();
    if (notify) this.onInputSpace!();
  }

  /**
   * Console input: appends bytes to the receive FIFO and returns how many it
   * took (fewer than offered when the FIFO is full, 0 while the guest has the
   * UART in loopback, where the serial input is disconnected). Offer the rest
   * later (see {@link Serial8250Options.onInputSpace}). Raises the interrupt
   * if this makes received data pending with IER.RDI set. Any thread.
   * Accepted bytes are gone if the guest then clears its receiver through FCR,
   * as Linux does when it probes and opens the port: real hardware loses them too.
   */
  enqueueInput(bytes: Uint8Array): number {
    const s = this.s;
    let accepted = 0;
    let raise: boolean;
    this.lock.acquire();
    try {
      const before = this.pendingSources();
      if ((s[MCR]! & UART_MCR_LOOP) === 0) {
        accepted = Math.min(RX_FIFO_SIZE - s[RX_COUNT]!, bytes.length);
        for (let i = 0; i < accepted; i++) this.pushRx(bytes[i]!);
      }
      if (accepted < bytes.length) s[INPUT_WAITING] = 1;
      raise = (this.pendingSources() & ~before) !== 0;
    } finally {
      this.lock.release();
    }
    if (raise) this.trigger.trigger();
    return accepted;
  }

  /** Free bytes in the receive FIFO now (0 in loopback mode). Any thread. */
  inputSpace(): number {
    this.lock.acquire();
    try {
      return (this.s[MCR]! & UART_MCR_LOOP) !== 0 ? 0 : RX_FIFO_SIZE - this.s[RX_COUNT]!;
    } finally {
      this.lock.release();
    }
  }

  // --- Register paths (lock held) ---------------------------------------------

  private readRegister(offset: number): number {
    const s = this.s;
    switch (offset) {
      case UART_RX:
        return (s[LCR]! & UART_LCR_DLAB) !== 0 ? s[DLL]! : this.popRx();
      case UART_IER:
        return (s[LCR]! & UART_LCR_DLAB) !== 0 ? s[DLM]! : s[IER]!;
      case UART_IIR:
        return this.readIir();
      case UART_LCR:
        return s[LCR]!;
      case UART_MCR:
        return s[MCR]!;
      case UART_LSR: {
        // The error bits report once: reading LSR clears them (and the RLS interrupt).
        const lsr = (s[RX_COUNT]! > 0 ? UART_LSR_DR : 0) | s[LSR_ERRORS]! | UART_LSR_THRE | UART_LSR_TEMT;
        s[LSR_ERRORS] = 0;
        return lsr;
      }
      case UART_MSR: {
        const msr = modemInputs(s[MCR]!) | s[MSR_DELTAS]!;
        s[MSR_DELTAS] = 0;
        return msr;
      }
      case UART_SCR:
        return s[SCR]!;
      default:
        this.warnOnce(ODD_OFFSET, 'read at offset %d, past the 8 UART registers', offset);
        return 0xff;
    }
  }

  private writeRegister(offset: number, byte: number): void {
    const s = this.s;
    switch (offset) {
      case UART_RX: // THR, or DLL with DLAB set
        if ((s[LCR]! & UART_LCR_DLAB) !== 0) s[DLL] = byte;
        else this.transmit(byte);
        return;
      case UART_IER: // IER, or DLM with DLAB set
        if ((s[LCR]! & UART_LCR_DLAB) !== 0) s[DLM] = byte;
        else this.writeIer(byte);
        return;
      case UART_IIR: // FCR on write; a 16550A has no EFR, even with LCR=0xBF
        this.writeFcr(byte);
        return;
      case UART_LCR:
        s[LCR] = byte;
        return;
      case UART_MCR: {
        const old = s[MCR]!;
        s[MCR] = byte & UART_MCR_WRITABLE;
        s[MSR_DELTAS] = s[MSR_DELTAS]! | modemDeltas(modemInputs(old), modemInputs(s[MCR]!));
        if (((old ^ byte) & UART_MCR_LOOP) !== 0 && debug.enabled) {
          debug('loopback %s', (byte & UART_MCR_LOOP) !== 0 ? 'on' : 'off');
        }
        return;
      }
      case UART_SCR:
        s[SCR] = byte;
        return;
      case UART_LSR:
      case UART_MSR:
        this.warnOnce(ODD_READ_ONLY, 'write 0x%s to read-only offset %d ignored', byte.toString(16), offset);
        return;
      default:
        this.warnOnce(ODD_OFFSET, 'write at offset %d, past the 8 UART registers, ignored', offset);
    }
  }

  /** THR write: the byte leaves at once (to `out`, or to the receiver in loopback) and THR is empty again. */
  private transmit(byte: number): void {
    const s = this.s;
    // Re-arm the THR-empty interrupt before calling out, so an exception there leaves a sane state.
    s[THRE_ARMED] = (s[IER]! & UART_IER_THRI) !== 0 ? 1 : 0;
    if ((s[MCR]! & UART_MCR_LOOP) !== 0) {
      const depth = (s[FCR]! & UART_FCR_ENABLE_FIFO) !== 0 ? LOOPBACK_FIFO_DEPTH : LOOPBACK_CHAR_MODE_DEPTH;
      if (s[RX_COUNT]! < depth) {
        this.pushRx(byte);
      } else {
        // Overrun: the new character is lost and LSR.OE reports it (16550A FIFO mode behaviour).
        s[LSR_ERRORS] = s[LSR_ERRORS]! | UART_LSR_OE;
        this.warnOnce(ODD_OVERRUN, 'receiver overrun in loopback');
      }
      return;
    }
    this.txByte[0] = byte;
    this.out(this.txByte);
  }

  private writeIer(byte: number): void {
    const s = this.s;
    const old = s[IER]!;
    const ier = byte & UART_IER_ALL_INTR;
    s[IER] = ier;
    // THR is always empty, so enabling THRI (0 -> 1) raises THRE at once, as on a
    // real 16550A; Linux's startup test counts on it (UART_BUG_THRE otherwise).
    if ((ier & UART_IER_THRI) === 0) s[THRE_ARMED] = 0;
    else if ((old & UART_IER_THRI) === 0) s[THRE_ARMED] = 1;
  }

  private writeFcr(byte: number): void {
    const s = this.s;
    // Changing the FIFO enable bit resets the FIFOs; CLEAR_RCVR empties the receiver.
    // (CLEAR_XMIT has nothing to do: the transmitter is always empty.)
    if (((byte ^ s[FCR]!) & UART_FCR_ENABLE_FIFO) !== 0 || (byte & UART_FCR_CLEAR_RCVR) !== 0) {
      s[RX_HEAD] = 0;
      s[RX_TAIL] = 0;
      s[RX_COUNT] = 0;
    }
    // The other FCR bits only latch while FIFOs are enabled (datasheet: FCR0 must be 1).
    s[FCR] = (byte & UART_FCR_ENABLE_FIFO) !== 0
      ? byte & (UART_FCR_ENABLE_FIFO | UART_FCR_DMA_SELECT | UART_FCR_TRIGGER_MASK)
      : 0;
  }

  /** IIR read: the highest-priority pending source; reading it while it names THRE clears THRE. */
  private readIir(): number {
    const s = this.s;
    const id = iirId(this.pendingSources());
    if (id === UART_IIR_THRI) s[THRE_ARMED] = 0;
    return id | ((s[FCR]! & UART_FCR_ENABLE_FIFO) !== 0 ? UART_IIR_FIFO_ENABLED : 0);
  }

  /** Pending interrupt sources, as IER bits: each source's condition, masked by IER. */
  private pendingSources(): number {
    const s = this.s;
    let raw = 0;
    if (s[RX_COUNT]! > 0) raw |= UART_IER_RDI;
    if (s[THRE_ARMED] !== 0) raw |= UART_IER_THRI;
    if (s[LSR_ERRORS] !== 0) raw |= UART_IER_RLSI;
    if (s[MSR_DELTAS] !== 0) raw |= UART_IER_MSI;
    return raw & s[IER]!;
  }

  private pushRx(byte: number): void {
    const s = this.s;
    const tail = s[RX_TAIL]!;
    this.fifo[tail] = byte;
    s[RX_TAIL] = (tail + 1) % RX_FIFO_SIZE;
    s[RX_COUNT] = s[RX_COUNT]! + 1;
  }

  /** RBR read: the oldest received byte, or 0 when the FIFO is empty. */
  private popRx(): number {
    const s = this.s;
    if (s[RX_COUNT] === 0) return 0;
    const head = s[RX_HEAD]!;
    const byte = this.fifo[head]!;
    s[RX_HEAD] = (head + 1) % RX_FIFO_SIZE;
    s[RX_COUNT] = s[RX_COUNT]! - 1;
    return byte;
  }

  /** True once per refusal, when the FIFO has drained and input flows again; only an instance with the callback takes it. */
  private takeInputSpaceNotice(): boolean {
    const s = this.s;
    if (this.onInputSpace === undefined || s[INPUT_WAITING] === 0) return false;
    if (s[RX_COUNT] !== 0 || (s[MCR]! & UART_MCR_LOOP) !== 0) return false;
    s[INPUT_WAITING] = 0;
    return true;
  }

  private warnOnce(kind: number, format: string, ...args: unknown[]): void {
    if ((this.warned & kind) !== 0) return;
    this.warned |= kind;
    debug(format, ...args);
  }
}

/** IIR identification for a set of pending sources, in 16550A priority order. */
function iirId(pending: number): number {
  if ((pending & UART_IER_RLSI) !== 0) return UART_IIR_RLSI;
  if ((pending & UART_IER_RDI) !== 0) return UART_IIR_RDI;
  if ((pending & UART_IER_THRI) !== 0) return UART_IIR_THRI;
  if ((pending & UART_IER_MSI) !== 0) return UART_IIR_MSI;
  return UART_IIR_NO_INT;
}

/**
 * The modem input bits (MSR 4-7) the UART sees for a given MCR. In loopback the
 * outputs drive the inputs inside the chip: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
 */
function modemInputs(mcr: number): number {
  if ((mcr & UART_MCR_LOOP) === 0) return MSR_INPUTS_CONNECTED;
  return ((mcr & UART_MCR_DTR) !== 0 ? UART_MSR_DSR : 0) |
    ((mcr & UART_MCR_RTS) !== 0 ? UART_MSR_CTS : 0) |
    ((mcr & UART_MCR_OUT1) !== 0 ? UART_MSR_RI : 0) |
    ((mcr & UART_MCR_OUT2) !== 0 ? UART_MSR_DCD : 0);
}

/** MSR delta bits for a change of modem inputs: any change of CTS/DSR/DCD, and RI's trailing (1 -> 0) edge. */
function modemDeltas(before: number, after: number): number {
  const changed = before ^ after;
  return ((changed & UART_MSR_CTS) !== 0 ? UART_MSR_DCTS : 0) |
    ((changed & UART_MSR_DSR) !== 0 ? UART_MSR_DDSR : 0) |
    ((changed & UART_MSR_DCD) !== 0 ? UART_MSR_DDCD : 0) |
    ((before & UART_MSR_RI) !== 0 && (after & UART_MSR_RI) === 0 ? UART_MSR_TERI : 0);
}
