/**
 * vGICv3 state save/restore through the KVM device attribute groups
 * (Documentation/virt/kvm/devices/arm-vgic-v3.rst):
 * - DIST_REGS: GICD_CTLR and, for every SPI, group, enable, pending, active,
 *   priority, configuration, group modifier and routing (gicdRanges);
 * - REDIST_REGS per vCPU: PROPBASER/PENDBASER, the SGI/PPI registers, GICR_CTLR (GICR_RANGES);
 * - CPU_SYSREGS per vCPU: the ICC_*_EL1 CPU interface registers (ICC_REGS);
 * - LEVEL_INFO: the line level of every SPI (level-triggered inputs the
 *   VMM drives), 32 per access.
 * Not saved: an ITS (flintvm creates none) and LPI pending tables (guest RAM,
 * flushed with KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES when an ITS exists).
 * All vCPUs must be paused; the kernel answers EBUSY otherwise.
 */
import { KvmError, SnapshotStateError } from '../../lib/errors.js';
import {
  cpuSysregAttr, distRegAttr, GIC_SPI_BASE_INTID, GICD_TYPER, GICD_TYPER_ITLINES_MASK, gicdRanges, GICR_RANGES, ICC_REGS,
  KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO,
  KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, levelInfoAttr, redistRegAttr, vgicMpidr, type GicRegRange,
} from '../../lib/kvm/arm64-state.js';
import { array, expect, fromHex64, intIn, object, toHex64 } from '../../lib/kvm/state-json.js';
import type { Vm } from '../../lib/kvm/vm.js';

export const VGIC_STATE_VERSION = 1;
const EINVAL = 22;
/** Most interrupt IDs a GICv3 distributor has (ITLinesNumber 31). */
const MAX_IRQS = 1024;

/** Saved vGICv3 state (JSON-serialisable). Offsets are numbers, values hex. */
export interface VgicV3State {
  version: number;
  arch: 'arm64';
  nrIrqs: number;
  /** [offset, u32] of distributor registers, in restore order. */
  dist: [number, string][];
  /** Per vCPU (index order): its vGIC affinity and registers. */
  cpus: { mpidr: string; redist: [number, string][]; icc: [string, string][] }[];
  /** [intid (multiple of 32), u32 bitmap of line levels]. */
  levels: [number, string][];
}

function u32buf(v = 0): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}
const readU32 = (b: Uint8Array) => new DataView(b.buffer).getUint32(0, true);

function words(r: GicRegRange): number[] {
  return Array.from({ length: r.count }, (_, i) => r.offset + 4 * i);
}

/** Interrupt IDs of the distributor behind `fd` (GICD_TYPER). */
export function vgicNrIrqs(vm: Vm, fd: number): number {
  const b = u32buf();
  vm.getDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, distRegAttr(GICD_TYPER), b);
  return 32 * ((readU32(b) & GICD_TYPER_ITLINES_MASK) + 1);
}

/** Saves the vGIC behind `fd`; `mpidrs` are the vCPUs' MPIDR_EL1 values, by vCPU index. */
export function saveVgicState(vm: Vm, fd: number, mpidrs: readonly bigint[]): VgicV3State {
  const nrIrqs = vgicNrIrqs(vm, fd);
  const get32 = (group: number, attr: bigint) => {
    const b = u32buf();
    vm.getDeviceAttr(fd, group, attr, b);
    return toHex64(BigInt(readU32(b)));
  };
  // A range is kept when KVM implements its first word (one KVM_HAS_DEVICE_ATTR per range, not per word).
  const dist = gicdRanges(nrIrqs).filter((r) => r.count > 0 && vm.hasDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, distRegAttr(r.offset)))
    .flatMap(words).map((o): [number, string] => [o, get32(KVM_DEV_ARM_VGIC_GRP_DIST_REGS, distRegAttr(o))]);
  const cpus = mpidrs.map((m) => {
    const aff = vgicMpidr(m);
    const redist = GICR_RANGES.filter((r) => vm.hasDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, redistRegAttr(aff, r.offset)))
      .flatMap(words).map((o): [number, string] => [o, get32(KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, redistRegAttr(aff, o))]);
    const icc: [string, string][] = [];
    for (const r of ICC_REGS) {
      const b = new Uint8Array(8);
      try {
        vm.getDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, cpuSysregAttr(aff, ...r.enc), b);
      } catch (e) {
        if (r.optional && e instanceof KvmError && e.errno === EINVAL) continue; // not implemented with this many priority bits
        throw e;
      }
      icc.push([r.name, toHex64(new DataView(b.buffer).getBigUint64(0, true))]);
    }
    return { mpidr: toHex64(m), redist, icc };
  });
  const aff0 = mpidrs.length > 0 ? vgicMpidr(mpidrs[0]!) : 0n;
  const levels: [number, string][] = [];
  for (let intid = GIC_SPI_BASE_INTID; intid < nrIrqs; intid += 32) levels.push([intid, get32(KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, levelInfoAttr(aff0, intid))]);
  return { version: VGIC_STATE_VERSION, arch: 'arm64', nrIrqs, dist, cpus, levels };
}

