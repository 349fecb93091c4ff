/**
 * KVM ioctl request numbers, grouped by the fd they are issued on, with the
 * capability each one needs. Values are _IO/_IOR/_IOW/_IOWR(KVMIO = 0xAE, nr,
 * size) from linux/kvm.h; the generic _IOC encoding is the same on x86-64 and arm64; unit tests check them against the encoding.
 */
export const KVMIO = 0xae;

const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;

/** The kernel's _IOC encoding: dir(2) | size(14) | type(8) | nr(8). */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
const io = (nr: number) => ioc(IOC_NONE, KVMIO, nr, 0);
const ior = (nr: number, size: number) => ioc(IOC_READ, KVMIO, nr, size);
const iow = (nr: number, size: number) => ioc(IOC_WRITE, KVMIO, nr, size);
const iowr = (nr: number, size: number) => ioc(IOC_READ | IOC_WRITE, KVMIO, nr, size);

// --- system ioctls (/dev/kvm fd) ---
export const KVM_GET_API_VERSION = io(0x00);
export const KVM_CREATE_VM = io(0x01);
export const KVM_GET_MSR_INDEX_LIST = iowr(0x02, 4); // struct kvm_msr_list header
export const KVM_CHECK_EXTENSION = io(0x03);
export const KVM_GET_VCPU_MMAP_SIZE = io(0x04);
export const KVM_GET_SUPPORTED_CPUID = iowr(0x05, 8); // KVM_CAP_EXT_CPUID; struct kvm_cpuid2 header

// --- VM ioctls ---
export const KVM_CREATE_VCPU = io(0x41);
export const KVM_SET_USER_MEMORY_REGION = iow(0x46, 32); // KVM_CAP_USER_MEMORY
export const KVM_SET_TSS_ADDR = io(0x47); // KVM_CAP_SET_TSS_ADDR
export const KVM_SET_IDENTITY_MAP_ADDR = iow(0x48, 8); // KVM_CAP_SET_IDENTITY_MAP_ADDR
export const KVM_CREATE_IRQCHIP = io(0x60); // KVM_CAP_IRQCHIP
export const KVM_IRQ_LINE = iow(0x61, 8); // KVM_CAP_IRQCHIP
export const KVM_IRQFD = iow(0x76, 32); // KVM_CAP_IRQFD
export const KVM_CREATE_PIT2 = iow(0x77, 64); // KVM_CAP_PIT2
export const KVM_IOEVENTFD = iow(0x79, 64); // KVM_CAP_IOEVENTFD
export const KVM_ENABLE_CAP = iow(0xa3, 104);
export const KVM_CREATE_DEVICE = iowr(0xe0, 12); // KVM_CAP_DEVICE_CTRL
export const KVM_SET_DEVICE_ATTR = iow(0xe1, 24);
export const KVM_GET_DEVICE_ATTR = iow(0xe2, 24);

// --- vCPU ioctls ---
/** A read-only fd of the vCPU's (or, on a VM fd, the VM's) counters in KVM's binary stats format (KVM_CAP_BINARY_STATS_FD, Linux 5.14). */
export const KVM_GET_STATS_FD = io(0xce);
export const KVM_RUN = io(0x80);
export const KVM_GET_REGS = ior(0x81, 144);
export const KVM_SET_REGS = iow(0x82, 144);
export const KVM_GET_SREGS = ior(0x83, 312);
export const KVM_SET_SREGS = iow(0x84, 312);
export const KVM_GET_MSRS = iowr(0x88, 8); // struct kvm_msrs header
export const KVM_SET_MSRS = iow(0x89, 8);
export const KVM_GET_FPU = ior(0x8c, 416);
export const KVM_SET_FPU = iow(0x8d, 416);
export const KVM_GET_LAPIC = ior(0x8e, 1024); // KVM_CAP_IRQCHIP
export const KVM_SET_LAPIC = iow(0x8f, 1024);
export const KVM_SET_CPUID2 = iow(0x90, 8);
export const KVM_GET_MP_STATE = ior(0x98, 4); // KVM_CAP_MP_STATE
export const KVM_SET_MP_STATE = iow(0x99, 4);
export const KVM_GET_ONE_REG = iow(0xab, 16); // KVM_CAP_ONE_REG; struct kvm_one_reg
export const KVM_SET_ONE_REG = iow(0xac, 16);
// arm64 only (struct kvm_vcpu_init: u32 target, u32 features[7])
export const KVM_ARM_VCPU_INIT = iow(0xae, 32); // vCPU ioctl
export const KVM_ARM_PREFERRED_TARGET = ior(0xaf, 32); // VM ioctl

// --- capabilities (KVM_CHECK_EXTENSION arguments) ---
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_MP_STATE = 14;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_TSC_DEADLINE_TIMER = 72;
export const KVM_CAP_READONLY_MEM = 81;
export const KVM_CAP_ONE_REG = 70;
export const KVM_CAP_ARM_PSCI_0_2 = 102;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
export const KVM_CAP_BINARY_STATS_FD = 203;

/** kvm_userspace_memory_region.flags: the guest may read the slot; its writes exit as MMIO (KVM_CAP_READONLY_MEM). */
export const KVM_MEM_READONLY = 1 << 1;

