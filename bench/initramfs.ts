/**
 * Reading the guest's initramfs archives on the build machine: a gzip'd
 * stream of newc cpio archives (guest/build.sh appends the tools archive to
 * the busybox one as a second gzip member; zlib's gunzip reads all members).
 *
 * The benchmarks that run inside the real-KVM test host need a few programs
 * on the host side of the guest (iperf3, socat), which the test host image
 * does not have. The tools initramfs has exactly the Debian builds the guest
 * runs, with their libraries and the ELF interpreter, so those are carried
 * in: {@link toolsBundle} takes a program and the libraries its interpreter
 * resolves for it out of the archive, and writes a tar that
 * `<dir>/ld.so --library-path <dir>/lib <dir>/bin/<prog>` runs anywhere.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { gunzipSync } from 'node:zlib';

/** One archive member. `data` is the file's bytes, or a symlink's target. */
export interface CpioEntry {
  name: string;
  mode: number;
  data: Buffer;
}

const NEWC_MAGIC = '070701';
const NEWC_HEADER = 110;
const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

const align4 = (n: number) => (n + 3) & ~3;

/** Every entry of every newc archive in `buf` (concatenated archives, zero padding between them allowed). */
export function readNewc(buf: Buffer): CpioEntry[] {
  const out: CpioEntry[] = [];
  let o = 0;
  while (o + NEWC_HEADER <= buf.length) {
    if (buf.toString('latin1', o, o + 6) !== NEWC_MAGIC) {
      // Padding after a TRAILER (cpio pads to 512 bytes): skip zeros, anything else is an error.
      if (buf[o] === 0) { o++; continue; }
      throw new Error(`initramfs: no newc header at offset ${o}`);
    }
    const field = (i: number) => parseInt(buf.toString('latin1', o + 6 + i * 8, o + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const name = buf.toString('utf8', o + NEWC_HEADER, o + NEWC_HEADER + nameSize - 1);
    const dataAt = align4(o + NEWC_HEADER + nameSize);
    if (name !== 'TRAILER!!!') out.push({ name: name.replace(/^\.?\/+/, ''), mode, data: buf.subarray(dataAt, dataAt + size) });
    o = align4(dataAt + size);
  }
  return out;
}

/** The entries of a gzip'd initramfs file (all its members), later entries replacing earlier ones of the same name. */
export function readInitramfs(path: string): Map<string, CpioEntry> {
  const m = new Map<string, CpioEntry>();
  for (const e of readNewc(gunzipSync(readFileSync(path)))) m.set(e.name, e);
  return m;
}

/** Writes the regular files, symlinks and directories of `entries` under `root`. */
export function writeEntries(entries: Iterable<CpioEntry>, root: string): void {
  for (const e of entries) {
    const p = join(root, e.name);
    const type = e.mode & S_IFMT;
    if (type === S_IFDIR) mkdirSync(p, { recursive: true });
    else if (type === S_IFREG) {
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, e.data);
      chmodSync(p, e.mode & 0o7777);
    } else if (type === S_IFLNK) {
      mkdirSync(dirname(p), { recursive: true });
      symlinkSync(e.data.toString('utf8'), p);
    }
  }
}

/** Library search path of Debian's multiarch layout, as the tools archive has it. */
const LIB_DIRS = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu'];
const INTERP = 'lib64/ld-linux-x86-64.so.2';

/**
 * A tar (uncompressed) of `programs` (absolute paths in the archive, e.g.
 * `/usr/bin/iperf3`) with the libraries the archive's own ld.so resolves for
 * them, laid out as `bin/<name>`, `lib/<soname>` and `ld.so`. Returns the tar's path
 * (`<outDir>/<name>`). Runs the archive's ld.so with `--list`, so it works on an
 * x86_64 Linux build machine only.
 */
export function toolsBundle(initrd: string, programs: readonly string[], outDir: string, name = 'host-tools.tar'): string {
  const scratch = mkdtempSync(join(tmpdir(), 'flintvm-tools-'));
  try {
    const entries = readInitramfs(initrd);
    writeEntries(entries.values(), join(scratch, 'root'));
    const root = join(scratch, 'root');
    const bundle = join(scratch, 'bundle');
    mkdirSync(join(bundle, 'bin'), { recursive: true });
    mkdirSync(join(bundle, 'lib'), { recursive: true });
    copyFileSync(join(root, INTERP), join(bundle, 'ld.so')); // copyFileSync follows the lib64 symlink
    for (const prog of programs) {
      const p = join(root, prog);
      copyFileSync(p, join(bundle, 'bin', basename(prog)));
      const list = execFileSync(join(root, INTERP), ['--library-path', LIB_DIRS.map((d) => join(root, d)).join(':'), '--list', p], { encoding: 'utf8' });
      for (const line of list.split('\n')) {
        const m = /=>\s+(\/\S+)/.exec(line);
        if (m) {
          if (!m[1]!.startsWith(root + '/')) throw new Error(`${prog}: ${line.trim()} resolved outside the tools archive`);
          copyFileSync(m[1]!, join(bundle, 'lib', basename(m[1]!)));
        } else if (/not found/.test(line)) throw new Error(`${prog}: ${line.trim()}`);
      }
    }
    chmodSync(join(bundle, 'ld.so'), 0o755);
    mkdirSync(outDir, { recursive: true });
    const tar = join(outDir, name);
    execFileSync('tar', ['-cf', tar, '-C', bundle, '.']);
    return tar;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** argv prefix that runs `prog` of a {@link toolsBundle} unpacked at `dir`. */
export function bundledCommand(dir: string, prog: string): string[] {
  return [join(dir, 'ld.so'), '--library-path', join(dir, 'lib'), join(dir, 'bin', prog)];
}
