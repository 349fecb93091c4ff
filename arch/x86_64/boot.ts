/**
 * x86_64 boot preparation: the one entry point the VM builder calls. It loads
 * the kernel (ELF vmlinux or bzImage) and initrd, writes the command line, the
 * zero page or PVH start_info, the MP table, the boot GDT/IDT and page tables
 * into guest memory, and returns the register state the boot vCPU starts with.
 */
import { ConfigError, LoaderError } from '../../lib/errors.js';
import type { CpuidEntry, KvmFpu, KvmRegs, KvmSregs } from '../../lib/kvm/types.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { buildBootParams } from './boot-params.js';
import { CPUID_LEAF_FEATURES } from './cpuid.js';
import { e820Entries } from './e820.js';
import { BOOT_IDT_SIZE, buildGdt } from './gdt.js';
import { writeBlobs } from './guest-blob.js';
import { loadInitrd } from './initrd.js';
import { BOOT_GDT_ADDR, BOOT_IDT_ADDR, CMDLINE_ADDR, CMDLINE_MAX_SIZE, PVH_START_INFO_ADDR, ZERO_PAGE_ADDR } from './layout.js';
import { loadBzImage, SETUP_HEADER, SETUP_HEADER_MAGIC } from './loader/bzimage.js';
import { ELF_MAGIC, loadElf } from './loader/elf.js';
import { buildMpTable } from './mptable.js';
import { buildIdentityPageTables } from './paging.js';
import { buildPvhStartInfo } from './pvh.js';
import { defaultFpu, initialRegs, longModeSregs, protectedModeSregs, pvhInitialRegs } from './regs.js';

/**
 * The default kernel command line for a flintvm x86_64 guest:
 * - `console=ttyS0`: the 8250 UART at 0x3f8 is the console;
 * - `reboot=k`: reboot through the i8042 reset line (no ACPI to reboot with), which the VMM sees;
 * - `panic=1`: reboot one second after a panic, so a crashed guest ends the VM;
 * - `pci=off`: there is no PCI host bridge, so skip probing config space;
 * - `i8042.noaux i8042.nomux i8042.dumbkbd`: the i8042 has a keyboard port only; skip mouse,
 *   multiplexer and LED probing;
 * - `tsc=reliable`: trust the TSC without the clocksource watchdog, which vCPU preemption misleads.
 *
 * Dropped from the usual microVM line: `nomodules`, which is not a kernel
 * parameter (the parameter is `nomodule`) and would reach init as an argument.
 */
export const X86_64_DEFAULT_CMDLINE = 'console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.dumbkbd tsc=reliable';

/** Kernel entry protocols: the Linux 64-bit boot protocol, or Xen PVH (ELF with a PVH note). */
export type X86BootProtocol = 'linux64' | 'pvh';

/** Kernel image formats. */
export type X86KernelFormat = 'elf' | 'bzimage';

/** Inputs of {@link prepareX86Boot}. */
export interface X86BootOptions {
  /** The kernel image: an ELF vmlinux or a bzImage. */
  kernel: Uint8Array;
  /** An initrd/initramfs image, if any. */
  initrd?: Uint8Array;
  /** The kernel command line (UTF-8, no NUL). */
  cmdline: string;
  /** Number of vCPUs (for the MP table). */
  vcpus: number;
  /** Entry protocol; default 'linux64'. */
  bootProtocol?: X86BootProtocol;
  /** KVM_GET_SUPPORTED_CPUID entries, for the CPU signature in the MP table (optional). */
  cpuid?: readonly CpuidEntry[];
}

/** What the boot vCPU needs, and where things went. Addresses are guest-physical. */
export interface X86BootSetup {
  /** General registers of the boot vCPU (vCPU 0). */
  regs: KvmRegs;
  /** Special registers of the boot vCPU, derived from what KVM_GET_SREGS returned. Pure. */
  sregsFor(current: KvmSregs): KvmSregs;
  /** FPU state for every vCPU. */
  fpu: KvmFpu;
  /** The detected kernel format. */
  kernel: X86KernelFormat;
  /** The protocol used. */
  protocol: X86BootProtocol;
  /** The entry point in `regs.rip`. */
  entry: number;
  /** Where the initrd went. */
  initrd?: { addr: number; size: number };
}

/**
 * Tells an ELF image ("\x7fELF") from a bzImage ("HdrS" at 0x202).
 * Throws {@link LoaderError} when it is neither.
 */
export function detectKernelFormat(image: Uint8Array): X86KernelFormat {
  if (image.length >= ELF_MAGIC.length && ELF_MAGIC.every((b, i) => image[i] === b)) return 'elf';
  const magicEnd = SETUP_HEADER.header + Uint32Array.BYTES_PER_ELEMENT;
  if (image.length >= magicEnd) {
    const hdr = new DataView(image.buffer, image.byteOffset + SETUP_HEADER.header, Uint32Array.BYTES_PER_ELEMENT);
    if (hdr.getUint32(0, true) === SETUP_HEADER_MAGIC) return 'bzimage';
  }
  throw new LoaderError(`kernel: neither an ELF vmlinux nor a bzImage (${image.length} bytes, no ELF magic, no "HdrS" header)`);
}

