import test from 'ava';
import { configureLapicLint, setDeliveryMode } from '../../../../arch/x86_64/lapic.js';
import { bootMsrs } from '../../../../arch/x86_64/msr.js';

const ALL = [0x174, 0x175, 0x176, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0x10, 0x1a0, 0x2ff];

test('boot MSRs: all set when all supported', (t) => {
  const { entries, skipped } = bootMsrs(new Set(ALL));
  t.deepEqual(skipped, []);
  t.deepEqual(entries.map((e) => e.index).sort(), [...ALL].sort());
  const byIndex = new Map(entries.map((e) => [e.index, e.data]));
  t.is(byIndex.get(0x1a0), 1n, 'IA32_MISC_ENABLE fast strings');
  t.is(byIndex.get(0x2ff), 0x806n, 'MTRRs on, default write-back');
  for (const i of ALL.filter((x) => x !== 0x1a0 && x !== 0x2ff)) t.is(byIndex.get(i), 0n);
});

test('boot MSRs are filtered against the supported index list', (t) => {
  const { entries, skipped } = bootMsrs(new Set([0x10, 0xc0000082, 0x12345]));
  t.deepEqual(entries.map((e) => e.index), [0xc0000082, 0x10]);
  t.deepEqual([...skipped].sort(), ALL.filter((i) => i !== 0x10 && i !== 0xc0000082).sort());
  t.deepEqual(bootMsrs(new Set()).entries, []);
});

test('LINT0 becomes ExtINT and LINT1 NMI, other bits preserved', (t) => {
  const regs = new Uint8Array(1024);
  const dv = new DataView(regs.buffer);
  dv.setUint32(0x350, 0x00010000, true); // masked, fixed mode
  dv.setUint32(0x360, 0x0001a0ff, true); // masked, level, some vector, mode 0
  dv.setUint32(0x340, 0xdeadbeef, true);
  configureLapicLint(regs);
  t.is(dv.getUint32(0x350, true), 0x00010700);
  t.is(dv.getUint32(0x360, true), 0x0001a4ff);
  t.is(dv.getUint32(0x340, true), 0xdeadbeef, 'neighbours untouched');
  t.is(setDeliveryMode(0xffffffff, 4), 0xfffffcff);
  t.throws(() => configureLapicLint(new Uint8Array(100)), { instanceOf: RangeError });
});

test('works on a subarray view of a larger buffer', (t) => {
  const big = new Uint8Array(2048);
  const view = big.subarray(512, 1536);
  configureLapicLint(view);
  t.is(new DataView(big.buffer).getUint32(512 + 0x350, true), 0x700);
  t.is(new DataView(big.buffer).getUint32(512 + 0x360, true), 0x400);
});
