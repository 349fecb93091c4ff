import test from 'ava';
import { ConfigError } from '../../../../lib/errors.js';
import type { CpuidEntry } from '../../../../lib/kvm/types.js';
import { buildCpuid, cpuVendor } from '../../../../arch/x86_64/cpuid.js';

const e = (fn: number, index: number, eax: number, ebx: number, ecx: number, edx: number, flags = 0): CpuidEntry => ({ function: fn, index, flags, eax, ebx, ecx, edx });

/** "GenuineIntel" / "AuthenticAMD" in EBX, EDX, ECX. */
const INTEL = [0x756e6547, 0x49656e69, 0x6c65746e];
const AMD = [0x68747541, 0x69746e65, 0x444d4163];

function intelSupported(): CpuidEntry[] {
  return [
    e(0, 0, 0x1f, INTEL[0]!, INTEL[2]!, INTEL[1]!),
    e(1, 0, 0x000806f8, 0x00ff0800 | 0x12, 0x01000000 | 0x7ffafbff, 0x178bfbff & ~(1 << 28)),
    e(4, 0, 0x00000121 | (7 << 26) | (1 << 14), 0x01c0003f, 0x3f, 0, 1),
    e(4, 1, 0x00000122, 0x01c0003f, 0x3f, 0, 1),
    e(4, 2, 0x00000143 | (3 << 14), 0x03c0003f, 0x3ff, 0, 1),
    e(4, 3, 0x00000163 | (15 << 14), 0x03c0003f, 0x3fff, 4, 1),
    e(4, 4, 0, 0, 0, 0, 1),
    e(6, 0, 0x77, 0x2, 0x9, 0),
    e(0xb, 0, 1, 2, 0x100, 5, 1),
    e(0xb, 1, 4, 16, 0x201, 5, 1),
    e(0xb, 2, 0, 0, 2, 5, 1),
    e(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d, 0),
    e(0x40000001, 0, 0x01007afb, 0, 0, 0),
    e(0x80000001, 0, 0, 0, 0x121, 0x2c100800),
    e(0x80000008, 0, 0x3030, 0, 0, 0),
  ];
}

function leaf(entries: CpuidEntry[], fn: number, index = 0): CpuidEntry {
  const found = entries.find((x) => x.function === fn && x.index === index);
  if (!found) throw new Error(`no leaf ${fn.toString(16)}.${index}`);
  return found;
}

test('vendor string', (t) => {
  t.is(cpuVendor(intelSupported()), 'GenuineIntel');
  t.is(cpuVendor([e(0, 0, 0xd, AMD[0]!, AMD[2]!, AMD[1]!)]), 'AuthenticAMD');
  t.is(cpuVendor([]), '');
});

test('never mutates its input and returns fresh objects', (t) => {
  const sup = intelSupported();
  const snapshot = JSON.stringify(sup);
  const out = buildCpuid(sup, 1, 4);
  t.is(JSON.stringify(sup), snapshot);
  t.is(out.length, sup.length);
  out.forEach((o, i) => t.not(o, sup[i]));
});

test('leaf 1 per vCPU: APIC id, logical count, CLFLUSH, hypervisor, HTT, TSC-deadline kept', (t) => {
  for (const [id, count] of [[0, 1], [0, 4], [3, 4], [7, 8]] as const) {
    const l1 = leaf(buildCpuid(intelSupported(), id, count), 1);
    t.is(l1.ebx >>> 24, id);
    t.is((l1.ebx >>> 16) & 0xff, count);
    t.is((l1.ebx >>> 8) & 0xff, 8);
    t.is(l1.ebx & 0xff, 0x12, 'brand index kept');
    t.is(l1.ecx >>> 31, 1, 'hypervisor');
    t.is((l1.ecx >>> 24) & 1, 1, 'TSC-deadline as supported');
    t.is((l1.edx >>> 28) & 1, count > 1 ? 1 : 0, 'HTT');
    t.is(l1.eax, 0x000806f8);
  }
  const noDeadline = intelSupported().map((x) => (x.function === 1 ? { ...x, ecx: x.ecx & ~(1 << 24) } : x));
  t.is((leaf(buildCpuid(noDeadline, 0, 1), 1).ecx >>> 24) & 1, 0, 'TSC-deadline not invented');
});

test('leaf 4: cores per package and cache sharing follow vcpuCount', (t) => {
  const out = buildCpuid(intelSupported(), 2, 6);
  for (const i of [0, 1, 2, 3]) {
    const l = leaf(out, 4, i);
    t.is(l.eax >>> 26, 5, `subleaf ${i} cores-1`);
    const level = (l.eax >>> 5) & 7;
    t.is((l.eax >>> 14) & 0xfff, level <= 2 ? 0 : 5, `subleaf ${i} sharing`);
    t.is(l.eax & 0x3fff, leaf(intelSupported(), 4, i).eax & 0x3fff, 'type/level kept');
  }
  t.deepEqual(leaf(out, 4, 4), leaf(intelSupported(), 4, 4), 'null subleaf untouched');
  t.is(leaf(buildCpuid(intelSupported(), 0, 200), 4, 0).eax >>> 26, 63, 'saturates at 64 cores');
});

