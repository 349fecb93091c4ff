/**
 * Just enough of the i8042 PS/2 keyboard controller for a guest to reboot
 * (Linux `reboot=k`: wait for status bit 1 to clear, then write 0xFE to port
 * 0x64) and for probes of its status, command byte and self test to behave.
 * No keyboard or mouse is attached and no interrupt (IRQ 1/12) is ever raised:
 * output only answers controller commands, which drivers poll for.
 *
 * Ports: data at 0x60 (offset {@link I8042_DATA}) and status/command at 0x64
 * (offset {@link I8042_COMMAND}). Wiring, either:
 * - recommended: two one-port ranges, `bus.insert(0x60, 1, dev.dataPort)` and
 *   `bus.insert(0x64, 1, dev.commandPort)`, which leaves ports 0x61-0x63 (port B,
 *   the PC speaker, which KVM's in-kernel PIT emulates) to others; or
 * - one five-port range at 0x60 with the device itself (offsets 1-3 read 0xff,
 *   writes ignored), as Firecracker maps it.
 *
 * State lives in a SharedArrayBuffer ({@link I8042.createState}) behind a
 * per-device lock, so one instance per vCPU worker behaves as one controller.
 * Facts (status/command byte bits, command numbers) from the IBM PC/AT
 * technical reference as summarised in public 8042 command tables.
 */
import type { BusDevice } from '../../lib/bus/device.js';
import { ConfigError } from '../../lib/errors.js';
import { log } from '../../lib/log.js';
import { SharedLock } from '../../lib/sync/lock.js';

const debug = log('legacy:i8042');

/** Offset of the data port (0x60) from the device base. */
export const I8042_DATA = 0;
/** Offset of the status (read) / command (write) port (0x64) from the device base. */
export const I8042_COMMAND = 4;
/** Ports spanned when the device is mapped as one range (0x60-0x64). */
export const I8042_PORT_SPAN = 5;

// --- Status register (read at 0x64) ---------------------------------------------
/** Output buffer full: port 0x60 has a byte for the host. */
export const I8042_STR_OBF = 0x01;
/** Input buffer full: the controller has not taken the last write yet. Always 0 here. */
export const I8042_STR_IBF = 0x02;
/** System flag: set once the self test passed. */
export const I8042_STR_SYSFLAG = 0x04;
/** Last write was to the command port (1) or the data port (0). */
export const I8042_STR_CMDDAT = 0x08;
/** Keyboard not inhibited (the "key lock" switch is open). */
export const I8042_STR_KEYLOCK = 0x10;

// --- Controller command byte (read with 0x20, written with 0x60) -----------------
export const I8042_CTR_KBDINT = 0x01;
export const I8042_CTR_AUXINT = 0x02;
export const I8042_CTR_SYSFLAG = 0x04;
export const I8042_CTR_KBDDIS = 0x10;
export const I8042_CTR_AUXDIS = 0x20;
export const I8042_CTR_XLATE = 0x40;

// --- Controller commands (written to 0x64) --------------------------------------
export const I8042_CMD_CTL_RCTR = 0x20;
export const I8042_CMD_CTL_WCTR = 0x60;
export const I8042_CMD_AUX_DISABLE = 0xa7;
export const I8042_CMD_AUX_ENABLE = 0xa8;
export const I8042_CMD_CTL_TEST = 0xaa;
export const I8042_CMD_KBD_TEST = 0xab;
export const I8042_CMD_KBD_DISABLE = 0xad;
export const I8042_CMD_KBD_ENABLE = 0xae;
export const I8042_CMD_READ_INPUT_PORT = 0xc0;
export const I8042_CMD_READ_OUTPUT_PORT = 0xd0;
export const I8042_CMD_WRITE_OUTPUT_PORT = 0xd1;
export const I8042_CMD_KBD_LOOP = 0xd2;
/** 0xF0-0xFF pulse the output-port lines whose bit in the low nibble is 0 for ~6 us. */
export const I8042_CMD_PULSE_BASE = 0xf0;
/** Pulse bit 0 only: the CPU reset line. What Linux's `reboot=k` writes. */
export const I8042_CMD_RESET = 0xfe;

/** Self-test result for 0xAA: passed. */
export const I8042_RET_CTL_TEST = 0x55;
/** Interface-test result for 0xAB: no error. */
export const I8042_RET_KBD_TEST_OK = 0x00;

/** Output port bit 0: CPU reset line, active low. */
export const I8042_OUTPUT_PORT_RESET = 0x01;
/** Output port bit 1: A20 gate. */
export const I8042_OUTPUT_PORT_A20 = 0x02;

