/**
 * The escape suite: a hostile guest driving the 9P server directly (no guest
 * kernel in between) tries to reach, read, change or create files outside the
 * shared directory. Each attempt is its own test; each asserts the error
 * reply(s) the server gives AND that the `outside` tree (a sibling of the
 * share holding `secret`) is byte-for-byte unchanged afterwards.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, linkSync, lstatSync, mkdirSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import * as P from '../../../../../devices/virtio/9p/constants.js';
import { bytes, P9Harness, ROOT_FID, snapshot, text } from './p9-harness.js';

const EPERM = 1;
const ENOENT = 2;
const EBADF = 9;
const EEXIST = 17;
const EBUSY = 16;
const ENOTDIR = 20;
const EINVAL = 22;
const ELOOP = 40;
const ENODATA = 61;
const EOPNOTSUPP = 95;
const ESTALE = 116;
const SECRET = 'TOP-SECRET\n';
const ORIGINAL = 'share file\n';

/** The share every escape test starts from: symlinks of every kind pointing out, and some real entries. */
function setup(share: string, outside: string): void {
  mkdirSync(join(share, 'dir'));
  writeFileSync(join(share, 'dir/inner'), 'inner\n');
  writeFileSync(join(share, 'file'), ORIGINAL);
  symlinkSync(join(outside, 'secret'), join(share, 'abs'));
  symlinkSync('../outside/secret', join(share, 'rel'));
  symlinkSync('../../../../../../../../../../../../../../../../etc/passwd', join(share, 'deep'));
  symlinkSync(outside, join(share, 'absdir'));
  symlinkSync('../outside', join(share, 'reldir'));
  symlinkSync('loop2', join(share, 'loop1'));
  symlinkSync('loop1', join(share, 'loop2'));
  symlinkSync('self', join(share, 'self'));
  symlinkSync('/proc/self/root', join(share, 'procroot'));
  symlinkSync('/proc/self/fd', join(share, 'procfd'));
  symlinkSync('/proc/self/cwd', join(share, 'proccwd'));
  symlinkSync(join(outside, 'created-through-link'), join(share, 'dangling'));
  symlinkSync('/', join(share, 'slash'));
}

interface Ctx {
  h: P9Harness;
  t: ExecutionContext;
  /** Asserts an Rlerror with `errno` (or one of several). */
  fails(errno: number | number[], fn: () => unknown, what?: string): void;
}

/** Registers one escape attempt as a test. */
function escape(title: string, attempt: (c: Ctx) => void, extraSetup?: (share: string, outside: string) => void): void {
  test(`escape: ${title}`, (t) => {
    const h = new P9Harness({}, (share, outside) => {
      setup(share, outside);
      extraSetup?.(share, outside);
    });
    try {
      const before = snapshot(h.outside);
      const fails = (errno: number | number[], fn: () => unknown, what?: string) => {
        const got = h.errno(fn);
        const want = Array.isArray(errno) ? errno : [errno];
        t.true(want.includes(got), `${what ?? 'attempt'}: errno ${got}, expected ${want.join(' or ')}`);
      };
      attempt({ h, t, fails });
      t.deepEqual(snapshot(h.outside), before, 'the outside tree is unchanged');
      t.is(readFileSync(join(h.outside, 'secret'), 'utf8'), SECRET);
      t.is(statSync(join(h.outside, 'secret')).nlink, 1, 'no hard link to the secret appeared');
    } finally {
      h.close();
    }
  });
}

const rootQid = (h: P9Harness) => h.getattr(ROOT_FID).qid;

// ---- ".." and names ----

escape('".." from the root stays at the root', ({ h, t }) => {
  const q = h.walk(ROOT_FID, h.fid(), ['..']);
  t.deepEqual(q[0], rootQid(h));
});

escape('a chain of 16 ".." stays at the root, and "outside" is not found from there', ({ h, t }) => {
  const q = h.walk(ROOT_FID, h.fid(), Array(16).fill('..'));
  t.true(q.every((x) => x.path === rootQid(h).path));
  const partial = h.walk(ROOT_FID, h.fid(), ['..', '..', 'outside', 'secret']);
  t.is(partial.length, 2, 'stops at "outside": it is not an entry of the share root');
});

