/**
 * Replays, against Serial8250, the register conversation Linux 6.1's 8250
 * driver has with a port at boot (drivers/tty/serial/8250/8250_port.c:
 * autoconfig(), autoconfig_16550a(), size_fifo(), and the interrupt tests in
 * serial8250_do_startup()), rewritten here as a small driver of our own, and
 * checks the port comes out as a plain "16550A".
 */
import test from 'ava';
import { Serial8250 } from '../../../../devices/legacy/serial-8250.js';
import {
  UART_DLL, UART_DLM, UART_EFR, UART_FCR, UART_FCR_CLEAR_RCVR, UART_FCR_CLEAR_XMIT, UART_FCR_ENABLE_FIFO,
  UART_FCR7_64BYTE, UART_IER, UART_IER_ALL_INTR, UART_IER_THRI, UART_IER_UUE, UART_IIR, UART_IIR_64BYTE_FIFO,
  UART_IIR_FIFO_ENABLED, UART_IIR_NO_INT, UART_LCR, UART_LCR_CONF_MODE_A, UART_LCR_DLAB, UART_LCR_CONF_MODE_B, UART_LCR_WLEN8,
  UART_LSR, UART_LSR_DR, UART_LSR_TEMT, UART_LSR_THRE, UART_MCR, UART_MCR_DTR, UART_MCR_LOOP, UART_MCR_OUT2,
  UART_MCR_RTS, UART_MSR, UART_MSR_CTS, UART_MSR_DCD, UART_MSR_STATUS_BITS, UART_RX, UART_SCR, UART_TX,
} from '../../../../devices/legacy/serial-regs.js';
import { makeUart } from './uart-harness.js';

/** What the probe talks to: byte-wide port I/O relative to the UART base. */
interface Port {
  inb(offset: number): number;
  outb(offset: number, value: number): void;
}

interface ProbeResult {
  type: string;
  /** What size_fifo() counted, when the probe got that far. */
  fifoCount?: number;
}

/** Linux's uart_config names for the outcomes we can reach. */
const NATSEMI_EXCR1 = 0x02;
const NATSEMI_BANK2_LCR = 0xe0;

function sizeFifo(p: Port): number {
  const oldLcr = p.inb(UART_LCR);
  p.outb(UART_LCR, 0);
  const oldFcr = p.inb(UART_FCR); // really IIR: the driver writes it back as FCR
  const oldMcr = p.inb(UART_MCR);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT);
  p.outb(UART_MCR, UART_MCR_LOOP);
  p.outb(UART_LCR, UART_LCR_CONF_MODE_A);
  const oldDl = p.inb(UART_DLL) | (p.inb(UART_DLM) << 8);
  p.outb(UART_DLL, 1);
  p.outb(UART_DLM, 0);
  p.outb(UART_LCR, UART_LCR_WLEN8);
  for (let i = 0; i < 256; i++) p.outb(UART_TX, i);
  let count = 0;
  while (count < 256 && (p.inb(UART_LSR) & UART_LSR_DR) !== 0) {
    p.inb(UART_RX);
    count++;
  }
  p.outb(UART_FCR, oldFcr);
  p.outb(UART_MCR, oldMcr);
  p.outb(UART_LCR, UART_LCR_CONF_MODE_A);
  p.outb(UART_DLL, oldDl & 0xff);
  p.outb(UART_DLM, oldDl >> 8);
  p.outb(UART_LCR, oldLcr);
  return count;
}

function readDivisorId(p: Port): number {
  const oldLcr = p.inb(UART_LCR);
  p.outb(UART_LCR, UART_LCR_CONF_MODE_A);
  const oldDl = p.inb(UART_DLL) | (p.inb(UART_DLM) << 8);
  p.outb(UART_DLL, 0);
  p.outb(UART_DLM, 0);
  const id = p.inb(UART_DLL) | (p.inb(UART_DLM) << 8);
  p.outb(UART_DLL, oldDl & 0xff);
  p.outb(UART_DLM, oldDl >> 8);
  p.outb(UART_LCR, oldLcr);
  return id;
}

