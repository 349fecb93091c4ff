/**
 * The device tree of a flintvm arm64 guest: what a minimal VMM tells the
 * kernel instead of ACPI tables. Memory, one cpu node per vCPU (PSCI
 * enable-method), PSCI over HVC (KVM implements it), the GICv3, the
 * architected timer, the console UART, the PL031 RTC with the fixed APB
 * clock its AMBA driver wants, one virtio-mmio node per device, and
 * `chosen` with the command line, console and initrd.
 */
import { FdtWriter, u64Cells } from './fdt.js';
import * as L from './layout.js';

const PHANDLE_GIC = 1;
const PHANDLE_APB_CLOCK = 2;

// Interrupt specifier cells of the GIC binding: <type number flags>.
const GIC_SPI = 0;
const GIC_PPI = 1;
const IRQ_TYPE_EDGE_RISING = 1;
const IRQ_TYPE_LEVEL_HIGH = 4;

/** The architected timer's PPIs: secure physical, non-secure physical, virtual, hypervisor. */
export const TIMER_PPIS = [13, 14, 11, 10] as const;

export interface MachineFdtOptions {
  /** Guest RAM, contiguous from {@link L.RAM_BASE}. */
  readonly memory: ReadonlyArray<{ gpa: number; size: number }>;
  /** MPIDR_EL1 of each vCPU, in vCPU order (the affinity bits become each cpu node's `reg`). */
  readonly mpidrs: readonly bigint[];
  readonly cmdline: string;
  /** Where the initrd went, if there is one. */
  readonly initrd?: { addr: number; size: number };
  /** The virtio-mmio slots in use, in device order. */
  readonly virtio: readonly L.VirtioMmioSlot[];
  /** Bytes for /chosen/rng-seed (the kernel credits them to its RNG at boot); none when absent. */
  readonly rngSeed?: Uint8Array;
}

const hex = (n: number): string => n.toString(16);
const reg = (base: number, size: number): number[] => [...u64Cells(base), ...u64Cells(size)];

export function buildMachineFdt(o: MachineFdtOptions): Uint8Array {
  if (o.mpidrs.length === 0 || o.mpidrs.length > L.MAX_VCPUS) throw new RangeError(`${o.mpidrs.length} vCPUs; the arm64 layout has room for 1..${L.MAX_VCPUS}`);
  const w = new FdtWriter();
  w.beginNode('')
    .prop('compatible', 'linux,dummy-virt')
    .prop('#address-cells', [2])
    .prop('#size-cells', [2])
    .prop('interrupt-parent', [PHANDLE_GIC]);

  w.beginNode('chosen').prop('bootargs', o.cmdline).prop('stdout-path', `/uart@${hex(L.UART_BASE)}`);
  if (o.initrd) {
    w.prop('linux,initrd-start', u64Cells(o.initrd.addr)).prop('linux,initrd-end', u64Cells(o.initrd.addr + o.initrd.size));
  }
  if (o.rngSeed && o.rngSeed.length > 0) w.prop('rng-seed', o.rngSeed);
  w.endNode();

  const ramStart = Math.min(...o.memory.map((r) => r.gpa));
  const ramEnd = Math.max(...o.memory.map((r) => r.gpa + r.size));
  w.beginNode(`memory@${hex(ramStart)}`).prop('device_type', 'memory').prop('reg', reg(ramStart, ramEnd - ramStart)).endNode();

  w.beginNode('cpus').prop('#address-cells', [2]).prop('#size-cells', [0]);
  for (const mpidr of o.mpidrs) {
    const aff = mpidr & 0xff00ffffffn;
    w.beginNode(`cpu@${aff.toString(16)}`)
      .prop('device_type', 'cpu')
      .prop('compatible', 'arm,arm-v8')
      .prop('enable-method', 'psci')
      .prop('reg', u64Cells(aff))
      .endNode();
  }
  w.endNode();

  w.beginNode('psci').prop('compatible', 'arm,psci-0.2').prop('method', 'hvc').endNode();

  w.beginNode(`intc@${hex(L.GIC_DIST_BASE)}`)
    .prop('compatible', 'arm,gic-v3')
    .prop('#interrupt-cells', [3])
    .prop('interrupt-controller')
    .prop('reg', [...reg(L.GIC_DIST_BASE, L.GIC_DIST_SIZE), ...reg(L.GIC_REDIST_BASE, L.GIC_REDIST_SIZE_PER_VCPU * o.mpidrs.length)])
    .prop('phandle', [PHANDLE_GIC])
    .endNode();

  w.beginNode('timer')
    .prop('compatible', 'arm,armv8-timer')
    .prop('always-on')
    .prop('interrupts', TIMER_PPIS.flatMap((ppi) => [GIC_PPI, ppi, IRQ_TYPE_LEVEL_HIGH]))
    .endNode();

  w.beginNode('apb-pclk')
    .prop('compatible', 'fixed-clock')
    .prop('#clock-cells', [0])
    .prop('clock-frequency', [24_000_000])
    .prop('clock-output-names', 'clk24mhz')
    .prop('phandle', [PHANDLE_APB_CLOCK])
    .endNode();

  // Edge-triggered: the device models pulse their line (and irqfd injects a pulse).
  w.beginNode(`uart@${hex(L.UART_BASE)}`)
    .prop('compatible', 'ns16550a')
    .prop('reg', reg(L.UART_BASE, L.UART_SIZE))
    .prop('clock-frequency', [L.UART_CLOCK_HZ])
    .prop('interrupts', [GIC_SPI, L.UART_SPI, IRQ_TYPE_EDGE_RISING])
    .endNode();

  w.beginNode(`rtc@${hex(L.RTC_BASE)}`)
    .prop('compatible', ['arm,pl031', 'arm,primecell'])
    .prop('reg', reg(L.RTC_BASE, L.RTC_SIZE))
    .prop('interrupts', [GIC_SPI, L.RTC_SPI, IRQ_TYPE_LEVEL_HIGH])
    .prop('clocks', [PHANDLE_APB_CLOCK])
    .prop('clock-names', 'apb_pclk')
    .endNode();

  for (const s of o.virtio) {
    w.beginNode(`virtio_mmio@${hex(s.base)}`)
      .prop('compatible', 'virtio,mmio')
      .prop('reg', reg(s.base, s.size))
      .prop('interrupts', [GIC_SPI, s.irq, IRQ_TYPE_EDGE_RISING])
      .prop('dma-coherent')
      .endNode();
  }
  w.endNode();
  return w.finish();
}
