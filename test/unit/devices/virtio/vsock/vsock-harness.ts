/**
 * virtio-vsock without KVM: real host-mapped guest memory, three
 * VirtqDrivers playing Linux's virtio-vsock driver, a small guest socket
 * layer (GuestStack) that speaks the packet protocol the way Linux does
 * (credit, CREDIT_UPDATE as it reads, SHUTDOWN/RST), and a real epoll set
 * (PollWatcher) that the test thread polls between turns of Node's own event
 * loop, on which the host side uses ordinary `net` sockets.
 *
 * Every packet the device sends is checked against the protocol: addresses,
 * type, buf_alloc, and never more data than the guest's advertised credit.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as C from '../../../../../devices/virtio/constants.js';
import type { ActivationContext, FdWatcher } from '../../../../../devices/virtio/device.js';
import { EventfdWakeup } from '../../../../../devices/virtio/backends/wakeup.js';
import { LibcVsockSockets, openUnixListener } from '../../../../../devices/virtio/backends/unix-socket.js';
import type { VsockSockets } from '../../../../../devices/virtio/vsock/backend.js';
import * as V from '../../../../../devices/virtio/vsock/constants.js';
import { VsockDevice } from '../../../../../devices/virtio/vsock/device.js';
import { decodeHeader, encodeHeader, type VsockHeader } from '../../../../../devices/virtio/vsock/packet.js';
import { TimerfdTicker } from '../../../../../devices/virtio/vsock/ticker.js';
import { SplitQueue } from '../../../../../devices/virtio/queue/split-queue.js';
import * as E from '../../../../../lib/io/epoll.js';
import { mapGuestMemory } from '../../../../../lib/memory/host-memory.js';
import type { GuestMemory } from '../../../../../lib/memory/guest-memory.js';
import { VirtqDriver, type DriverBuffer } from '../../../../helpers/virtq-driver.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GUEST_CID = 42;
const GUEST_SIZE = 48 * MiB;
const QSIZE = 256;
const EVENT_QSIZE = 8;
const RX_BASE = 0x10_0000;
const RX_SLOT = 0x2000;
const RX_DATA = 4096;
const TX_BASE = 0x40_0000;
const TX_SLOT = 0x11000; // header + 64 KiB payload, with room to spare
const EVENT_BASE = 0x30_0000;

/** An FdWatcher over a real epoll set, polled (timeout 0) from the test thread. */
export class PollWatcher implements FdWatcher {
  private readonly epfd = E.epollCreate();
  private readonly cbs = new Map<number, (events: number) => void>();
  private readonly buf = new Uint8Array(64 * E.EPOLL_EVENT_SIZE);
  private readonly view = new DataView(this.buf.buffer);
  /** Callbacks dispatched so far. */
  dispatched = 0;

  watch(fd: number, events: number, onReady: (events: number) => void): void {
    const op = this.cbs.has(fd) ? E.EPOLL_CTL_MOD : E.EPOLL_CTL_ADD;
    E.epollCtl(this.epfd, op, fd, events);
    this.cbs.set(fd, onReady);
  }

  unwatch(fd: number): void {
    if (!this.cbs.delete(fd)) return;
    try {
      E.epollCtl(this.epfd, E.EPOLL_CTL_DEL, fd, 0);
    } catch {
      // Already closed: epoll dropped it.
    }
  }

  get watchedFds(): number[] {
    return [...this.cbs.keys()];
  }

  /** Dispatches whatever is ready now; returns the number of callbacks run. */
  poll(): number {
    const n = E.epollWait(this.epfd, this.buf, 64, 0);
    for (let i = 0; i < n; i++) {
      const at = i * E.EPOLL_EVENT_SIZE;
      const events = this.view.getUint32(at, true);
      const fd = this.view.getUint32(at + E.EPOLL_EVENT_DATA, true);
      const cb = this.cbs.get(fd);
      if (!cb) continue;
      this.dispatched++;
      cb(events);
    }
    return n;
  }

