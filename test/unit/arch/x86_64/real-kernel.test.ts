/**
 * Loads the real guest kernels built by guest/build.sh, when they exist
 * ($FLINTVM_GUEST_DIR, else the newest ${FLINTVM_CACHE:-~/.cache/flintvm}/guest/x86_64-*).
 * Without a built kernel each test logs why and passes.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';
import { prepareX86Boot, X86_64_DEFAULT_CMDLINE } from '../../../../arch/x86_64/boot.js';
import { ramRegions, ZERO_PAGE_ADDR } from '../../../../arch/x86_64/layout.js';
import { loadBzImage, XLF_KERNEL_64 } from '../../../../arch/x86_64/loader/bzimage.js';
import { loadElf } from '../../../../arch/x86_64/loader/elf.js';

const MiB = 1024 ** 2;

/** Directories that may hold guest images, best first. */
function candidateDirs(): string[] {
  const dirs: string[] = [];
  if (process.env.FLINTVM_GUEST_DIR) dirs.push(process.env.FLINTVM_GUEST_DIR);
  const cache = join(process.env.FLINTVM_CACHE ?? join(homedir(), '.cache', 'flintvm'), 'guest');
  if (existsSync(cache)) {
    const built = readdirSync(cache)
      .filter((d) => d.startsWith('x86_64-'))
      .map((d) => join(cache, d))
      .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
    dirs.push(...built);
  }
  return dirs;
}

/** The named guest file, or undefined after logging why the test has nothing to check. */
function guestFile(t: ExecutionContext, name: string): Uint8Array | undefined {
  for (const dir of candidateDirs()) {
    const p = join(dir, name);
    if (existsSync(p)) {
      t.log(`using ${p}`);
      return new Uint8Array(readFileSync(p));
    }
  }
  t.log(`no built ${name} (set FLINTVM_GUEST_DIR or run \`bash guest/build.sh\`); nothing to check`);
  return undefined;
}

test('real vmlinux: physical entry, PVH note, segments in RAM', (t) => {
  const image = guestFile(t, 'vmlinux');
  if (!image) return t.pass();
  const mem = GuestMemory.fromBuffers(ramRegions(128 * MiB));
  const r = loadElf(mem, image);
  // x86_64 vmlinux: ENTRY(phys_startup_64) at CONFIG_PHYSICAL_START (16 MiB by default).
  t.is(r.entry, 0x1000000);
  t.truthy(r.pvhEntry, 'CONFIG_PVH=y puts a XEN_ELFNOTE_PHYS32_ENTRY note in vmlinux');
  t.true(r.pvhEntry! > r.entry && r.pvhEntry! < r.kernelEnd);
  t.true(r.kernelEnd > r.entry && r.kernelEnd < 128 * MiB);
  // The first bytes at the entry are the kernel's text.
  t.notDeepEqual(mem.read(r.entry, 16), new Uint8Array(16));
  t.log(`entry 0x${r.entry.toString(16)}, pvh 0x${r.pvhEntry!.toString(16)}, end 0x${r.kernelEnd.toString(16)}`);
});

test('real bzImage: protocol, 64-bit entry, init_size fits', (t) => {
  const image = guestFile(t, 'bzImage');
  if (!image) return t.pass();
  const mem = GuestMemory.fromBuffers(ramRegions(128 * MiB));
  const r = loadBzImage(mem, image);
  t.is(r.entry, 0x100200);
  t.true(r.version >= 0x020c);
  t.is(r.xloadflags & XLF_KERNEL_64, XLF_KERNEL_64);
  t.is(r.cmdlineSize, 2047);
  t.true(r.kernelEnd > 16 * MiB && r.kernelEnd < 128 * MiB);
  t.log(`protocol 0x${r.version.toString(16)}, xloadflags 0x${r.xloadflags.toString(16)}, kernelEnd 0x${r.kernelEnd.toString(16)}`);
});

test('real kernels: full boot preparation with the initramfs, both protocols', (t) => {
  const vmlinux = guestFile(t, 'vmlinux');
  const bzImage = guestFile(t, 'bzImage');
  const initrd = guestFile(t, 'initramfs.cpio.gz');
  if (!vmlinux || !bzImage) return t.pass();
  for (const [kernel, protocol] of [[vmlinux, 'linux64'], [vmlinux, 'pvh'], [bzImage, 'linux64']] as const) {
    const mem = GuestMemory.fromBuffers(ramRegions(128 * MiB));
    const r = prepareX86Boot(mem, { kernel, initrd, cmdline: X86_64_DEFAULT_CMDLINE, vcpus: 2, bootProtocol: protocol });
    t.is(r.protocol, protocol);
    if (initrd) {
      t.truthy(r.initrd);
      t.true(r.initrd!.addr + r.initrd!.size <= 128 * MiB);
      t.deepEqual(mem.read(r.initrd!.addr, 2), new Uint8Array([0x1f, 0x8b]), 'gzip magic at the initrd');
    }
    if (protocol === 'linux64') t.is(mem.readU16(ZERO_PAGE_ADDR + 0x1fe), 0xaa55);
  }
});
