import test from 'ava';
import fc from 'fast-check';
import { ConfigError } from '../../../../lib/errors.js';
import { RecordingTrigger } from '../../../../lib/interrupt/trigger.js';
import { Serial8250 } from '../../../../devices/legacy/serial-8250.js';
import {
  UART_DLL, UART_DLM, UART_FCR, UART_FCR_CLEAR_RCVR, UART_FCR_ENABLE_FIFO, UART_FCR7_64BYTE, UART_IER,
  UART_IER_ALL_INTR, UART_IER_MSI, UART_IER_RDI, UART_IER_RLSI, UART_IER_THRI, UART_IIR, UART_IIR_FIFO_ENABLED,
  UART_IIR_MSI, UART_IIR_NO_INT, UART_IIR_RDI, UART_IIR_RLSI, UART_IIR_THRI, UART_LCR, UART_LCR_DLAB,
  UART_LCR_WLEN8, UART_LSR, UART_LSR_DR, UART_LSR_OE, UART_LSR_TEMT, UART_LSR_THRE, UART_MCR, UART_MCR_DTR,
  UART_MCR_LOOP, UART_MCR_OUT1, UART_MCR_OUT2, UART_MCR_RTS, UART_MSR, UART_MSR_CTS, UART_MSR_DCD,
  UART_MSR_DCTS, UART_MSR_DDCD, UART_MSR_DDSR, UART_MSR_DSR, UART_MSR_RI, UART_MSR_TERI, UART_RX, UART_SCR,
  UART_TX,
} from '../../../../devices/legacy/serial-regs.js';
import { makeUart } from './uart-harness.js';

const BOTH_EMPTY = UART_LSR_THRE | UART_LSR_TEMT;
const bytes = (...b: number[]) => Uint8Array.from(b);

test('reset values: LSR THRE|TEMT, IIR no interrupt, modem inputs connected', (t) => {
  const { rd, trig, out } = makeUart();
  t.is(rd(UART_LSR), 0x60);
  t.is(rd(UART_IIR), 0x01);
  t.is(rd(UART_IER), 0);
  t.is(rd(UART_LCR), 0);
  t.is(rd(UART_MCR), 0);
  t.is(rd(UART_MSR), UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS);
  t.is(rd(UART_SCR), 0);
  t.is(rd(UART_RX), 0, 'empty receiver reads 0');
  t.is(trig.count, 0);
  t.deepEqual(out, []);
});

test('DLAB switches offsets 0/1 to the divisor latch and back', (t) => {
  const { rd, wr, out } = makeUart();
  wr(UART_IER, UART_IER_RDI);
  wr(UART_LCR, UART_LCR_DLAB | UART_LCR_WLEN8);
  t.is(rd(UART_DLL), 12, 'default divisor 12 (9600 baud)');
  t.is(rd(UART_DLM), 0);
  wr(UART_DLL, 0x01);
  wr(UART_DLM, 0x02);
  t.is(rd(UART_DLL), 0x01);
  t.is(rd(UART_DLM), 0x02);
  t.deepEqual(out, [], 'a DLL write is not transmitted');
  t.is(rd(UART_LCR), UART_LCR_DLAB | UART_LCR_WLEN8);
  wr(UART_LCR, UART_LCR_WLEN8);
  t.is(rd(UART_IER), UART_IER_RDI, 'IER kept while DLAB was set');
  wr(UART_TX, 0x41);
  t.deepEqual(out, [0x41]);
  wr(UART_LCR, UART_LCR_DLAB);
  t.is(rd(UART_DLL), 0x01, 'divisor kept');
  t.is(rd(UART_DLM), 0x02);
});

test('scratch register holds any byte', (t) => {
  const { rd, wr } = makeUart();
  for (const v of [0xa5, 0x5a, 0x00, 0xff]) {
    wr(UART_SCR, v);
    t.is(rd(UART_SCR), v);
  }
});

test('IER keeps only its four interrupt bits', (t) => {
  const { rd, wr } = makeUart();
  wr(UART_IER, 0xff);
  t.is(rd(UART_IER), UART_IER_ALL_INTR);
});

