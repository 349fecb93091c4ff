/**
 * The register page of a virtio-mmio transport (devices/virtio/transport/state.ts):
 * what a driver reads from it, without an exit, must be what the transport
 * would answer on an exit, after anything the driver, the device or the I/O
 * worker did. Here the real transport (vCPU side) and the real slot (I/O side)
 * share one state and one page, a plain buffer standing in for the mapped page.
 */
import test from 'ava';
import * as C from '../../../../devices/virtio/constants.js';
import type { ActivationContext, FdWatcher, VirtioDevice, VirtioDeviceInfo } from '../../../../devices/virtio/device.js';
import { VirtioMmioTransport } from '../../../../devices/virtio/transport/mmio.js';
import { VirtioMmioSlot } from '../../../../devices/virtio/transport/slot.js';
import { REGISTER_PAGE_BYTES, restoreTransport, saveTransport, TransportState } from '../../../../devices/virtio/transport/state.js';
import { GuestMemory } from '../../../../lib/memory/guest-memory.js';

const INFO: VirtioDeviceInfo = {
  deviceType: C.VIRTIO_ID_NET, queueMaxSizes: [256, 256, 64], features: C.feature(C.VIRTIO_F_EVENT_IDX) | 0b1_0000_0101n,
  config: Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 9, 9]),
};

/** A device that hands its activation context to the test: the transport is what is tested here. */
class ContextDevice implements VirtioDevice {
  ctx: ActivationContext | null = null;
  constructor(readonly info: VirtioDeviceInfo) {}
  activate(ctx: ActivationContext): void { this.ctx = ctx; }
  queueNotify(): void {}
  reset(): void { this.ctx = null; }
  dispose(): void {}
}

const FDS: FdWatcher = { watch: () => undefined, unwatch: () => undefined };

/** The transport and slot of one device over one page; `answer` false leaves the I/O worker's turns to the test. */
function rig(answer = true) {
  const sab = TransportState.create(INFO, { registerPage: true });
  const page = new Int32Array(REGISTER_PAGE_BYTES / 4);
  new TransportState(sab, page).publish();
  const device = new ContextDevice(INFO);
  const memory = GuestMemory.fromBuffers([{ gpa: 0, size: 0x10_0000 }]);
  let interrupts = 0;
  // The driver's acks of VRING alone that KVM took through the ack ioeventfd: a counter, as the eventfd is.
  const acks = { pending: 0 };
  const takeVringAcks = () => { const had = acks.pending > 0; acks.pending = 0; return had; };
  const slot = new VirtioMmioSlot(sab, device, memory, () => { interrupts++; }, FDS, page, takeVringAcks);
  const worker = { answer };
  const tr = new VirtioMmioTransport(sab, { kickControl: () => { if (worker.answer) slot.onControl(); }, notifyQueue: () => undefined }, page);
  const w = (off: number, v: number) => tr.write(off, 4, v);
  return { sab, page, device, slot, tr, w, worker, acks, interrupts: () => interrupts };
}

/** Every 4-byte register offset and config word: what the transport answers on an exit against what the page holds. */
function mismatches(x: ReturnType<typeof rig>): string[] {
  const out: string[] = [];
  for (let off = 0; off < 0x100 + INFO.config.length - 3; off += 4) {
    const exit = x.tr.read(off, 4) >>> 0;
    const page = x.page[off / 4]! >>> 0;
    if (exit !== page) out.push(`0x${off.toString(16)}: exit ${exit.toString(16)}, page ${page.toString(16)}`);
  }
  return out;
}

