/**
 * virtio-blk end to end without KVM: a VirtqDriver plays Linux, a SplitQueue
 * and BlockDevice run as on the I/O worker, guest memory is a real host
 * mapping, and the disk is a temp file whose bytes the tests check.
 */
import test, { type ExecutionContext } from 'ava';
import { statSync } from 'node:fs';
import * as C from '../../../../../devices/virtio/constants.js';
import { DeviceNeedsReset } from '../../../../../devices/virtio/device.js';
import { decodeIovecs } from '../../../../../devices/virtio/backends/iovec.js';
import * as B from '../../../../../devices/virtio/block/constants.js';
import { BlockDevice } from '../../../../../devices/virtio/block/device.js';
import { ALL_FEATURES, BlkHarness, header, MiB, pattern, ranges, SECTOR, type Completion } from './blk-harness.js';

const { VIRTIO_BLK_S_OK: OK, VIRTIO_BLK_S_IOERR: IOERR, VIRTIO_BLK_S_UNSUPP: UNSUPP } = B;

/** A test body run against a fresh harness, closed afterwards. */
function withHarness(opts: ConstructorParameters<typeof BlkHarness>[0], fn: (t: ExecutionContext, h: BlkHarness) => void) {
  return (t: ExecutionContext) => {
    const h = new BlkHarness(opts);
    try {
      fn(t, h);
    } finally {
      h.close();
    }
  };
}

// ---- config space and features ----

test('info: capacity, limits and features of a writable disk', (t) => {
  const info = BlockDevice.info({ sizeBytes: 3 * MiB, readOnly: false });
  const dv = new DataView(info.config.buffer);
  t.is(info.deviceType, C.VIRTIO_ID_BLOCK);
  t.deepEqual(info.queueMaxSizes, [256]);
  t.is(info.config.length, 60);
  t.is(dv.getBigUint64(0, true), BigInt((3 * MiB) / 512), 'capacity in 512-byte sectors');
  t.is(dv.getUint32(8, true), B.BLOCK_SIZE_MAX, 'size_max');
  t.is(dv.getUint32(12, true), 254, 'seg_max');
  t.is(dv.getUint32(20, true), 512, 'blk_size');
  t.is(dv.getUint32(36, true), B.BLOCK_MAX_DISCARD_SECTORS);
  t.is(dv.getUint32(40, true), B.BLOCK_MAX_DISCARD_SEG);
  t.is(dv.getUint32(44, true), 8, 'discard_sector_alignment');
  t.is(dv.getUint32(48, true), B.BLOCK_MAX_WRITE_ZEROES_SECTORS);
  t.is(dv.getUint32(52, true), B.BLOCK_MAX_WRITE_ZEROES_SEG);
  t.is(dv.getUint8(56), 1, 'write_zeroes_may_unmap');
  const want = [B.VIRTIO_BLK_F_SIZE_MAX, B.VIRTIO_BLK_F_SEG_MAX, B.VIRTIO_BLK_F_BLK_SIZE, B.VIRTIO_BLK_F_FLUSH, B.VIRTIO_BLK_F_DISCARD,
    B.VIRTIO_BLK_F_WRITE_ZEROES, C.VIRTIO_F_EVENT_IDX, C.VIRTIO_F_INDIRECT_DESC].reduce((m, b) => m | C.feature(b), 0n);
  t.is(info.features, want);
});

test('info: a read-only disk offers RO and neither discard nor write-zeroes', (t) => {
  const { features } = BlockDevice.info({ sizeBytes: MiB, readOnly: true });
  t.not(features & C.feature(B.VIRTIO_BLK_F_RO), 0n);
  t.is(features & (C.feature(B.VIRTIO_BLK_F_DISCARD) | C.feature(B.VIRTIO_BLK_F_WRITE_ZEROES)), 0n);
});

