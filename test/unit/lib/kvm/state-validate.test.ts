/**
 * Validation of saved state read back from a (untrusted) state file, with
 * synthetic states: no KVM needed. Each corruption must be refused with
 * SnapshotStateError naming the field.
 */
import test from 'ava';
import { SnapshotStateError } from '../../../../lib/errors.js';
import { checkX86VcpuState, type X86StateCaps, type X86VcpuState } from '../../../../arch/x86_64/vcpu-state.js';
import { checkX86VmState, type X86VmState } from '../../../../arch/x86_64/vm-state.js';
import { fromBase64, fromHex64, toBase64, toHex64 } from '../../../../lib/kvm/state-json.js';
import * as ss from '../../../../lib/kvm/state-structs.js';

const caps: X86StateCaps = { xsaveSize: 4096, xsave2: false, msrIndices: new Set([0x10, 0x277, 0xc000_0102]) };
const zeros = (n: number) => toBase64(new Uint8Array(n));

function goodVcpu(): X86VcpuState {
  return {
    version: 1, arch: 'x86_64', id: 0, cpuid: [{ function: 1, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 }],
    mpState: 0, tscKhz: 2_000_000, regs: zeros(144), sregs: zeros(312), xsave: zeros(4096), xcrs: zeros(392),
    debugregs: zeros(128), lapic: zeros(1024), vcpuEvents: zeros(64), msrs: [[0x10, '0x5'], [0xc000_0102, '0xffffffffffffffff']],
  };
}

function refused(t: import('ava').ExecutionContext, mutate: (s: X86VcpuState) => void, field: string, message?: RegExp): void {
  const s = structuredClone(goodVcpu());
  mutate(s);
  const e = t.throws(() => checkX86VcpuState(s, 0, caps), { instanceOf: SnapshotStateError })!;
  t.is(e.field, field);
  t.is(e.code, 'FLINTVM_E_SNAPSHOT_STATE');
  if (message) t.regex(e.message, message);
}

test('a well-formed x86 vCPU state is accepted and decoded', (t) => {
  const c = checkX86VcpuState(JSON.parse(JSON.stringify(goodVcpu())), 0, caps);
  t.is(c.xsave.length, 4096);
  t.deepEqual(c.msrs, [{ index: 0x10, data: 5n }, { index: 0xc000_0102, data: 0xffff_ffff_ffff_ffffn }]);
  t.deepEqual(c.cpuid[0], { function: 1, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 3, edx: 4 });
});

test('x86 vCPU state: wrong lengths are refused with the field and both sizes', (t) => {
  refused(t, (s) => { s.xsave = zeros(4032); }, 'vcpu.xsave', /4032 bytes, must be 4096/);
  refused(t, (s) => { s.regs = zeros(143); }, 'vcpu.regs');
  refused(t, (s) => { s.sregs = zeros(320); }, 'vcpu.sregs');
  refused(t, (s) => { s.lapic = zeros(1023); }, 'vcpu.lapic');
  refused(t, (s) => { s.vcpuEvents = zeros(65); }, 'vcpu.vcpuEvents');
  refused(t, (s) => { s.regs = 'AAAA*AAA'; }, 'vcpu.regs', /base64/);
  refused(t, (s) => { (s as unknown as { regs: number }).regs = 5; }, 'vcpu.regs');
});

