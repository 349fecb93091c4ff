/** arm64 state encodings and the validation of saved arm64 vCPU state (no KVM needed). */
import test from 'ava';
import {
  cpuSysregAttr, distRegAttr, gicdRanges, GICR_RANGES, ICC_REGS, levelInfoAttr, oneRegSize, redistRegAttr, vgicMpidr,
} from '../../../../lib/kvm/arm64-state.js';
import { REG_MPIDR_EL1, REG_PC, xRegId } from '../../../../lib/kvm/arm64.js';
import { SnapshotStateError } from '../../../../lib/errors.js';
import {
  checkArm64VcpuState, KVM_REG_ARM_TIMER_CNT, KVM_REG_ARM_TIMER_CTL, KVM_REG_ARM_TIMER_CVAL, savedMpidr, type Arm64VcpuState,
} from '../../../../arch/arm64/vcpu-state.js';
import { toHex64 } from '../../../../lib/kvm/state-json.js';

/** A 128-bit FP/SIMD register id (KVM_REG_ARM64 | KVM_REG_SIZE_U128 | CORE | offset of vregs[0]). */
const V0 = 0x6040000000100054n;
/** A 32-bit register id (FPSR: KVM_REG_SIZE_U32). */
const FPSR = 0x60200000001000d4n;

test('oneRegSize reads the size field: U32, U64, U128; an undefined size is refused', (t) => {
  t.is(oneRegSize(FPSR), 4);
  t.is(oneRegSize(REG_PC), 8);
  t.is(oneRegSize(V0), 16);
  t.is(oneRegSize(0x6080000000000000n), 256, 'U2048 (SVE Z register)');
  t.throws(() => oneRegSize(0x6090000000000000n), { instanceOf: RangeError });
});

test('timer register ids follow asm/kvm.h (CNT and CVAL keep their historical swapped encodings)', (t) => {
  t.is(KVM_REG_ARM_TIMER_CTL, 0x603000000013df19n);
  t.is(KVM_REG_ARM_TIMER_CNT, 0x603000000013df1an);
  t.is(KVM_REG_ARM_TIMER_CVAL, 0x603000000013df02n);
});

test('vGICv3 attributes: affinity in bits 32..63, offset / sysreg / intid below', (t) => {
  t.is(vgicMpidr(0x0000_0001_8000_0203n), 0x0100_0203n, 'Aff3 moves to bits 24..31; bit 31 (RES1) dropped');
  t.is(distRegAttr(0x100), 0x100n);
  t.is(redistRegAttr(0x0000_0102n, 0x1_0100), 0x0000_0102_0001_0100n);
  // ICC_SRE_EL1 is S3_0_C12_C12_5: op0<<14 | op1<<11 | crn<<7 | crm<<3 | op2 = 0xc665.
  t.is(cpuSysregAttr(1n, 3, 0, 12, 12, 5), (1n << 32n) | 0xc665n);
  t.is(levelInfoAttr(0n, 64), 64n);
  t.throws(() => levelInfoAttr(0n, 33), { instanceOf: RangeError });
  t.throws(() => distRegAttr(2), { instanceOf: RangeError });
});

test('saved GIC register lists: SPI-only distributor arrays sized by the interrupt count; CTLRs placed for restore', (t) => {
  const r = gicdRanges(256);
  t.is(r[0]!.name, 'GICD_CTLR');
  const byName = new Map(r.map((x) => [x.name, x]));
  t.deepEqual(byName.get('GICD_ISENABLER'), { name: 'GICD_ISENABLER', offset: 0x104, count: 7 }, '224 SPIs, 1 bit each, from word 1');
  t.deepEqual(byName.get('GICD_IPRIORITYR'), { name: 'GICD_IPRIORITYR', offset: 0x420, count: 56 });
  t.deepEqual(byName.get('GICD_ICFGR'), { name: 'GICD_ICFGR', offset: 0xc08, count: 14 });
  t.deepEqual(byName.get('GICD_IROUTER'), { name: 'GICD_IROUTER', offset: 0x6100, count: 448 });
  t.is(GICR_RANGES[GICR_RANGES.length - 1]!.name, 'GICR_CTLR', 'GICR_CTLR last (LPIs enabled freeze PROPBASER/PENDBASER)');
  t.deepEqual(ICC_REGS.slice(0, 2).map((x) => x.name), ['ICC_SRE_EL1', 'ICC_CTLR_EL1']);
});

function state(): Arm64VcpuState {
  return {
    version: 1, arch: 'arm64', id: 0, mpState: 0,
    regs: [
      [toHex64(KVM_REG_ARM_TIMER_CTL), '0100000000000000'],
      [toHex64(xRegId(0)), '0807060504030201'],
      [toHex64(KVM_REG_ARM_TIMER_CNT), '0000000000000001'],
      [toHex64(V0), '00'.repeat(16)],
      [toHex64(REG_MPIDR_EL1), '0000008000000000'],
    ],
  };
}
const regList = [xRegId(0), V0, REG_MPIDR_EL1, KVM_REG_ARM_TIMER_CNT, KVM_REG_ARM_TIMER_CTL, KVM_REG_ARM_TIMER_CVAL];

test('arm64 vCPU state: accepted in restore order (timer last, CNT before CTL); MPIDR read back', (t) => {
  const c = checkArm64VcpuState(state(), 0, regList);
  t.deepEqual(c.regs.map((r) => r.id), [xRegId(0), V0, REG_MPIDR_EL1, KVM_REG_ARM_TIMER_CNT, KVM_REG_ARM_TIMER_CTL]);
  t.is(new DataView(c.regs[0]!.value.buffer).getBigUint64(0, true), 0x0102030405060708n);
  t.is(savedMpidr(state()), 0x8000_0000n, 'little-endian bytes: bit 31 (RES1)');
});

test('arm64 vCPU state: unknown register, wrong value size, bad MP state and id refused', (t) => {
  const bad = (mutate: (s: Arm64VcpuState) => void, field: string) => {
    const s = state();
    mutate(s);
    t.is(t.throws(() => checkArm64VcpuState(s, 0, regList), { instanceOf: SnapshotStateError })!.field, field);
  };
  bad((s) => { s.regs.push(['0x6030000000139999', '00'.repeat(8)]); }, 'vcpu.regs[5][0]');
  bad((s) => { s.regs[3]![1] = '00'.repeat(8); }, 'vcpu.regs[3][1]');
  bad((s) => { s.regs[1]![1] = 'zz'.repeat(8); }, 'vcpu.regs[1][1]');
  bad((s) => { s.regs.push(s.regs[1]!); }, 'vcpu.regs[5][0]');
  bad((s) => { s.mpState = 3; }, 'vcpu.mpState');
  bad((s) => { s.id = 2; }, 'vcpu.id');
  bad((s) => { (s as unknown as { arch: string }).arch = 'x86_64'; }, 'vcpu.arch');
});
