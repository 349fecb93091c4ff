/**
 * arm64 encodings for saving and restoring vCPU and vGICv3 state: the size
 * field of KVM_{GET,SET}_ONE_REG ids (linux/kvm.h), and the attribute
 * formats of the vGICv3 device groups DIST_REGS, REDIST_REGS, CPU_SYSREGS and
 * LEVEL_INFO (Documentation/virt/kvm/devices/arm-vgic-v3.rst). Pure data
 * and functions, unit-tested on any host.
 */
import { sysRegId } from './arm64.js';

/** KVM_REG_SIZE_SHIFT / KVM_REG_SIZE_MASK: log2 of the register's size in bytes, in bits 52..55 of the id. */
const KVM_REG_SIZE_SHIFT = 52n;
const KVM_REG_SIZE_MASK = 0x00f0000000000000n;
/** KVM_REG_SIZE_U2048 (SVE Z registers) is the largest size the ABI defines. */
const MAX_ONE_REG_LOG2 = 8n;

/** Bytes a KVM_GET/SET_ONE_REG register with this id holds (1 << size field). */
export function oneRegSize(id: bigint): number {
  const log2 = (BigInt.asUintN(64, id) & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT;
  if (log2 > MAX_ONE_REG_LOG2) throw new RangeError(`register id 0x${id.toString(16)} has size field ${log2} (largest defined: ${MAX_ONE_REG_LOG2})`);
  return 1 << Number(log2);
}

// ---- vGICv3 device attribute groups (KVM_{GET,SET,HAS}_DEVICE_ATTR on the vgic fd) ----

/** Distributor registers, 32-bit, attr = offset from the GICD base (mpidr field ignored). */
export const KVM_DEV_ARM_VGIC_GRP_DIST_REGS = 1;
/** Redistributor registers, 32-bit, attr = mpidr << 32 | offset from the vCPU's GICR base. */
export const KVM_DEV_ARM_VGIC_GRP_REDIST_REGS = 5;
/** CPU interface system registers (ICC_*_EL1), 64-bit, attr = mpidr << 32 | sysreg encoding. */
export const KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS = 6;
/** Line levels of level-triggered interrupts, 32 per access, attr = mpidr << 32 | info << 10 | intid. */
export const KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO = 7;
/** KVM_DEV_ARM_VGIC_GRP_CTRL attribute that makes the ITS/redistributors flush pending tables to guest RAM. */
export const KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES = 3n;
/** The first shared peripheral interrupt's INTID. */
export const GIC_SPI_BASE_INTID = 32;
/** LEVEL_INFO `info` value: the line level. */
export const VGIC_LEVEL_INFO_LINE_LEVEL = 0;

const MPIDR_SHIFT = 32n;
const LEVEL_INFO_SHIFT = 10n;
const LEVEL_INFO_INTID_MASK = 0x3ff;
const SYSREG_INSTR_MASK = 0xffffn;

/**
 * The 32-bit affinity the attributes carry for a vCPU: Aff3.Aff2.Aff1.Aff0,
 * from MPIDR_EL1 (Aff3 at bits 32..39, Aff2..Aff0 at 0..23).
 */
export function vgicMpidr(mpidrEl1: bigint): bigint {
  const aff3 = (mpidrEl1 >> 32n) & 0xffn;
  return (aff3 << 24n) | (mpidrEl1 & 0xffffffn);
}

/** attr of a distributor register at byte offset `offset` of GICD. */
export function distRegAttr(offset: number): bigint {
  checkOffset(offset);
  return BigInt(offset);
}

/** attr of a redistributor register at `offset` in the GICR frames of the vCPU with affinity `mpidr` (vgicMpidr). */
export function redistRegAttr(mpidr: bigint, offset: number): bigint {
  checkOffset(offset);
  return (mpidr << MPIDR_SHIFT) | BigInt(offset);
}

/** attr of a CPU interface system register (op0..op2) of the vCPU with affinity `mpidr`. */
export function cpuSysregAttr(mpidr: bigint, op0: number, op1: number, crn: number, crm: number, op2: number): bigint {
  return (mpidr << MPIDR_SHIFT) | (sysRegId(op0, op1, crn, crm, op2) & SYSREG_INSTR_MASK);
}

/** attr of the line levels of INTIDs intid..intid+31 (intid a multiple of 32) seen by the vCPU with affinity `mpidr`. */
export function levelInfoAttr(mpidr: bigint, intid: number): bigint {
  if (!Number.isInteger(intid) || intid < 0 || intid > LEVEL_INFO_INTID_MASK || intid % 32 !== 0) throw new RangeError(`LEVEL_INFO intid ${intid} must be a multiple of 32 in 0..1023`);
  return (mpidr << MPIDR_SHIFT) | (BigInt(VGIC_LEVEL_INFO_LINE_LEVEL) << LEVEL_INFO_SHIFT) | BigInt(intid);
}

function checkOffset(offset: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0 || offset >= 0x20000) throw new RangeError(`GIC register offset ${offset} is not a 4-byte aligned offset in the two 64 KiB GIC frames`);
}

