/**
 * The vsock connection multiplexer, virtqueue side: the guest's tx packets
 * (virtio 1.2 §5.10.6) dispatched to their connections, the packets the
 * device owes the guest written into rx buffers (round robin over
 * connections), the event queue, and the housekeeping tick. The host-socket
 * side of each connection is streams.ts; host clients before their CONNECT
 * line are handshakes.ts.
 *
 * Bounded everywhere: guest data waits only within the credit we advertised
 * (the connection's buf_alloc, at most VSOCK_CONN_BUF_ALLOC, all of them within
 * VSOCK_DEVICE_BUF_BUDGET; a guest that sends more is reset),
 * host data is read only into the guest's own rx buffers and only within the
 * guest's credit, sockets are not watched for EPOLLIN while there is nowhere
 * to put their data, and replies to packets of no connection are capped.
 *
 * I/O worker thread. Nothing here throws because of guest data: a broken
 * ring makes the device ask for DEVICE_NEEDS_RESET and stop.
 */
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { FdWatcher } from '../device.js';
import { sliceSegments, writeChain } from '../queue/chain-io.js';
import type { SplitQueue } from '../queue/split-queue.js';
import { queueBroken, serveQueue } from '../queue/serve.js';
import type { DescriptorChain, Segment } from '../queue/types.js';
import type { Ticker, VsockSockets } from './backend.js';
import * as V from './constants.js';
import {
  CTL_CREDIT_REQUEST, CTL_CREDIT_UPDATE, CTL_REQUEST, CTL_RESPONSE, CTL_RST, CTL_SHUTDOWN, VsockConnection, connKey,
} from './connection.js';
import { Handshakes } from './handshakes.js';
import { debug } from './log.js';
import { RateLimitedLog } from '../../../lib/rate-log.js';
import { parseTxPacket, writeRxHeader, type VsockHeader } from './packet.js';
import { newVsockStats, VsockStreams, type VsockStats } from './streams.js';
import type { MuxerState } from './snapshot.js';
import { EAGAIN, monotonicMs } from '../../../lib/sys.js';

export type { VsockStats } from './streams.js';

const HOST_CID = BigInt(V.VMADDR_CID_HOST);
const { VSOCK_HDR_SIZE: HDR } = V;

/** What the muxer needs of the activation. */
export interface VsockQueues {
  readonly memory: GuestMemory;
  readonly rx: SplitQueue;
  readonly tx: SplitQueue;
  /** Null when the driver did not enable the event queue (events are then not delivered). */
  readonly event: SplitQueue | null;
  readonly fds: FdWatcher;
  signalUsed(): void;
  needsReset(): void;
}

export interface VsockMuxerOptions {
  readonly guestCid: number;
  /** Guest-initiated connections to port P go to `${udsPath}_${P}`. */
  readonly udsPath: string;
  /** The listening socket at udsPath (not owned: never closed here). */
  readonly listenFd: number;
  readonly timeouts: V.VsockTimeouts;
  /** Monotonic milliseconds (default monotonicMs, the clock of performance.now() without perf_hooks). */
  readonly now?: () => number;
}

export class VsockMuxer {
  readonly stats: VsockStats = newVsockStats();
  private readonly streams: VsockStreams;
  /** RST replies to packets of no connection. */
  private readonly orphans: VsockHeader[] = [];
  private readonly handshakes: Handshakes;
  /** An rx chain popped but not used (nothing to send after all): used first next time. */
  private spareRx: DescriptorChain | null = null;
  private nextPort = V.VSOCK_FIRST_EPHEMERAL_PORT;
  private eventPending = false;
  private broken = false;
  private closed = false;
  private readonly guestCid: bigint;
  private readonly now: () => number;
  private readonly scratch = new Uint8Array(HDR);
  private readonly guestLog = new RateLimitedLog(debug, 'guest error');

  constructor(
    private readonly q: VsockQueues,
    private readonly opts: VsockMuxerOptions,
    private readonly sockets: VsockSockets,
    private readonly ticker: Ticker,
    private readonly wakeup?: () => void,
  ) {
    this.guestCid = BigInt(opts.guestCid);
    this.now = opts.now ?? monotonicMs;
    const needTicks = () => this.ticker.start(this.opts.timeouts.tickMs);
    this.streams = new VsockStreams({
      fds: q.fds, sockets, memory: q.memory, timeouts: opts.timeouts, stats: this.stats, now: this.now, needTicks,
      guestError: (fmt, ...args) => this.guestError(fmt, ...args),
    });
    this.handshakes = new Handshakes({
      fds: q.fds, sockets, listenFd: opts.listenFd, timeoutMs: opts.timeouts.connectLineMs, now: this.now,
      canAccept: () => this.streams.conns.size < V.VSOCK_MAX_CONNECTIONS,
      onConnect: (fd, port) => {
        // The fd is ours now: a stopped muxer must not leak it.
        if (this.closed || this.broken) this.sockets.close(fd);
        else this.entry(() => this.hostConnect(fd, port));
      },
      needTicks,
    });
  }

