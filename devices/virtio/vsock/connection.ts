/**
 * One vsock stream connection (virtio 1.2 §5.10.6.4) between a guest port and
 * a host Unix socket: its state, the credit accounting of both directions
 * (§5.10.6.3), and the bounded copy of guest data the socket has not taken yet.
 *
 * Plain state plus arithmetic: the muxer (muxer.ts) does the socket and queue
 * work. All counters are u32 and wrap, as on the wire. I/O worker thread.
 */
import * as V from './constants.js';

/**
 * - `connecting`: host-initiated; REQUEST sent (or owed) to the guest, waiting for RESPONSE.
 * - `established`: data may flow (subject to shutdowns and credit).
 * - `reset`: the socket is closed and an RST is owed to the guest; the entry goes once it is sent.
 */
export type ConnState = 'connecting' | 'established' | 'reset';

// Control packets owed to the guest (bits of `ctl`), in the order they go out.
export const CTL_RST = 1 << 0;
export const CTL_REQUEST = 1 << 1;
export const CTL_RESPONSE = 1 << 2;
export const CTL_SHUTDOWN = 1 << 3;
export const CTL_CREDIT_UPDATE = 1 << 4;
export const CTL_CREDIT_REQUEST = 1 << 5;

/** A piece of guest data (or our OK line) on its way to the socket: the bytes [off, end) of `data`. */
interface Chunk {
  readonly data: Uint8Array;
  off: number;
  /** End of the bytes queued; data.length - end is room to pack more into (the last chunk only). */
  end: number;
  /** Guest payload (counts towards fwd_cnt), as opposed to our own OK line. */
  readonly counted: boolean;
}

/** The map key of a connection: (host port, guest port). */
export function connKey(hostPort: number, guestPort: number): string {
  return `${hostPort}:${guestPort}`;
}

const u32 = (v: number): number => v >>> 0;

export class VsockConnection {
  readonly key: string;
  state: ConnState;
  /** The host socket, or -1 once closed. Owned by the connection. */
  fd: number;
  /** Control packets owed to the guest (CTL_* bits). */
  ctl = 0;
  /** SHUTDOWN flags the guest sent us (sticky, §5.10.6.4). */
  guestShut = 0;
  /** SHUTDOWN flags we sent (or owe) the guest. */
  hostShut = 0;
  /** shutdown(SHUT_WR) / shutdown(SHUT_RD) done on the socket. */
  sockShutWr = false;
  sockShutRd = false;
  /** The socket reported readable and has not returned EAGAIN since (we do not watch EPOLLIN meanwhile). */
  dataReady = false;
  /** EPOLLHUP seen: the host peer closed both ways. */
  hupSeen = false;
  /** Events currently registered with the FdWatcher (0: not watched). */
  watched = 0;
  /** When (ms, monotonic) the connection is reset unless something happened; Infinity: no deadline. */
  deadline = Infinity;

  // Guest -> host (we are the receiver): what we advertise.
  /** Payload bytes received from the guest (u32, wraps). */
  rxCnt = 0;
  /** Payload bytes written to the socket (u32, wraps): our fwd_cnt. */
  fwdCnt = 0;
  /** The fwd_cnt the guest last saw from us. */
  lastSentFwdCnt = 0;

  // Host -> guest (we are the sender): what the guest advertised.
  /** Payload bytes sent to the guest (u32, wraps): our tx_cnt. */
  txCnt = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  /** A CREDIT_REQUEST was sent since the guest last gave us credit. */
  creditRequested = false;

  private readonly chunks: Chunk[] = [];
  /** Guest payload bytes waiting in `chunks` (bounded by bufAlloc). */
  pendingGuestBytes = 0;
  /** All bytes waiting in `chunks`. */
  pendingBytes = 0;

  /** The socket's epoll callback (made once, so re-watching allocates nothing). */
  onReady: (events: number) => void = () => {};

  /**
   * `bufAlloc`: the receive buffer we advertise for this connection, fixed for
   * its life (at most VSOCK_CONN_BUF_ALLOC; VsockStreams.bufAllocForNew).
   */
  constructor(readonly hostPort: number, readonly guestPort: number, fd: number, state: ConnState, readonly bufAlloc: number = V.VSOCK_CONN_BUF_ALLOC) {
    this.key = connKey(hostPort, guestPort);
    this.fd = fd;
    this.state = state;
  }

  /** Takes the guest's credit fields from any packet of this connection (§5.10.6.3: all carry valid ones). */
  updatePeerCredit(bufAlloc: number, fwdCnt: number): void {
    this.peerBufAlloc = u32(bufAlloc);
    this.peerFwdCnt = u32(fwdCnt);
    if (this.peerCredit() > 0) this.creditRequested = false;
  }

  /**
   * Payload bytes the guest can take now: peer_buf_alloc - (tx_cnt - peer_fwd_cnt).
   * A guest that claims to have forwarded more than we sent (a lie) gets
   * nothing extra: in-flight bytes beyond buf_alloc mean no credit.
   */
  peerCredit(): number {
    const inFlight = u32(this.txCnt - this.peerFwdCnt);
    return inFlight >= this.peerBufAlloc ? 0 : this.peerBufAlloc - inFlight;
  }

