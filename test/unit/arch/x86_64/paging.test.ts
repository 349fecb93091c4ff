import test from 'ava';
import { buildIdentityPageTables } from '../../../../arch/x86_64/paging.js';
import { PAGE_SIZE, PD_ADDR, PDPT_ADDR, PML4_ADDR } from '../../../../arch/x86_64/layout.js';

const MiB = 1024 ** 2;
const P = 1n; // present
const W = 2n; // writable
const PS = 0x80n; // 2 MiB page

/** Entry i of a 4 KiB table, as the CPU reads it (little-endian u64). */
function entry(bytes: Uint8Array, i: number): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(i * 8, true);
}

test('identity map: one PML4 entry, four PDPT entries, 2048 2 MiB pages covering [0, 4 GiB)', (t) => {
  const blobs = buildIdentityPageTables();
  t.deepEqual(blobs.map((b) => b.gpa), [PML4_ADDR, PDPT_ADDR, PD_ADDR, PD_ADDR + PAGE_SIZE, PD_ADDR + 2 * PAGE_SIZE, PD_ADDR + 3 * PAGE_SIZE]);
  for (const b of blobs) t.is(b.bytes.length, PAGE_SIZE);
  const [pml4, pdpt, ...pds] = blobs.map((b) => b.bytes);
  t.is(entry(pml4!, 0), BigInt(PDPT_ADDR) | P | W);
  for (let i = 1; i < 512; i++) if (entry(pml4!, i) !== 0n) t.fail(`PML4[${i}] is not empty`);
  for (let i = 0; i < 4; i++) t.is(entry(pdpt!, i), BigInt(PD_ADDR + i * PAGE_SIZE) | P | W, `PDPT[${i}]`);
  for (let i = 4; i < 512; i++) if (entry(pdpt!, i) !== 0n) t.fail(`PDPT[${i}] is not empty`);
  let checked = 0;
  for (let d = 0; d < 4; d++) {
    for (let i = 0; i < 512; i++) {
      const want = BigInt((d * 512 + i) * 2 * MiB) | P | W | PS;
      if (entry(pds[d]!, i) !== want) t.fail(`PD${d}[${i}] = 0x${entry(pds[d]!, i).toString(16)}, want 0x${want.toString(16)}`);
      checked++;
    }
  }
  t.is(checked, 2048);
  // The last page starts above 2^31, where `|` gives a negative int32: the entry must still read as this u64.
  t.is(entry(pds[3]!, 511), 0xffe0_0083n);
});
