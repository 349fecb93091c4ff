import test from 'ava';
import * as C from '../../../../devices/virtio/constants.js';
import { VirtioMmioTransport } from '../../../../devices/virtio/transport/mmio.js';
import { Q_DESC_LO, Q_NUM, REQ_ACTIVATE, REQ_RESET, S_CONTROL_REQUEST, S_RESET_DONE, TransportState } from '../../../../devices/virtio/transport/state.js';
import { decideStatus, STATUS_TRANSITIONS } from '../../../../devices/virtio/status.js';

const ACK = C.VIRTIO_STATUS_ACKNOWLEDGE;
const DRV = C.VIRTIO_STATUS_DRIVER;
const FEAT = C.VIRTIO_STATUS_FEATURES_OK;
const OK = C.VIRTIO_STATUS_DRIVER_OK;

function setup(features = C.feature(C.VIRTIO_F_EVENT_IDX) | 1n, config = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]), worker = { answers: true }) {
  const sab = TransportState.create({ deviceType: C.VIRTIO_ID_BLOCK, queueMaxSizes: [256, 64], features, config });
  const kicks: string[] = [];
  const st = new TransportState(sab);
  const t = new VirtioMmioTransport(sab, {
    kickControl: () => {
      kicks.push('control');
      // Stand in for the I/O worker: acknowledge resets at once (or, with answers false, a stuck worker).
      if (!worker.answers) return;
      const req = Atomics.exchange(st.s, S_CONTROL_REQUEST, 0);
      if (req & REQ_RESET) Atomics.add(st.s, S_RESET_DONE, 1);
      if (req & REQ_ACTIVATE) kicks.push('activate');
    },
    notifyQueue: (i) => kicks.push(`notify:${i}`),
  });
  const r = (off: number) => t.read(off, 4) >>> 0;
  const w = (off: number, v: number) => t.write(off, 4, v);
  return { t, st, kicks, r, w };
}

/** Drives a transport through the normal Linux sequence up to FEATURES_OK. */
function negotiate(x: ReturnType<typeof setup>, driverFeatures = C.feature(C.VIRTIO_F_VERSION_1)) {
  x.w(C.VIRTIO_MMIO_STATUS, ACK);
  x.w(C.VIRTIO_MMIO_STATUS, ACK | DRV);
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES, Number(driverFeatures & 0xffff_ffffn));
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES, Number(driverFeatures >> 32n));
  x.w(C.VIRTIO_MMIO_STATUS, ACK | DRV | FEAT);
}

