/**
 * The tiny guests of the VMM-only benchmarks: ELF64 x86-64 "kernels" that
 * both flintvm and QEMU can boot, so both run the very same bytes.
 *
 * Each image has two entry points into the same code:
 * - e_entry, for the Linux 64-bit boot protocol (flintvm's default for an ELF);
 * - a Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY, type 18), which QEMU needs to
 *   boot an ELF at all (it enters in 32-bit protected mode, paging off), and
 *   which flintvm follows with `bootProtocol: 'pvh'`.
 * The code only uses instructions whose encoding is the same in 32- and
 * 64-bit mode (`66 BA imm16` = mov dx,imm16; `B0 imm8` = mov al,imm8;
 * `EE` = out dx,al; `F4` = hlt; `EB rel8` = jmp), so one copy serves both.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where the code is loaded and entered (2 MiB, above the boot structures). */
export const TINY_LOAD_ADDR = 0x20_0000;
/** The 8250 UART (COM1) transmit register. */
export const COM1_THR = 0x3f8;
/** flintvm's boot-timer port and the magic byte its guest init writes there. */
export const BOOT_TIMER_PORT = 0x600;
export const BOOT_TIMER_MAGIC = 123;
/** flintvm's exit-status port; QEMU gets an `isa-debug-exit` device on the same port. */
export const EXIT_STATUS_PORT = 0x601;
/** The byte the guest prints on COM1 right before the boot-timer write: how a peer's "guest init" is seen. */
export const SERIAL_MARKER = '!';

const EM_X86_64 = 62;
const ET_EXEC = 2;
const PT_LOAD = 1;
const PT_NOTE = 4;
const PF_R_X = 5;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;
const XEN_NAME = 'Xen\0';

/** `mov dx, port; mov al, value; out dx, al` (same bytes in 32- and 64-bit mode). */
function outb(port: number, value: number): number[] {
  return [0x66, 0xba, port & 0xff, port >> 8, 0xb0, value & 0xff, 0xee];
}

/** Boot-and-exit guest: serial marker, boot timer, exit status 0, then hlt forever. */
export function bootExitCode(status = 0): Uint8Array {
  return Uint8Array.from([
    ...outb(COM1_THR, SERIAL_MARKER.charCodeAt(0)),
    ...outb(BOOT_TIMER_PORT, BOOT_TIMER_MAGIC),
    ...outb(EXIT_STATUS_PORT, status),
    0xf4, // hlt
    0xeb, 0xfd, // jmp hlt
  ]);
}

/** Boot-then-spin guest: serial marker, boot timer, then `jmp $` with no further exits (guest RAM untouched). */
export function bootSpinCode(): Uint8Array {
  return Uint8Array.from([
    ...outb(COM1_THR, SERIAL_MARKER.charCodeAt(0)),
    ...outb(BOOT_TIMER_PORT, BOOT_TIMER_MAGIC),
    0xeb, 0xfe, // jmp $
  ]);
}

/** Boot-then-halt guest: serial marker, boot timer, then `cli; hlt` (the vCPU sleeps in KVM, no CPU burnt, guest RAM untouched). */
export function bootHaltCode(): Uint8Array {
  return Uint8Array.from([
    ...outb(COM1_THR, SERIAL_MARKER.charCodeAt(0)),
    ...outb(BOOT_TIMER_PORT, BOOT_TIMER_MAGIC),
    0xfa, // cli (PVH and the 64-bit protocol both enter with IF=0 already)
    0xf4, // hlt
    0xeb, 0xfd, // jmp hlt
  ]);
}

/**
 * ELF64 image: header, a PT_LOAD of `code` at {@link TINY_LOAD_ADDR} and a
 * PT_NOTE holding the Xen PVH entry (the same address). The note's descriptor
 * is 8 bytes, as in Linux's vmlinux: QEMU 7.2 reads it as a 64-bit value.
 */
