/**
 * virtio-9p as a virtio device: config space, features, activation, the
 * request queue (batching, wakeups, broken rings, indirect and EVENT_IDX
 * chains), the main-thread openShareBackend, and fd hygiene.
 */
import test from 'ava';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as C from '../../../../../devices/virtio/constants.js';
import { DeviceNeedsReset } from '../../../../../devices/virtio/device.js';
import type { Wakeup } from '../../../../../devices/virtio/backends/wakeup.js';
import * as P from '../../../../../devices/virtio/9p/constants.js';
import { Virtio9pDevice } from '../../../../../devices/virtio/9p/device.js';
import { create9pDevice, openShareBackend } from '../../../../../devices/virtio/9p/index.js';
import { P9Server } from '../../../../../devices/virtio/9p/server.js';
import { ConfigError } from '../../../../../lib/errors.js';
import { bytes, message, P9Harness, ROOT_FID, text, withHarness } from './p9-harness.js';

test('info: device type 9, one queue of 128, MOUNT_TAG + EVENT_IDX + INDIRECT_DESC, config = le16 length + tag', (t) => {
  const info = Virtio9pDevice.info({ tag: 'hostshare' });
  t.is(info.deviceType, C.VIRTIO_ID_9P);
  t.deepEqual(info.queueMaxSizes, [128]);
  t.is(info.features, C.feature(P.VIRTIO_9P_MOUNT_TAG) | C.feature(C.VIRTIO_F_EVENT_IDX) | C.feature(C.VIRTIO_F_INDIRECT_DESC));
  t.deepEqual([...info.config], [9, 0, ...bytes('hostshare')]);
  const utf8 = Virtio9pDevice.info({ tag: 'é'.repeat(15) });
  t.is(new DataView(utf8.config.buffer).getUint16(0, true), 30, 'the length is in bytes');
});

test('info: tags must be 1..31 bytes without NUL, whitespace or control characters', (t) => {
  for (const tag of ['', 'x'.repeat(32), 'é'.repeat(16), 'a\0b', 'a b', 'tab\t', 'nl\n', '\x7f']) {
    t.throws(() => Virtio9pDevice.info({ tag }), { instanceOf: RangeError }, JSON.stringify(tag));
  }
  t.notThrows(() => Virtio9pDevice.info({ tag: 'x'.repeat(31) }));
  t.notThrows(() => Virtio9pDevice.info({ tag: 'my-share_1.data' }));
});

test('activate without the request queue throws DeviceNeedsReset', withHarness({}, (h, t) => {
  const dev = new Virtio9pDevice({ tag: 't' }, new P9Server(h.fs));
  t.throws(() => dev.activate(h.context(0n, [null])), { instanceOf: DeviceNeedsReset });
}));

test('a broken ring makes the device ask for a reset once, then stay quiet until reset', withHarness({}, (h, t) => {
  h.driver.setAvailIdx(h.driver.size + 5);
  h.device.queueNotify(0);
  t.is(h.resets, 1);
  h.device.queueNotify(0);
  t.is(h.resets, 1);
  h.device.reset();
  t.is(h.fs.fdsInUse, 0);
}));

/** Queues `n` Tstatfs requests of the root as indirect chains (one descriptor each), then kicks. */
function queueStatfs(h: P9Harness, n: number): void {
  for (let i = 0; i < n; i++) {
    const base = 0x400000 + i * 512;
    const msg = message(P.P9_TSTATFS, i, (w) => w.u32(ROOT_FID));
    h.memory.write(base, msg);
    h.driver.addChain([{ addr: base, len: msg.length }, { addr: base + 64, len: 128, write: true }], { indirect: true, indirectAddr: base + 256 });
  }
  h.driver.kick();
}

test('a batch of 128 requests completes in one notification, with one interrupt', withHarness({ indirect: true }, (h, t) => {
  queueStatfs(h, 128);
  const signals = h.signals;
  h.device.queueNotify(0);
  const used = h.driver.used();
  t.is(used.length, 128);
  t.true(used.every((u) => u.len === 67), 'Rstatfs is 67 bytes');
  t.is(h.signals, signals + 1);
}));

test('with a wakeup, the device yields after a queue size of requests and continues when woken', (t) => {
  let armed = 0;
  let onWake: (() => void) | null = null;
  const wakeup: Wakeup = { watch: (_fds, cb) => { onWake = cb; }, unwatch: () => { onWake = null; }, arm: () => void armed++, close: () => {} };
  const h = new P9Harness({ indirect: true, wakeup });
  try {
    armed = 0;
    queueStatfs(h, 128);
    h.device.queueNotify(0);
    t.is(h.driver.used().length, 128);
    t.is(armed, 1, 'yielded after 128');
    t.truthy(onWake);
    queueStatfs(h, 3);
    onWake!();
    t.is(h.driver.used().length, 3, 'the wakeup serves what came meanwhile');
    h.device.reset();
    t.is(onWake, null, 'reset stops watching');
  } finally {
    h.close();
  }
});

