/**
 * Per-vCPU CPUID: starts from KVM_GET_SUPPORTED_CPUID and makes the topology
 * consistent (one package, one thread per core, `vcpuCount` cores, APIC id =
 * vCPU index), marks the hypervisor, and hides thermal/power features a guest
 * cannot use. Leaf and bit references are to the Intel SDM vol. 2A (CPUID) and
 * AMD APM vol. 3 appendix E.
 */
import { ConfigError } from '../../lib/errors.js';
import type { CpuidEntry } from '../../lib/kvm/types.js';

/** Leaves this module edits. */
export const CPUID_LEAF_VENDOR = 0x0;
export const CPUID_LEAF_FEATURES = 0x1;
export const CPUID_LEAF_CACHE_PARAMS = 0x4;
export const CPUID_LEAF_THERMAL_POWER = 0x6;
export const CPUID_LEAF_EXT_TOPOLOGY = 0xb;
export const CPUID_LEAF_V2_EXT_TOPOLOGY = 0x1f;
export const CPUID_LEAF_KVM_SIGNATURE = 0x40000000;
export const CPUID_LEAF_KVM_FEATURES = 0x40000001;
export const CPUID_LEAF_AMD_ADDR_SIZES = 0x80000008;
export const CPUID_LEAF_AMD_CACHE_TOPOLOGY = 0x8000001d;
export const CPUID_LEAF_AMD_EXT_APIC_ID = 0x8000001e;

/** Leaf 1 EBX fields. */
const L1_EBX_CLFLUSH_SHIFT = 8;
const L1_EBX_LOGICAL_COUNT_SHIFT = 16;
const L1_EBX_APIC_ID_SHIFT = 24;
/** The 8-bit fields of leaf 1 EBX and of leaf 0xB ECX's level number. */
const BYTE_MASK = 0xff;
/** CLFLUSH line size in 8-byte units: 64-byte cache lines. */
export const CLFLUSH_LINE_UNITS = 8;
/** Leaf 1 ECX bit 31: running under a hypervisor. */
export const CPUID_ECX_HYPERVISOR = 1 << 31;
/** Leaf 1 ECX bit 24: the LAPIC timer has TSC-deadline mode. */
export const CPUID_ECX_TSC_DEADLINE = 1 << 24;

/** Host facts that change the table but are not in KVM_GET_SUPPORTED_CPUID. */
export interface CpuidOptions {
  /**
   * KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates TSC-deadline mode.
   * KVM leaves this bit out of the supported list because it depends on the
   * irqchip, so the VMM sets it; without it Linux calibrates the LAPIC timer
   * against the PIT at boot, which is slow.
   */
  tscDeadline?: boolean;
}
/** Leaf 1 EDX bit 28: the logical processor count field is valid (HTT). */
export const CPUID_EDX_HTT = 1 << 28;

/** Leaf 4 / 0x8000001D EAX fields. */
const CACHE_TYPE_MASK = 0x1f;
const CACHE_LEVEL_SHIFT = 5;
const CACHE_LEVEL_MASK = 0x7;
const CACHE_SHARING_SHIFT = 14;
const CACHE_SHARING_MASK = 0xfff;
const CACHE_CORES_SHIFT = 26;
const CACHE_CORES_MASK = 0x3f;
/** Cache levels private to a core; higher levels are shared by the package. */
const PRIVATE_CACHE_MAX_LEVEL = 2;

/** Leaf 6 EAX bit 2: APIC timer always running (ARAT), the one leaf-6 bit KVM offers. */
export const CPUID_6_EAX_ARAT = 1 << 2;

/** Leaf 0xB / 0x1F level types (ECX bits 15:8). */
export const TOPOLOGY_LEVEL_INVALID = 0;
export const TOPOLOGY_LEVEL_SMT = 1;
export const TOPOLOGY_LEVEL_CORE = 2;
const TOPOLOGY_LEVEL_TYPE_SHIFT = 8;

