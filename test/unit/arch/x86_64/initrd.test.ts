import test from 'ava';
import { LoaderError } from '../../../../lib/errors.js';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import { loadInitrd, placeInitrd } from '../../../../arch/x86_64/initrd.js';
import { pattern } from './images.js';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

test('initrd goes as high as RAM allows, page aligned', (t) => {
  t.is(placeInitrd({ size: MiB, kernelEnd: 20 * MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 128 * MiB }), 127 * MiB);
  t.is(placeInitrd({ size: 5000, kernelEnd: 20 * MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 128 * MiB }), 128 * MiB - 8192);
});

test('initrd_addr_max caps the end of the initrd', (t) => {
  const addr = placeInitrd({ size: MiB, kernelEnd: 20 * MiB, initrdAddrMax: 0x37ffffff, lowRamEnd: 3 * GiB });
  t.is(addr, 0x38000000 - MiB);
  const odd = placeInitrd({ size: 4096, kernelEnd: 20 * MiB, initrdAddrMax: 0x37fffffe, lowRamEnd: 3 * GiB });
  t.true(odd + 4096 - 1 <= 0x37fffffe);
  t.is(odd % 4096, 0);
});

test('an initrd that just fits above the kernel', (t) => {
  t.is(placeInitrd({ size: 8 * MiB, kernelEnd: 24 * MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 32 * MiB }), 24 * MiB);
  t.is(placeInitrd({ size: 8 * MiB, kernelEnd: 24 * MiB - 1, initrdAddrMax: 0x7fffffff, lowRamEnd: 32 * MiB }), 24 * MiB, "kernel end rounds up to a page");
  t.is(placeInitrd({ size: 8 * MiB - 4096, kernelEnd: 24 * MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 32 * MiB }), 24 * MiB + 4096);
});

test('too little memory: the error names the memory size to use', (t) => {
  const e = t.throws(() => placeInitrd({ size: 9 * MiB, kernelEnd: 24 * MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 32 * MiB }), { instanceOf: LoaderError });
  t.regex(e?.message ?? '', /at least 33 MiB of memory/);
  const small = t.throws(() => placeInitrd({ size: MiB, kernelEnd: 64 * MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 32 * MiB }), { instanceOf: LoaderError });
  t.regex(small?.message ?? '', /memory/);
});

test('an initrd beyond initrd_addr_max says to shrink it', (t) => {
  const e = t.throws(() => placeInitrd({ size: GiB, kernelEnd: 0x37000000, initrdAddrMax: 0x37ffffff, lowRamEnd: 3 * GiB }), { instanceOf: LoaderError });
  t.regex(e?.message ?? '', /initrd_addr_max/);
});

test('empty or invalid sizes are refused', (t) => {
  for (const size of [0, -1, 1.5]) t.throws(() => placeInitrd({ size, kernelEnd: MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 32 * MiB }), { instanceOf: LoaderError });
});

test('loadInitrd copies the bytes', (t) => {
  const m = GuestMemory.fromBuffers([{ gpa: 0, size: 32 * MiB }]);
  const data = pattern(10000, 4);
  const r = loadInitrd(m, data, { kernelEnd: 2 * MiB, initrdAddrMax: 0x7fffffff, lowRamEnd: 32 * MiB });
  t.deepEqual(r, { addr: 32 * MiB - 12288, size: 10000 });
  t.deepEqual(m.read(r.addr, data.length), data);
});