test('info: rejects sizes that are not positive multiples of 512 and serials over 20 bytes', (t) => {
  for (const sizeBytes of [0, -512, 1000, 512.5, Number.NaN, 2 ** 60]) {
    t.throws(() => BlockDevice.info({ sizeBytes, readOnly: false }), { instanceOf: RangeError }, String(sizeBytes));
  }
  t.throws(() => BlockDevice.info({ sizeBytes: 512, readOnly: false, serial: 'x'.repeat(21) }), { instanceOf: RangeError });
  t.throws(() => BlockDevice.info({ sizeBytes: 512, readOnly: false, serial: 'é'.repeat(11) }), { instanceOf: RangeError }, '22 UTF-8 bytes');
  t.notThrows(() => BlockDevice.info({ sizeBytes: 512, readOnly: false, serial: 'x'.repeat(20) }));
});

test('activate without the request queue throws DeviceNeedsReset', withHarness({}, (t, h) => {
  const dev = new BlockDevice({ sizeBytes: MiB, readOnly: false }, { readv() {}, writev() {}, flush() {}, discard() {}, writeZeroes() {} });
  t.throws(() => dev.activate(h.context(ALL_FEATURES, [null])), { instanceOf: DeviceNeedsReset });
}));

// ---- reads and writes ----

test('write then read round trip: bytes land in the file and come back', withHarness({}, (t, h) => {
  const data = pattern(4096, 3);
  const w = h.write(8, data);
  t.is(w.status, OK);
  t.is(w.len, 1);
  t.deepEqual(h.fileBytes().subarray(8 * SECTOR, 8 * SECTOR + 4096), data);
  const r = h.read(8, 4096);
  t.is(r.status, OK);
  t.is(r.len, 4097, 'data + status');
  t.deepEqual(r.data, data);
}));

test('reads return the image bytes; writes touch exactly their sectors', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR });
  try {
    const before = h.fileBytes();
    const r = h.read(3, 2 * SECTOR);
    t.is(r.status, OK);
    t.is(r.len, 2 * SECTOR + 1);
    t.deepEqual(r.data, before.subarray(3 * SECTOR, 5 * SECTOR));

    const data = pattern(3 * SECTOR, 9);
    const w = h.write(10, data);
    t.is(w.status, OK);
    t.is(w.len, 1, 'a write writes only the status byte');
    const after = h.fileBytes();
    t.deepEqual(after.subarray(10 * SECTOR, 13 * SECTOR), data);
    t.deepEqual(after.subarray(0, 10 * SECTOR), before.subarray(0, 10 * SECTOR));
    t.deepEqual(after.subarray(13 * SECTOR), before.subarray(13 * SECTOR));
    t.is(after.length, before.length);

    // The last sector of the disk is addressable; a zero-length read is harmless.
    t.is(h.read(63, SECTOR).status, OK);
    t.is(h.read(64, 0).status, OK);
  } finally {
    h.close();
  }
});

test('scattered buffers: data split over many segments, header split over three', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR });
  try {
    const data = pattern(4 * SECTOR, 5);
    const hdr = header(B.VIRTIO_BLK_T_OUT, 2);
    // Header in pieces of 5, 7 and 4 bytes, data in pieces of 100, 412, 1000, 536.
    const cuts = [100, 412, 1000, 536];
    let at = 0;
    const dataPieces = cuts.map((n) => ({ bytes: data.subarray(at, (at += n)) }));
    const w = h.submit([{ bytes: hdr.subarray(0, 5) }, { bytes: hdr.subarray(5, 12) }, { bytes: hdr.subarray(12) }, ...dataPieces, { len: 1, write: true }]);
    t.is(w.status, OK);
    t.deepEqual(h.fileBytes().subarray(2 * SECTOR, 6 * SECTOR), data);

    // Read it back into odd-sized writable pieces, the status byte sharing the last piece.
    const r = h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 2) }, { len: 7, write: true }, { len: 2041, write: true }, { len: 1, write: true }]);
    t.is(r.status, OK);
    t.is(r.len, 4 * SECTOR + 1);
    const got = new Uint8Array([...h.memory.read(r.bufs[1]!.addr, 7), ...h.memory.read(r.bufs[2]!.addr, 2041)]);
    t.deepEqual(got, data);

    // Status as the last byte of a bigger writable buffer (data and status in one descriptor).
    const r2 = h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 2) }, { len: SECTOR + 1, write: true }]);
    t.is(r2.status, OK);
    t.deepEqual(h.memory.read(r2.bufs[1]!.addr, SECTOR), data.subarray(0, SECTOR));
  } finally {
    h.close();
  }
});

