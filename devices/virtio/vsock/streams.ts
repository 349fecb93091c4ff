/**
 * The host-socket side of vsock connections: the connection table, guest data
 * on its way into Unix sockets (zero copy, or a bounded copy while a socket
 * is full), half-close and clean close (virtio 1.2 §5.10.6.4), which socket
 * events to watch, and the deadlines. The virtqueue side (what goes to and
 * comes from the guest) is muxer.ts.
 *
 * I/O worker thread. Host socket failures are ordinary events here: they
 * reset the connection (an RST owed to the guest), never throw.
 */
import { EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT } from '../../../lib/io/epoll.js';
import type { GuestMemory } from '../../../lib/memory/guest-memory.js';
import type { FdWatcher } from '../device.js';
import { readChain } from '../queue/chain-io.js';
import type { Segment } from '../queue/types.js';
import type { VsockSockets } from './backend.js';
import * as V from './constants.js';
import { CTL_CREDIT_UPDATE, CTL_RST, CTL_SHUTDOWN, VsockConnection } from './connection.js';
import { debug } from './log.js';
import { EAGAIN } from '../../../lib/sys.js';

const { VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE: SHUT_RCV, VIRTIO_VSOCK_SHUTDOWN_F_SEND: SHUT_SEND, VIRTIO_VSOCK_SHUTDOWN_MASK: SHUT_BOTH } = V;

/** Counters, for tests and diagnostics. */
export interface VsockStats {
  /** Connections established (both directions). */
  connected: number;
  /** Guest packets dropped or answered with RST because they were malformed or not ours. */
  guestErrors: number;
  /** Connections reset because the guest sent more than its credit. */
  creditViolations: number;
  /** RST packets sent to the guest. */
  rstSent: number;
  /** Replies to packets of no connection dropped because too many were waiting. */
  orphansDropped: number;
  /** Payload bytes guest -> host sockets and host sockets -> guest. */
  bytesToHost: number;
  bytesToGuest: number;
  /** Rx buffers returned unused (too small for a header). */
  badRxBuffers: number;
}

export function newVsockStats(): VsockStats {
  return { connected: 0, guestErrors: 0, creditViolations: 0, rstSent: 0, orphansDropped: 0, bytesToHost: 0, bytesToGuest: 0, badRxBuffers: 0 };
}

export interface StreamsContext {
  readonly fds: FdWatcher;
  readonly sockets: VsockSockets;
  readonly memory: GuestMemory;
  readonly timeouts: V.VsockTimeouts;
  readonly stats: VsockStats;
  now(): number;
  /** Deadlines exist: make sure expire() gets called. */
  needTicks(): void;
  /** Notes a guest mistake (counted and rate-limited). */
  guestError(fmt: string, ...args: unknown[]): void;
}

export class VsockStreams {
  /** Every connection, by connKey(host port, guest port). */
  readonly conns = new Map<string, VsockConnection>();
  /** Connections with a packet for the guest, in round-robin order. */
  readonly rxWant = new Set<VsockConnection>();
  /** Connections with a deadline. */
  private readonly timed = new Set<VsockConnection>();
  /** The buf_alloc of every connection in `conns`, added up (at most VSOCK_DEVICE_BUF_BUDGET + VSOCK_MIN_CONN_BUF_ALLOC each past it). */
  private allocated = 0;

  constructor(private readonly c: StreamsContext) {}

  /** The buf_alloc a new connection gets: VSOCK_CONN_BUF_ALLOC while the device's budget lasts, then what is left of it, at least VSOCK_MIN_CONN_BUF_ALLOC. */
  bufAllocForNew(): number {
    return Math.max(V.VSOCK_MIN_CONN_BUF_ALLOC, Math.min(V.VSOCK_CONN_BUF_ALLOC, V.VSOCK_DEVICE_BUF_BUDGET - this.allocated));
  }

  /** The receive buffers all connections advertise, in bytes (tests, diagnostics). */
  get allocatedBuffers(): number {
    return this.allocated;
  }

  /** Enters a new connection in the table (its key must be free) and counts its buffer. */
  add(conn: VsockConnection): void {
    this.conns.set(conn.key, conn);
    this.allocated += conn.bufAlloc;
  }

