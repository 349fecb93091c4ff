/**
 * Byte layouts of the KVM structures used to save and restore vCPU and VM
 * state (x86-64 ABI, little-endian; arch/x86/include/uapi/asm/kvm.h and
 * include/uapi/linux/kvm.h). The state modules keep most of these as opaque
 * byte blobs and decode only the fields they must validate; the decoders
 * here are those views. Sizes and offsets are pinned by
 * test/unit/lib/kvm/state-structs.test.ts against sizeof/offsetof.
 */

/** sizeof(struct kvm_vcpu_events). */
export const KVM_VCPU_EVENTS_SIZE = 64;
/** sizeof(struct kvm_debugregs). */
export const KVM_DEBUGREGS_SIZE = 128;
/** sizeof(struct kvm_xsave): the legacy 4 KiB region; KVM_CAP_XSAVE2 may report more. */
export const KVM_XSAVE_SIZE = 4096;
/** sizeof(struct kvm_xcrs). */
export const KVM_XCRS_SIZE = 392;
/** KVM_MAX_XCRS: entries in kvm_xcrs.xcrs. */
export const KVM_MAX_XCRS = 16;
/** sizeof(struct kvm_irqchip): chip_id, pad, then a 512-byte union. */
export const KVM_IRQCHIP_SIZE = 520;
/** sizeof(struct kvm_pit_state2). */
export const KVM_PIT_STATE2_SIZE = 112;
/** sizeof(struct kvm_pit_channel_state). */
export const KVM_PIT_CHANNEL_STATE_SIZE = 24;
/** sizeof(struct kvm_clock_data). */
export const KVM_CLOCK_DATA_SIZE = 48;
/** sizeof(struct kvm_pic_state). */
export const KVM_PIC_STATE_SIZE = 16;
/** sizeof(struct kvm_ioapic_state). */
export const KVM_IOAPIC_STATE_SIZE = 216;
/** KVM_IOAPIC_NUM_PINS. */
export const KVM_IOAPIC_NUM_PINS = 24;

// kvm_irqchip.chip_id values.
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;
/** Offset of the chip union in struct kvm_irqchip. */
export const IRQCHIP_CHIP = 8;

// kvm_vcpu_events.flags: which optional fields KVM_SET_VCPU_EVENTS should take.
export const KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1;
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2;
export const KVM_VCPUEVENT_VALID_SHADOW = 0x4;
export const KVM_VCPUEVENT_VALID_SMM = 0x8;
export const KVM_VCPUEVENT_VALID_PAYLOAD = 0x10;
export const KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x20;
/** Every flag this module knows. */
export const KVM_VCPUEVENT_VALID_ALL = 0x3f;

// kvm_clock_data.flags.
export const KVM_CLOCK_TSC_STABLE = 0x2;
export const KVM_CLOCK_REALTIME = 0x4;
export const KVM_CLOCK_HOST_TSC = 0x8;

// kvm_pit_state2.flags.
export const KVM_PIT_FLAGS_HPET_LEGACY = 0x1;
export const KVM_PIT_FLAGS_SPEAKER_DATA_ON = 0x2;

/** KVM_MP_STATE values that x86 accepts (INIT_RECEIVED and SIPI_RECEIVED are for APs). */
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;
export const KVM_MP_STATE_INIT_RECEIVED = 2;
export const KVM_MP_STATE_HALTED = 3;
export const KVM_MP_STATE_SIPI_RECEIVED = 4;
/** arm64: a vCPU powered off by PSCI (CPU_OFF, or not yet CPU_ON'ed). */
export const KVM_MP_STATE_STOPPED = 5;
/** arm64 (KVM_CAP_ARM_SYSTEM_SUSPEND): a vCPU in PSCI SYSTEM_SUSPEND. */
export const KVM_MP_STATE_SUSPENDED = 10;

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

// ---- struct kvm_vcpu_events ----