escape('".." from a subdirectory leads back into the share, not above it', ({ h, t }) => {
  const q = h.walk(ROOT_FID, h.fid(), ['dir', '..', '..', '..']);
  t.deepEqual(q.slice(1).map((x) => x.path), [rootQid(h).path, rootQid(h).path, rootQid(h).path]);
});

escape('names with "/" are refused: "../outside/secret", "dir/inner", "/etc/passwd"', ({ h, fails }) => {
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), ['../outside/secret']));
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), ['dir/inner']));
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), ['/etc/passwd']));
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), ['/']));
});

escape('names with NUL are refused (no C-string truncation to "file")', ({ h, fails }) => {
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), [new Uint8Array([0x66, 0x69, 0x6c, 0x65, 0, 0x2f, 0x78])]));
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), [new Uint8Array([0])]));
  fails(EINVAL, () => h.lcreate(h.walkTo(), new Uint8Array([0x61, 0, 0x62]), P.P9_DOTL_WRONLY, 0o644));
});

escape('".", "" and over-long names are refused', ({ h, fails }) => {
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), ['.']));
  fails(EINVAL, () => h.walk(ROOT_FID, h.fid(), ['']));
  fails(36, () => h.walk(ROOT_FID, h.fid(), ['x'.repeat(256)]), 'ENAMETOOLONG');
});

escape('aname "/", "..", "/etc" in Tattach still attach the share root', ({ h, t }) => {
  for (const aname of ['/', '..', '/etc', '../outside']) t.deepEqual(h.attach(h.fid(), 0, aname), rootQid(h));
});

// ---- symlinks pointing out ----

escape('an absolute symlink to the secret: walkable as a link, never opened, never followed', ({ h, t, fails }) => {
  const f = h.walkTo('abs');
  t.is(h.getattr(f).qid.type, P.P9_QTSYMLINK);
  t.is(h.getattr(f).size, BigInt(join(h.outside, 'secret').length), "getattr is the link's own");
  fails(ELOOP, () => h.lopen(f, P.P9_DOTL_RDONLY));
  fails(ELOOP, () => h.lopen(h.walkTo('abs'), P.P9_DOTL_RDWR | P.P9_DOTL_TRUNC));
  fails(ENOTDIR, () => h.walk(f, h.fid(), ['x']));
  t.is(h.readlink(f), join(h.outside, 'secret'), 'the target is readable as data only');
});

escape('a relative symlink "../outside/secret" cannot be opened', ({ h, fails }) => {
  fails(ELOOP, () => h.lopen(h.walkTo('rel'), P.P9_DOTL_RDONLY));
});

escape('a symlink with a deep "../../.." chain to /etc/passwd cannot be opened or walked', ({ h, t, fails }) => {
  fails(ELOOP, () => h.lopen(h.walkTo('deep'), P.P9_DOTL_RDONLY));
  t.is(h.walk(ROOT_FID, h.fid(), ['deep', 'x']).length, 1);
});

escape('a symlink to a directory outside (absolute and relative) cannot be walked into', ({ h, t, fails }) => {
  t.is(h.walk(ROOT_FID, h.fid(), ['absdir', 'secret']).length, 1, 'partial walk: stops at the link');
  t.is(h.walk(ROOT_FID, h.fid(), ['reldir', 'secret']).length, 1);
  fails(ENOTDIR, () => h.walk(h.walkTo('absdir'), h.fid(), ['secret']));
  fails(ELOOP, () => h.lopen(h.walkTo('absdir'), P.P9_DOTL_RDONLY | P.P9_DOTL_DIRECTORY));
});

escape('a symlink to "/" cannot be walked into', ({ h, t }) => {
  t.is(h.walk(ROOT_FID, h.fid(), ['slash', 'etc', 'passwd']).length, 1);
});