  close(): void {
    E.closeFd(this.epfd);
  }
}

/** A packet the device put in an rx buffer. */
export interface RxPacket {
  readonly hdr: VsockHeader;
  readonly payload: Uint8Array;
}

export type HdrFields = Partial<VsockHeader> & { op: number };

/** Guest side of one stream, modelled on Linux's virtio_transport_common. */
export class GuestConn {
  established = false;
  refused = false;
  /** RST received (or sent). */
  reset = false;
  /** SHUTDOWN flags received from the host. */
  peerShut = 0;
  /** SHUTDOWN flags we sent. */
  ownShut = 0;
  readonly received: Uint8Array[] = [];
  /** Everything ever received, consumed or not. */
  readonly history: Uint8Array[] = [];
  receivedBytes = 0;
  /** Bytes of `received` the app has consumed (fwd_cnt). */
  fwdCnt = 0;
  private lastSentFwd = 0;
  private rxCnt = 0;
  txCnt = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  private readonly outQ: Uint8Array[] = [];
  /** When set, received data is consumed (and optionally echoed) at once. */
  autoRead = true;
  echo = false;
  /** Packets of this connection seen, by op. */
  readonly ops: number[] = [];

  constructor(readonly stack: GuestStack, readonly localPort: number, readonly peerPort: number, public bufAlloc: number) {}

  get pendingOut(): number {
    return this.outQ.reduce((n, b) => n + b.length, 0);
  }

  /** Queues data and sends what the host's credit allows. */
  write(data: Uint8Array): void {
    for (let off = 0; off < data.length; off += V.VSOCK_MAX_PKT_PAYLOAD) this.outQ.push(data.subarray(off, off + V.VSOCK_MAX_PKT_PAYLOAD));
    this.pump();
  }

  /** The app reads everything received so far. */
  read(): Uint8Array {
    const all = Buffer.concat(this.received);
    this.received.length = 0;
    this.consume(all.length);
    return all;
  }

  shutdown(flags: number): void {
    this.ownShut |= flags;
    this.send(V.VIRTIO_VSOCK_OP_SHUTDOWN, { flags });
  }

  rst(): void {
    this.reset = true;
    this.send(V.VIRTIO_VSOCK_OP_RST);
    this.stack.forget(this);
  }

  send(op: number, extra: Partial<VsockHeader> = {}, payload?: Uint8Array): void {
    this.lastSentFwd = this.fwdCnt;
    this.stack.sendPacket({ op, srcPort: this.localPort, dstPort: this.peerPort, bufAlloc: this.bufAlloc, fwdCnt: this.fwdCnt, ...extra }, payload);
  }

  /** Sends queued data within credit (like virtio_transport_send_pkt_info). */
  pump(): void {
    while (this.outQ.length > 0 && this.established && !this.reset && this.stack.txRoom() > 0) {
      const credit = this.peerBufAlloc - ((this.txCnt - this.peerFwdCnt) >>> 0);
      if (credit <= 0) return;
      const head = this.outQ[0]!;
      const n = Math.min(head.length, credit);
      this.txCnt = (this.txCnt + n) >>> 0;
      this.send(V.VIRTIO_VSOCK_OP_RW, { len: n }, head.subarray(0, n));
      if (n === head.length) this.outQ.shift();
      else this.outQ[0] = head.subarray(n);
    }
  }

  consume(n: number): void {
    this.fwdCnt = (this.fwdCnt + n) >>> 0;
    // Linux: a credit update once our free space, as the peer last saw it, is under a packet's worth.
    const free = this.bufAlloc - ((this.rxCnt - this.lastSentFwd) >>> 0);
    if (free < V.VSOCK_MAX_PKT_PAYLOAD && !this.reset) this.send(V.VIRTIO_VSOCK_OP_CREDIT_UPDATE);
  }

