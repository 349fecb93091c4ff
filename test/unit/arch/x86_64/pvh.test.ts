import test from 'ava';
import { LoaderError } from '../../../../lib/errors.js';
import { e820ForMemory } from '../../../../arch/x86_64/e820.js';
import { PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR, PVH_START_INFO_ADDR } from '../../../../arch/x86_64/layout.js';
import { buildPvhStartInfo, HVM_MEMMAP_TABLE_ENTRY, HVM_MODLIST_ENTRY, HVM_START_INFO, PVH_MEMMAP_MAX_ENTRIES, XEN_HVM_START_MAGIC_VALUE } from '../../../../arch/x86_64/pvh.js';

const MiB = 1024 ** 2;

test('hvm_start_info layouts match xen/interface/hvm/start_info.h', (t) => {
  t.is(XEN_HVM_START_MAGIC_VALUE, 0x336ec578);
  t.deepEqual(
    [HVM_START_INFO.magic, HVM_START_INFO.version, HVM_START_INFO.flags, HVM_START_INFO.nr_modules, HVM_START_INFO.modlist_paddr, HVM_START_INFO.cmdline_paddr, HVM_START_INFO.rsdp_paddr, HVM_START_INFO.memmap_paddr, HVM_START_INFO.memmap_entries, HVM_START_INFO.reserved, HVM_START_INFO.size],
    [0x00, 0x04, 0x08, 0x0c, 0x10, 0x18, 0x20, 0x28, 0x30, 0x34, 0x38],
  );
  t.deepEqual([HVM_MODLIST_ENTRY.paddr, HVM_MODLIST_ENTRY.size, HVM_MODLIST_ENTRY.cmdline_paddr, HVM_MODLIST_ENTRY.reserved, HVM_MODLIST_ENTRY.bytes], [0, 8, 0x10, 0x18, 0x20]);
  t.deepEqual([HVM_MEMMAP_TABLE_ENTRY.addr, HVM_MEMMAP_TABLE_ENTRY.size, HVM_MEMMAP_TABLE_ENTRY.type, HVM_MEMMAP_TABLE_ENTRY.reserved, HVM_MEMMAP_TABLE_ENTRY.bytes], [0, 8, 0x10, 0x14, 0x18]);
  // The three structures fit their layout slots without overlapping.
  t.true(PVH_START_INFO_ADDR + HVM_START_INFO.size <= PVH_MODLIST_ADDR);
  t.true(PVH_MODLIST_ADDR + HVM_MODLIST_ENTRY.bytes <= PVH_MEMMAP_ADDR);
});

test('start_info with an initrd module and the memory map', (t) => {
  const e820 = e820ForMemory(256 * MiB);
  const blobs = buildPvhStartInfo({ cmdlineAddr: 0x20000, initrd: { addr: 0x8000000, size: 0x4321 }, e820 });
  const at = (gpa: number): DataView => {
    const b = blobs.find((x) => x.gpa === gpa);
    if (!b) throw new Error(`no blob at ${gpa}`);
    return new DataView(b.bytes.buffer, b.bytes.byteOffset, b.bytes.byteLength);
  };
  const info = at(PVH_START_INFO_ADDR);
  t.is(info.getUint32(0, true), 0x336ec578);
  t.is(info.getUint32(4, true), 1);
  t.is(info.getUint32(8, true), 0);
  t.is(info.getUint32(0x0c, true), 1);
  t.is(info.getBigUint64(0x10, true), BigInt(PVH_MODLIST_ADDR));
  t.is(info.getBigUint64(0x18, true), 0x20000n);
  t.is(info.getBigUint64(0x20, true), 0n, 'no ACPI RSDP');
  t.is(info.getBigUint64(0x28, true), BigInt(PVH_MEMMAP_ADDR));
  t.is(info.getUint32(0x30, true), e820.length);
  const mod = at(PVH_MODLIST_ADDR);
  t.is(mod.getBigUint64(0, true), 0x8000000n);
  t.is(mod.getBigUint64(8, true), 0x4321n);
  t.is(mod.getBigUint64(0x10, true), 0n);
  const mm = at(PVH_MEMMAP_ADDR);
  e820.forEach((e, i) => {
    t.is(Number(mm.getBigUint64(i * 24, true)), e.addr);
    t.is(Number(mm.getBigUint64(i * 24 + 8, true)), e.size);
    t.is(mm.getUint32(i * 24 + 16, true), e.type);
    t.is(mm.getUint32(i * 24 + 20, true), 0);
  });
});

test('without an initrd there are no modules', (t) => {
  const blobs = buildPvhStartInfo({ cmdlineAddr: 0x20000, e820: e820ForMemory(64 * MiB) });
  const info = new DataView(blobs[0]!.bytes.buffer);
  t.is(info.getUint32(0x0c, true), 0);
  t.is(info.getBigUint64(0x10, true), 0n);
  t.false(blobs.some((b) => b.gpa === PVH_MODLIST_ADDR));
});

test('a memory map larger than its slot is refused', (t) => {
  const e820 = Array.from({ length: PVH_MEMMAP_MAX_ENTRIES + 1 }, (_, i) => ({ addr: i * 4096, size: 4096, type: 1 }));
  t.throws(() => buildPvhStartInfo({ cmdlineAddr: 0, e820 }), { instanceOf: LoaderError });
});