// --- Shared state layout (Int32 slots) -------------------------------------------
const LOCK = 0;
const MAGIC = 1;
const STATUS = 2;
const CTR = 3;
const OUTPUT = 4;
/** The command (0x60, 0xD1, 0xD2) whose data byte the next write to 0x60 is, or 0. */
const PENDING = 5;
const OUTPUT_PORT = 6;
/** 1 once a reset was requested: onReset runs for the first request only. */
const RESET_REQUESTED = 7;
const SLOTS = 8;
const STATE_MAGIC = 0x3830_3432; // "8042"

const NO_PENDING = 0;
/** What a PC BIOS leaves: keyboard interrupt on, system flag, scancode translation. */
const DEFAULT_CTR = I8042_CTR_KBDINT | I8042_CTR_SYSFLAG | I8042_CTR_XLATE;
const DEFAULT_STATUS = I8042_STR_SYSFLAG | I8042_STR_KEYLOCK;
const DEFAULT_OUTPUT_PORT = I8042_OUTPUT_PORT_RESET | I8042_OUTPUT_PORT_A20;
/** Nothing is wired to the input port. */
const INPUT_PORT_VALUE = 0x00;

/** Kinds of guest oddities, each logged once per instance. */
const ODD_COMMAND = 1;
const ODD_KEYBOARD = 2;
const ODD_OFFSET = 4;
const ODD_REPEAT_RESET = 8;

/** Callbacks of an {@link I8042}. */
export interface I8042Options {
  /**
   * The guest asked for a CPU reset (0xFE, any pulse of bit 0, or bit 0 cleared
   * through 0xD1). Called once per shared state, on the vCPU worker thread that
   * made the request, outside the device lock; must not block. Exceptions
   * propagate to the caller of `write`.
   */
  onReset: () => void;
}

/**
 * The i8042 controller. Itself a {@link BusDevice} spanning offsets 0-4;
 * {@link dataPort} and {@link commandPort} are one-port views of the same device.
 * `read`/`write` run on vCPU workers and never throw because of guest values.
 */
export class I8042 implements BusDevice {
  /** Size in bytes of the shared state. */
  static readonly STATE_BYTES = SLOTS * 4;

  /** Makes the shared state of one controller, in its post-BIOS state. */
  static createState(): SharedArrayBuffer {
    const sab = new SharedArrayBuffer(I8042.STATE_BYTES);
    const s = new Int32Array(sab);
    s[STATUS] = DEFAULT_STATUS;
    s[CTR] = DEFAULT_CTR;
    s[OUTPUT_PORT] = DEFAULT_OUTPUT_PORT;
    Atomics.store(s, MAGIC, STATE_MAGIC);
    return sab;
  }

  /** Port 0x60 alone, for a one-port bus range. */
  readonly dataPort: BusDevice;
  /** Port 0x64 alone, for a one-port bus range. */
  readonly commandPort: BusDevice;

  private readonly s: Int32Array;
  private readonly lock: SharedLock;
  private readonly onReset: () => void;
  private warned = 0;

  /** @throws ConfigError if `state` is not a buffer made by {@link createState}. */
  constructor(state: SharedArrayBuffer, options: I8042Options) {
    if (!(state instanceof SharedArrayBuffer) || state.byteLength !== I8042.STATE_BYTES ||
        Atomics.load(new Int32Array(state), MAGIC) !== STATE_MAGIC) {
      throw new ConfigError('i8042.state', 'expected a SharedArrayBuffer made by I8042.createState()',
        state instanceof SharedArrayBuffer ? state.byteLength : typeof state);
    }
    this.s = new Int32Array(state);
    this.lock = new SharedLock(this.s, LOCK);
    this.onReset = options.onReset;
    this.dataPort = {
      read: (_offset, size) => this.read(I8042_DATA, size),
      write: (_offset, size, value) => this.write(I8042_DATA, size, value),
    };
    this.commandPort = {
      read: (_offset, size) => this.read(I8042_COMMAND, size),
      write: (_offset, size, value) => this.write(I8042_COMMAND, size, value),
    };
  }

  /** Offset 0: the output buffer (clears OBF). Offset 4: the status register. Wider reads give the byte. */
  read(offset: number, _size: number): number {
    const s = this.s;
    this.lock.acquire();
    try {
      if (offset === I8042_DATA) {
        s[STATUS] = s[STATUS]! & ~I8042_STR_OBF;
        return s[OUTPUT]!;
      }
      if (offset === I8042_COMMAND) return s[STATUS]!;
    } finally {
      this.lock.release();
    }
    this.warnOnce(ODD_OFFSET, 'read at offset %d ignored', offset);
    return 0xff;
  }

