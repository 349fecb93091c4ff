/**
 * FileBackend on its own (iovec batching, errors) and openDiskImage (the
 * main-thread open + lock + size checks, and that nothing leaks on error).
 */
import test from 'ava';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, GuestAddressError } from '../../../../../lib/errors.js';
import { GuestMemory } from '../../../../../lib/memory/guest-memory.js';
import { mapGuestMemory } from '../../../../../lib/memory/host-memory.js';
import { FileBackend, LIBC_FILE_SYSCALLS, openDiskImage, openError } from '../../../../../devices/virtio/backends/file.js';
import { decodeIovecs } from '../../../../../devices/virtio/backends/iovec.js';
import { IOV_MAX } from '../../../../../devices/virtio/backends/libc.js';
import type { Segment } from '../../../../../devices/virtio/queue/types.js';

const dir = mkdtempSync(join(tmpdir(), 'flintvm-disk-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
/** A fresh file of `size` bytes in the temp dir. */
function image(size: number): string {
  const p = join(dir, `img${n++}`);
  writeFileSync(p, new Uint8Array(size).fill(0x5a));
  return p;
}

/** Open fds of this process, by number. */
const openFds = () => readdirSync('/proc/self/fd').length;

// ---- FileBackend ----

test('more than IOV_MAX segments go out in several syscalls of at most IOV_MAX iovecs', (t) => {
  const { memory, unmap } = mapGuestMemory([{ gpa: 0, size: 1024 * 1024 }]);
  const path = image(0);
  const fd = openSync(path, 'r+');
  try {
    const counts: number[] = [];
    const backend = new FileBackend(fd, {
      ...LIBC_FILE_SYSCALLS,
      pwritev: (f, iov, cnt, off) => (counts.push(cnt), LIBC_FILE_SYSCALLS.pwritev(f, iov, cnt, off)),
      preadv: (f, iov, cnt, off) => (counts.push(cnt), LIBC_FILE_SYSCALLS.preadv(f, iov, cnt, off)),
    });
    const segs: Segment[] = Array.from({ length: 2500 }, (_, i) => ({ addr: i * 32, len: 16 }));
    for (let i = 0; i < 2500 * 32; i++) memory.writeU8(i, (i * 13) & 0xff);
    backend.writev(512, segs, memory);
    t.deepEqual(counts, [IOV_MAX, IOV_MAX, 2500 - 2 * IOV_MAX]);
    const file = new Uint8Array(readFileSync(path));
    t.is(file.length, 512 + 2500 * 16);
    for (const i of [0, 1023, 1024, 2047, 2048, 2499]) {
      t.deepEqual(file.subarray(512 + i * 16, 512 + i * 16 + 16), memory.read(i * 32, 16), `segment ${i}`);
    }

    counts.length = 0;
    memory.fill(0, 2500 * 32, 0);
    backend.readv(512, segs, memory);
    t.deepEqual(counts, [IOV_MAX, IOV_MAX, 2500 - 2 * IOV_MAX]);
    t.deepEqual(memory.read(2499 * 32, 16), file.subarray(512 + 2499 * 16));
  } finally {
    closeSync(fd);
    unmap();
  }
});

test('segments that continue one another in memory share one iovec; IOV_MAX counts entries, not segments', (t) => {
  const { memory, unmap } = mapGuestMemory([{ gpa: 0, size: 1024 * 1024 }]);
  const path = image(0);
  const fd = openSync(path, 'r+');
  try {
    const seen: { base: bigint; len: number }[][] = [];
    const backend = new FileBackend(fd, { ...LIBC_FILE_SYSCALLS, pwritev: (f, iov, cnt, off) => (seen.push(decodeIovecs(iov, cnt)), LIBC_FILE_SYSCALLS.pwritev(f, iov, cnt, off)) });
    // 256 back-to-back 4 KiB pages (a 1 MiB guest buffer in consecutive pages): one entry.
    for (let i = 0; i < 1024 * 1024; i += 4096) memory.writeU8(i, i / 4096);
    const pages: Segment[] = Array.from({ length: 256 }, (_, i) => ({ addr: i * 4096, len: 4096 }));
    backend.writev(0, pages, memory);
    t.deepEqual(seen, [[{ base: memory.hostAddress(0, 4096), len: 1024 * 1024 }]]);
    const file = new Uint8Array(readFileSync(path));
    t.is(file.length, 1024 * 1024);
    t.true(pages.every((p, i) => file[p.addr] === i), 'every page in place');

    // A gap, a zero-length segment and a step back each start a new entry.
    seen.length = 0;
    backend.writev(0, [{ addr: 0, len: 8 }, { addr: 8, len: 8 }, { addr: 32, len: 8 }, { addr: 40, len: 0 }, { addr: 40, len: 8 }, { addr: 0, len: 4 }], memory);
    t.deepEqual(seen, [[
      { base: memory.hostAddress(0, 16), len: 16 },
      { base: memory.hostAddress(32, 16), len: 16 },
      { base: memory.hostAddress(0, 4), len: 4 },
    ]]);

    // IOV_MAX + 10 segments, every other pair adjacent: half as many entries, one syscall.
    seen.length = 0;
    const pairs: Segment[] = Array.from({ length: IOV_MAX + 10 }, (_, i) => ({ addr: Math.floor(i / 2) * 64 + (i % 2) * 16, len: 16 }));
    backend.writev(0, pairs, memory);
    t.is(seen.length, 1);
    t.is(seen[0]!.length, (IOV_MAX + 10) / 2);
    t.true(seen[0]!.every((e) => e.len === 32));
  } finally {
    closeSync(fd);
    unmap();
  }
});

test('iovecs skip zero-length segments and point at hostAddress of each segment', (t) => {
  const { memory, unmap } = mapGuestMemory([{ gpa: 0x1000, size: 64 * 1024 }]);
  const fd = openSync(image(8192), 'r+');
  try {
    const seen: { base: bigint; len: number }[][] = [];
    const backend = new FileBackend(fd, { ...LIBC_FILE_SYSCALLS, preadv: (f, iov, cnt, off) => (seen.push(decodeIovecs(iov, cnt)), LIBC_FILE_SYSCALLS.preadv(f, iov, cnt, off)) });
    backend.readv(0, [{ addr: 0x2000, len: 100 }, { addr: 0x3000, len: 0 }, { addr: 0x5000, len: 412 }], memory);
    t.deepEqual(seen, [[
      { base: memory.hostAddress(0x2000, 100), len: 100 },
      { base: memory.hostAddress(0x5000, 412), len: 412 },
    ]]);
    t.true(memory.read(0x2000, 100).every((b) => b === 0x5a));
  } finally {
    closeSync(fd);
    unmap();
  }
});

test('memory without a host mapping is refused (no copy fallback)', (t) => {
  const memory = GuestMemory.fromBuffers([{ gpa: 0, size: 4096 }]);
  const fd = openSync(image(4096), 'r+');
  try {
    t.throws(() => new FileBackend(fd).readv(0, [{ addr: 0, len: 512 }], memory), { instanceOf: GuestAddressError });
  } finally {
    closeSync(fd);
  }
});

// ---- openDiskImage ----

test('opens a writable image: size, O_CLOEXEC, and close() releases the fd', (t) => {
  const path = image(8 * 512);
  const before = openFds();
  const img = openDiskImage(path, { readOnly: false, field: 'drives[0].path' });
  t.is(img.sizeBytes, 4096);
  t.false(img.readOnly);
  t.is(readlinkSync(`/proc/self/fd/${img.fd}`), path);
  const flags = /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${img.fd}`, 'utf8'))![1]!;
  t.not(parseInt(flags, 8) & 0o2000000, 0, 'O_CLOEXEC');
  t.is(parseInt(flags, 8) & 3, 2, 'O_RDWR');
  img.close();
  img.close();
  t.is(openFds(), before);
});

test('a missing file is a ConfigError naming the field', (t) => {
  const before = openFds();
  const e = t.throws(() => openDiskImage(join(dir, 'nope.img'), { readOnly: false, field: 'drives[0].path' }), { instanceOf: ConfigError });
  t.is(e.field, 'drives[0].path');
  t.regex(e.message, /^drives\[0\]\.path: .*does not exist; check the path/);
  t.is(e.code, 'FLINTVM_E_CONFIG');
  t.is(openFds(), before);
});

test('an empty path or one with a NUL is rejected before open', (t) => {
  const path = image(4096);
  t.throws(() => openDiskImage(`${path}\0junk`, { readOnly: false, field: 'drives[0].path' }), { instanceOf: ConfigError, message: /NUL/ });
  t.throws(() => openDiskImage('', { readOnly: false, field: 'drives[0].path' }), { instanceOf: ConfigError });
});

test('a directory is rejected, writable or read-only', (t) => {
  const d = join(dir, 'adir');
  mkdirSync(d);
  const before = openFds();
  for (const readOnly of [false, true]) {
    const e = t.throws(() => openDiskImage(d, { readOnly, field: 'drives[1].path' }), { instanceOf: ConfigError });
    t.is(e.field, 'drives[1].path');
    t.regex(e.message, /is a directory/);
  }
  t.is(openFds(), before, 'the read-only open of the directory was closed again');
});

test('a FIFO is rejected at once, read-only or writable, without blocking in open(2)', (t) => {
  const fifo = join(dir, 'afifo');
  t.is(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  // Run in a child process: before the fix the read-only open blocks the thread forever (no writer ever
  // comes), which no in-process timeout could interrupt. The child gets 20 s, then SIGKILL.
  const moduleUrl = new URL('../../../../../devices/virtio/backends/file.js', import.meta.url).href;
  const script = `
    const { openDiskImage } = await import(${JSON.stringify(moduleUrl)});
    const out = [];
    for (const readOnly of [true, false]) {
      try { openDiskImage(${JSON.stringify(fifo)}, { readOnly, field: 'drives[2].path' }); out.push({ readOnly, opened: true }); }
      catch (e) { out.push({ readOnly, name: e.name, field: e.field, message: e.message }); }
    }
    console.log(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000, killSignal: 'SIGKILL', encoding: 'utf8' });
  t.is(r.signal, null, 'openDiskImage returned instead of blocking on the FIFO');
  t.is(r.status, 0, r.stderr);
  const results = JSON.parse(r.stdout) as Array<{ readOnly: boolean; name?: string; field?: string; message?: string }>;
  t.is(results.length, 2);
  for (const res of results) {
    t.is(res.name, 'ConfigError', `readOnly ${res.readOnly}`);
    t.is(res.field, 'drives[2].path');
    t.regex(res.message!, /is a FIFO \(named pipe\); a disk image must be a regular file or a block device/);
  }
});

test('a character device is rejected before open', (t) => {
  const before = openFds();
  const e = t.throws(() => openDiskImage('/dev/null', { readOnly: true, field: 'drives[0].path' }), { instanceOf: ConfigError });
  t.regex(e.message, /^drives\[0\]\.path: '\/dev\/null' is a character device/);
  t.is(openFds(), before);
});

test('sizes that are not a positive multiple of 512 are rejected', (t) => {
  const before = openFds();
  for (const size of [0, 1, 511, 513, 4097]) {
    const e = t.throws(() => openDiskImage(image(size), { readOnly: false, field: 'drives[0].path' }), { instanceOf: ConfigError }, String(size));
    t.regex(e.message, size === 0 ? /is empty/ : /not a multiple of 512; pad it/);
  }
  t.is(openFds(), before);
});

test('a writable image is locked: a second open fails until the first is closed', (t) => {
  const path = image(4096);
  const before = openFds();
  const first = openDiskImage(path, { readOnly: false, field: 'drives[0].path' });
  const e = t.throws(() => openDiskImage(path, { readOnly: false, field: 'drives[1].path' }), { instanceOf: ConfigError });
  t.is(e.field, 'drives[1].path');
  t.regex(e.message, /is locked by another VM or process/);
  t.throws(() => openDiskImage(path, { readOnly: true, field: 'drives[1].path' }), { instanceOf: ConfigError, message: /locked/ },
    'nor can it be opened read-only while someone writes it');
  t.is(openFds(), before + 1, 'only the first open remains');
  first.close();
  const second = openDiskImage(path, { readOnly: false, field: 'drives[1].path' });
  second.close();
  t.is(openFds(), before);
});

test('read-only opens share the image, and keep writers out', (t) => {
  const path = image(4096);
  chmodSync(path, 0o444);
  const before = openFds();
  const a = openDiskImage(path, { readOnly: true, field: 'drives[0].path' });
  const b = openDiskImage(path, { readOnly: true, field: 'drives[1].path' });
  t.true(a.readOnly);
  t.is(a.sizeBytes, 4096);
  t.is(parseInt(/flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${a.fd}`, 'utf8'))![1]!, 8) & 3, 0, 'O_RDONLY');
  chmodSync(path, 0o644);
  t.throws(() => openDiskImage(path, { readOnly: false, field: 'drives[2].path' }), { instanceOf: ConfigError, message: /locked/ });
  a.close();
  b.close();
  t.is(openFds(), before);
});

test('open errors name the fix: EACCES and EROFS suggest readOnly', (t) => {
  const acc = openError('/x.img', 13, false, 'drives[0].path');
  t.regex(acc.message, /permission denied .* read-write; set readOnly: true, or grant/);
  t.regex(openError('/x.img', 13, true, 'drives[0].path').message, /grant this process read permission/);
  t.regex(openError('/x.img', 30, false, 'drives[0].path').message, /read-only filesystem; set readOnly: true/);
  t.regex(openError('/x.img', 24, false, 'drives[0].path').message, /cannot open disk image '\/x\.img' read-write: EMFILE/);
  t.is(acc.field, 'drives[0].path');
  t.is((acc.cause as { syscall?: string }).syscall, 'open');
});
