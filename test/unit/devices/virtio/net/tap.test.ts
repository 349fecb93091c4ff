/**
 * TAP backend against the real kernel: openTap's checks and errors, and
 * virtio-net frames through a real tap (created by openTap, removed when its
 * fd closes), seen and injected from the host side with an AF_PACKET socket.
 * Needs root and /dev/net/tun; skipped (with a log line) without them.
 */
import test, { type ExecutionContext } from 'ava';
import { accessSync, constants, existsSync } from 'node:fs';
import { ConfigError } from '../../../../../lib/errors.js';
import * as ffi from '../../../../../lib/kvm/ffi.js';
import {
  openTap, tapNameProblem, TUNGETVNETHDRSZ, tunOffloadFlags, tunsetiffError, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, type OpenTap,
} from '../../../../../devices/virtio/backends/tap.js';
import * as N from '../../../../../devices/virtio/net/constants.js';
import { defaultMac } from '../../../../../devices/virtio/net/mac.js';
import { frame, NetHarness, numBuffers, packet, PLAIN_FEATURES, TEST_ETHERTYPE } from './net-harness.js';
import { closeFd, linkUp, packetSocket, recvPacket, sendPacket } from './net-sockets.js';

const HDR = N.VIRTIO_NET_HDR_SIZE;
let seq = 0;
/** A tap name unique to this process and test (at most 15 bytes). */
const tapName = (): string => `flt${process.pid % 100_000}t${seq++}`;

function canUseTun(t: ExecutionContext): boolean {
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    t.log('no usable /dev/net/tun: skipped');
    t.pass();
    return false;
  }
  if (process.getuid?.() !== 0) {
    t.log('not root (creating a tap needs CAP_NET_ADMIN): skipped');
    t.pass();
    return false;
  }
  return true;
}

function configError(t: ExecutionContext, fn: () => unknown, field: string, message: RegExp): void {
  const e = t.throws(fn, { instanceOf: ConfigError });
  t.is(e?.field, field, e?.message);
  t.regex(e?.message ?? '', message);
}

test('tap names: Linux rules, at most 15 bytes, no templates', (t) => {
  for (const ok of ['tap0', 'a', 'x'.repeat(15), 'vm-1_net.2']) t.is(tapNameProblem(ok), null, ok);
  for (const bad of ['', 'x'.repeat(16), 'é'.repeat(8), '.', '..', 'a/b', 'a:b', 'a b', 'tap%d', 'a\nb', 'a\0b', 5, undefined]) {
    t.not(tapNameProblem(bad), null, String(bad));
  }
});

test('TUNSETOFFLOAD flags follow the guest receive offloads; TSO only with CSUM', (t) => {
  t.is(tunOffloadFlags({ csum: true, tso4: true, tso6: true, ecn: true }), TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);
  t.is(tunOffloadFlags({ csum: true, tso4: false, tso6: false, ecn: true }), TUN_F_CSUM);
  t.is(tunOffloadFlags({ csum: false, tso4: true, tso6: true, ecn: true }), 0);
});

test('openTap: bad names and MACs are ConfigErrors naming the field, checked before anything opens', (t) => {
  const before = ffi.open('/dev/null', ffi.O_RDONLY, 0);
  ffi.close(before);
  configError(t, () => openTap({ tap: 'x'.repeat(16) }, 'net[0]'), 'net[0].tap', /16 bytes; interface names are at most 15/);
  configError(t, () => openTap({ tap: 'a/b' }, 'net[0]'), 'net[0].tap', /character/);
  configError(t, () => openTap({ tap: '' }, 'net[1]'), 'net[1].tap', /name of a TAP interface/);
  configError(t, () => openTap({ tap: 'tap0', mac: '01:00:5e:00:00:01' }, 'net[0]'), 'net[0].mac', /multicast/);
  configError(t, () => openTap({ tap: 'tap0', mac: '02:00:00:00:00' }, 'net[0]'), 'net[0].mac', /six hex pairs/);
  configError(t, () => openTap({ tap: 'tap0', mac: '00:00:00:00:00:00' }, 'net[0]'), 'net[0].mac', /all-zero/);
  configError(t, () => openTap(null as never, 'net[2]'), 'net[2]', /object/);
  const after = ffi.open('/dev/null', ffi.O_RDONLY, 0);
  ffi.close(after);
  t.is(after, before, 'no fd leaked');
});

test('openTap: no clone device says how to get one', (t) => {
  configError(t, () => openTap({ tap: 'tap0' }, 'net[0]', { tunPath: '/nonexistent/net/tun' }), 'net[0]', /modprobe tun/);
});

test('TUNSETIFF errors say what to do', (t) => {
  t.regex(tunsetiffError('tap9', 1, false, 'net[0]').message, /^net\[0\]\.tap: creating tap 'tap9' needs CAP_NET_ADMIN.*ip tuntap add dev tap9 mode tap user/);
  t.regex(tunsetiffError('tap9', 1, true, 'net[0]').message, /belongs to another user or group/);
  t.regex(tunsetiffError('tap9', 16, true, 'net[0]').message, /already in use by another process/);
  t.regex(tunsetiffError('eth0', 22, true, 'net[0]').message, /exists but is not a single-queue TAP/);
  t.regex(tunsetiffError('tap9', 12, false, 'net[0]').message, /cannot create tap 'tap9': ENOMEM/);
});

