/**
 * arm64 vCPU and interrupt-controller setup through KVM: KVM_ARM_VCPU_INIT
 * with PSCI 0.2 (secondaries powered off until the guest's PSCI CPU_ON), the
 * boot vCPU's entry registers, and the in-kernel GICv3.
 */
import {
  KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR,
  KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_TYPE_ARM_VGIC_V3, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
  PSTATE_EL1H_DAIF_MASKED, REG_MPIDR_EL1, REG_PC, REG_PSTATE, xRegId,
} from '../../lib/kvm/arm64.js';
import { close as closeFd } from '../../lib/kvm/ffi.js';
import type { Vcpu } from '../../lib/kvm/vcpu.js';
import type { Vm } from '../../lib/kvm/vm.js';
import { GIC_DIST_BASE, GIC_REDIST_BASE } from './layout.js';

/**
 * Initializes every vCPU for KVM's preferred target with PSCI 0.2; all but
 * vCPU 0 start powered off. Returns each vCPU's MPIDR_EL1, for the device tree.
 */
export function initVcpus(vm: Vm, vcpus: readonly Vcpu[]): bigint[] {
  const preferred = vm.armPreferredTarget();
  for (const v of vcpus) {
    const features = [...preferred.features, KVM_ARM_VCPU_PSCI_0_2];
    if (v.id !== 0) features.push(KVM_ARM_VCPU_POWER_OFF);
    v.armInit({ target: preferred.target, features });
  }
  return vcpus.map((v) => v.getOneReg(REG_MPIDR_EL1));
}

/** The boot vCPU's registers for the arm64 Linux boot protocol: PC = entry, X0 = FDT, X1..X3 = 0, EL1h masked. */
export function setBootRegisters(vcpu: Vcpu, entry: number, fdtAddr: number): void {
  vcpu.setOneReg(REG_PSTATE, PSTATE_EL1H_DAIF_MASKED);
  vcpu.setOneReg(xRegId(0), BigInt(fdtAddr));
  for (const n of [1, 2, 3]) vcpu.setOneReg(xRegId(n), 0n);
  vcpu.setOneReg(REG_PC, BigInt(entry));
}

function u64(v: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

/**
 * Creates the in-kernel GICv3 at the layout's addresses and initializes it.
 * Call after every vCPU exists (the redistributors are per vCPU) and before
 * any runs. Returns the device fd, which the caller closes after the VM.
 */
export function createGicV3(vm: Vm): number {
  const fd = vm.createDevice(KVM_DEV_TYPE_ARM_VGIC_V3);
  try {
    vm.setDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_DIST, u64(GIC_DIST_BASE));
    vm.setDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_VGIC_V3_ADDR_TYPE_REDIST, u64(GIC_REDIST_BASE));
    vm.setDeviceAttr(fd, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, null);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  return fd;
}