/** The fields of struct kvm_vcpu_events that are validated before KVM_SET_VCPU_EVENTS. */
export interface KvmVcpuEvents {
  exception: { injected: number; nr: number; hasErrorCode: number; pending: number; errorCode: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipiVector: number;
  flags: number;
  smi: { smm: number; pending: number; smmInsideNmi: number; latchedInit: number };
  tripleFaultPending: number;
  exceptionHasPayload: number;
  exceptionPayload: bigint;
}

export function decodeVcpuEvents(b: Uint8Array): KvmVcpuEvents {
  const d = dv(b);
  return {
    exception: { injected: b[0]!, nr: b[1]!, hasErrorCode: b[2]!, pending: b[3]!, errorCode: d.getUint32(4, true) },
    interrupt: { injected: b[8]!, nr: b[9]!, soft: b[10]!, shadow: b[11]! },
    nmi: { injected: b[12]!, pending: b[13]!, masked: b[14]! },
    sipiVector: d.getUint32(16, true),
    flags: d.getUint32(20, true),
    smi: { smm: b[24]!, pending: b[25]!, smmInsideNmi: b[26]!, latchedInit: b[27]! },
    tripleFaultPending: b[28]!,
    exceptionHasPayload: b[55]!,
    exceptionPayload: d.getBigUint64(56, true),
  };
}

export function encodeVcpuEvents(e: KvmVcpuEvents): Uint8Array {
  const b = new Uint8Array(KVM_VCPU_EVENTS_SIZE);
  const d = dv(b);
  b.set([e.exception.injected, e.exception.nr, e.exception.hasErrorCode, e.exception.pending], 0);
  d.setUint32(4, e.exception.errorCode >>> 0, true);
  b.set([e.interrupt.injected, e.interrupt.nr, e.interrupt.soft, e.interrupt.shadow], 8);
  b.set([e.nmi.injected, e.nmi.pending, e.nmi.masked], 12);
  d.setUint32(16, e.sipiVector >>> 0, true);
  d.setUint32(20, e.flags >>> 0, true);
  b.set([e.smi.smm, e.smi.pending, e.smi.smmInsideNmi, e.smi.latchedInit], 24);
  b[28] = e.tripleFaultPending;
  b[55] = e.exceptionHasPayload;
  d.setBigUint64(56, BigInt.asUintN(64, e.exceptionPayload), true);
  return b;
}

// ---- struct kvm_debugregs { u64 db[4]; u64 dr6; u64 dr7; u64 flags; u64 reserved[9]; } ----

export interface KvmDebugregs {
  db: [bigint, bigint, bigint, bigint];
  dr6: bigint;
  dr7: bigint;
  flags: bigint;
}

export function decodeDebugregs(b: Uint8Array): KvmDebugregs {
  const d = dv(b);
  return {
    db: [0, 1, 2, 3].map((i) => d.getBigUint64(i * 8, true)) as KvmDebugregs['db'],
    dr6: d.getBigUint64(32, true), dr7: d.getBigUint64(40, true), flags: d.getBigUint64(48, true),
  };
}

export function encodeDebugregs(r: KvmDebugregs): Uint8Array {
  const b = new Uint8Array(KVM_DEBUGREGS_SIZE);
  const d = dv(b);
  r.db.forEach((v, i) => d.setBigUint64(i * 8, BigInt.asUintN(64, v), true));
  d.setBigUint64(32, BigInt.asUintN(64, r.dr6), true);
  d.setBigUint64(40, BigInt.asUintN(64, r.dr7), true);
  d.setBigUint64(48, BigInt.asUintN(64, r.flags), true);
  return b;
}

// ---- struct kvm_xcrs { u32 nr_xcrs; u32 flags; struct kvm_xcr { u32 xcr; u32 reserved; u64 value; } xcrs[16]; u64 padding[16]; } ----

export interface KvmXcr {
  xcr: number;
  value: bigint;
}

export interface KvmXcrs {
  flags: number;
  xcrs: KvmXcr[];
}

const XCRS_ENTRIES = 8;
const XCR_SIZE = 16;

/** Decodes kvm_xcrs; throws RangeError when nr_xcrs exceeds KVM_MAX_XCRS. */
export function decodeXcrs(b: Uint8Array): KvmXcrs {
  const d = dv(b);
  const n = d.getUint32(0, true);
  if (n > KVM_MAX_XCRS) throw new RangeError(`kvm_xcrs.nr_xcrs ${n} exceeds ${KVM_MAX_XCRS}`);
  const xcrs: KvmXcr[] = [];
  for (let i = 0; i < n; i++) {
    const o = XCRS_ENTRIES + i * XCR_SIZE;
    xcrs.push({ xcr: d.getUint32(o, true), value: d.getBigUint64(o + 8, true) });
  }
  return { flags: d.getUint32(4, true), xcrs };
}

export function encodeXcrs(x: KvmXcrs): Uint8Array {
  if (x.xcrs.length > KVM_MAX_XCRS) throw new RangeError(`${x.xcrs.length} XCRs exceed ${KVM_MAX_XCRS}`);
  const b = new Uint8Array(KVM_XCRS_SIZE);
  const d = dv(b);
  d.setUint32(0, x.xcrs.length, true);
  d.setUint32(4, x.flags >>> 0, true);
  x.xcrs.forEach((e, i) => {
    d.setUint32(XCRS_ENTRIES + i * XCR_SIZE, e.xcr >>> 0, true);
    d.setBigUint64(XCRS_ENTRIES + i * XCR_SIZE + 8, BigInt.asUintN(64, e.value), true);
  });
  return b;
}

// ---- struct kvm_pit_state2 { struct kvm_pit_channel_state channels[3]; u32 flags; u32 reserved[9]; } ----

/** struct kvm_pit_channel_state (the fields a restore validates). */
export interface KvmPitChannel {
  count: number; latchedCount: number; countLatched: number; statusLatched: number; status: number;
  readState: number; writeState: number; writeLatch: number; rwMode: number; mode: number; bcd: number; gate: number;
  countLoadTime: bigint;
}

export interface KvmPitState2 {
  channels: [KvmPitChannel, KvmPitChannel, KvmPitChannel];
  flags: number;
}

export function decodePitState2(b: Uint8Array): KvmPitState2 {
  const d = dv(b);
  const ch = (i: number): KvmPitChannel => {
    const o = i * KVM_PIT_CHANNEL_STATE_SIZE;
    return {
      count: d.getUint32(o, true), latchedCount: d.getUint16(o + 4, true), countLatched: b[o + 6]!, statusLatched: b[o + 7]!,
      status: b[o + 8]!, readState: b[o + 9]!, writeState: b[o + 10]!, writeLatch: b[o + 11]!, rwMode: b[o + 12]!,
      mode: b[o + 13]!, bcd: b[o + 14]!, gate: b[o + 15]!, countLoadTime: d.getBigInt64(o + 16, true),
    };
  };
  return { channels: [ch(0), ch(1), ch(2)], flags: d.getUint32(3 * KVM_PIT_CHANNEL_STATE_SIZE, true) };
}

// ---- struct kvm_clock_data { u64 clock; u32 flags; u32 pad0; u64 realtime; u64 host_tsc; u32 pad[4]; } ----

export interface KvmClockData {
  /** kvmclock in nanoseconds. */
  clock: bigint;
  flags: number;
  /** CLOCK_REALTIME in ns when `clock` was read (valid with KVM_CLOCK_REALTIME). */
  realtime: bigint;
  /** Host TSC when `clock` was read (valid with KVM_CLOCK_HOST_TSC). */
  hostTsc: bigint;
}

export function decodeClockData(b: Uint8Array): KvmClockData {
  const d = dv(b);
  return { clock: d.getBigUint64(0, true), flags: d.getUint32(8, true), realtime: d.getBigUint64(16, true), hostTsc: d.getBigUint64(24, true) };
}

export function encodeClockData(c: KvmClockData): Uint8Array {
  const b = new Uint8Array(KVM_CLOCK_DATA_SIZE);
  const d = dv(b);
  d.setBigUint64(0, BigInt.asUintN(64, c.clock), true);
  d.setUint32(8, c.flags >>> 0, true);
  d.setBigUint64(16, BigInt.asUintN(64, c.realtime), true);
  d.setBigUint64(24, BigInt.asUintN(64, c.hostTsc), true);
  return b;
}

// ---- struct kvm_irqchip { u32 chip_id; u32 pad; union { char dummy[512]; pic; ioapic; } chip; } ----

/** A kvm_irqchip buffer for KVM_GET_IRQCHIP of `chipId` (the rest is filled by the kernel). */
export function irqchipRequest(chipId: number): Uint8Array {
  const b = new Uint8Array(KVM_IRQCHIP_SIZE);
  dv(b).setUint32(0, chipId, true);
  return b;
}

/** kvm_irqchip.chip_id of a buffer. */
export function irqchipId(b: Uint8Array): number {
  return dv(b).getUint32(0, true);
}

// ---- struct kvm_reg_list { u64 n; u64 reg[]; } (arm64 KVM_GET_REG_LIST) ----

/** A kvm_reg_list buffer with room for `n` ids. */
export function regListRequest(n: number): Uint8Array {
  const b = new Uint8Array(8 + 8 * n);
  dv(b).setBigUint64(0, BigInt(n), true);
  return b;
}

/** The ids in a kvm_reg_list the kernel filled (n is the count it wrote). */
export function decodeRegList(b: Uint8Array): bigint[] {
  const d = dv(b);
  const n = Number(d.getBigUint64(0, true));
  if (8 + 8 * n > b.length) throw new RangeError(`kvm_reg_list claims ${n} ids, buffer holds fewer`);
  return Array.from({ length: n }, (_, i) => d.getBigUint64(8 + 8 * i, true));
}
