/**
 * Fuzz target `queue`: the split virtqueue's descriptor-chain walker (direct
 * and indirect tables), two ways per input:
 *
 * - a hostile queue state from test/helpers/virtq-driver.ts (hostileCaseArb,
 *   the generator of the split-queue property test and of the former
 *   bench/queue-fuzz.ts), popped to exhaustion and compared with the
 *   independent reference model RefQueue (runCase): a disagreement, a
 *   non-QueueError exception or a chain outside guest RAM is a failure;
 * - one turn of a live queue that persists for the whole episode (16-bit ring
 *   indices wrap): the driver double offers well-formed chains (direct or
 *   indirect, random segment layouts), the device pops and completes them; the
 *   popped chain must be exactly what was offered, and the used ring must hand
 *   back exactly the heads completed, with their lengths.
 */
import fc from 'fast-check';
import { SplitQueue } from '../../../devices/virtio/queue/split-queue.js';
import { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { fuzzMemory, hostileCaseArb, newFuzzStats, runCase, VirtqDriver, type DriverBuffer, type HostileCase } from '../../../test/helpers/virtq-driver.js';
import type { Rng } from '../prng.js';
import { check, type FuzzTarget } from '../target.js';

const LIVE_SIZE = 16;
const LIVE_MEM = 0x40000;
const DATA_BASE = 0x8000;
const TABLE_BASE = 0x4000;

class LiveQueue {
  readonly memory = GuestMemory.fromBuffers([{ gpa: 0, size: LIVE_MEM }]);
  readonly driver: VirtqDriver;
  readonly queue: SplitQueue;
  /** Chains offered and not yet popped, in avail order. */
  private readonly offered: { head: number; bufs: DriverBuffer[] }[] = [];
  /** Heads popped and not yet completed. */
  private readonly popped: number[] = [];
  /** Completions pushed and not yet seen by the driver. */
  private readonly pushed: { id: number; len: number }[] = [];
  private nextSlot = 0;

  constructor(rng: Rng) {
    const eventIdx = rng.bool();
    this.driver = new VirtqDriver(this.memory, { size: LIVE_SIZE, descAddr: 0, availAddr: 0x1000, usedAddr: 0x2000, eventIdx, indirect: true });
    this.queue = new SplitQueue(this.memory, this.driver.config);
  }

  step(rng: Rng): void {
    const op = rng.int(4);
    if (op === 0 || this.offered.length === 0) this.offer(rng);
    else if (op === 1) this.pop();
    else if (op === 2) this.complete(rng);
    else this.reap();
  }

  private offer(rng: Rng): void {
    const n = rng.range(1, 6);
    const indirect = rng.bool(0.3);
    if (!indirect && this.driver.freeCount < n) return this.reap();
    if (indirect && this.driver.freeCount < 1) return this.reap();
    // Chains not yet popped are the last <= LIVE_SIZE offered: a rotating slot never overwrites their tables.
    const slot = this.nextSlot++ % (2 * LIVE_SIZE);
    const bufs: DriverBuffer[] = [];
    const nRead = rng.int(n + 1);
    for (let i = 0; i < n; i++) bufs.push({ addr: DATA_BASE + slot * 0x1000 + i * 0x100 + rng.int(0x80), len: rng.int(0x81), write: i >= nRead });
    const head = this.driver.addChain(bufs, indirect ? { indirect: true, indirectAddr: TABLE_BASE + slot * 0x80 } : {});
    this.driver.kick();
    this.offered.push({ head, bufs });
  }

  private pop(): void {
    const ch = this.queue.pop();
    const want = this.offered.shift();
    if (!want) return check(ch === null, 'live queue: pop() returned a chain nobody offered');
    check(ch !== null, 'live queue: pop() found no chain after one was offered');
    check(ch.head === want.head, () => `live queue: popped head ${ch.head}, offered ${want.head}`);
    const same = (got: readonly { addr: number; len: number }[], w: DriverBuffer[]) => {
      const nz = w.filter((b) => b.len > 0);
      return got.length === nz.length && got.every((s, i) => s.addr === nz[i]!.addr && s.len === nz[i]!.len);
    };
    check(same(ch.readable, want.bufs.filter((b) => !b.write)) && same(ch.writable, want.bufs.filter((b) => b.write)),
      () => `live queue: chain ${JSON.stringify(ch)} differs from the offered ${JSON.stringify(want.bufs)}`);
    this.popped.push(ch.head);
  }

  private complete(rng: Rng): void {
    if (this.popped.length === 0) return;
    const head = this.popped.splice(rng.int(this.popped.length), 1)[0]!;
    const len = rng.int(0x200);
    this.queue.pushUsed(head, len);
    this.pushed.push({ id: head, len });
  }

  private reap(): void {
    const got = this.driver.used();
    const want = this.pushed.splice(0, this.pushed.length);
    check(got.length === want.length && got.every((u, i) => u.id === want[i]!.id && u.len === want[i]!.len),
      () => `live queue: used ring ${JSON.stringify(got)}, device pushed ${JSON.stringify(want)}`);
  }
}

export const queueTarget: FuzzTarget = {
  name: 'queue',
  description: 'split virtqueue + indirect tables: hostile ring states vs the reference model; a live queue offered well-formed chains',
  episode: 2000,
  create(rng) {
    const memory = fuzzMemory();
    const stats = newFuzzStats();
    const cases: HostileCase[] = fc.sample(hostileCaseArb(), { seed: rng.u32() | 0, numRuns: 2000 });
    const live = new LiveQueue(rng);
    let next = 0;
    return {
      step(r) {
        if (r.bool(0.5)) runCase(memory, cases[next++ % cases.length]!, stats);
        else live.step(r);
      },
      close() {},
    };
  },
};
