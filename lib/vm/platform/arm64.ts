/**
 * The arm64 platform: a device-tree machine with an in-kernel GICv3, PSCI,
 * a 16550A UART and a PL031 RTC on MMIO, and virtio-mmio devices the FDT
 * announces (arch/arm64/layout.ts has the map).
 */
import { createRequire } from 'node:module';
import type { DeviceSpec } from '../../vcpu/protocol.js';
import type { DeviceParams } from '../wiring.js';
import { spiIrqLine } from '../../kvm/arm64.js';
import { Pl031 } from '../../../devices/legacy/pl031.js';
import * as layout from '../../../arch/arm64/layout.js';
import { ARM64_DEFAULT_CMDLINE, prepareArm64Boot } from '../../../arch/arm64/boot.js';
import { createGicV3, initVcpus, setBootRegisters } from '../../../arch/arm64/cpu.js';
import { restoreVcpuState, saveVcpuState } from '../../../arch/arm64/vcpu-state.js';
import { restoreVgicState, saveVgicState } from '../../../arch/arm64/vgic-state.js';
import { SnapshotStateError } from '../../errors.js';
import type { Platform, PlatformInputs, PlatformPlan } from './platform.js';

const require = createRequire(import.meta.url);
/** Random bytes for the guest's seed. node:crypto is loaded here, when an arm64 VM is built, not by every process that loads flintvm (2-3 ms of a cold start). */
function randomSeed(n: number): Buffer {
  return (require('node:crypto') as typeof import('node:crypto')).randomBytes(n);
}

const params = (p: DeviceParams) => p;
/** Bytes of /chosen/rng-seed: enough to initialize the guest's CRNG without waiting for virtio-rng. */
const RNG_SEED_BYTES = 64;

function plan(p: PlatformInputs): PlatformPlan {
  const devices: DeviceSpec[] = [
    { space: 'mmio', base: layout.UART_BASE, length: layout.UART_SIZE, params: params({ kind: 'serial8250', state: p.serialState, irq: spiIrqLine(layout.UART_SPI), output: p.consoleOutput }) },
    { space: 'mmio', base: layout.RTC_BASE, length: layout.RTC_SIZE, params: params({ kind: 'pl031', state: Pl031.createState() }) },
    { space: 'mmio', base: layout.GUEST_CONTROL_BASE, length: layout.GUEST_CONTROL_SIZE, params: params({ kind: 'guest-control' }) },
  ];
  // The GICv3 device and the vCPUs' MPIDRs, once setupVcpus made them (saveState needs both).
  let gic = -1;
  let mpidrs: readonly bigint[] = [];
  return {
    memory: layout.ramRegions(p.cfg.memoryMiB * layout.MiB),
    devices,
    consoleIrqLine: spiIrqLine(layout.UART_SPI),
    async setupVm() {
      p.mark('vmReady');
    },
    async setupVcpus({ vm, memory, vcpus }) {
      mpidrs = initVcpus(vm, vcpus);
      // The GIC needs every vCPU (one redistributor each); irqfds need the GIC.
      gic = createGicV3(vm);
      p.adoptFd(gic);
      await p.wireVirtio(vm);
      if (p.restore) {
        const state = p.restore;
        if (state.arch !== 'arm64') throw new SnapshotStateError('arch', `the snapshot is of an ${state.arch} guest; this host runs arm64 guests`, state.arch);
        if (state.vcpus.length !== vcpus.length) throw new SnapshotStateError('vcpus', `${state.vcpus.length} saved vCPUs for a VM with ${vcpus.length}`, state.vcpus.length);
        // Registers (timers included) first, then the distributor and redistributors, which name vCPUs by MPIDR.
        vcpus.forEach((v, i) => restoreVcpuState(v, state.vcpus[i], `platform.vcpus[${i}]`));
        restoreVgicState(vm, gic, mpidrs, state.vm, 'platform.vm');
        p.mark('kernelLoaded');
        return;
      }
      const boot = prepareArm64Boot(memory, {
        kernel: p.kernel, initrd: p.initrd, cmdline: p.cmdline, mpidrs, virtio: p.virtio, rngSeed: randomSeed(RNG_SEED_BYTES),
      });
      setBootRegisters(vcpus[0]!, boot.entry, boot.fdtAddr);
      p.mark('kernelLoaded');
    },
    saveState({ vm, vcpus }) {
      const saved = vcpus.map((v) => saveVcpuState(v));
      return { arch: 'arm64', vm: saveVgicState(vm, gic, mpidrs), vcpus: saved };
    },
  };
}

export const arm64Platform: Platform = {
  arch: 'arm64',
  defaultCmdline: ARM64_DEFAULT_CMDLINE,
  maxVcpus: layout.MAX_VCPUS,
  virtioSlot: layout.virtioMmioSlot,
  // The guest maps the windows as Device memory: its uncached loads could miss the host's cached writes
  // (KVM forces them cacheable only with FEAT_S2FWB, which userspace cannot ask about).
  registerPagesInGuest: false,
  virtioCmdline: () => [],
  plan,
};