  /** A packet from the host for this connection. */
  deliver(p: RxPacket): void {
    const h = p.hdr;
    this.ops.push(h.op);
    this.peerBufAlloc = h.bufAlloc;
    this.peerFwdCnt = h.fwdCnt;
    switch (h.op) {
      case V.VIRTIO_VSOCK_OP_RESPONSE:
        this.established = true;
        break;
      case V.VIRTIO_VSOCK_OP_RST:
        if (!this.established) this.refused = true;
        this.reset = true;
        this.stack.forget(this);
        return;
      case V.VIRTIO_VSOCK_OP_RW: {
        this.rxCnt = (this.rxCnt + p.payload.length) >>> 0;
        if (((this.rxCnt - this.fwdCnt) >>> 0) > this.bufAlloc) this.stack.violations.push(`conn ${this.localPort}: host sent beyond our credit`);
        this.received.push(p.payload);
        this.history.push(p.payload);
        this.receivedBytes += p.payload.length;
        if (this.autoRead) {
          const data = this.read();
          if (this.echo && !(this.ownShut & V.VIRTIO_VSOCK_SHUTDOWN_F_SEND)) this.write(data);
        }
        break;
      }
      case V.VIRTIO_VSOCK_OP_SHUTDOWN:
        this.peerShut |= h.flags;
        // Linux: the peer shut both ways and nothing is left to read: answer RST.
        if (this.peerShut === V.VIRTIO_VSOCK_SHUTDOWN_MASK && this.received.length === 0) this.rst();
        break;
      case V.VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        this.send(V.VIRTIO_VSOCK_OP_CREDIT_UPDATE);
        break;
      default:
        break;
    }
    this.pump();
  }

  /** Everything ever received, concatenated. */
  get all(): Buffer {
    return Buffer.concat(this.history);
  }
}

/** The guest's vsock layer: listeners, connections, and the driver's three queues. */
export class GuestStack {
  readonly conns = new Map<string, GuestConn>();
  readonly listeners = new Map<number, (c: GuestConn) => void>();
  /** Ports whose REQUESTs get no answer at all (a hung guest). */
  readonly silent = new Set<number>();
  /** Packets for no connection (and the replies the device sent to our raw packets). */
  readonly unmatched: RxPacket[] = [];
  readonly events: number[] = [];
  readonly violations: string[] = [];
  /** Every packet received, in order (when `record` is set). */
  readonly log: RxPacket[] = [];
  record = false;
  bufAlloc = 256 * KiB;
  autoRefill = true;
  private nextPort = 50_000;
  private readonly rxSlots = new Map<number, number>();
  private readonly txSlots = new Map<number, number>();
  private readonly freeTx: number[] = [];
  private readonly freeRx: number[] = [];

  constructor(readonly h: VsockHarness) {
    for (let i = QSIZE - 1; i >= 0; i--) this.freeTx.push(i);
    for (let i = QSIZE - 1; i >= 0; i--) this.freeRx.push(i);
  }

  listen(port: number, onAccept: (c: GuestConn) => void = () => {}): void {
    this.listeners.set(port, onAccept);
  }

  connect(port: number): GuestConn {
    const c = new GuestConn(this, this.nextPort++, port, this.bufAlloc);
    this.conns.set(`${c.localPort}:${port}`, c);
    c.send(V.VIRTIO_VSOCK_OP_REQUEST);
    return c;
  }

  forget(c: GuestConn): void {
    this.conns.delete(`${c.localPort}:${c.peerPort}`);
  }

  /** Free tx slots. */
  txRoom(): number {
    return this.freeTx.length;
  }

