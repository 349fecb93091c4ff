/**
 * x86-64 vCPU state save/restore through KVM: everything a paused vCPU
 * needs to continue on a fresh vCPU of a fresh VM (with the same guest RAM).
 * The state is a JSON-serialisable object: KVM structs as base64 of their
 * bytes, u64 values as hex strings. Restoring validates the whole object
 * first (lengths, ranges, MSR indices against this host's list) and only
 * then issues ioctls, in the order KVM needs (see restoreVcpuState).
 *
 * Before saving, the vCPU must be out of KVM_RUN, and an exit that needs
 * completion (PIO/MMIO) must have been completed: api.rst (kvm_run,
 * "immediate_exit") says those operations finish only when userspace
 * re-enters KVM_RUN, and their pending state is not visible to userspace;
 * re-entering with immediate_exit set completes them without running guest
 * code. See `completePendingIo` (lib/kvm/pause.ts, re-exported here).
 */
import { log } from '../../lib/log.js';
import { KvmError, SnapshotStateError } from '../../lib/errors.js';
import * as io from '../../lib/kvm/ioctls.js';
import type { Kvm } from '../../lib/kvm/kvm.js';
import type { Vcpu } from '../../lib/kvm/vcpu.js';
import type { Vm } from '../../lib/kvm/vm.js';
export { completePendingIo } from '../../lib/kvm/pause.js';
import type { CpuidEntry, MsrEntry } from '../../lib/kvm/types.js';
import {
  decodeRegs, decodeSregs, encodeRegs, encodeSregs, KVM_LAPIC_STATE_SIZE, KVM_REGS_SIZE, KVM_SREGS_SIZE,
} from '../../lib/kvm/structs.js';
import {
  decodeDebugregs, decodeVcpuEvents, decodeXcrs, KVM_DEBUGREGS_SIZE, KVM_MAX_XCRS, KVM_MP_STATE_SIPI_RECEIVED,
  KVM_VCPU_EVENTS_SIZE, KVM_VCPUEVENT_VALID_ALL, KVM_XCRS_SIZE, KVM_XSAVE_SIZE,
} from '../../lib/kvm/state-structs.js';
import { array, expect, flags01, fromBase64, fromHex64, intIn, object, toBase64, toHex64, u32 } from '../../lib/kvm/state-json.js';

const debug = log('arch:x86_64:vcpu-state');

/** Format version of X86VcpuState; bump on any incompatible change. */
export const X86_VCPU_STATE_VERSION = 1;
/** KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h). */
const MAX_CPUID_ENTRIES = 256;
/** Highest exception vector (the architecture defines 0..31). */
const MAX_EXCEPTION_VECTOR = 31;
/** A generous upper bound on a TSC frequency (100 GHz, in kHz). */
const MAX_TSC_KHZ = 100_000_000;
/** DR6/DR7 are 32 bits wide: KVM rejects set bits above 31 (kvm_dr6_valid/kvm_dr7_valid). */
const DR_HIGH_MASK = 0xffff_ffff_0000_0000n;
/** An upper bound on saved MSRs (hosts list a few hundred). */
const MAX_MSRS = 4096;

/** What a host/VM supports, probed once per VM and passed to save/restore. */
export interface X86StateCaps {
  /** Bytes of KVM's XSAVE image for this VM (KVM_CAP_XSAVE2 on the VM fd, else 4096). */
  readonly xsaveSize: number;
  /** Whether KVM_GET_XSAVE2 exists (KVM_CAP_XSAVE2). */
  readonly xsave2: boolean;
  /** KVM_GET_MSR_INDEX_LIST: the MSRs whose guest values KVM can save and restore. */
  readonly msrIndices: ReadonlySet<number>;
}