  /** Live connections (any state). */
  get connectionCount(): number {
    return this.streams.conns.size;
  }

  /** The receive buffers (buf_alloc) all live connections advertise, added up: at most VSOCK_DEVICE_BUF_BUDGET plus VSOCK_MIN_CONN_BUF_ALLOC per connection past it. */
  get advertisedBuffers(): number {
    return this.streams.allocatedBuffers;
  }

  /** Host clients still before their CONNECT line. */
  get handshakeCount(): number {
    return this.handshakes.size;
  }

  /** Guest data held for sockets that have not taken it yet, in bytes, over all connections. */
  get pendingBytes(): number {
    let n = 0;
    for (const c of this.streams.conns.values()) n += c.pendingBytes;
    return n;
  }

  /** The connection of (hostPort, guestPort), for tests and diagnostics. */
  connection(hostPort: number, guestPort: number): VsockConnection | undefined {
    return this.streams.conns.get(connKey(hostPort, guestPort));
  }

  // ---- entry points (each from an fd callback or a queue notification) ----

  /** The driver kicked the tx queue. */
  notifyTx(): void {
    this.entry(() => this.processTx());
  }

  /** The driver kicked the rx queue (new buffers). */
  notifyRx(): void {
    this.entry(() => {});
  }

  /** The driver kicked the event queue (new buffers). */
  notifyEvent(): void {
    this.entry(() => this.processEvent());
  }

  /** The device's wakeup fired: continue where a batch stopped. */
  resume(): void {
    this.entry(() => this.processTx());
  }

  /** The housekeeping tick: enforce deadlines; stop ticking when none is left. */
  tick(): void {
    this.entry(() => {
      const now = this.now();
      const deadlinesLeft = this.streams.expire(now);
      const handshakesLeft = this.handshakes.tick(now);
      if (!deadlinesLeft && !handshakesLeft) this.ticker.stop();
    });
  }

  /**
   * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (§5.10.6.5): every connection is closed
   * on the host side without RSTs (the event tells the driver to drop them all),
   * and the event goes out on the event queue (now, or when a buffer is there).
   */
  transportReset(): void {
    if (this.closed) return;
    this.streams.removeAll();
    this.orphans.length = 0;
    this.eventPending = true;
    this.entry(() => this.processEvent());
  }

  /** For a snapshot (vsock/snapshot.ts): the rx chain held, the next host port, whether the rings broke. Changes nothing. */
  saveState(): MuxerState {
    return { spareRx: this.broken ? null : this.spareRx, nextPort: this.nextPort, broken: this.broken };
  }

  /** A restored muxer, before anything ran: takes `s` (validated by the caller) back; a broken one stays stopped, without asking for a reset again. */
  restoreState(s: MuxerState): void {
    this.spareRx = s.spareRx;
    this.nextPort = s.nextPort;
    if (!s.broken) return;
    this.broken = true;
    this.handshakes.close();
  }

  /** Device reset or dispose: close every socket this muxer owns; touch no guest memory. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.streams.removeAll();
    this.handshakes.close();
    this.spareRx = null;
  }

  /**
   * Runs `fn`, then sends what the guest is owed. A broken ring (QueueError),
   * or any other failure, stops the device until the driver resets it
   * (DEVICE_NEEDS_RESET).
   */
  private entry(fn: () => void): void {
    if (this.closed || this.broken) return;
    try {
      fn();
      if (!this.broken) this.processRx();
    } catch (e) {
      queueBroken([this.q.rx, this.q.tx, this.q.event], this.brokenLink, 'virtio-vsock', e);
    }
  }

  /** What queue/serve.ts's policy calls: stop everything, then DEVICE_NEEDS_RESET. */
  private readonly brokenLink = { signalUsed: () => this.q.signalUsed(), needsReset: () => this.stopForReset() };

  /** The device is broken: close every host socket and stop ticking, then ask the driver for a reset. */
  private stopForReset(): void {
    if (this.broken) return;
    this.broken = true;
    // Close every socket: a readable one nobody serves would make the level-triggered loop spin,
    // and a driver may never reset the device.
    this.streams.removeAll();
    this.handshakes.close();
    this.ticker.stop();
    this.q.needsReset();
  }

