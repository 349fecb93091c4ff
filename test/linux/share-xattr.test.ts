/**
 * Extended attributes through the shared directories (virtio-9p and
 * virtio-fs), with the guest's own setfattr/getfattr (Debian's `attr`, in
 * the guest tools initramfs; busybox has neither) and libc's l*xattr on the
 * host side:
 *
 * - set (text, empty and binary values, on a file and a directory), get,
 *   list, replace and remove in the guest, each visible with the right value
 *   on the host; a value the host sets is read by the guest;
 * - trusted.* and security.* are refused (EPERM: a guest must not give a host
 *   file capabilities or labels), other namespaces are not supported;
 * - a read-only share lets the guest read xattrs but refuses to set or
 *   remove them (EROFS).
 *
 * The host side of a share needs a filesystem with user.* xattrs. The test
 * host's /tmp is tmpfs, which has them only from Linux 6.6 (the test host
 * runs 6.1): when /tmp has none, the test makes an ext4 image and mounts it
 * (needs /dev/loop-control, i.e. the test host's loop module). When neither
 * works it checks what it still can -- the host's EOPNOTSUPP reaches the
 * guest, EPERM for trusted.*, EROFS on the read-only share -- and its log says
 * the host-side values were not checked.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKvm } from '../helpers/kvm.js';
import { hostGetXattr, hostListXattrs, hostSetXattr, mountCommand, requireToolsInitrd, results, runGuest, type ShareProtocol } from './share-helpers.js';

const TAG = 'xattrshare';
const EOPNOTSUPP = 95;
const IMAGE_MIB = 32;
/** Whether the default guest kernel has CONFIG_9P_FS_SECURITY (guest/microvm-<arch>.config): arm64 only. */
const GUEST_9P_SECURITY = process.arch === 'arm64';

/** A directory whose filesystem has user.* xattrs, or a plain tmpfs one (`userXattrs: false`). */
interface XattrDir {
  dir: string;
  userXattrs: boolean;
  how: string;
  cleanup(): void;
}

function probe(dir: string): boolean {
  const f = join(dir, '.xattr-probe');
  writeFileSync(f, '');
  const e = hostSetXattr(f, 'user.probe', Buffer.from('1'));
  rmSync(f);
  if (e !== 0 && e !== EOPNOTSUPP) throw new Error(`setxattr probe in ${dir}: errno ${e}`);
  return e === 0;
}

function xattrDir(): XattrDir {
  const base = mkdtempSync(join(tmpdir(), 'flintvm-xattr-'));
  const cleanup = () => rmSync(base, { recursive: true, force: true });
  if (probe(base)) return { dir: base, userXattrs: true, how: `${tmpdir()} has user xattrs`, cleanup };
  if (!existsSync('/dev/loop-control')) {
    return { dir: base, userXattrs: false, how: `${tmpdir()} (tmpfs on Linux < 6.6) has no user xattrs and there is no /dev/loop-control for an ext4 image`, cleanup };
  }
  const img = join(base, 'ext4.img');
  const mnt = join(base, 'mnt');
  mkdirSync(mnt);
  execFileSync('truncate', ['-s', `${IMAGE_MIB}M`, img]);
  // The real mke2fs: the test host's busybox has an applet of the same name without -t (test/hosts/README.md).
  execFileSync(existsSync('/sbin/mke2fs') ? '/sbin/mke2fs' : 'mkfs.ext4', ['-q', '-F', '-t', 'ext4', img]);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  const umount = () => {
    try { execFileSync('umount', [mnt]); } catch { /* already gone */ }
    cleanup();
  };
  if (!probe(mnt)) {
    umount();
    throw new Error('an ext4 image mounted on a loop device has no user xattrs');
  }
  return { dir: mnt, userXattrs: true, how: `ext4 image on a loop device (${tmpdir()} has no user xattrs)`, cleanup: umount };
}

/**
 * `r KEY CMD...` prints `R:KEY=<status>:<output>`: the output (stdout and stderr) on one line, newlines as `|`,
 * and for an error message only its last part (`setfattr: f: Operation not permitted` -> `Operation not permitted`).
 */
const GUEST_LIB = `
r() { k=$1; shift; o=$("$@" 2>&1); s=$?; echo "R:$k=$s:$(printf '%s' "$o" | tr '\\n' '|' | sed 's/^.*: //')"; }
`;

const WRITABLE = `${GUEST_LIB}
cd /mnt || exit 1
echo data > f && mkdir d || exit 1
r set setfattr -n user.color -v blue f
r set-empty setfattr -n user.empty f
r set-bin setfattr -n user.bin -v 0x00ff7f10 f
r set-dir setfattr -n user.kind -v directory d
r set-shape setfattr -n user.shape -v round f
r get getfattr --only-values -n user.color f
r get-dir getfattr --only-values -n user.kind d
r list sh -c "getfattr -m '^user\\.' f | grep '^user' | sort | tr '\\n' ' '"
r replace setfattr -n user.color -v green f
r remove setfattr -x user.shape f
r get-removed getfattr -n user.shape f
r get-missing getfattr -n user.never f
r remove-missing setfattr -x user.never f
r trusted setfattr -n trusted.flintvm -v 1 f
r security setfattr -n security.flintvm -v 1 f
echo HOST-STEP host-sets
i=0; while [ ! -e host-done ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
r from-host getfattr --only-values -n user.from-host f
cd / && umount /mnt && echo R:umount=done
`;

