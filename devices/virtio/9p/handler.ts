/**
 * virtio-9p queue processing (virtio 1.2 §5.3, Linux net/9p/trans_virtio.c):
 * one chain is one request. The T-message is in the chain's readable part
 * (for a zero-copy Twrite: the 23-byte header, then the data pages); the
 * R-message goes into its writable part (for a zero-copy Tread: an 11-byte
 * header area, then the data pages), and the chain goes back with the reply's
 * length, which is also the reply's size field (Linux checks they match).
 *
 * Framing is checked here before the server sees a message: size[4] at least
 * the 7-byte header, within the readable bytes and within msize. A chain too
 * short to hold a tag, or without room for an 11-byte Rlerror, goes back with
 * length 0 (Linux then never completes that request: only a broken driver
 * sends one). A broken queue makes the device ask for DEVICE_NEEDS_RESET.
 *
 * I/O worker thread only. Never throws out of process().
 */
import { log } from '../../../lib/log.js';
import { RateLimitedLog } from '../../../lib/rate-log.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { segmentsLength, sliceSegments, writeChain } from '../queue/chain-io.js';
import type { SplitQueue } from '../queue/split-queue.js';
import { serveQueue } from '../queue/serve.js';
import type { DescriptorChain, Segment } from '../queue/types.js';
import * as P from './constants.js';
import type { P9Server, ReplyContext, ReplyInfo } from './server.js';
import { MessageReader, readHeader, ReplyWriter } from './wire.js';
import { EMSGSIZE } from '../../../lib/sys.js';

const debug = log('virtio:9p');

/** The part of the ActivationContext the handler uses. */
export interface P9QueueContext {
  readonly memory: GuestMemory;
  readonly queue: SplitQueue;
  signalUsed(): void;
  needsReset(): void;
  /** Asks the I/O loop to call process() again soon (backends/wakeup.ts). Without it, process() drains the queue. */
  wakeup?(): void;
}

/** Counters, for tests and diagnostics. */
export interface P9HandlerStats {
  /** Chains returned to the driver. */
  completed: number;
  /** Chains returned with length 0 (no tag to answer, or no room for any reply). */
  dropped: number;
  /** Messages refused at framing (bad size): answered with Rlerror(EINVAL). */
  malformed: number;
}

export class P9Handler {
  readonly stats: P9HandlerStats = { completed: 0, dropped: 0, malformed: 0 };
  private broken = false;
  /** The message being served (msize at most; a Twrite's data is never copied). */
  private readonly message = new Uint8Array(P.P9_MAX_MSIZE);
  private readonly writer = new ReplyWriter();
  private readonly guestLog = new RateLimitedLog(debug, 'guest error');

  constructor(private readonly ctx: P9QueueContext, private readonly server: P9Server) {}

  /**
   * Serves the available requests: at most `queue.size` of them, then (with a
   * wakeup) yields to the I/O loop and continues on the next turn. Interrupts the
   * driver once per batch if it wants one. Never throws.
   */
  process(): void {
    if (this.broken) return;
    const result = serveQueue(this.ctx, 'virtio-9p request queue', (chain) => {
      const n = this.serve(chain);
      this.stats.completed++;
      return n;
    });
    if (result === 'broken') this.broken = true;
  }

  /** Runs one request; returns the reply length written into the chain (0: dropped). */
  private serve(chain: DescriptorChain): number {
    const { memory } = this.ctx;
    if (chain.readableLength < P.P9_HEADER_SIZE || chain.writableLength < P.P9_RLERROR_SIZE) {
      this.stats.dropped++;
      this.guestLog.note('chain %d: %d readable / %d writable bytes hold no request or no reply; returned with length 0', chain.head, chain.readableLength, chain.writableLength);
      return 0;
    }
    const msg = this.message;
    copyIn(memory, chain.readable, msg, P.P9_HEADER_SIZE);
    const { size, type, tag } = readHeader(msg);
    const w = this.writer.begin();
    // Linux rejects a reply whose length reaches msize (p9_check_errors), hence msize - 1.
    const room = Math.min(chain.writableLength, this.server.messageLimit - 1);
    let info: ReplyInfo;
    const limit = this.server.messageLimit;
    if (size < P.P9_HEADER_SIZE || size > chain.readableLength || size > limit) {
      this.stats.malformed++;
      this.guestLog.note('chain %d: message size %d outside [%d, min(%d readable, msize %d)]', chain.head, size, P.P9_HEADER_SIZE, chain.readableLength, limit);
      w.u32(P.EINVAL);
      info = { type: P.P9_RLERROR, inline: 0 };
    } else {
      // A Twrite's data stays in guest memory: only its 23-byte header is copied.
      const isWrite = type === P.P9_TWRITE;
      const copied = isWrite ? Math.min(size, P.P9_TWRITE_HEADER) : size;
      copyIn(memory, chain.readable, msg, copied);
      const writeData: readonly Segment[] = isWrite && size > P.P9_TWRITE_HEADER
        ? sliceSegments(chain.readable, P.P9_TWRITE_HEADER, size - P.P9_TWRITE_HEADER)
        : [];
      const ctx: ReplyContext = {
        memory,
        room,
        writeData,
        dataSegments: (length) => sliceSegments(chain.writable, P.P9_IOHDR_REPLY, length),
      };
      info = this.server.handle(type, new MessageReader(msg.subarray(0, copied), P.P9_HEADER_SIZE), w, ctx);
    }
    if (w.length + info.inline > room) {
      // A variable-size reply (e.g. Rversion into a tiny buffer) that does not fit: say so instead.
      w.truncate(P.P9_HEADER_SIZE);
      w.u32(EMSGSIZE);
      info = { type: P.P9_RLERROR, inline: 0 };
    }
    const total = w.finish(info.type, tag, info.inline);
    writeChain(memory, chain.writable, 0, w.bytes());
    return total;
  }
}

/** Copies the first `length` bytes of the segments into `dst` (the caller checked they hold that many). */
function copyIn(memory: GuestMemory, segs: readonly Segment[], dst: Uint8Array, length: number): void {
  let done = 0;
  for (let i = 0; i < segs.length && done < length; i++) {
    const s = segs[i]!;
    const n = Math.min(s.len, length - done);
    memory.readInto(s.addr, dst.subarray(done, done + n));
    done += n;
  }
  if (done < length) throw new Error(`9p: copyIn of ${length} bytes from ${segmentsLength(segs)}`);
}
