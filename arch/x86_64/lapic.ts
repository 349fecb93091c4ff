/**
 * Local APIC setup for boot: LINT0 takes the 8259 PIC's output as ExtINT and
 * LINT1 takes NMI, the "virtual wire" wiring the MP table describes.
 * Works on the register page of struct kvm_lapic_state (KVM_GET/SET_LAPIC).
 */

/** Size of kvm_lapic_state.regs (the APIC register page KVM exposes). */
export const KVM_APIC_REG_SIZE = 1024;
/** LVT LINT0 register offset. */
export const APIC_LVT0 = 0x350;
/** LVT LINT1 register offset. */
export const APIC_LVT1 = 0x360;
/** LVT delivery mode field: bits 10:8. */
export const APIC_DELIVERY_MODE_SHIFT = 8;
export const APIC_DELIVERY_MODE_MASK = 0x7;
/** Delivery modes. */
export const APIC_MODE_NMI = 0x4;
export const APIC_MODE_EXTINT = 0x7;

/** Replaces the delivery mode of a LVT value, keeping every other bit. */
export function setDeliveryMode(lvt: number, mode: number): number {
  const mask = APIC_DELIVERY_MODE_MASK << APIC_DELIVERY_MODE_SHIFT;
  return ((lvt & ~mask) | ((mode & APIC_DELIVERY_MODE_MASK) << APIC_DELIVERY_MODE_SHIFT)) >>> 0;
}

/**
 * Sets LVT LINT0 to ExtINT and LINT1 to NMI in `state` (the 1024-byte
 * kvm_lapic_state.regs, little-endian u32 registers), in place; mask,
 * trigger and other bits are preserved.
 * Throws RangeError when `state` is not 1024 bytes.
 */
export function configureLapicLint(state: Uint8Array): void {
  if (state.length !== KVM_APIC_REG_SIZE) throw new RangeError(`kvm_lapic_state.regs must be ${KVM_APIC_REG_SIZE} bytes, got ${state.length}`);
  const dv = new DataView(state.buffer, state.byteOffset, state.byteLength);
  dv.setUint32(APIC_LVT0, setDeliveryMode(dv.getUint32(APIC_LVT0, true), APIC_MODE_EXTINT), true);
  dv.setUint32(APIC_LVT1, setDeliveryMode(dv.getUint32(APIC_LVT1, true), APIC_MODE_NMI), true);
}