/** Linux's sequence up to DRIVER_OK with every queue set up in the first 1 MiB. */
function bringUp(x: ReturnType<typeof rig>): void {
  x.w(C.VIRTIO_MMIO_STATUS, C.VIRTIO_STATUS_ACKNOWLEDGE);
  x.w(C.VIRTIO_MMIO_STATUS, C.VIRTIO_STATUS_ACKNOWLEDGE | C.VIRTIO_STATUS_DRIVER);
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  x.w(C.VIRTIO_MMIO_DRIVER_FEATURES, 1);
  x.w(C.VIRTIO_MMIO_STATUS, C.VIRTIO_STATUS_ACKNOWLEDGE | C.VIRTIO_STATUS_DRIVER | C.VIRTIO_STATUS_FEATURES_OK);
  for (let q = 0; q < INFO.queueMaxSizes.length; q++) {
    x.w(C.VIRTIO_MMIO_QUEUE_SEL, q);
    x.w(C.VIRTIO_MMIO_QUEUE_NUM, 64);
    x.w(C.VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1_0000 * (q + 1));
    x.w(C.VIRTIO_MMIO_QUEUE_DRIVER_LOW, 0x1_0000 * (q + 1) + 0x1000);
    x.w(C.VIRTIO_MMIO_QUEUE_DEVICE_LOW, 0x1_0000 * (q + 1) + 0x2000);
    x.w(C.VIRTIO_MMIO_QUEUE_READY, 1);
  }
  x.w(C.VIRTIO_MMIO_STATUS, C.VIRTIO_STATUS_ACKNOWLEDGE | C.VIRTIO_STATUS_DRIVER | C.VIRTIO_STATUS_FEATURES_OK | C.VIRTIO_STATUS_DRIVER_OK);
}

test('the page answers every read as the transport does: identification, features by selector, queues by selector, status, config', (t) => {
  const x = rig();
  t.deepEqual(mismatches(x), []);
  t.is(x.page[C.VIRTIO_MMIO_MAGIC_VALUE / 4], C.VIRTIO_MMIO_MAGIC);
  t.is(x.page[C.VIRTIO_MMIO_DEVICE_ID / 4], C.VIRTIO_ID_NET);
  x.w(C.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
  t.is(x.page[C.VIRTIO_MMIO_DEVICE_FEATURES / 4], 1, 'the high word: VERSION_1');
  x.w(C.VIRTIO_MMIO_QUEUE_SEL, 2);
  t.is(x.page[C.VIRTIO_MMIO_QUEUE_NUM_MAX / 4], 64);
  x.w(C.VIRTIO_MMIO_QUEUE_SEL, 9);
  t.is(x.page[C.VIRTIO_MMIO_QUEUE_NUM_MAX / 4], 0, 'no such queue');
  t.deepEqual(mismatches(x), []);
  bringUp(x);
  t.truthy(x.device.ctx, 'activated');
  t.is(x.page[C.VIRTIO_MMIO_STATUS / 4], 0xf);
  t.is(x.page[C.VIRTIO_MMIO_QUEUE_READY / 4], 1);
  t.deepEqual(mismatches(x), []);
});

test('InterruptStatus lives in the page: the device sets bits there before it interrupts, the driver\'s ack clears them', (t) => {
  const x = rig();
  bringUp(x);
  x.device.ctx!.signalUsed();
  t.is(x.page[C.VIRTIO_MMIO_INTERRUPT_STATUS / 4], C.VIRTIO_MMIO_INT_VRING);
  t.is(x.interrupts(), 1);
  t.is(x.tr.read(C.VIRTIO_MMIO_INTERRUPT_STATUS, 4), C.VIRTIO_MMIO_INT_VRING, 'an exit reads the same word');
  x.device.ctx!.updateConfig(6, Uint8Array.from([0, 0]));
  t.is(x.page[C.VIRTIO_MMIO_INTERRUPT_STATUS / 4], C.VIRTIO_MMIO_INT_VRING | C.VIRTIO_MMIO_INT_CONFIG);
  x.w(C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_INT_VRING);
  t.is(x.page[C.VIRTIO_MMIO_INTERRUPT_STATUS / 4], C.VIRTIO_MMIO_INT_CONFIG);
  t.is(new TransportState(x.sab, x.page).interruptStatus, C.VIRTIO_MMIO_INT_CONFIG);
  t.deepEqual(mismatches(x), []);
});

test('an ack of VRING that KVM took without an exit clears the bit when the device next drains the acks, never a bit set after it', (t) => {
  const x = rig();
  bringUp(x);
  const isr = () => x.page[C.VIRTIO_MMIO_INTERRUPT_STATUS / 4];
  x.device.ctx!.signalUsed();
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING);
  x.acks.pending++; // the driver read 1 and wrote 1 to InterruptAck: KVM signalled the ack eventfd
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING, 'still set: a driver that looks sees VRING and finds its rings as they are');
  x.device.ctx!.signalUsed();
  t.is(x.acks.pending, 1, 'raising VRING again does not drain the acks: the bit ends set either way');
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING);
  x.device.ctx!.updateConfig(6, Uint8Array.from([1, 0]));
  t.is(x.acks.pending, 0, 'a config interrupt drains them');
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING | C.VIRTIO_MMIO_INT_CONFIG,
    'the drained ack may be of the first VRING or of the second, whose buffer the driver may not have seen: VRING stays set');
  x.w(C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_INT_VRING | C.VIRTIO_MMIO_INT_CONFIG); // an ack of another value exits as before
  t.is(isr(), 0);
  x.device.ctx!.signalUsed();
  x.acks.pending++;
  x.device.ctx!.updateConfig(6, Uint8Array.from([2, 0]));
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING | C.VIRTIO_MMIO_INT_CONFIG, 'an ack after the last VRING raise is as ambiguous to a count');
  x.w(C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_INT_CONFIG);
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING);
  x.acks.pending++; // no VRING raise since the drain: this ack can only be of the bit set now
  x.device.ctx!.updateConfig(6, Uint8Array.from([3, 0]));
  t.is(isr(), C.VIRTIO_MMIO_INT_CONFIG, 'the next drain applies it, then the config bit is set');
  x.w(C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_INT_CONFIG);
  x.device.ctx!.signalUsed();
  x.acks.pending++;
  x.device.ctx!.signalUsed(); // a new buffer after the ack: the bit stays set
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING, 'the new used buffer is not lost');
  t.is(x.slot.saveQueues()!.length, INFO.queueMaxSizes.length);
  t.is(isr(), C.VIRTIO_MMIO_INT_VRING, 'a snapshot drains the acks, and keeps the bit for the same reason');
  x.acks.pending++;
  x.slot.saveQueues();
  t.is(isr(), 0, 'with no raise since the last drain, a snapshot applies a pending ack before the transport is saved');
  t.is(x.interrupts(), 8);
  t.deepEqual(mismatches(x), []);
});