const READONLY = `${GUEST_LIB}
cd /mnt || exit 1
r ro-get getfattr --only-values -n user.color f
r ro-set setfattr -n user.color -v red f
r ro-new setfattr -n user.new -v 1 f
r ro-remove setfattr -x user.color f
cd / && umount /mnt && echo R:umount=done
`;

function script(protocol: ShareProtocol, body: string): string {
  return `mkdir -p /mnt && ${mountCommand(protocol, TAG)} || exit 1\n${body}`;
}

for (const protocol of ['9p', 'virtiofs'] as ShareProtocol[]) {
  test.serial(`${protocol}: xattrs set, get, listed, replaced and removed in the guest are the host's; trusted/security refused`, async (t) => {
    if (!requireKvm(t)) return;
    const initrd = await requireToolsInitrd(t, 'setfattr/getfattr');
    if (!initrd) return;
    const x = xattrDir();
    try {
      t.log(`host directory: ${x.how}`);
      const f = join(x.dir, 'f');
      const { exit, out } = await runGuest({ initrd, shares: [{ tag: TAG, path: x.dir, protocol }] }, script(protocol, WRITABLE), {
        'host-sets': () => {
          hostSetXattr(f, 'user.from-host', Buffer.from('set-on-the-host'));
          writeFileSync(join(x.dir, 'host-done'), '');
        },
      });
      const tail = out.slice(-3000);
      const r = results(out);
      t.is(exit.reason, 'guest-exit', tail);
      t.is(exit.exitStatus, 0, tail);
      t.is(r.get('umount'), 'done', tail);
      // Refused whatever the host filesystem: the share's namespace policy.
      t.is(r.get('trusted'), '1:Operation not permitted', 'trusted.* is refused');
      // The x86_64 guest kernel has no 9p security.* handler (CONFIG_9P_FS_SECURITY is off): it refuses first.
      // The arm64 one has it (microvm-arm64.config): the request reaches the share, which refuses it.
      const guestRefuses = protocol === '9p' && !GUEST_9P_SECURITY;
      t.is(r.get('security'), guestRefuses ? '1:Operation not supported' : '1:Operation not permitted', 'security.* is refused');
      if (x.userXattrs) t.false(hostListXattrs(f).some((n) => !n.startsWith('user.')), 'no trusted/security xattr reached the host');
      if (!x.userXattrs) {
        // The host filesystem's own answer reaches the guest.
        t.is(r.get('set'), '1:Operation not supported', tail);
        t.log('host-side xattr values NOT checked: no host filesystem with user xattrs here');
        return;
      }
      t.is(r.get('set'), '0:', tail);
      t.is(r.get('set-empty'), '0:');
      t.is(r.get('set-bin'), '0:');
      t.is(r.get('set-dir'), '0:');
      t.is(r.get('get'), '0:blue');
      t.is(r.get('get-dir'), '0:directory');
      t.is(r.get('list'), '0:user.bin user.color user.empty user.shape', 'getfattr lists what was set');
      t.is(r.get('replace'), '0:');
      t.is(r.get('remove'), '0:');
      t.is(r.get('get-removed'), '1:No such attribute');
      t.is(r.get('get-missing'), '1:No such attribute');
      t.is(r.get('remove-missing'), '1:No such attribute');
      t.is(r.get('from-host'), '0:set-on-the-host', 'a value the host set, read by the guest');
      // The host's view.
      t.deepEqual(hostListXattrs(f), ['user.bin', 'user.color', 'user.empty', 'user.from-host']);
      t.deepEqual(hostGetXattr(f, 'user.color'), Buffer.from('green'), 'replaced value');
      t.deepEqual(hostGetXattr(f, 'user.empty'), Buffer.alloc(0), 'empty value');
      t.deepEqual(hostGetXattr(f, 'user.bin'), Buffer.from([0x00, 0xff, 0x7f, 0x10]), 'binary value');
      t.is(hostGetXattr(f, 'user.shape'), null, 'removed');
      t.deepEqual(hostGetXattr(join(x.dir, 'd'), 'user.kind'), Buffer.from('directory'), 'on a directory');
    } finally {
      x.cleanup();
    }
  });

  test.serial(`${protocol}: a read-only share lets the guest read xattrs, not set or remove them`, async (t) => {
    if (!requireKvm(t)) return;
    const initrd = await requireToolsInitrd(t, 'setfattr/getfattr');
    if (!initrd) return;
    const x = xattrDir();
    try {
      const f = join(x.dir, 'f');
      writeFileSync(f, 'data\n');
      if (x.userXattrs) t.is(hostSetXattr(f, 'user.color', Buffer.from('blue')), 0);
      const { exit, out } = await runGuest({ initrd, shares: [{ tag: TAG, path: x.dir, protocol, readOnly: true }] }, script(protocol, READONLY));
      const tail = out.slice(-3000);
      const r = results(out);
      t.is(exit.exitStatus, 0, tail);
      t.is(r.get('umount'), 'done', tail);
      for (const k of ['ro-set', 'ro-new', 'ro-remove']) t.is(r.get(k), '1:Read-only file system', k);
      if (!x.userXattrs) {
        t.log(`host-side xattr values NOT checked: ${x.how}`);
        return;
      }
      t.is(r.get('ro-get'), '0:blue', 'read through the read-only share');
      t.deepEqual(hostListXattrs(f), ['user.color']);
      t.deepEqual(hostGetXattr(f, 'user.color'), Buffer.from('blue'), 'unchanged on the host');
    } finally {
      x.cleanup();
    }
  });
}