  /** Is `conn` still the table's entry for its key? */
  live(conn: VsockConnection): boolean {
    return this.conns.get(conn.key) === conn;
  }

  /** RW from the guest: straight to the socket from guest memory; what it does not take is copied (within credit). */
  guestData(conn: VsockConnection, len: number, payload: readonly Segment[]): void {
    if (conn.state !== 'established' || (conn.guestShut & SHUT_SEND) !== 0 || conn.fd < 0 || conn.sockShutWr) {
      this.c.guestError('RW on connection %s in state %s (guest shutdown 0x%s)', conn.key, conn.state, conn.guestShut.toString(16));
      return this.kill(conn, 'data after the guest shut its sending side, or before the connection was established');
    }
    if (len === 0) return;
    if (conn.overCredit(len)) {
      this.c.stats.creditViolations++;
      this.c.guestError('connection %s: %d bytes beyond the credit we gave (%d pending)', conn.key, len, conn.pendingGuestBytes);
      return this.kill(conn, 'the guest exceeded its credit');
    }
    conn.received(len);
    this.c.stats.bytesToHost += len;
    let n = 0;
    if (!conn.hasPending) {
      n = this.c.sockets.writev(conn.fd, this.c.memory, payload);
      if (n < 0) {
        if (n !== -EAGAIN) return this.kill(conn, `write to the host socket failed (errno ${-n})`);
        n = 0;
      }
      conn.forwarded(n);
    }
    // The rest waits in a copy: the guest's buffer goes back to it right after this packet.
    if (n < len) conn.queue(readChain(this.c.memory, payload, n, len - n), true);
    if (conn.creditUpdateDue()) conn.ctl |= CTL_CREDIT_UPDATE;
  }

  /** SHUTDOWN from the guest: half-close the socket to match (§5.10.6.4: the flags are sticky). */
  guestShutdown(conn: VsockConnection, rawFlags: number): void {
    const flags = rawFlags & SHUT_BOTH;
    const added = flags & ~conn.guestShut;
    conn.guestShut |= flags;
    if (added & SHUT_RCV) {
      conn.dataReady = false;
      if (conn.fd >= 0 && !conn.sockShutRd) {
        // The host peer's further writes fail with EPIPE, as the guest will not read them.
        this.c.sockets.shutdown(conn.fd, 'read');
        conn.sockShutRd = true;
      }
    }
    this.afterDrain(conn);
  }

  /** The guest accepted our REQUEST: tell the host client `OK <host port>\n`, then splice. */
  established(conn: VsockConnection): void {
    conn.state = 'established';
    this.clearDeadline(conn);
    this.c.stats.connected++;
    conn.queue(new TextEncoder().encode(`OK ${conn.hostPort}\n`), false);
    this.flush(conn);
  }

  /** The socket's epoll callback. */
  socketReady(conn: VsockConnection, events: number): void {
    if (conn.fd < 0 || !this.live(conn)) return;
    if (events & EPOLLHUP) conn.hupSeen = true;
    // EPOLLHUP/EPOLLERR come whatever we asked for: they wake whichever direction we are waiting on.
    if ((conn.watched & EPOLLIN) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) conn.dataReady = true;
    if ((conn.watched & EPOLLOUT) && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) this.flush(conn);
    if (this.live(conn)) this.touch(conn);
  }

  /** The host peer will send no more (read returned 0): SHUTDOWN(SEND) to the guest, RECEIVE too if it hung up entirely. */
  hostEof(conn: VsockConnection): void {
    conn.dataReady = false;
    conn.hostShut |= SHUT_SEND | (conn.hupSeen ? SHUT_RCV : 0);
    conn.ctl |= CTL_SHUTDOWN;
    // Having said both, we wait (bounded) for the guest's RST (§5.10.6.4).
    if (conn.hostShut === SHUT_BOTH) this.setDeadline(conn, this.c.timeouts.closeMs);
    this.afterDrain(conn);
  }

  /** After any change: fix the socket's interest, and queue the connection if it has something for the guest. */
  touch(conn: VsockConnection): void {
    this.updateInterest(conn);
    if (conn.wantsRx()) this.rxWant.add(conn);
  }

