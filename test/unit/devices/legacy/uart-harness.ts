/** Shared set-up for the UART tests: a Serial8250 with a recording trigger and output. */
import { RecordingTrigger } from '../../../../lib/interrupt/trigger.js';
import { Serial8250, type Serial8250Options } from '../../../../devices/legacy/serial-8250.js';

export interface UartHarness {
  readonly uart: Serial8250;
  readonly trig: RecordingTrigger;
  /** Every byte the UART transmitted, in order. */
  readonly out: number[];
  readonly state: SharedArrayBuffer;
  /** One-byte register read. */
  rd(offset: number): number;
  /** One-byte register write. */
  wr(offset: number, value: number): void;
}

export function makeUart(
  state: SharedArrayBuffer = Serial8250.createState(),
  extra: Partial<Serial8250Options> = {},
): UartHarness {
  const trig = new RecordingTrigger();
  const out: number[] = [];
  const uart = new Serial8250(state, {
    trigger: trig,
    out: (bytes) => {
      for (const b of bytes) out.push(b);
    },
    ...extra,
  });
  return {
    uart,
    trig,
    out,
    state,
    rd: (offset) => uart.read(offset, 1),
    wr: (offset, value) => uart.write(offset, 1, value),
  };
}