test('a config change shows in the page with a new generation; one that spans two words is refused', (t) => {
  const x = rig();
  bringUp(x);
  const gen = x.page[C.VIRTIO_MMIO_CONFIG_GENERATION / 4]!;
  x.device.ctx!.updateConfig(6, Uint8Array.from([0, 0]));
  t.is(x.page[C.VIRTIO_MMIO_CONFIG_GENERATION / 4], gen + 1);
  t.is(x.page[(C.VIRTIO_MMIO_CONFIG + 4) / 4]! >>> 16, 0, 'bytes 6-7 of the config, in the word at 4');
  t.throws(() => x.device.ctx!.updateConfig(2, Uint8Array.from([1, 2, 3, 4])), { instanceOf: RangeError, message: /spans two aligned words/ });
  t.is(x.page[C.VIRTIO_MMIO_CONFIG_GENERATION / 4], gen + 1, 'nothing changed');
  t.deepEqual(mismatches(x), []);
});

test('DEVICE_NEEDS_RESET from the I/O worker shows in the page', (t) => {
  const x = rig();
  bringUp(x);
  x.device.ctx!.needsReset();
  t.truthy(x.page[C.VIRTIO_MMIO_STATUS / 4]! & C.VIRTIO_STATUS_DEVICE_NEEDS_RESET);
  t.truthy(x.page[C.VIRTIO_MMIO_INTERRUPT_STATUS / 4]! & C.VIRTIO_MMIO_INT_CONFIG);
  t.deepEqual(mismatches(x), []);
});