test('indirect descriptors with EVENT_IDX work the same', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR, indirect: true, eventIdx: true });
  try {
    const data = pattern(2 * SECTOR, 11);
    const w = h.submit([{ bytes: header(B.VIRTIO_BLK_T_OUT, 20) }, { bytes: data }, { len: 1, write: true }], { indirect: true });
    t.is(w.status, OK);
    const r = h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 20) }, { len: 2 * SECTOR, write: true }, { len: 1, write: true }], { indirect: true });
    t.is(r.status, OK);
    t.deepEqual(h.memory.read(r.bufs[1]!.addr, 2 * SECTOR), data);
  } finally {
    h.close();
  }
});

test('zero copy: the iovecs handed to preadv/pwritev are the host addresses of the guest segments', async (t) => {
  const calls: { call: string; iovs: { base: bigint; len: number }[]; offset: number }[] = [];
  const h = new BlkHarness({
    sys: (real) => ({
      ...real,
      preadv: (fd, iov, n, off) => (calls.push({ call: 'preadv', iovs: decodeIovecs(iov, n), offset: off }), real.preadv(fd, iov, n, off)),
      pwritev: (fd, iov, n, off) => (calls.push({ call: 'pwritev', iovs: decodeIovecs(iov, n), offset: off }), real.pwritev(fd, iov, n, off)),
    }),
  });
  try {
    const w = h.submit([{ bytes: header(B.VIRTIO_BLK_T_OUT, 4) }, { bytes: pattern(1024) }, { bytes: pattern(512, 2) }, { len: 1, write: true }]);
    t.is(w.status, OK);
    t.is(calls.length, 1);
    t.is(calls[0]!.call, 'pwritev');
    t.is(calls[0]!.offset, 4 * SECTOR);
    t.deepEqual(calls[0]!.iovs, [
      { base: h.memory.hostAddress(w.bufs[1]!.addr, 1024), len: 1024 },
      { base: h.memory.hostAddress(w.bufs[2]!.addr, 512), len: 512 },
    ]);

    const r = h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 4) }, { len: 1536, write: true }, { len: 1, write: true }]);
    t.is(r.status, OK);
    t.is(calls[1]!.call, 'preadv');
    t.deepEqual(calls[1]!.iovs, [{ base: h.memory.hostAddress(r.bufs[1]!.addr, 1536), len: 1536 }]);
    // The status byte is never part of the data iovecs.
    t.false(calls.some((c) => c.iovs.some((v) => v.base === h.memory.hostAddress(r.bufs[2]!.addr, 1))));
  } finally {
    h.close();
  }
});

// ---- flush, get-id ----

test('FLUSH calls fdatasync and answers OK; FLUSH with data is IOERR', async (t) => {
  let syncs = 0;
  const h = new BlkHarness({ sys: (real) => ({ ...real, fdatasync: (fd) => (syncs++, real.fdatasync(fd)) }) });
  try {
    const f = h.request(B.VIRTIO_BLK_T_FLUSH, 0);
    t.is(f.status, OK);
    t.is(f.len, 1);
    t.is(syncs, 1);
    t.is(h.request(B.VIRTIO_BLK_T_FLUSH, 0, { inLen: 512 }).status, IOERR);
    t.is(h.request(B.VIRTIO_BLK_T_FLUSH, 0, { out: pattern(512) }).status, IOERR);
    t.is(syncs, 1);
  } finally {
    h.close();
  }
});

