/**
 * virtio-blk and virtio-rng with the guest's own drivers. Runs inside the
 * real-KVM test host (mke2fs and debugfs are in its image).
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MicroVM, defaultGuestImages, type MicroVMConfig, type VmExit } from '../../lib/index.js';
import { requireKvm } from '../helpers/kvm.js';
import { quietCommand } from '../helpers/guest-cmdline.js';

const TIMEOUT_MS = 2 * 60_000;

async function run(config: Omit<MicroVMConfig, 'kernel'> & { command?: string }): Promise<{ exit: VmExit; out: string }> {
  const imgs = await defaultGuestImages({ quiet: true });
  const { command, ...rest } = config;
  const vm = new MicroVM({
    kernel: imgs.kernel, memoryMiB: 256, ...rest,
    extraCmdline: [rest.extraCmdline, command ? quietCommand(['sh', '-c', command]) : ''].join(' ').trim(),
  });
  let out = '';
  vm.console.on('data', (c: Buffer) => { out += c.toString(); });
  await vm.start();
  const timer = setTimeout(() => { void vm.stop(); }, TIMEOUT_MS);
  const exit = await vm.wait();
  clearTimeout(timer);
  return { exit, out };
}

/** An ext4 image whose root is the default guest's initramfs (so it can boot as root=/dev/vda with init=/init). */
async function rootImage(dir: string): Promise<string> {
  const imgs = await defaultGuestImages({ quiet: true });
  const root = join(dir, 'root');
  execFileSync('sh', ['-c', `mkdir -p ${root} && cd ${root} && gzip -dc ${imgs.initrd} | cpio -id 2>/dev/null`]);
  const img = join(dir, 'root.img');
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', root, img, '64M']);
  return img;
}

