/**
 * The ioctl numbers against the kernel's own header. The expected values
 * were produced by compiling a C program against /usr/include/linux/kvm.h
 * (Debian 12, x86-64) that printf'ed each macro, and are pinned here so the
 * test needs no compiler. A wrong direction, size or nr in ioctls.ts shows up
 * as a mismatch with the header.
 */
import test from 'ava';
import * as io from '../../../../lib/kvm/ioctls.js';
import { HEADER_CAPS as STATE_CAPS, HEADER_IOCTLS as STATE_IOCTLS } from './state-header-values.js';

/** printf("%lx", KVM_...) for each ioctl, from linux/kvm.h. */
const HEADER_IOCTLS: Record<string, number> = {
  KVM_GET_API_VERSION: 0xae00,
  KVM_CREATE_VM: 0xae01,
  KVM_GET_MSR_INDEX_LIST: 0xc004ae02,
  KVM_CHECK_EXTENSION: 0xae03,
  KVM_GET_VCPU_MMAP_SIZE: 0xae04,
  KVM_GET_SUPPORTED_CPUID: 0xc008ae05,
  KVM_CREATE_VCPU: 0xae41,
  KVM_SET_USER_MEMORY_REGION: 0x4020ae46,
  KVM_SET_TSS_ADDR: 0xae47,
  KVM_SET_IDENTITY_MAP_ADDR: 0x4008ae48,
  KVM_CREATE_IRQCHIP: 0xae60,
  KVM_IRQ_LINE: 0x4008ae61,
  KVM_IRQFD: 0x4020ae76,
  KVM_CREATE_PIT2: 0x4040ae77,
  KVM_IOEVENTFD: 0x4040ae79,
  KVM_ENABLE_CAP: 0x4068aea3,
  KVM_CREATE_DEVICE: 0xc00caee0,
  KVM_SET_DEVICE_ATTR: 0x4018aee1,
  KVM_GET_DEVICE_ATTR: 0x4018aee2,
  KVM_RUN: 0xae80,
  KVM_GET_REGS: 0x8090ae81,
  KVM_SET_REGS: 0x4090ae82,
  KVM_GET_SREGS: 0x8138ae83,
  KVM_SET_SREGS: 0x4138ae84,
  KVM_GET_MSRS: 0xc008ae88,
  KVM_SET_MSRS: 0x4008ae89,
  KVM_GET_FPU: 0x81a0ae8c,
  KVM_SET_FPU: 0x41a0ae8d,
  KVM_GET_LAPIC: 0x8400ae8e,
  KVM_SET_LAPIC: 0x4400ae8f,
  KVM_SET_CPUID2: 0x4008ae90,
  KVM_GET_MP_STATE: 0x8004ae98,
  KVM_SET_MP_STATE: 0x4004ae99,
  KVM_GET_ONE_REG: 0x4010aeab,
  KVM_SET_ONE_REG: 0x4010aeac,
  KVM_GET_STATS_FD: 0xaece,
  // arm64's struct kvm_vcpu_init (32 bytes) declared by hand, as the x86 header only names it.
  KVM_ARM_VCPU_INIT: 0x4020aeae,
  KVM_ARM_PREFERRED_TARGET: 0x8020aeaf,
  ...STATE_IOCTLS,
};

/** The capability numbers and constants from the same header. */
const HEADER_CONSTANTS: Record<string, number> = {
  KVM_CAP_IRQCHIP: 0,
  KVM_CAP_USER_MEMORY: 3,
  KVM_CAP_SET_TSS_ADDR: 4,
  KVM_CAP_EXT_CPUID: 7,
  KVM_CAP_NR_VCPUS: 9,
  KVM_CAP_NR_MEMSLOTS: 10,
  KVM_CAP_MP_STATE: 14,
  KVM_CAP_IRQFD: 32,
  KVM_CAP_PIT2: 33,
  KVM_CAP_IOEVENTFD: 36,
  KVM_CAP_SET_IDENTITY_MAP_ADDR: 37,
  KVM_CAP_MAX_VCPUS: 66,
  KVM_CAP_TSC_DEADLINE_TIMER: 72,
  KVM_CAP_ONE_REG: 70,
  KVM_CAP_ARM_PSCI_0_2: 102,
  KVM_CAP_IMMEDIATE_EXIT: 136,
  KVM_CAP_READONLY_MEM: 81,
  KVM_CAP_BINARY_STATS_FD: 203,
  KVM_MEM_READONLY: 2,
  KVM_API_VERSION: 12,
  KVMIO: 0xae,
  ...STATE_CAPS,
};