  // ---- tx: packets from the guest ----

  /** Handles up to a queue's worth of tx chains, then yields (with a wakeup); each chain goes back with length 0. */
  private processTx(): void {
    serveQueue({ ...this.brokenLink, queue: this.q.tx, wakeup: this.wakeup }, 'virtio-vsock tx queue', (chain) => {
      // The payload is written to the socket or copied before the buffer goes back.
      this.handleTx(chain);
      return 0;
    });
  }

  private handleTx(chain: DescriptorChain): void {
    const pkt = parseTxPacket(this.q.memory, chain, this.guestCid);
    if (pkt.kind === 'drop') {
      this.guestError('tx chain %d dropped: %s', chain.head, pkt.reason);
      return;
    }
    const { hdr } = pkt;
    const conn = this.streams.conns.get(connKey(hdr.dstPort, hdr.srcPort));
    if (pkt.kind === 'reset') {
      this.guestError('tx chain %d: %s', chain.head, pkt.reason);
      // A malformed packet of a live stream: that stream has lost data, so it is reset.
      if (conn && hdr.type === V.VIRTIO_VSOCK_TYPE_STREAM) this.streams.kill(conn, pkt.reason);
      else this.replyRst(hdr);
      return;
    }
    if (!conn) {
      if (hdr.op === V.VIRTIO_VSOCK_OP_REQUEST) this.guestConnect(hdr);
      else this.replyRst(hdr);
      return;
    }
    if (conn.state === 'reset') {
      // Our RST is on its way; the guest's own RST ends the connection without it.
      if (hdr.op === V.VIRTIO_VSOCK_OP_RST) this.streams.remove(conn);
      return;
    }
    conn.updatePeerCredit(hdr.bufAlloc, hdr.fwdCnt);
    this.connPacket(conn, hdr, pkt.payload);
    if (this.streams.live(conn)) this.streams.touch(conn);
  }

  /** A packet of an existing connection (not in reset state). */
  private connPacket(conn: VsockConnection, hdr: VsockHeader, payload: readonly Segment[]): void {
    const st = this.streams;
    switch (hdr.op) {
      case V.VIRTIO_VSOCK_OP_RST:
        st.remove(conn);
        return;
      case V.VIRTIO_VSOCK_OP_RESPONSE:
        if (conn.state !== 'connecting') return st.kill(conn, 'RESPONSE on an established connection');
        st.established(conn);
        return;
      case V.VIRTIO_VSOCK_OP_RW:
        st.guestData(conn, hdr.len, payload);
        return;
      case V.VIRTIO_VSOCK_OP_SHUTDOWN:
        if (conn.state !== 'established') return st.kill(conn, 'SHUTDOWN before the connection was established');
        st.guestShutdown(conn, hdr.flags);
        return;
      case V.VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        // The credit fields were taken above; touch() starts reading again if there is room now.
        return;
      case V.VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        conn.ctl |= CTL_CREDIT_UPDATE;
        return;
      case V.VIRTIO_VSOCK_OP_REQUEST:
        // The guest reused a live (host, guest) port pair: both ends are confused now.
        return st.kill(conn, 'REQUEST for a connection that exists');
      default:
        this.guestError('op %d on connection %s', hdr.op, conn.key);
        return st.kill(conn, `unknown op ${hdr.op}`);
    }
  }

  /** A guest REQUEST for host port P: connect to `${udsPath}_P`; RESPONSE on success, RST on failure. */
  private guestConnect(hdr: VsockHeader): void {
    if (this.streams.conns.size >= V.VSOCK_MAX_CONNECTIONS) {
      debug('guest connection to port %d refused: %d connections already', hdr.dstPort, this.streams.conns.size);
      return this.replyRst(hdr);
    }
    const path = `${this.opts.udsPath}_${hdr.dstPort}`;
    const fd = this.sockets.connect(path);
    if (fd < 0) {
      debug('guest connection to port %d: connect(%s) failed with errno %d; RST', hdr.dstPort, path, -fd);
      return this.replyRst(hdr);
    }
    const conn = this.newConnection(hdr.dstPort, hdr.srcPort, fd, 'established');
    conn.updatePeerCredit(hdr.bufAlloc, hdr.fwdCnt);
    conn.ctl |= CTL_RESPONSE;
    this.stats.connected++;
    this.streams.touch(conn);
  }

