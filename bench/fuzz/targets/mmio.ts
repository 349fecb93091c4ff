/**
 * Fuzz target `mmio`: the virtio-mmio transport's register file
 * (devices/virtio/transport/mmio.ts) as a vCPU sees it, one live transport per
 * episode, with a stand-in I/O worker that acknowledges resets and
 * activations at once. Inputs: register reads and writes of any width and
 * offset, biased to the real registers and to the status sequence a driver
 * follows, with edge values.
 *
 * Oracles: nothing throws; the identification registers never change; the
 * status never holds DEVICE_NEEDS_RESET (the worker always answered: a reset
 * without a cause) and only holds a prefix of ACKNOWLEDGE, DRIVER,
 * FEATURES_OK, DRIVER_OK (plus FAILED); FEATURES_OK only with VERSION_1 and
 * offered features; a reset (status 0) reads back 0 with every queue register
 * cleared; QueueNum is 0 or a power of 2 up to QueueNumMax; queue registers
 * never change while DRIVER_OK is set or the queue is ready; notifications
 * only name existing queues; config reads past the config space read 0.
 * Half the episodes give the transport a register page (the copy a guest
 * reads without exits, devices/virtio/transport/state.ts): then after every
 * step each register word and config word of the page equals what a read
 * that exits answers.
 */
import * as C from '../../../devices/virtio/constants.js';
import { VirtioMmioTransport } from '../../../devices/virtio/transport/mmio.js';
import { MAX_QUEUES, Q_NUM, Q_NUM_MAX, Q_READY, queueSlot, REGISTER_PAGE_BYTES, REQ_ACTIVATE, REQ_RESET, S_CONTROL_REQUEST, S_RESET_DONE, S_STATUS, TransportState } from '../../../devices/virtio/transport/state.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const ACK = C.VIRTIO_STATUS_ACKNOWLEDGE;
const DRV = C.VIRTIO_STATUS_DRIVER;
const FEAT = C.VIRTIO_STATUS_FEATURES_OK;
const OK = C.VIRTIO_STATUS_DRIVER_OK;
const STATUS_STEPS = [ACK, ACK | DRV, ACK | DRV | FEAT, ACK | DRV | FEAT | OK];
const REGS = [
  C.VIRTIO_MMIO_MAGIC_VALUE, C.VIRTIO_MMIO_VERSION, C.VIRTIO_MMIO_DEVICE_ID, C.VIRTIO_MMIO_VENDOR_ID, C.VIRTIO_MMIO_DEVICE_FEATURES,
  C.VIRTIO_MMIO_DEVICE_FEATURES_SEL, C.VIRTIO_MMIO_DRIVER_FEATURES, C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, C.VIRTIO_MMIO_QUEUE_SEL,
  C.VIRTIO_MMIO_QUEUE_NUM_MAX, C.VIRTIO_MMIO_QUEUE_NUM, C.VIRTIO_MMIO_QUEUE_READY, C.VIRTIO_MMIO_QUEUE_NOTIFY, C.VIRTIO_MMIO_INTERRUPT_STATUS,
  C.VIRTIO_MMIO_INTERRUPT_ACK, C.VIRTIO_MMIO_STATUS, C.VIRTIO_MMIO_QUEUE_DESC_LOW, C.VIRTIO_MMIO_QUEUE_DESC_HIGH, C.VIRTIO_MMIO_QUEUE_DRIVER_LOW,
  C.VIRTIO_MMIO_QUEUE_DRIVER_HIGH, C.VIRTIO_MMIO_QUEUE_DEVICE_LOW, C.VIRTIO_MMIO_QUEUE_DEVICE_HIGH, C.VIRTIO_MMIO_SHM_SEL, C.VIRTIO_MMIO_SHM_LEN_LOW,
  C.VIRTIO_MMIO_SHM_BASE_LOW, C.VIRTIO_MMIO_QUEUE_RESET, C.VIRTIO_MMIO_CONFIG_GENERATION,
];
/** Per-queue slots a driver writes (Q_NUM .. Q_DEVICE_HI). */
const Q_DRIVER_SLOTS = 8;