test('FCR: FIFO enable shows as IIR bits 6-7, never the 16750 64-byte bit', (t) => {
  const { rd, wr } = makeUart();
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  t.is(rd(UART_IIR), UART_IIR_FIFO_ENABLED | UART_IIR_NO_INT);
  wr(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
  t.is(rd(UART_IIR), 0xc1);
  wr(UART_LCR, UART_LCR_DLAB);
  wr(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
  t.is(rd(UART_IIR), 0xc1, 'FCR and IIR do not depend on DLAB');
  wr(UART_LCR, 0);
  wr(UART_FCR, 0);
  t.is(rd(UART_IIR), UART_IIR_NO_INT);
});

test('FCR: CLEAR_RCVR and toggling the FIFO enable empty the receiver', (t) => {
  const { uart, rd, wr } = makeUart();
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  t.is(uart.enqueueInput(bytes(1, 2, 3)), 3);
  wr(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR);
  t.is(rd(UART_LSR) & UART_LSR_DR, 0);
  t.is(uart.inputSpace(), Serial8250.RX_FIFO_SIZE);
  uart.enqueueInput(bytes(4));
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  t.is(rd(UART_LSR) & UART_LSR_DR, UART_LSR_DR, 'rewriting the same enable keeps data');
  wr(UART_FCR, 0);
  t.is(rd(UART_LSR) & UART_LSR_DR, 0, 'disabling the FIFO resets it');
});

test('THR bytes go to out, one reused buffer, no interrupt without THRI', (t) => {
  const seen: Uint8Array[] = [];
  const got: number[] = [];
  const trig = new RecordingTrigger();
  const uart = new Serial8250(Serial8250.createState(), {
    trigger: trig,
    out: (b) => {
      seen.push(b);
      got.push(...b);
    },
  });
  for (const c of 'hello') uart.write(UART_TX, 1, c.charCodeAt(0));
  t.is(Buffer.from(got).toString(), 'hello');
  t.true(seen.every((b) => b === seen[0] && b.length === 1), 'same 1-byte array every time');
  t.is(uart.read(UART_LSR, 1), BOTH_EMPTY, 'transmitter is empty right after each write');
  t.is(trig.count, 0);
  t.is(uart.read(UART_IIR, 1), UART_IIR_NO_INT);
});

test('THRE interrupt: raised when THRI goes 0->1, cleared by IIR read, re-armed by each THR write', (t) => {
  const { rd, wr, trig } = makeUart();
  wr(UART_IER, UART_IER_THRI);
  t.is(trig.count, 1, 'enabling THRI with THR empty interrupts at once');
  t.is(rd(UART_IIR), UART_IIR_THRI);
  t.is(rd(UART_IIR), UART_IIR_NO_INT, 'reading IIR while it names THRE clears THRE');
  t.is(rd(UART_LSR), BOTH_EMPTY, 'LSR still says empty');
  wr(UART_TX, 0x31);
  t.is(trig.count, 2, 'a THR write re-arms THRE');
  wr(UART_TX, 0x32);
  t.is(trig.count, 2, 'still pending from the previous write: no new edge');
  t.is(rd(UART_IIR), UART_IIR_THRI);
  wr(UART_IER, UART_IER_THRI);
  t.is(trig.count, 2, 'rewriting THRI=1 is not a 0->1 transition');
  wr(UART_IER, 0);
  t.is(rd(UART_IIR), UART_IIR_NO_INT);
  wr(UART_TX, 0x33);
  t.is(trig.count, 2, 'no THRE interrupt while THRI is off');
  wr(UART_IER, UART_IER_THRI);
  t.is(trig.count, 3);
  t.is(rd(UART_IIR), UART_IIR_THRI);
});

test('Linux startup THRE test: THRE re-asserts after IER is toggled (no UART_BUG_THRE)', (t) => {
  const { rd, wr } = makeUart();
  wr(UART_IER, UART_IER_THRI);
  const iir1 = rd(UART_IIR);
  wr(UART_IER, 0);
  wr(UART_IER, UART_IER_THRI);
  const iir = rd(UART_IIR);
  wr(UART_IER, 0);
  t.is(iir1 & UART_IIR_NO_INT, 0);
  t.is(iir & UART_IIR_NO_INT, 0, 'a working 16550 re-asserts THRE');
  // The UART_BUG_TXEN test: with THRI set, LSR says TEMT and IIR must not say "no interrupt".
  wr(UART_IER, UART_IER_THRI);
  const lsr = rd(UART_LSR);
  const iir2 = rd(UART_IIR);
  wr(UART_IER, 0);
  t.truthy(lsr & UART_LSR_TEMT);
  t.is(iir2 & UART_IIR_NO_INT, 0);
});

test('RX interrupt on enqueueInput with RDI; bytes in order; cleared when drained', (t) => {
  const { uart, rd, wr, trig } = makeUart();
  wr(UART_IER, UART_IER_RDI);
  t.is(trig.count, 0);
  t.is(uart.enqueueInput(bytes(0x61, 0x62, 0x63)), 3);
  t.is(trig.count, 1);
  t.is(uart.enqueueInput(bytes(0x64)), 1);
  t.is(trig.count, 1, 'data already pending: no new edge');
  t.is(rd(UART_IIR), UART_IIR_RDI);
  t.is(rd(UART_LSR), BOTH_EMPTY | UART_LSR_DR);
  t.deepEqual([rd(UART_RX), rd(UART_RX), rd(UART_RX)], [0x61, 0x62, 0x63]);
  t.is(rd(UART_IIR), UART_IIR_RDI, 'one byte left');
  t.is(rd(UART_RX), 0x64);
  t.is(rd(UART_IIR), UART_IIR_NO_INT);
  t.is(rd(UART_LSR), BOTH_EMPTY);
  uart.enqueueInput(bytes(0x65));
  t.is(trig.count, 2, 'new data after a drain interrupts again');
  t.is(uart.enqueueInput(new Uint8Array(0)), 0);
  t.is(trig.count, 2);
});

test('RX without RDI: no interrupt until RDI is enabled, then one', (t) => {
  const { uart, rd, wr, trig } = makeUart();
  uart.enqueueInput(bytes(1));
  t.is(trig.count, 0);
  t.is(rd(UART_IIR), UART_IIR_NO_INT);
  t.is(rd(UART_LSR) & UART_LSR_DR, UART_LSR_DR, 'LSR shows the data anyway (polled mode)');
  wr(UART_IER, UART_IER_RDI);
  t.is(trig.count, 1, 'enabling RDI with data waiting interrupts');
  t.is(rd(UART_IIR), UART_IIR_RDI);
});

test('FIFO overflow: the 65th byte is refused, space comes back as the guest reads', (t) => {
  const { uart, rd, wr, trig } = makeUart();
  wr(UART_IER, UART_IER_RDI | UART_IER_RLSI);
  const input = Uint8Array.from({ length: 65 }, (_, i) => i);
  t.is(uart.enqueueInput(input), 64);
  t.is(uart.inputSpace(), 0);
  t.is(uart.enqueueInput(bytes(0xee)), 0);
  t.is(trig.count, 1);
  t.is(rd(UART_LSR) & UART_LSR_OE, 0, 'host input never overruns: it is refused instead');
  t.is(rd(UART_RX), 0);
  t.is(uart.inputSpace(), 1);
  t.is(uart.enqueueInput(input.subarray(64)), 1);
  const rest: number[] = [];
  while (rd(UART_LSR) & UART_LSR_DR) rest.push(rd(UART_RX));
  t.deepEqual(rest, Array.from({ length: 64 }, (_, i) => i + 1));
  t.is(trig.count, 1);
});

test('onInputSpace: called once when the guest drains the FIFO after a refusal', (t) => {
  let notices = 0;
  const { uart, rd } = makeUart(undefined, { onInputSpace: () => notices++ });
  uart.enqueueInput(new Uint8Array(10));
  rd(UART_RX);
  t.is(notices, 0, 'nothing was refused');
  while (rd(UART_LSR) & UART_LSR_DR) rd(UART_RX);
  t.is(notices, 0);
  t.is(uart.enqueueInput(new Uint8Array(70)), 64);
  for (let i = 0; i < 63; i++) rd(UART_RX);
  t.is(notices, 0, 'not until empty');
  rd(UART_RX);
  t.is(notices, 1);
  rd(UART_RX);
  rd(UART_LSR);
  t.is(notices, 1, 'once per refusal');
});

test('loopback: TX goes to RX, not out; host input is refused meanwhile', (t) => {
  const { uart, rd, wr, out, trig } = makeUart();
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  wr(UART_MCR, UART_MCR_LOOP);
  wr(UART_IER, UART_IER_RDI);
  wr(UART_TX, 0x5a);
  t.is(trig.count, 1, 'looped byte raises RDI');
  wr(UART_TX, 0xa5);
  t.deepEqual(out, []);
  t.is(uart.enqueueInput(bytes(1)), 0);
  t.is(uart.inputSpace(), 0);
  t.is(rd(UART_IIR), UART_IIR_FIFO_ENABLED | UART_IIR_RDI);
  t.is(rd(UART_RX), 0x5a);
  t.is(rd(UART_RX), 0xa5);
  wr(UART_MCR, 0);
  t.is(uart.inputSpace(), 64);
  wr(UART_TX, 0x21);
  t.deepEqual(out, [0x21]);
});

test('loopback: the receiver keeps 16 bytes with FIFOs on, 1 without; the rest overruns (LSR.OE)', (t) => {
  const { rd, wr } = makeUart();
  wr(UART_MCR, UART_MCR_LOOP);
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  for (let i = 0; i < 20; i++) wr(UART_TX, i);
  t.is(rd(UART_LSR), BOTH_EMPTY | UART_LSR_DR | UART_LSR_OE);
  t.is(rd(UART_LSR), BOTH_EMPTY | UART_LSR_DR, 'reading LSR clears OE');
  const got: number[] = [];
  while (rd(UART_LSR) & UART_LSR_DR) got.push(rd(UART_RX));
  t.deepEqual(got, Array.from({ length: 16 }, (_, i) => i), 'the overrunning characters are the ones lost');
  wr(UART_FCR, 0);
  wr(UART_TX, 7);
  wr(UART_TX, 8);
  t.is(rd(UART_LSR), BOTH_EMPTY | UART_LSR_DR | UART_LSR_OE);
  t.is(rd(UART_RX), 7);
  t.is(rd(UART_LSR), BOTH_EMPTY);
});

test('loopback: MCR outputs drive MSR inputs (DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD) with deltas', (t) => {
  const { rd, wr } = makeUart();
  rd(UART_MSR);
  wr(UART_MCR, UART_MCR_LOOP);
  t.is(rd(UART_MSR), UART_MSR_DCTS | UART_MSR_DDSR | UART_MSR_DDCD, 'inputs fell from connected to 0');
  t.is(rd(UART_MSR), 0, 'deltas clear on read');
  const cases: Array<[number, number]> = [
    [UART_MCR_DTR, UART_MSR_DSR],
    [UART_MCR_RTS, UART_MSR_CTS],
    [UART_MCR_OUT1, UART_MSR_RI],
    [UART_MCR_OUT2, UART_MSR_DCD],
  ];
  for (const [mcr, msr] of cases) {
    wr(UART_MCR, UART_MCR_LOOP | mcr);
    t.is(rd(UART_MSR) & 0xf0, msr, `MCR 0x${mcr.toString(16)}`);
    wr(UART_MCR, UART_MCR_LOOP);
    rd(UART_MSR);
  }
  // Linux's autoconfig LOOP test: MCR = LOOP|OUT2|RTS must read back DCD|CTS.
  wr(UART_MCR, UART_MCR_LOOP | UART_MCR_OUT2 | UART_MCR_RTS);
  t.is(rd(UART_MSR) & 0xf0, UART_MSR_DCD | UART_MSR_CTS);
  // RI reports only its trailing edge.
  wr(UART_MCR, UART_MCR_LOOP | UART_MCR_OUT1);
  t.is(rd(UART_MSR) & 0x0f, UART_MSR_DCTS | UART_MSR_DDCD, 'RI rising sets no delta');
  wr(UART_MCR, UART_MCR_LOOP);
  t.is(rd(UART_MSR), UART_MSR_TERI);
  wr(UART_MCR, 0);
  t.is(rd(UART_MSR), UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS | UART_MSR_DCTS | UART_MSR_DDSR | UART_MSR_DDCD);
  wr(UART_MCR, 0xff);
  t.is(rd(UART_MCR), 0x1f, 'MCR bits 5-7 do not exist on a 16550A');
});

test('modem status interrupt when MSI is enabled and an input changes', (t) => {
  const { rd, wr, trig } = makeUart();
  wr(UART_IER, UART_IER_MSI);
  t.is(trig.count, 0);
  wr(UART_MCR, UART_MCR_LOOP | UART_MCR_OUT2 | UART_MCR_RTS | UART_MCR_DTR);
  t.is(trig.count, 0, 'DTR/RTS/OUT2 looped back keep DSR/CTS/DCD up: no input changed');
  t.is(rd(UART_IIR), UART_IIR_NO_INT);
  wr(UART_MCR, UART_MCR_LOOP);
  t.is(trig.count, 1);
  t.is(rd(UART_IIR), UART_IIR_MSI);
  t.is(rd(UART_MSR), UART_MSR_DCTS | UART_MSR_DDSR | UART_MSR_DDCD);
  t.is(rd(UART_IIR), UART_IIR_NO_INT);
});

test('IIR priority: line status > received data > THR empty > modem status; each clears its own way', (t) => {
  const { rd, wr, trig } = makeUart();
  wr(UART_FCR, UART_FCR_ENABLE_FIFO);
  wr(UART_MCR, UART_MCR_LOOP); // MSR inputs change: modem status pending (masked for now)
  t.is(trig.count, 0);
  for (let i = 0; i < 17; i++) wr(UART_TX, i); // 16 kept, 1 overrun: RLS + RDA; THRE armed? no: THRI off
  wr(UART_IER, UART_IER_ALL_INTR);
  t.is(trig.count, 1, 'one edge for the sources that IER unmasked together');
  const fifo = UART_IIR_FIFO_ENABLED;
  t.is(rd(UART_IIR), fifo | UART_IIR_RLSI);
  t.is(rd(UART_LSR) & UART_LSR_OE, UART_LSR_OE);
  t.is(rd(UART_IIR), fifo | UART_IIR_RDI);
  for (let i = 0; i < 16; i++) rd(UART_RX);
  t.is(rd(UART_IIR), fifo | UART_IIR_THRI);
  t.is(rd(UART_IIR), fifo | UART_IIR_MSI, 'the THRE read cleared THRE');
  rd(UART_MSR);
  t.is(rd(UART_IIR), fifo | UART_IIR_NO_INT);
  t.is(trig.count, 1);
});

test('interrupt count is exact over a scripted session', (t) => {
  const { uart, rd, wr, trig } = makeUart();
  const expect = (n: number, why: string) => t.is(trig.count, n, why);
  wr(UART_LCR, UART_LCR_WLEN8);
  wr(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR);
  wr(UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
  expect(0, 'set-up');
  wr(UART_IER, UART_IER_RDI | UART_IER_RLSI);
  expect(0, 'nothing pending');
  uart.enqueueInput(bytes(1, 2));
  expect(1, 'rx');
  rd(UART_IIR);
  rd(UART_RX);
  uart.enqueueInput(bytes(3));
  expect(1, 'rx while data still pending');
  rd(UART_RX);
  rd(UART_RX);
  rd(UART_IIR);
  wr(UART_IER, UART_IER_RDI | UART_IER_RLSI | UART_IER_THRI);
  expect(2, 'start tx');
  rd(UART_IIR);
  for (let i = 0; i < 16; i++) wr(UART_TX, 0x40 + i);
  expect(3, 'first THR write of a batch');
  rd(UART_IIR);
  wr(UART_TX, 0x50);
  expect(4, 'next batch');
  wr(UART_IER, UART_IER_RDI | UART_IER_RLSI);
  expect(4, 'stop tx');
  uart.enqueueInput(bytes(4));
  expect(5, 'rx again');
  wr(UART_IER, UART_IER_RDI | UART_IER_RLSI | UART_IER_THRI);
  expect(6, 'THRE is a new source even while RDA is pending');
  rd(UART_IIR);
  t.is(rd(UART_IIR), UART_IIR_FIFO_ENABLED | UART_IIR_RDI, 'RDA outranks THRE, which stays pending');
  rd(UART_RX);
  t.is(rd(UART_IIR), UART_IIR_FIFO_ENABLED | UART_IIR_THRI);
  expect(6, 'reads never raise');
});

test('two instances over one state behave as one device', (t) => {
  const a = makeUart();
  const b = makeUart(a.state);
  a.wr(UART_SCR, 0x77);
  t.is(b.rd(UART_SCR), 0x77);
  a.wr(UART_LCR, UART_LCR_DLAB);
  b.wr(UART_DLL, 3);
  t.is(a.rd(UART_DLL), 3);
  a.wr(UART_LCR, 0);
  a.wr(UART_IER, UART_IER_RDI);
  b.uart.enqueueInput(bytes(9, 8));
  t.is(b.trig.count, 1, 'the instance that caused the edge raises it');
  t.is(a.trig.count, 0);
  t.is(a.rd(UART_RX), 9);
  t.is(b.rd(UART_RX), 8);
  t.is(a.rd(UART_LSR) & UART_LSR_DR, 0);
  a.wr(UART_TX, 0x41);
  b.wr(UART_TX, 0x42);
  t.deepEqual([a.out, b.out], [[0x41], [0x42]], 'each byte goes to the writing instance\'s sink');
  b.wr(UART_IER, UART_IER_THRI);
  t.is(a.rd(UART_IIR), UART_IIR_THRI);
  t.is(b.rd(UART_IIR), UART_IIR_NO_INT, 'the IIR read through A cleared THRE for B too');
  t.is(a.uart.inputSpace(), b.uart.inputSpace());
});

test('guest oddities are ignored: wide accesses use the low byte, read-only and unknown offsets', (t) => {
  const { uart, rd, out } = makeUart();
  uart.write(UART_SCR, 4, 0x1234_5678);
  t.is(rd(UART_SCR), 0x78);
  t.is(uart.read(UART_SCR, 2), 0x78, 'wide read gives the register byte');
  uart.write(UART_TX, 2, 0x4142);
  t.deepEqual(out, [0x42]);
  uart.write(UART_LSR, 1, 0);
  uart.write(UART_MSR, 1, 0);
  t.is(rd(UART_LSR), BOTH_EMPTY);
  t.is(rd(UART_MSR), UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS);
  t.is(uart.read(8, 1), 0xff);
  t.is(uart.read(-1, 1), 0xff);
  t.is(uart.read(1.5, 1), 0xff);
  t.notThrows(() => {
    uart.write(8, 1, 1);
    uart.write(Number.NaN, 1, Number.NaN);
    uart.write(UART_SCR, 0, -1);
  });
  t.is(rd(UART_SCR), 0xff);
});

test('property: no access sequence throws or breaks the invariants', (t) => {
  const access = fc.record({
    write: fc.boolean(),
    offset: fc.integer({ min: -1, max: 9 }),
    size: fc.constantFrom(1, 2, 4, 8),
    value: fc.integer({ min: -0x8000_0000, max: 0xffff_ffff }),
    input: fc.integer({ min: 0, max: 80 }),
  });
  fc.assert(
    fc.property(fc.array(access, { maxLength: 200 }), (seq) => {
      const { uart } = makeUart();
      for (const a of seq) {
        if (a.input > 70) uart.enqueueInput(new Uint8Array(a.input - 70));
        if (a.write) uart.write(a.offset, a.size, a.value);
        else {
          const v = uart.read(a.offset, a.size);
          if (!(Number.isInteger(v) && v >= 0 && v <= 0xff)) return false;
        }
        const space = uart.inputSpace();
        if (space < 0 || space > Serial8250.RX_FIFO_SIZE) return false;
      }
      const lcr = uart.read(UART_LCR, 1);
      uart.write(UART_LCR, 1, lcr & ~UART_LCR_DLAB);
      const iir = uart.read(UART_IIR, 1);
      const lsr = uart.read(UART_LSR, 1);
      return [0x01, 0x00, 0x02, 0x04, 0x06].includes(iir & 0x3f) && (iir & 0x30) === 0 &&
        (lsr & BOTH_EMPTY) === BOTH_EMPTY;
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('constructor rejects a buffer not made by createState', (t) => {
  const opts = { trigger: new RecordingTrigger(), out: () => {} };
  t.throws(() => new Serial8250(new SharedArrayBuffer(Serial8250.STATE_BYTES), opts), { instanceOf: ConfigError });
  t.throws(() => new Serial8250(new SharedArrayBuffer(8), opts), { instanceOf: ConfigError });
  t.throws(() => new Serial8250(new ArrayBuffer(Serial8250.STATE_BYTES) as unknown as SharedArrayBuffer, opts),
    { instanceOf: ConfigError });
  t.notThrows(() => new Serial8250(Serial8250.createState(), opts));
});

test('an exception from out propagates but leaves the lock free and THRE armed', (t) => {
  const trig = new RecordingTrigger();
  const state = Serial8250.createState();
  const bad = new Serial8250(state, { trigger: trig, out: () => { throw new Error('sink broke'); } });
  const good = makeUart(state);
  good.wr(UART_IER, UART_IER_THRI);
  good.rd(UART_IIR);
  t.throws(() => bad.write(UART_TX, 1, 0x41), { message: 'sink broke' });
  t.is(good.rd(UART_IIR), UART_IIR_THRI, 'device still usable: the lock was released');
});

test('RLS interrupt alone: IIR_RLSI until LSR is read', (t) => {
  const { rd, wr, trig } = makeUart();
  wr(UART_MCR, UART_MCR_LOOP);
  wr(UART_IER, UART_IER_RLSI);
  wr(UART_TX, 1);
  t.is(trig.count, 0, 'one byte fits the character-mode receiver');
  wr(UART_TX, 2);
  t.is(trig.count, 1);
  t.is(rd(UART_IIR), UART_IIR_RLSI);
  t.is(rd(UART_IIR), UART_IIR_RLSI, 'IIR read does not clear RLS');
  rd(UART_LSR);
  t.is(rd(UART_IIR), UART_IIR_NO_INT);
});