/** Encodes the command line and checks it against `limit` bytes (NUL excluded). */
function encodeCmdline(cmdline: string, limit: number): Uint8Array {
  if (cmdline.includes('\0')) throw new ConfigError('cmdline', 'must not contain a NUL character', cmdline);
  const bytes = new TextEncoder().encode(cmdline);
  if (bytes.length > limit) throw new ConfigError('cmdline', `is ${bytes.length} bytes; this kernel accepts at most ${limit}`, cmdline);
  const out = new Uint8Array(bytes.length + 1); // trailing NUL
  out.set(bytes);
  return out;
}

/** A loaded kernel, whatever its format. */
interface LoadedKernel {
  entry: number;
  pvhEntry?: number;
  kernelEnd: number;
  setupHeader?: Uint8Array;
  initrdAddrMax: number;
  cmdlineLimit: number;
}

/** initrd_addr_max a 64-bit kernel reports (2 GiB - 1); assumed for a vmlinux, which has no header. */
export const DEFAULT_INITRD_ADDR_MAX = 0x7fffffff;

function loadKernel(mem: GuestMemory, image: Uint8Array, format: X86KernelFormat): LoadedKernel {
  const layoutLimit = CMDLINE_MAX_SIZE - 1;
  if (format === 'elf') {
    const r = loadElf(mem, image);
    return { ...r, initrdAddrMax: DEFAULT_INITRD_ADDR_MAX, cmdlineLimit: layoutLimit };
  }
  const r = loadBzImage(mem, image);
  return {
    entry: r.entry,
    kernelEnd: r.kernelEnd,
    setupHeader: r.setupHeader,
    initrdAddrMax: r.initrdAddrMax,
    cmdlineLimit: Math.min(r.cmdlineSize, layoutLimit),
  };
}

/**
 * Loads the kernel and initrd and writes every boot structure into `mem`.
 * Call once, on the main thread, before any vCPU runs. The returned `regs`
 * and `sregsFor` are for vCPU 0; other vCPUs start in wait-for-SIPI.
 *
 * Throws {@link LoaderError} for a bad kernel or an initrd that does not fit,
 * {@link ConfigError} for a bad `cmdline`, `vcpus` or `bootProtocol` (or a
 * memory layout without RAM at 0..1 MiB+), GuestAddressError if `mem` is too
 * small for the fixed low-memory structures.
 */
export function prepareX86Boot(mem: GuestMemory, opts: X86BootOptions): X86BootSetup {
  const protocol = opts.bootProtocol ?? 'linux64';
  if (protocol !== 'linux64' && protocol !== 'pvh') throw new ConfigError('bootProtocol', `must be 'linux64' or 'pvh'`, protocol);
  // Pure parts first, so bad input fails before guest memory is touched.
  const e820 = e820Entries(mem.regions);
  const leaf1 = opts.cpuid?.find((e) => e.function === CPUID_LEAF_FEATURES);
  const mptable = buildMpTable({ vcpus: opts.vcpus, cpuSignature: leaf1?.eax, featureFlags: leaf1?.edx });
  const format = detectKernelFormat(opts.kernel);
  if (protocol === 'pvh' && format !== 'elf') {
    throw new LoaderError(`bootProtocol 'pvh' needs an ELF vmlinux with a Xen PVH note; this kernel is a bzImage (use 'linux64')`);
  }

  const k = loadKernel(mem, opts.kernel, format);
  const cmdline = encodeCmdline(opts.cmdline, k.cmdlineLimit);
  if (protocol === 'pvh' && k.pvhEntry === undefined) {
    throw new LoaderError(`bootProtocol 'pvh': the kernel has no XEN_ELFNOTE_PHYS32_ENTRY note (build it with CONFIG_PVH=y, or use 'linux64')`);
  }
  mem.write(CMDLINE_ADDR, cmdline);
  const initrd = opts.initrd && opts.initrd.length > 0
    ? loadInitrd(mem, opts.initrd, { kernelEnd: k.kernelEnd, initrdAddrMax: k.initrdAddrMax, lowRamEnd: mem.regions[0]!.size })
    : undefined;

  writeBlobs(mem, mptable);
  mem.write(BOOT_GDT_ADDR, buildGdt());
  mem.fill(BOOT_IDT_ADDR, BOOT_IDT_SIZE, 0);
  const fpu = defaultFpu();
  const common = { fpu, kernel: format, protocol, ...(initrd ? { initrd } : {}) };

  if (protocol === 'pvh') {
    const entry = k.pvhEntry!;
    writeBlobs(mem, buildPvhStartInfo({ cmdlineAddr: CMDLINE_ADDR, initrd, e820 }));
    return { ...common, regs: pvhInitialRegs(entry, PVH_START_INFO_ADDR), sregsFor: protectedModeSregs, entry };
  }
  const zeroPage = buildBootParams({ setupHeader: k.setupHeader, cmdlineAddr: CMDLINE_ADDR, cmdlineSize: k.cmdlineLimit, initrd, e820 });
  mem.write(ZERO_PAGE_ADDR, zeroPage);
  writeBlobs(mem, buildIdentityPageTables());
  return { ...common, regs: initialRegs(k.entry, ZERO_PAGE_ADDR), sregsFor: longModeSregs, entry: k.entry };
}
