/**
 * Field offsets of the state structs, against offsetof() printed from the
 * kernel headers (see state-ioctls.test.ts): each encoder writes a distinct
 * value per field that is read back at the C offset, and each decoder reads
 * it back.
 */
import test from 'ava';
import * as ss from '../../../../lib/kvm/state-structs.js';

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

test('kvm_vcpu_events: every field at its offsetof(), and decode(encode(x)) = x', (t) => {
  const ev: ss.KvmVcpuEvents = {
    exception: { injected: 1, nr: 14, hasErrorCode: 1, pending: 1, errorCode: 0xdead_beef },
    interrupt: { injected: 1, nr: 0x30, soft: 1, shadow: 2 },
    nmi: { injected: 1, pending: 1, masked: 1 },
    sipiVector: 0x9a,
    flags: 0x3f,
    smi: { smm: 1, pending: 1, smmInsideNmi: 1, latchedInit: 1 },
    tripleFaultPending: 1,
    exceptionHasPayload: 1,
    exceptionPayload: 0x1122_3344_5566_7788n,
  };
  const b = ss.encodeVcpuEvents(ev);
  t.is(b.length, 64);
  const d = dv(b);
  t.deepEqual([...b.subarray(0, 4)], [1, 14, 1, 1]); // exception.injected/nr/has_error_code/pending at 0..3
  t.is(d.getUint32(4, true), 0xdead_beef); // exception.error_code at 4
  t.deepEqual([...b.subarray(8, 12)], [1, 0x30, 1, 2]); // interrupt at 8
  t.deepEqual([...b.subarray(12, 15)], [1, 1, 1]); // nmi at 12
  t.is(d.getUint32(16, true), 0x9a); // sipi_vector
  t.is(d.getUint32(20, true), 0x3f); // flags
  t.deepEqual([...b.subarray(24, 28)], [1, 1, 1, 1]); // smi at 24
  t.is(b[28], 1); // triple_fault.pending
  t.is(b[55], 1); // exception_has_payload
  t.is(d.getBigUint64(56, true), 0x1122_3344_5566_7788n); // exception_payload
  t.deepEqual(ss.decodeVcpuEvents(b), ev);
});

test('kvm_debugregs: db[4] at 0, dr6 at 32, dr7 at 40, flags at 48', (t) => {
  const r: ss.KvmDebugregs = { db: [1n, 2n, 3n, 4n], dr6: 0xffff0ff0n, dr7: 0x400n, flags: 0n };
  const b = ss.encodeDebugregs(r);
  t.is(b.length, 128);
  const d = dv(b);
  [1n, 2n, 3n, 4n].forEach((v, i) => t.is(d.getBigUint64(i * 8, true), v));
  t.is(d.getBigUint64(32, true), 0xffff0ff0n);
  t.is(d.getBigUint64(40, true), 0x400n);
  t.deepEqual(ss.decodeDebugregs(b), r);
});

test('kvm_xcrs: nr_xcrs at 0, flags at 4, xcrs[] at 8 in 16-byte entries; nr_xcrs > 16 refused', (t) => {
  const x: ss.KvmXcrs = { flags: 0, xcrs: [{ xcr: 0, value: 0x7n }, { xcr: 1, value: 0x1234n }] };
  const b = ss.encodeXcrs(x);
  t.is(b.length, 392);
  const d = dv(b);
  t.is(d.getUint32(0, true), 2);
  t.is(d.getUint32(8 + 16, true), 1);
  t.is(d.getBigUint64(8 + 16 + 8, true), 0x1234n);
  t.deepEqual(ss.decodeXcrs(b), x);
  d.setUint32(0, 17, true);
  t.throws(() => ss.decodeXcrs(b), { instanceOf: RangeError });
  t.throws(() => ss.encodeXcrs({ flags: 0, xcrs: Array.from({ length: 17 }, () => ({ xcr: 0, value: 0n })) }), { instanceOf: RangeError });
});

test('kvm_pit_state2: channel fields at their offsetof(), flags at 72', (t) => {
  const b = new Uint8Array(ss.KVM_PIT_STATE2_SIZE);
  const d = dv(b);
  const o = ss.KVM_PIT_CHANNEL_STATE_SIZE; // channels[1]
  d.setUint32(o, 0x10000, true); // count
  d.setUint16(o + 4, 0xabcd, true); // latched_count
  b.set([3, 1, 0x35, 2, 4, 0x77, 3, 2, 1, 1], o + 6); // count_latched .. gate
  d.setBigInt64(o + 16, -5n, true); // count_load_time
  d.setUint32(72, 1, true);
  const p = ss.decodePitState2(b);
  t.deepEqual(p.channels[1], {
    count: 0x10000, latchedCount: 0xabcd, countLatched: 3, statusLatched: 1, status: 0x35, readState: 2, writeState: 4,
    writeLatch: 0x77, rwMode: 3, mode: 2, bcd: 1, gate: 1, countLoadTime: -5n,
  });
  t.is(p.flags, 1);
});

test('kvm_clock_data: clock at 0, flags at 8, realtime at 16, host_tsc at 24', (t) => {
  const c: ss.KvmClockData = { clock: 123456789n, flags: 6, realtime: 0x1_0000_0000n, hostTsc: 42n };
  const b = ss.encodeClockData(c);
  t.is(b.length, 48);
  const d = dv(b);
  t.is(d.getBigUint64(0, true), 123456789n);
  t.is(d.getUint32(8, true), 6);
  t.is(d.getBigUint64(16, true), 0x1_0000_0000n);
  t.is(d.getBigUint64(24, true), 42n);
  t.deepEqual(ss.decodeClockData(b), c);
});

test('kvm_irqchip request carries chip_id; kvm_reg_list n at 0, ids from 8; a short buffer is refused', (t) => {
  const chip = ss.irqchipRequest(ss.KVM_IRQCHIP_IOAPIC);
  t.is(chip.length, 520);
  t.is(ss.irqchipId(chip), 2);
  const list = ss.regListRequest(2);
  t.is(list.length, 24);
  t.is(dv(list).getBigUint64(0, true), 2n);
  dv(list).setBigUint64(8, 0x6030000000100000n, true);
  dv(list).setBigUint64(16, 0x6030000000100002n, true);
  t.deepEqual(ss.decodeRegList(list), [0x6030000000100000n, 0x6030000000100002n]);
  dv(list).setBigUint64(0, 3n, true);
  t.throws(() => ss.decodeRegList(list), { instanceOf: RangeError });
});
