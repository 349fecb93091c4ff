/** The x86_64 platform: PC-style legacy ports, IOAPIC/PIT in KVM, Linux 64-bit or PVH boot. */
import { KVM_PIT_SPEAKER_DUMMY } from '../../kvm/structs.js';
import { KVM_CAP_TSC_DEADLINE_TIMER } from '../../kvm/ioctls.js';
import type { DeviceSpec } from '../../vcpu/protocol.js';
import type { Kvm } from '../../kvm/kvm.js';
import type { Vm } from '../../kvm/vm.js';
import type { Vcpu } from '../../kvm/vcpu.js';
import type { DeviceParams } from '../wiring.js';
import { log } from '../../log.js';
import { I8042 } from '../../../devices/legacy/i8042.js';
import * as layout from '../../../arch/x86_64/layout.js';
import { prepareX86Boot, X86_64_DEFAULT_CMDLINE } from '../../../arch/x86_64/boot.js';
import { buildCpuid } from '../../../arch/x86_64/cpuid.js';
import { bootMsrs } from '../../../arch/x86_64/msr.js';
import { configureLapicLint } from '../../../arch/x86_64/lapic.js';
import { probeX86StateCaps, restoreVcpuState, saveVcpuState } from '../../../arch/x86_64/vcpu-state.js';
import { restoreVmState, saveVmState } from '../../../arch/x86_64/vm-state.js';
import { SnapshotStateError } from '../../errors.js';
import type { Platform, PlatformInputs, PlatformPlan, PlatformState } from './platform.js';

const debug = log('builder');
const params = (p: DeviceParams) => p;

function plan(p: PlatformInputs): PlatformPlan {
  const { cfg } = p;
  const devices: DeviceSpec[] = [
    { space: 'pio', base: layout.COM1_PORT, length: layout.COM_PORT_COUNT, params: params({ kind: 'serial8250', state: p.serialState, irq: layout.COM1_IRQ, output: p.consoleOutput }) },
    { space: 'pio', base: layout.I8042_DATA_PORT, length: layout.I8042_COMMAND_PORT - layout.I8042_DATA_PORT + 1, params: params({ kind: 'i8042', state: I8042.createState() }) },
    { space: 'pio', base: layout.BOOT_TIMER_PORT, length: 2, params: params({ kind: 'guest-control' }) },
  ];
  return {
    memory: layout.ramRegions(cfg.memoryMiB * layout.MiB),
    devices,
    consoleIrqLine: layout.COM1_IRQ,
    async setupVm(vm) {
      // Intel VMX needs three private pages for its real-mode TSS and one for
      // the identity map; AMD ignores them. Both sit in the MMIO hole.
      vm.setTssAddr(layout.KVM_TSS_ADDR);
      vm.setIdentityMapAddr(layout.KVM_IDENTITY_MAP_ADDR);
      await vm.createIrqchip();
      await vm.createPit2(KVM_PIT_SPEAKER_DUMMY);
      p.mark('vmReady');
    },
    async setupVcpus({ kvm, vm, memory, vcpus }) {
      // The irqfds and ioeventfds need the irqchip, not the vCPUs; here, each one's wait in the kernel
      // overlaps the workers' start (lib/machine.ts starts them before setupVcpus).
      await p.wireVirtio(vm);
      if (p.restore) {
        restoreX86(kvm, vm, vcpus, p.restore);
        p.mark('kernelLoaded');
        return;
      }
      const supported = kvm.supportedCpuid();
      const boot = prepareX86Boot(memory, { kernel: p.kernel, initrd: p.initrd, cmdline: p.cmdline, vcpus: cfg.vcpus, bootProtocol: cfg.bootProtocol, cpuid: supported });
      const msrIndices = new Set(kvm.msrIndexList());
      const tscDeadline = kvm.checkExtension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
      for (const v of vcpus) {
        v.setCpuid2(buildCpuid(supported, v.id, cfg.vcpus, { tscDeadline }));
        const { entries } = bootMsrs(msrIndices);
        const n = v.setMsrs(entries);
        if (n < entries.length) debug('vcpu %d: KVM took %d of %d boot MSRs (first refused: 0x%s)', v.id, n, entries.length, entries[n]?.index.toString(16));
        const lapic = v.getLapic();
        configureLapicLint(lapic);
        v.setLapic(lapic);
        v.setFpu(boot.fpu);
        // Only the bootstrap processor starts at the kernel entry; the others
        // wait for INIT/SIPI from the guest through the in-kernel LAPIC.
        if (v.id === 0) {
          v.setSregs(boot.sregsFor(v.getSregs()));
          v.setRegs(boot.regs);
        }
      }
      p.mark('kernelLoaded');
    },
    saveState({ kvm, vm, vcpus }) {
      const caps = probeX86StateCaps(kvm, vm);
      // VM-wide state last: the vCPUs' saves do not touch it, and kvmclock is then closest to the memory save.
      const saved = vcpus.map((v) => saveVcpuState(v, caps));
      return { arch: 'x86_64', vm: saveVmState(vm), vcpus: saved };
    },
  };
}

/** KVM's order: the VM-wide chips and clock, then each vCPU (restoreVcpuState orders CPUID, LAPIC, MSRs, events). */
function restoreX86(kvm: Kvm, vm: Vm, vcpus: readonly Vcpu[], state: PlatformState): void {
  if (state.arch !== 'x86_64') throw new SnapshotStateError('arch', `the snapshot is of an ${state.arch} guest; this host runs x86_64 guests`, state.arch);
  if (state.vcpus.length !== vcpus.length) throw new SnapshotStateError('vcpus', `${state.vcpus.length} saved vCPUs for a VM with ${vcpus.length}`, state.vcpus.length);
  const caps = probeX86StateCaps(kvm, vm);
  restoreVmState(vm, state.vm, 'platform.vm');
  vcpus.forEach((v, i) => restoreVcpuState(v, state.vcpus[i], caps, `platform.vcpus[${i}]`));
}

export const x86_64Platform: Platform = {
  arch: 'x86_64',
  defaultCmdline: X86_64_DEFAULT_CMDLINE,
  maxVcpus: 255,
  virtioSlot: layout.virtioMmioSlot,
  // x86 keeps every memory type coherent with the caches, and KVM maps memory slots write-back.
  registerPagesInGuest: true,
  // virtio_mmio.device=<size>@<base>:<irq> announces each device (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES);
  // the kernel registers them in this order, which makes drive i /dev/vd<a+i>.
  virtioCmdline: (slots) => slots.map((s) => `virtio_mmio.device=${s.size}@0x${s.base.toString(16)}:${s.irq}`),
  plan,
};