/** A GICv3 register range: `count` 32-bit registers from `offset`. */
export interface GicRegRange {
  readonly name: string;
  readonly offset: number;
  readonly count: number;
}

/** GICD_TYPER: ITLinesNumber (bits 0..4) gives the number of interrupt IDs, 32 * (N + 1). */
export const GICD_TYPER = 0x0004;
export const GICD_TYPER_ITLINES_MASK = 0x1f;

/**
 * Distributor registers saved, for `nrIrqs` interrupts (from GICD_TYPER).
 * Per-interrupt arrays cover SPIs only (INTIDs 0..31 live in each
 * redistributor). GICD_CTLR first: its ARE/DS bits decide how the others
 * are read (under KVM, ARE is fixed at 1, but the order costs nothing).
 */
export function gicdRanges(nrIrqs: number): GicRegRange[] {
  const words = (bitsPerIrq: number) => Math.ceil((nrIrqs * bitsPerIrq) / 32);
  const spiWords = (bitsPerIrq: number) => Math.max(0, words(bitsPerIrq) - Math.ceil((32 * bitsPerIrq) / 32));
  const spiOffset = (base: number, bitsPerIrq: number) => base + (32 * bitsPerIrq) / 8;
  return [
    { name: 'GICD_CTLR', offset: 0x0000, count: 1 },
    { name: 'GICD_IGROUPR', offset: spiOffset(0x0080, 1), count: spiWords(1) },
    { name: 'GICD_ISENABLER', offset: spiOffset(0x0100, 1), count: spiWords(1) },
    { name: 'GICD_ISPENDR', offset: spiOffset(0x0200, 1), count: spiWords(1) },
    { name: 'GICD_ISACTIVER', offset: spiOffset(0x0300, 1), count: spiWords(1) },
    { name: 'GICD_IPRIORITYR', offset: spiOffset(0x0400, 8), count: spiWords(8) },
    { name: 'GICD_ICFGR', offset: spiOffset(0x0c00, 2), count: spiWords(2) },
    { name: 'GICD_IGRPMODR', offset: spiOffset(0x0d00, 1), count: spiWords(1) },
    // GICD_IROUTER<n> are 64-bit: two words each, for SPIs 32..nrIrqs-1.
    { name: 'GICD_IROUTER', offset: 0x6000 + 8 * 32, count: 2 * Math.max(0, nrIrqs - 32) },
  ];
}

/** SGI_base: the redistributor's second 64 KiB frame, holding the SGI/PPI registers. */
const GICR_SGI_BASE = 0x10000;