  /**
   * Resets a connection: closes the socket now and owes the guest an RST
   * (`reason` null: a clean close, not an error). The entry goes once the RST is sent.
   */
  kill(conn: VsockConnection, reason: string | null): void {
    if (reason !== null) debug('connection %s reset: %s', conn.key, reason);
    this.closeSocket(conn);
    conn.dropPending();
    this.clearDeadline(conn);
    conn.state = 'reset';
    conn.ctl = CTL_RST;
    this.rxWant.add(conn);
  }

  /** Forgets a connection at once (closing its socket), with nothing more for the guest. */
  remove(conn: VsockConnection): void {
    this.closeSocket(conn);
    this.clearDeadline(conn);
    this.rxWant.delete(conn);
    if (this.live(conn)) {
      this.conns.delete(conn.key);
      this.allocated -= conn.bufAlloc;
    }
  }

  /** Forgets every connection (reset, transport reset). */
  removeAll(): void {
    for (const conn of [...this.conns.values()]) this.remove(conn);
    this.rxWant.clear();
  }

  setDeadline(conn: VsockConnection, ms: number): void {
    conn.deadline = this.c.now() + ms;
    this.timed.add(conn);
    this.c.needTicks();
  }

  /** Resets the connections whose deadline passed; returns true while other deadlines remain. */
  expire(now: number): boolean {
    for (const conn of [...this.timed]) {
      if (conn.deadline > now) continue;
      this.clearDeadline(conn);
      this.kill(conn, conn.state === 'connecting' ? 'the guest did not answer the connection request' : 'close timed out');
    }
    return this.timed.size > 0;
  }

  /** Writes pending bytes to the socket until it would block. */
  private flush(conn: VsockConnection): void {
    while (conn.hasPending && conn.fd >= 0) {
      const n = this.c.sockets.send(conn.fd, conn.nextPending());
      if (n < 0) {
        if (n === -EAGAIN) break;
        return this.kill(conn, `write to the host socket failed (errno ${-n})`);
      }
      if (n === 0) break;
      conn.consumePending(n);
    }
    if (conn.creditUpdateDue()) conn.ctl |= CTL_CREDIT_UPDATE;
    this.afterDrain(conn);
  }

  /** Once the guest's data is all out: pass the guest's SHUTDOWN(SEND) on, and see whether the connection is done. */
  private afterDrain(conn: VsockConnection): void {
    if (conn.state !== 'established') return;
    if (conn.hasPending) {
      // The guest is gone both ways but the socket is slow to take the rest: bounded patience.
      if (conn.guestShut === SHUT_BOTH && conn.deadline === Infinity) this.setDeadline(conn, this.c.timeouts.closeMs);
      return;
    }
    if ((conn.guestShut & SHUT_SEND) && !conn.sockShutWr && conn.fd >= 0) {
      this.c.sockets.shutdown(conn.fd, 'write');
      conn.sockShutWr = true;
    }
    // Clean disconnect (§5.10.6.4): the guest shut both ways, or both sides stopped sending; we answer RST.
    const bothSent = (conn.guestShut & SHUT_SEND) && (conn.hostShut & SHUT_SEND);
    if (conn.guestShut === SHUT_BOTH || bothSent) this.kill(conn, null);
  }

  /** Watches the socket for exactly what the connection can use now (never for nothing: EPOLLHUP would spin). */
  private updateInterest(conn: VsockConnection): void {
    if (conn.fd < 0) return;
    const want = (conn.wantsRead() ? EPOLLIN : 0) | (conn.hasPending ? EPOLLOUT : 0);
    if (want === conn.watched) return;
    if (want === 0) this.c.fds.unwatch(conn.fd);
    else this.c.fds.watch(conn.fd, want, conn.onReady);
    conn.watched = want;
  }

  private closeSocket(conn: VsockConnection): void {
    if (conn.fd < 0) return;
    if (conn.watched !== 0) this.c.fds.unwatch(conn.fd);
    conn.watched = 0;
    this.c.sockets.close(conn.fd);
    conn.fd = -1;
  }

  private clearDeadline(conn: VsockConnection): void {
    conn.deadline = Infinity;
    this.timed.delete(conn);
  }
}
