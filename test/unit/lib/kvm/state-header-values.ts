/**
 * The state save/restore ioctl and capability numbers as linux/kvm.h
 * defines them (printed by a C program compiled against the x86-64 uapi
 * headers). Shared by state-ioctls.test.ts and ioctls.test.ts.
 */

/** printf("%lx", KVM_...) from linux/kvm.h. */
export const HEADER_IOCTLS: Record<string, number> = {
  KVM_GET_CPUID2: 0xc008ae91, KVM_GET_VCPU_EVENTS: 0x8040ae9f, KVM_SET_VCPU_EVENTS: 0x4040aea0,
  KVM_GET_DEBUGREGS: 0x8080aea1, KVM_SET_DEBUGREGS: 0x4080aea2, KVM_SET_TSC_KHZ: 0xaea2, KVM_GET_TSC_KHZ: 0xaea3,
  KVM_GET_XSAVE: 0x9000aea4, KVM_SET_XSAVE: 0x5000aea5, KVM_GET_XSAVE2: 0x9000aecf, KVM_GET_XCRS: 0x8188aea6,
  KVM_SET_XCRS: 0x4188aea7, KVM_GET_IRQCHIP: 0xc208ae62, KVM_SET_IRQCHIP: 0x8208ae63, KVM_GET_CLOCK: 0x8030ae7c,
  KVM_SET_CLOCK: 0x4030ae7b, KVM_GET_PIT2: 0x8070ae9f, KVM_SET_PIT2: 0x4070aea0, KVM_HAS_DEVICE_ATTR: 0x4018aee3,
  KVM_GET_REG_LIST: 0xc008aeb0,
};

export const HEADER_CAPS: Record<string, number> = {
  KVM_CAP_VCPU_EVENTS: 41, KVM_CAP_DEBUGREGS: 50, KVM_CAP_XSAVE: 55, KVM_CAP_XCRS: 56, KVM_CAP_XSAVE2: 208,
  KVM_CAP_ADJUST_CLOCK: 39, KVM_CAP_PIT_STATE2: 35, KVM_CAP_TSC_CONTROL: 60, KVM_CAP_GET_TSC_KHZ: 61,
};