/**
 * Redistributor registers saved per vCPU: GICR_WAKER/PROPBASER/PENDBASER in
 * RD_base; the SGI/PPI group, enable, pending, active, priority and
 * configuration registers in SGI_base. (Offsets here are from RD_base; the
 * SGI_base ones are 0x10000 above, which the KVM attribute takes as is.)
 * GICR_CTLR last: once it enables LPIs, PROPBASER/PENDBASER stop taking writes.
 */
export const GICR_RANGES: readonly GicRegRange[] = [
  { name: 'GICR_PROPBASER', offset: 0x0070, count: 2 },
  { name: 'GICR_PENDBASER', offset: 0x0078, count: 2 },
  { name: 'GICR_IGROUPR0', offset: GICR_SGI_BASE + 0x0080, count: 1 },
  { name: 'GICR_ISENABLER0', offset: GICR_SGI_BASE + 0x0100, count: 1 },
  { name: 'GICR_ISPENDR0', offset: GICR_SGI_BASE + 0x0200, count: 1 },
  { name: 'GICR_ISACTIVER0', offset: GICR_SGI_BASE + 0x0300, count: 1 },
  { name: 'GICR_IPRIORITYR', offset: GICR_SGI_BASE + 0x0400, count: 8 },
  { name: 'GICR_ICFGR0', offset: GICR_SGI_BASE + 0x0c00, count: 2 },
  { name: 'GICR_IGRPMODR0', offset: GICR_SGI_BASE + 0x0d00, count: 1 },
  { name: 'GICR_CTLR', offset: 0x0000, count: 1 },
];

/** A GIC CPU interface system register (ICC_*_EL1) by its op0..op2 encoding. */
export interface IccReg {
  readonly name: string;
  readonly enc: readonly [number, number, number, number, number];
  /** Exists only with enough priority bits: KVM answers EINVAL for it otherwise. */
  readonly optional?: true;
}

/**
 * CPU interface registers saved per vCPU (Arm GIC architecture spec, ICC_*
 * encodings). ICC_SRE_EL1 first and ICC_CTLR_EL1 next: they decide how the
 * rest are interpreted. Which active-priority registers AP0R/AP1R<n>
 * exist depends on the priority bits the vCPU interface implements (KVM:
 * n <= 0 for 5 bits, 1 for 6, 3 for 7, vgic_v3_max_apr_idx); KVM_HAS_DEVICE_ATTR
 * accepts all of them, the access then fails with EINVAL, and the saver
 * skips those marked optional.
 */
export const ICC_REGS: readonly IccReg[] = [
  { name: 'ICC_SRE_EL1', enc: [3, 0, 12, 12, 5] },
  { name: 'ICC_CTLR_EL1', enc: [3, 0, 12, 12, 4] },
  { name: 'ICC_PMR_EL1', enc: [3, 0, 4, 6, 0] },
  { name: 'ICC_BPR0_EL1', enc: [3, 0, 12, 8, 3] },
  { name: 'ICC_BPR1_EL1', enc: [3, 0, 12, 12, 3] },
  { name: 'ICC_AP0R0_EL1', enc: [3, 0, 12, 8, 4] },
  { name: 'ICC_AP0R1_EL1', enc: [3, 0, 12, 8, 5], optional: true },
  { name: 'ICC_AP0R2_EL1', enc: [3, 0, 12, 8, 6], optional: true },
  { name: 'ICC_AP0R3_EL1', enc: [3, 0, 12, 8, 7], optional: true },
  { name: 'ICC_AP1R0_EL1', enc: [3, 0, 12, 9, 0] },
  { name: 'ICC_AP1R1_EL1', enc: [3, 0, 12, 9, 1], optional: true },
  { name: 'ICC_AP1R2_EL1', enc: [3, 0, 12, 9, 2], optional: true },
  { name: 'ICC_AP1R3_EL1', enc: [3, 0, 12, 9, 3], optional: true },
  { name: 'ICC_IGRPEN0_EL1', enc: [3, 0, 12, 12, 6] },
  { name: 'ICC_IGRPEN1_EL1', enc: [3, 0, 12, 12, 7] },
];
