/**
 * Builds tiny but real ELF64 x86-64 "kernels" for local /dev/kvm tests: the
 * loader loads them like a vmlinux and the VM enters them in 64-bit long
 * mode through the Linux 64-bit boot protocol. Machine code is assembled
 * here by hand (each instruction commented).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const TINY_LOAD_ADDR = 0x20_0000; // 2 MiB

/** ELF64 header + one PT_LOAD program header, then `code` loaded at TINY_LOAD_ADDR. */
export function elf64(code: Uint8Array, entry = TINY_LOAD_ADDR): Uint8Array {
  const EHDR = 64;
  const PHDR = 56;
  const off = EHDR + PHDR;
  const b = new Uint8Array(off + code.length);
  const d = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2 /* 64-bit */, 1 /* LE */, 1 /* version */], 0);
  d.setUint16(16, 2, true); // ET_EXEC
  d.setUint16(18, 62, true); // EM_X86_64
  d.setUint32(20, 1, true); // EV_CURRENT
  d.setBigUint64(24, BigInt(entry), true); // e_entry
  d.setBigUint64(32, BigInt(EHDR), true); // e_phoff
  d.setUint16(52, EHDR, true); // e_ehsize
  d.setUint16(54, PHDR, true); // e_phentsize
  d.setUint16(56, 1, true); // e_phnum
  d.setUint32(EHDR, 1, true); // PT_LOAD
  d.setUint32(EHDR + 4, 5, true); // PF_R | PF_X
  d.setBigUint64(EHDR + 8, BigInt(off), true); // p_offset
  d.setBigUint64(EHDR + 16, BigInt(entry), true); // p_vaddr
  d.setBigUint64(EHDR + 24, BigInt(entry), true); // p_paddr
  d.setBigUint64(EHDR + 32, BigInt(code.length), true); // p_filesz
  d.setBigUint64(EHDR + 40, BigInt(code.length), true); // p_memsz
  d.setBigUint64(EHDR + 48, 0x1000n, true); // p_align
  b.set(code, off);
  return b;
}

/** 64-bit code: print `msg` on COM1 (0x3f8) byte by byte, write `status` to the exit-status port 0x601, halt. */
export function printAndExitCode(msg: string, status: number): Uint8Array {
  const text = Buffer.from(msg);
  const head = [
    0x48, 0x8d, 0x35, 0x17, 0x00, 0x00, 0x00, // lea rsi, [rip+0x17] -> msg (at offset 30)
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb9, text.length & 0xff, (text.length >> 8) & 0xff, 0x00, 0x00, // mov ecx, len
    0xac, // lodsb
    0xee, // out dx, al
    0xe2, 0xfc, // loop (back to lodsb)
    0x66, 0xba, 0x01, 0x06, // mov dx, 0x601
    0xb0, status & 0xff, // mov al, status
    0xee, // out dx, al
    0xf4, // hlt
    0xeb, 0xfd, // jmp hlt
  ];
  if (head.length !== 30) throw new Error('tiny code layout changed');
  return Uint8Array.from([...head, ...text]);
}

/** 64-bit code that spins forever without exits. */
export function spinCode(): Uint8Array {
  return Uint8Array.from([0xeb, 0xfe]); // jmp $
}

/** Writes an ELF to a fresh temp dir and returns its path. */
export function writeTempKernel(code: Uint8Array, name = 'tiny.elf'): string {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-tiny-'));
  const p = join(dir, name);
  writeFileSync(p, elf64(code));
  return p;
}