/** Probes the capabilities save/restore needs; throws KvmError naming the missing one. */
export function probeX86StateCaps(kvm: Kvm, vm: Vm): X86StateCaps {
  for (const [name, cap] of [['KVM_CAP_VCPU_EVENTS', io.KVM_CAP_VCPU_EVENTS], ['KVM_CAP_DEBUGREGS', io.KVM_CAP_DEBUGREGS],
    ['KVM_CAP_XSAVE', io.KVM_CAP_XSAVE], ['KVM_CAP_XCRS', io.KVM_CAP_XCRS], ['KVM_CAP_MP_STATE', io.KVM_CAP_MP_STATE],
    ['KVM_CAP_GET_TSC_KHZ', io.KVM_CAP_GET_TSC_KHZ]] as const) {
    if (kvm.checkExtension(cap) <= 0) throw new KvmError('KVM_CHECK_EXTENSION', 0, `${name} is missing: this kernel cannot save/restore vCPU state (Linux 4.x or later has it)`);
  }
  const xsave2Size = vm.checkExtension(io.KVM_CAP_XSAVE2);
  return {
    xsaveSize: xsave2Size > 0 ? Math.max(xsave2Size, KVM_XSAVE_SIZE) : KVM_XSAVE_SIZE,
    xsave2: xsave2Size > 0,
    msrIndices: new Set(kvm.msrIndexList()),
  };
}

/** Saved state of one x86-64 vCPU (JSON-serialisable). */
export interface X86VcpuState {
  version: number;
  arch: 'x86_64';
  /** The vCPU id it was saved from; restore requires the same id (the LAPIC ID follows it). */
  id: number;
  cpuid: CpuidEntry[];
  mpState: number;
  tscKhz: number;
  /** base64 of struct kvm_regs, kvm_sregs, the XSAVE image, kvm_xcrs, kvm_debugregs, kvm_lapic_state, kvm_vcpu_events. */
  regs: string;
  sregs: string;
  xsave: string;
  xcrs: string;
  debugregs: string;
  lapic: string;
  vcpuEvents: string;
  /** [index, hex value] for every listed MSR this vCPU could read. */
  msrs: [number, string][];
}

/** Reads every listed MSR KVM will give for this vCPU. KVM_GET_MSRS stops at the first it rejects; that one is skipped. */
function readMsrs(vcpu: Vcpu, indices: readonly number[]): MsrEntry[] {
  const out: MsrEntry[] = [];
  let rest = indices;
  while (rest.length > 0) {
    const got = vcpu.getMsrs(rest);
    out.push(...got);
    if (got.length < rest.length) debug('vcpu %d: MSR 0x%s not readable, skipped', vcpu.id, rest[got.length]!.toString(16));
    rest = rest.slice(got.length + 1);
  }
  return out;
}

/** Saves a paused vCPU (not in KVM_RUN; pending I/O completed with completePendingIo). */
export function saveVcpuState(vcpu: Vcpu, caps: X86StateCaps): X86VcpuState {
  const xsave = caps.xsave2 ? vcpu.getXsave2(caps.xsaveSize) : vcpu.getXsave();
  return {
    version: X86_VCPU_STATE_VERSION,
    arch: 'x86_64',
    id: vcpu.id,
    cpuid: vcpu.getCpuid2(),
    mpState: vcpu.getMpState(),
    tscKhz: vcpu.getTscKhz(),
    regs: toBase64(rawRegs(vcpu)),
    sregs: toBase64(rawSregs(vcpu)),
    xsave: toBase64(xsave),
    xcrs: toBase64(vcpu.getXcrs()),
    debugregs: toBase64(vcpu.getDebugregs()),
    lapic: toBase64(vcpu.getLapic()),
    vcpuEvents: toBase64(vcpu.getVcpuEvents()),
    msrs: readMsrs(vcpu, [...caps.msrIndices]).map((m) => [m.index, toHex64(m.data)]),
  };
}

// kvm_regs/kvm_sregs are kept as their bytes; the typed getters round-trip them exactly.
function rawRegs(vcpu: Vcpu): Uint8Array { return encodeRegs(vcpu.getRegs()); }
function rawSregs(vcpu: Vcpu): Uint8Array { return encodeSregs(vcpu.getSregs()); }

/** A validated X86VcpuState, decoded to what the ioctls take. */
export interface CheckedX86VcpuState {
  cpuid: CpuidEntry[];
  mpState: number;
  tscKhz: number;
  regs: Uint8Array;
  sregs: Uint8Array;
  xsave: Uint8Array;
  xcrs: Uint8Array;
  debugregs: Uint8Array;
  lapic: Uint8Array;
  vcpuEvents: Uint8Array;
  msrs: MsrEntry[];
}