  // ---- host-initiated connections ----

  /** A host client sent `CONNECT <port>`: ask the guest (REQUEST), and wait for its answer. */
  private hostConnect(fd: number, guestPort: number): void {
    const hostPort = this.allocPort(guestPort);
    if (hostPort < 0 || this.streams.conns.size >= V.VSOCK_MAX_CONNECTIONS) {
      this.sockets.close(fd);
      return;
    }
    const conn = this.newConnection(hostPort, guestPort, fd, 'connecting');
    conn.ctl |= CTL_REQUEST;
    this.streams.setDeadline(conn, this.opts.timeouts.connectResponseMs);
    this.streams.touch(conn);
  }

  /** An unused host port for a connection to `guestPort` (from 2^30 up, wrapping), or -1. */
  private allocPort(guestPort: number): number {
    for (let tries = 0; tries <= V.VSOCK_MAX_CONNECTIONS; tries++) {
      const p = this.nextPort;
      this.nextPort = p >= V.VSOCK_MAX_PORT - 1 ? V.VSOCK_FIRST_EPHEMERAL_PORT : p + 1;
      if (!this.streams.conns.has(connKey(p, guestPort))) return p;
    }
    return -1;
  }

  private newConnection(hostPort: number, guestPort: number, fd: number, state: 'connecting' | 'established'): VsockConnection {
    const conn = new VsockConnection(hostPort, guestPort, fd, state, this.streams.bufAllocForNew());
    conn.onReady = (events) => this.entry(() => this.streams.socketReady(conn, events));
    this.streams.add(conn);
    return conn;
  }

  // ---- rx: packets to the guest ----

  /** Fills rx buffers with owed packets, round robin over connections, at most a queue's worth per call. */
  private processRx(): void {
    const rx = this.q.rx;
    let budget = rx.size;
    const want = this.streams.rxWant;
    while (this.orphans.length > 0 || want.size > 0) {
      if (budget-- <= 0) {
        this.wakeup?.();
        break;
      }
      const chain = this.takeRxChain();
      if (chain === null) break; // No buffers: the driver's next rx kick brings us back.
      let used: number;
      const orphan = this.orphans.shift();
      if (orphan) {
        used = this.emit(chain, orphan, 0);
        this.stats.rstSent++;
      } else {
        const conn = want.values().next().value as VsockConnection;
        want.delete(conn);
        used = this.fill(conn, chain);
        // Still something to say: back of the line, so one busy stream cannot starve the others.
        if (this.streams.live(conn)) this.streams.touch(conn);
      }
      if (used < 0) this.spareRx = chain;
      else rx.pushUsed(chain.head, used);
    }
    if (rx.needsInterrupt()) this.q.signalUsed();
  }

  /** The next usable rx chain (at least a header's room), or null when the driver has none. */
  private takeRxChain(): DescriptorChain | null {
    const spare = this.spareRx;
    if (spare) {
      this.spareRx = null;
      return spare;
    }
    const rx = this.q.rx;
    for (;;) {
      const chain = rx.pop();
      if (chain === null) {
        if (!rx.enableNotifications()) return null;
        continue;
      }
      if (chain.writableLength >= HDR) return chain;
      this.stats.badRxBuffers++;
      this.guestError('rx chain %d has %d writable bytes, less than a header', chain.head, chain.writableLength);
      rx.pushUsed(chain.head, 0);
    }
  }