/** The KVM API version every kernel since 2.6.22 reports. */
export const KVM_API_VERSION = 12;

/** Human name of an ioctl number, for error messages. */
export function ioctlName(req: number): string {
  for (const [name, value] of Object.entries(NAMED)) if (value === req) return name;
  return `ioctl 0x${req.toString(16)}`;
}
const NAMED: Record<string, number> = {
  KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_MSR_INDEX_LIST, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE,
  KVM_GET_SUPPORTED_CPUID, KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR,
  KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, KVM_IRQFD, KVM_CREATE_PIT2, KVM_IOEVENTFD, KVM_ENABLE_CAP, KVM_CREATE_DEVICE,
  KVM_SET_DEVICE_ATTR, KVM_GET_DEVICE_ATTR, KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS,
  KVM_GET_MSRS, KVM_SET_MSRS, KVM_GET_FPU, KVM_SET_FPU, KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_SET_CPUID2,
  KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_GET_ONE_REG, KVM_SET_ONE_REG, KVM_ARM_VCPU_INIT, KVM_ARM_PREFERRED_TARGET, KVM_GET_STATS_FD,
};

// ---- vCPU and VM state save/restore (snapshot groundwork, issue #15) ----
// Struct sizes: lib/kvm/state-structs.ts; values checked against linux/kvm.h in test/unit/lib/kvm/state-ioctls.test.ts.

// system ioctls (/dev/kvm fd): none new (KVM_CHECK_EXTENSION also works on a VM fd, which KVM_CAP_XSAVE2 needs).

// VM ioctls
export const KVM_GET_IRQCHIP = iowr(0x62, 520); // KVM_CAP_IRQCHIP; struct kvm_irqchip
export const KVM_SET_IRQCHIP = ior(0x63, 520); // KVM_CAP_IRQCHIP (the header declares it _IOR)
export const KVM_SET_CLOCK = iow(0x7b, 48); // KVM_CAP_ADJUST_CLOCK; struct kvm_clock_data
export const KVM_GET_CLOCK = ior(0x7c, 48); // KVM_CAP_ADJUST_CLOCK
export const KVM_GET_PIT2 = ior(0x9f, 112); // KVM_CAP_PIT_STATE2; struct kvm_pit_state2
export const KVM_SET_PIT2 = iow(0xa0, 112); // KVM_CAP_PIT_STATE2
export const KVM_HAS_DEVICE_ATTR = iow(0xe3, 24); // KVM_CAP_DEVICE_CTRL; struct kvm_device_attr (device fd)

// vCPU ioctls
export const KVM_GET_CPUID2 = iowr(0x91, 8); // KVM_CAP_EXT_CPUID; struct kvm_cpuid2 header
export const KVM_GET_VCPU_EVENTS = ior(0x9f, 64); // KVM_CAP_VCPU_EVENTS; struct kvm_vcpu_events
export const KVM_SET_VCPU_EVENTS = iow(0xa0, 64); // KVM_CAP_VCPU_EVENTS
export const KVM_GET_DEBUGREGS = ior(0xa1, 128); // KVM_CAP_DEBUGREGS; struct kvm_debugregs
export const KVM_SET_DEBUGREGS = iow(0xa2, 128); // KVM_CAP_DEBUGREGS
export const KVM_SET_TSC_KHZ = io(0xa2); // KVM_CAP_TSC_CONTROL
export const KVM_GET_TSC_KHZ = io(0xa3); // KVM_CAP_GET_TSC_KHZ
export const KVM_GET_XSAVE = ior(0xa4, 4096); // KVM_CAP_XSAVE; struct kvm_xsave
export const KVM_SET_XSAVE = iow(0xa5, 4096); // KVM_CAP_XSAVE (reads KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes when larger)
export const KVM_GET_XCRS = ior(0xa6, 392); // KVM_CAP_XCRS; struct kvm_xcrs
export const KVM_SET_XCRS = iow(0xa7, 392); // KVM_CAP_XCRS
export const KVM_GET_REG_LIST = iowr(0xb0, 8); // arm64 (KVM_CAP_ONE_REG); struct kvm_reg_list header
export const KVM_GET_XSAVE2 = ior(0xcf, 4096); // KVM_CAP_XSAVE2

// capabilities
export const KVM_CAP_PIT_STATE2 = 35;
export const KVM_CAP_ADJUST_CLOCK = 39;
export const KVM_CAP_VCPU_EVENTS = 41;
export const KVM_CAP_DEBUGREGS = 50;
export const KVM_CAP_XSAVE = 55;
export const KVM_CAP_XCRS = 56;
export const KVM_CAP_TSC_CONTROL = 60;
export const KVM_CAP_GET_TSC_KHZ = 61;
export const KVM_CAP_XSAVE2 = 208;

Object.assign(NAMED, {
  KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_SET_CLOCK, KVM_GET_CLOCK, KVM_GET_PIT2, KVM_SET_PIT2, KVM_HAS_DEVICE_ATTR,
  KVM_GET_CPUID2, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, KVM_SET_TSC_KHZ,
  KVM_GET_TSC_KHZ, KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS, KVM_GET_REG_LIST, KVM_GET_XSAVE2,
});