escape('symlink loops (a->b->a, self->self) end in an error, not a hang', ({ h, t, fails }) => {
  fails(ELOOP, () => h.lopen(h.walkTo('loop1'), P.P9_DOTL_RDONLY));
  fails(ELOOP, () => h.lopen(h.walkTo('self'), P.P9_DOTL_RDONLY));
  t.is(h.walk(ROOT_FID, h.fid(), ['self', 'self', 'self']).length, 1);
  t.is(h.walk(ROOT_FID, h.fid(), ['loop1', 'loop2']).length, 1);
});

escape('magic links: a symlink to /proc/self/root, /proc/self/fd, /proc/self/cwd leads nowhere', ({ h, t, fails }) => {
  t.is(h.walk(ROOT_FID, h.fid(), ['procroot', 'etc']).length, 1);
  t.is(h.walk(ROOT_FID, h.fid(), ['procfd', '0']).length, 1);
  t.is(h.walk(ROOT_FID, h.fid(), ['proccwd', 'etc']).length, 1);
  fails(ELOOP, () => h.lopen(h.walkTo('procroot'), P.P9_DOTL_RDONLY));
  t.is(h.readlink(h.walkTo('procroot')), '/proc/self/root');
});

// ---- creating through links ----

escape('Tlcreate on an existing symlink to the secret (no O_EXCL, O_TRUNC) does not follow it', ({ h, fails }) => {
  fails(ELOOP, () => h.lcreate(h.walkTo(), 'abs', P.P9_DOTL_WRONLY | P.P9_DOTL_CREATE | P.P9_DOTL_TRUNC, 0o644));
  fails(ELOOP, () => h.lcreate(h.walkTo(), 'rel', P.P9_DOTL_RDWR | P.P9_DOTL_APPEND, 0o644));
});

escape('Tlcreate on a dangling symlink does not create its target outside (with or without O_EXCL, O_NOFOLLOW)', ({ h, t, fails }) => {
  fails(ELOOP, () => h.lcreate(h.walkTo(), 'dangling', P.P9_DOTL_WRONLY | P.P9_DOTL_CREATE, 0o644));
  fails(EEXIST, () => h.lcreate(h.walkTo(), 'dangling', P.P9_DOTL_WRONLY | P.P9_DOTL_CREATE | P.P9_DOTL_EXCL, 0o644));
  fails(ELOOP, () => h.lcreate(h.walkTo(), 'dangling', P.P9_DOTL_WRONLY | 0o400000 /* P9_DOTL_NOFOLLOW */, 0o644));
  t.false(existsSync(join(h.outside, 'created-through-link')));
});

escape('Tlcreate with "../" names or in a symlinked directory fid creates nothing outside', ({ h, fails }) => {
  fails(EINVAL, () => h.lcreate(h.walkTo(), '../outside/planted', P.P9_DOTL_WRONLY, 0o644));
  fails(EINVAL, () => h.lcreate(h.walkTo(), '..', P.P9_DOTL_WRONLY, 0o644));
  fails(ENOTDIR, () => h.lcreate(h.walkTo('absdir'), 'planted', P.P9_DOTL_WRONLY, 0o644));
  fails(ENOTDIR, () => h.lcreate(h.walkTo('reldir'), 'planted', P.P9_DOTL_WRONLY, 0o644));
});

escape('Tlopen flags cannot smuggle O_CREAT/O_EXCL/O_PATH-like bits into an open of a link', ({ h, fails }) => {
  const all = 0o7777777 & ~P.P9_DOTL_ACCMODE;
  fails([ELOOP], () => h.lopen(h.walkTo('dangling'), all | P.P9_DOTL_RDWR));
  fails([ELOOP], () => h.lopen(h.walkTo('absdir'), P.P9_DOTL_CREATE | P.P9_DOTL_DIRECTORY));
});