test.serial('virtio-blk: the guest boots from an ext4 root disk, writes a file, and the host reads it from the image', async (t) => {
  if (!requireKvm(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-blk-'));
  const img = await rootImage(dir);
  const data = join(dir, 'data.img');
  writeFileSync(data, Buffer.alloc(8 * 1024 * 1024, 0xab));
  const { exit, out } = await run({
    drives: [{ path: img, root: true }, { path: data, readOnly: true, serial: 'data-disk-1' }],
    extraCmdline: 'init=/init',
    command: [
      'echo "root=$(grep " / " /proc/mounts | cut -d" " -f1,3)"',
      'echo "vdb_size=$(cat /sys/block/vdb/size) vdb_ro=$(cat /sys/block/vdb/ro)"',
      'echo "vdb_serial=$(cat /sys/block/vdb/serial)"',
      'echo "vdb_byte=$(dd if=/dev/vdb bs=512 skip=100 count=1 2>/dev/null | od -An -tx1 | head -1 | cut -c2-3)"',
      'if dd if=/dev/zero of=/dev/vdb bs=512 count=1 2>/dev/null; then echo ro_write=accepted; else echo ro_write=refused; fi',
      'echo hello-from-the-guest-disk > /proof.txt && sync && echo wrote',
    ].join('; '),
  });
  t.is(exit.reason, 'guest-exit', out.slice(-3000));
  t.is(exit.exitStatus, 0, out.slice(-3000));
  t.regex(out, /root=\/dev\/root ext4|root=\/dev\/vda ext4/, out.slice(-3000));
  t.regex(out, /vdb_size=16384 vdb_ro=1/);
  t.regex(out, /vdb_serial=data-disk-1/);
  t.regex(out, /vdb_byte=ab/);
  t.regex(out, /ro_write=refused/);
  t.regex(out, /wrote/);
  const cat = execFileSync('debugfs', ['-R', 'cat /proof.txt', img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  t.is(cat.trim(), 'hello-from-the-guest-disk');
  t.is(readFileSync(data)[0], 0xab, 'read-only image untouched');
  t.is(statSync(data).size, 8 * 1024 * 1024);
});

test.serial('virtio-blk: bad drives are refused before the VM starts', async (t) => {
  if (!requireKvm(t)) return;
  const imgs = await defaultGuestImages({ quiet: true });
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-blk-'));
  const a = join(dir, 'a.img');
  writeFileSync(a, Buffer.alloc(1024 * 1024));
  await t.throwsAsync(async () => new MicroVM({ kernel: imgs.kernel, drives: [{ path: join(dir, 'missing.img') }] }).start(), { message: /drives\[0\]\.path/ });
  const holder = new MicroVM({ kernel: imgs.kernel, initrd: imgs.initrd, drives: [{ path: a }], extraCmdline: quietCommand(['sleep', '30']) });
  await holder.start();
  await t.throwsAsync(new MicroVM({ kernel: imgs.kernel, drives: [{ path: a }] }).start(), { message: /locked/ });
  await holder.stop();
});

test.serial('virtio-rng: /dev/hwrng gives bytes from the host, also after the driver is unbound and bound again (device reset)', async (t) => {
  if (!requireKvm(t)) return;
  const imgs = await defaultGuestImages({ quiet: true });
  const { exit, out } = await run({
    initrd: imgs.initrd, rng: true,
    command: [
      'echo "rng=$(cat /sys/class/misc/hw_random/rng_current)"',
      'echo "bytes=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d " \\n")"',
      // Unbinding resets the device (status 0); binding again re-runs feature negotiation and queue setup.
      'drv=/sys/bus/virtio/drivers/virtio_rng; dev=$(basename $(ls -d $drv/virtio* | head -1))',
      'echo $dev > $drv/unbind && echo $dev > $drv/bind && echo rebound=$dev',
      'sleep 1; echo "again=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d " \\n")"',
    ].join('; '),
  });
  t.is(exit.exitStatus, 0, out.slice(-3000));
  t.regex(out, /rng=virtio_rng\.0/, out.slice(-3000));
  const m = /bytes=([0-9a-f]+)/.exec(out);
  t.truthy(m, out.slice(-3000));
  t.is(m![1]!.length, 128);
  t.notRegex(m![1]!, /^(00)+$/);
  t.regex(out, /rebound=virtio\d+/, out.slice(-3000));
  const again = /again=([0-9a-f]+)/.exec(out);
  t.is(again?.[1]?.length, 128, out.slice(-3000));
  t.not(again![1], m![1]);
});

// The share devices on arm64 too: the same 9p and virtio-fs servers behind the arm64 platform's
// virtio-mmio slots (device-tree nodes instead of x86 command-line devices). x86_64 runs the full
// share suites (share-9p, share-virtiofs); they need the tools initramfs, which arm64 does not have.
if (process.arch === 'arm64') {
  test.serial('arm64: a 9p share and a virtio-fs share, written and read by the guest, seen by the host', async (t) => {
    if (!requireKvm(t)) return;
    const imgs = await defaultGuestImages({ quiet: true });
    const p9 = mkdtempSync(join(tmpdir(), 'flintvm-a64-9p-'));
    const vfs = mkdtempSync(join(tmpdir(), 'flintvm-a64-vfs-'));
    writeFileSync(join(p9, 'from-host.txt'), 'host-9p\n');
    writeFileSync(join(vfs, 'from-host.txt'), 'host-vfs\n');
    const { exit, out } = await run({
      initrd: imgs.initrd,
      shares: [{ tag: 'p9', path: p9, protocol: '9p' }, { tag: 'vfs', path: vfs, protocol: 'virtiofs' }],
      extraCmdline: 'flintvm.mount=9p:p9 flintvm.mount=virtiofs:vfs',
      command: [
        'echo "mounts=$(grep -c -E " /mnt/(p9|vfs) " /proc/mounts)"',
        'echo "read9p=$(cat /mnt/p9/from-host.txt) readvfs=$(cat /mnt/vfs/from-host.txt)"',
        'mkdir /mnt/p9/d && echo guest-9p > /mnt/p9/d/out.txt',
        'echo guest-vfs > /mnt/vfs/out.txt && mv /mnt/vfs/out.txt /mnt/vfs/renamed.txt',
        'sync',
      ].join('; '),
    });
    t.is(exit.exitStatus, 0, out.slice(-3000));
    t.regex(out, /mounts=2/, out.slice(-3000));
    t.regex(out, /read9p=host-9p readvfs=host-vfs/, out.slice(-3000));
    t.is(readFileSync(join(p9, 'd', 'out.txt'), 'utf8'), 'guest-9p\n');
    t.is(readFileSync(join(vfs, 'renamed.txt'), 'utf8'), 'guest-vfs\n');
  });
}
