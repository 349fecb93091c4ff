import test from 'ava';
import { ConfigError } from '../../../../lib/errors.js';
import { IOAPIC_ADDR, LAPIC_ADDR, MP_CONFIG_TABLE_ADDR, MP_FLOATING_POINTER_ADDR } from '../../../../arch/x86_64/layout.js';
import { buildMpTable, MPC, MPC_CPU, MPC_INTSRC, MPC_IOAPIC, MPC_LINTSRC, MPF, MPTABLE_MAX_VCPUS } from '../../../../arch/x86_64/mptable.js';

const sum = (b: Uint8Array): number => b.reduce((a, x) => a + x, 0) % 256;
const ascii = (b: Uint8Array, off: number, n: number): string => String.fromCharCode(...b.subarray(off, off + n));

function tables(vcpus: number, sig = 0x000806f8, feat = 0x178bfbff): { mpf: Uint8Array; mpc: Uint8Array } {
  const blobs = buildMpTable({ vcpus, cpuSignature: sig, featureFlags: feat });
  return { mpf: blobs.find((b) => b.gpa === MP_FLOATING_POINTER_ADDR)!.bytes, mpc: blobs.find((b) => b.gpa === MP_CONFIG_TABLE_ADDR)!.bytes };
}

test('structure sizes and offsets match MP spec 1.4 (and Linux mpspec_def.h)', (t) => {
  t.deepEqual([MPF.physptr, MPF.length, MPF.specification, MPF.checksum, MPF.feature1, MPF.size], [4, 8, 9, 10, 11, 16]);
  t.deepEqual([MPC.length, MPC.spec, MPC.checksum, MPC.oem, MPC.productid, MPC.oemcount, MPC.lapic, MPC.size], [4, 6, 7, 8, 16, 34, 36, 44]);
  t.deepEqual([MPC_CPU.apicid, MPC_CPU.apicver, MPC_CPU.cpuflag, MPC_CPU.cpufeature, MPC_CPU.featureflag, MPC_CPU.size], [1, 2, 3, 4, 8, 20]);
  t.deepEqual([MPC_IOAPIC.apicaddr, MPC_IOAPIC.size, MPC_INTSRC.irqflag, MPC_INTSRC.dstirq, MPC_INTSRC.size, MPC_LINTSRC.destapiclint], [4, 8, 2, 7, 8, 7]);
});

interface Parsed {
  cpus: Array<{ apicid: number; ver: number; flags: number; sig: number; feat: number }>;
  buses: string[];
  ioapics: Array<{ id: number; ver: number; flags: number; addr: number }>;
  ints: Array<{ type: number; flag: number; bus: number; irq: number; apic: number; pin: number }>;
  lints: Array<{ type: number; apic: number; lint: number }>;
}

function parse(mpc: Uint8Array): Parsed {
  const dv = new DataView(mpc.buffer, mpc.byteOffset, mpc.byteLength);
  const out: Parsed = { cpus: [], buses: [], ioapics: [], ints: [], lints: [] };
  let off = 44;
  for (let n = 0; n < dv.getUint16(34, true); n++) {
    const type = mpc[off]!;
    if (type === 0) {
      out.cpus.push({ apicid: mpc[off + 1]!, ver: mpc[off + 2]!, flags: mpc[off + 3]!, sig: dv.getUint32(off + 4, true), feat: dv.getUint32(off + 8, true) });
      off += 20;
    } else if (type === 1) {
      out.buses.push(`${mpc[off + 1]}:${ascii(mpc, off + 2, 6)}`);
      off += 8;
    } else if (type === 2) {
      out.ioapics.push({ id: mpc[off + 1]!, ver: mpc[off + 2]!, flags: mpc[off + 3]!, addr: dv.getUint32(off + 4, true) });
      off += 8;
    } else if (type === 3) {
      out.ints.push({ type: mpc[off + 1]!, flag: dv.getUint16(off + 2, true), bus: mpc[off + 4]!, irq: mpc[off + 5]!, apic: mpc[off + 6]!, pin: mpc[off + 7]! });
      off += 8;
    } else if (type === 4) {
      out.lints.push({ type: mpc[off + 1]!, apic: mpc[off + 6]!, lint: mpc[off + 7]! });
      off += 8;
    } else {
      throw new Error(`unknown entry type ${type}`);
    }
  }
  if (off !== mpc.length) throw new Error('length mismatch');
  return out;
}

test('floating pointer: signature, pointer, checksum', (t) => {
  const { mpf } = tables(2);
  t.is(ascii(mpf, 0, 4), '_MP_');
  t.is(new DataView(mpf.buffer).getUint32(4, true), MP_CONFIG_TABLE_ADDR);
  t.is(mpf[8], 1);
  t.is(mpf[9], 4);
  t.is(mpf[11], 0, 'config table present (no default configuration)');
  t.is(sum(mpf), 0);
});

for (const vcpus of [1, 2, 4, 64, MPTABLE_MAX_VCPUS]) {
  test(`config table for ${vcpus} vCPUs`, (t) => {
    const { mpc } = tables(vcpus);
    const dv = new DataView(mpc.buffer);
    t.is(ascii(mpc, 0, 4), 'PCMP');
    t.is(dv.getUint16(4, true), mpc.length);
    t.is(mpc[6], 4);
    t.is(dv.getUint32(36, true), LAPIC_ADDR);
    t.is(sum(mpc), 0, 'checksum');
    t.true(MP_CONFIG_TABLE_ADDR + mpc.length <= MP_FLOATING_POINTER_ADDR, 'fits below the floating pointer');
    const p = parse(mpc);
    t.deepEqual(p.cpus.map((c) => c.apicid), Array.from({ length: vcpus }, (_, i) => i));
    t.deepEqual(p.cpus.map((c) => c.flags), Array.from({ length: vcpus }, (_, i) => (i === 0 ? 3 : 1)));
    t.true(p.cpus.every((c) => c.ver === 0x14 && c.sig === 0x000806f8 && c.feat === 0x178bfbff));
    t.deepEqual(p.buses, ['0:ISA   ']);
    t.deepEqual(p.ioapics, [{ id: vcpus, ver: 0x11, flags: 1, addr: IOAPIC_ADDR }]);
    t.is(p.ints.length, 24);
    p.ints.forEach((e, i) => t.deepEqual(e, { type: 0, flag: 0, bus: 0, irq: i, apic: vcpus, pin: i }));
    t.deepEqual(p.lints, [{ type: 3, apic: 0xff, lint: 0 }, { type: 1, apic: 0xff, lint: 1 }]);
  });
}

test('vCPU counts outside 1..max are ConfigErrors naming vcpus', (t) => {
  t.true(MPTABLE_MAX_VCPUS >= 64);
  for (const bad of [0, -1, 1.5, MPTABLE_MAX_VCPUS + 1]) {
    const e = t.throws(() => buildMpTable({ vcpus: bad }), { instanceOf: ConfigError });
    t.is(e?.field, 'vcpus');
  }
});

test('CPU signature defaults to 0 without CPUID', (t) => {
  const mpc = buildMpTable({ vcpus: 1 })[1]!.bytes;
  const c = parse(mpc).cpus[0]!;
  t.is(c.sig, 0);
  t.is(c.feat, 0);
});
