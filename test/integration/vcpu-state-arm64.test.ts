/**
 * arm64 vCPU + vGICv3 state save/restore on a real /dev/kvm, with the
 * lowest-level pieces on this thread. The EL1 guest (MMU off, hand-assembled
 * below) counts in X1 and in RAM and reports X1 with a store to an MMIO
 * address each iteration. VM A runs it, its vCPU (every register of
 * KVM_GET_REG_LIST) and vGIC are saved through JSON, and VM B, built from
 * scratch with a copy of A's RAM, must continue from the saved counter and
 * carry the vGIC register A had. On x86_64 hosts it passes as not applicable.
 *
 * Run: node dist/test/hosts/cli.js --arch arm64 --files dist/test/integration/vcpu-state-arm64.test.js
 */
import test, { type ExecutionContext } from 'ava';
import { Kvm } from '../../lib/kvm/kvm.js';
import type { Vm } from '../../lib/kvm/vm.js';
import type { Vcpu } from '../../lib/kvm/vcpu.js';
import { PSTATE_EL1H_DAIF_MASKED, REG_MPIDR_EL1, REG_PC, REG_PSTATE, xRegId } from '../../lib/kvm/arm64.js';
import { distRegAttr, KVM_DEV_ARM_VGIC_GRP_DIST_REGS } from '../../lib/kvm/arm64-state.js';
import { close as closeFd } from '../../lib/kvm/ffi.js';
import { mapGuestMemory, type HostGuestMemory } from '../../lib/memory/host-memory.js';
import { SnapshotStateError } from '../../lib/errors.js';
import { createGicV3, initVcpus } from '../../arch/arm64/cpu.js';
import { completePendingIo, restoreVcpuState, saveVcpuState, type Arm64VcpuState } from '../../arch/arm64/vcpu-state.js';
import { restoreVgicState, saveVgicState, type VgicV3State } from '../../arch/arm64/vgic-state.js';
import { requireKvm, skipOrFail } from '../helpers/kvm.js';

const RAM = 2 * 1024 * 1024;
const CODE_ADDR = 0x1_0000;
const COUNTER_ADDR = 0x1_1000;
/** Not RAM, not the GIC: every store here is a KVM_EXIT_MMIO. */
const REPORT_ADDR = 0x1000_0000;
const RUN_BEFORE_SAVE = 30;
const RUN_AFTER_RESTORE = 10;
/** GICD_IPRIORITYR word for SPIs 32..35 and a value the host writes in A (SPI 33 priority 0xa0). */
const GICD_IPRIORITYR_SPI32 = 0x420;
const PRIORITY_WORD = 0x0000_a000;
const TIMING_RUNS = 5;

const guestCode = [
  0x91000421, // loop: add x1, x1, #1
  0xf9400062, //       ldr x2, [x3]        ; X3 = COUNTER_ADDR
  0x91000442, //       add x2, x2, #1
  0xf9000062, //       str x2, [x3]
  0xf9000081, //       str x1, [x4]        ; X4 = REPORT_ADDR: MMIO exit
  0x17fffffb, //       b loop              ; back 5 instructions
];

interface ArmVm { vm: Vm; vcpu: Vcpu; gic: number; mem: HostGuestMemory; close(): void }

async function createVm(kvm: Kvm): Promise<ArmVm> {
  const vm = kvm.createVm();
  const mem = mapGuestMemory([{ gpa: 0, size: RAM }]);
  let gic = -1;
  try {
    const r = mem.memory.regions[0]!;
    await vm.setUserMemoryRegion(0, r.gpa, r.size, r.hostAddr);
    const vcpu = vm.createVcpu(0);
    initVcpus(vm, [vcpu]);
    gic = createGicV3(vm);
    return { vm, vcpu, gic, mem, close() { vm.close(); closeFd(gic); mem.unmap(); } };
  } catch (e) {
    vm.close();
    if (gic >= 0) closeFd(gic);
    mem.unmap();
    throw e;
  }
}

