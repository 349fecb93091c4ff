/**
 * decodeExit over hand-built kvm_run pages. Offsets come from offsetof() on
 * struct kvm_run (linux/kvm.h, x86-64), printed by a C program and pinned
 * here, not taken from exit.ts, so a wrong offset there fails.
 */
import test from 'ava';
import * as ex from '../../../../lib/kvm/exit.js';

// offsetof(struct kvm_run, ...)
const IMMEDIATE_EXIT = 1;
const EXIT_REASON = 8;
const IO_DIRECTION = 32;
const IO_SIZE = 33;
const IO_PORT = 34;
const IO_COUNT = 36;
const IO_DATA_OFFSET = 40;
const MMIO_PHYS_ADDR = 32;
const MMIO_DATA = 40;
const MMIO_LEN = 48;
const MMIO_IS_WRITE = 52;
const HW_EXIT_REASON = 32;
const FAIL_ENTRY_REASON = 32;
const FAIL_ENTRY_CPU = 40;
const EX_EXCEPTION = 32;
const EX_ERROR_CODE = 36;
const INTERNAL_SUBERROR = 32;
const INTERNAL_NDATA = 36;
const INTERNAL_DATA = 40;
const SYSTEM_EVENT_TYPE = 32;
/** sizeof(struct kvm_run); the real mapping is a page or more. */
const RUN_SIZE = 4096;

// Exit reasons from linux/kvm.h.
const C_EXITS = {
  KVM_EXIT_UNKNOWN: 0, KVM_EXIT_EXCEPTION: 1, KVM_EXIT_IO: 2, KVM_EXIT_HYPERCALL: 3, KVM_EXIT_DEBUG: 4, KVM_EXIT_HLT: 5,
  KVM_EXIT_MMIO: 6, KVM_EXIT_IRQ_WINDOW_OPEN: 7, KVM_EXIT_SHUTDOWN: 8, KVM_EXIT_FAIL_ENTRY: 9, KVM_EXIT_INTR: 10,
  KVM_EXIT_NMI: 16, KVM_EXIT_INTERNAL_ERROR: 17, KVM_EXIT_SYSTEM_EVENT: 24, KVM_EXIT_IO_IN: 0, KVM_EXIT_IO_OUT: 1,
  KVM_SYSTEM_EVENT_SHUTDOWN: 1, KVM_SYSTEM_EVENT_RESET: 2, KVM_SYSTEM_EVENT_CRASH: 3,
};

/** A zeroed run page with `reason` set, filled in by `fill`. Garbage elsewhere must not matter, so the union tail is 0xAA. */
function page(reason: number, fill: (d: DataView) => void = () => {}): DataView {
  const b = new Uint8Array(RUN_SIZE);
  b.fill(0xaa, 32);
  const d = new DataView(b.buffer);
  d.setUint32(EXIT_REASON, reason, true);
  fill(d);
  return d;
}

test('exit constants and run-page offsets match linux/kvm.h', (t) => {
  for (const [k, v] of Object.entries(C_EXITS)) t.is((ex as unknown as Record<string, number>)[k], v, k);
  t.is(ex.RUN_IMMEDIATE_EXIT, IMMEDIATE_EXIT);
  t.is(ex.RUN_EXIT_REASON, EXIT_REASON);
  t.is(ex.RUN_MMIO_DATA, MMIO_DATA);
  t.is(ex.RUN_REQUEST_INTERRUPT_WINDOW, 0);
});

test('io out: direction, size, port, count and data_offset', (t) => {
  const d = page(C_EXITS.KVM_EXIT_IO, (d) => {
    d.setUint8(IO_DIRECTION, C_EXITS.KVM_EXIT_IO_OUT);
    d.setUint8(IO_SIZE, 2);
    d.setUint16(IO_PORT, 0x3f8, true);
    d.setUint32(IO_COUNT, 7, true);
    d.setBigUint64(IO_DATA_OFFSET, 4096n, true);
  });
  t.deepEqual(ex.decodeExit(d), { kind: 'io', direction: 'out', size: 2, port: 0x3f8, count: 7, dataOffset: 4096 });
});