function regPairs(field: string, value: unknown, allowed: ReadonlySet<number>): [number, number][] {
  return array(field, value, MAX_IRQS * 4).map((e, i) => {
    const p = array(`${field}[${i}]`, e, 2);
    const off = intIn(`${field}[${i}][0]`, p[0], 0, 0x1ffff);
    if (!allowed.has(off)) throw new SnapshotStateError(`${field}[${i}][0]`, `offset 0x${off.toString(16)} is not a saved GIC register`, off);
    const v = fromHex64(`${field}[${i}][1]`, p[1]);
    if (v > 0xffff_ffffn) throw new SnapshotStateError(`${field}[${i}][1]`, 'must fit 32 bits', p[1]);
    return [off, Number(v)];
  });
}

/**
 * Restores saved vGIC state into the (initialized, not yet running) vGIC
 * behind `fd`, whose vCPUs have MPIDR_EL1 `mpidrs`. Validated first:
 * interrupt count and affinities must match, every offset must be one the
 * saver writes, values must fit. Order: distributor, then per vCPU the
 * redistributor (GICR_CTLR last) and the CPU interface (ICC_SRE_EL1 and
 * ICC_CTLR_EL1 first), then line levels.
 */
export function restoreVgicState(vm: Vm, fd: number, mpidrs: readonly bigint[], state: unknown, at = 'vgic'): void {
  const s = object(at, state);
  expect(`${at}.version`, s.version, VGIC_STATE_VERSION, 'the state was written by an incompatible flintvm');
  expect(`${at}.arch`, s.arch, 'arm64', 'restore it on an arm64 host');
  const nrIrqs = vgicNrIrqs(vm, fd);
  if (intIn(`${at}.nrIrqs`, s.nrIrqs, 32, MAX_IRQS) !== nrIrqs) throw new SnapshotStateError(`${at}.nrIrqs`, `saved with ${String(s.nrIrqs)} interrupts, this vGIC has ${nrIrqs}`, s.nrIrqs);
  const dist = regPairs(`${at}.dist`, s.dist, new Set(gicdRanges(nrIrqs).flatMap(words)));
  const cpusIn = array(`${at}.cpus`, s.cpus, mpidrs.length);
  if (cpusIn.length !== mpidrs.length) throw new SnapshotStateError(`${at}.cpus`, `saved for ${cpusIn.length} vCPUs, this VM has ${mpidrs.length}`, cpusIn.length);
  const redistOffsets = new Set(GICR_RANGES.flatMap(words));
  const iccByName = new Map(ICC_REGS.map((r) => [r.name, r]));
  const cpus = cpusIn.map((c, i) => {
    const o = object(`${at}.cpus[${i}]`, c);
    if (fromHex64(`${at}.cpus[${i}].mpidr`, o.mpidr) !== mpidrs[i]) throw new SnapshotStateError(`${at}.cpus[${i}].mpidr`, `saved for MPIDR ${String(o.mpidr)}, vCPU ${i} here is ${toHex64(mpidrs[i]!)}`, o.mpidr);
    const redist = regPairs(`${at}.cpus[${i}].redist`, o.redist, redistOffsets);
    const icc = array(`${at}.cpus[${i}].icc`, o.icc, ICC_REGS.length).map((e, j) => {
      const p = array(`${at}.cpus[${i}].icc[${j}]`, e, 2);
      const reg = typeof p[0] === 'string' ? iccByName.get(p[0]) : undefined;
      if (!reg) throw new SnapshotStateError(`${at}.cpus[${i}].icc[${j}][0]`, 'is not a known ICC register name', p[0]);
      return { reg, value: fromHex64(`${at}.cpus[${i}].icc[${j}][1]`, p[1]) };
    });
    return { aff: vgicMpidr(mpidrs[i]!), redist, icc };
  });
  const levels = array(`${at}.levels`, s.levels, MAX_IRQS / 32).map((e, i) => {
    const p = array(`${at}.levels[${i}]`, e, 2);
    const intid = intIn(`${at}.levels[${i}][0]`, p[0], GIC_SPI_BASE_INTID, nrIrqs - 32);
    if (intid % 32 !== 0) throw new SnapshotStateError(`${at}.levels[${i}][0]`, 'must be a multiple of 32', intid);
    const v = fromHex64(`${at}.levels[${i}][1]`, p[1]);
    if (v > 0xffff_ffffn) throw new SnapshotStateError(`${at}.levels[${i}][1]`, 'must fit 32 bits', p[1]);
    return [intid, Number(v)] as const;
  });

  for (const [off, v] of dist) vm.setDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, distRegAttr(off), u32buf(v));
  for (const c of cpus) {
    for (const [off, v] of c.redist) vm.setDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, redistRegAttr(c.aff, off), u32buf(v));
    for (const { reg, value } of c.icc) {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, value, true);
      vm.setDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, cpuSysregAttr(c.aff, ...reg.enc), b);
    }
  }
  const aff0 = cpus[0]?.aff ?? 0n;
  for (const [intid, v] of levels) vm.setDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO, levelInfoAttr(aff0, intid), u32buf(v));
}
