/**
 * Shared by the shared-directory tests of this folder (9p and virtio-fs):
 * booting the default guest with a script and host steps, reading the
 * `R:key=value` lines it prints, the mount command per protocol, the guest
 * tools initramfs, and host-side xattr calls (node's fs has none).
 * Not a test file itself (ava runs *.test.js only).
 */
import type { ExecutionContext } from 'ava';
import koffi from 'koffi';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MicroVM, defaultGuestImages, type MicroVMConfig, type VmExit } from '../../lib/index.js';
import { skipOrFail } from '../helpers/kvm.js';
import { quietCommand } from '../helpers/guest-cmdline.js';

export type ShareProtocol = '9p' | 'virtiofs';

export interface GuestRun {
  exit: VmExit;
  out: string;
  /** start() to the VM's end, ms. */
  ms: number;
}

/**
 * Boots the default guest (its busybox initramfs unless `config.initrd` says otherwise) with `config` and
 * runs `script` (sh). When the guest prints a line `HOST-STEP <name>`, `steps[name]` runs on the host (the
 * guest waits for its effect). The VM is stopped after `timeoutMs`.
 */
export async function runGuest(config: Omit<MicroVMConfig, 'kernel'>, script: string, steps: Record<string, () => void> = {}, timeoutMs = 5 * 60_000): Promise<GuestRun> {
  const imgs = await defaultGuestImages({ quiet: true });
  const vm = new MicroVM({
    // imgs.kernel: vmlinux on x86_64, Image on arm64.
    kernel: imgs.kernel, initrd: imgs.initrd, memoryMiB: 256, ...config,
    extraCmdline: quietCommand(['sh', '-c', script]),
  });
  let out = '';
  const done = new Set<string>();
  vm.console.on('data', (c: Buffer) => {
    out += c.toString();
    for (const m of out.matchAll(/HOST-STEP (\S+)/g)) {
      const name = m[1]!;
      if (done.has(name)) continue;
      done.add(name);
      steps[name]?.();
    }
  });
  const t0 = performance.now();
  await vm.start();
  const timer = setTimeout(() => { void vm.stop(); }, timeoutMs);
  const exit = await vm.wait();
  clearTimeout(timer);
  return { exit, out, ms: performance.now() - t0 };
}

/** The value of `R:key=value` lines the guest printed (the last one of each key wins). */
export function results(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.split(/\r?\n/)) {
    const r = /^R:([\w-]+)=(.*)$/.exec(line.trim());
    if (r) m.set(r[1]!, r[2]!);
  }
  return m;
}

/** The guest's mount command for share `tag` at `dir`. */
export function mountCommand(protocol: ShareProtocol, tag: string, dir = '/mnt'): string {
  return protocol === '9p' ? `mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ${tag} ${dir}` : `mount -t virtiofs ${tag} ${dir}`;
}

/** The guest tools initramfs (socat, fio, iperf3, setfattr/getfattr): $FLINTVM_GUEST_TOOLS_INITRD, else the guest images', if it exists. */
export async function toolsInitrd(): Promise<string | null> {
  const env = process.env.FLINTVM_GUEST_TOOLS_INITRD;
  if (env) {
    if (!existsSync(env)) throw new Error(`FLINTVM_GUEST_TOOLS_INITRD=${env} does not exist`);
    return env;
  }
  const imgs = await defaultGuestImages({ quiet: true });
  const p = imgs.toolsInitrd ?? join(imgs.dir, 'initramfs-tools.cpio.gz');
  return existsSync(p) ? p : null;
}

/** {@link toolsInitrd}, or null after passing the test with a SKIPPED log line naming what is missing. */
export async function requireToolsInitrd(t: ExecutionContext, needs: string): Promise<string | null> {
  const initrd = await toolsInitrd();
  if (initrd) return initrd;
  skipOrFail(t, `needs the guest tools initramfs (${needs}): bash guest/build.sh, or set FLINTVM_GUEST_TOOLS_INITRD`);
  return null;
}

// Host-side xattrs, on paths (not following a final symlink), straight from libc: independent of the
// share server's own xattr code, which the tests check.
const libc = koffi.load('libc.so.6');
const lgetxattr = libc.func('lgetxattr', 'long', ['str', 'str', 'void *', 'size_t']) as (p: string, n: string, v: Buffer | null, s: number) => number;
const lsetxattr = libc.func('lsetxattr', 'int', ['str', 'str', 'void *', 'size_t', 'int']) as (p: string, n: string, v: Buffer, s: number, f: number) => number;
const llistxattr = libc.func('llistxattr', 'long', ['str', 'void *', 'size_t']) as (p: string, l: Buffer | null, s: number) => number;
const ENODATA = 61;
const XATTR_MAX = 65536;