test('GET_ID answers the serial NUL-padded to 20 bytes', async (t) => {
  const h = new BlkHarness({ serial: 'flintvm-disk0' });
  try {
    const r = h.request(B.VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 });
    t.is(r.status, OK);
    t.is(r.len, 21);
    const want = new Uint8Array(20);
    want.set(new TextEncoder().encode('flintvm-disk0'));
    t.deepEqual(r.data, want);
    t.is(h.request(B.VIRTIO_BLK_T_GET_ID, 0, { inLen: 19 }).status, IOERR, 'too small a buffer');
    t.is(h.request(B.VIRTIO_BLK_T_GET_ID, 0, { inLen: 512 }).status, IOERR, 'not the 20-byte id buffer');
  } finally {
    h.close();
  }
});

test('GET_ID of a 20-byte serial has no NUL; no serial is all NULs', async (t) => {
  const h1 = new BlkHarness({ serial: 'ABCDEFGHIJKLMNOPQRST' });
  const h2 = new BlkHarness({});
  try {
    t.is(Buffer.from(h1.request(B.VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 }).data).toString(), 'ABCDEFGHIJKLMNOPQRST');
    t.deepEqual(h2.request(B.VIRTIO_BLK_T_GET_ID, 0, { inLen: 20 }).data, new Uint8Array(20));
  } finally {
    h1.close();
    h2.close();
  }
});

// ---- discard and write-zeroes ----

/** Allocated 512-byte blocks of the image (st_blocks). */
const blocks = (h: BlkHarness) => statSync(h.path).blocks;

test('DISCARD punches holes: the bytes read zero and the file gets sparser', async (t) => {
  const h = new BlkHarness({ sizeBytes: 4 * MiB });
  try {
    const before = blocks(h);
    const d = h.request(B.VIRTIO_BLK_T_DISCARD, 0, { out: ranges([{ sector: 0, sectors: 2048 }, { sector: 4096, sectors: 1024 }]) });
    t.is(d.status, OK);
    t.is(d.len, 1);
    const file = h.fileBytes();
    t.is(file.length, 4 * MiB, 'size kept');
    t.true(file.subarray(0, MiB).every((b) => b === 0));
    t.true(file.subarray(2 * MiB, 2 * MiB + 512 * 1024).every((b) => b === 0));
    t.false(file.subarray(MiB, 2 * MiB).every((b) => b === 0), 'between the ranges untouched');
    t.true(blocks(h) <= before - 2 * 1536, `blocks ${before} -> ${blocks(h)}`);
  } finally {
    h.close();
  }
});

test('WRITE_ZEROES zeroes the range, with and without unmap', async (t) => {
  const h = new BlkHarness({ sizeBytes: 4 * MiB });
  try {
    const before = blocks(h);
    const original = h.fileBytes();
    const keep = h.request(B.VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: ranges([{ sector: 8, sectors: 8 }]) });
    t.is(keep.status, OK);
    let file = h.fileBytes();
    t.true(file.subarray(8 * SECTOR, 16 * SECTOR).every((b) => b === 0));
    t.deepEqual(file.subarray(0, 8 * SECTOR), original.subarray(0, 8 * SECTOR), 'before the range untouched');
    t.deepEqual(file.subarray(16 * SECTOR), original.subarray(16 * SECTOR), 'after the range untouched');

    const unmap = h.request(B.VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: ranges([{ sector: 2048, sectors: 2048, flags: B.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP }]) });
    t.is(unmap.status, OK);
    file = h.fileBytes();
    t.true(file.subarray(MiB, 2 * MiB).every((b) => b === 0));
    t.true(blocks(h) < before, 'unmap deallocated');
    t.is(file.length, 4 * MiB);
  } finally {
    h.close();
  }
});

