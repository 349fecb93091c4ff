/**
 * vCPU and VM state save/restore on a real /dev/kvm (x86_64), with the
 * lowest-level pieces (Kvm/Vm/Vcpu, mapped guest memory) on this thread.
 *
 * The guest (64-bit long mode, hand-assembled below) programs the in-kernel
 * PIT and PIC through port I/O, then loops: counter in RBX, in memory and in
 * XMM0, each iteration reported with `out 0x10, eax`. VM A runs it for a
 * while; its state is saved (to JSON and back) and its RAM copied into a
 * second VM B, created from scratch; B must continue from the saved counter,
 * with the PIT, PIC, LAPIC, MSR and kvmclock state A had.
 *
 * Run: npx tsc -p tsconfig.json && node dist/test/hosts/cli.js --arch x86_64 --files dist/test/integration/vcpu-state.test.js
 */
import test, { type ExecutionContext } from 'ava';
import { Kvm } from '../../lib/kvm/kvm.js';
import type { Vm } from '../../lib/kvm/vm.js';
import type { Vcpu } from '../../lib/kvm/vcpu.js';
import type { KvmSegment } from '../../lib/kvm/types.js';
import { emptyRegs, KVM_PIT_SPEAKER_DUMMY } from '../../lib/kvm/structs.js';
import { decodePitState2, IRQCHIP_CHIP, KVM_IRQCHIP_PIC_MASTER } from '../../lib/kvm/state-structs.js';
import { mapGuestMemory, type HostGuestMemory } from '../../lib/memory/host-memory.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { SnapshotStateError } from '../../lib/errors.js';
import { KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR } from '../../arch/x86_64/layout.js';
import {
  completePendingIo, probeX86StateCaps, restoreVcpuState, saveVcpuState, type X86StateCaps, type X86VcpuState,
} from '../../arch/x86_64/vcpu-state.js';
import { restoreVmState, saveVmState, type X86VmState } from '../../arch/x86_64/vm-state.js';
import { toBase64 } from '../../lib/kvm/state-json.js';
import { requireKvm } from '../helpers/kvm.js';

const MiB = 1024 * 1024;
const RAM = 2 * MiB;
const CODE_ADDR = 0x1000;
/** The guest's in-memory counter (u64). */
const COUNTER_ADDR = 0x1100;
/** The port each iteration reports the counter on. */
const REPORT_PORT = 0x10;
/** Iterations A runs before it is saved. */
const RUN_BEFORE_SAVE = 50;
/** Iterations B runs after the restore. */
const RUN_AFTER_RESTORE = 20;
/** PIT channel 0 set-up the guest does: lobyte/hibyte, mode 2 (rate generator), count 0x1234. */
const PIT_MODE = 2;
const PIT_COUNT = 0x1234;
/** The PIC master IMR the guest writes (all masked but the cascade, IRQ 2). */
const PIC_IMR = 0xfb;
/** MSR_KERNEL_GS_BASE and a value the host puts there in A (canonical: KVM refuses others). */
const MSR_KERNEL_GS_BASE = 0xc000_0102;
const GS_BASE_VALUE = 0xffff_8000_1234_5670n;
/** MSR_IA32_CR_PAT, and a value KVM must refuse (memory types 2 and 3 are reserved). */
const MSR_IA32_CR_PAT = 0x277;
const INVALID_PAT = 0x0202_0202_0202_0202n;
/** LAPIC task priority register offset and a value the host puts there in A. */
const APIC_TPR = 0x80;
const TPR_VALUE = 0x20;
/** kvmclock A is set to before it runs (1000 s). */
const CLOCK_START_NS = 1_000_000_000_000n;
/** Offset of XMM0 in the XSAVE legacy region (the FXSAVE layout). */
const XSAVE_XMM0 = 160;
/** How many times each save/restore is timed. */
const TIMING_RUNS = 5;