test('indirect descriptors and EVENT_IDX work end to end', withHarness({ indirect: true, eventIdx: true }, (h, t) => {
  const f = h.walkTo();
  h.lcreate(f, 'i', P.P9_DOTL_RDWR, 0o644, 0);
  t.is(h.write(f, 0, bytes('indirect'), { indirect: true, splitOut: [23] }), 8);
  t.is(text(h.read(f, 0, 100, { indirect: true, splitIn: [11] })), 'indirect');
  t.true(h.driver.availEvent > 0, 'the device keeps avail_event up to date');
}));

test('Tflush and a synchronous server: nothing is ever in flight', withHarness({}, (h, t) => {
  const r = h.send(P.P9_TFLUSH, (w) => w.u16(1234));
  t.is(r.type, P.P9_RFLUSH);
}));

// ---- openShareBackend (main thread) ----

function tempShare(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-9p-open-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

test('openShareBackend: params for the I/O worker, and close() releases the root fd', (t) => {
  const { dir, cleanup } = tempShare();
  try {
    const before = openFds();
    const b = openShareBackend({ tag: 'data', path: dir, protocol: '9p' }, 'shares[0]');
    t.deepEqual(Object.keys(b.params).sort(), ['readOnly', 'rootFd', 'tag']);
    t.is(b.params.tag, 'data');
    t.false(b.params.readOnly);
    t.true(b.params.rootFd > 2);
    t.deepEqual(structuredClone(b.params), b.params, 'structured-cloneable');
    t.is(openFds(), before + 1);
    b.close();
    b.close();
    t.is(openFds(), before);
    t.true(openShareBackend({ tag: 'ro', path: dir, readOnly: true, protocol: '9p' }, 's').params.readOnly);
  } finally {
    cleanup();
  }
});

test('openShareBackend: config errors name the field and the fix, and leave nothing open', (t) => {
  const { dir, cleanup } = tempShare();
  try {
    writeFileSync(join(dir, 'file'), '');
    const before = openFds();
    const cases: [unknown, RegExp][] = [
      [{ tag: 'a', path: join(dir, 'missing'), protocol: '9p' }, /shares\[2\]\.path: directory .* does not exist/],
      [{ tag: 'a', path: join(dir, 'file'), protocol: '9p' }, /shares\[2\]\.path: .* is not a directory/],
      [{ tag: 'a', path: '', protocol: '9p' }, /shares\[2\]\.path/],
      [{ tag: 'a', path: `${dir}\0x`, protocol: '9p' }, /shares\[2\]\.path.*NUL/],
      [{ tag: '', path: dir, protocol: '9p' }, /shares\[2\]\.tag: .*1 to 31/],
      [{ tag: 'x'.repeat(40), path: dir, protocol: '9p' }, /shares\[2\]\.tag/],
      [{ tag: 'has space', path: dir, protocol: '9p' }, /shares\[2\]\.tag/],
      [{ tag: 'a', path: dir, protocol: 'virtiofs' }, /shares\[2\]\.protocol/],
      [{ tag: 'a', path: dir, protocol: '9p', readOnly: 'yes' }, /shares\[2\]\.readOnly/],
      [null, /shares\[2\]: must be an object/],
    ];
    for (const [share, message] of cases) {
      t.throws(() => openShareBackend(share as never, 'shares[2]'), { instanceOf: ConfigError, message }, JSON.stringify(share));
    }
    t.is(openFds(), before);
  } finally {
    cleanup();
  }
});

test('create9pDevice builds a working device on the params (with an eventfd wakeup), and dispose closes its fds', (t) => {
  const { dir, cleanup } = tempShare();
  try {
    mkdirSync(join(dir, 'sub'));
    const before = openFds();
    const b = openShareBackend({ tag: 'data', path: dir, protocol: '9p' }, 'shares[0]');
    const dev = create9pDevice(b.params);
    t.is(dev.info.deviceType, C.VIRTIO_ID_9P);
    t.deepEqual([...dev.info.config.subarray(2)], [...bytes('data')]);
    dev.dispose();
    b.close();
    t.is(openFds(), before);
  } finally {
    cleanup();
  }
});

test('no fd leaks: a busy session then dispose returns the process to its fd count', (t) => {
  const before = openFds();
  const h = new P9Harness();
  for (let i = 0; i < 50; i++) {
    const f = h.walkTo();
    h.lcreate(f, `f${i}`, P.P9_DOTL_RDWR, 0o644);
    h.write(f, 0, bytes('x'));
    if (i % 2) h.clunk(f);
  }
  h.mkdir(ROOT_FID, 'd');
  const d = h.walkTo('d');
  h.lopen(d, P.P9_DOTL_RDONLY);
  h.setxattr(h.walkTo('f1'), 'user.a', bytes('b'));
  t.true(h.fs.fdsInUse > 25);
  h.close();
  t.is(openFds(), before);
});

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}