/** The FIFO-capable branch: tells a plain 16550A from the many supersets. */
function probe16550a(p: Port): ProbeResult {
  // EFR visible with LCR=0x80 (ST16C650V1)?
  p.outb(UART_LCR, UART_LCR_CONF_MODE_A);
  if (p.inb(UART_EFR) === 0) {
    p.outb(UART_EFR, 0xa8);
    const v1 = p.inb(UART_EFR) !== 0;
    p.outb(UART_EFR, 0);
    return { type: v1 ? '16650' : '16550A_FSL64-or-Motorola' };
  }
  // EFR visible with LCR=0xBF (16650V2, 16850, 16C950, 16654...)?
  p.outb(UART_LCR, UART_LCR_CONF_MODE_B);
  if (p.inb(UART_EFR) === 0) {
    const broken = readDivisorId(p) === 0x0201 && sizeFifo(p) === 16;
    if (!broken) return { type: 'EFR-capable (16650V2/16850/16C950/16654)' };
  }
  // National Semiconductor SuperIO: MCR.LOOP mirrored in bank 2's EXCR1?
  p.outb(UART_LCR, 0);
  const mcr = p.inb(UART_MCR);
  p.outb(UART_LCR, NATSEMI_BANK2_LCR);
  let excr1 = p.inb(NATSEMI_EXCR1);
  if (((excr1 ^ mcr) & UART_MCR_LOOP) === 0) {
    p.outb(UART_LCR, 0);
    p.outb(UART_MCR, mcr ^ UART_MCR_LOOP);
    p.outb(UART_LCR, NATSEMI_BANK2_LCR);
    excr1 = p.inb(NATSEMI_EXCR1);
    p.outb(UART_LCR, 0);
    p.outb(UART_MCR, mcr);
    if (((excr1 ^ mcr) & UART_MCR_LOOP) !== 0) return { type: 'NS16550A' };
  }
  // TI16750: IIR bit 5 follows FCR bit 5 only with DLAB set.
  p.outb(UART_LCR, 0);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
  const iir1 = p.inb(UART_IIR) & (UART_IIR_64BYTE_FIFO | UART_IIR_FIFO_ENABLED);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO);
  p.outb(UART_LCR, UART_LCR_CONF_MODE_A);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
  const iir2 = p.inb(UART_IIR) & (UART_IIR_64BYTE_FIFO | UART_IIR_FIFO_ENABLED);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO);
  p.outb(UART_LCR, 0);
  if (iir1 === UART_IIR_FIFO_ENABLED && iir2 === (UART_IIR_FIFO_ENABLED | UART_IIR_64BYTE_FIFO)) {
    return { type: '16750' };
  }
  // XScale: a writable IER.UUE bit.
  const ier = p.inb(UART_IER);
  p.outb(UART_IER, ier & ~UART_IER_UUE);
  if ((p.inb(UART_IER) & UART_IER_UUE) === 0) {
    p.outb(UART_IER, ier | UART_IER_UUE);
    if ((p.inb(UART_IER) & UART_IER_UUE) !== 0) return { type: 'XScale' };
  }
  p.outb(UART_IER, ier);
  // U6_16550A: a 64-byte FIFO.
  const fifoCount = sizeFifo(p);
  return { type: fifoCount === 64 ? 'U6_16550A' : '16550A', fifoCount };
}