  /** Sends a packet from the guest (addresses default to guest -> host). */
  sendPacket(f: HdrFields, payload?: Uint8Array, opts: { split?: boolean; chainLen?: number } = {}): void {
    const hdr: VsockHeader = {
      srcCid: BigInt(GUEST_CID), dstCid: 2n, srcPort: 0, dstPort: 0, len: payload?.length ?? 0, type: V.VIRTIO_VSOCK_TYPE_STREAM,
      flags: 0, bufAlloc: this.bufAlloc, fwdCnt: 0, ...f,
    };
    const bytes = new Uint8Array(V.VSOCK_HDR_SIZE);
    encodeHeader(hdr, bytes);
    this.sendRaw(bytes, payload ?? new Uint8Array(0), opts);
  }

  /** Places a header and payload in a tx slot as one or two descriptors (`chainLen`: override the payload descriptor's length). */
  sendRaw(hdrBytes: Uint8Array, payload: Uint8Array, opts: { split?: boolean; chainLen?: number } = {}): void {
    const slot = this.freeTx.pop();
    if (slot === undefined) throw new Error('guest out of tx slots');
    const addr = TX_BASE + slot * TX_SLOT;
    const m = this.h.memory;
    const payLen = opts.chainLen ?? payload.length;
    let bufs: DriverBuffer[];
    m.write(addr, hdrBytes);
    if (opts.split === false) {
      m.write(addr + hdrBytes.length, payload);
      bufs = [{ addr, len: hdrBytes.length + payLen }];
    } else {
      m.write(addr + 64, payload);
      bufs = payLen === 0 ? [{ addr, len: hdrBytes.length }] : [{ addr, len: hdrBytes.length }, { addr: addr + 64, len: payLen }];
    }
    const head = this.h.tx.addChain(bufs);
    this.txSlots.set(head, slot);
    this.h.tx.kick();
    this.h.device.queueNotify(V.VSOCK_QUEUE_TX);
    this.reapTx();
  }

  reapTx(): void {
    for (const u of this.h.tx.used()) {
      const s = this.txSlots.get(u.id);
      this.txSlots.delete(u.id);
      if (s !== undefined) this.freeTx.push(s);
    }
  }

  /** Posts up to `n` rx buffers (Linux 6.1 layout: a 44-byte header descriptor and a 4 KiB data one). */
  postRx(n = QSIZE, opts: { single?: boolean; len?: number } = {}): void {
    let posted = 0;
    while (posted < n && this.freeRx.length > 0 && this.h.rx.freeCount >= 2) {
      const slot = this.freeRx.pop()!;
      const addr = RX_BASE + slot * RX_SLOT;
      const bufs: DriverBuffer[] = opts.single
        ? [{ addr, len: opts.len ?? V.VSOCK_HDR_SIZE + RX_DATA, write: true }]
        : [{ addr, len: V.VSOCK_HDR_SIZE, write: true }, { addr: addr + 64, len: opts.len ?? RX_DATA, write: true }];
      const head = this.h.rx.addChain(bufs);
      this.rxSlots.set(head, slot);
      posted++;
    }
    if (posted > 0) {
      this.h.rx.kick();
      this.h.device.queueNotify(V.VSOCK_QUEUE_RX);
    }
  }

  /** Takes the packets the device returned, checks them, and hands them to their connections. */
  collect(): number {
    const used = this.h.rx.used();
    for (const u of used) {
      const slot = this.rxSlots.get(u.id)!;
      this.rxSlots.delete(u.id);
      this.freeRx.push(slot);
      const addr = RX_BASE + slot * RX_SLOT;
      if (u.len < V.VSOCK_HDR_SIZE) {
        this.violations.push(`rx used length ${u.len}`);
        continue;
      }
      const hdr = decodeHeader(this.h.memory.read(addr, V.VSOCK_HDR_SIZE));
      // The split layout keeps the payload at +64; a single-descriptor buffer right after the header.
      const payAt = this.singleRx ? addr + V.VSOCK_HDR_SIZE : addr + 64;
      const payload = this.h.memory.read(payAt, hdr.len);
      this.check(hdr, u.len);
      const p = { hdr, payload: new Uint8Array(payload) };
      if (this.record) this.log.push(p);
      this.dispatch(p);
    }
    if (this.autoRefill && used.length > 0) this.postRx(used.length, this.singleRx ? { single: true } : {});
    return used.length;
  }

