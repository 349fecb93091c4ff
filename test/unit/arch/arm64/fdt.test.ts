/**
 * The device-tree writer and the arm64 machine tree. The blobs are decoded by
 * the reference tool, dtc (Debian's device-tree-compiler, installed by
 * .ci/run), and compared with the tree we mean to describe.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { FdtWriter, u64Cells } from '../../../../arch/arm64/fdt.js';
import { buildMachineFdt } from '../../../../arch/arm64/fdt-machine.js';
import { virtioMmioSlot, RAM_BASE } from '../../../../arch/arm64/layout.js';

function dts(blob: Uint8Array): string {
  // -s sorts nothing away; dtc fails (non-zero) on a malformed blob.
  return execFileSync('dtc', ['-I', 'dtb', '-O', 'dts', '-q', '-'], { input: blob }).toString();
}

test('a small tree round-trips through dtc: strings, string lists, cells, bytes, booleans, nesting', (t) => {
  const w = new FdtWriter();
  w.beginNode('')
    .prop('compatible', 'acme,board')
    .prop('#address-cells', [2])
    .beginNode('child@1000')
    .prop('list', ['a', 'bc'])
    .prop('reg', [...u64Cells(0x1000), ...u64Cells(0x1_0000_0000)])
    .prop('blob', new Uint8Array([1, 2, 3]))
    .prop('flag')
    .endNode()
    .endNode();
  const out = dts(w.finish());
  t.regex(out, /\/dts-v1\/;/);
  t.regex(out, /compatible = "acme,board";/);
  t.regex(out, /#address-cells = <0x02>;/);
  t.regex(out, /child@1000 \{/);
  t.regex(out, /list = "a\\0bc";|list = "a", "bc";/);
  t.regex(out, /reg = <0x00 0x1000 0x01 0x00>;/);
  t.regex(out, /blob = \[01 02 03\];/);
  t.regex(out, /flag;/);
});

test('the header: magic, version 17, sizes and offsets consistent with the blob', (t) => {
  const blob = new FdtWriter().beginNode('').prop('x', [1]).endNode().finish(3);
  const d = new DataView(blob.buffer);
  t.is(d.getUint32(0), 0xd00dfeed);
  t.is(d.getUint32(4), blob.length);
  t.is(d.getUint32(20), 17);
  t.is(d.getUint32(24), 16);
  t.is(d.getUint32(28), 3, 'boot_cpuid_phys');
  t.is(d.getUint32(8) + d.getUint32(36), d.getUint32(12), 'struct block ends where strings start');
  t.is(d.getUint32(12) + d.getUint32(32), blob.length);
});

test('misuse is refused: bad names, unbalanced nodes, properties outside nodes, cells that are not u32, NUL in strings', (t) => {
  t.throws(() => new FdtWriter().beginNode('x'), { instanceOf: RangeError }, 'the root is unnamed');
  t.throws(() => new FdtWriter().beginNode('').beginNode('has space'), { instanceOf: RangeError });
  t.throws(() => new FdtWriter().beginNode('').beginNode('a'.repeat(32)), { instanceOf: RangeError });
  t.throws(() => new FdtWriter().prop('x', [1]), { instanceOf: RangeError });
  t.throws(() => new FdtWriter().beginNode('').prop('x', [-1]), { instanceOf: RangeError });
  t.throws(() => new FdtWriter().beginNode('').prop('x', [2 ** 32]), { instanceOf: RangeError });
  t.throws(() => new FdtWriter().beginNode('').prop('x', 'a\0b'), { instanceOf: RangeError });
  t.throws(() => new FdtWriter().beginNode('').finish(), { instanceOf: RangeError }, 'root still open');
  t.throws(() => new FdtWriter().endNode(), { instanceOf: RangeError });
  const w = new FdtWriter().beginNode('').endNode();
  w.finish();
  t.throws(() => w.finish(), { instanceOf: RangeError }, 'finished twice');
  t.throws(() => new FdtWriter().beginNode('').endNode().beginNode(''), { instanceOf: RangeError }, 'a second root');
  t.throws(() => u64Cells(-1), { instanceOf: RangeError });
});

test('the arm64 machine tree: memory, 2 PSCI cpus, GICv3 with 2 redistributors, timer PPIs, UART, PL031, virtio, chosen', (t) => {
  const blob = buildMachineFdt({
    memory: [{ gpa: RAM_BASE, size: 256 * 1024 * 1024 }],
    mpidrs: [0x80000000n, 0x80000001n],
    cmdline: 'console=ttyS0 earlycon panic=1',
    initrd: { addr: 0x8f000000, size: 0x123000 },
    virtio: [virtioMmioSlot(0), virtioMmioSlot(1)],
    rngSeed: new Uint8Array([0xaa, 0xbb]),
  });
  const out = dts(blob);
  const want = [
    /compatible = "linux,dummy-virt";/,
    /interrupt-parent = <0x01>;/,
    /bootargs = "console=ttyS0 earlycon panic=1";/,
    /stdout-path = "\/uart@9000000";/,
    /linux,initrd-start = <0x00 0x8f000000>;/,
    /linux,initrd-end = <0x00 0x8f123000>;/,
    /rng-seed = \[aa bb\];/,
    /memory@80000000 \{\s+device_type = "memory";\s+reg = <0x00 0x80000000 0x00 0x10000000>;/,
    /cpu@0 \{\s+device_type = "cpu";\s+compatible = "arm,arm-v8";\s+enable-method = "psci";\s+reg = <0x00 0x00>;/,
    /cpu@1 \{[^}]*reg = <0x00 0x01>;/,
    /psci \{\s+compatible = "arm,psci-0.2";\s+method = "hvc";/,
    /intc@8000000 \{\s+compatible = "arm,gic-v3";\s+#interrupt-cells = <0x03>;\s+interrupt-controller;\s+reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x40000>;\s+phandle = <0x01>;/,
    /timer \{\s+compatible = "arm,armv8-timer";\s+always-on;\s+interrupts = <0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>;/,
    /uart@9000000 \{\s+compatible = "ns16550a";\s+reg = <0x00 0x9000000 0x00 0x1000>;\s+clock-frequency = <0x1c2000>;\s+interrupts = <0x00 0x01 0x01>;/,
    /rtc@9010000 \{\s+compatible = "arm,pl031\\0arm,primecell";\s+reg = <0x00 0x9010000 0x00 0x1000>;\s+interrupts = <0x00 0x02 0x04>;\s+clocks = <0x02>;\s+clock-names = "apb_pclk";/,
    /apb-pclk \{\s+compatible = "fixed-clock";\s+#clock-cells = <0x00>;\s+clock-frequency = <0x16e3600>;/,
    /virtio_mmio@a000000 \{\s+compatible = "virtio,mmio";\s+reg = <0x00 0xa000000 0x00 0x1000>;\s+interrupts = <0x00 0x10 0x01>;\s+dma-coherent;/,
    /virtio_mmio@a001000 \{[^}]*interrupts = <0x00 0x11 0x01>;/,
  ];
  for (const re of want) t.regex(out, re);
  t.notRegex(out, /virtio_mmio@a002000/, 'only the slots in use');
});

test('the machine tree refuses 0 vCPUs and more than the redistributor space holds', (t) => {
  const base = { memory: [{ gpa: RAM_BASE, size: 64 << 20 }], cmdline: '', virtio: [] };
  t.throws(() => buildMachineFdt({ ...base, mpidrs: [] }), { instanceOf: RangeError });
  t.throws(() => buildMachineFdt({ ...base, mpidrs: Array.from({ length: 200 }, (_, i) => BigInt(i)) }), { instanceOf: RangeError });
});
