/**
 * arm64 vCPU state save/restore through KVM: every register KVM_GET_REG_LIST
 * names (core registers, FP/SIMD, system registers, the arch timer, the
 * firmware pseudo-registers such as the PSCI version), moved one by one with
 * KVM_GET/SET_ONE_REG, plus the MP state (running, powered off, suspended).
 * The vGICv3 state is in vgic-state.ts.
 *
 * The state is a JSON-serialisable object: register ids and values as hex
 * (values as the little-endian bytes KVM_GET_ONE_REG wrote). Restoring
 * validates everything (each id must be in the target vCPU's own list, each
 * value exactly the id's size) before the first ioctl.
 */
import { SnapshotStateError } from '../../lib/errors.js';
import { REG_MPIDR_EL1, sysRegId } from '../../lib/kvm/arm64.js';
import { oneRegSize } from '../../lib/kvm/arm64-state.js';
import { KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_STOPPED, KVM_MP_STATE_SUSPENDED } from '../../lib/kvm/state-structs.js';
import { array, expect, fromHex64, intIn, object, toHex64 } from '../../lib/kvm/state-json.js';
import type { Vcpu } from '../../lib/kvm/vcpu.js';
export { completePendingIo } from '../../lib/kvm/pause.js';

/** Format version of Arm64VcpuState. */
export const ARM64_VCPU_STATE_VERSION = 1;
/** Upper bound on saved registers (a vCPU lists a few hundred; SVE adds ~600). */
const MAX_REGS = 8192;
const HEX_BYTES = /^[0-9a-f]*$/;

/**
 * The virtual timer registers, restored after every other register, the
 * counter first, so that the compare value and control are set against the
 * restored counter. KVM_REG_ARM_TIMER_CNT and _CVAL carry each other's
 * encodings (a historical swap that asm/kvm.h keeps as ABI): CNT is
 * S3_3_C14_C3_2, CVAL S3_3_C14_C0_2; CTL is CNTV_CTL_EL0, S3_3_C14_C3_1.
 */
export const KVM_REG_ARM_TIMER_CNT = sysRegId(3, 3, 14, 3, 2);
export const KVM_REG_ARM_TIMER_CVAL = sysRegId(3, 3, 14, 0, 2);
export const KVM_REG_ARM_TIMER_CTL = sysRegId(3, 3, 14, 3, 1);
const TIMER_ORDER: readonly bigint[] = [KVM_REG_ARM_TIMER_CNT, KVM_REG_ARM_TIMER_CVAL, KVM_REG_ARM_TIMER_CTL];

/** Saved state of one arm64 vCPU (JSON-serialisable). */
export interface Arm64VcpuState {
  version: number;
  arch: 'arm64';
  id: number;
  /** KVM_MP_STATE_RUNNABLE, _STOPPED (PSCI off) or _SUSPENDED. */
  mpState: number;
  /** [id as 0x-hex, value as hex of its little-endian bytes] for every register in KVM_GET_REG_LIST. */
  regs: [string, string][];
}

/** Saves a paused vCPU (not in KVM_RUN). */
export function saveVcpuState(vcpu: Vcpu): Arm64VcpuState {
  const regs = vcpu.getRegList().map((id): [string, string] => [toHex64(id), Buffer.from(vcpu.getOneRegBytes(id)).toString('hex')]);
  return { version: ARM64_VCPU_STATE_VERSION, arch: 'arm64', id: vcpu.id, mpState: vcpu.getMpState(), regs };
}

/** A validated Arm64VcpuState, in restore order. */
export interface CheckedArm64VcpuState {
  mpState: number;
  regs: { id: bigint; value: Uint8Array }[];
}

/**
 * Validates untrusted saved state for `vcpuId`, whose KVM_GET_REG_LIST is
 * `regList` (the target vCPU, after KVM_ARM_VCPU_INIT with the saved
 * vCPU's features). Returns the registers in restore order.
 */
export function checkArm64VcpuState(input: unknown, vcpuId: number, regList: readonly bigint[], at = 'vcpu'): CheckedArm64VcpuState {
  const s = object(at, input);
  const f = (name: string) => `${at}.${name}`;
  expect(f('version'), s.version, ARM64_VCPU_STATE_VERSION, 'the state was written by an incompatible flintvm');
  expect(f('arch'), s.arch, 'arm64', 'restore it on an arm64 host');
  if (intIn(f('id'), s.id, 0, 0xffff_ffff) !== vcpuId) throw new SnapshotStateError(f('id'), `was saved from vCPU ${String(s.id)}, restoring into vCPU ${vcpuId}`, s.id);
  const mpState = intIn(f('mpState'), s.mpState, 0, KVM_MP_STATE_SUSPENDED);
  if (![KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_STOPPED, KVM_MP_STATE_SUSPENDED].includes(mpState)) throw new SnapshotStateError(f('mpState'), `${mpState} is not an arm64 MP state (0 runnable, 5 stopped, 10 suspended)`, mpState);
  const known = new Set(regList);
  const seen = new Set<bigint>();
  const regs = array(f('regs'), s.regs, MAX_REGS).map((e, i) => {
    const ri = `${f('regs')}[${i}]`;
    const pair = array(ri, e, 2);
    if (pair.length !== 2) throw new SnapshotStateError(ri, 'must be ["0x id", "hex value"]', e);
    const id = fromHex64(`${ri}[0]`, pair[0]);
    if (!known.has(id)) throw new SnapshotStateError(`${ri}[0]`, `register 0x${id.toString(16)} is not in this vCPU's KVM_GET_REG_LIST (different host CPU, kernel or vCPU features?)`, pair[0]);
    if (seen.has(id)) throw new SnapshotStateError(`${ri}[0]`, `register 0x${id.toString(16)} appears twice`, pair[0]);
    seen.add(id);
    const size = oneRegSize(id);
    const hex = pair[1];
    if (typeof hex !== 'string' || hex.length !== 2 * size || !HEX_BYTES.test(hex)) throw new SnapshotStateError(`${ri}[1]`, `must be ${2 * size} lower-case hex digits (a ${size}-byte register)`, hex);
    return { id, value: new Uint8Array(Buffer.from(hex, 'hex')) };
  });
  const rank = (id: bigint) => TIMER_ORDER.indexOf(id);
  regs.sort((a, b) => rank(a.id) - rank(b.id)); // stable: non-timer registers keep their order, timer ones go last
  return { mpState, regs };
}

/**
 * Restores saved state into a fresh vCPU that was KVM_ARM_VCPU_INIT'ed with
 * the saved vCPU's features and has never run (the firmware pseudo-registers,
 * e.g. KVM_REG_ARM_PSCI_VERSION, can only change before the first run).
 * Registers in list order with the timer last (see TIMER_ORDER), then MP state.
 */
export function restoreVcpuState(vcpu: Vcpu, state: unknown, at = 'vcpu'): void {
  const c = checkArm64VcpuState(state, vcpu.id, vcpu.getRegList(), at);
  for (const r of c.regs) vcpu.setOneRegBytes(r.id, r.value);
  vcpu.setMpState(c.mpState);
}

/** The MPIDR_EL1 a saved state carries (the vGIC state is addressed by it), or null. */
export function savedMpidr(state: Arm64VcpuState): bigint | null {
  const hex = state.regs.find(([id]) => id === toHex64(REG_MPIDR_EL1))?.[1];
  return hex === undefined ? null : Buffer.from(hex, 'hex').readBigUInt64LE(0);
}
