import test from 'ava';
import { Pl031, PL031_CR, PL031_DR, PL031_IMSC, PL031_LR, PL031_MIS, PL031_MR, PL031_RIS } from '../../../../devices/legacy/pl031.js';

test('PL031: DR is host seconds, a load shifts it for every instance over the same state, ids identify a PL031', (t) => {
  let now = 1_700_000_000_500;
  const state = Pl031.createState();
  const a = new Pl031(state, { now: () => now });
  const b = new Pl031(state, { now: () => now });
  t.is(a.read(PL031_DR, 4), 1_700_000_000);
  a.write(PL031_LR, 4, 1000);
  t.is(b.read(PL031_DR, 4), 1000);
  t.is(b.read(PL031_LR, 4), 1000);
  now += 5000;
  t.is(b.read(PL031_DR, 4), 1005, 'keeps counting');
  t.is(a.read(PL031_CR, 4), 1);
  const ids = [0xfe0, 0xfe4, 0xfe8, 0xfec, 0xff0, 0xff4, 0xff8, 0xffc].map((o) => a.read(o, 4));
  t.deepEqual(ids, [0x31, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
});

test('PL031: match and mask registers hold their values; no interrupt is ever raised; odd accesses are harmless', (t) => {
  const d = new Pl031(Pl031.createState(), { now: () => 0 });
  d.write(PL031_MR, 4, 0xffffffff);
  t.is(d.read(PL031_MR, 4), 0xffffffff);
  d.write(PL031_IMSC, 4, 3);
  t.is(d.read(PL031_IMSC, 4), 1);
  t.is(d.read(PL031_RIS, 4), 0);
  t.is(d.read(PL031_MIS, 4), 0);
  t.is(d.read(PL031_DR, 1), 0xffffffff, 'byte reads are not supported');
  t.is(d.read(0x801, 4), 0xffffffff);
  t.is(d.read(0x800, 4), 0, 'reserved reads 0');
  d.write(PL031_LR, 2, 5);
  t.is(d.read(PL031_LR, 4), 0, 'a 16-bit write is ignored');
  t.throws(() => new Pl031(new SharedArrayBuffer(8)), { instanceOf: RangeError });
});
