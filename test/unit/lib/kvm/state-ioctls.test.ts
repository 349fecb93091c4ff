/**
 * The state save/restore ioctl numbers, capabilities and struct layouts
 * against the kernel's headers. Expected values were printed by a C program
 * compiled against /usr/include/linux/kvm.h and asm/kvm.h (x86-64, Linux
 * 6.x uapi headers: printf of each macro, sizeof and offsetof), pinned here
 * so the test needs no compiler.
 */
import test from 'ava';
import * as io from '../../../../lib/kvm/ioctls.js';
import * as ss from '../../../../lib/kvm/state-structs.js';
import { HEADER_CAPS, HEADER_IOCTLS } from './state-header-values.js';

/** Flag and enum values from the same headers. */
const HEADER_STRUCT_CONSTANTS: Record<string, number> = {
  KVM_VCPUEVENT_VALID_NMI_PENDING: 0x1, KVM_VCPUEVENT_VALID_SIPI_VECTOR: 0x2, KVM_VCPUEVENT_VALID_SHADOW: 0x4,
  KVM_VCPUEVENT_VALID_SMM: 0x8, KVM_VCPUEVENT_VALID_PAYLOAD: 0x10, KVM_VCPUEVENT_VALID_TRIPLE_FAULT: 0x20,
  KVM_CLOCK_TSC_STABLE: 0x2, KVM_CLOCK_REALTIME: 0x4, KVM_CLOCK_HOST_TSC: 0x8, KVM_PIT_FLAGS_HPET_LEGACY: 0x1,
  KVM_PIT_FLAGS_SPEAKER_DATA_ON: 0x2, KVM_MP_STATE_RUNNABLE: 0, KVM_MP_STATE_UNINITIALIZED: 1,
  KVM_MP_STATE_INIT_RECEIVED: 2, KVM_MP_STATE_HALTED: 3, KVM_MP_STATE_SIPI_RECEIVED: 4, KVM_MP_STATE_STOPPED: 5,
  KVM_MP_STATE_SUSPENDED: 10, KVM_MAX_XCRS: 16, KVM_IRQCHIP_PIC_MASTER: 0, KVM_IRQCHIP_PIC_SLAVE: 1, KVM_IRQCHIP_IOAPIC: 2,
};

/** sizeof(struct ...). */
const C_SIZES: Record<string, number> = {
  KVM_VCPU_EVENTS_SIZE: 64, KVM_DEBUGREGS_SIZE: 128, KVM_XSAVE_SIZE: 4096, KVM_XCRS_SIZE: 392, KVM_IRQCHIP_SIZE: 520,
  KVM_PIC_STATE_SIZE: 16, KVM_IOAPIC_STATE_SIZE: 216, KVM_PIT_STATE2_SIZE: 112, KVM_PIT_CHANNEL_STATE_SIZE: 24,
  KVM_CLOCK_DATA_SIZE: 48, IRQCHIP_CHIP: 8 /* offsetof(kvm_irqchip, chip) */,
};

test('state ioctl numbers match linux/kvm.h', (t) => {
  const ours = io as unknown as Record<string, number>;
  for (const [name, value] of Object.entries(HEADER_IOCTLS)) t.is(ours[name], value, name);
});

test('state ioctls have names for error messages (numbers that share nr/dir differ by size)', (t) => {
  for (const name of Object.keys(HEADER_IOCTLS)) t.is(io.ioctlName(HEADER_IOCTLS[name]!), name);
  t.not(io.KVM_GET_PIT2, io.KVM_GET_VCPU_EVENTS);
  t.not(io.KVM_SET_TSC_KHZ, io.KVM_SET_DEBUGREGS);
});

test('capability numbers match linux/kvm.h', (t) => {
  const ours = io as unknown as Record<string, number>;
  for (const [name, value] of Object.entries(HEADER_CAPS)) t.is(ours[name], value, name);
});

test('struct sizes and constants match the headers', (t) => {
  const ours = ss as unknown as Record<string, number>;
  for (const [name, value] of Object.entries(C_SIZES)) t.is(ours[name], value, name);
  for (const [name, value] of Object.entries(HEADER_STRUCT_CONSTANTS)) t.is(ours[name], value, name);
  t.is(ss.KVM_VCPUEVENT_VALID_ALL, 0x3f, 'all known event flags');
});