test('WRITE_ZEROES falls back to writing zeros when fallocate is not supported', async (t) => {
  let fallocates = 0;
  let pwrites = 0;
  const h = new BlkHarness({
    sizeBytes: MiB,
    sys: (real) => ({
      ...real,
      fallocate: () => (fallocates++, -1),
      errno: () => 95, // EOPNOTSUPP
      pwrite: (fd, buf, n, off) => (pwrites++, real.pwrite(fd, buf, n, off)),
    }),
  });
  try {
    const r = h.request(B.VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: ranges([{ sector: 100, sectors: 300, flags: 1 }]) });
    t.is(r.status, OK);
    t.is(fallocates, 2, 'PUNCH_HOLE then ZERO_RANGE');
    t.is(pwrites, Math.ceil((300 * SECTOR) / (64 * 1024)));
    const file = h.fileBytes();
    t.true(file.subarray(100 * SECTOR, 400 * SECTOR).every((b) => b === 0));
    t.not(file[400 * SECTOR], 0);
    // A discard on such a filesystem is a successful no-op.
    const before = h.fileBytes();
    t.is(h.request(B.VIRTIO_BLK_T_DISCARD, 0, { out: ranges([{ sector: 0, sectors: 8 }]) }).status, OK);
    t.deepEqual(h.fileBytes(), before);
  } finally {
    h.close();
  }
});

test('DISCARD / WRITE_ZEROES validation', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR });
  try {
    const before = h.fileBytes();
    const dz = (type: number, payload: Uint8Array) => h.request(type, 0, { out: payload }).status;
    const D = B.VIRTIO_BLK_T_DISCARD;
    const Z = B.VIRTIO_BLK_T_WRITE_ZEROES;
    t.is(dz(D, ranges(Array.from({ length: 33 }, (_, i) => ({ sector: i, sectors: 1 })))), IOERR, '33 ranges > max_discard_seg');
    t.is(dz(Z, ranges(Array.from({ length: 33 }, (_, i) => ({ sector: i, sectors: 1 })))), IOERR, '33 ranges > max_write_zeroes_seg');
    t.is(dz(D, new Uint8Array(0)), IOERR, 'no ranges');
    t.is(dz(D, new Uint8Array(20)), IOERR, 'not a multiple of 16 bytes');
    t.is(dz(D, ranges([{ sector: 0, sectors: 1, flags: 1 }])), UNSUPP, 'unmap flag on a discard');
    t.is(dz(Z, ranges([{ sector: 0, sectors: 1, flags: 2 }])), UNSUPP, 'unknown flag');
    t.is(dz(D, ranges([{ sector: 60, sectors: 5 }])), IOERR, 'past the end');
    t.is(dz(Z, ranges([{ sector: 0xffff_ffff_ffff_ffffn, sectors: 1 }])), IOERR, 'sector 2^64-1');
    t.is(dz(D, ranges([{ sector: 0, sectors: B.BLOCK_MAX_DISCARD_SECTORS + 1 }])), IOERR, 'over max_discard_sectors');
    // One bad range fails the request before any range is done.
    t.is(dz(Z, ranges([{ sector: 0, sectors: 8 }, { sector: 64, sectors: 1 }])), IOERR);
    t.deepEqual(h.fileBytes(), before, 'nothing changed');
    t.is(dz(D, ranges(Array.from({ length: 32 }, (_, i) => ({ sector: i * 2, sectors: 1 })))), OK, '32 ranges is the limit');
    t.is(h.request(D, 0, { out: ranges([{ sector: 0, sectors: 1 }]), inLen: 512 }).status, IOERR, 'writable data');
  } finally {
    h.close();
  }
});

test('DISCARD / WRITE_ZEROES the driver did not negotiate are UNSUPP', async (t) => {
  const h = new BlkHarness({ features: C.feature(C.VIRTIO_F_VERSION_1) | C.feature(B.VIRTIO_BLK_F_FLUSH) });
  try {
    const before = h.fileBytes();
    t.is(h.request(B.VIRTIO_BLK_T_DISCARD, 0, { out: ranges([{ sector: 0, sectors: 8 }]) }).status, UNSUPP);
    t.is(h.request(B.VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: ranges([{ sector: 0, sectors: 8 }]) }).status, UNSUPP);
    t.deepEqual(h.fileBytes(), before);
  } finally {
    h.close();
  }
});

// ---- validation: every failure answers without I/O ----