/**
 * Validates untrusted saved state for vCPU `vcpuId` of a VM with `caps`.
 * Throws SnapshotStateError naming the first bad field (prefixed by `at`).
 */
export function checkX86VcpuState(input: unknown, vcpuId: number, caps: X86StateCaps, at = 'vcpu'): CheckedX86VcpuState {
  const s = object(at, input);
  const f = (name: string) => `${at}.${name}`;
  expect(f('version'), s.version, X86_VCPU_STATE_VERSION, 'the state was written by an incompatible flintvm');
  expect(f('arch'), s.arch, 'x86_64', 'restore it on an x86_64 host');
  if (intIn(f('id'), s.id, 0, 0xffff_ffff) !== vcpuId) throw new SnapshotStateError(f('id'), `was saved from vCPU ${String(s.id)}, restoring into vCPU ${vcpuId}: restore each vCPU's state into the vCPU with the same id`, s.id);

  const cpuid = array(f('cpuid'), s.cpuid, MAX_CPUID_ENTRIES).map((e, i) => {
    const o = object(`${f('cpuid')}[${i}]`, e);
    const g = (k: string) => u32(`${f('cpuid')}[${i}].${k}`, o[k]);
    return { function: g('function'), index: g('index'), flags: g('flags'), eax: g('eax'), ebx: g('ebx'), ecx: g('ecx'), edx: g('edx') };
  });
  const mpState = intIn(f('mpState'), s.mpState, 0, KVM_MP_STATE_SIPI_RECEIVED);
  const tscKhz = intIn(f('tscKhz'), s.tscKhz, 1, MAX_TSC_KHZ);
  const regs = fromBase64(f('regs'), s.regs, KVM_REGS_SIZE);
  const sregs = fromBase64(f('sregs'), s.sregs, KVM_SREGS_SIZE);
  const xsave = fromBase64(f('xsave'), s.xsave, caps.xsaveSize);

  const xcrs = fromBase64(f('xcrs'), s.xcrs, KVM_XCRS_SIZE);
  const nXcrs = new DataView(xcrs.buffer).getUint32(0, true);
  if (nXcrs > KVM_MAX_XCRS) throw new SnapshotStateError(f('xcrs'), `nr_xcrs is ${nXcrs}, at most ${KVM_MAX_XCRS}`, nXcrs);
  if (decodeXcrs(xcrs).flags !== 0) throw new SnapshotStateError(f('xcrs'), 'flags must be 0');

  const debugregs = fromBase64(f('debugregs'), s.debugregs, KVM_DEBUGREGS_SIZE);
  const dr = decodeDebugregs(debugregs);
  if (dr.flags !== 0n) throw new SnapshotStateError(f('debugregs'), 'flags must be 0');
  if ((dr.dr6 & DR_HIGH_MASK) !== 0n || (dr.dr7 & DR_HIGH_MASK) !== 0n) throw new SnapshotStateError(f('debugregs'), 'DR6/DR7 have bits set above bit 31');

  const lapic = fromBase64(f('lapic'), s.lapic, KVM_LAPIC_STATE_SIZE);

  const vcpuEvents = fromBase64(f('vcpuEvents'), s.vcpuEvents, KVM_VCPU_EVENTS_SIZE);
  const ev = decodeVcpuEvents(vcpuEvents);
  const evf = f('vcpuEvents');
  if ((ev.flags & ~KVM_VCPUEVENT_VALID_ALL) !== 0) throw new SnapshotStateError(`${evf}.flags`, `has unknown bits 0x${(ev.flags & ~KVM_VCPUEVENT_VALID_ALL).toString(16)}`, ev.flags);
  if (ev.exception.nr > MAX_EXCEPTION_VECTOR) throw new SnapshotStateError(`${evf}.exception.nr`, `vector ${ev.exception.nr} is not an exception (0..${MAX_EXCEPTION_VECTOR})`, ev.exception.nr);
  flags01(`${evf}.exception`, { injected: ev.exception.injected, hasErrorCode: ev.exception.hasErrorCode, pending: ev.exception.pending });
  flags01(`${evf}.interrupt`, { injected: ev.interrupt.injected, soft: ev.interrupt.soft });
  flags01(`${evf}.nmi`, { injected: ev.nmi.injected, masked: ev.nmi.masked });
  flags01(`${evf}.smi`, { smm: ev.smi.smm, pending: ev.smi.pending, smmInsideNmi: ev.smi.smmInsideNmi, latchedInit: ev.smi.latchedInit });
  intIn(`${evf}.sipiVector`, ev.sipiVector, 0, 0xff);

  const seen = new Set<number>();
  const msrs = array(f('msrs'), s.msrs, MAX_MSRS).map((e, i) => {
    const at2 = `${f('msrs')}[${i}]`;
    const pair = array(at2, e, 2);
    if (pair.length !== 2) throw new SnapshotStateError(at2, 'must be [index, "0x value"]', e);
    const index = u32(`${at2}[0]`, pair[0]);
    if (!caps.msrIndices.has(index)) throw new SnapshotStateError(`${at2}[0]`, `MSR 0x${index.toString(16)} is not in this host's KVM_GET_MSR_INDEX_LIST, so KVM cannot restore it (state from another CPU vendor or kernel?)`, index);
    if (seen.has(index)) throw new SnapshotStateError(`${at2}[0]`, `MSR 0x${index.toString(16)} appears twice`, index);
    seen.add(index);
    return { index, data: fromHex64(`${at2}[1]`, pair[1]) };
  });
  return { cpuid, mpState, tscKhz, regs, sregs, xsave, xcrs, debugregs, lapic, vcpuEvents, msrs };
}

