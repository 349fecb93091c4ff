/**
 * The Intel MultiProcessor Specification 1.4 tables, which tell a guest
 * without ACPI how many CPUs it has and how ISA IRQs reach the IOAPIC.
 * The floating pointer sits where the spec (§4) says to scan; the
 * configuration table sits below it in the EBDA.
 */
import { ConfigError } from '../../lib/errors.js';
import type { GuestBlob } from './guest-blob.js';
import { IOAPIC_ADDR, IOAPIC_NUM_PINS, LAPIC_ADDR, MP_CONFIG_TABLE_ADDR, MP_FLOATING_POINTER_ADDR } from './layout.js';

/** "_MP_": MP floating pointer signature. */
export const MPF_SIGNATURE = '_MP_';
/** "PCMP": MP configuration table signature. */
export const MPC_SIGNATURE = 'PCMP';
/** Specification revision byte for MP 1.4. */
export const MP_SPEC_REV_1_4 = 4;

/** MP floating pointer structure offsets (16 bytes). */
export const MPF = { signature: 0, physptr: 4, length: 8, specification: 9, checksum: 10, feature1: 11, feature2: 12, size: 16 } as const;
/** MP configuration table header offsets (44 bytes). */
export const MPC = {
  signature: 0, length: 4, spec: 6, checksum: 7, oem: 8, productid: 16,
  oemptr: 28, oemsize: 32, oemcount: 34, lapic: 36, extTableLength: 40, extTableChecksum: 42, size: 44,
} as const;
/** Processor entry offsets (20 bytes). */
export const MPC_CPU = { type: 0, apicid: 1, apicver: 2, cpuflag: 3, cpufeature: 4, featureflag: 8, size: 20 } as const;
/** Bus entry offsets (8 bytes). */
export const MPC_BUS = { type: 0, busid: 1, bustype: 2, size: 8 } as const;
/** IOAPIC entry offsets (8 bytes). */
export const MPC_IOAPIC = { type: 0, apicid: 1, apicver: 2, flags: 3, apicaddr: 4, size: 8 } as const;
/** IO interrupt assignment entry offsets (8 bytes). */
export const MPC_INTSRC = { type: 0, irqtype: 1, irqflag: 2, srcbus: 4, srcbusirq: 5, dstapic: 6, dstirq: 7, size: 8 } as const;
/** Local interrupt assignment entry offsets (8 bytes). */
export const MPC_LINTSRC = { type: 0, irqtype: 1, irqflag: 2, srcbusid: 4, srcbusirq: 5, destapic: 6, destapiclint: 7, size: 8 } as const;

/** Entry type codes. */
export const MP_PROCESSOR = 0;
export const MP_BUS = 1;
export const MP_IOAPIC = 2;
export const MP_INTSRC = 3;
export const MP_LINTSRC = 4;

/** Processor entry flags: enabled, bootstrap processor. */
export const CPU_ENABLED = 1 << 0;
export const CPU_BOOTPROCESSOR = 1 << 1;
/** IOAPIC entry flag: usable. */
export const MPC_APIC_USABLE = 1 << 0;
/** Interrupt types. */
export const MP_INT = 0;
export const MP_NMI = 1;
export const MP_EXTINT = 3;
/** Polarity and trigger "conforms to the bus" (ISA: active high, edge). */
export const MP_IRQFLAG_DEFAULT = 0;
/** Destination APIC id meaning "every local APIC". */
export const MP_APIC_ALL = 0xff;
/** Local APIC version of an integrated xAPIC (what KVM's LAPIC reports). */
export const LAPIC_VERSION = 0x14;
/** IOAPIC version of the 82093AA (what KVM's IOAPIC reports). */
export const IOAPIC_VERSION = 0x11;
/** Bus id and type string of the one ISA bus. */
export const ISA_BUS_ID = 0;
export const BUS_TYPE_ISA = 'ISA   ';
/** OEM and product id strings (space padded, as the spec asks). */
const OEM_ID = 'FLINTVM ';
const PRODUCT_ID = 'FLINTVM     ';