test('validation failures: IOERR with used length 1 and no I/O', async (t) => {
  let io = 0;
  const h = new BlkHarness({
    sizeBytes: 64 * SECTOR,
    sys: (real) => ({
      ...real,
      preadv: (...a) => (io++, real.preadv(...a)),
      pwritev: (...a) => (io++, real.pwritev(...a)),
    }),
  });
  try {
    const before = h.fileBytes();
    const cases: [string, () => Completion][] = [
      ['misaligned read length', () => h.read(0, 100)],
      ['misaligned write length', () => h.write(0, pattern(513))],
      ['read past the end', () => h.read(64, SECTOR)],
      ['read straddling the end', () => h.read(63, 2 * SECTOR)],
      ['write past the end', () => h.write(63, pattern(2 * SECTOR))],
      ['sector 2^64-1', () => h.read(0xffff_ffff_ffff_ffffn, SECTOR)],
      ['sector*512 wraps u64', () => h.read(1n << 55n, SECTOR)],
      ['sector 2^53', () => h.write(2n ** 53n, pattern(SECTOR))],
      ['read with readable data', () => h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 0) }, { bytes: pattern(SECTOR) }, { len: 1, write: true }])],
      ['write with writable data', () => h.submit([{ bytes: header(B.VIRTIO_BLK_T_OUT, 0) }, { len: SECTOR, write: true }, { len: 1, write: true }])],
      ['write data writable, not readable', () => h.submit([{ bytes: header(B.VIRTIO_BLK_T_OUT, 0) }, { len: SECTOR + 1, write: true }])],
      ['header of 8 bytes', () => h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 0).subarray(0, 8) }, { len: 1, write: true }])],
      ['header of 15 bytes in two pieces', () => h.submit([{ bytes: new Uint8Array(7) }, { bytes: new Uint8Array(8) }, { len: 1, write: true }])],
      ['no readable part at all', () => h.submit([{ len: SECTOR + 1, write: true }])],
    ];
    for (const [name, run] of cases) {
      const c = run();
      t.is(c.status, IOERR, name);
      t.is(c.len, 1, name);
    }
    t.is(io, 0, 'no preadv/pwritev for any of them');
    t.deepEqual(h.fileBytes(), before);
    t.is(h.device.stats!.guestErrors, cases.length);
    t.is(h.resets, 0, 'bad requests do not break the device');
    t.is(h.read(0, SECTOR).status, OK, 'and it still works');
  } finally {
    h.close();
  }
});

test('a chain with no writable byte for the status goes back with length 0', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR });
  try {
    const before = h.fileBytes();
    // All-readable: the would-be status byte is in a device-readable buffer.
    const a = h.submit([{ bytes: header(B.VIRTIO_BLK_T_OUT, 0) }, { bytes: pattern(SECTOR) }, { bytes: new Uint8Array(1) }]);
    t.is(a.len, 0);
    const b = h.submit([{ bytes: header(B.VIRTIO_BLK_T_FLUSH, 0) }]);
    t.is(b.len, 0);
    // A zero-length writable descriptor is no status byte either.
    const c = h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 0) }, { len: 0, write: true }]);
    t.is(c.len, 0);
    t.deepEqual(h.fileBytes(), before, 'the write did not happen');
    t.is(h.device.stats!.guestErrors, 3);
    t.is(h.resets, 0);
  } finally {
    h.close();
  }
});

test('unknown request types are UNSUPP', withHarness({}, (t, h) => {
  for (const type of [B.VIRTIO_BLK_T_GET_LIFETIME, B.VIRTIO_BLK_T_SECURE_ERASE, 2, 3, 99, 0xffff_ffff]) {
    const r = h.request(type, 0, { inLen: 512 });
    t.is(r.status, UNSUPP, `type ${type}`);
    t.is(r.len, 1);
  }
}));