test('identification registers', (t) => {
  const { r } = setup();
  t.is(r(C.VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
  t.is(r(C.VIRTIO_MMIO_VERSION), 2);
  t.is(r(C.VIRTIO_MMIO_DEVICE_ID), C.VIRTIO_ID_BLOCK);
  t.is(r(C.VIRTIO_MMIO_VENDOR_ID), C.FLINTVM_VIRTIO_VENDOR_ID);
  t.is(r(C.VIRTIO_MMIO_STATUS), 0);
  t.is(r(C.VIRTIO_MMIO_SHM_LEN_LOW), 0xffffffff, 'no shared memory regions');
});

test('64-bit device features through the select register; VERSION_1 is always offered', (t) => {
  const { r, w } = setup(C.feature(C.VIRTIO_F_EVENT_IDX) | 0b101n);
  w(C.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
  t.is(r(C.VIRTIO_MMIO_DEVICE_FEATURES), ((1 << C.VIRTIO_F_EVENT_IDX) | 0b101) >>> 0);
  w(C.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  t.is(r(C.VIRTIO_MMIO_DEVICE_FEATURES), 1, 'bit 32 = VERSION_1');
  w(C.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
  t.is(r(C.VIRTIO_MMIO_DEVICE_FEATURES), 0);
});

test('FEATURES_OK is set only for an acceptable feature set', (t) => {
  const good = setup();
  negotiate(good, C.feature(C.VIRTIO_F_VERSION_1) | 1n);
  t.is(good.r(C.VIRTIO_MMIO_STATUS), ACK | DRV | FEAT);
  t.is(good.st.driverFeatures, C.feature(C.VIRTIO_F_VERSION_1) | 1n);

  const noVersion = setup();
  negotiate(noVersion, 1n);
  t.is(noVersion.r(C.VIRTIO_MMIO_STATUS), ACK | DRV, 'legacy-only driver refused');

  const unoffered = setup();
  negotiate(unoffered, C.feature(C.VIRTIO_F_VERSION_1) | 2n);
  t.is(unoffered.r(C.VIRTIO_MMIO_STATUS), ACK | DRV, 'feature the device did not offer refused');
});

test('driver features cannot change outside negotiation', (t) => {
  const x = setup();
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES, 1);
  t.is(x.st.driverFeatures, 0n, 'before DRIVER');
  negotiate(x);
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES, 1);
  t.is(x.st.driverFeatures, C.feature(C.VIRTIO_F_VERSION_1), 'after FEATURES_OK');
});

test('queue registers: size limits, addresses, ready locks the addresses, nothing after DRIVER_OK', (t) => {
  const x = setup();
  negotiate(x);
  x.w(C.VIRTIO_MMIO_QUEUE_SEL, 1);
  t.is(x.r(C.VIRTIO_MMIO_QUEUE_NUM_MAX), 64);
  x.w(C.VIRTIO_MMIO_QUEUE_NUM, 128); // > max: ignored
  x.w(C.VIRTIO_MMIO_QUEUE_NUM, 48); // not a power of 2: ignored
  t.is(x.st.queueReg(1, 1), 0);
  x.w(C.VIRTIO_MMIO_QUEUE_NUM, 32);
  x.w(C.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
  x.w(C.VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);
  x.w(C.VIRTIO_MMIO_QUEUE_DRIVER_LOW, 0x2000);
  x.w(C.VIRTIO_MMIO_QUEUE_DEVICE_LOW, 0x3000);
  x.w(C.VIRTIO_MMIO_QUEUE_READY, 1);
  x.w(C.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x9000); // ready: ignored
  t.is(x.st.queueReg(1, 1), 32);
  t.is(x.st.queueAddr(1, 3), 0x1_0000_1000);
  t.is(x.st.queueAddr(1, 5), 0x2000);
  t.is(x.st.queueAddr(1, 7), 0x3000);
  t.is(x.r(C.VIRTIO_MMIO_QUEUE_READY), 1);
  x.w(C.VIRTIO_MMIO_QUEUE_SEL, 2); // no such queue
  t.is(x.r(C.VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
  x.w(C.VIRTIO_MMIO_QUEUE_NUM, 16);
  x.w(C.VIRTIO_MMIO_STATUS, ACK | DRV | FEAT | OK);
  x.w(C.VIRTIO_MMIO_QUEUE_SEL, 0);
  x.w(C.VIRTIO_MMIO_QUEUE_NUM, 16);
  t.is(x.st.queueReg(0, 1), 0, 'queue setup after DRIVER_OK ignored');
});

test('DRIVER_OK asks the I/O worker to activate; QueueNotify falls back to the hook', (t) => {
  const x = setup();
  negotiate(x);
  x.w(C.VIRTIO_MMIO_STATUS, ACK | DRV | FEAT | OK);
  t.deepEqual(x.kicks, ['control', 'activate']);
  x.w(C.VIRTIO_MMIO_QUEUE_NOTIFY, 1);
  x.w(C.VIRTIO_MMIO_QUEUE_NOTIFY, 5);
  t.deepEqual(x.kicks.slice(2), ['notify:1']);
});

test('every invalid status transition is ignored', (t) => {
  const all = [0, ACK, ACK | DRV, ACK | DRV | FEAT, ACK | DRV | FEAT | OK];
  let checked = 0;
  for (const from of all) {
    for (let to = 1; to < 64; to++) {
      const d = decideStatus(from, to);
      const allowed = to === from || (STATUS_TRANSITIONS.get(from) ?? []).includes(to);
      t.is(d.kind === 'invalid', !allowed, `0x${from.toString(16)} -> 0x${to.toString(16)}`);
      checked++;
    }
  }
  t.true(checked > 300);
  // And through the register: skipping ACKNOWLEDGE leaves the status alone.
  const x = setup();
  x.w(C.VIRTIO_MMIO_STATUS, DRV);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), 0);
  x.w(C.VIRTIO_MMIO_STATUS, ACK);
  x.w(C.VIRTIO_MMIO_STATUS, ACK | DRV | FEAT | OK);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), ACK);
  t.deepEqual(x.kicks, [], 'no activation from an invalid jump');
});

test('FAILED is always accepted; reset clears every driver register after the I/O worker acknowledges', (t) => {
  const x = setup();
  negotiate(x);
  x.w(C.VIRTIO_MMIO_QUEUE_NUM, 128);
  x.w(C.VIRTIO_MMIO_STATUS, ACK | DRV | FEAT | OK);
  x.w(C.VIRTIO_MMIO_STATUS, C.VIRTIO_STATUS_FAILED);
  t.true((x.r(C.VIRTIO_MMIO_STATUS) & C.VIRTIO_STATUS_FAILED) !== 0);
  const done = Atomics.load(x.st.s, S_RESET_DONE);
  x.w(C.VIRTIO_MMIO_STATUS, 0);
  t.is(Atomics.load(x.st.s, S_RESET_DONE), done + 1, 'the device was reset before the write returned');
  t.is(x.r(C.VIRTIO_MMIO_STATUS), 0);
  t.is(x.st.driverFeatures, 0n);
  t.is(x.st.queueReg(0, 1), 0);
  t.is(x.r(C.VIRTIO_MMIO_QUEUE_NUM_MAX), 256, 'device description survives');
  // The driver can start over (driver unload/reload).
  negotiate(x);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), ACK | DRV | FEAT);
});

