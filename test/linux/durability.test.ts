/**
 * Durability of an acknowledged flush across a VMM crash (issue #19, item 3),
 * in the real-KVM test host.
 *
 * The VMM runs in a child node process (a small script over the built
 * library). Its guest writes 64 KiB to the raw virtio-blk disk and fsyncs it
 * (busybox `dd conv=fsync`: the guest's block layer writes the pages back and
 * sends VIRTIO_BLK_T_FLUSH, since the device offers a write-back cache), then
 * writes a file on a virtio-fs share and fsyncs it (FUSE_WRITE + FUSE_FSYNC),
 * and only then prints a marker. The moment the marker reaches the test, the
 * VMM process is killed with SIGKILL, so nothing of flintvm runs after the
 * guest saw its fsyncs return. Then the host's page cache is dropped and the
 * data must be in the host files.
 *
 * What this proves: every byte the guest had acknowledged as synced was
 * already handed to the host kernel (pwritev into the image, pwrite into the
 * shared file) before the acknowledgement; none was still queued or buffered
 * in the VMM when it died. What it cannot prove here: that it reached stable
 * storage. The test host's /tmp is tmpfs (no disk below it), and a process's
 * death never loses the page cache anyway, so dropping caches does not make a
 * difference in this host. The host-side sync itself: virtio-blk FLUSH calls
 * fdatasync on the image (counted by a unit test,
 * test/unit/devices/virtio/block/block.test.ts); virtio-fs FUSE_FSYNC calls
 * fsync(2)/fdatasync(2) on the host file (devices/virtio/backends/hostdir/
 * file-io.ts; its unit tests run it but do not count the call). This test
 * checks that the guest's driver really asks for the flush (the disk's
 * write_cache reads "write back").
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKvm } from '../helpers/kvm.js';

const DATA_BYTES = 64 * 1024;
/** Where the guest writes on the disk (bytes). */
const DISK_OFFSET = 1024 * 1024;
const BLOCK = 4096;
const TIMEOUT_MS = 4 * 60_000;
const MARKER = 'DURABLE-SYNCED';

/** The bytes `yes <word> | head -c <n>` prints. */
function yesBytes(word: string, n: number): Buffer {
  const line = `${word}\n`;
  return Buffer.from(line.repeat(Math.ceil(n / line.length)).slice(0, n));
}

const CHILD = `
const [libUrl, config, script] = process.argv.slice(2);
const { MicroVM, defaultGuestImages, guestCommandCmdline } = await import(libUrl);
const imgs = await defaultGuestImages({ quiet: true });
const vm = new MicroVM({ kernel: imgs.vmlinux, initrd: imgs.initrd, memoryMiB: 256, ...JSON.parse(config),
  extraCmdline: 'quiet ' + guestCommandCmdline(['sh', '-c', script]) });
vm.console.pipe(process.stdout);
await vm.start();
const exit = await vm.wait();
console.log('VMM-EXIT ' + exit.reason);
`;

test.serial('durability: data the guest fsynced to virtio-blk and virtio-fs is in the host files after SIGKILL of the VMM', async (t) => {
  if (!requireKvm(t)) return;
  t.timeout(TIMEOUT_MS + 60_000);
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-durable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(4 * 1024 * 1024));
  const share = join(dir, 'share');
  mkdirSync(share);
  const childPath = join(dir, 'vmm.mjs');
  writeFileSync(childPath, CHILD);

  const blkWord = `blk-${randomBytes(6).toString('hex')}`;
  const fsWord = `fs-${randomBytes(6).toString('hex')}`;
  const script = [
    'set -e',
    'echo "write_cache=$(cat /sys/block/vda/queue/write_cache)"',
    `yes ${blkWord} | head -c ${DATA_BYTES} > /tmp/blk.dat`,
    `dd if=/tmp/blk.dat of=/dev/vda bs=${BLOCK} seek=${DISK_OFFSET / BLOCK} conv=fsync,notrunc 2>/dev/null`,
    'echo BLK-FSYNC-RETURNED',
    'mkdir -p /mnt && mount -t virtiofs share0 /mnt',
    `yes ${fsWord} | head -c ${DATA_BYTES} > /tmp/fs.dat`,
    `dd if=/tmp/fs.dat of=/mnt/durable.dat bs=${BLOCK} conv=fsync 2>/dev/null`,
    'echo FS-FSYNC-RETURNED',
    `echo ${MARKER}`,
    // Stay up: the VMM must be killed, not end on its own.
    'sleep 600',
  ].join('\n');
  const config = { drives: [{ path: disk }], shares: [{ tag: 'share0', path: share, protocol: 'virtiofs' }] };
  const libUrl = new URL('../../lib/index.js', import.meta.url).href;

  const child = spawn(process.execPath, [childPath, libUrl, JSON.stringify(config), script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let killedAtMarker = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    if (!killedAtMarker && out.includes(MARKER)) {
      killedAtMarker = true;
      child.kill('SIGKILL');
    }
  });
  child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
  const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
  const { signal } = await exited;
  clearTimeout(timer);

  const tail = out.slice(-3000);
  t.true(killedAtMarker, `the guest never printed ${MARKER}:\n${tail}`);
  t.is(signal, 'SIGKILL', tail);
  t.regex(out, /write_cache=write back/, 'the guest sees a write-back cache, so its fsync sends FLUSH');
  t.regex(out, /BLK-FSYNC-RETURNED[\s\S]*FS-FSYNC-RETURNED/, tail);
  t.notRegex(out, /VMM-EXIT/, 'the VMM did not end on its own');

  // Drop the host's page cache (root in the test host; tmpfs keeps its pages: see the header).
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch (e) {
    t.log(`drop_caches not possible here: ${(e as Error).message}`);
  }
  const img = readFileSync(disk);
  t.true(img.subarray(DISK_OFFSET, DISK_OFFSET + DATA_BYTES).equals(yesBytes(blkWord, DATA_BYTES)), 'the fsynced disk blocks are in the image');
  t.is(img.subarray(0, DISK_OFFSET).findIndex((b) => b !== 0), -1, 'nothing else written before them');
  const shared = readFileSync(join(share, 'durable.dat'));
  t.is(shared.length, DATA_BYTES);
  t.true(shared.equals(yesBytes(fsWord, DATA_BYTES)), 'the fsynced shared file is on the host');
});
