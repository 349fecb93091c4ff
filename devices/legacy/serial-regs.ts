/**
 * Register offsets and bits of the 16550A UART, named as in Linux's
 * include/uapi/linux/serial_reg.h so that device code, tests and the guest
 * driver read the same. Facts from the TI/National PC16550D datasheet
 * ("Register Summary"). Offsets are relative to the UART's base port.
 */

// --- Register offsets ---------------------------------------------------------
/** Receiver buffer (read, DLAB=0). */
export const UART_RX = 0;
/** Transmitter holding register (write, DLAB=0). */
export const UART_TX = 0;
/** Divisor latch, low byte (DLAB=1). */
export const UART_DLL = 0;
/** Interrupt enable register (DLAB=0). */
export const UART_IER = 1;
/** Divisor latch, high byte (DLAB=1). */
export const UART_DLM = 1;
/** Interrupt identification register (read). */
export const UART_IIR = 2;
/** FIFO control register (write). */
export const UART_FCR = 2;
/** Enhanced feature register of 16650+ parts: same offset as IIR/FCR, only visible with LCR=0xBF there. */
export const UART_EFR = 2;
/** Line control register. */
export const UART_LCR = 3;
/** Modem control register. */
export const UART_MCR = 4;
/** Line status register (read). */
export const UART_LSR = 5;
/** Modem status register (read). */
export const UART_MSR = 6;
/** Scratch register. */
export const UART_SCR = 7;
/** Number of consecutive ports a 16550A decodes. */
export const UART_PORT_COUNT = 8;

// --- IER -----------------------------------------------------------------------
/** Enable received-data-available interrupt. */
export const UART_IER_RDI = 0x01;
/** Enable transmitter-holding-register-empty interrupt. */
export const UART_IER_THRI = 0x02;
/** Enable receiver-line-status interrupt. */
export const UART_IER_RLSI = 0x04;
/** Enable modem-status interrupt. */
export const UART_IER_MSI = 0x08;
/** The four IER bits a 16550A implements; bits 4-7 read as 0. */
export const UART_IER_ALL_INTR = 0x0f;
/** XScale "UART unit enable": NOT implemented by a 16550A (Linux probes for it). */
export const UART_IER_UUE = 0x40;

// --- IIR -----------------------------------------------------------------------
/** No interrupt pending (bit 0 is active-low). */
export const UART_IIR_NO_INT = 0x01;
/** Modem status interrupt identification. */
export const UART_IIR_MSI = 0x00;
/** Transmitter holding register empty. */
export const UART_IIR_THRI = 0x02;
/** Received data available. */
export const UART_IIR_RDI = 0x04;
/** Receiver line status. */
export const UART_IIR_RLSI = 0x06;
/** Character timeout (FIFO mode). */
export const UART_IIR_RX_TIMEOUT = 0x0c;
/** Interrupt identification field (bits 0-3). */
export const UART_IIR_ID = 0x0f;
/** Both bits set: FIFOs enabled on a 16550A. */
export const UART_IIR_FIFO_ENABLED = 0xc0;
/** 64-byte FIFO indication of a 16750: a 16550A never sets it. */
export const UART_IIR_64BYTE_FIFO = 0x20;

// --- FCR -----------------------------------------------------------------------
export const UART_FCR_ENABLE_FIFO = 0x01;
export const UART_FCR_CLEAR_RCVR = 0x02;
export const UART_FCR_CLEAR_XMIT = 0x04;
export const UART_FCR_DMA_SELECT = 0x08;
/** 16750 "64-byte FIFO" bit: ignored by a 16550A. */
export const UART_FCR7_64BYTE = 0x20;
/** Receiver trigger level field (bits 6-7). */
export const UART_FCR_TRIGGER_MASK = 0xc0;

// --- LCR -----------------------------------------------------------------------
export const UART_LCR_WLEN8 = 0x03;
/** Set break. */
export const UART_LCR_SBC = 0x40;
/** Divisor latch access bit. */
export const UART_LCR_DLAB = 0x80;
/** Linux's "configuration mode A": DLAB set, used to probe for an EFR at offset 2. */
export const UART_LCR_CONF_MODE_A = UART_LCR_DLAB;
/** Linux's "configuration mode B" (0xBF): unlocks the EFR of 16650+ parts, plain DLAB on a 16550A. */
export const UART_LCR_CONF_MODE_B = 0xbf;

// --- MCR -----------------------------------------------------------------------
export const UART_MCR_DTR = 0x01;
export const UART_MCR_RTS = 0x02;
export const UART_MCR_OUT1 = 0x04;
export const UART_MCR_OUT2 = 0x08;
export const UART_MCR_LOOP = 0x10;
/** Bits a 16550A implements; bits 5-7 (AFE and friends on later parts) read as 0. */
export const UART_MCR_WRITABLE = 0x1f;

// --- LSR -----------------------------------------------------------------------
export const UART_LSR_DR = 0x01;
export const UART_LSR_OE = 0x02;
export const UART_LSR_PE = 0x04;
export const UART_LSR_FE = 0x08;
export const UART_LSR_BI = 0x10;
export const UART_LSR_THRE = 0x20;
export const UART_LSR_TEMT = 0x40;
export const UART_LSR_FIFOE = 0x80;
/** The error bits that raise a receiver-line-status interrupt and clear on an LSR read. */
export const UART_LSR_BRK_ERROR_BITS = UART_LSR_OE | UART_LSR_PE | UART_LSR_FE | UART_LSR_BI;

// --- MSR -----------------------------------------------------------------------
export const UART_MSR_DCTS = 0x01;
export const UART_MSR_DDSR = 0x02;
/** Trailing edge of ring indicator. */
export const UART_MSR_TERI = 0x04;
export const UART_MSR_DDCD = 0x08;
export const UART_MSR_CTS = 0x10;
export const UART_MSR_DSR = 0x20;
export const UART_MSR_RI = 0x40;
export const UART_MSR_DCD = 0x80;
export const UART_MSR_ANY_DELTA = 0x0f;
export const UART_MSR_STATUS_BITS = 0xf0;