  /** Counts `n` payload bytes sent to the guest. */
  sent(n: number): void {
    this.txCnt = u32(this.txCnt + n);
  }

  /** Records that a packet carrying our current fwd_cnt went to the guest. */
  advertised(): void {
    this.lastSentFwdCnt = this.fwdCnt;
    this.ctl &= ~CTL_CREDIT_UPDATE;
  }

  /**
   * True when the guest's picture of our free space (from the last fwd_cnt it
   * saw) has fallen under the threshold and sending our newer fwd_cnt would
   * give it more: then a CREDIT_UPDATE is due.
   */
  creditUpdateDue(): boolean {
    if (this.fwdCnt === this.lastSentFwdCnt) return false;
    const inFlightSeen = u32(this.rxCnt - this.lastSentFwdCnt);
    // Due once the guest sees less than half of our buffer free.
    return this.bufAlloc - Math.min(inFlightSeen, this.bufAlloc) < this.bufAlloc / 2;
  }

  /** Would `n` more guest payload bytes overflow what we advertised? (The guest ignored our credit.) */
  overCredit(n: number): boolean {
    return this.pendingGuestBytes + n > this.bufAlloc;
  }

  /** Counts `n` payload bytes received from the guest. */
  received(n: number): void {
    this.rxCnt = u32(this.rxCnt + n);
  }

  /** Counts `n` guest payload bytes written straight to the socket. */
  forwarded(n: number): void {
    this.fwdCnt = u32(this.fwdCnt + n);
  }

  /**
   * Queues bytes for the socket (a copy the caller made, which may be kept;
   * `counted`: guest payload, which counts towards fwd_cnt). Small pieces are
   * packed: they fill the room left in the last chunk, and a new chunk is at
   * least VSOCK_PENDING_CHUNK_BYTES, so every chunk but the last holds at
   * least that much.
   */
  queue(data: Uint8Array, counted: boolean): void {
    if (data.length === 0) return;
    this.pendingBytes += data.length;
    if (counted) this.pendingGuestBytes += data.length;
    let rest = data;
    const last = this.chunks[this.chunks.length - 1];
    if (last && last.counted === counted && last.end < last.data.length) {
      const n = Math.min(last.data.length - last.end, rest.length);
      last.data.set(rest.subarray(0, n), last.end);
      last.end += n;
      rest = rest.subarray(n);
      if (rest.length === 0) return;
    }
    if (rest.length >= V.VSOCK_PENDING_CHUNK_BYTES) {
      // Kept as is, unless its head went into the last chunk: then copied, so no dead bytes stay allocated.
      const own = rest.length === data.length ? rest : rest.slice();
      this.chunks.push({ data: own, off: 0, end: own.length, counted });
      return;
    }
    const packed = new Uint8Array(V.VSOCK_PENDING_CHUNK_BYTES);
    packed.set(rest);
    this.chunks.push({ data: packed, off: 0, end: rest.length, counted });
  }

  /** Chunks waiting for the socket: at most bufAlloc / VSOCK_PENDING_CHUNK_BYTES + 3 (tests, diagnostics). */
  get pendingChunks(): number {
    return this.chunks.length;
  }

  get hasPending(): boolean {
    return this.chunks.length > 0;
  }

  /** The next bytes for the socket (a view; empty when nothing is pending). */
  nextPending(): Uint8Array {
    const c = this.chunks[0];
    return c ? c.data.subarray(c.off, c.end) : new Uint8Array(0);
  }

  /** `n` bytes of nextPending() reached the socket. */
  consumePending(n: number): void {
    const c = this.chunks[0];
    if (!c || n <= 0) return;
    c.off += n;
    this.pendingBytes -= n;
    if (c.counted) {
      this.pendingGuestBytes -= n;
      this.forwarded(n);
    }
    if (c.off >= c.end) this.chunks.shift();
  }

  /** Drops everything pending (the connection is being reset). */
  dropPending(): void {
    this.chunks.length = 0;
    this.pendingBytes = 0;
    this.pendingGuestBytes = 0;
  }

  /** May host data go to the guest now (ignoring whether the socket has any)? */
  canSendData(): boolean {
    return this.state === 'established' && this.fd >= 0
      && (this.hostShut & V.VIRTIO_VSOCK_SHUTDOWN_F_SEND) === 0
      && (this.guestShut & V.VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE) === 0
      && this.peerCredit() > 0;
  }

  /** Does this connection have a packet for the guest's rx queue? */
  wantsRx(): boolean {
    return this.ctl !== 0 || (this.dataReady && this.canSendData());
  }

  /** Should we watch the socket for EPOLLIN (we could forward data and do not know it has some)? */
  wantsRead(): boolean {
    return !this.dataReady && this.canSendData();
  }
}
