import test from 'ava';
import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { ConfigError, LoaderError } from '../../../../lib/errors.js';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import { IMAGE_MAGIC, parseArmImage } from '../../../../arch/arm64/image.js';
import { ARM64_DEFAULT_CMDLINE, prepareArm64Boot } from '../../../../arch/arm64/boot.js';
import { GIC_REDIST_BASE, MAX_VCPUS, RAM_BASE, UART_BASE, ramRegions, virtioMmioSlot } from '../../../../arch/arm64/layout.js';

const MiB = 1024 * 1024;

/** A fake arm64 Image: a header with the given fields, then a recognisable body. */
function makeImage(o: { textOffset?: bigint; imageSize?: bigint; flags?: bigint; magic?: number; length?: number } = {}): Uint8Array {
  const len = o.length ?? 64 * 1024;
  const b = new Uint8Array(len);
  for (let i = 64; i < len; i++) b[i] = i & 0xff;
  const d = new DataView(b.buffer);
  d.setUint32(0, 0x91005a4d, true); // code0 (any)
  d.setBigUint64(8, o.textOffset ?? 0n, true);
  d.setBigUint64(16, o.imageSize ?? BigInt(len + 128 * 1024), true);
  d.setBigUint64(24, o.flags ?? 0xan, true);
  d.setUint32(56, o.magic ?? IMAGE_MAGIC, true);
  return b;
}

const mem = (mib = 64): GuestMemory => GuestMemory.fromBuffers(ramRegions(mib * MiB));
const one = { mpidrs: [0x80000000n], virtio: [] };

test('Image header: fields read, gzip inflated, legacy image_size 0 means text_offset 0x80000', (t) => {
  const img = makeImage({ textOffset: 0x1000n });
  const h = parseArmImage(img);
  t.is(h.textOffset, 0x1000);
  t.is(h.imageSize, img.length + 128 * 1024);
  const z = parseArmImage(gzipSync(img));
  t.deepEqual(z.image, img);
  t.is(z.textOffset, 0x1000);
  const legacy = parseArmImage(makeImage({ imageSize: 0n, textOffset: 0n }));
  t.is(legacy.textOffset, 0x80000);
});

test('Image header: bad magic, truncated, big-endian, odd text_offset, lying image_size and corrupt gzip are LoaderErrors', (t) => {
  t.throws(() => parseArmImage(makeImage({ magic: 0x12345678 })), { instanceOf: LoaderError, message: /ARM\\x64/ });
  t.throws(() => parseArmImage(makeImage().subarray(0, 60)), { instanceOf: LoaderError, message: /shorter/ });
  t.throws(() => parseArmImage(new Uint8Array(0)), { instanceOf: LoaderError });
  t.throws(() => parseArmImage(makeImage({ flags: 0xbn })), { instanceOf: LoaderError, message: /big-endian/ });
  t.throws(() => parseArmImage(makeImage({ textOffset: 0x123n })), { instanceOf: LoaderError, message: /text_offset/ });
  t.throws(() => parseArmImage(makeImage({ textOffset: 0x200000n })), { instanceOf: LoaderError, message: /text_offset/ });
  t.throws(() => parseArmImage(makeImage({ imageSize: 100n })), { instanceOf: LoaderError, message: /image_size/ });
  t.throws(() => parseArmImage(makeImage({ imageSize: 1n << 62n })), { instanceOf: LoaderError, message: /image_size/ });
  const gz = gzipSync(makeImage());
  t.throws(() => parseArmImage(gz.subarray(0, gz.length - 20)), { instanceOf: LoaderError, message: /gzip/ });
  t.throws(() => parseArmImage(gzipSync(new Uint8Array(10))), { instanceOf: LoaderError, message: /shorter/ });
});