test('io in: the whole 16-bit port range', (t) => {
  const d = page(C_EXITS.KVM_EXIT_IO, (d) => {
    d.setUint8(IO_DIRECTION, C_EXITS.KVM_EXIT_IO_IN);
    d.setUint8(IO_SIZE, 4);
    d.setUint16(IO_PORT, 0xffff, true);
    d.setUint32(IO_COUNT, 1, true);
    d.setBigUint64(IO_DATA_OFFSET, 0x1000n, true);
  });
  t.deepEqual(ex.decodeExit(d), { kind: 'io', direction: 'in', size: 4, port: 0xffff, count: 1, dataOffset: 0x1000 });
});

test('mmio write: 64-bit phys_addr, len, is_write, data offset', (t) => {
  const d = page(C_EXITS.KVM_EXIT_MMIO, (d) => {
    d.setBigUint64(MMIO_PHYS_ADDR, 0xfeb0_0e50n, true);
    d.setUint32(MMIO_LEN, 4, true);
    d.setUint8(MMIO_IS_WRITE, 1);
  });
  t.deepEqual(ex.decodeExit(d), { kind: 'mmio', address: 0xfeb0_0e50, length: 4, isWrite: true, dataOffset: MMIO_DATA });
});

test('mmio read above 4 GiB', (t) => {
  const d = page(C_EXITS.KVM_EXIT_MMIO, (d) => {
    d.setBigUint64(MMIO_PHYS_ADDR, 0x1_2345_6000n, true);
    d.setUint32(MMIO_LEN, 8, true);
    d.setUint8(MMIO_IS_WRITE, 0);
  });
  t.deepEqual(ex.decodeExit(d), { kind: 'mmio', address: 0x1_2345_6000, length: 8, isWrite: false, dataOffset: MMIO_DATA });
});

test('hlt and shutdown', (t) => {
  t.deepEqual(ex.decodeExit(page(C_EXITS.KVM_EXIT_HLT)), { kind: 'hlt' });
  t.deepEqual(ex.decodeExit(page(C_EXITS.KVM_EXIT_SHUTDOWN)), { kind: 'shutdown' });
});

test('system events: shutdown, reset, crash, other', (t) => {
  const ev = (type: number) => ex.decodeExit(page(C_EXITS.KVM_EXIT_SYSTEM_EVENT, (d) => d.setUint32(SYSTEM_EVENT_TYPE, type, true)));
  t.deepEqual(ev(C_EXITS.KVM_SYSTEM_EVENT_SHUTDOWN), { kind: 'system-event', type: 'shutdown', rawType: 1 });
  t.deepEqual(ev(C_EXITS.KVM_SYSTEM_EVENT_RESET), { kind: 'system-event', type: 'reset', rawType: 2 });
  t.deepEqual(ev(C_EXITS.KVM_SYSTEM_EVENT_CRASH), { kind: 'system-event', type: 'crash', rawType: 3 });
  t.deepEqual(ev(5), { kind: 'system-event', type: 'other', rawType: 5 });
});

test('internal error: suberror and data[ndata]', (t) => {
  const d = page(C_EXITS.KVM_EXIT_INTERNAL_ERROR, (d) => {
    d.setUint32(INTERNAL_SUBERROR, 1, true);
    d.setUint32(INTERNAL_NDATA, 3, true);
    for (let i = 0; i < 16; i++) d.setBigUint64(INTERNAL_DATA + i * 8, 0x100n + BigInt(i), true);
  });
  t.deepEqual(ex.decodeExit(d), { kind: 'internal-error', suberror: 1, data: [0x100n, 0x101n, 0x102n] });
});