/**
 * Restores saved state into a fresh vCPU (created after the VM's irqchip,
 * never run). Validates everything first; an error from KVM half-way leaves
 * the vCPU partly restored, and the VM should then be discarded.
 *
 * Order, and why:
 *  1. KVM_SET_CPUID2 first: KVM checks later state against the guest's CPUID
 *     (which MSRs exist and which bits are reserved, the XSAVE features it
 *     accepts), and refuses a CPUID change once the vCPU has run.
 *  2. KVM_SET_TSC_KHZ before any TSC value is written (the TSC MSR is
 *     scaled by the guest frequency).
 *  3. MP state, then regs and sregs (sregs sets EFER/CR0/CR4 and APIC base),
 *     XSAVE (validated against the CPUID's XSAVE features), XCRs, debug regs.
 *  4. KVM_SET_LAPIC before KVM_SET_MSRS: KVM drops a write of
 *     MSR_IA32_TSC_DEADLINE unless the LAPIC timer is already in
 *     TSC-deadline mode (kvm_set_lapic_tscdeadline_msr in arch/x86/kvm/lapic.c).
 *  5. KVM_SET_VCPU_EVENTS last: pending/injected exceptions, NMI and SMM
 *     state apply to the final register state; and KVM refuses an
 *     INIT_RECEIVED/SIPI_RECEIVED MP state while INIT is blocked (in SMM) or
 *     an SMI is pending (kvm_arch_vcpu_ioctl_set_mpstate), both of which
 *     the events set, so the MP state must go in before them.
 */
export function restoreVcpuState(vcpu: Vcpu, state: unknown, caps: X86StateCaps, at = 'vcpu'): void {
  const c = checkX86VcpuState(state, vcpu.id, caps, at);
  vcpu.setCpuid2(c.cpuid);
  if (vcpu.getTscKhz() !== c.tscKhz) vcpu.setTscKhz(c.tscKhz);
  vcpu.setMpState(c.mpState);
  vcpu.setRegs(decodeRegs(c.regs));
  vcpu.setSregs(decodeSregs(c.sregs));
  vcpu.setXsave(c.xsave);
  vcpu.setXcrs(c.xcrs);
  vcpu.setDebugregs(c.debugregs);
  vcpu.setLapic(c.lapic);
  const n = vcpu.setMsrs(c.msrs);
  if (n !== c.msrs.length) {
    const bad = c.msrs[n]!;
    throw new SnapshotStateError(`${at}.msrs[${n}]`, `KVM refused MSR 0x${bad.index.toString(16)} = 0x${bad.data.toString(16)} (value invalid for this vCPU's CPUID?)`, bad.index);
  }
  vcpu.setVcpuEvents(c.vcpuEvents);
}