test('placement: kernel at RAM base + text_offset, FDT in the last 2 MiB block, initrd page-aligned right below it', (t) => {
  const m = mem(64);
  const kernel = makeImage({ textOffset: 0x10000n });
  const initrd = new Uint8Array(300_000).fill(7);
  const r = prepareArm64Boot(m, { ...one, kernel, initrd, cmdline: 'console=ttyS0' });
  t.is(r.entry, RAM_BASE + 0x10000);
  t.is(r.kernelEnd, r.entry + kernel.length + 128 * 1024);
  t.is(r.fdtAddr, RAM_BASE + 62 * MiB);
  t.deepEqual(m.read(r.entry, kernel.length), kernel);
  t.is(r.initrd!.addr % 4096, 0);
  t.true(r.initrd!.addr + initrd.length <= r.fdtAddr);
  t.true(r.fdtAddr - (r.initrd!.addr + initrd.length) < 4096);
  t.deepEqual(m.read(r.initrd!.addr, initrd.length), initrd);
  const fdt = m.read(r.fdtAddr, r.fdtSize);
  t.is(new DataView(fdt.buffer).getUint32(0), 0xd00dfeed);
  const out = execFileSync('dtc', ['-I', 'dtb', '-O', 'dts', '-q', '-'], { input: fdt }).toString();
  t.regex(out, new RegExp(`linux,initrd-start = <0x00 0x${r.initrd!.addr.toString(16)}>`));
  t.regex(out, /bootargs = "console=ttyS0"/);
});

test('no initrd: no initrd properties; several virtio slots and vCPUs appear', (t) => {
  const m = mem(32);
  const r = prepareArm64Boot(m, { kernel: makeImage(), cmdline: ARM64_DEFAULT_CMDLINE, mpidrs: [0n, 1n, 2n], virtio: [virtioMmioSlot(0), virtioMmioSlot(5)] });
  t.is(r.initrd, undefined);
  const out = execFileSync('dtc', ['-I', 'dtb', '-O', 'dts', '-q', '-'], { input: m.read(r.fdtAddr, r.fdtSize) }).toString();
  t.notRegex(out, /initrd/);
  t.regex(out, /cpu@2 \{/);
  t.regex(out, /virtio_mmio@a005000[^}]*interrupts = <0x00 0x15 0x01>/);
  t.regex(out, new RegExp(`0x${GIC_REDIST_BASE.toString(16)} 0x00 0x60000`), 'three redistributors');
});

test('what does not fit is refused with the fix: a kernel bigger than RAM, an initrd that collides, a long cmdline', (t) => {
  t.throws(() => prepareArm64Boot(mem(16), { ...one, kernel: makeImage({ imageSize: BigInt(15 * MiB) }), cmdline: '' }), { instanceOf: LoaderError, message: /more memory/ });
  t.throws(() => prepareArm64Boot(mem(16), { ...one, kernel: makeImage(), initrd: new Uint8Array(14 * MiB), cmdline: '' }), { instanceOf: LoaderError, message: /initrd.*more memory/ });
  t.throws(() => prepareArm64Boot(mem(16), { ...one, kernel: makeImage(), cmdline: 'x'.repeat(2048) }), { instanceOf: ConfigError, message: /cmdline/ });
  t.throws(() => prepareArm64Boot(mem(16), { ...one, kernel: makeImage(), cmdline: 'a\0b' }), { instanceOf: ConfigError });
});

test('layout: RAM from 2 GiB in <= 4 GiB regions, virtio slots with their own SPIs, redistributors below the UART', (t) => {
  t.deepEqual(ramRegions(64 * MiB), [{ gpa: RAM_BASE, size: 64 * MiB }]);
  t.deepEqual(ramRegions(5 * 1024 * MiB).map((r) => r.size), [4096 * MiB, 1024 * MiB]);
  t.throws(() => ramRegions(8 * MiB), { instanceOf: ConfigError });
  t.throws(() => ramRegions(64 * MiB + 1), { instanceOf: ConfigError });
  t.deepEqual(virtioMmioSlot(2), { base: 0x0a002000, size: 0x1000, irq: 18 });
  t.throws(() => virtioMmioSlot(32), { instanceOf: ConfigError });
  t.true(GIC_REDIST_BASE + MAX_VCPUS * 0x20000 <= UART_BASE);
});