/** The floating pointer's length field counts 16-byte paragraphs. */
const PARAGRAPH = 16;

/** Bytes available for the configuration table: up to the floating pointer. */
export const MP_CONFIG_TABLE_MAX_SIZE = MP_FLOATING_POINTER_ADDR - MP_CONFIG_TABLE_ADDR;
/** Fixed part of the table: header, bus, IOAPIC, one IO entry per IOAPIC pin, two local entries. */
const FIXED_SIZE = MPC.size + MPC_BUS.size + MPC_IOAPIC.size + IOAPIC_NUM_PINS * MPC_INTSRC.size + 2 * MPC_LINTSRC.size;
/** Most vCPUs the MP table area can describe. */
export const MPTABLE_MAX_VCPUS = Math.floor((MP_CONFIG_TABLE_MAX_SIZE - FIXED_SIZE) / MPC_CPU.size);

/** Inputs of the MP table. */
export interface MpTableInput {
  /** Number of vCPUs, 1..{@link MPTABLE_MAX_VCPUS}; vCPU i has APIC id i, vCPU 0 is the BSP. */
  vcpus: number;
  /** CPUID leaf 1 EAX (family/model/stepping), for the processor entries; 0 if unknown. */
  cpuSignature?: number;
  /** CPUID leaf 1 EDX feature flags, for the processor entries; 0 if unknown. */
  featureFlags?: number;
}

/** Sets `byte` so that the bytes of `buf` sum to 0 mod 256 (MP spec checksum rule). */
function setChecksum(buf: Uint8Array, byte: number): void {
  buf[byte] = 0;
  const sum = buf.reduce((a, b) => a + b, 0);
  buf[byte] = (256 - (sum % 256)) % 256;
}

/** Writes an ASCII string at `off`. */
function putAscii(buf: Uint8Array, off: number, s: string): void {
  for (let i = 0; i < s.length; i++) buf[off + i] = s.charCodeAt(i);
}

/** The configuration table entries, after the header. */
function entries(input: MpTableInput, ioapicId: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let id = 0; id < input.vcpus; id++) {
    const e = new Uint8Array(MPC_CPU.size);
    const dv = new DataView(e.buffer);
    e[MPC_CPU.type] = MP_PROCESSOR;
    e[MPC_CPU.apicid] = id;
    e[MPC_CPU.apicver] = LAPIC_VERSION;
    e[MPC_CPU.cpuflag] = CPU_ENABLED | (id === 0 ? CPU_BOOTPROCESSOR : 0);
    dv.setUint32(MPC_CPU.cpufeature, (input.cpuSignature ?? 0) >>> 0, true);
    dv.setUint32(MPC_CPU.featureflag, (input.featureFlags ?? 0) >>> 0, true);
    out.push(e);
  }
  const bus = new Uint8Array(MPC_BUS.size);
  bus[MPC_BUS.type] = MP_BUS;
  bus[MPC_BUS.busid] = ISA_BUS_ID;
  putAscii(bus, MPC_BUS.bustype, BUS_TYPE_ISA);
  out.push(bus);

  const ioapic = new Uint8Array(MPC_IOAPIC.size);
  ioapic[MPC_IOAPIC.type] = MP_IOAPIC;
  ioapic[MPC_IOAPIC.apicid] = ioapicId;
  ioapic[MPC_IOAPIC.apicver] = IOAPIC_VERSION;
  ioapic[MPC_IOAPIC.flags] = MPC_APIC_USABLE;
  new DataView(ioapic.buffer).setUint32(MPC_IOAPIC.apicaddr, IOAPIC_ADDR, true);
  out.push(ioapic);

  // IRQ n -> IOAPIC pin n for every pin: the ISA IRQs 0-15, and 16-23 for virtio-mmio devices.
  for (let irq = 0; irq < IOAPIC_NUM_PINS; irq++) {
    const e = new Uint8Array(MPC_INTSRC.size);
    e[MPC_INTSRC.type] = MP_INTSRC;
    e[MPC_INTSRC.irqtype] = MP_INT;
    new DataView(e.buffer).setUint16(MPC_INTSRC.irqflag, MP_IRQFLAG_DEFAULT, true);
    e[MPC_INTSRC.srcbus] = ISA_BUS_ID;
    e[MPC_INTSRC.srcbusirq] = irq;
    e[MPC_INTSRC.dstapic] = ioapicId;
    e[MPC_INTSRC.dstirq] = irq;
    out.push(e);
  }
  // LINT0 takes the 8259's ExtINT (virtual wire mode), LINT1 takes NMI, on every LAPIC.
  for (const [irqtype, lint] of [[MP_EXTINT, 0], [MP_NMI, 1]] as const) {
    const e = new Uint8Array(MPC_LINTSRC.size);
    e[MPC_LINTSRC.type] = MP_LINTSRC;
    e[MPC_LINTSRC.irqtype] = irqtype;
    new DataView(e.buffer).setUint16(MPC_LINTSRC.irqflag, MP_IRQFLAG_DEFAULT, true);
    e[MPC_LINTSRC.srcbusid] = ISA_BUS_ID;
    e[MPC_LINTSRC.srcbusirq] = 0;
    e[MPC_LINTSRC.destapic] = MP_APIC_ALL;
    e[MPC_LINTSRC.destapiclint] = lint;
    out.push(e);
  }
  return out;
}