test('read-only disk: reads work, writes / discard / write-zeroes are IOERR and touch nothing', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR, readOnly: true });
  try {
    const before = h.fileBytes();
    const r = h.read(1, SECTOR);
    t.is(r.status, OK);
    t.deepEqual(r.data, before.subarray(SECTOR, 2 * SECTOR));
    t.is(h.write(1, pattern(SECTOR)).status, IOERR);
    // Even if a (buggy) driver sends them with the feature bits it was never offered.
    t.is(h.request(B.VIRTIO_BLK_T_DISCARD, 0, { out: ranges([{ sector: 0, sectors: 8 }]) }).status, IOERR);
    t.is(h.request(B.VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: ranges([{ sector: 0, sectors: 8 }]) }).status, IOERR);
    t.is(h.request(B.VIRTIO_BLK_T_FLUSH, 0).status, OK, 'flush is fine');
    t.deepEqual(h.fileBytes(), before);
  } finally {
    h.close();
  }
});

// ---- host errors, queue errors, interrupts, batching ----

test('host I/O errors become IOERR, never exceptions', async (t) => {
  const h = new BlkHarness({
    sys: (real) => ({ ...real, preadv: () => -1, pwritev: () => -1, fdatasync: () => -1, errno: () => 5 /* EIO */ }),
  });
  try {
    t.is(h.read(0, SECTOR).status, IOERR);
    t.is(h.read(0, SECTOR).len, 1);
    t.is(h.write(0, pattern(SECTOR)).status, IOERR);
    t.is(h.request(B.VIRTIO_BLK_T_FLUSH, 0).status, IOERR);
    t.is(h.device.stats!.ioErrors, 4);
    t.is(h.resets, 0);
  } finally {
    h.close();
  }
});

test('short transfers and EINTR are retried until done', async (t) => {
  let eintr = 2;
  let lastErr = 0;
  const h = new BlkHarness({
    sys: (real) => ({
      ...real,
      // Transfer one iovec at a time (a short count), after failing twice with EINTR.
      preadv: (fd, iov, _n, off) => (eintr-- > 0 ? ((lastErr = 4), -1) : real.preadv(fd, iov, 1, off)),
      pwritev: (fd, iov, _n, off) => real.pwritev(fd, iov, 1, off),
      errno: () => lastErr,
    }),
  });
  try {
    const data = pattern(3 * SECTOR, 4);
    const w = h.submit([{ bytes: header(B.VIRTIO_BLK_T_OUT, 1) }, { bytes: data.subarray(0, 700) }, { bytes: data.subarray(700, 1000) }, { bytes: data.subarray(1000) }, { len: 1, write: true }]);
    t.is(w.status, OK);
    t.deepEqual(h.fileBytes().subarray(SECTOR, 4 * SECTOR), data);
    const r = h.submit([{ bytes: header(B.VIRTIO_BLK_T_IN, 1) }, { len: 100, write: true }, { len: 1436, write: true }, { len: 1, write: true }]);
    t.is(r.status, OK);
    t.deepEqual(new Uint8Array([...h.memory.read(r.bufs[1]!.addr, 100), ...h.memory.read(r.bufs[2]!.addr, 1436)]), data);
  } finally {
    h.close();
  }
});

test('reads past the end of a shrunken file return zeros', async (t) => {
  const h = new BlkHarness({ sizeBytes: 8 * SECTOR });
  try {
    const { truncateSync } = await import('node:fs');
    truncateSync(h.path, 3 * SECTOR + 100);
    const before = h.fileBytes();
    const r = h.read(2, 4 * SECTOR);
    t.is(r.status, OK);
    t.deepEqual(r.data.subarray(0, SECTOR + 100), before.subarray(2 * SECTOR));
    t.true(r.data.subarray(SECTOR + 100).every((b) => b === 0));
  } finally {
    h.close();
  }
});

test('a broken queue asks for DEVICE_NEEDS_RESET once and the device stops; queueNotify never throws', withHarness({}, (t, h) => {
  t.is(h.read(0, SECTOR).status, OK);
  h.driver.setAvailIdx(h.driver.availIdx + 300); // more than the queue size ahead: avail-idx error
  t.notThrows(() => {
    h.device.queueNotify(0);
    h.device.queueNotify(0);
    h.device.queueNotify(5);
  });
  t.is(h.resets, 1);
}));