/** Every numeric KVM_* export of ioctls.ts. */
const exported = Object.entries(io).filter((e): e is [string, number] => typeof e[1] === 'number');

test('every exported ioctl number equals linux/kvm.h', (t) => {
  for (const [name, value] of Object.entries(HEADER_IOCTLS)) {
    t.is((io as unknown as Record<string, number>)[name], value, `${name}: 0x${value.toString(16)} expected`);
  }
});

test('every exported capability/constant equals linux/kvm.h', (t) => {
  for (const [name, value] of Object.entries(HEADER_CONSTANTS)) {
    t.is((io as unknown as Record<string, number>)[name], value, name);
  }
});

test('no numeric export is left without a header value to check it against', (t) => {
  const known = new Set([...Object.keys(HEADER_IOCTLS), ...Object.keys(HEADER_CONSTANTS)]);
  const unchecked = exported.map(([n]) => n).filter((n) => !known.has(n));
  t.deepEqual(unchecked, [], 'add the new constant to the header tables of this test');
});

test('ioctl numbers are unsigned 32-bit values (no sign from dir bit 31)', (t) => {
  for (const name of Object.keys(HEADER_IOCTLS)) {
    const v = (io as unknown as Record<string, number>)[name]!;
    t.true(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff, name);
  }
});

test('ioc() follows the kernel _IOC encoding dir(2)|size(14)|type(8)|nr(8)', (t) => {
  // _IO(0xAE, 0x80): dir none
  t.is(io.ioc(0, 0xae, 0x80, 0), 0xae80);
  // _IOR(0xAE, 0x81, 144): dir read = 2
  t.is(io.ioc(2, 0xae, 0x81, 144), 0x8090ae81);
  // _IOW(0xAE, 0x82, 144): dir write = 1
  t.is(io.ioc(1, 0xae, 0x82, 144), 0x4090ae82);
  // _IOWR(0xAE, 0x05, 8): dir read|write = 3, top bit set, must stay positive
  t.is(io.ioc(3, 0xae, 0x05, 8), 0xc008ae05);
  // The largest size the 14-bit field holds.
  t.is(io.ioc(3, 0xff, 0xff, 0x3fff), 0xffffffff);
  // Fields land in their own bits.
  t.is(io.ioc(0, 0, 1, 0), 1);
  t.is(io.ioc(0, 1, 0, 0), 1 << 8);
  t.is(io.ioc(0, 0, 0, 1), 1 << 16);
  t.is(io.ioc(1, 0, 0, 0), 1 << 30);
  t.is(io.ioc(2, 0, 0, 0), 0x8000_0000);
});

test('ioc() decodes back to the struct size for sized ioctls', (t) => {
  const sizeOf = (req: number) => (req >>> 16) & 0x3fff;
  t.is(sizeOf(io.KVM_GET_REGS), 144);
  t.is(sizeOf(io.KVM_SET_SREGS), 312);
  t.is(sizeOf(io.KVM_GET_FPU), 416);
  t.is(sizeOf(io.KVM_SET_LAPIC), 1024);
  t.is(sizeOf(io.KVM_IOEVENTFD), 64);
});

test('ioctlName names every ioctl and falls back to hex', (t) => {
  for (const [name, value] of Object.entries(HEADER_IOCTLS)) t.is(io.ioctlName(value), name);
  t.is(io.ioctlName(0x1234), 'ioctl 0x1234');
  t.is(io.ioctlName(0xdeadbeef), 'ioctl 0xdeadbeef');
});

test('ioctl numbers are pairwise distinct', (t) => {
  const values = Object.values(HEADER_IOCTLS);
  t.is(new Set(values).size, values.length);
});
