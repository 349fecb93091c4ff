import test from 'ava';
import { ConfigError } from '../../../../lib/errors.js';
import { E820_RAM, E820_RESERVED, e820Entries, e820ForMemory, type E820Entry } from '../../../../arch/x86_64/e820.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const KVM_PRIVATE = { addr: 0xfffbc000, size: 0x4000, type: E820_RESERVED };

function checkSortedDisjoint(t: import('ava').ExecutionContext, map: E820Entry[]): void {
  for (let i = 1; i < map.length; i++) t.true(map[i - 1]!.addr + map[i - 1]!.size <= map[i]!.addr, `entry ${i} overlaps its predecessor`);
}

test('e820 for 128 MiB', (t) => {
  const map = e820ForMemory(128 * MiB);
  t.deepEqual(map, [
    { addr: 0, size: 0x9f000, type: E820_RAM },
    { addr: 0x9f000, size: 0x1000, type: E820_RESERVED },
    { addr: 0x100000, size: 127 * MiB, type: E820_RAM },
    KVM_PRIVATE,
  ]);
  checkSortedDisjoint(t, map);
});

test('e820 for exactly 3 GiB: low RAM ends at the hole, nothing above', (t) => {
  const map = e820ForMemory(3 * GiB);
  t.deepEqual(map[2], { addr: 0x100000, size: 3 * GiB - MiB, type: E820_RAM });
  t.is(map.length, 4);
  checkSortedDisjoint(t, map);
});

test('e820 for 5 GiB: the MMIO hole 3-4 GiB is not RAM, 2 GiB resume at 4 GiB', (t) => {
  const map = e820ForMemory(5 * GiB);
  t.deepEqual(map.slice(2), [
    { addr: 0x100000, size: 3 * GiB - MiB, type: E820_RAM },
    KVM_PRIVATE,
    { addr: 4 * GiB, size: 2 * GiB, type: E820_RAM },
  ]);
  const ram = map.filter((e) => e.type === E820_RAM);
  for (const e of ram) t.false(e.addr < 4 * GiB && e.addr + e.size > 3 * GiB, 'RAM inside the hole');
  // Total RAM = 5 GiB minus the EBDA page and the 640K-1M hole.
  t.is(ram.reduce((n, e) => n + e.size, 0), 5 * GiB - (MiB - 0x9f000));
  checkSortedDisjoint(t, map);
});

test('e820 merges adjacent high regions (16 GiB in 4 GiB pieces -> one entry)', (t) => {
  const map = e820ForMemory(16 * GiB);
  t.deepEqual(map[map.length - 1], { addr: 4 * GiB, size: 13 * GiB, type: E820_RAM });
  t.is(map.length, 5);
});

test('e820Entries rejects layouts without low RAM or with RAM in the hole', (t) => {
  t.throws(() => e820Entries([]), { instanceOf: ConfigError });
  t.throws(() => e820Entries([{ gpa: 0x1000, size: 64 * MiB }]), { instanceOf: ConfigError });
  t.throws(() => e820Entries([{ gpa: 0, size: MiB }]), { instanceOf: ConfigError });
  t.throws(() => e820Entries([{ gpa: 0, size: 3 * GiB + 4096 }]), { instanceOf: ConfigError });
  t.throws(() => e820Entries([{ gpa: 0, size: 64 * MiB }, { gpa: 3.5 * GiB, size: MiB }]), { instanceOf: ConfigError });
});