escape('Tmkdir: "../escaped", in a symlinked directory, and over a dangling symlink', ({ h, t, fails }) => {
  fails(EINVAL, () => h.mkdir(ROOT_FID, '../escaped'));
  fails(ENOTDIR, () => h.mkdir(h.walkTo('absdir'), 'escaped'));
  fails(EEXIST, () => h.mkdir(ROOT_FID, 'dangling'));
  t.false(existsSync(join(h.dir, 'escaped')));
});

escape('Tsymlink: a crafted link name, or in a symlinked directory', ({ h, fails }) => {
  fails(EINVAL, () => h.symlink(ROOT_FID, '../outside/evil', '/etc/passwd'));
  fails(ENOTDIR, () => h.symlink(h.walkTo('absdir'), 'evil', '/etc/passwd'));
  fails(EEXIST, () => h.symlink(ROOT_FID, 'dangling', 'x'));
});

escape('Tsymlink to /etc/passwd is stored, but opening through it still fails', ({ h, t, fails }) => {
  h.symlink(ROOT_FID, 'newlink', join(h.outside, 'secret'));
  fails(ELOOP, () => h.lopen(h.walkTo('newlink'), P.P9_DOTL_RDONLY));
  t.is(lstatSync(join(h.share, 'newlink')).isSymbolicLink(), true);
});

escape('Tmknod: crafted names, symlinked directories, and device nodes', ({ h, t, fails }) => {
  fails(EINVAL, () => h.mknod(ROOT_FID, '../outside/fifo', 0o10644));
  fails(ENOTDIR, () => h.mknod(h.walkTo('absdir'), 'fifo', 0o10644));
  fails(EPERM, () => h.mknod(ROOT_FID, 'mem', 0o20666, 1, 1), '/dev/mem twin');
  fails(EPERM, () => h.mknod(ROOT_FID, 'disk', 0o60666, 8, 0), '/dev/sda twin');
  t.false(existsSync(join(h.share, 'mem')));
});

escape('a device node the host left in the share is never opened', ({ h, fails }) => {
  fails(EPERM, () => h.lopen(h.walkTo('null'), P.P9_DOTL_RDWR));
  fails(EPERM, () => h.lopen(h.walkTo('null'), P.P9_DOTL_RDONLY));
}, (share) => {
  execFileSync('mknod', [join(share, 'null'), 'c', '1', '3']);
});

// ---- links and renames ----

escape('Tlink with a crafted name or into a symlinked directory', ({ h, fails }) => {
  const f = h.walkTo('file');
  fails(EINVAL, () => h.link(ROOT_FID, f, '../outside/stolen'));
  fails(ENOTDIR, () => h.link(h.walkTo('absdir'), f, 'stolen'));
});

escape('Tlink of a symlink fid links the symlink itself, never its target', ({ h, t }) => {
  h.link(ROOT_FID, h.walkTo('abs'), 'link-to-link');
  t.true(lstatSync(join(h.share, 'link-to-link')).isSymbolicLink());
  t.is(lstatSync(join(h.share, 'abs')).nlink, 2);
});

escape('Trenameat: newname "../outside/stolen", "..", "." and oldname ".."', ({ h, t, fails }) => {
  fails(EINVAL, () => h.renameat(ROOT_FID, 'file', ROOT_FID, '../outside/stolen'));
  fails(EINVAL, () => h.renameat(ROOT_FID, 'file', ROOT_FID, '..'));
  fails(EINVAL, () => h.renameat(ROOT_FID, 'file', ROOT_FID, '.'));
  fails(EINVAL, () => h.renameat(ROOT_FID, '..', ROOT_FID, 'x'));
  fails(EINVAL, () => h.renameat(h.walkTo('dir'), '..', ROOT_FID, 'x'));
  t.is(readFileSync(join(h.share, 'file'), 'utf8'), ORIGINAL);
});

escape('Trenameat into a symlinked directory fid', ({ h, fails }) => {
  fails(ENOTDIR, () => h.renameat(ROOT_FID, 'file', h.walkTo('absdir'), 'stolen'));
  fails(ENOTDIR, () => h.renameat(h.walkTo('absdir'), 'secret', ROOT_FID, 'stolen'));
});