  /** Set when postRx uses single-descriptor buffers (so collect() finds the payload). */
  singleRx = false;

  private check(h: VsockHeader, usedLen: number): void {
    const bad = (why: string) => this.violations.push(`${why}: ${JSON.stringify(h, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
    if (h.srcCid !== 2n) bad('src_cid is not 2');
    if (h.dstCid !== BigInt(GUEST_CID)) bad('dst_cid is not the guest');
    if (h.op !== V.VIRTIO_VSOCK_OP_RST && h.type !== V.VIRTIO_VSOCK_TYPE_STREAM) bad('type is not STREAM');
    if (usedLen !== V.VSOCK_HDR_SIZE + h.len) bad(`used length ${usedLen} != 44 + len`);
    if (h.op !== V.VIRTIO_VSOCK_OP_RW && h.len !== 0) bad('control packet with payload');
    if (h.len > V.VSOCK_MAX_PKT_PAYLOAD) bad('payload over 64 KiB');
  }

  private dispatch(p: RxPacket): void {
    const h = p.hdr;
    const key = `${h.dstPort}:${h.srcPort}`;
    const c = this.conns.get(key);
    if (c) return c.deliver(p);
    if (h.op === V.VIRTIO_VSOCK_OP_REQUEST && this.silent.has(h.dstPort)) return;
    if (h.op === V.VIRTIO_VSOCK_OP_REQUEST) {
      const accept = this.listeners.get(h.dstPort);
      if (!accept) {
        // Linux: nobody listens: RST.
        this.sendPacket({ op: V.VIRTIO_VSOCK_OP_RST, srcPort: h.dstPort, dstPort: h.srcPort });
        this.unmatched.push(p);
        return;
      }
      const conn = new GuestConn(this, h.dstPort, h.srcPort, this.bufAlloc);
      conn.peerBufAlloc = h.bufAlloc;
      conn.peerFwdCnt = h.fwdCnt;
      conn.established = true;
      this.conns.set(key, conn);
      conn.send(V.VIRTIO_VSOCK_OP_RESPONSE);
      accept(conn);
      return;
    }
    this.unmatched.push(p);
  }

  collectEvents(): void {
    for (const u of this.h.event.used()) {
      const addr = this.eventAddrs.get(u.id)!;
      this.eventAddrs.delete(u.id);
      this.events.push(u.len === 4 ? this.h.memory.readU32(addr) : -1);
    }
  }

  private readonly eventAddrs = new Map<number, number>();
  private nextEvent = 0;

  postEvents(n: number): void {
    for (let i = 0; i < n && this.h.event.freeCount > 0; i++) {
      const addr = EVENT_BASE + (this.nextEvent++ % 64) * 16;
      this.h.memory.writeU32(addr, 0xdead);
      this.eventAddrs.set(this.h.event.addChain([{ addr, len: 4, write: true }]), addr);
    }
    this.h.event.kick();
    this.h.device.queueNotify(V.VSOCK_QUEUE_EVENT);
  }
}

export interface HarnessOptions {
  /** Shorter timeouts for the deadline tests. */
  timeouts?: Partial<V.VsockTimeouts>;
  /** Rx buffers posted at activation (default 256). */
  rxBuffers?: number;
  eventIdx?: boolean;
  /** Wrap the real socket calls (fault injection, recording). */
  sockets?: (real: VsockSockets) => VsockSockets;
}

/** One device, one guest, one temp dir with the listening socket. */
export class VsockHarness {
  readonly dir = mkdtempSync(join(tmpdir(), 'flintvm-vsock-'));
  /** Where host clients connect; a snapshot test moves it to the restored device's listener. */
  udsPath = join(this.dir, 'v.sock');
  readonly memory: GuestMemory;
  rx!: VirtqDriver;
  tx!: VirtqDriver;
  event!: VirtqDriver;
  /** The device under test; a snapshot test swaps in the restored one. */
  device: VsockDevice;
  /** The queues of the last activation (rx, tx, event): a snapshot test saves their positions. */
  queues: SplitQueue[] = [];
  readonly watcher = new PollWatcher();
  guest!: GuestStack;
  readonly listener: { fd: number; close(): void };
  signals = 0;
  needsReset = 0;
  private readonly unmap: () => void;
  private readonly servers: net.Server[] = [];
  private readonly clients: net.Socket[] = [];

  constructor(opts: HarnessOptions = {}) {
    const host = mapGuestMemory([{ gpa: 0, size: GUEST_SIZE }]);
    this.memory = host.memory;
    this.unmap = host.unmap;
    this.eventIdx = opts.eventIdx ?? true;
    this.listener = openUnixListener(this.udsPath, { field: 'vsock.udsPath', suffixBytes: 11 });
    const real = new LibcVsockSockets();
    const sockets = opts.sockets ? opts.sockets(real) : real;
    this.device = new VsockDevice({ guestCid: GUEST_CID, udsPath: this.udsPath, timeouts: opts.timeouts ?? {} }, this.listener.fd, sockets, new TimerfdTicker(), new EventfdWakeup());
    this.newGuest(opts.rxBuffers ?? QSIZE);
  }

  private readonly eventIdx: boolean;

  /** Fresh rings (zeroed, as a driver does after a reset), a fresh guest stack, activation, rx buffers. */
  newGuest(rxBuffers = QSIZE): void {
    const eventIdx = this.eventIdx;
    this.rx = new VirtqDriver(this.memory, { size: QSIZE, descAddr: 0x0, availAddr: 0x1000, usedAddr: 0x2000, eventIdx });
    this.tx = new VirtqDriver(this.memory, { size: QSIZE, descAddr: 0x4000, availAddr: 0x5000, usedAddr: 0x6000, eventIdx });
    this.event = new VirtqDriver(this.memory, { size: EVENT_QSIZE, descAddr: 0x8000, availAddr: 0x9000, usedAddr: 0xa000, eventIdx });
    this.guest = new GuestStack(this);
    this.activate(eventIdx);
    this.guest.postRx(rxBuffers);
  }

  /** An activation context over the harness's rings (fresh queues, or `queues`). */
  context(eventIdx: boolean, queues?: SplitQueue[]): ActivationContext {
    let features = C.feature(C.VIRTIO_F_VERSION_1) | C.feature(C.VIRTIO_F_INDIRECT_DESC);
    if (eventIdx) features |= C.feature(C.VIRTIO_F_EVENT_IDX);
    this.queues = queues ?? [new SplitQueue(this.memory, this.rx.config), new SplitQueue(this.memory, this.tx.config), new SplitQueue(this.memory, this.event.config)];
    return {
      memory: this.memory,
      queues: this.queues,
      features,
      signalUsed: () => void this.signals++,
      updateConfig: () => { throw new Error('vsock never updates its config'); },
      fds: this.watcher,
      needsReset: () => void this.needsReset++,
    };
  }

  activate(eventIdx = true): void {
    this.device.activate(this.context(eventIdx));
  }

  /** One turn: device fds, then the guest's rings. */
  step(): void {
    this.watcher.poll();
    this.guest.collect();
    this.guest.reapTx();
    for (const c of [...this.guest.conns.values()]) c.pump();
  }

  /** Turns until `pred()` holds; rejects after `ms`. Node's loop (the host sockets) runs between turns. */
  async until(pred: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      this.step();
      if (pred()) return;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Turns for `ms` regardless. */
  async run(ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      this.step();
      await new Promise((r) => setImmediate(r));
    }
  }

  /** A host client on udsPath (not yet sent anything). */
  client(opts: { allowHalfOpen?: boolean } = {}): HostPeer {
    const s = net.createConnection({ path: this.udsPath, allowHalfOpen: opts.allowHalfOpen ?? false });
    this.clients.push(s);
    return new HostPeer(s);
  }

  /** A host client that sent `CONNECT port\n`. */
  connect(port: number, opts: { allowHalfOpen?: boolean } = {}): HostPeer {
    const c = this.client(opts);
    c.socket.write(`CONNECT ${port}\n`);
    return c;
  }

  /** A host listener at `${udsPath}_${port}`; resolves when listening. */
  /** A host listener on `port` and a guest connection to it, both ends established within `ms`. */
  async guestToHost(port: number, ms = 5000): Promise<{ host: HostPeer; conn: GuestConn }> {
    let host: HostPeer | null = null;
    await this.listenHost(port, (p) => { host = p; });
    const conn = this.guest.connect(port);
    await this.until(() => conn.established && host !== null, ms, 'established');
    return { host: host!, conn };
  }

  async listenHost(port: number, onConn: (p: HostPeer) => void, opts: { allowHalfOpen?: boolean } = {}): Promise<net.Server> {
    const srv = net.createServer({ allowHalfOpen: opts.allowHalfOpen ?? false }, (s) => {
      this.clients.push(s);
      onConn(new HostPeer(s));
    });
    this.servers.push(srv);
    await new Promise<void>((r) => srv.listen(`${this.udsPath}_${port}`, () => r()));
    return srv;
  }

  close(): void {
    for (const c of this.clients) c.destroy();
    for (const s of this.servers) s.close();
    this.device.dispose();
    this.listener.close();
    this.watcher.close();
    this.unmap();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A host-side stream, with everything it received. */
export class HostPeer {
  readonly chunks: Buffer[] = [];
  ended = false;
  closed = false;
  error: Error | null = null;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => this.chunks.push(d));
    socket.on('end', () => { this.ended = true; });
    socket.on('close', () => { this.closed = true; });
    socket.on('error', (e) => { this.error = e; });
  }

  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get text(): string {
    return this.data.toString('latin1');
  }

  /** Data after the `OK <port>\n` line (host-initiated connections). */
  get payload(): Buffer {
    const d = this.data;
    const nl = d.indexOf(0x0a);
    return nl < 0 ? Buffer.alloc(0) : d.subarray(nl + 1);
  }
}

/** Deterministic bytes. */
export function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export function md5(b: Uint8Array): string {
  return createHash('md5').update(b).digest('hex');
}

/** The methods of `real`, bound, as a plain object: spread it and override some (a host peer that stops reading...). */
export function boundSockets(real: VsockSockets): VsockSockets {
  return {
    accept: (fd) => real.accept(fd), connect: (p) => real.connect(p), readv: (fd, m, s) => real.readv(fd, m, s), writev: (fd, m, s) => real.writev(fd, m, s),
    recv: (fd, b, n, peek) => real.recv(fd, b, n, peek), send: (fd, b) => real.send(fd, b), shutdown: (fd, how) => real.shutdown(fd, how), close: (fd) => real.close(fd),
  };
}

/** A packet header from the guest (CID GUEST_CID port 1000 to the host's port 2000, 64 KiB of credit) with `f` over it. */
export function rawHeader(f: Partial<VsockHeader> & { op: number }): Uint8Array {
  const b = new Uint8Array(V.VSOCK_HDR_SIZE);
  encodeHeader({
    srcCid: BigInt(GUEST_CID), dstCid: 2n, srcPort: 1000, dstPort: 2000, len: 0, type: V.VIRTIO_VSOCK_TYPE_STREAM, flags: 0,
    bufAlloc: 64 * KiB, fwdCnt: 0, ...f,
  }, b);
  return b;
}
