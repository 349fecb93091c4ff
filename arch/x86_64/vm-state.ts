/**
 * x86-64 VM-wide KVM state: the in-kernel PIC pair and IOAPIC
 * (KVM_GET/SET_IRQCHIP), the i8254 PIT (KVM_GET/SET_PIT2) and kvmclock
 * (KVM_GET/SET_CLOCK). JSON-serialisable like X86VcpuState; restoring
 * validates every field before the first ioctl.
 */
import { KvmError, SnapshotStateError } from '../../lib/errors.js';
import type { Vm } from '../../lib/kvm/vm.js';
import {
  decodePitState2, IRQCHIP_CHIP, irqchipId, KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_SIZE, KVM_PIT_FLAGS_HPET_LEGACY, KVM_PIT_FLAGS_SPEAKER_DATA_ON,
  KVM_PIT_STATE2_SIZE,
} from '../../lib/kvm/state-structs.js';
import { expect, fromBase64, fromHex64, intIn, object, toBase64, toHex64 } from '../../lib/kvm/state-json.js';
import { IOAPIC_ADDR } from './layout.js';

/** Format version of X86VmState. */
export const X86_VM_STATE_VERSION = 1;
const ENXIO = 6;
/** i8254 modes 0..5; KVM resets a channel's mode to 0xff (never programmed). */
const PIT_MODE_MAX = 5;
const PIT_MODE_RESET = 0xff;
/** Largest PIT count (a programmed 0 means 65536). */
const PIT_COUNT_MAX = 0x10000;
/** read_state/write_state: RW_STATE_LSB 1 .. RW_STATE_WORD1 4 (0 after reset). */
const PIT_RW_STATE_MAX = 4;
/** rw_mode: access mode 1..3 (LSB, MSB, LSB then MSB); 0 after reset. */
const PIT_RW_MODE_MAX = 3;
const PIT_FLAGS = KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON;
/** struct kvm_pic_state byte offsets of the fields that are C booleans. */
const PIC_BOOL_FIELDS: Record<string, number> = {
  read_reg_select: 6, poll: 7, special_mask: 8, auto_eoi: 10, rotate_on_auto_eoi: 11, special_fully_nested_mode: 12, init4: 13,
};
const PIC_INIT_STATE = 9;
/** init_state: 0 (ready) or ICW2..ICW4 awaited (1..3). */
const PIC_INIT_STATE_MAX = 3;
/** Offset of kvm_ioapic_state.base_address inside the irqchip union. */
const IOAPIC_BASE = 0;

/** Saved VM-wide state (JSON-serialisable). */
export interface X86VmState {
  version: number;
  arch: 'x86_64';
  /** base64 struct kvm_irqchip for the PIC master, PIC slave and IOAPIC; null when the VM has no in-kernel irqchip. */
  irqchip: { picMaster: string; picSlave: string; ioapic: string } | null;
  /** base64 struct kvm_pit_state2; null when the VM has no in-kernel PIT. */
  pit: string | null;
  /** kvmclock in ns (hex). Restored as is: the guest sees no time pass while saved. */
  clock: string;
}

/** Runs `get`, mapping ENXIO (the device was never created) to null. */
function optional<T>(get: () => T): T | null {
  try {
    return get();
  } catch (e) {
    if (e instanceof KvmError && e.errno === ENXIO) return null;
    throw e;
  }
}

/** Saves the VM-wide state; the vCPUs must be paused. */
export function saveVmState(vm: Vm): X86VmState {
  const master = optional(() => vm.getIrqchip(KVM_IRQCHIP_PIC_MASTER));
  const irqchip = master === null ? null : {
    picMaster: toBase64(master),
    picSlave: toBase64(vm.getIrqchip(KVM_IRQCHIP_PIC_SLAVE)),
    ioapic: toBase64(vm.getIrqchip(KVM_IRQCHIP_IOAPIC)),
  };
  const pit = optional(() => vm.getPit2());
  return { version: X86_VM_STATE_VERSION, arch: 'x86_64', irqchip, pit: pit && toBase64(pit), clock: toHex64(vm.getClock().clock) };
}

/** The decoded, validated form of X86VmState. */
export interface CheckedX86VmState {
  irqchips: Uint8Array[] | null;
  pit: Uint8Array | null;
  clock: bigint;
}

