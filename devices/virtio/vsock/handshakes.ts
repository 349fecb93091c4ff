/**
 * Host-initiated vsock connections, before they reach the guest: accepting
 * host clients on the listening socket at `udsPath`, and reading their
 * `CONNECT <port>\n` line (Firecracker's hybrid vsock protocol).
 *
 * The line is peeked first and only its own bytes are consumed, so whatever
 * the client sends after it stays in the socket for the guest. Bounded: at
 * most VSOCK_MAX_HANDSHAKES clients at once, VSOCK_MAX_CONNECT_LINE bytes
 * each, and a deadline for the line. I/O worker thread.
 */
import { EPOLLIN } from '../../../lib/io/epoll.js';
import type { FdWatcher } from '../device.js';
import type { VsockSockets } from './backend.js';
import * as V from './constants.js';
import { debug } from './log.js';
import { findNewline, parseConnectLine } from './packet.js';
import { EAGAIN, EMFILE, ENFILE, ENOBUFS, ENOMEM } from '../../../lib/sys.js';

export interface HandshakesOptions {
  readonly fds: FdWatcher;
  readonly sockets: VsockSockets;
  /** The listening socket (not owned). */
  readonly listenFd: number;
  /** How long a client has to send its line. */
  readonly timeoutMs: number;
  readonly now: () => number;
  /** False when the device is at its connection limit: new clients are closed at once. */
  canAccept(): boolean;
  /** A client asked for guest port `port`; the callee now owns `fd`. */
  onConnect(fd: number, port: number): void;
  /** Deadlines exist: make sure tick() will be called. */
  needTicks(): void;
}

interface Handshake {
  readonly fd: number;
  /** The line so far (consumed from the socket). */
  readonly line: Uint8Array;
  len: number;
  readonly deadline: number;
}

export class Handshakes {
  private readonly pending = new Map<number, Handshake>();
  private readonly peek = new Uint8Array(V.VSOCK_MAX_CONNECT_LINE);
  /** The listener is not watched because the process ran out of fds; tick() retries. */
  private paused = false;
  private closed = false;

  /** Starts watching the listening socket. */
  constructor(private readonly o: HandshakesOptions) {
    this.listen();
  }

  get size(): number {
    return this.pending.size;
  }

  /** Closes clients whose deadline passed, resumes a paused listener; returns true while ticks are still needed. */
  tick(now: number): boolean {
    for (const hs of [...this.pending.values()]) {
      if (hs.deadline <= now) this.drop(hs, 'no CONNECT line in time');
    }
    if (this.paused && !this.closed) this.listen();
    return this.pending.size > 0 || this.paused;
  }

  /** Closes every client and stops watching the listener (which stays open: it is not ours). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const hs of [...this.pending.values()]) this.drop(hs, null);
    if (!this.paused) this.o.fds.unwatch(this.o.listenFd);
  }

  private listen(): void {
    this.paused = false;
    this.o.fds.watch(this.o.listenFd, EPOLLIN, () => this.accept());
  }

  /** Accepts a batch of clients; level-triggered epoll calls again (after other fds) if more are waiting. */
  private accept(): void {
    for (let i = 0; i < V.VSOCK_ACCEPT_BATCH && !this.closed; i++) {
      const fd = this.o.sockets.accept(this.o.listenFd);
      if (fd < 0) {
        if (fd === -EAGAIN) return;
        if (fd === -EMFILE || fd === -ENFILE || fd === -ENOBUFS || fd === -ENOMEM) {
          // The client stays in the backlog, so the listener stays readable: stop watching it for a tick, or we would spin.
          debug('accept on the vsock socket failed (errno %d); pausing the listener', -fd);
          this.o.fds.unwatch(this.o.listenFd);
          this.paused = true;
          this.o.needTicks();
          return;
        }
        continue; // ECONNABORTED and the like: that client is gone, the next may not be.
      }
      if (this.pending.size >= V.VSOCK_MAX_HANDSHAKES || !this.o.canAccept()) {
        debug('vsock host client refused: %d handshakes pending or the connection limit reached', this.pending.size);
        this.o.sockets.close(fd);
        continue;
      }
      const hs: Handshake = { fd, line: new Uint8Array(V.VSOCK_MAX_CONNECT_LINE), len: 0, deadline: this.o.now() + this.o.timeoutMs };
      this.pending.set(fd, hs);
      this.o.fds.watch(fd, EPOLLIN, () => this.read(hs));
      this.o.needTicks();
    }
  }

  /** Reads the line, never past its LF. */
  private read(hs: Handshake): void {
    if (this.pending.get(hs.fd) !== hs) return;
    const room = V.VSOCK_MAX_CONNECT_LINE - hs.len;
    const n = this.o.sockets.recv(hs.fd, this.peek, room, true);
    if (n === -EAGAIN) return;
    if (n <= 0) return this.drop(hs, n === 0 ? 'client closed before its CONNECT line' : `recv failed (errno ${-n})`);
    const nl = findNewline(this.peek, n);
    const take = nl >= 0 ? nl + 1 : n;
    const got = this.o.sockets.recv(hs.fd, hs.line.subarray(hs.len), take, false);
    // The bytes were just peeked, so all of them are there.
    if (got !== take) return this.drop(hs, `recv returned ${got} of ${take} peeked bytes`);
    hs.len += got;
    if (nl < 0) {
      if (hs.len >= V.VSOCK_MAX_CONNECT_LINE) this.drop(hs, `no LF in the first ${V.VSOCK_MAX_CONNECT_LINE} bytes`);
      return;
    }
    const parsed = parseConnectLine(hs.line.subarray(0, hs.len));
    if (parsed.kind === 'bad') return this.drop(hs, parsed.reason);
    this.forget(hs);
    this.o.onConnect(hs.fd, parsed.port);
  }

  private forget(hs: Handshake): void {
    this.o.fds.unwatch(hs.fd);
    this.pending.delete(hs.fd);
  }

  /** Closes a client (it sees the connection closed without an OK line). */
  private drop(hs: Handshake, reason: string | null): void {
    if (reason !== null) debug('vsock host client closed: %s', reason);
    this.forget(hs);
    this.o.sockets.close(hs.fd);
  }
}