test('internal error: ndata is clamped to the 16 slots of the union', (t) => {
  const d = page(C_EXITS.KVM_EXIT_INTERNAL_ERROR, (d) => {
    d.setUint32(INTERNAL_SUBERROR, 3, true);
    d.setUint32(INTERNAL_NDATA, 1000, true);
    for (let i = 0; i < 16; i++) d.setBigUint64(INTERNAL_DATA + i * 8, BigInt(i), true);
  });
  const e = ex.decodeExit(d);
  if (e.kind !== 'internal-error') return t.fail(`kind ${e.kind}`);
  t.is(e.suberror, 3);
  t.is(e.data.length, 16);
  t.deepEqual(e.data, Array.from({ length: 16 }, (_, i) => BigInt(i)));
  // Even a page-sized claim cannot read past the union.
  const huge = page(C_EXITS.KVM_EXIT_INTERNAL_ERROR, (d) => d.setUint32(INTERNAL_NDATA, 0xffff_ffff, true));
  const he = ex.decodeExit(huge);
  t.is(he.kind === 'internal-error' ? he.data.length : -1, 16);
});

test('internal error with ndata 0 has no data', (t) => {
  const d = page(C_EXITS.KVM_EXIT_INTERNAL_ERROR, (d) => { d.setUint32(INTERNAL_SUBERROR, 2, true); d.setUint32(INTERNAL_NDATA, 0, true); });
  t.deepEqual(ex.decodeExit(d), { kind: 'internal-error', suberror: 2, data: [] });
});

test('fail entry: hardware reason and cpu', (t) => {
  const d = page(C_EXITS.KVM_EXIT_FAIL_ENTRY, (d) => {
    d.setBigUint64(FAIL_ENTRY_REASON, 0x8000_0021n, true);
    d.setUint32(FAIL_ENTRY_CPU, 3, true);
  });
  t.deepEqual(ex.decodeExit(d), { kind: 'fail-entry', hardwareReason: 0x8000_0021n, cpu: 3 });
});

test('exception: vector and error code', (t) => {
  const d = page(C_EXITS.KVM_EXIT_EXCEPTION, (d) => {
    d.setUint32(EX_EXCEPTION, 13, true);
    d.setUint32(EX_ERROR_CODE, 0xfff8, true);
  });
  t.deepEqual(ex.decodeExit(d), { kind: 'exception', exception: 13, errorCode: 0xfff8 });
});

test('unknown: hardware exit reason', (t) => {
  const d = page(C_EXITS.KVM_EXIT_UNKNOWN, (d) => d.setBigUint64(HW_EXIT_REASON, 0xffff_ffff_ffff_fff0n, true));
  t.deepEqual(ex.decodeExit(d), { kind: 'unknown', hardwareReason: 0xffff_ffff_ffff_fff0n });
});

test('intr, irq-window-open and debug', (t) => {
  t.deepEqual(ex.decodeExit(page(C_EXITS.KVM_EXIT_INTR)), { kind: 'intr' });
  t.deepEqual(ex.decodeExit(page(C_EXITS.KVM_EXIT_IRQ_WINDOW_OPEN)), { kind: 'irq-window-open' });
  t.deepEqual(ex.decodeExit(page(C_EXITS.KVM_EXIT_DEBUG)), { kind: 'debug' });
});

test('reasons flintvm does not model come out as other with the raw number', (t) => {
  for (const reason of [C_EXITS.KVM_EXIT_HYPERCALL, C_EXITS.KVM_EXIT_NMI, 11, 35, 0xffff_ffff]) {
    t.deepEqual(ex.decodeExit(page(reason)), { kind: 'other', reason });
  }
});

test('the exit reason is read as u32 little-endian at offset 8, not from other header bytes', (t) => {
  const d = page(C_EXITS.KVM_EXIT_HLT);
  d.setUint8(IMMEDIATE_EXIT, 1);
  d.setUint8(0, 1); // request_interrupt_window
  d.setUint32(12, 0xffff_ffff, true); // padding after exit_reason
  t.deepEqual(ex.decodeExit(d), { kind: 'hlt' });
});