/**
 * Builds the MP floating pointer and configuration table. Pure: returns the
 * two blocks to write, at MP_FLOATING_POINTER_ADDR and MP_CONFIG_TABLE_ADDR.
 * The IOAPIC's id is `vcpus` (the first id after the CPUs').
 *
 * Throws {@link ConfigError} (`vcpus`) outside 1..{@link MPTABLE_MAX_VCPUS}.
 */
export function buildMpTable(input: MpTableInput): GuestBlob[] {
  const { vcpus } = input;
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MPTABLE_MAX_VCPUS) {
    throw new ConfigError('vcpus', `must be 1..${MPTABLE_MAX_VCPUS} on x86_64 (the MP table has room for that many)`, vcpus);
  }
  const parts = entries(input, vcpus);
  const length = MPC.size + parts.reduce((n, p) => n + p.length, 0);
  const table = new Uint8Array(length);
  const dv = new DataView(table.buffer);
  putAscii(table, MPC.signature, MPC_SIGNATURE);
  dv.setUint16(MPC.length, length, true);
  table[MPC.spec] = MP_SPEC_REV_1_4;
  putAscii(table, MPC.oem, OEM_ID);
  putAscii(table, MPC.productid, PRODUCT_ID);
  dv.setUint16(MPC.oemcount, parts.length, true);
  dv.setUint32(MPC.lapic, LAPIC_ADDR, true);
  let off = MPC.size;
  for (const p of parts) {
    table.set(p, off);
    off += p.length;
  }
  setChecksum(table, MPC.checksum);

  const mpf = new Uint8Array(MPF.size);
  putAscii(mpf, MPF.signature, MPF_SIGNATURE);
  new DataView(mpf.buffer).setUint32(MPF.physptr, MP_CONFIG_TABLE_ADDR, true);
  mpf[MPF.length] = MPF.size / PARAGRAPH;
  mpf[MPF.specification] = MP_SPEC_REV_1_4;
  // feature1 = 0: a configuration table is present; feature2 = 0: no IMCR, virtual wire mode.
  setChecksum(mpf, MPF.checksum);
  return [{ gpa: MP_FLOATING_POINTER_ADDR, bytes: mpf }, { gpa: MP_CONFIG_TABLE_ADDR, bytes: table }];
}