  /** Offset 0: a data byte. Offset 4: a controller command. The low byte of `value` is used. */
  write(offset: number, _size: number, value: number): void {
    const byte = value & 0xff;
    let reset = false;
    this.lock.acquire();
    try {
      if (offset === I8042_DATA) reset = this.writeData(byte);
      else if (offset === I8042_COMMAND) reset = this.writeCommand(byte);
      else this.warnOnce(ODD_OFFSET, 'write at offset %d ignored', offset);
      // Latch the request so several writes (Linux tries ten times) or vCPUs reset once.
      if (reset) {
        if (this.s[RESET_REQUESTED] !== 0) {
          reset = false;
          this.warnOnce(ODD_REPEAT_RESET, 'reset already requested');
        } else {
          this.s[RESET_REQUESTED] = 1;
        }
      }
    } finally {
      this.lock.release();
    }
    if (reset) {
      debug('guest requested a CPU reset');
      this.onReset();
    }
  }

  /** True once the guest has requested a reset. Any thread. */
  get resetRequested(): boolean {
    return Atomics.load(this.s, RESET_REQUESTED) !== 0;
  }

  // --- Lock held below. Each returns true when the guest asked for a reset. -----

  private writeCommand(cmd: number): boolean {
    const s = this.s;
    s[STATUS] = s[STATUS]! | I8042_STR_CMDDAT;
    s[PENDING] = NO_PENDING;
    if (cmd >= I8042_CMD_PULSE_BASE) {
      // The low nibble selects which output lines to pulse: a 0 bit pulses that line.
      return (cmd & I8042_OUTPUT_PORT_RESET) === 0;
    }
    switch (cmd) {
      case I8042_CMD_CTL_RCTR:
        this.output(s[CTR]!);
        break;
      case I8042_CMD_CTL_WCTR:
      case I8042_CMD_WRITE_OUTPUT_PORT:
      case I8042_CMD_KBD_LOOP:
        s[PENDING] = cmd;
        break;
      case I8042_CMD_AUX_DISABLE:
        s[CTR] = s[CTR]! | I8042_CTR_AUXDIS;
        break;
      case I8042_CMD_AUX_ENABLE:
        s[CTR] = s[CTR]! & ~I8042_CTR_AUXDIS;
        break;
      case I8042_CMD_CTL_TEST:
        s[STATUS] = s[STATUS]! | I8042_STR_SYSFLAG;
        this.output(I8042_RET_CTL_TEST);
        break;
      case I8042_CMD_KBD_TEST:
        this.output(I8042_RET_KBD_TEST_OK);
        break;
      case I8042_CMD_KBD_DISABLE:
        s[CTR] = s[CTR]! | I8042_CTR_KBDDIS;
        break;
      case I8042_CMD_KBD_ENABLE:
        s[CTR] = s[CTR]! & ~I8042_CTR_KBDDIS;
        break;
      case I8042_CMD_READ_INPUT_PORT:
        this.output(INPUT_PORT_VALUE);
        break;
      case I8042_CMD_READ_OUTPUT_PORT:
        this.output(s[OUTPUT_PORT]!);
        break;
      default:
        // Includes the AUX port tests (0xA9, 0xD3, 0xD4): no answer, as a controller without one.
        this.warnOnce(ODD_COMMAND, 'controller command 0x%s ignored', cmd.toString(16));
    }
    return false;
  }

  private writeData(byte: number): boolean {
    const s = this.s;
    s[STATUS] = s[STATUS]! & ~I8042_STR_CMDDAT;
    const pending = s[PENDING]!;
    s[PENDING] = NO_PENDING;
    switch (pending) {
      case I8042_CMD_CTL_WCTR:
        s[CTR] = byte;
        // The command byte's system flag is what the status register reports.
        s[STATUS] = (s[STATUS]! & ~I8042_STR_SYSFLAG) | (byte & I8042_CTR_SYSFLAG);
        return false;
      case I8042_CMD_WRITE_OUTPUT_PORT:
        s[OUTPUT_PORT] = byte;
        return (byte & I8042_OUTPUT_PORT_RESET) === 0;
      case I8042_CMD_KBD_LOOP:
        this.output(byte);
        return false;
      default:
        this.warnOnce(ODD_KEYBOARD, 'byte 0x%s for the keyboard dropped: none attached', byte.toString(16));
        return false;
    }
  }

  private output(byte: number): void {
    this.s[OUTPUT] = byte;
    this.s[STATUS] = this.s[STATUS]! | I8042_STR_OBF;
  }

  private warnOnce(kind: number, format: string, ...args: unknown[]): void {
    if ((this.warned & kind) !== 0) return;
    this.warned |= kind;
    debug(format, ...args);
  }
}