escape('Trenameat over a symlink replaces the link, not its target', ({ h, t }) => {
  h.renameat(ROOT_FID, 'file', ROOT_FID, 'abs');
  t.is(readFileSync(join(h.share, 'abs'), 'utf8'), ORIGINAL);
});

escape('Trename (fid-based) with a crafted name, and of the share root itself', ({ h, fails }) => {
  fails(EINVAL, () => h.rename(h.walkTo('file'), ROOT_FID, '../outside/stolen'));
  fails(EBUSY, () => h.rename(ROOT_FID, h.walkTo('dir'), 'root-moved'));
});

escape('Tunlinkat with crafted names or through a symlinked directory; unlinking a link keeps its target', ({ h, t, fails }) => {
  fails(EINVAL, () => h.unlinkat(ROOT_FID, '../outside/secret'));
  fails(EINVAL, () => h.unlinkat(ROOT_FID, '..', P.P9_DOTL_AT_REMOVEDIR));
  fails(ENOTDIR, () => h.unlinkat(h.walkTo('absdir'), 'secret'));
  h.unlinkat(ROOT_FID, 'abs');
  t.false(existsSync(join(h.share, 'abs')));
});

escape('Tremove of the root fid, and of a ".." fid of the root', ({ h, t, fails }) => {
  fails(EBUSY, () => h.remove(h.walkTo()));
  const up = h.fid();
  h.walk(ROOT_FID, up, ['..']);
  fails(EBUSY, () => h.remove(up));
  t.true(existsSync(h.share));
});

// ---- attributes and xattrs through links ----

escape('Tsetattr chmod and truncate of a symlink fid never reach the target', ({ h, fails }) => {
  fails(EOPNOTSUPP, () => h.setattr(h.walkTo('abs'), { valid: P.P9_ATTR_MODE, mode: 0o777 }));
  fails(EINVAL, () => h.setattr(h.walkTo('abs'), { valid: P.P9_ATTR_SIZE, size: 0n }));
});

escape('Tsetattr chown and utimes of a symlink fid change the link itself', ({ h, t }) => {
  h.setattr(h.walkTo('abs'), { valid: P.P9_ATTR_UID | P.P9_ATTR_GID, uid: 4242, gid: 4242 });
  h.setattr(h.walkTo('abs'), { valid: P.P9_ATTR_MTIME | P.P9_ATTR_MTIME_SET, mtime: [1000n, 0n] });
  t.is(lstatSync(join(h.share, 'abs')).uid, 4242);
  t.is(lstatSync(join(h.share, 'abs')).mtimeMs, 1_000_000);
});

escape('xattrs of a symlink fid: reads find nothing, writes are refused, the target is untouched', ({ h, t, fails }) => {
  const f = h.walkTo('abs');
  fails(ENODATA, () => h.getxattr(f, 'user.x'));
  t.is(h.getxattr(f, '').length, 0, 'empty list');
  fails(EPERM, () => h.setxattr(f, 'user.x', bytes('1')));
  fails(EPERM, () => h.xattrcreate(h.walkTo('absdir'), 'user.x', 1));
});

escape('xattr namespaces a guest must not write on the host: security.capability, security.selinux, trusted.*', ({ h, fails }) => {
  const f = h.walkTo('file');
  fails(EPERM, () => h.xattrcreate(h.walkTo('file'), 'security.capability', 20));
  fails(EPERM, () => h.xattrcreate(h.walkTo('file'), 'security.selinux', 10));
  fails(EPERM, () => h.xattrcreate(h.walkTo('file'), 'trusted.overlay.redirect', 10));
  fails(EOPNOTSUPP, () => h.xattrcreate(h.walkTo('file'), 'bogus.ns', 1));
  fails(EINVAL, () => h.getxattr(f, 'user.\0x').length);
});

