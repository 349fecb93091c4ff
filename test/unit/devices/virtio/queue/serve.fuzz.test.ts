/**
 * Property test of the one drain loop every device uses (queue/serve.ts),
 * against the same oracle as split-queue.fuzz.test.ts (RefQueue over
 * generated hostile queue states): serveQueue serves exactly the chains the
 * model pops, in order, each returned through the used ring with the length
 * the device gave; on the first chain the model rejects it stops, returns
 * nothing for that chain, and sets DEVICE_NEEDS_RESET exactly once (the
 * virtio 1.2 §2.1.2 policy); with a wakeup it yields after a queue's worth.
 * It never throws.
 */
import test from 'ava';
import fc from 'fast-check';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import { serveQueue, type DrainResult } from '../../../../../devices/virtio/queue/serve.js';
import { VIRTQ_AVAIL_F_NO_INTERRUPT } from '../../../../../devices/virtio/constants.js';
import { applyCase, fuzzMemory, hostileCaseArb, RefQueue } from '../../../../helpers/virtq-driver.js';

const RUNS = Number(process.env.FLINTVM_QUEUE_FUZZ_RUNS ?? 10_000);

test(`serveQueue on ${RUNS} hostile queue states serves the model's chains, then on a malformed one sets DEVICE_NEEDS_RESET once`, (t) => {
  const memory = fuzzMemory();
  const outcomes: Record<DrainResult, number> = { drained: 0, yielded: 0, broken: 0 };
  let servedTotal = 0;
  fc.assert(fc.property(hostileCaseArb(), fc.boolean(), (c, withWakeup) => {
    const cfg = applyCase(memory, c);
    const queue = new SplitQueue(memory, cfg);
    const ref = new RefQueue(memory, cfg);
    let resets = 0;
    let signals = 0;
    let wakeups = 0;
    const heads: number[] = [];
    const lens: number[] = [];
    const result = serveQueue(
      { queue, signalUsed: () => void signals++, needsReset: () => void resets++, wakeup: withWakeup ? () => void wakeups++ : undefined },
      'fuzz',
      (chain) => {
        if (resets > 0) throw new Error('served a chain after DEVICE_NEEDS_RESET');
        // The model goes second, as in runCase: both then read the same guest bytes.
        const want = ref.pop();
        if (want.kind !== 'ok' || want.head !== chain.head || want.readable.length !== chain.readable.length || want.writable.length !== chain.writable.length) {
          throw new Error(`served chain ${JSON.stringify(chain)}, the model says ${JSON.stringify(want)}`);
        }
        heads.push(chain.head);
        const len = chain.writableLength > 0 ? 1 + (chain.head % chain.writableLength) : 0;
        lens.push(len);
        return len;
      },
    );
    outcomes[result]++;
    servedTotal += heads.length;
    const usedIdx = memory.readU16(cfg.usedAddr + 2);
    if (usedIdx !== heads.length) throw new Error(`used.idx ${usedIdx} after serving ${heads.length} chains`);
    heads.forEach((h, i) => {
      const id = memory.readU32(cfg.usedAddr + 4 + 8 * i);
      const len = memory.readU32(cfg.usedAddr + 8 + 8 * i);
      if (id !== h || len !== lens[i]) throw new Error(`used[${i}] = (${id}, ${len}), served (${h}, ${lens[i]})`);
    });
    if (result === 'broken') {
      if (resets !== 1) throw new Error(`broken with ${resets} resets`);
      // The chain that broke the queue is one the model rejects too.
      const want = ref.pop();
      if (want.kind !== 'error') throw new Error(`broken, but the model's next pop is ${JSON.stringify(want)}`);
    } else if (resets !== 0) {
      throw new Error(`${result} with ${resets} resets`);
    }
    if (result === 'drained' && ref.pop().kind !== 'empty') throw new Error('drained, but the model has more');
    if (result === 'yielded' && (!withWakeup || wakeups !== 1 || heads.length !== c.size)) {
      throw new Error(`yielded after ${heads.length} of size ${c.size}, wakeup ${withWakeup}, ${wakeups} wakeups`);
    }
    if (!withWakeup && wakeups !== 0) throw new Error('a wakeup nobody gave');
    // Without EVENT_IDX and with interrupts wanted, the driver hears about what was served.
    if (heads.length > 0 && !c.eventIdx && (c.availFlags & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0 && signals === 0) {
      throw new Error(`served ${heads.length} chains without an interrupt`);
    }
  }), { numRuns: RUNS, includeErrorInReport: true });
  t.log(`${servedTotal} chains served; outcomes ${JSON.stringify(outcomes)}`);
  // The generator must reach each outcome, or the test proves little.
  t.true(outcomes.broken > RUNS / 10, 'many cases break the queue');
  t.true(outcomes.drained > RUNS / 10, 'many cases drain it');
  t.true(outcomes.yielded > 0, 'some cases yield to the wakeup');
  t.true(servedTotal > RUNS / 10, 'many chains served');
});