test('openTap creates a tap with a 12-byte vnet header; a second user is refused; close removes it', (t) => {
  if (!canUseTun(t)) return;
  const name = tapName();
  const tap = openTap({ tap: name }, 'net[0]');
  try {
    t.is(tap.params.name, name);
    t.is(tap.params.mac, defaultMac(name));
    t.regex(tap.params.mac, /^02(:[0-9a-f]{2}){5}$/);
    t.true(existsSync(`/sys/class/net/${name}`));
    const sz = new Uint8Array(4);
    t.is(ffi.ioctlPtr(tap.params.tapFd, TUNGETVNETHDRSZ, sz), 0);
    t.is(new DataView(sz.buffer).getInt32(0, true), HDR);
    configError(t, () => openTap({ tap: name }, 'net[1]'), 'net[1].tap', /already in use/);
    configError(t, () => openTap({ tap: 'lo' }, 'net[1]'), 'net[1].tap', /exists but is not a single-queue TAP/);
    const m = openTap({ tap: tapName(), mac: '52:54:00:AA:BB:CC' }, 'net[2]');
    t.is(m.params.mac, '52:54:00:aa:bb:cc');
    m.close();
  } finally {
    tap.close();
    tap.close();
  }
  t.false(existsSync(`/sys/class/net/${name}`), 'a tap openTap created goes away with its fd');
});

/** A device on a real tap, with an AF_PACKET socket on the host side of it. */
function withTap(opts: { features?: bigint }, fn: (t: ExecutionContext, h: NetHarness, host: number, tap: OpenTap) => void) {
  return (t: ExecutionContext) => {
    if (!canUseTun(t)) return;
    const tap = openTap({ tap: tapName() }, 'net[0]');
    let host = -1;
    let h: NetHarness | null = null;
    try {
      linkUp(tap.params.name);
      host = packetSocket(tap.params.name);
      h = new NetHarness({ deviceFd: tap.params.tapFd, ...(opts.features !== undefined ? { features: opts.features } : {}) });
      fn(t, h, host, tap);
    } finally {
      h?.close();
      if (host >= 0) closeFd(host);
      tap.close();
    }
  };
}

/** The next frame of TEST_ETHERTYPE on the host socket (skipping anything else the kernel sends), waiting up to 1 s. */
function hostReceive(host: number): Uint8Array | null {
  const deadline = Date.now() + 1000;
  while (Date.now() < deadline) {
    const f = recvPacket(host);
    if (f === null) continue;
    if (((f[12]! << 8) | f[13]!) === TEST_ETHERTYPE) return f;
  }
  return null;
}

test('real tap: a transmitted frame arrives on the host interface without its vnet header', withTap({}, (t, h, host) => {
  const f = frame(1514, 7);
  t.is(h.transmit([packet(f)]).length, 1);
  t.is(h.device.stats!.tx.hostErrors, 0);
  t.deepEqual(hostReceive(host), f);
}));

test('real tap: the offloads the guest negotiated are set on the tap', withTap({}, (t, h) => {
  t.deepEqual(h.offloadCalls, [TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN]);
  h.device.reset();
  t.deepEqual(h.offloadCalls, [TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN, 0], 'the real TUNSETOFFLOAD accepted both');
}));

test('real tap: a frame sent on the host interface lands in the guest buffers after a zeroed header', withTap({}, (t, h, host) => {
  h.addRxBuffers(80, 1024);
  const f = frame(1514, 9);
  sendPacket(host, f);
  let got: Uint8Array | null = null;
  for (let i = 0; i < 100 && !got; i++) {
    h.pump();
    for (const u of mergedPackets(h)) if (((u[HDR + 12]! << 8) | u[HDR + 13]!) === TEST_ETHERTYPE) got = u;
  }
  t.truthy(got);
  t.deepEqual(got!.subarray(HDR), f);
  t.deepEqual([...got!.subarray(0, N.VIRTIO_NET_HDR_NUM_BUFFERS)], new Array(10).fill(0), 'no offload for a locally sent frame');
  t.is(numBuffers(got!), 2);
}));

test('real tap: a frame larger than the buffer is dropped (caught by the overflow byte) and the buffer reused', withTap({ features: PLAIN_FEATURES }, (t, h, host) => {
  const [head] = h.addRxBuffers(1, HDR + 100);
  sendPacket(host, frame(500, 1));
  const small = frame(90, 2);
  sendPacket(host, small);
  let got: { id: number; data: Uint8Array } | undefined;
  for (let i = 0; i < 100 && !got; i++) {
    h.pump();
    got = h.rxUsed().find((u) => ((u.data[HDR + 12]! << 8) | u.data[HDR + 13]!) === TEST_ETHERTYPE);
  }
  t.truthy(got);
  t.is(got!.id, head, 'the same chain, after the dropped frame');
  t.deepEqual(got!.data.subarray(HDR), small);
  t.true(h.device.stats!.rx.dropped >= 1);
}));

/** Reassembles the packets in the used rx elements (num_buffers of the first tells how many elements each took). */
function mergedPackets(h: NetHarness): Uint8Array[] {
  const used = h.rxUsed();
  const out: Uint8Array[] = [];
  for (let i = 0; i < used.length;) {
    const n = numBuffers(used[i]!.data);
    const parts = used.slice(i, i + n);
    const p = new Uint8Array(parts.reduce((s, u) => s + u.len, 0));
    let at = 0;
    for (const u of parts) {
      p.set(u.data, at);
      at += u.len;
    }
    out.push(p);
    i += n;
  }
  return out;
}