const guestCode = [
  0xb0, 0x34, //                         mov al, 0x34        ; PIT: channel 0, lobyte/hibyte, mode 2
  0xe6, 0x43, //                         out 0x43, al
  0xb0, PIT_COUNT & 0xff, //             mov al, 0x34
  0xe6, 0x40, //                         out 0x40, al
  0xb0, PIT_COUNT >> 8, //               mov al, 0x12
  0xe6, 0x40, //                         out 0x40, al
  0xb0, PIC_IMR, //                      mov al, 0xfb
  0xe6, 0x21, //                         out 0x21, al        ; PIC master OCW1 (IMR)
  0x66, 0x48, 0x0f, 0x6e, 0xc9, //       movq xmm1, rcx      ; RCX = 1 (set by the host)
  // loop:
  0x48, 0xff, 0xc3, //                   inc rbx
  0x48, 0xff, 0x04, 0x25, COUNTER_ADDR & 0xff, COUNTER_ADDR >> 8, 0x00, 0x00, // inc qword [COUNTER_ADDR]
  0x66, 0x0f, 0xd4, 0xc1, //             paddq xmm0, xmm1
  0x89, 0xd8, //                         mov eax, ebx
  0xe7, REPORT_PORT, //                  out 0x10, eax
  0xeb, 0x100 - 21, //                   jmp loop            ; back 21 bytes
];

// --- long mode, set up by the host (identity map of 1 GiB with 2 MiB pages, flat GDT) ---
const GDT_ADDR = 0x500;
const PML4_ADDR = 0x9000;
const PDPT_ADDR = 0xa000;
const PD_ADDR = 0xb000;
const PAGE_TABLES_END = 0xc000;
const PRESENT_RW = 0x3n;
const PRESENT_RW_PS = 0x83n;
const CR0_PE = 1n << 0n;
const CR0_MP = 1n << 1n;
const CR0_ET = 1n << 4n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const CR4_OSFXSR = 1n << 9n;
const CR4_OSXMMEXCPT = 1n << 10n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
/** `ud2`: RAM outside the code is filled with it, so a wrong RIP ends in a triple fault (an exit), never a silent spin. */
const UD2 = [0x0f, 0x0b];

interface TestVm { vm: Vm; vcpu: Vcpu; mem: HostGuestMemory; memory: GuestMemory; close(): void }

/** A VM like the platform builds one: TSS/identity map, in-kernel irqchip and PIT, 2 MiB RAM, vCPU 0. */
async function createVm(kvm: Kvm): Promise<TestVm> {
  const vm = kvm.createVm();
  const mem = mapGuestMemory([{ gpa: 0, size: RAM }]);
  try {
    vm.setTssAddr(KVM_TSS_ADDR);
    vm.setIdentityMapAddr(KVM_IDENTITY_MAP_ADDR);
    await vm.createIrqchip();
    await vm.createPit2(KVM_PIT_SPEAKER_DUMMY);
    const r = mem.memory.regions[0]!;
    await vm.setUserMemoryRegion(0, r.gpa, r.size, r.hostAddr);
    const vcpu = vm.createVcpu(0);
    return { vm, vcpu, mem, memory: mem.memory, close() { vm.close(); mem.unmap(); } };
  } catch (e) {
    vm.close();
    mem.unmap();
    throw e;
  }
}