test('a bad descriptor in a chain (buffer outside RAM) also resets; other queue indexes are ignored', async (t) => {
  const h = new BlkHarness({});
  try {
    const head = h.add([{ addr: 0x10000, len: 16 }, { addr: 0x20000, len: 1, write: true }]);
    h.driver.writeDesc(head, { addr: 0xffff_ffff_0000n, len: 16, flags: C.VIRTQ_DESC_F_NEXT, next: 1 });
    h.driver.kick();
    t.notThrows(() => h.device.queueNotify(0));
    t.is(h.resets, 1);
  } finally {
    h.close();
  }
});

test('one interrupt per batch; none when the driver set NO_INTERRUPT', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR });
  try {
    for (let i = 0; i < 5; i++) h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_IN, i) }, { len: SECTOR, write: true }, { len: 1, write: true }]));
    h.driver.kick();
    h.device.queueNotify(0);
    const used = h.driver.used();
    t.is(used.length, 5);
    t.true(used.every((u) => u.len === SECTOR + 1));
    t.is(h.signals, 1);

    h.device.queueNotify(0);
    t.is(h.signals, 1, 'nothing new: no interrupt');

    h.driver.setNoInterrupt(true);
    h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, write: true }]));
    h.driver.kick();
    h.device.queueNotify(0);
    t.is(h.driver.used().length, 1);
    t.is(h.signals, 1);
  } finally {
    h.close();
  }
});

test('EVENT_IDX: the device re-arms avail_event after draining', async (t) => {
  const h = new BlkHarness({ sizeBytes: 64 * SECTOR, eventIdx: true });
  try {
    h.driver.setUsedEvent(0);
    for (let i = 0; i < 3; i++) h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, write: true }]));
    h.driver.kick();
    h.device.queueNotify(0);
    t.is(h.driver.used().length, 3);
    t.is(h.driver.availEvent, 3, 'kick me when entry 3 is published');
    t.is(h.signals, 1);
  } finally {
    h.close();
  }
});

test('at most a queue size of requests per notification; the wakeup brings the device back', async (t) => {
  let arms = 0;
  let onWake: (() => void) | null = null;
  const wakeup = {
    watch: (_fds: unknown, cb: () => void) => void (onWake = cb),
    unwatch: () => void (onWake = null),
    arm: () => void arms++,
    close: () => {},
  };
  // A guest that keeps the queue full: each completed flush is immediately replaced by a new one.
  let refills = 10;
  let h!: BlkHarness;
  h = new BlkHarness({
    queueSize: 8,
    wakeup,
    backend: (file) => ({
      ...file,
      readv: file.readv.bind(file),
      writev: file.writev.bind(file),
      discard: file.discard.bind(file),
      writeZeroes: file.writeZeroes.bind(file),
      flush: () => {
        if (refills-- > 0) {
          h.driver.used();
          h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, write: true }]));
          h.driver.kick();
        }
      },
    }),
  });
  try {
    for (let i = 0; i < 3; i++) h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, write: true }]));
    h.driver.kick();
    h.device.queueNotify(0);
    t.is(h.device.stats!.completed, 8, 'stopped after 8 (the queue size)');
    t.is(arms, 1, 'and asked to be called again');
    t.is(h.signals, 1, 'completions so far were signalled');
    onWake!();
    t.is(h.device.stats!.completed, 13, '3 + 10 refills');
    t.is(arms, 1, 'drained: no more wakeups');
    t.is(h.signals, 2);
    h.device.reset();
    t.is(onWake, null, 'reset unwatches');
  } finally {
    h.close();
  }
});

test('reset forgets the queue; notifications after reset do nothing', withHarness({}, (t, h) => {
  h.device.reset();
  h.add(h.place([{ bytes: header(B.VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, write: true }]));
  h.driver.kick();
  h.device.queueNotify(0);
  t.is(h.driver.used().length, 0);
}));