test('a reset the I/O worker acknowledges late completes in the page, with no further access by the driver', (t) => {
  const x = rig(false);
  x.worker.answer = true;
  bringUp(x);
  x.device.ctx!.signalUsed();
  x.worker.answer = false;
  x.w(C.VIRTIO_MMIO_STATUS, 0); // waits its bounded time for a worker that does not answer
  t.is(x.page[C.VIRTIO_MMIO_STATUS / 4], C.VIRTIO_STATUS_DEVICE_NEEDS_RESET, 'pending: not 0, so a driver that waits for 0 waits');
  x.slot.onControl(); // the worker's late turn
  t.is(x.page[C.VIRTIO_MMIO_STATUS / 4], 0, 'the driver reads 0 from the page now');
  t.is(x.page[C.VIRTIO_MMIO_INTERRUPT_STATUS / 4], 0);
  t.is(x.page[C.VIRTIO_MMIO_QUEUE_READY / 4], 0);
  t.is(x.device.ctx, null, 'the device was reset');
  t.deepEqual(mismatches(x), []);
});

test('random driver and device sequences never leave the page different from what an exit reads', (t) => {
  // A small deterministic generator: the same sequence on every run.
  let seed = 0x2545f491;
  const rnd = (n: number) => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const regs = [
    C.VIRTIO_MMIO_DEVICE_FEATURES_SEL, C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, C.VIRTIO_MMIO_DRIVER_FEATURES, C.VIRTIO_MMIO_QUEUE_SEL,
    C.VIRTIO_MMIO_QUEUE_NUM, C.VIRTIO_MMIO_QUEUE_READY, C.VIRTIO_MMIO_QUEUE_DESC_LOW, C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_STATUS,
    C.VIRTIO_MMIO_QUEUE_NOTIFY, C.VIRTIO_MMIO_CONFIG_GENERATION, C.VIRTIO_MMIO_CONFIG + 4,
  ];
  let steps = 0;
  for (let round = 0; round < 40; round++) {
    const x = rig();
    if (round % 2) bringUp(x);
    for (let i = 0; i < 60; i++, steps++) {
      const op = rnd(10);
      const ctx = x.device.ctx;
      if (op === 0 && ctx) ctx.signalUsed();
      else if (op === 1 && ctx) ctx.updateConfig(6, Uint8Array.from([rnd(2), 0]));
      else if (op === 2 && ctx) ctx.needsReset();
      else if (op === 3) x.w(C.VIRTIO_MMIO_STATUS, rnd(3) === 0 ? 0 : rnd(256));
      else x.w(regs[rnd(regs.length)]!, rnd(4) === 0 ? rnd(0x1_0000) : rnd(4));
      const bad = mismatches(x);
      if (bad.length) return t.fail(`round ${round}, step ${i}: ${bad.join('; ')}`);
    }
  }
  t.is(steps, 40 * 60);
});

test('a snapshot of a paged transport keeps its pending interrupt, and a restore publishes everything', (t) => {
  const x = rig();
  bringUp(x);
  x.device.ctx!.signalUsed();
  const saved = saveTransport(new TransportState(x.sab, x.page));
  t.is(saved.interruptStatus, C.VIRTIO_MMIO_INT_VRING);
  const sab = TransportState.create(INFO, { registerPage: true });
  const page = new Int32Array(REGISTER_PAGE_BYTES / 4);
  restoreTransport(new TransportState(sab, page), JSON.parse(JSON.stringify(saved)), 'virtio[0].transport');
  t.deepEqual([...page], [...x.page], 'the restored page is the saved one, word for word');
});

test('a thread must pass the page of a paged transport, and none for one without', (t) => {
  const paged = TransportState.create(INFO, { registerPage: true });
  t.throws(() => new TransportState(paged), { instanceOf: TypeError, message: /has a register page/ });
  t.throws(() => new TransportState(TransportState.create(INFO), new Int32Array(REGISTER_PAGE_BYTES / 4)), { instanceOf: TypeError, message: /without a register page/ });
  t.throws(() => new TransportState(paged, new Int32Array(16)), { instanceOf: TypeError, message: /4096 bytes/ });
});