/** autoconfig() for a port without UPF_SKIP_TEST (so the loopback test runs too). */
function linuxAutoconfig(p: Port): ProbeResult {
  // Existence test through IER.
  const ierSave = p.inb(UART_IER);
  p.outb(UART_IER, 0);
  const ier0 = p.inb(UART_IER) & UART_IER_ALL_INTR;
  p.outb(UART_IER, UART_IER_ALL_INTR);
  const ierF = p.inb(UART_IER) & UART_IER_ALL_INTR;
  p.outb(UART_IER, ierSave);
  if (ier0 !== 0 || ierF !== UART_IER_ALL_INTR) return { type: 'none (IER test failed)' };

  const saveMcr = p.inb(UART_MCR);
  const saveLcr = p.inb(UART_LCR);
  // Loopback test: RTS and OUT2 must come back as CTS and DCD.
  p.outb(UART_MCR, UART_MCR_LOOP | UART_MCR_OUT2 | UART_MCR_RTS);
  const status = p.inb(UART_MSR) & UART_MSR_STATUS_BITS;
  p.outb(UART_MCR, saveMcr);
  if (status !== (UART_MSR_DCD | UART_MSR_CTS)) return { type: 'none (LOOP test failed)' };

  // Zero a possible EFR, then ask the IIR whether FIFOs exist.
  p.outb(UART_LCR, UART_LCR_CONF_MODE_B);
  p.outb(UART_EFR, 0);
  p.outb(UART_LCR, 0);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO);
  let result: ProbeResult;
  switch (p.inb(UART_IIR) & UART_IIR_FIFO_ENABLED) {
    case 0: {
      p.outb(UART_SCR, 0xa5);
      const s1 = p.inb(UART_SCR);
      p.outb(UART_SCR, 0x5a);
      const s2 = p.inb(UART_SCR);
      result = { type: s1 === 0xa5 && s2 === 0x5a ? '16450' : '8250' };
      break;
    }
    case 0x80:
      result = { type: '16550' };
      break;
    case UART_IIR_FIFO_ENABLED:
      result = probe16550a(p);
      break;
    default:
      result = { type: 'unknown' };
  }
  // Put the port back: LCR, MCR, FIFOs cleared, receiver drained, IER off.
  p.outb(UART_LCR, saveLcr);
  p.outb(UART_MCR, saveMcr);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO);
  p.outb(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT);
  p.outb(UART_FCR, 0);
  p.inb(UART_RX);
  p.outb(UART_IER, 0);
  return result;
}

function portOf(uart: Serial8250): Port {
  return { inb: (o) => uart.read(o, 1), outb: (o, v) => uart.write(o, 1, v) };
}

test('Linux autoconfig detects a plain 16550A with a 16-byte FIFO', (t) => {
  const { uart, rd, out } = makeUart();
  const result = linuxAutoconfig(portOf(uart));
  t.deepEqual(result, { type: '16550A', fifoCount: 16 });
  t.deepEqual(out, [], 'the probe transmits nothing: its bytes stay in loopback');
  t.is(rd(UART_LCR), 0);
  t.is(rd(UART_MCR), 0);
  t.is(rd(UART_IER), 0);
  t.is(rd(UART_LSR), UART_LSR_THRE | UART_LSR_TEMT, 'receiver empty, no error left');
  t.is(uart.inputSpace(), Serial8250.RX_FIFO_SIZE);
});