test('a reset the I/O worker does not acknowledge stays pending: queue state is kept, status reads DEVICE_NEEDS_RESET', (t) => {
  const worker = { answers: false };
  const x = setup(undefined, undefined, worker);
  negotiate(x);
  x.w(C.VIRTIO_MMIO_QUEUE_SEL, 0);
  x.w(C.VIRTIO_MMIO_QUEUE_NUM, 128);
  x.w(C.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x10000);
  x.w(C.VIRTIO_MMIO_QUEUE_READY, 1);
  x.w(C.VIRTIO_MMIO_STATUS, ACK | DRV | FEAT | OK);
  const done = Atomics.load(x.st.s, S_RESET_DONE);
  // The write returns (after the bounded wait) although the worker never answers.
  x.w(C.VIRTIO_MMIO_STATUS, 0);
  t.is(Atomics.load(x.st.s, S_RESET_DONE), done, 'the stand-in worker did not reset the device');
  t.not(Atomics.load(x.st.s, S_CONTROL_REQUEST) & REQ_RESET, 0, 'the reset request is still there for the worker');
  // The worker may still use the rings: their registers are not cleared, and cannot be changed.
  t.is(x.st.queueReg(0, Q_NUM), 128);
  t.is(x.st.queueAddr(0, Q_DESC_LO), 0x10000);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), C.VIRTIO_STATUS_DEVICE_NEEDS_RESET, 'non-zero: the driver must keep waiting (§4.2.2.1)');
  x.w(C.VIRTIO_MMIO_QUEUE_READY, 0);
  x.w(C.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x20000);
  x.w(C.VIRTIO_MMIO_STATUS, ACK);
  t.is(x.st.queueReg(0, 2), 1, 'QueueReady unchanged');
  t.is(x.st.queueAddr(0, Q_DESC_LO), 0x10000, 'queue address unchanged');
  t.is(x.r(C.VIRTIO_MMIO_STATUS), C.VIRTIO_STATUS_DEVICE_NEEDS_RESET, 'the driver cannot start over yet');
  t.false(x.kicks.includes('activate'));

  // The worker answers late: the next access completes the reset.
  Atomics.exchange(x.st.s, S_CONTROL_REQUEST, 0);
  Atomics.add(x.st.s, S_RESET_DONE, 1);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), 0);
  t.is(x.st.queueReg(0, Q_NUM), 0);
  t.is(x.st.queueAddr(0, Q_DESC_LO), 0);
  t.is(x.st.driverFeatures, 0n);
  worker.answers = true;
  negotiate(x);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), ACK | DRV | FEAT, 'the driver can set the device up again');
});

test('a repeated reset while one is pending completes once the worker answers', (t) => {
  const worker = { answers: false };
  const x = setup(undefined, undefined, worker);
  negotiate(x);
  x.w(C.VIRTIO_MMIO_STATUS, 0);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), C.VIRTIO_STATUS_DEVICE_NEEDS_RESET);
  worker.answers = true;
  x.w(C.VIRTIO_MMIO_STATUS, 0);
  t.is(x.r(C.VIRTIO_MMIO_STATUS), 0);
  t.is(Atomics.load(x.st.s, S_CONTROL_REQUEST), 0);
});

test('interrupt status is acknowledged bit by bit', (t) => {
  const x = setup();
  Atomics.store(x.st.s, 7, C.VIRTIO_MMIO_INT_VRING | C.VIRTIO_MMIO_INT_CONFIG);
  t.is(x.r(C.VIRTIO_MMIO_INTERRUPT_STATUS), 3);
  x.w(C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_INT_VRING);
  t.is(x.r(C.VIRTIO_MMIO_INTERRUPT_STATUS), C.VIRTIO_MMIO_INT_CONFIG);
});

test('config space: little-endian 1/2/4-byte reads, nothing past its end, writes ignored', (t) => {
  const x = setup();
  t.is(x.t.read(C.VIRTIO_MMIO_CONFIG, 1), 1);
  t.is(x.t.read(C.VIRTIO_MMIO_CONFIG + 2, 2), 0x0403);
  t.is(x.t.read(C.VIRTIO_MMIO_CONFIG + 4, 4), 0x08070605);
  t.is(x.t.read(C.VIRTIO_MMIO_CONFIG + 6, 4), 0, 'straddles the end');
  t.is(x.t.read(C.VIRTIO_MMIO_CONFIG + 0x80, 4), 0);
  x.t.write(C.VIRTIO_MMIO_CONFIG, 1, 0xff);
  t.is(x.t.read(C.VIRTIO_MMIO_CONFIG, 1), 1);
});

test('odd widths and unknown registers never throw', (t) => {
  const x = setup();
  for (let off = 0; off < 0x100; off++) {
    for (const size of [1, 2, 4, 8]) {
      t.notThrows(() => x.t.read(off, size));
      if (off !== C.VIRTIO_MMIO_STATUS) t.notThrows(() => x.t.write(off, size, 0xffffffff));
    }
  }
  t.is(x.r(C.VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
});
