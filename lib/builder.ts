/**
 * The one place that knows every layer: turns a validated MicroVMConfig into
 * a Machine (KVM VM, memory, vCPUs, devices) ready to start, for x86-64 Linux.
 */
import { readFile } from 'node:fs/promises';
import { Machine } from './machine.js';
import { Kvm } from './kvm/kvm.js';
import { KVM_PIT_SPEAKER_DUMMY } from './kvm/structs.js';
import type { ResolvedConfig } from './config.js';
import { ConfigError } from './errors.js';
import { ByteRing } from './io/byte-ring.js';
import type { DeviceSpec } from './vcpu/protocol.js';
import type { DeviceParams } from './wiring.js';
import type { BootTimings } from './microvm.js';
import { log } from './log.js';
import { Serial8250 } from '../devices/legacy/serial-8250.js';
import { I8042 } from '../devices/legacy/i8042.js';
import * as layout from '../arch/x86_64/layout.js';
import { prepareX86Boot, X86_64_DEFAULT_CMDLINE } from '../arch/x86_64/boot.js';
import { buildCpuid } from '../arch/x86_64/cpuid.js';
import { bootMsrs } from '../arch/x86_64/msr.js';
import { configureLapicLint } from '../arch/x86_64/lapic.js';

const debug = log('builder');
const DEVICE_MODULE = new URL('./wiring.js', import.meta.url).href;
const CONSOLE_RING_BYTES = 256 * 1024;

/** A built, not yet started VM and the main thread's ends of its devices. */
export interface BuiltVm {
  readonly machine: Machine;
  /** Console output from the guest's UART. */
  readonly ring: ByteRing;
  /** Feeds console input to the UART; returns how many bytes it took. */
  sendInput(bytes: Uint8Array): number;
}

/** The command line the guest gets: the default (or the user's) plus extras. */
export function effectiveCmdline(cfg: ResolvedConfig): string {
  return [cfg.cmdline ?? X86_64_DEFAULT_CMDLINE, cfg.extraCmdline ?? ''].join(' ').trim();
}

export async function buildVm(cfg: ResolvedConfig, hooks: { timings: BootTimings; now: () => number }): Promise<BuiltVm> {
  const [kernel, initrd] = await Promise.all([readFile(cfg.kernel), cfg.initrd ? readFile(cfg.initrd) : Promise.resolve(undefined)]);
  const kvm = Kvm.open();
  let maxVcpus: number;
  try {
    maxVcpus = kvm.maxVcpus();
  } catch (e) {
    kvm.close();
    throw e;
  }
  if (cfg.vcpus > maxVcpus) {
    kvm.close();
    throw new ConfigError('vcpus', `${cfg.vcpus} is more than this host's KVM maximum of ${maxVcpus}`, cfg.vcpus);
  }

  const ring = ByteRing.create(CONSOLE_RING_BYTES);
  const serialState = Serial8250.createState();
  const i8042State = I8042.createState();
  const params = (p: DeviceParams) => p;
  const devices: DeviceSpec[] = [
    { space: 'pio', base: layout.COM1_PORT, length: layout.COM_PORT_COUNT, params: params({ kind: 'serial8250', state: serialState, irq: layout.COM1_IRQ, output: ring.sab }) },
    { space: 'pio', base: layout.I8042_DATA_PORT, length: layout.I8042_COMMAND_PORT - layout.I8042_DATA_PORT + 1, params: params({ kind: 'i8042', state: i8042State }) },
    { space: 'pio', base: layout.BOOT_TIMER_PORT, length: 2, params: params({ kind: 'guest-control' }) },
  ];
  const cmdline = effectiveCmdline(cfg);
  debug('building: %d MiB, %d vCPUs, cmdline %s', cfg.memoryMiB, cfg.vcpus, cmdline);

  const machine = await Machine.create({
    memory: layout.ramRegions(cfg.memoryMiB * layout.MiB),
    vcpus: cfg.vcpus,
    devices,
    deviceModule: DEVICE_MODULE,
    setupVm(vm) {
      // Intel VMX needs three private pages for its real-mode TSS and one for
      // the identity map; AMD ignores them. Both sit in the MMIO hole.
      vm.setTssAddr(layout.KVM_TSS_ADDR);
      vm.setIdentityMapAddr(layout.KVM_IDENTITY_MAP_ADDR);
      vm.createIrqchip();
      vm.createPit2(KVM_PIT_SPEAKER_DUMMY);
      hooks.timings.vmReady = hooks.now();
    },
    setupVcpus({ kvm: k, memory, vcpus }) {
      const supported = k.supportedCpuid();
      const boot = prepareX86Boot(memory, { kernel, initrd, cmdline, vcpus: cfg.vcpus, bootProtocol: cfg.bootProtocol, cpuid: supported });
      const msrIndices = new Set(k.msrIndexList());
      for (const v of vcpus) {
        v.setCpuid2(buildCpuid(supported, v.id, cfg.vcpus));
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
      hooks.timings.kernelLoaded = hooks.now();
    },
  }, kvm);
  hooks.timings.workersReady = hooks.now();

  // The main thread's own instance over the UART's shared state, for console input.
  const vmForIrq = machine.vm;
  const inputSerial = new Serial8250(serialState, {
    trigger: {
      trigger: () => {
        // Input can race with the VM's exit; a closed VM fd just means nobody is listening.
        try {
          vmForIrq.irqLine(layout.COM1_IRQ, 1);
          vmForIrq.irqLine(layout.COM1_IRQ, 0);
        } catch (e) {
          debug('console input interrupt dropped: %s', (e as Error).message);
        }
      },
    },
    out: (b) => { ring.write(b); },
  });
  return { machine, ring, sendInput: (b) => (machine.state === 'exited' ? b.length : inputSerial.enqueueInput(b)) };
}