function runReports(t: ExecutionContext, v: Vcpu, n: number): bigint[] {
  const values: bigint[] = [];
  for (let exits = 0; values.length < n; exits++) {
    if (exits > n + 16) throw new Error(`no progress after ${exits} exits`);
    const r = v.runOnce();
    if (r === -4) continue;
    if (r < 0) throw new Error(`KVM_RUN failed: errno ${-r}`);
    const e = v.exit();
    if (e.kind !== 'mmio' || !e.isWrite || e.address !== REPORT_ADDR || e.length !== 8) {
      t.log(`unexpected exit ${JSON.stringify(e, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x))} at pc 0x${v.getOneReg(REG_PC).toString(16)}`);
      throw new Error(`unexpected exit: ${e.kind}`);
    }
    values.push(v.runView.getBigUint64(e.dataOffset, true));
  }
  return values;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const seq = (from: number, n: number) => Array.from({ length: n }, (_, i) => BigInt(from + i));

test.serial('arm64: a second VM restored from saved vCPU registers, vGIC state and RAM continues the count', async (t) => {
  // `npm test` runs this file in the arm64 tier only (test/run-tests.ts); elsewhere it cannot run.
  if (process.arch !== 'arm64') return skipOrFail(t, 'needs an arm64 host with KVM');
  if (!requireKvm(t)) return;
  const kvm = Kvm.open();
  try {
    const a = await createVm(kvm);
    let saved: { vcpu: Arm64VcpuState; vgic: VgicV3State; ram: Uint8Array };
    const saveMs: number[] = [];
    try {
      const code = new Uint8Array(guestCode.length * 4);
      guestCode.forEach((insn, i) => new DataView(code.buffer).setUint32(4 * i, insn, true));
      a.mem.memory.write(CODE_ADDR, code);
      a.vcpu.setOneReg(REG_PSTATE, PSTATE_EL1H_DAIF_MASKED);
      a.vcpu.setOneReg(xRegId(1), 0n);
      a.vcpu.setOneReg(xRegId(3), BigInt(COUNTER_ADDR));
      a.vcpu.setOneReg(xRegId(4), BigInt(REPORT_ADDR));
      a.vcpu.setOneReg(REG_PC, BigInt(CODE_ADDR));
      const prio = new Uint8Array(4);
      new DataView(prio.buffer).setUint32(0, PRIORITY_WORD, true);
      a.vm.setDeviceAttr(a.gic, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, distRegAttr(GICD_IPRIORITYR_SPI32), prio);

      t.deepEqual(runReports(t, a.vcpu, RUN_BEFORE_SAVE), seq(1, RUN_BEFORE_SAVE), 'A counts 1, 2, 3, ...');
      completePendingIo(a.vcpu);
      let vcpu!: Arm64VcpuState;
      let vgic!: VgicV3State;
      const mpidrs = [a.vcpu.getOneReg(REG_MPIDR_EL1)];
      for (let i = 0; i < TIMING_RUNS; i++) {
        const t0 = performance.now();
        vcpu = saveVcpuState(a.vcpu);
        vgic = saveVgicState(a.vm, a.gic, mpidrs);
        saveMs.push(performance.now() - t0);
      }
      saved = { ...(JSON.parse(JSON.stringify({ vcpu, vgic })) as { vcpu: Arm64VcpuState; vgic: VgicV3State }), ram: a.mem.memory.read(0, RAM) };
    } finally {
      a.close();
    }
    const size = JSON.stringify({ vcpu: saved.vcpu, vgic: saved.vgic }).length;
    t.log(`state: ${size} B JSON, ${saved.vcpu.regs.length} registers, ${saved.vgic.dist.length} GICD words, nrIrqs ${saved.vgic.nrIrqs}`);

    const restoreMs: number[] = [];
    let b: ArmVm | undefined;
    for (let i = 0; i < TIMING_RUNS; i++) {
      b?.close();
      b = await createVm(kvm);
      b.mem.memory.write(0, saved.ram);
      const t0 = performance.now();
      restoreVcpuState(b.vcpu, saved.vcpu);
      restoreVgicState(b.vm, b.gic, [b.vcpu.getOneReg(REG_MPIDR_EL1)], saved.vgic);
      restoreMs.push(performance.now() - t0);
    }
    const summary = `arm64 save (vCPU + vGIC) median ${median(saveMs).toFixed(3)} ms [${saveMs.map((x) => x.toFixed(1)).join(', ')}]; `
      + `restore median ${median(restoreMs).toFixed(3)} ms [${restoreMs.map((x) => x.toFixed(1)).join(', ')}]; state ${size} B JSON`;
    t.log(summary);
    console.log(`[vcpu-state] ${summary}`);
    const vb = b!;
    try {
      const prio = new Uint8Array(4);
      vb.vm.getDeviceAttr(vb.gic, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, distRegAttr(GICD_IPRIORITYR_SPI32), prio);
      t.is(new DataView(prio.buffer).getUint32(0, true), PRIORITY_WORD, 'GICD_IPRIORITYR carried over');
      t.deepEqual(runReports(t, vb.vcpu, RUN_AFTER_RESTORE), seq(RUN_BEFORE_SAVE + 1, RUN_AFTER_RESTORE), 'B continues (no repeated store)');
      t.is(vb.mem.memory.readU64(COUNTER_ADDR), BigInt(RUN_BEFORE_SAVE + RUN_AFTER_RESTORE), 'counter in RAM');
    } finally {
      vb.close();
    }

    // Corrupted: a register this vCPU does not list, and a value of the wrong size; nothing half-applied matters (fresh VM).
    const c = await createVm(kvm);
    try {
      const bad = structuredClone(saved.vcpu);
      bad.regs.push(['0x603000000013ffff', '00'.repeat(8)]);
      t.is(t.throws(() => restoreVcpuState(c.vcpu, bad), { instanceOf: SnapshotStateError })!.field, `vcpu.regs[${saved.vcpu.regs.length}][0]`);
      const short = structuredClone(saved.vcpu);
      short.regs[0]![1] = short.regs[0]![1].slice(2);
      t.is(t.throws(() => restoreVcpuState(c.vcpu, short), { instanceOf: SnapshotStateError })!.field, 'vcpu.regs[0][1]');
      const vgicBad = structuredClone(saved.vgic);
      vgicBad.dist.push([0x2, '0x0']);
      t.throws(() => restoreVgicState(c.vm, c.gic, [c.vcpu.getOneReg(REG_MPIDR_EL1)], vgicBad), { instanceOf: SnapshotStateError });
    } finally {
      c.close();
    }
  } finally {
    kvm.close();
  }
});
