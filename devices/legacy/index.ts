/** Legacy devices: the 16550A UART, the i8042 (reset only), the PL031 RTC and flintvm's guest-control ports. */
export { Serial8250, type Serial8250Options } from './serial-8250.js';
export * from './serial-regs.js';
export * from './i8042.js';
export * from './guest-control.js';
export * from './pl031.js';
