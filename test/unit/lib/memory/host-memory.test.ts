/**
 * Guest RAM as the host maps it (lib/memory/host-memory.ts): private
 * anonymous memory kept out of forked children, named in /proc/self/maps
 * where the kernel can, released by unmap(); which pages a snapshot reads
 * (/proc/self/pagemap); the sparse memory file.
 */
import test from 'ava';
import { closeSync, fstatSync, readFileSync, readSync } from 'node:fs';
import * as ffi from '../../../../lib/kvm/ffi.js';
import { GUEST_RAM_NAME, HUGE_PAGE_SIZE, mapGuestMemory, PAGE_SIZE, saveGuestMemory, touchedPages } from '../../../../lib/memory/host-memory.js';
import { MiB } from '../../../../lib/sys.js';

interface Mapping { start: bigint; end: bigint; perms: string; inode: string; name: string; flags: string[] }

/** The mappings of this process with their smaps VmFlags. */
function mappings(): Mapping[] {
  const out: Mapping[] = [];
  for (const l of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\S+)\s*(.*)$/.exec(l);
    if (head) out.push({ start: BigInt(`0x${head[1]}`), end: BigInt(`0x${head[2]}`), perms: head[3]!, inode: head[4]!, name: head[5]!, flags: [] });
    else if (l.startsWith('VmFlags:') && out.length > 0) out.at(-1)!.flags = l.slice(8).trim().split(/\s+/);
  }
  return out;
}

const containing = (addr: bigint) => mappings().find((m) => m.start <= addr && addr < m.end);

/** Whether this kernel names anonymous mappings (CONFIG_ANON_VMA_NAME). */
function kernelNamesAnonMappings(): boolean {
  const a = ffi.mmap(null, PAGE_SIZE, ffi.PROT_READ | ffi.PROT_WRITE, ffi.MAP_PRIVATE | ffi.MAP_ANONYMOUS, -1, 0)!;
  try {
    return ffi.prctlName(ffi.PR_SET_VMA, ffi.PR_SET_VMA_ANON_NAME, a, PAGE_SIZE, 'flintvm-probe') === 0;
  } finally {
    ffi.munmap(a, PAGE_SIZE);
  }
}

/** What test/linux/lifecycle.test.ts counts as guest RAM: anonymous mappings with VmFlags dc, dd and nr (V8's own reservations have dc and nr, not dd). */
const guestRamLike = () => mappings().filter((m) => m.inode === '0' && ['dc', 'dd', 'nr'].every((f) => m.flags.includes(f))).length;

test.serial('guest RAM is a private anonymous mapping, kept out of forked children and core dumps, named where the kernel can, and gone after unmap()', (t) => {
  const before = guestRamLike();
  const host = mapGuestMemory([{ gpa: 0, size: 4 * MiB }]);
  t.is(guestRamLike(), before + 1, 'one more anonymous dc+nr mapping (what the lifecycle test counts)');
  const addr = host.memory.regions[0]!.hostAddr;
  const m = containing(addr);
  t.truthy(m);
  t.is(m!.perms, 'rw-p', 'private, not shared');
  t.is(m!.inode, '0', 'anonymous: no file behind it (a shared one would be /dev/zero (deleted))');
  t.true(m!.flags.includes('dc'), `MADV_DONTFORK (VmFlags dc): ${m!.flags.join(' ')}`);
  t.true(m!.flags.includes('dd'), 'MADV_DONTDUMP');
  t.true(m!.flags.includes('nr'), 'MAP_NORESERVE');
  if (kernelNamesAnonMappings()) t.is(m!.name, `[anon:${GUEST_RAM_NAME}]`);
  else t.log('this kernel does not name anonymous mappings (no CONFIG_ANON_VMA_NAME)');
  host.unmap();
  t.is(guestRamLike(), before);
  const after = containing(addr);
  t.true(after === undefined || after.name !== `[anon:${GUEST_RAM_NAME}]`, 'unmapped');
});

test.serial('guest RAM lies at a host address congruent to its guest-physical address modulo 2 MiB (KVM maps huge pages only there), with nothing more left mapped', (t) => {
  // gpa 0x1000 and 0x7ff000 are what no kernel's own placement gives (it aligns large mappings to 2 MiB at best).
  for (const gpa of [0, 0x1000, 0x7ff000, 0x4000_0000, 0x1_0000_0000]) {
    const size = 6 * MiB + 3 * PAGE_SIZE;
    const host = mapGuestMemory([{ gpa, size }]);
    try {
      const addr = host.memory.regions[0]!.hostAddr;
      t.is(Number(addr % BigInt(HUGE_PAGE_SIZE)), gpa % HUGE_PAGE_SIZE, `gpa 0x${gpa.toString(16)}`);
      const m = containing(addr);
      t.truthy(m);
      if (kernelNamesAnonMappings()) {
        // Named, so it merges with no neighbour: the mapping is exactly the guest's RAM, the ends cut off.
        t.is(m!.start, addr);
        t.is(m!.end, addr + BigInt(size));
      }
      host.memory.write(gpa + size - 8, new Uint8Array(8).fill(7));
      t.is(host.memory.readU8(gpa + size - 1), 7);
    } finally {
      host.unmap();
    }
  }
});

test('touchedPages says which pages were written or read, and not the others', (t) => {
  const pages = 64;
  const host = mapGuestMemory([{ gpa: 0, size: pages * PAGE_SIZE }]);
  try {
    const addr = host.memory.regions[0]!.hostAddr;
    t.deepEqual([...touchedPages(addr, pages)], new Array(pages).fill(0), 'a fresh mapping has no page');
    host.memory.write(3 * PAGE_SIZE + 100, new Uint8Array([7]));
    host.memory.write(40 * PAGE_SIZE, new Uint8Array(2 * PAGE_SIZE).fill(9));
    host.memory.read(63 * PAGE_SIZE, 8);
    const want = new Array(pages).fill(0);
    for (const p of [3, 40, 41, 63]) want[p] = 1;
    t.deepEqual([...touchedPages(addr, pages)], want);
  } finally {
    host.unmap();
  }
});

test('saveGuestMemory writes only the pages that hold data: untouched and zero pages are holes', (t) => {
  const size = 4 * MiB;
  const host = mapGuestMemory([{ gpa: 0, size }]);
  const fd = ffi.memfdCreate('flintvm-test-memory', 0);
  t.true(fd >= 0);
  try {
    host.memory.write(5 * PAGE_SIZE, new Uint8Array([0xaa, 0xbb]));
    host.memory.read(9 * PAGE_SIZE, 16); // read but never written: zeros, not data
    host.memory.write(200 * PAGE_SIZE, new Uint8Array(PAGE_SIZE)); // written with zeros
    host.memory.write(size - 1, new Uint8Array([0xcc]));
    const stats = saveGuestMemory(host, fd);
    t.deepEqual(stats, { size, written: 2 * PAGE_SIZE });
    t.is(fstatSync(fd).size, size);
    const back = Buffer.alloc(size);
    t.is(readSync(fd, back, 0, size, 0), size);
    t.deepEqual([...back.subarray(5 * PAGE_SIZE, 5 * PAGE_SIZE + 3)], [0xaa, 0xbb, 0]);
    t.is(back[size - 1], 0xcc);
    t.is(back.subarray(0, 5 * PAGE_SIZE).some((b) => b !== 0), false);
  } finally {
    closeSync(fd);
    host.unmap();
  }
});