/** AMD 0x80000008 ECX: NC (cores - 1) in bits 7:0, ApicIdCoreIdSize in bits 15:12. */
const AMD_NC_MASK = 0xff;
const AMD_APIC_ID_SIZE_SHIFT = 12;
const AMD_APIC_ID_SIZE_MASK = 0xf;

/** Highest APIC id xAPIC mode can address (0xff is broadcast). */
export const MAX_XAPIC_ID = 0xfe;

/** Vendor strings from leaf 0 (EBX, EDX, ECX). */
export const VENDOR_AMD = 'AuthenticAMD';
export const VENDOR_HYGON = 'HygonGenuine';

/** Number of bits needed to number `n` items (ceil(log2 n); 0 for n <= 1). */
function bitsFor(n: number): number {
  return n <= 1 ? 0 : Math.ceil(Math.log2(n));
}

/** Replaces bits `mask << shift` of `reg` with `value`. Result is unsigned. */
function setField(reg: number, shift: number, mask: number, value: number): number {
  return ((reg & ~(mask << shift)) | ((value & mask) << shift)) >>> 0;
}

/** The 12-character vendor string of leaf 0, or '' if absent. */
export function cpuVendor(entries: readonly CpuidEntry[]): string {
  const e = entries.find((x) => x.function === CPUID_LEAF_VENDOR);
  if (!e) return '';
  // Twelve ASCII bytes, in register order EBX, EDX, ECX.
  const regs = [e.ebx, e.edx, e.ecx];
  const b = new Uint8Array(regs.length * Uint32Array.BYTES_PER_ELEMENT);
  const dv = new DataView(b.buffer);
  regs.forEach((r, i) => dv.setUint32(i * Uint32Array.BYTES_PER_ELEMENT, r >>> 0, true));
  return String.fromCharCode(...b);
}

/** Leaf 0xB/0x1F subleaf `index`: SMT level (1 thread), core level (`count`), then invalid. */
function topologyEntry(e: CpuidEntry, vcpuId: number, count: number): CpuidEntry {
  const levelNumber = e.index & BYTE_MASK;
  const apicId = vcpuId >>> 0;
  if (e.index === 0) {
    return { ...e, eax: 0, ebx: 1, ecx: (TOPOLOGY_LEVEL_SMT << TOPOLOGY_LEVEL_TYPE_SHIFT) | levelNumber, edx: apicId };
  }
  if (e.index === 1) {
    // EAX: how far to shift the x2APIC id to get the package id.
    return { ...e, eax: bitsFor(count), ebx: count, ecx: (TOPOLOGY_LEVEL_CORE << TOPOLOGY_LEVEL_TYPE_SHIFT) | levelNumber, edx: apicId };
  }
  return { ...e, eax: 0, ebx: 0, ecx: (TOPOLOGY_LEVEL_INVALID << TOPOLOGY_LEVEL_TYPE_SHIFT) | levelNumber, edx: apicId };
}

/** Leaf 4 / 0x8000001D: private L1/L2, L3+ shared by the package; `coresField` only for leaf 4. */
function cacheEntry(e: CpuidEntry, count: number, coresField: boolean): CpuidEntry {
  if ((e.eax & CACHE_TYPE_MASK) === 0) return { ...e }; // no more caches
  const level = (e.eax >>> CACHE_LEVEL_SHIFT) & CACHE_LEVEL_MASK;
  const sharing = level <= PRIVATE_CACHE_MAX_LEVEL ? 1 : count;
  let eax = setField(e.eax, CACHE_SHARING_SHIFT, CACHE_SHARING_MASK, sharing - 1);
  // 6-bit field: beyond 64 cores it saturates (the guest then relies on leaf 0xB).
  if (coresField) eax = setField(eax, CACHE_CORES_SHIFT, CACHE_CORES_MASK, Math.min(count, CACHE_CORES_MASK + 1) - 1);
  return { ...e, eax };
}

