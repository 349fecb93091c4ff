import test from 'ava';
import { LoaderError } from '../../../../lib/errors.js';
import { BOOT_E820_ENTRY, BOOT_PARAMS, BOOT_PARAMS_SIZE, buildBootParams, E820_MAX_ENTRIES_ZEROPAGE } from '../../../../arch/x86_64/boot-params.js';
import { e820ForMemory } from '../../../../arch/x86_64/e820.js';
import { makeBzImage } from './images.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

test('boot_params offsets match arch/x86/include/uapi/asm/bootparam.h', (t) => {
  t.is(BOOT_PARAMS_SIZE, 4096);
  t.is(BOOT_PARAMS.ext_ramdisk_image, 0x0c0);
  t.is(BOOT_PARAMS.ext_ramdisk_size, 0x0c4);
  t.is(BOOT_PARAMS.ext_cmd_line_ptr, 0x0c8);
  t.is(BOOT_PARAMS.e820_entries, 0x1e8);
  t.is(BOOT_PARAMS.sentinel, 0x1ef);
  t.is(BOOT_PARAMS.hdr, 0x1f1);
  t.is(BOOT_PARAMS.e820_table, 0x2d0);
  t.is(E820_MAX_ENTRIES_ZEROPAGE, 128);
  // struct boot_e820_entry is packed: u64 addr, u64 size, u32 type.
  t.deepEqual([BOOT_E820_ENTRY.addr, BOOT_E820_ENTRY.size, BOOT_E820_ENTRY.type, BOOT_E820_ENTRY.bytes], [0, 8, 16, 20]);
  // The table ends before eddbuf (0xd00).
  t.true(BOOT_PARAMS.e820_table + E820_MAX_ENTRIES_ZEROPAGE * BOOT_E820_ENTRY.bytes <= 0xd00);
});

function readE820(page: Uint8Array): Array<{ addr: number; size: number; type: number }> {
  const dv = new DataView(page.buffer);
  return Array.from({ length: page[0x1e8]! }, (_, i) => {
    const at = 0x2d0 + i * 20;
    return { addr: Number(dv.getBigUint64(at, true)), size: Number(dv.getBigUint64(at + 8, true)), type: dv.getUint32(at + 16, true) };
  });
}

test('vmlinux: a minimal header is synthesized', (t) => {
  const e820 = e820ForMemory(128 * MiB);
  const page = buildBootParams({ cmdlineAddr: 0x20000, cmdlineSize: 2047, e820 });
  const dv = new DataView(page.buffer);
  t.is(page.length, 4096);
  t.is(dv.getUint16(0x1fe, true), 0xaa55);
  t.is(dv.getUint32(0x202, true), 0x53726448); // "HdrS"
  t.true(dv.getUint16(0x206, true) >= 0x0206);
  t.is(page[0x210], 0xff);
  t.is(page[0x211]! & 1, 1, 'LOADED_HIGH');
  t.is(page[0x211]! & 0x80, 0, 'no CAN_USE_HEAP: no real-mode setup runs');
  t.is(dv.getUint32(0x228, true), 0x20000);
  t.is(dv.getUint32(0x0c8, true), 0);
  t.is(dv.getUint32(0x238, true), 2047);
  t.is(dv.getUint32(0x230, true), 0x200000);
  t.is(dv.getUint32(0x218, true), 0, 'no ramdisk');
  t.is(page[0x1ef], 0, 'sentinel clear');
  t.deepEqual(readE820(page), e820);
});

test('bzImage: its setup header is copied, then loader fields set', (t) => {
  const img = makeBzImage({ cmdlineSize: 511, initrdAddrMax: 0x37ffffff });
  const hdr = img.slice(0x1f1, 0x26c);
  const page = buildBootParams({ setupHeader: hdr, cmdlineAddr: 0x20000, cmdlineSize: 511, initrd: { addr: 0x7000000, size: 0x123456 }, e820: e820ForMemory(128 * MiB) });
  const dv = new DataView(page.buffer);
  t.is(dv.getUint32(0x238, true), 511);
  t.is(dv.getUint32(0x22c, true), 0x37ffffff);
  t.is(dv.getUint16(0x236, true), 1);
  t.is(page[0x210], 0xff);
  t.is(dv.getUint32(0x218, true), 0x7000000);
  t.is(dv.getUint32(0x21c, true), 0x123456);
  t.is(dv.getUint32(0x0c0, true), 0);
  t.is(dv.getUint32(0x0c4, true), 0);
  // Everything else of the header is verbatim.
  t.deepEqual(page.subarray(0x1f1, 0x210), hdr.subarray(0, 0x210 - 0x1f1));
  t.deepEqual(page.subarray(0x22c, 0x26c), hdr.subarray(0x22c - 0x1f1));
});

test('addresses above 4 GiB are split into the ext_* high halves', (t) => {
  const page = buildBootParams({ cmdlineAddr: 5 * GiB + 0x10, cmdlineSize: 2047, initrd: { addr: 6 * GiB, size: 4 * GiB + 1 }, e820: [] });
  const dv = new DataView(page.buffer);
  t.is(dv.getUint32(0x228, true), GiB + 0x10);
  t.is(dv.getUint32(0x0c8, true), 1);
  t.is(dv.getUint32(0x218, true), 2 * GiB);
  t.is(dv.getUint32(0x0c0, true), 1);
  t.is(dv.getUint32(0x21c, true), 1);
  t.is(dv.getUint32(0x0c4, true), 1);
});

test('e820 maps of 5 GiB and beyond 128 entries', (t) => {
  const e820 = e820ForMemory(5 * GiB);
  t.deepEqual(readE820(buildBootParams({ cmdlineAddr: 0, cmdlineSize: 0, e820 })), e820);
  const many = Array.from({ length: 129 }, (_, i) => ({ addr: i * 4096, size: 4096, type: 1 }));
  t.throws(() => buildBootParams({ cmdlineAddr: 0, cmdlineSize: 0, e820: many }), { instanceOf: LoaderError });
  t.notThrows(() => buildBootParams({ cmdlineAddr: 0, cmdlineSize: 0, e820: many.slice(0, 128) }));
});

test('an oversized setup header is refused', (t) => {
  t.throws(() => buildBootParams({ setupHeader: new Uint8Array(0x290 - 0x1f1 + 1), cmdlineAddr: 0, cmdlineSize: 0, e820: [] }), { instanceOf: LoaderError });
});