test('x86 vCPU state: MSRs not in the host list, duplicated or out of range are refused', (t) => {
  refused(t, (s) => { s.msrs.push([0xdead_beef, '0x0']); }, 'vcpu.msrs[2][0]', /MSR 0xdeadbeef is not in this host's KVM_GET_MSR_INDEX_LIST/);
  refused(t, (s) => { s.msrs.push([0x10, '0x0']); }, 'vcpu.msrs[2][0]', /appears twice/);
  refused(t, (s) => { s.msrs[0] = [-1, '0x0']; }, 'vcpu.msrs[0][0]');
  refused(t, (s) => { s.msrs[0] = [0x10, '0x10000000000000000']; }, 'vcpu.msrs[0][1]');
  refused(t, (s) => { s.msrs[0] = [0x10, '5']; }, 'vcpu.msrs[0][1]');
  refused(t, (s) => { (s.msrs as unknown[])[0] = [0x10]; }, 'vcpu.msrs[0]');
});

test('x86 vCPU state: header, id, ranges and struct contents are checked', (t) => {
  refused(t, (s) => { s.version = 2; }, 'vcpu.version');
  refused(t, (s) => { (s as unknown as { arch: string }).arch = 'arm64'; }, 'vcpu.arch');
  refused(t, (s) => { s.id = 1; }, 'vcpu.id', /restore each vCPU's state into the vCPU with the same id/);
  refused(t, (s) => { s.mpState = 5; }, 'vcpu.mpState');
  refused(t, (s) => { s.tscKhz = 0; }, 'vcpu.tscKhz');
  refused(t, (s) => { s.cpuid[0]!.eax = 2 ** 32; }, 'vcpu.cpuid[0].eax');
  refused(t, (s) => { s.cpuid = Array.from({ length: 257 }, () => s.cpuid[0]!); }, 'vcpu.cpuid');
  const xcrs = new Uint8Array(392);
  new DataView(xcrs.buffer).setUint32(0, 17, true);
  refused(t, (s) => { s.xcrs = toBase64(xcrs); }, 'vcpu.xcrs', /nr_xcrs is 17/);
  refused(t, (s) => { s.debugregs = toBase64(ss.encodeDebugregs({ db: [0n, 0n, 0n, 0n], dr6: 1n << 32n, dr7: 0n, flags: 0n })); }, 'vcpu.debugregs');
  const ev = ss.decodeVcpuEvents(new Uint8Array(64));
  refused(t, (s) => { s.vcpuEvents = toBase64(ss.encodeVcpuEvents({ ...ev, flags: 0x40 })); }, 'vcpu.vcpuEvents.flags');
  refused(t, (s) => { s.vcpuEvents = toBase64(ss.encodeVcpuEvents({ ...ev, exception: { ...ev.exception, nr: 32 } })); }, 'vcpu.vcpuEvents.exception.nr');
  refused(t, (s) => { s.vcpuEvents = toBase64(ss.encodeVcpuEvents({ ...ev, nmi: { ...ev.nmi, masked: 2 } })); }, 'vcpu.vcpuEvents.nmi.masked');
  t.throws(() => checkX86VcpuState(null, 0, caps), { instanceOf: SnapshotStateError });
  t.throws(() => checkX86VcpuState([], 0, caps), { instanceOf: SnapshotStateError });
});

function chip(id: number): Uint8Array {
  const b = ss.irqchipRequest(id);
  if (id === ss.KVM_IRQCHIP_IOAPIC) new DataView(b.buffer).setBigUint64(ss.IRQCHIP_CHIP, 0xfec0_0000n, true);
  return b;
}
function goodVm(): X86VmState {
  const pit = new Uint8Array(ss.KVM_PIT_STATE2_SIZE);
  for (let i = 0; i < 3; i++) pit[i * 24 + 13] = 0xff; // never programmed
  return {
    version: 1, arch: 'x86_64', clock: toHex64(123n), pit: toBase64(pit),
    irqchip: { picMaster: toBase64(chip(0)), picSlave: toBase64(chip(1)), ioapic: toBase64(chip(2)) },
  };
}

test('x86 VM state: well-formed accepted; wrong chip id, IOAPIC base, PIC/PIT ranges refused', (t) => {
  const c = checkX86VmState(goodVm());
  t.is(c.irqchips!.length, 3);
  t.is(c.clock, 123n);
  t.deepEqual(checkX86VmState({ ...goodVm(), irqchip: null, pit: null }).irqchips, null);
  const bad = (mutate: (s: X86VmState) => void, field: string) => {
    const s = goodVm();
    mutate(s);
    t.is(t.throws(() => checkX86VmState(s), { instanceOf: SnapshotStateError })!.field, field);
  };
  bad((s) => { s.irqchip!.picSlave = toBase64(chip(0)); }, 'vm.irqchip.picSlave');
  bad((s) => { const b = chip(2); new DataView(b.buffer).setBigUint64(8, 0xfee0_0000n, true); s.irqchip!.ioapic = toBase64(b); }, 'vm.irqchip.ioapic.base_address');
  bad((s) => { const b = chip(0); b[8 + 7] = 2; s.irqchip!.picMaster = toBase64(b); }, 'vm.irqchip.picMaster.poll');
  bad((s) => { s.irqchip!.picMaster = zeros(519); }, 'vm.irqchip.picMaster');
  const pit = (off: number, v: number) => (s: X86VmState) => { const b = fromBase64('x', s.pit, 112); b[off] = v; s.pit = toBase64(b); };
  bad(pit(13, 6), 'vm.pit.channels[0].mode');
  bad(pit(24 + 12, 4), 'vm.pit.channels[1].rw_mode');
  bad(pit(48 + 9, 5), 'vm.pit.channels[2].read_state');
  bad(pit(15, 2), 'vm.pit.channels[0].gate');
  bad(pit(72, 4), 'vm.pit.flags');
  bad((s) => { const b = fromBase64('x', s.pit, 112); new DataView(b.buffer).setUint32(0, 0x10001, true); s.pit = toBase64(b); }, 'vm.pit.channels[0].count');
  bad((s) => { s.clock = '123'; }, 'vm.clock');
});

test('state-json: hex and base64 codecs round-trip and refuse junk', (t) => {
  t.is(toHex64(-1n), '0xffffffffffffffff');
  t.is(fromHex64('f', '0xffffffffffffffff'), 0xffff_ffff_ffff_ffffn);
  t.throws(() => fromHex64('f', '0xFF'), { instanceOf: SnapshotStateError });
  t.throws(() => fromHex64('f', 255), { instanceOf: SnapshotStateError });
  t.deepEqual([...fromBase64('b', toBase64(Uint8Array.from([1, 2, 3])), 3)], [1, 2, 3]);
  t.deepEqual([...fromBase64('b', toBase64(Uint8Array.from([1, 2, 3])), { min: 1, max: 4 })], [1, 2, 3]);
  t.throws(() => fromBase64('b', 'AQID', 4), { instanceOf: SnapshotStateError });
  t.throws(() => fromBase64('b', 'AQI', 2), { instanceOf: SnapshotStateError }, 'length not a multiple of 4');
});
