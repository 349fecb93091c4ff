import test from 'ava';
import { ConfigError } from '../../../../lib/errors.js';
import * as L from '../../../../arch/x86_64/layout.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

test('ramRegions: memory below the hole is one region from 0', (t) => {
  t.deepEqual(L.ramRegions(128 * MiB), [{ gpa: 0, size: 128 * MiB }]);
  t.deepEqual(L.ramRegions(3 * GiB), [{ gpa: 0, size: 3 * GiB }]);
});

test('ramRegions: memory past 3 GiB continues at 4 GiB, in pieces of at most 4 GiB', (t) => {
  t.deepEqual(L.ramRegions(5 * GiB), [{ gpa: 0, size: 3 * GiB }, { gpa: 4 * GiB, size: 2 * GiB }]);
  t.deepEqual(L.ramRegions(12 * GiB), [
    { gpa: 0, size: 3 * GiB },
    { gpa: 4 * GiB, size: 4 * GiB },
    { gpa: 8 * GiB, size: 4 * GiB },
    { gpa: 12 * GiB, size: 1 * GiB },
  ]);
  const total = L.ramRegions(12 * GiB).reduce((n, r) => n + r.size, 0);
  t.is(total, 12 * GiB);
});

test('ramRegions: rejects sizes that are not whole pages, too small, or not integers', (t) => {
  for (const bad of [0, -4096, 1 * MiB, 2 * MiB + 1, 1.5, Number.NaN, 2 ** 60]) {
    const e = t.throws(() => L.ramRegions(bad), { instanceOf: ConfigError });
    t.is(e?.field, 'memory');
  }
});

test('low-memory boot structures do not overlap and sit below the EBDA', (t) => {
  const areas: Array<[string, number, number]> = [
    ['gdt', L.BOOT_GDT_ADDR, L.BOOT_GDT_MAX_SIZE],
    ['idt', L.BOOT_IDT_ADDR, 16],
    ['pvh start_info+modlist+memmap', L.PVH_START_INFO_ADDR, L.ZERO_PAGE_ADDR - L.PVH_START_INFO_ADDR],
    ['zero page', L.ZERO_PAGE_ADDR, 4096],
    ['stack', L.ZERO_PAGE_ADDR + 4096, L.BOOT_STACK_POINTER - (L.ZERO_PAGE_ADDR + 4096)],
    ['page tables', L.PML4_ADDR, 6 * 4096],
    ['cmdline', L.CMDLINE_ADDR, L.CMDLINE_MAX_SIZE],
    ['mp table', L.MP_CONFIG_TABLE_ADDR, L.BASE_MEMORY_END - L.MP_CONFIG_TABLE_ADDR],
  ];
  areas.sort((a, b) => a[1] - b[1]);
  for (let i = 1; i < areas.length; i++) {
    const [pn, pa, ps] = areas[i - 1]!;
    t.true(pa + ps <= areas[i]![1], `${pn} overlaps ${areas[i]![0]}`);
  }
  t.true(L.BOOT_GDT_ADDR >= 0x500, 'keeps the IVT and BDA');
  t.is(L.PDPT_ADDR, L.PML4_ADDR + 4096);
  t.is(L.PD_ADDR, L.PDPT_ADDR + 4096);
  t.is(L.BOOT_STACK_POINTER % 16, 0);
  // MP floating pointer in the last KiB below 640 KiB (MP spec §4 scan area).
  t.is(L.MP_FLOATING_POINTER_ADDR, 639 * 1024);
  t.is(L.BASE_MEMORY_END, 640 * 1024);
  t.is(L.HIGH_MEMORY_START, 1 * MiB);
});

test('MMIO hole devices lie inside the hole and do not overlap', (t) => {
  t.is(L.MMIO_HOLE_START, 3 * GiB);
  t.is(L.MMIO_HOLE_END, 4 * GiB);
  const virtioEnd = L.VIRTIO_MMIO_BASE + L.VIRTIO_MMIO_SLOT_COUNT * L.VIRTIO_MMIO_SLOT_SIZE;
  t.true(L.VIRTIO_MMIO_BASE >= L.MMIO_HOLE_START);
  t.true(virtioEnd <= L.IOAPIC_ADDR);
  t.is(L.IOAPIC_ADDR, 0xfec00000);
  t.is(L.LAPIC_ADDR, 0xfee00000);
  t.true(L.LAPIC_ADDR + 4096 <= L.KVM_IDENTITY_MAP_ADDR);
  t.is(L.KVM_TSS_ADDR, L.KVM_IDENTITY_MAP_ADDR + 4096);
  t.true(L.KVM_IDENTITY_MAP_ADDR + L.KVM_PRIVATE_SIZE <= L.MMIO_HOLE_END);
});

test('virtio-mmio slots: consecutive windows, IRQs from 5 avoiding legacy devices', (t) => {
  const s0 = L.virtioMmioSlot(0);
  t.deepEqual(s0, { base: 0xd0000000, size: 0x1000, irq: 5 });
  t.is(L.virtioMmioSlot(1).base, 0xd0001000);
  const irqs = Array.from({ length: L.VIRTIO_MMIO_SLOT_COUNT }, (_, i) => L.virtioMmioSlot(i).irq);
  t.deepEqual(irqs, [5, 6, 7, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]);
  for (const legacy of [L.COM1_IRQ, L.I8042_KBD_IRQ, L.RTC_IRQ, L.I8042_AUX_IRQ]) t.false(irqs.includes(legacy));
  t.true(irqs.every((i) => i < L.IOAPIC_NUM_PINS));
  t.throws(() => L.virtioMmioSlot(L.VIRTIO_MMIO_SLOT_COUNT), { instanceOf: ConfigError });
  t.throws(() => L.virtioMmioSlot(-1), { instanceOf: ConfigError });
});

test('PIO ports and the guest protocol ports', (t) => {
  t.is(L.COM1_PORT, 0x3f8);
  t.is(L.COM1_IRQ, 4);
  t.is(L.COM_PORT_COUNT, 8);
  t.is(L.I8042_DATA_PORT, 0x60);
  t.is(L.I8042_COMMAND_PORT, 0x64);
  t.is(L.BOOT_TIMER_PORT, 0x600);
  t.is(L.BOOT_TIMER_MAGIC, 123);
  t.is(L.EXIT_STATUS_PORT, 0x601);
});
