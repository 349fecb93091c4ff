/** arm64 KVM encodings, against values from arch/arm64/include/uapi/asm/kvm.h and the Arm ARM. */
import test from 'ava';
import {
  coreRegId, decodeVcpuInit, encodeOneReg, encodeVcpuInit, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2,
  REG_MPIDR_EL1, REG_PC, REG_PSTATE, REG_SP, spiIrqLine, sysRegId, xRegId,
} from '../../../../lib/kvm/arm64.js';

test('core register ids: X0, X30, SP, PC, PSTATE (KVM_REG_ARM64 | U64 | CORE | word offset)', (t) => {
  t.is(xRegId(0), 0x6030000000100000n);
  t.is(xRegId(30), 0x603000000010003cn);
  t.is(REG_SP, 0x603000000010003en);
  t.is(REG_PC, 0x6030000000100040n);
  t.is(REG_PSTATE, 0x6030000000100042n);
  t.throws(() => xRegId(31), { instanceOf: RangeError });
  t.throws(() => coreRegId(4), { instanceOf: RangeError });
});

test('system register ids: MPIDR_EL1 is S3_0_C0_C0_5; CNTVCT_EL0 is S3_3_C14_C0_2', (t) => {
  t.is(REG_MPIDR_EL1, 0x603000000013c005n);
  t.is(sysRegId(3, 3, 14, 0, 2), 0x603000000013df02n);
  t.throws(() => sysRegId(4, 0, 0, 0, 0), { instanceOf: RangeError });
});

test('kvm_vcpu_init: target and feature bits round-trip; out-of-range bits refused', (t) => {
  const b = encodeVcpuInit({ target: 5, features: [KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, 33] });
  t.is(b.length, 32);
  const d = new DataView(b.buffer);
  t.is(d.getUint32(0, true), 5);
  t.is(d.getUint32(4, true), 0b101);
  t.is(d.getUint32(8, true), 0b10);
  t.deepEqual(decodeVcpuInit(b), { target: 5, features: [0, 2, 33] });
  t.throws(() => encodeVcpuInit({ target: 0, features: [224] }), { instanceOf: RangeError });
});

test('kvm_one_reg and KVM_IRQ_LINE SPI numbers', (t) => {
  const b = encodeOneReg(REG_PC, 0x1234n);
  const d = new DataView(b.buffer);
  t.is(d.getBigUint64(0, true), REG_PC);
  t.is(d.getBigUint64(8, true), 0x1234n);
  t.is(spiIrqLine(0), 0x01000020, 'type SPI (1) << 24 | INTID 32');
  t.is(spiIrqLine(16), 0x01000030);
  t.throws(() => spiIrqLine(988), { instanceOf: RangeError });
  t.throws(() => spiIrqLine(-1), { instanceOf: RangeError });
});