/** Loads the guest into A and puts its vCPU in long mode at CODE_ADDR. */
function bootGuest(t: ExecutionContext, kvm: Kvm, a: TestVm): void {
  const m = a.memory;
  const fill = new Uint8Array(RAM);
  for (let i = 0; i < RAM; i += 2) fill.set(UD2, i);
  m.write(0, fill);
  m.fill(PML4_ADDR, PAGE_TABLES_END - PML4_ADDR, 0);
  m.writeU64(PML4_ADDR, BigInt(PDPT_ADDR) | PRESENT_RW);
  m.writeU64(PDPT_ADDR, BigInt(PD_ADDR) | PRESENT_RW);
  for (let i = 0; i < 512; i++) m.writeU64(PD_ADDR + i * 8, BigInt(i) * BigInt(2 * MiB) | PRESENT_RW_PS);
  m.writeU64(GDT_ADDR, 0n);
  m.writeU64(GDT_ADDR + 8, 0x00af_9a00_0000_ffffn); // 0x08: 64-bit code
  m.writeU64(GDT_ADDR + 16, 0x00cf_9200_0000_ffffn); // 0x10: data
  m.write(CODE_ADDR, Uint8Array.from(guestCode));
  m.writeU64(COUNTER_ADDR, 0n);

  const v = a.vcpu;
  const cpuid = kvm.supportedCpuid();
  v.setCpuid2(cpuid);
  t.is(v.getCpuid2().length, cpuid.length, 'KVM_GET_CPUID2 returns what was set');
  const s = v.getSregs();
  const code: KvmSegment = { base: 0n, limit: 0xffff_ffff, selector: 0x08, type: 0xb, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 };
  const data: KvmSegment = { ...code, selector: 0x10, type: 0x3, db: 1, l: 0 };
  Object.assign(s, { cs: code, ds: data, es: data, fs: data, gs: data, ss: data });
  s.gdt = { base: BigInt(GDT_ADDR), limit: 3 * 8 - 1 };
  s.idt = { base: 0n, limit: 0 };
  s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_PG;
  s.cr3 = BigInt(PML4_ADDR);
  s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
  s.efer = EFER_LME | EFER_LMA;
  v.setSregs(s);
  v.setRegs({ ...emptyRegs(), rip: BigInt(CODE_ADDR), rsp: 0x8000n, rcx: 1n, rflags: 2n });
  // Distinctive state that only a restore can carry over to B.
  t.is(v.setMsrs([{ index: MSR_KERNEL_GS_BASE, data: GS_BASE_VALUE }]), 1, 'A took MSR_KERNEL_GS_BASE');
  const lapic = v.getLapic();
  lapic[APIC_TPR] = TPR_VALUE;
  v.setLapic(lapic);
  a.vm.setClock({ clock: CLOCK_START_NS, flags: 0, realtime: 0n, hostTsc: 0n });
}