test('Linux autoconfig also works on a port already configured by earlycon (LCR 8N1, MCR DTR|RTS|OUT2)', (t) => {
  const { uart, rd, wr } = makeUart();
  wr(UART_LCR, UART_LCR_CONF_MODE_A | UART_LCR_WLEN8);
  wr(UART_DLL, 1);
  wr(UART_DLM, 0);
  wr(UART_LCR, UART_LCR_WLEN8);
  wr(UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
  t.deepEqual(linuxAutoconfig(portOf(uart)), { type: '16550A', fifoCount: 16 });
  t.is(rd(UART_LCR), UART_LCR_WLEN8);
  t.is(rd(UART_MCR), UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
  wr(UART_LCR, UART_LCR_CONF_MODE_A);
  t.is(rd(UART_DLL) | (rd(UART_DLM) << 8), 1, 'size_fifo restored the divisor');
});

test('the probe replay notices the failure modes it is meant to catch', (t) => {
  // Sanity of this test driver: a port whose offset 2 reads 0 under LCR=0xBF has an EFR.
  const { uart } = makeUart();
  let lcr = 0;
  const efrPort: Port = {
    inb: (o) => (o === UART_EFR && lcr === UART_LCR_CONF_MODE_B ? 0 : uart.read(o, 1)),
    outb: (o, v) => {
      if (o === UART_LCR) lcr = v;
      uart.write(o, 1, v);
    },
  };
  t.regex(linuxAutoconfig(efrPort).type, /EFR-capable/);
  // ...and a receiver that keeps 64 looped bytes is a U6_16550A.
  const { uart: u2 } = makeUart();
  const deep: number[] = [];
  let loop = false;
  const deepPort: Port = {
    inb: (o) => {
      if (loop && o === UART_LSR) return UART_LSR_THRE | UART_LSR_TEMT | (deep.length > 0 ? UART_LSR_DR : 0);
      if (loop && o === UART_RX) return deep.shift() ?? 0;
      return u2.read(o, 1);
    },
    outb: (o, v) => {
      if (o === UART_MCR) loop = (v & UART_MCR_LOOP) !== 0;
      if (loop && o === UART_TX && (u2.read(UART_LCR, 1) & UART_LCR_DLAB) === 0) {
        if (deep.length < 64) deep.push(v);
        return;
      }
      u2.write(o, 1, v);
    },
  };
  t.is(linuxAutoconfig(deepPort).type, 'U6_16550A');
});

test('serial8250_do_startup sequence: clear, interrupt tests, then normal operation', (t) => {
  const { uart, rd, wr, trig, out } = makeUart();
  linuxAutoconfig(portOf(uart));
  uart.enqueueInput(Uint8Array.of(0x30)); // input that arrived before the port was opened
  // Clear FIFOs and any pending interrupt condition.
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  wr(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT);
  wr(UART_FCR, 0);
  rd(UART_LSR);
  rd(UART_RX);
  rd(UART_IIR);
  rd(UART_MSR);
  t.is(rd(UART_LSR), UART_LSR_THRE | UART_LSR_TEMT, 'LSR is not 0xff: the port exists');
  wr(UART_LCR, UART_LCR_WLEN8);
  // THRE re-assertion test.
  wr(UART_IER, UART_IER_THRI);
  const iir1 = rd(UART_IIR);
  wr(UART_IER, 0);
  wr(UART_IER, UART_IER_THRI);
  const iir = rd(UART_IIR);
  wr(UART_IER, 0);
  t.false((iir1 & UART_IIR_NO_INT) === 0 && (iir & UART_IIR_NO_INT) !== 0, 'no UART_BUG_THRE');
  wr(UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
  // TXEN test.
  wr(UART_IER, UART_IER_THRI);
  const lsr = rd(UART_LSR);
  const iir3 = rd(UART_IIR);
  wr(UART_IER, 0);
  t.false((lsr & UART_LSR_TEMT) !== 0 && (iir3 & UART_IIR_NO_INT) !== 0, 'no UART_BUG_TXEN');
  // set_termios programs the FIFO as uart_config[16550A] says, then the port is in use.
  wr(UART_FCR, UART_FCR_ENABLE_FIFO | 0x80);
  t.is(rd(UART_IIR), UART_IIR_FIFO_ENABLED | UART_IIR_NO_INT);
  const before = trig.count;
  wr(UART_IER, UART_IER_THRI | 0x01);
  t.is(trig.count, before + 1, 'start_tx gets its THRE interrupt');
  t.is(rd(UART_IIR) & 0x0f, 0x02);
  for (const c of 'ok\r\n') wr(UART_TX, c.charCodeAt(0));
  t.is(Buffer.from(out).toString(), 'ok\r\n');
});