/** Host xattr `name` of `path`: its value, null if it has none (ENODATA); throws with the errno otherwise. */
export function hostGetXattr(path: string, name: string): Buffer | null {
  const buf = Buffer.alloc(XATTR_MAX);
  const n = lgetxattr(path, name, buf, buf.length);
  if (n >= 0) return buf.subarray(0, n);
  const e = koffi.errno() as number;
  if (e === ENODATA) return null;
  throw new Error(`lgetxattr(${path}, ${name}): errno ${e}`);
}

/** Sets host xattr `name` of `path`; returns 0, or the errno. */
export function hostSetXattr(path: string, name: string, value: Buffer): number {
  return lsetxattr(path, name, value, value.length, 0) === 0 ? 0 : (koffi.errno() as number);
}

/** The host xattr names of `path`, sorted. */
export function hostListXattrs(path: string): string[] {
  const buf = Buffer.alloc(XATTR_MAX);
  const n = llistxattr(path, buf, buf.length);
  if (n < 0) throw new Error(`llistxattr(${path}): errno ${koffi.errno() as number}`);
  return buf.subarray(0, n).toString('latin1').split('\0').filter(Boolean).sort();
}

/** What {@link checkShareWorkload} needs: the guest's run of the shared workload script and the host's side of it. */
export interface ShareWorkloadRun {
  exit: VmExit;
  out: string;
  r: Map<string, string>;
  tail: string;
  /** The shared directory and the directory beside it that must stay unreachable. */
  share: string;
  outside: string;
  secret: string;
  /** How many files the workload made in one directory, and the size of its big file. */
  many: number;
  bigMiB: number;
  /** Why host changes are visible to the guest, for the assertion message. */
  changedNote: string;
}

/**
 * The assertions of the share workload, the same for 9p and virtio-fs: each
 * step's result as the guest saw it, the same changes on the host, and that
 * no escape reached outside the share.
 */
export function checkShareWorkload(t: ExecutionContext, w: ShareWorkloadRun): void {
  t.is(w.exit.reason, 'guest-exit', w.tail);
  t.is(w.exit.exitStatus, 0, w.tail);
  t.is(w.r.get('host-file'), 'written-by-the-host');
  t.is(w.r.get('append'), 'hello+world+');
  t.is(w.r.get('truncate'), 'hel');
  t.is(w.r.get('rename'), 'hel');
  t.is(w.r.get('nlink'), '2');
  t.is(w.r.get('readlink'), 'b.txt');
  t.is(w.r.get('via-symlink'), 'hel');
  t.is(w.r.get('mode'), '741');
  t.is(w.r.get('mtime'), '981173106');
  t.is(w.r.get('dirs'), 'd2');
  t.is(w.r.get('rmdir'), 'removed');
  t.is(w.r.get('many'), String(w.many));
  t.is(w.r.get('many-last'), '1');
  t.is(w.r.get('made'), '200');
  t.is(w.r.get('unlink'), '199');
  t.is(w.r.get('big-size'), String(w.bigMiB * 1024 * 1024));
  t.is(w.r.get('late'), 'made-on-the-host-meanwhile', 'a file the host wrote while the guest ran');
  t.is(w.r.get('changed'), 'changed-by-the-host', `host changes are seen (${w.changedNote})`);
  t.is(w.r.get('umount'), 'done');

  // The host side of the same workload.
  t.is(readFileSync(join(w.share, 'b.txt'), 'utf8'), 'hel');
  t.false(existsSync(join(w.share, 'a.txt')));
  t.is(statSync(join(w.share, 'b.txt')).ino, statSync(join(w.share, 'hard.txt')).ino);
  t.is(readlinkSync(join(w.share, 'sym')), 'b.txt');
  t.is(statSync(join(w.share, 'b.txt')).mode & 0o7777, 0o741);
  t.is(Math.floor(statSync(join(w.share, 'b.txt')).mtimeMs / 1000), 981173106);
  t.true(statSync(join(w.share, 'd1')).isDirectory());
  t.is(readFileSync(join(w.share, 'made/f200'), 'utf8'), '200\n');
  const md5 = createHash('md5').update(readFileSync(join(w.share, 'big'))).digest('hex');
  t.is(w.r.get('big-md5'), md5, `${w.bigMiB} MiB written by the guest: same bytes on the host`);

  // Escapes: nothing of the outside directory reached the guest.
  t.false(w.out.includes(w.secret), 'the secret never appears on the console');
  for (const k of ['esc-root-link', 'esc-dotdot', 'esc-dotdot-many', 'esc-host-link', 'esc-host-link-file', 'esc-abs-link', 'esc-proc']) t.is(w.r.get(k), 'blocked', k);
  t.is(w.r.get('esc-mknod'), 'refused', 'no device node on the host');
  t.false(existsSync(join(w.share, 'mem')));
  t.true(lstatSync(join(w.share, 'root')).isSymbolicLink(), 'the guest made its symlink to / ...');
  t.is(readFileSync(join(w.outside, 'secret'), 'utf8'), `${w.secret}\n`, '... and the outside is untouched');
}
