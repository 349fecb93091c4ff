import test from 'ava';
import fc from 'fast-check';
import { LoaderError } from '../../../../lib/errors.js';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import { loadBzImage, SETUP_HEADER, XLF_KERNEL_64 } from '../../../../arch/x86_64/loader/bzimage.js';
import { makeBzImage, pattern } from './images.js';

const MiB = 1024 ** 2;
const mem = (size = 64 * MiB): GuestMemory => GuestMemory.fromBuffers([{ gpa: 0, size }]);

test('setup header offsets match Documentation/arch/x86/boot.rst', (t) => {
  t.deepEqual(
    [SETUP_HEADER.setup_sects, SETUP_HEADER.boot_flag, SETUP_HEADER.header, SETUP_HEADER.version, SETUP_HEADER.type_of_loader, SETUP_HEADER.loadflags],
    [0x1f1, 0x1fe, 0x202, 0x206, 0x210, 0x211],
  );
  t.deepEqual(
    [SETUP_HEADER.ramdisk_image, SETUP_HEADER.ramdisk_size, SETUP_HEADER.heap_end_ptr, SETUP_HEADER.cmd_line_ptr, SETUP_HEADER.initrd_addr_max],
    [0x218, 0x21c, 0x224, 0x228, 0x22c],
  );
  t.deepEqual(
    [SETUP_HEADER.kernel_alignment, SETUP_HEADER.relocatable_kernel, SETUP_HEADER.xloadflags, SETUP_HEADER.cmdline_size, SETUP_HEADER.pref_address, SETUP_HEADER.init_size],
    [0x230, 0x234, 0x236, 0x238, 0x258, 0x260],
  );
});

test('loads the protected-mode kernel at 1 MiB and reports the header', (t) => {
  const pm = pattern(8192, 5);
  const img = makeBzImage({ pm, setupSects: 3, cmdlineSize: 1023, initrdAddrMax: 0x37ffffff, kernelAlignment: 0x200000, initSize: 0x800000 });
  const m = mem();
  const r = loadBzImage(m, img);
  t.deepEqual(m.read(0x100000, pm.length), pm);
  t.is(r.entry, 0x100000 + 0x200);
  t.is(r.loadAddr, 0x100000);
  t.is(r.cmdlineSize, 1023);
  t.is(r.initrdAddrMax, 0x37ffffff);
  t.is(r.kernelAlignment, 0x200000);
  t.is(r.version, 0x020f);
  t.is(r.xloadflags & XLF_KERNEL_64, XLF_KERNEL_64);
  // Relocatable: runs at max(align(1 MiB), pref_address 16 MiB), needing init_size from there.
  t.is(r.kernelEnd, 0x1000000 + 0x800000);
  // Header bytes 0x1f1..0x202+img[0x201].
  t.is(r.setupHeader.length, 0x26c - 0x1f1);
  t.deepEqual(r.setupHeader, img.subarray(0x1f1, 0x26c));
});

test('setup_sects 0 means 4', (t) => {
  const pm = pattern(1024, 9);
  const m = mem();
  loadBzImage(m, makeBzImage({ pm, setupSects: 0 }));
  t.deepEqual(m.read(0x100000, pm.length), pm);
});

test('a big image past init_size sets kernelEnd by its own end', (t) => {
  const pm = pattern(3 * MiB, 2);
  const r = loadBzImage(mem(), makeBzImage({ pm, prefAddress: 0x100000n, initSize: 0x1000 }));
  t.is(r.kernelEnd, 0x100000 + pm.length);
});

function throwsLoader(t: import('ava').ExecutionContext, image: Uint8Array, match?: RegExp, m = mem()): void {
  const e = t.throws(() => loadBzImage(m, image), { instanceOf: LoaderError });
  if (match) t.regex(e?.message ?? '', match);
}

test('every truncated prefix is a LoaderError', (t) => {
  const img = makeBzImage({ pm: pattern(64) });
  for (let n = 0; n < img.length - 64 + 1; n++) throwsLoader(t, img.subarray(0, n));
  // Lengths inside the payload only shorten it: they load.
  t.notThrows(() => loadBzImage(mem(), img.subarray(0, img.length - 1)));
});

function withBytes(fn: (dv: DataView, b: Uint8Array) => void, spec = {}): Uint8Array {
  const img = makeBzImage(spec);
  fn(new DataView(img.buffer), img);
  return img;
}

test('corrupt headers are LoaderErrors naming what is wrong', (t) => {
  throwsLoader(t, withBytes((dv) => dv.setUint32(0x202, 0x53726449, true)), /HdrS/);
  throwsLoader(t, withBytes((dv) => dv.setUint16(0x1fe, 0x55aa, true)), /boot_flag/);
  throwsLoader(t, makeBzImage({ version: 0x0205 }), /older than 2\.06.*cmdline_size/);
  throwsLoader(t, makeBzImage({ version: 0x020a }), /XLF_KERNEL_64/);
  throwsLoader(t, makeBzImage({ xloadflags: 0 }), /XLF_KERNEL_64/);
  throwsLoader(t, makeBzImage({ loadflags: 0 }), /LOADED_HIGH/);
  throwsLoader(t, makeBzImage({ headerEnd: 0x230 }), /before its xloadflags field/);
  throwsLoader(t, makeBzImage({ headerEnd: 0x202 + 0xff }), /boot_params/);
  throwsLoader(t, withBytes((dv) => dv.setBigUint64(0x258, 0xffffffffffffff00n, true)), /pref_address/);
  throwsLoader(t, withBytes((_, b) => { b[0x1f1] = 200; }), /setup_sects 200/);
});

test('a kernel needing more RAM than there is names the memory to give', (t) => {
  throwsLoader(t, makeBzImage({ initSize: 0x2000000 }), /at least 48 MiB/, mem(32 * MiB));
  throwsLoader(t, makeBzImage({ initSize: 0xffffffff }), /give the VM/);
});

test('non-relocatable kernels run at pref_address', (t) => {
  const r = loadBzImage(mem(), makeBzImage({ relocatable: 0, prefAddress: 0x1000000n, initSize: 0x100000 }));
  t.is(r.kernelEnd, 0x1100000);
});

test('fuzz: random corruption of the header yields a result or a LoaderError', (t) => {
  const base = makeBzImage({ pm: pattern(256) });
  const m = mem();
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0x1f0, max: 0x270 }), fc.nat(255)), { minLength: 1, maxLength: 10 }), fc.nat(base.length), (edits, cut) => {
      const img = base.slice(0, cut);
      for (const [at, v] of edits) if (at < img.length) img[at] = v;
      try {
        loadBzImage(m, img);
      } catch (e) {
        if (!(e instanceof LoaderError)) throw e;
      }
    }),
    { numRuns: 500 },
  );
  t.pass();
});