escape('set-user-ID bits are never set on the host (create, mkdir, mknod, chmod)', ({ h, t }) => {
  const f = h.walkTo();
  h.lcreate(f, 'suid', P.P9_DOTL_WRONLY, 0o6777);
  h.mkdir(ROOT_FID, 'sdir', 0o4777);
  h.mknod(ROOT_FID, 'sfifo', 0o16777);
  h.setattr(h.walkTo('file'), { valid: P.P9_ATTR_MODE, mode: 0o4755 });
  t.is(statSync(join(h.share, 'suid')).mode & 0o6000, 0);
  t.is(statSync(join(h.share, 'sdir')).mode & 0o4000, 0);
  t.is(lstatSync(join(h.share, 'sfifo')).mode & 0o6000, 0);
  t.is(statSync(join(h.share, 'file')).mode & 0o6000, 0);
});

// ---- races: the host swaps things between two requests ----

escape('race: a walked directory is swapped for a symlink to outside before the next walk', ({ h, t, fails }) => {
  const d = h.walkTo('dir');
  renameSync(join(h.share, 'dir'), join(h.share, 'dir.old'));
  symlinkSync(h.outside, join(h.share, 'dir'));
  fails(ENOENT, () => h.walk(d, h.fid(), ['secret']), 'the fid still means the original directory');
  t.is(h.walk(d, h.fid(), ['inner']).length, 1, 'which still has its own entries');
  t.is(h.walk(ROOT_FID, h.fid(), ['dir', 'secret']).length, 1, 'a fresh walk meets the symlink and stops');
});

escape('race: a walked file is swapped for a symlink to the secret before Tlopen', ({ h, t }) => {
  const f = h.walkTo('file');
  renameSync(join(h.share, 'file'), join(h.share, 'file.old'));
  symlinkSync(join(h.outside, 'secret'), join(h.share, 'file'));
  h.lopen(f, P.P9_DOTL_RDWR);
  t.is(text(h.read(f, 0, 100)), ORIGINAL, 'the original inode, not the secret');
  h.write(f, 0, bytes('overwritten'));
  t.is(readFileSync(join(h.share, 'file.old'), 'utf8').slice(0, 11), 'overwritten');
});

escape('race: an opened directory is swapped for a symlink before Treaddir', ({ h, t }) => {
  const d = h.walkTo('dir');
  h.lopen(d, P.P9_DOTL_RDONLY);
  renameSync(join(h.share, 'dir'), join(h.share, 'dir.old'));
  symlinkSync(h.outside, join(h.share, 'dir'));
  const names = h.readdir(d, 0n, 8192).map((e) => e.name);
  t.true(names.includes('inner'));
  t.false(names.includes('secret'));
});

escape('race: a walked directory is swapped before Tlcreate / Tmkdir in it', ({ h, t }) => {
  const d = h.walkTo('dir');
  const d2 = h.walkTo('dir');
  renameSync(join(h.share, 'dir'), join(h.share, 'dir.old'));
  symlinkSync(h.outside, join(h.share, 'dir'));
  h.lcreate(d, 'planted', P.P9_DOTL_WRONLY, 0o644);
  h.mkdir(d2, 'planted-dir');
  t.true(existsSync(join(h.share, 'dir.old/planted')));
  t.true(existsSync(join(h.share, 'dir.old/planted-dir')));
});

escape('race: the name a fid was walked by now names a symlink: Trename / Tremove say ESTALE', ({ h, t, fails }) => {
  const f = h.walkTo('file');
  const g = h.walkTo('file');
  renameSync(join(h.share, 'file'), join(h.share, 'file.old'));
  symlinkSync(join(h.outside, 'secret'), join(h.share, 'file'));
  fails(ESTALE, () => h.rename(f, ROOT_FID, 'moved'));
  fails(ESTALE, () => h.remove(g));
  t.true(lstatSync(join(h.share, 'file')).isSymbolicLink());
});

