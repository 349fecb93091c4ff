/**
 * arm64 boot preparation, the counterpart of arch/x86_64/boot.ts: loads the
 * Image and the initrd, writes the device tree, and says what the boot
 * vCPU's registers must be (Documentation/arch/arm64/booting.rst):
 * PC at the image's first byte, X0 = the FDT's address, X1..X3 = 0, EL1h
 * with D/A/I/F masked. The MMU is off at entry, which KVM_ARM_VCPU_INIT gives.
 *
 * Memory placement: the image at the start of RAM (a 2 MiB-aligned base) plus
 * text_offset; the FDT in the last 2 MiB block of RAM (booting.rst asks for
 * at most 2 MiB and no sharing of its 2 MiB block with specially mapped
 * memory); the initrd right below it, page-aligned, as far as possible from
 * the kernel's early allocations.
 */
import { ConfigError, LoaderError } from '../../lib/errors.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { buildMachineFdt } from './fdt-machine.js';
import { IMAGE_BASE_ALIGN, parseArmImage } from './image.js';
import { MiB, PAGE_SIZE, type VirtioMmioSlot } from './layout.js';

/**
 * The default command line of a flintvm arm64 guest: the ns16550a UART is the
 * console (`ttyS0`, and `earlycon` finds it through /chosen/stdout-path), and a
 * panic ends the VM after one second (`panic=1`: the reset comes back as a
 * PSCI SYSTEM_RESET exit).
 */
export const ARM64_DEFAULT_CMDLINE = 'console=ttyS0 earlycon panic=1';

/** arm64 COMMAND_LINE_SIZE, terminating NUL included. */
export const ARM64_CMDLINE_MAX = 2048;
/** The FDT's block at the end of RAM. */
export const FDT_MAX_SIZE = 2 * MiB;

export interface Arm64BootOptions {
  readonly kernel: Uint8Array;
  readonly initrd?: Uint8Array;
  readonly cmdline: string;
  /** MPIDR_EL1 of each vCPU (read back after KVM_ARM_VCPU_INIT). */
  readonly mpidrs: readonly bigint[];
  readonly virtio: readonly VirtioMmioSlot[];
  readonly rngSeed?: Uint8Array;
}

export interface Arm64BootSetup {
  /** Where the image went and where the boot vCPU starts. */
  readonly entry: number;
  readonly kernelEnd: number;
  readonly fdtAddr: number;
  readonly fdtSize: number;
  readonly initrd?: { addr: number; size: number };
}

const alignDown = (v: number, a: number): number => v - (v % a);

/** Loads everything into `mem` (RAM contiguous from its first region) and returns where it went. */
export function prepareArm64Boot(mem: GuestMemory, o: Arm64BootOptions): Arm64BootSetup {
  if (o.cmdline.includes('\0')) throw new ConfigError('cmdline', 'must not contain a NUL character', o.cmdline);
  const cmdBytes = new TextEncoder().encode(o.cmdline).length;
  if (cmdBytes >= ARM64_CMDLINE_MAX) throw new ConfigError('cmdline', `is ${cmdBytes} bytes; arm64 kernels accept at most ${ARM64_CMDLINE_MAX - 1}`, o.cmdline);
  const img = parseArmImage(o.kernel);

  const ramStart = mem.regions[0]!.gpa;
  const ramEnd = mem.end;
  if (ramStart % IMAGE_BASE_ALIGN !== 0) throw new LoaderError(`RAM starts at 0x${ramStart.toString(16)}, which is not 2 MiB-aligned`);
  const entry = ramStart + img.textOffset;
  const kernelEnd = entry + img.imageSize;
  const fdtAddr = alignDown(ramEnd - FDT_MAX_SIZE, IMAGE_BASE_ALIGN);
  if (fdtAddr < kernelEnd) {
    throw new LoaderError(`the kernel needs ${Math.ceil(img.imageSize / MiB)} MiB from 0x${entry.toString(16)}, and the device tree's 2 MiB block at the end of RAM leaves too little room; give the VM more memory`);
  }
  let initrd: { addr: number; size: number } | undefined;
  if (o.initrd && o.initrd.length > 0) {
    const addr = alignDown(fdtAddr - o.initrd.length, PAGE_SIZE);
    if (addr < kernelEnd) {
      throw new LoaderError(`the initrd (${Math.ceil(o.initrd.length / MiB)} MiB) does not fit between the kernel's end (0x${kernelEnd.toString(16)}) and the device tree (0x${fdtAddr.toString(16)}); give the VM more memory`);
    }
    initrd = { addr, size: o.initrd.length };
  }
  const fdt = buildMachineFdt({
    memory: mem.regions, mpidrs: o.mpidrs, cmdline: o.cmdline, virtio: o.virtio,
    ...(initrd ? { initrd } : {}), ...(o.rngSeed ? { rngSeed: o.rngSeed } : {}),
  });
  if (fdt.length > FDT_MAX_SIZE) throw new LoaderError(`the device tree is ${fdt.length} bytes, more than the 2 MiB the boot protocol allows`);

  mem.write(entry, img.image);
  if (initrd) mem.write(initrd.addr, o.initrd!);
  mem.write(fdtAddr, fdt);
  return { entry, kernelEnd, fdtAddr, fdtSize: fdt.length, ...(initrd ? { initrd } : {}) };
}