test('leaf 6 keeps only ARAT', (t) => {
  const l6 = leaf(buildCpuid(intelSupported(), 0, 1), 6);
  t.deepEqual([l6.eax, l6.ebx, l6.ecx, l6.edx], [0x4, 0, 0, 0]);
});

test('leaf 0xB (and 0x1F): SMT 1 thread, core level vcpuCount, x2APIC id', (t) => {
  const sup = [...intelSupported(), e(0x1f, 0, 1, 2, 0x100, 5, 1), e(0x1f, 1, 4, 16, 0x201, 5, 1)];
  const out = buildCpuid(sup, 5, 6);
  for (const fn of [0xb, 0x1f]) {
    const s0 = leaf(out, fn, 0);
    const s1 = leaf(out, fn, 1);
    t.deepEqual([s0.eax, s0.ebx & 0xffff, (s0.ecx >>> 8) & 0xff, s0.ecx & 0xff, s0.edx], [0, 1, 1, 0, 5]);
    t.deepEqual([s1.eax & 0x1f, s1.ebx & 0xffff, (s1.ecx >>> 8) & 0xff, s1.ecx & 0xff, s1.edx], [3, 6, 2, 1, 5]);
  }
  const s2 = leaf(out, 0xb, 2);
  t.deepEqual([s2.eax, s2.ebx, (s2.ecx >>> 8) & 0xff, s2.ecx & 0xff, s2.edx], [0, 0, 0, 2, 5]);
  t.is(leaf(buildCpuid(intelSupported(), 0, 1), 0xb, 1).eax, 0, 'one CPU: no id bits');
  t.false(buildCpuid(intelSupported(), 0, 1).some((x) => x.function === 0x1f), 'absent leaves are not added');
});

test('KVM paravirt leaves and 0x80000001 are copied unchanged; Intel 0x80000008 untouched', (t) => {
  const sup = intelSupported();
  const out = buildCpuid(sup, 1, 2);
  for (const fn of [0x40000000, 0x40000001, 0x80000001, 0x80000008, 0]) t.deepEqual(leaf(out, fn), leaf(sup, fn));
});

test('AMD: 0x80000008 core count, 0x8000001E extended APIC id, 0x8000001D sharing', (t) => {
  const sup = [
    e(0, 0, 0x10, AMD[0]!, AMD[2]!, AMD[1]!),
    e(1, 0, 0x00a00f11, 0x00020800, 0x80000000, 0x178bfbff),
    e(0x80000008, 0, 0x3030, 0, 0x7 | (3 << 12) | (1 << 16), 0),
    e(0x8000001d, 0, 0x121 | (1 << 14), 0, 0, 0, 1),
    e(0x8000001d, 3, 0x163 | (7 << 14), 0, 0, 0, 1),
    e(0x8000001e, 0, 9, 0x103, 0x300, 0),
  ];
  const out = buildCpuid(sup, 2, 4);
  const l8 = leaf(out, 0x80000008);
  t.is(l8.ecx & 0xff, 3);
  t.is((l8.ecx >>> 12) & 0xf, 2);
  t.is((l8.ecx >>> 16) & 3, 1, 'other bits kept');
  t.deepEqual([leaf(out, 0x8000001e).eax, leaf(out, 0x8000001e).ebx, leaf(out, 0x8000001e).ecx], [2, 2, 0]);
  t.is((leaf(out, 0x8000001d, 0).eax >>> 14) & 0xfff, 0);
  t.is((leaf(out, 0x8000001d, 3).eax >>> 14) & 0xfff, 3);
  t.is(leaf(out, 1).ebx >>> 24, 2);
});

test('bad vCPU ids and counts are ConfigErrors', (t) => {
  for (const [id, count] of [[0, 0], [1, 1], [-1, 2], [0, 257], [0.5, 2]] as const) {
    t.throws(() => buildCpuid(intelSupported(), id, count), { instanceOf: ConfigError });
  }
});

test('TSC-deadline is advertised only when KVM emulates it (KVM_CAP_TSC_DEADLINE_TIMER)', (t) => {
  const supported = [{ function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 }];
  const leaf1 = (opts?: { tscDeadline?: boolean }) => buildCpuid(supported, 0, 1, opts).find((e) => e.function === 1)!;
  t.is(leaf1().ecx & (1 << 24), 0);
  t.is(leaf1({ tscDeadline: false }).ecx & (1 << 24), 0);
  t.not(leaf1({ tscDeadline: true }).ecx & (1 << 24), 0);
  t.not(leaf1({ tscDeadline: true }).ecx & (1 << 31), 0, 'hypervisor bit still set');
});