escape('race: a directory the guest holds is moved out of the share; ".." from it still leads into the share', ({ h, t }) => {
  const d = h.walkTo('dir');
  renameSync(join(h.share, 'dir'), join(h.outside, 'moved-dir'));
  const q = h.walk(d, h.fid(), ['..', '..']);
  t.is(q[0]!.path, rootQid(h).path, '".." is the node table parent, not the host one');
  // Undo, so that the outside snapshot matches.
  renameSync(join(h.outside, 'moved-dir'), join(h.share, 'dir'));
});

// ---- hostile numbers and fids ----

escape('Treaddir with garbage offsets and huge counts', ({ h, t }) => {
  const d = h.walkTo();
  h.lopen(d, P.P9_DOTL_RDONLY);
  for (const off of [0xffff_ffff_ffff_ffffn, 1n << 63n, 0x1234_5678_9abc_def0n, 3n, 12345n]) {
    const r = h.send(P.P9_TREADDIR, (w) => w.u32(d).u64(off).u32(8192));
    t.true(r.type === P.P9_RREADDIR || (r.type === P.P9_RLERROR && r.errno === EINVAL), `offset ${off}: type ${r.type} errno ${r.errno}`);
  }
  const all = h.readdir(d, 0n, 0xffff_ffff);
  t.true(all.length >= 10, 'a huge count is cut to the reply buffer');
});

escape('Tread / Twrite at offsets past 2^63 are refused', ({ h, fails }) => {
  const f = h.walkTo('file');
  h.lopen(f, P.P9_DOTL_RDWR);
  fails(EINVAL, () => h.read(f, 0xffff_ffff_ffff_ffffn, 10));
  fails(EINVAL, () => h.write(f, 1n << 63n, bytes('x')));
  fails([EINVAL, 27 /* EFBIG */], () => h.write(f, (1n << 63n) - 1n, bytes('xy')));
});

escape('stale and never-used fids', ({ h, fails }) => {
  fails(EBADF, () => h.walk(999, h.fid(), []));
  fails(EBADF, () => h.read(999, 0, 10));
  fails(EBADF, () => h.lopen(999, 0));
  fails(EBADF, () => h.clunk(999));
  fails(EBADF, () => h.getattr(0xffff_fffe));
});

escape('fid reuse: a walk or attach onto a fid in use, NOFID as a new fid', ({ h, t, fails }) => {
  const f = h.walkTo('dir');
  fails(EINVAL, () => h.walk(ROOT_FID, f, ['file']));
  fails(EINVAL, () => h.attach(f));
  fails(EINVAL, () => h.walk(ROOT_FID, P.P9_NOFID, []));
  t.is(h.getattr(f).qid.type, P.P9_QTDIR, 'f unchanged');
  h.clunk(f);
  h.walk(ROOT_FID, f, ['file']);
  t.is(h.getattr(f).qid.type, P.P9_QTFILE, 'reusable after clunk');
});

escape('walk, open, read from a clunked fid', ({ h, fails }) => {
  const f = h.walkTo('dir');
  h.clunk(f);
  fails(EBADF, () => h.walk(f, h.fid(), ['inner']));
  fails(EBADF, () => h.lopen(f, 0));
  fails(EBADF, () => h.readdir(f, 0n, 100));
});

escape('Tlink / Trenameat / Txattrwalk with an xattr fid as the directory', ({ h, fails }) => {
  const x = h.fid();
  h.xattrwalk(h.walkTo('file'), x, '');
  fails(EINVAL, () => h.link(x, h.walkTo('file'), 'l'));
  fails(EINVAL, () => h.renameat(x, 'a', ROOT_FID, 'b'));
  fails(EINVAL, () => h.mkdir(x, 'd'));
});

// ---- documented, accepted ----

test('documented: a hard link the HOST made into the share is a file of the share', (t) => {
  const h = new P9Harness({}, (share, outside) => {
    linkSync(join(outside, 'secret'), join(share, 'hardlink'));
  });
  try {
    const f = h.walkTo('hardlink');
    h.lopen(f, P.P9_DOTL_RDONLY);
    t.is(text(h.read(f, 0, 100)), SECRET, 'every VMM behaves so: the inode is in the share');
  } finally {
    h.close();
  }
});