export const mmioTarget: FuzzTarget = {
  name: 'mmio',
  description: 'virtio-mmio register file: random and driver-like accesses vs status, queue-register and reset invariants',
  episode: 10_000,
  create(rng: Rng) {
    const nq = rng.range(1, 4);
    const maxes = Array.from({ length: nq }, () => 2 ** rng.int(16));
    const offered = (BigInt(rng.u32()) << 32n | BigInt(rng.u32())) & ~(1n << 32n);
    const config = rng.bytes(rng.int(65));
    const deviceType = rng.pick([C.VIRTIO_ID_BLOCK, 1, 4, 9, 19, 26]);
    const paged = rng.bool();
    const sab = TransportState.create({ deviceType, queueMaxSizes: maxes, features: offered, config }, { registerPage: paged });
    const page = paged ? new Int32Array(REGISTER_PAGE_BYTES / 4) : null;
    const st = new TransportState(sab, page);
    st.publish();
    const notified: number[] = [];
    const t = new VirtioMmioTransport(sab, {
      kickControl: () => {
        const req = Atomics.exchange(st.s, S_CONTROL_REQUEST, 0);
        if (req & REQ_RESET) Atomics.add(st.s, S_RESET_DONE, 1);
        void (req & REQ_ACTIVATE);
      },
      notifyQueue: (i) => void notified.push(i),
    }, page);
    const offeredAll = offered | C.feature(C.VIRTIO_F_VERSION_1);
    const queueRegs = () => Array.from({ length: nq }, (_, q) => Array.from({ length: Q_DRIVER_SLOTS }, (_, r) => st.queueReg(q, Q_NUM + r)));
    return {
      step(r: Rng) {
        const status0 = Atomics.load(st.s, S_STATUS);
        const regs0 = queueRegs();
        const k = r.int(10);
        let offset: number;
        let size = 4;
        let value = 0;
        let write: boolean;
        if (k < 2) {
          offset = C.VIRTIO_MMIO_STATUS;
          write = true;
          value = r.weighted([[6, r.pick(STATUS_STEPS)], [2, 0], [1, C.VIRTIO_STATUS_FAILED], [1, r.int(256)]]);
        } else if (k < 4) {
          offset = r.pick([C.VIRTIO_MMIO_DRIVER_FEATURES, C.VIRTIO_MMIO_DRIVER_FEATURES_SEL, C.VIRTIO_MMIO_QUEUE_SEL, C.VIRTIO_MMIO_QUEUE_NUM, C.VIRTIO_MMIO_QUEUE_READY]);
          write = true;
          value = offset === C.VIRTIO_MMIO_QUEUE_SEL || offset === C.VIRTIO_MMIO_DRIVER_FEATURES_SEL ? r.weighted([[8, r.int(nq + 1)], [1, r.edgeU32()]])
            : offset === C.VIRTIO_MMIO_QUEUE_NUM ? r.weighted([[4, 2 ** r.int(17)], [1, r.edgeU32()]])
              : offset === C.VIRTIO_MMIO_DRIVER_FEATURES ? r.weighted([[3, r.u32()], [3, 1], [2, Number(offeredAll & 0xffff_ffffn)]]) : r.edgeU32();
        } else {
          offset = r.weighted([[10, r.pick(REGS)], [3, C.VIRTIO_MMIO_CONFIG + r.int(80)], [1, r.int(0x200)]]);
          size = r.weighted([[10, 4], [2, r.pick([1, 2, 8])]]);
          write = r.bool(0.4);
          value = r.edgeU32();
        }
        if (write) t.write(offset, size, value);
        else {
          const v = t.read(offset, size);
          check(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff, `read of 0x${offset.toString(16)} gave ${v}`);
          if (offset >= C.VIRTIO_MMIO_CONFIG && offset - C.VIRTIO_MMIO_CONFIG + size > config.length) check(v === 0, `config read past the config space gave ${v}`);
        }
        // Identification never changes.
        check(t.read(C.VIRTIO_MMIO_MAGIC_VALUE, 4) === C.VIRTIO_MMIO_MAGIC && t.read(C.VIRTIO_MMIO_VERSION, 4) === 2 && t.read(C.VIRTIO_MMIO_DEVICE_ID, 4) === deviceType, 'identification registers changed');
        const status = t.read(C.VIRTIO_MMIO_STATUS, 4);
        check((status & C.VIRTIO_STATUS_DEVICE_NEEDS_RESET) === 0, () => `DEVICE_NEEDS_RESET without a cause (status 0x${status.toString(16)}, after ${write ? 'write' : 'read'} 0x${offset.toString(16)} = 0x${value.toString(16)})`);
        const steps = status & ~C.VIRTIO_STATUS_FAILED;
        check(steps === 0 || STATUS_STEPS.includes(steps), () => `status 0x${status.toString(16)} is not a driver-initialisation prefix`);
        if ((status & FEAT) && !(status0 & FEAT)) {
          const drv = st.driverFeatures;
          check((drv & ~offeredAll) === 0n && (drv & C.feature(C.VIRTIO_F_VERSION_1)) !== 0n, `FEATURES_OK accepted driver features 0x${drv.toString(16)} (offered 0x${offeredAll.toString(16)})`);
        }
        const regs = queueRegs();
        if (write && size === 4 && offset === C.VIRTIO_MMIO_STATUS && (value >>> 0) === 0) {
          check(status === 0, `status reads 0x${status.toString(16)} after a reset`);
          // A reset of a device already in reset (status 0) is a no-op for the transport: only check a real one.
          if (status0 !== 0) for (let q = 0; q < MAX_QUEUES && q < nq; q++) check(regs[q]!.every((x) => x === 0), `queue ${q} registers not cleared by the reset`);
        } else {
          for (let q = 0; q < nq; q++) {
            const frozen = (status0 & OK) !== 0 || st.s[queueSlot(q) + Q_READY] !== 0 && regs0[q]![Q_READY - Q_NUM] !== 0;
            if (frozen) {
              const changed = regs[q]!.some((x, i) => x !== regs0[q]![i] && i !== Q_READY - Q_NUM);
              check(!changed, () => `queue ${q} registers changed while ${(status0 & OK) ? 'DRIVER_OK' : 'ready'}: ${regs0[q]} -> ${regs[q]}`);
            }
          }
        }
        for (let q = 0; q < nq; q++) {
          const num = st.queueReg(q, Q_NUM);
          check(num === 0 || (num <= st.queueReg(q, Q_NUM_MAX) && (num & (num - 1)) === 0), `queue ${q}: QueueNum ${num} (max ${st.queueReg(q, Q_NUM_MAX)})`);
        }
        while (notified.length > 0) { const i = notified.pop()!; check(i < nq, `notifyQueue(${i}) for ${nq} queues`); }
        if (page) {
          for (let off = 0; off + 4 <= C.VIRTIO_MMIO_CONFIG + config.length; off += 4) {
            const exit = t.read(off, 4) >>> 0;
            check((page[off / 4]! >>> 0) === exit, () => `register page word 0x${off.toString(16)} is 0x${(page[off / 4]! >>> 0).toString(16)}, a read answers 0x${exit.toString(16)}`);
          }
        }
      },
      close() {},
    };
  },
};