/**
 * The CPUID table for vCPU `vcpuId` of `vcpuCount`, derived from the entries
 * KVM_GET_SUPPORTED_CPUID returned. Pure: returns new entries, never mutates
 * `supported`. Leaves not named here (0x80000001, the KVM leaves 0x40000000/1,
 * …) are copied unchanged; leaves absent from `supported` are not added.
 *
 * - 1: EBX APIC id = vcpuId, logical count = vcpuCount, CLFLUSH 64 bytes;
 *   ECX hypervisor bit set, TSC-deadline set when `opts.tscDeadline`; EDX HTT when vcpuCount > 1.
 * - 4 (and AMD 0x8000001D): L1/L2 per core, L3 shared by all; cores per package = vcpuCount.
 * - 6: cleared except ARAT, so the guest does not drive thermal/power MSRs.
 * - 0xB, 0x1F: SMT level 1 thread, core level vcpuCount, x2APIC id = vcpuId.
 * - AMD/Hygon 0x80000008 ECX core count, 0x8000001E extended APIC id.
 *
 * Throws {@link ConfigError} (`vcpus`) unless 0 <= vcpuId < vcpuCount <= 255.
 */
export function buildCpuid(supported: readonly CpuidEntry[], vcpuId: number, vcpuCount: number, opts: CpuidOptions = {}): CpuidEntry[] {
  if (!Number.isInteger(vcpuCount) || vcpuCount < 1 || vcpuCount > MAX_XAPIC_ID + 1) {
    throw new ConfigError('vcpus', `must be 1..${MAX_XAPIC_ID + 1} (8-bit APIC ids)`, vcpuCount);
  }
  if (!Number.isInteger(vcpuId) || vcpuId < 0 || vcpuId >= vcpuCount) {
    throw new ConfigError('vcpus', `vCPU index ${vcpuId} is outside 0..${vcpuCount - 1}`, vcpuId);
  }
  const vendor = cpuVendor(supported);
  const amd = vendor === VENDOR_AMD || vendor === VENDOR_HYGON;

  return supported.map((e): CpuidEntry => {
    switch (e.function) {
      case CPUID_LEAF_FEATURES: {
        let ebx = setField(e.ebx, L1_EBX_APIC_ID_SHIFT, BYTE_MASK, vcpuId);
        ebx = setField(ebx, L1_EBX_LOGICAL_COUNT_SHIFT, BYTE_MASK, vcpuCount);
        ebx = setField(ebx, L1_EBX_CLFLUSH_SHIFT, BYTE_MASK, CLFLUSH_LINE_UNITS);
        const ecx = (e.ecx | CPUID_ECX_HYPERVISOR | (opts.tscDeadline ? CPUID_ECX_TSC_DEADLINE : 0)) >>> 0;
        const edx = (vcpuCount > 1 ? e.edx | CPUID_EDX_HTT : e.edx & ~CPUID_EDX_HTT) >>> 0;
        return { ...e, ebx, ecx, edx };
      }
      case CPUID_LEAF_CACHE_PARAMS:
        return cacheEntry(e, vcpuCount, true);
      case CPUID_LEAF_THERMAL_POWER:
        return { ...e, eax: e.eax & CPUID_6_EAX_ARAT, ebx: 0, ecx: 0, edx: 0 };
      case CPUID_LEAF_EXT_TOPOLOGY:
      case CPUID_LEAF_V2_EXT_TOPOLOGY:
        return topologyEntry(e, vcpuId, vcpuCount);
      case CPUID_LEAF_AMD_ADDR_SIZES: {
        if (!amd) return { ...e };
        const ecx = setField(setField(e.ecx, 0, AMD_NC_MASK, vcpuCount - 1), AMD_APIC_ID_SIZE_SHIFT, AMD_APIC_ID_SIZE_MASK, bitsFor(vcpuCount));
        return { ...e, ecx };
      }
      case CPUID_LEAF_AMD_CACHE_TOPOLOGY:
        return amd ? cacheEntry(e, vcpuCount, false) : { ...e };
      case CPUID_LEAF_AMD_EXT_APIC_ID:
        // EAX extended APIC id; EBX core id (one thread per core); ECX node 0 of 1.
        return amd ? { ...e, eax: vcpuId, ebx: vcpuId & AMD_NC_MASK, ecx: 0 } : { ...e };
      default:
        return { ...e };
    }
  });
}