function checkIrqchip(field: string, value: unknown, chipId: number): Uint8Array {
  const b = fromBase64(field, value, KVM_IRQCHIP_SIZE);
  if (irqchipId(b) !== chipId) throw new SnapshotStateError(field, `chip_id is ${irqchipId(b)}, expected ${chipId}`, irqchipId(b));
  if (chipId === KVM_IRQCHIP_IOAPIC) {
    const base = new DataView(b.buffer).getBigUint64(IRQCHIP_CHIP + IOAPIC_BASE, true);
    if (base !== BigInt(IOAPIC_ADDR)) throw new SnapshotStateError(`${field}.base_address`, `IOAPIC at 0x${base.toString(16)}, this machine's is at 0x${IOAPIC_ADDR.toString(16)}`, base);
  } else {
    for (const [name, off] of Object.entries(PIC_BOOL_FIELDS)) {
      const v = b[IRQCHIP_CHIP + off]!;
      if (v > 1) throw new SnapshotStateError(`${field}.${name}`, `must be 0 or 1, is ${v}`, v);
    }
    intIn(`${field}.init_state`, b[IRQCHIP_CHIP + PIC_INIT_STATE], 0, PIC_INIT_STATE_MAX);
  }
  return b;
}

function checkPit(field: string, value: unknown): Uint8Array {
  const b = fromBase64(field, value, KVM_PIT_STATE2_SIZE);
  const p = decodePitState2(b);
  if ((p.flags & ~PIT_FLAGS) !== 0) throw new SnapshotStateError(`${field}.flags`, `has unknown bits 0x${(p.flags & ~PIT_FLAGS).toString(16)}`, p.flags);
  p.channels.forEach((c, i) => {
    const at = `${field}.channels[${i}]`;
    intIn(`${at}.count`, c.count, 0, PIT_COUNT_MAX);
    if (c.mode > PIT_MODE_MAX && c.mode !== PIT_MODE_RESET) throw new SnapshotStateError(`${at}.mode`, `must be 0..${PIT_MODE_MAX} (or 0xff, unprogrammed), is ${c.mode}`, c.mode);
    intIn(`${at}.rw_mode`, c.rwMode, 0, PIT_RW_MODE_MAX);
    intIn(`${at}.read_state`, c.readState, 0, PIT_RW_STATE_MAX);
    intIn(`${at}.write_state`, c.writeState, 0, PIT_RW_STATE_MAX);
    intIn(`${at}.count_latched`, c.countLatched, 0, PIT_RW_MODE_MAX);
    for (const [k, v] of [['bcd', c.bcd], ['gate', c.gate], ['status_latched', c.statusLatched]] as const) intIn(`${at}.${k}`, v, 0, 1);
  });
  return b;
}

/** Validates untrusted saved VM state; throws SnapshotStateError naming the first bad field. */
export function checkX86VmState(input: unknown, at = 'vm'): CheckedX86VmState {
  const s = object(at, input);
  expect(`${at}.version`, s.version, X86_VM_STATE_VERSION, 'the state was written by an incompatible flintvm');
  expect(`${at}.arch`, s.arch, 'x86_64', 'restore it on an x86_64 host');
  let irqchips: Uint8Array[] | null = null;
  if (s.irqchip !== null) {
    const c = object(`${at}.irqchip`, s.irqchip);
    irqchips = [
      checkIrqchip(`${at}.irqchip.picMaster`, c.picMaster, KVM_IRQCHIP_PIC_MASTER),
      checkIrqchip(`${at}.irqchip.picSlave`, c.picSlave, KVM_IRQCHIP_PIC_SLAVE),
      checkIrqchip(`${at}.irqchip.ioapic`, c.ioapic, KVM_IRQCHIP_IOAPIC),
    ];
  }
  const pit = s.pit === null ? null : checkPit(`${at}.pit`, s.pit);
  return { irqchips, pit, clock: fromHex64(`${at}.clock`, s.clock) };
}

/**
 * Restores VM-wide state into a fresh VM created like the saved one (same
 * irqchip/PIT), before its vCPUs run. The PIC/IOAPIC go before the PIT,
 * whose reinjection raises IRQ 0 through them; kvmclock last.
 */
export function restoreVmState(vm: Vm, state: unknown, at = 'vm'): void {
  const c = checkX86VmState(state, at);
  for (const chip of c.irqchips ?? []) vm.setIrqchip(chip);
  if (c.pit) vm.setPit2(c.pit);
  vm.setClock({ clock: c.clock, flags: 0, realtime: 0n, hostTsc: 0n });
}