export function tinyElf(code: Uint8Array): Uint8Array {
  const noteSize = 12 + 4 + 8; // Nhdr, "Xen\0", u64 entry
  const phOff = EHDR_SIZE;
  const noteOff = phOff + 2 * PHDR_SIZE;
  const codeOff = noteOff + noteSize;
  const b = new Uint8Array(codeOff + code.length);
  const d = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2 /* ELFCLASS64 */, 1 /* LE */, 1 /* EV_CURRENT */], 0);
  d.setUint16(16, ET_EXEC, true);
  d.setUint16(18, EM_X86_64, true);
  d.setUint32(20, 1, true); // e_version
  d.setBigUint64(24, BigInt(TINY_LOAD_ADDR), true); // e_entry
  d.setBigUint64(32, BigInt(phOff), true); // e_phoff
  d.setUint16(52, EHDR_SIZE, true); // e_ehsize
  d.setUint16(54, PHDR_SIZE, true); // e_phentsize
  d.setUint16(56, 2, true); // e_phnum
  // PT_LOAD: the code.
  let p = phOff;
  d.setUint32(p, PT_LOAD, true);
  d.setUint32(p + 4, PF_R_X, true);
  d.setBigUint64(p + 8, BigInt(codeOff), true); // p_offset
  d.setBigUint64(p + 16, BigInt(TINY_LOAD_ADDR), true); // p_vaddr
  d.setBigUint64(p + 24, BigInt(TINY_LOAD_ADDR), true); // p_paddr
  d.setBigUint64(p + 32, BigInt(code.length), true); // p_filesz
  d.setBigUint64(p + 40, BigInt(code.length), true); // p_memsz
  d.setBigUint64(p + 48, 0x1000n, true); // p_align
  // PT_NOTE: the PVH entry note.
  p += PHDR_SIZE;
  d.setUint32(p, PT_NOTE, true);
  d.setUint32(p + 4, 4 /* PF_R */, true);
  d.setBigUint64(p + 8, BigInt(noteOff), true);
  d.setBigUint64(p + 32, BigInt(noteSize), true);
  d.setBigUint64(p + 40, BigInt(noteSize), true);
  d.setBigUint64(p + 48, 4n, true); // p_align: 4-byte note alignment
  d.setUint32(noteOff, XEN_NAME.length, true); // n_namesz
  d.setUint32(noteOff + 4, 8, true); // n_descsz
  d.setUint32(noteOff + 8, XEN_ELFNOTE_PHYS32_ENTRY, true); // n_type
  b.set(Buffer.from(XEN_NAME, 'latin1'), noteOff + 12);
  d.setBigUint64(noteOff + 16, BigInt(TINY_LOAD_ADDR), true);
  b.set(code, codeOff);
  return b;
}

/** Writes the tiny guests to a fresh temp dir. */
export function writeTinyGuests(): { bootExit: string; bootSpin: string; bootHalt: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-bench-tiny-'));
  const bootExit = join(dir, 'boot-exit.elf');
  const bootSpin = join(dir, 'boot-spin.elf');
  writeFileSync(bootExit, tinyElf(bootExitCode(0)));
  const bootHalt = join(dir, 'boot-halt.elf');
  writeFileSync(bootSpin, tinyElf(bootSpinCode()));
  writeFileSync(bootHalt, tinyElf(bootHaltCode()));
  return { bootExit, bootSpin, bootHalt, dir };
}

/** QEMU microvm argv (ENVIRONMENT.md §4 flags) for a tiny guest on the local nested KVM. */
export function qemuTinyArgs(kernel: string, memoryMiB = 128): string[] {
  // Inside the test host QEMU's firmware is not where it was built to look (bench/host-local.ts).
  const datadir = process.env.FLINTVM_QEMU_DATADIR;
  return [
    ...(datadir ? ['-L', datadir] : []),
    '-M', 'microvm,x-option-roms=off,rtc=off,isa-serial=on',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-enable-kvm', '-cpu', 'host,-arch-capabilities', '-m', String(memoryMiB),
    // -nographic with -nodefaults leaves no serial: put COM1 on stdout explicitly.
    '-serial', 'stdio',
    // The guest's exit-status write ends QEMU (exit status (v << 1) | 1).
    '-device', `isa-debug-exit,iobase=0x${EXIT_STATUS_PORT.toString(16)},iosize=1`,
    '-kernel', kernel,
  ];
}
