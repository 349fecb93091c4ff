/**
 * arm64 KVM encodings (arch/arm64/include/uapi/asm/kvm.h and linux/kvm.h):
 * KVM_{GET,SET}_ONE_REG register ids, struct kvm_vcpu_init, the vGICv3
 * device attributes and the KVM_IRQ_LINE interrupt number format. Pure data
 * and functions: usable (and unit-tested) on any host.
 */

/** KVM_REG_ARM64: the architecture field of a register id. */
export const KVM_REG_ARM64 = 0x6000000000000000n;
/** KVM_REG_SIZE_U64: a 64-bit register. */
export const KVM_REG_SIZE_U64 = 0x0030000000000000n;
/** KVM_REG_ARM_CORE (0x0010 << 16): a field of struct kvm_regs, by 32-bit word offset. */
const KVM_REG_ARM_CORE = 0x0010n << 16n;
/** KVM_REG_ARM64_SYSREG (0x0013 << 16): a system register by its op0/op1/CRn/CRm/op2 encoding. */
const KVM_REG_ARM64_SYSREG = 0x0013n << 16n;

/** Id of the 64-bit field at `byteOffset` in struct kvm_regs (which starts with struct user_pt_regs). */
export function coreRegId(byteOffset: number): bigint {
  if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % 8 !== 0) throw new RangeError(`core register offset ${byteOffset} is not a multiple of 8`);
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | BigInt(byteOffset / 4);
}

/** Id of general register Xn (0..30). */
export function xRegId(n: number): bigint {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new RangeError(`X${n} is not a general register`);
  return coreRegId(8 * n);
}

/** user_pt_regs: regs[31], sp, pc, pstate. */
export const REG_SP = coreRegId(8 * 31);
export const REG_PC = coreRegId(8 * 32);
export const REG_PSTATE = coreRegId(8 * 33);

/** The arm64 general registers a vCPU exit reports (struct user_pt_regs). */
export interface ArmCoreRegs {
  /** X0..X30. */
  readonly x: readonly bigint[];
  readonly sp: bigint;
  readonly pc: bigint;
  readonly pstate: bigint;
}

/** Id of a system register, from its encoding in the Arm ARM (MRS/MSR operands). */
export function sysRegId(op0: number, op1: number, crn: number, crm: number, op2: number): bigint {
  const fields: [number, number][] = [[op0, 3], [op1, 7], [crn, 15], [crm, 15], [op2, 7]];
  for (const [v, max] of fields) if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError('system register field out of range');
  return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG
    | BigInt((op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2);
}

/** MPIDR_EL1 (S3_0_C0_C0_5): the vCPU's affinity, which the device tree's cpu nodes name. */
export const REG_MPIDR_EL1 = sysRegId(3, 0, 0, 0, 5);
/** The affinity fields of MPIDR_EL1 (Aff3 at 32..39, Aff2..Aff0 at 0..23): a cpu node's `reg`. */
export const MPIDR_AFFINITY_MASK = 0xff00ffffffn;

/** PSTATE the kernel is entered with: EL1h (SP_EL1), with D, A, I and F masked (arm64 booting.rst). */
export const PSTATE_EL1H_DAIF_MASKED = 0x3c5n;

// ---- struct kvm_vcpu_init { __u32 target; __u32 features[7]; } ----

/** features[0] bit: the vCPU starts powered off (secondaries wait for PSCI CPU_ON). */
export const KVM_ARM_VCPU_POWER_OFF = 0;
/** features[0] bit: PSCI 0.2+ (CPU_ON, SYSTEM_OFF, SYSTEM_RESET handled by KVM). */
export const KVM_ARM_VCPU_PSCI_0_2 = 2;
export const KVM_VCPU_INIT_SIZE = 32;

export interface ArmVcpuInit {
  readonly target: number;
  /** features[0..6] as bit numbers set in the 224-bit feature set. */
  readonly features: readonly number[];
}

export function encodeVcpuInit(init: ArmVcpuInit): Uint8Array {
  const b = new Uint8Array(KVM_VCPU_INIT_SIZE);
  const d = new DataView(b.buffer);
  d.setUint32(0, init.target >>> 0, true);
  for (const f of init.features) {
    if (!Number.isInteger(f) || f < 0 || f >= 7 * 32) throw new RangeError(`vCPU feature bit ${f} out of range`);
    const off = 4 + 4 * Math.floor(f / 32);
    d.setUint32(off, (d.getUint32(off, true) | (1 << (f % 32))) >>> 0, true);
  }
  return b;
}

/** Decodes KVM_ARM_PREFERRED_TARGET's answer (the features it sets are bits, listed). */
export function decodeVcpuInit(b: Uint8Array): ArmVcpuInit {
  const d = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const features: number[] = [];
  for (let w = 0; w < 7; w++) {
    const v = d.getUint32(4 + 4 * w, true);
    for (let bit = 0; bit < 32; bit++) if ((v >>> bit) & 1) features.push(w * 32 + bit);
  }
  return { target: d.getUint32(0, true), features };
}

/** struct kvm_one_reg { __u64 id; __u64 addr; } */
export function encodeOneReg(id: bigint, addr: bigint): Uint8Array {
  const b = new Uint8Array(16);
  const d = new DataView(b.buffer);
  d.setBigUint64(0, id, true);
  d.setBigUint64(8, addr, true);
  return b;
}

// ---- vGICv3 (KVM_CREATE_DEVICE, Documentation/virt/kvm/devices/arm-vgic-v3.rst) ----

export const KVM_DEV_TYPE_ARM_VGIC_V3 = 7;
export const KVM_DEV_ARM_VGIC_GRP_ADDR = 0;
export const KVM_DEV_ARM_VGIC_GRP_NR_IRQS = 3;
export const KVM_DEV_ARM_VGIC_GRP_CTRL = 4;
export const KVM_VGIC_V3_ADDR_TYPE_DIST = 2n;
export const KVM_VGIC_V3_ADDR_TYPE_REDIST = 3n;
export const KVM_DEV_ARM_VGIC_CTRL_INIT = 0n;

// ---- KVM_IRQ_LINE on arm64: irq = vcpu2_index(4) | irq_type(4) | vcpu_index(8) | irq_id(16) ----

const KVM_ARM_IRQ_TYPE_SHIFT = 24;
const KVM_ARM_IRQ_TYPE_SPI = 1;
/** INTIDs 0..31 are per-CPU (SGIs, PPIs); shared peripheral interrupts start at 32. */
export const GIC_SPI_BASE = 32;
/** Highest SPI number (INTID 1019). */
export const GIC_MAX_SPI = 1019 - GIC_SPI_BASE;

/**
 * The KVM_IRQ_LINE `irq` value for shared peripheral interrupt `spi` (its
 * number in the device tree's `<GIC_SPI n flags>`, INTID n + 32). irqfd GSIs
 * on arm64 are SPI numbers already (GSI n is INTID n + 32).
 */
export function spiIrqLine(spi: number): number {
  if (!Number.isInteger(spi) || spi < 0 || spi > GIC_MAX_SPI) throw new RangeError(`SPI ${spi} out of range 0..${GIC_MAX_SPI}`);
  return ((KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (spi + GIC_SPI_BASE)) >>> 0;
}