/** Runs until `n` reports on REPORT_PORT and returns their values. Any other exit fails the test. */
function runReports(t: ExecutionContext, v: Vcpu, n: number): number[] {
  const values: number[] = [];
  for (let exits = 0; values.length < n; exits++) {
    if (exits > n + 16) throw new Error(`no progress after ${exits} exits`);
    const r = v.runOnce();
    if (r === -4) continue; // EINTR: a signal; run again
    if (r < 0) throw new Error(`KVM_RUN failed: errno ${-r}`);
    const e = v.exit();
    if (e.kind !== 'io' || e.direction !== 'out' || e.port !== REPORT_PORT || e.size !== 4) {
      const regs = v.getRegs();
      t.log(`unexpected exit ${JSON.stringify(e, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x))} at rip 0x${regs.rip.toString(16)}`);
      throw new Error(`unexpected exit: ${e.kind}`);
    }
    values.push(v.runView.getUint32(e.dataOffset, true));
  }
  return values;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Saved { vcpu: X86VcpuState; vm: X86VmState; ram: Uint8Array; counter: number; caps: X86StateCaps; saveMs: number[] }

/** Boots A, runs RUN_BEFORE_SAVE iterations, completes the pending OUT and saves (timed TIMING_RUNS times). */
async function runAndSave(t: ExecutionContext, kvm: Kvm): Promise<Saved> {
  const a = await createVm(kvm);
  try {
    bootGuest(t, kvm, a);
    const caps = probeX86StateCaps(kvm, a.vm);
    const before = runReports(t, a.vcpu, RUN_BEFORE_SAVE);
    t.deepEqual(before, Array.from({ length: RUN_BEFORE_SAVE }, (_, i) => i + 1), 'A counts 1, 2, 3, ...');
    t.log(`A stopped at its OUT: rip 0x${a.vcpu.getRegs().rip.toString(16)} before completion`);
    completePendingIo(a.vcpu);
    const saveMs: number[] = [];
    let vcpu!: X86VcpuState;
    let vm!: X86VmState;
    for (let i = 0; i < TIMING_RUNS; i++) {
      const t0 = performance.now();
      vcpu = saveVcpuState(a.vcpu, caps);
      vm = saveVmState(a.vm);
      saveMs.push(performance.now() - t0);
    }
    // Through JSON and back: the state must survive serialisation.
    const json = JSON.stringify({ vcpu, vm });
    const parsed = JSON.parse(json) as { vcpu: X86VcpuState; vm: X86VmState };
    return { vcpu: parsed.vcpu, vm: parsed.vm, ram: a.memory.read(0, RAM), counter: before[before.length - 1]!, caps, saveMs };
  } finally {
    a.close();
  }
}

test.serial('x86_64: a second VM restored from saved vCPU + VM state and RAM continues from the saved counter', async (t) => {
  if (!requireKvm(t)) return;
  const kvm = Kvm.open();
  try {
    const saved = await runAndSave(t, kvm);
    t.is(saved.counter, RUN_BEFORE_SAVE);
    const size = JSON.stringify({ vcpu: saved.vcpu, vm: saved.vm }).length;
    t.log(`state: ${size} bytes of JSON (xsave ${saved.caps.xsaveSize} B, ${saved.vcpu.msrs.length} MSRs, ${saved.vcpu.cpuid.length} CPUID entries); RAM ${RAM} B`);
    t.true(saved.vcpu.msrs.some(([i]) => i === MSR_KERNEL_GS_BASE), 'MSR_KERNEL_GS_BASE was saved');

    const restoreMs: number[] = [];
    let b: TestVm | undefined;
    for (let i = 0; i < TIMING_RUNS; i++) {
      b?.close();
      b = await createVm(kvm);
      b.memory.write(0, saved.ram);
      const t0 = performance.now();
      restoreVmState(b.vm, saved.vm);
      restoreVcpuState(b.vcpu, saved.vcpu, saved.caps);
      restoreMs.push(performance.now() - t0);
    }
    const summary = `save (vCPU + VM) median ${median(saved.saveMs).toFixed(3)} ms [${saved.saveMs.map((x) => x.toFixed(3)).join(', ')}]; `
      + `restore (VM + vCPU) median ${median(restoreMs).toFixed(3)} ms [${restoreMs.map((x) => x.toFixed(3)).join(', ')}]; state ${size} B JSON`;
    t.log(summary);
    console.log(`[vcpu-state] ${summary}`);
    const vb = b!;
    try {
      // VM-wide state arrived before B ran a single instruction.
      const pit = decodePitState2(vb.vm.getPit2()).channels[0];
      t.is(pit.mode, PIT_MODE, 'PIT channel 0 mode (programmed by the guest in A)');
      t.is(pit.count, PIT_COUNT, 'PIT channel 0 count');
      t.is(vb.vm.getIrqchip(KVM_IRQCHIP_PIC_MASTER)[IRQCHIP_CHIP + 2], PIC_IMR, 'PIC master IMR');
      const clock = vb.vm.getClock().clock;
      t.true(clock >= CLOCK_START_NS && clock < CLOCK_START_NS + 120_000_000_000n, `kvmclock continues from A's (${clock} ns)`);
      t.is(vb.vcpu.getLapic()[APIC_TPR], TPR_VALUE, 'LAPIC TPR');
      t.deepEqual(vb.vcpu.getMsrs([MSR_KERNEL_GS_BASE]), [{ index: MSR_KERNEL_GS_BASE, data: GS_BASE_VALUE }], 'MSR_KERNEL_GS_BASE');

      const after = runReports(t, vb.vcpu, RUN_AFTER_RESTORE);
      t.deepEqual(after, Array.from({ length: RUN_AFTER_RESTORE }, (_, i) => RUN_BEFORE_SAVE + 1 + i), 'B continues 51, 52, ... (not 1, and no repeated OUT)');
      completePendingIo(vb.vcpu);
      const total = BigInt(RUN_BEFORE_SAVE + RUN_AFTER_RESTORE);
      t.is(vb.vcpu.getRegs().rbx, total, 'RBX');
      t.is(vb.memory.readU64(COUNTER_ADDR), total, 'counter in guest RAM');
      const xsave = saveVcpuState(vb.vcpu, saved.caps).xsave;
      t.is(Buffer.from(xsave, 'base64').readBigUInt64LE(XSAVE_XMM0), total, 'XMM0 (restored through KVM_SET_XSAVE)');
    } finally {
      vb.close();
    }
  } finally {
    kvm.close();
  }
});

test.serial('x86_64: corrupted state is refused with SnapshotStateError naming the field, before any ioctl', async (t) => {
  if (!requireKvm(t)) return;
  const kvm = Kvm.open();
  try {
    const saved = await runAndSave(t, kvm);
    const attempt = async (mutate: (s: X86VcpuState) => void): Promise<SnapshotStateError> => {
      const bad = structuredClone(saved.vcpu);
      mutate(bad);
      const v = await createVm(kvm);
      try {
        const e = t.throws(() => restoreVcpuState(v.vcpu, bad, saved.caps), { instanceOf: SnapshotStateError })!;
        return e;
      } finally {
        v.close();
      }
    };
    const xsaveShort = await attempt((s) => { s.xsave = toBase64(new Uint8Array(saved.caps.xsaveSize - 64)); });
    t.is(xsaveShort.field, 'vcpu.xsave');
    t.regex(xsaveShort.message, new RegExp(`${saved.caps.xsaveSize - 64} bytes, must be ${saved.caps.xsaveSize}`));
    t.is((await attempt((s) => { s.xsave = toBase64(new Uint8Array(saved.caps.xsaveSize + 4096)); })).field, 'vcpu.xsave');

    const unknownMsr = await attempt((s) => { s.msrs.push([0xdead_beef, '0x1']); });
    t.is(unknownMsr.field, `vcpu.msrs[${saved.vcpu.msrs.length}][0]`);
    t.regex(unknownMsr.message, /MSR 0xdeadbeef is not in this host's KVM_GET_MSR_INDEX_LIST/);
    t.is((await attempt((s) => { s.regs = 'not base64!'; })).field, 'vcpu.regs');
    t.is((await attempt((s) => { s.id = 3; })).field, 'vcpu.id');
    t.is((await attempt((s) => { s.mpState = 99; })).field, 'vcpu.mpState');
    t.is((await attempt((s) => { s.msrs[0]![1] = '0x1ffffffffffffffff'; })).field, 'vcpu.msrs[0][1]');
    t.is((await attempt((s) => { (s as { version: number }).version = 2; })).field, 'vcpu.version');

    // Nothing reached KVM: a vCPU that was given corrupted state still has no CPUID (the first ioctl of a restore).
    const fresh = await createVm(kvm);
    try {
      const bad = structuredClone(saved.vcpu);
      bad.xsave = toBase64(new Uint8Array(16));
      t.throws(() => restoreVcpuState(fresh.vcpu, bad, saved.caps), { instanceOf: SnapshotStateError });
      t.is(fresh.vcpu.getCpuid2().length, 0, 'no ioctl was issued');
    } finally {
      fresh.close();
    }

    // A well-formed value KVM refuses (reserved PAT memory types) is reported by MSR, as the same typed error.
    const patAt = saved.vcpu.msrs.findIndex(([i]) => i === MSR_IA32_CR_PAT);
    if (patAt >= 0) {
      const e = await attempt((s) => { s.msrs[patAt]![1] = `0x${INVALID_PAT.toString(16)}`; });
      t.regex(e.message, /KVM refused MSR 0x277/);
    } else {
      t.log('MSR_IA32_CR_PAT is not in this host\'s list; refused-value case not run');
    }

    // Corrupted VM state: wrong chip id, PIT mode out of range.
    const v = await createVm(kvm);
    try {
      const vmBad = structuredClone(saved.vm);
      const chip = Buffer.from(vmBad.irqchip!.picSlave, 'base64');
      chip.writeUInt32LE(2, 0);
      vmBad.irqchip!.picSlave = chip.toString('base64');
      t.is(t.throws(() => restoreVmState(v.vm, vmBad), { instanceOf: SnapshotStateError })!.field, 'vm.irqchip.picSlave');
      const pitBad = structuredClone(saved.vm);
      const pit = Buffer.from(pitBad.pit!, 'base64');
      pit[13] = 7; // channels[0].mode
      pitBad.pit = pit.toString('base64');
      t.is(t.throws(() => restoreVmState(v.vm, pitBad), { instanceOf: SnapshotStateError })!.field, 'vm.pit.channels[0].mode');
      // And the real state still restores into the same VM afterwards (the process and KVM are fine).
      restoreVmState(v.vm, saved.vm);
      restoreVcpuState(v.vcpu, saved.vcpu, saved.caps);
      v.memory.write(0, saved.ram);
      t.deepEqual(runReports(t, v.vcpu, 3), [RUN_BEFORE_SAVE + 1, RUN_BEFORE_SAVE + 2, RUN_BEFORE_SAVE + 3]);
    } finally {
      v.close();
    }
  } finally {
    kvm.close();
  }
});