  /** Writes the connection's next packet into `chain`; returns the used length, or -1 if it had nothing after all. */
  private fill(conn: VsockConnection, chain: DescriptorChain): number {
    if (conn.ctl & CTL_RST) {
      this.streams.remove(conn);
      this.stats.rstSent++;
      return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_RST, CTL_RST);
    }
    if (conn.ctl & CTL_REQUEST) return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_REQUEST, CTL_REQUEST);
    if (conn.ctl & CTL_RESPONSE) return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_RESPONSE, CTL_RESPONSE);
    if (conn.dataReady && conn.canSendData()) {
      const used = this.readData(conn, chain);
      if (used >= 0) return used;
      // EOF (a SHUTDOWN is owed now), a read error (an RST), or nothing to read after all.
      if (conn.ctl & CTL_RST) return this.fill(conn, chain);
    }
    if (conn.ctl & CTL_SHUTDOWN) return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_SHUTDOWN, CTL_SHUTDOWN, conn.hostShut);
    if (conn.ctl & CTL_CREDIT_UPDATE) return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_CREDIT_UPDATE, CTL_CREDIT_UPDATE);
    if (conn.ctl & CTL_CREDIT_REQUEST) return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_CREDIT_REQUEST, CTL_CREDIT_REQUEST);
    return -1;
  }

  /**
   * Reads host data straight into the chain's payload area, within the guest's
   * credit, and sends it as RW. Returns the used length, or -1 when nothing was
   * read (EOF, EAGAIN, error: the connection's state says which).
   */
  private readData(conn: VsockConnection, chain: DescriptorChain): number {
    const room = chain.writableLength - HDR;
    // A header-only buffer cannot carry data; spend it on our credit state instead (harmless, and it makes progress).
    if (room === 0) return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_CREDIT_UPDATE, CTL_CREDIT_UPDATE);
    const want = Math.min(room, conn.peerCredit(), V.VSOCK_MAX_PKT_PAYLOAD);
    const n = this.sockets.readv(conn.fd, this.q.memory, sliceSegments(chain.writable, HDR, want));
    if (n === 0) {
      this.streams.hostEof(conn);
      return -1;
    }
    if (n < 0) {
      if (n === -EAGAIN) conn.dataReady = false;
      else this.streams.kill(conn, `read from the host socket failed (errno ${-n})`);
      return -1;
    }
    // A short read drained the socket: wait for EPOLLIN rather than read again into EAGAIN.
    if (n < want) conn.dataReady = false;
    conn.sent(n);
    this.stats.bytesToGuest += n;
    if (conn.peerCredit() === 0 && !conn.creditRequested) {
      // Out of credit with (maybe) more to send: ask, in case the guest does not volunteer an update.
      conn.ctl |= CTL_CREDIT_REQUEST;
      conn.creditRequested = true;
    }
    return this.emitConn(conn, chain, V.VIRTIO_VSOCK_OP_RW, 0, 0, n);
  }

  /** Writes a packet of `conn` (our current credit state included) and clears `bit` from what it owes. */
  private emitConn(conn: VsockConnection, chain: DescriptorChain, op: number, bit: number, flags = 0, len = 0): number {
    conn.ctl &= ~bit;
    const used = this.emit(chain, {
      srcCid: HOST_CID, dstCid: this.guestCid, srcPort: conn.hostPort, dstPort: conn.guestPort, len,
      type: V.VIRTIO_VSOCK_TYPE_STREAM, op, flags, bufAlloc: conn.bufAlloc, fwdCnt: conn.fwdCnt,
    }, len);
    conn.advertised();
    return used;
  }

  private emit(chain: DescriptorChain, h: VsockHeader, len: number): number {
    writeRxHeader(this.q.memory, chain, h, this.scratch);
    return HDR + len;
  }

  /** RST in answer to a packet of no connection (never to an RST: no ping-pong). */
  private replyRst(hdr: VsockHeader): void {
    if (hdr.op === V.VIRTIO_VSOCK_OP_RST) return;
    if (this.orphans.length >= V.VSOCK_MAX_ORPHAN_REPLIES) {
      this.stats.orphansDropped++;
      return;
    }
    // The reply keeps the packet's type (as Linux does), so an unknown type cannot hit a stream of the same ports.
    this.orphans.push({
      srcCid: HOST_CID, dstCid: this.guestCid, srcPort: hdr.dstPort, dstPort: hdr.srcPort, len: 0,
      type: hdr.type, op: V.VIRTIO_VSOCK_OP_RST, flags: 0, bufAlloc: 0, fwdCnt: 0,
    });
  }

  // ---- the event queue ----

  private processEvent(): void {
    const q = this.q.event;
    if (!this.eventPending || !q) return;
    for (;;) {
      const chain = q.pop();
      if (chain === null) {
        if (!q.enableNotifications()) return; // Sent when the driver adds a buffer.
        continue;
      }
      if (chain.writableLength < V.VSOCK_EVENT_SIZE) {
        this.guestError('event chain %d has %d writable bytes', chain.head, chain.writableLength);
        q.pushUsed(chain.head, 0);
        continue;
      }
      const ev = new Uint8Array(V.VSOCK_EVENT_SIZE);
      new DataView(ev.buffer).setUint32(0, V.VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, true);
      writeChain(this.q.memory, chain.writable, 0, ev);
      q.pushUsed(chain.head, V.VSOCK_EVENT_SIZE);
      this.eventPending = false;
      if (q.needsInterrupt()) this.q.signalUsed();
      return;
    }
  }

  private guestError(fmt: string, ...args: unknown[]): void {
    this.stats.guestErrors++;
    this.guestLog.note(fmt, ...args);
  }
}
