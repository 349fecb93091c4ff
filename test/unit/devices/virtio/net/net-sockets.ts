/**
 * Test-only sockets for virtio-net: a SOCK_SEQPACKET socketpair that stands
 * in for a tap (one read or write = one packet, as on a tap), and AF_PACKET
 * sockets that see and inject frames on a real tap interface from the host
 * side. koffi bindings; any thread.
 */
import koffi from 'koffi';
import { readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { HostError } from '../../../../../lib/errors.js';

const libc = koffi.load('libc.so.6');
const socketpair = libc.func('socketpair', 'int', ['int', 'int', 'int', 'void *']) as (d: number, t: number, p: number, sv: Uint8Array) => number;
const socket = libc.func('socket', 'int', ['int', 'int', 'int']) as (d: number, t: number, p: number) => number;
const bind = libc.func('bind', 'int', ['int', 'void *', 'unsigned int']) as (fd: number, addr: Uint8Array, len: number) => number;
const send = libc.func('send', 'long', ['int', 'void *', 'size_t', 'int']) as (fd: number, buf: Uint8Array, len: number, flags: number) => number;
const recv = libc.func('recv', 'long', ['int', 'void *', 'size_t', 'int']) as (fd: number, buf: Uint8Array, len: number, flags: number) => number;
const setsockopt = libc.func('setsockopt', 'int', ['int', 'int', 'int', 'void *', 'unsigned int']) as (fd: number, level: number, name: number, val: Uint8Array, len: number) => number;
const closeRaw = libc.func('close', 'int', ['int']) as (fd: number) => number;
const errno = (): number => koffi.errno() as number;

const AF_UNIX = 1;
const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOCK_SEQPACKET = 5;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
/** ETH_P_ALL in network byte order, as sll_protocol and socket()'s protocol want it. */
const ETH_P_ALL_BE = 0x0300;
const SOCKADDR_LL_SIZE = 20;

/** A nonblocking SOCK_SEQPACKET pair [device end, peer end] with 1 MiB buffers (room for a few 64 KiB packets). */
export function seqpacketPair(): [number, number] {
  const sv = new Uint8Array(8);
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) !== 0) throw new HostError('socketpair', errno());
  const v = new DataView(sv.buffer);
  const fds: [number, number] = [v.getInt32(0, true), v.getInt32(4, true)];
  const size = new Uint8Array(4);
  new DataView(size.buffer).setInt32(0, 1 << 20, true);
  for (const fd of fds) {
    // FORCE variants ignore the sysctl caps (we are root); fall back to the capped ones otherwise.
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, size, 4) !== 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, size, 4);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4) !== 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, size, 4);
  }
  return fds;
}

/** Sends one packet; throws HostError on failure. */
export function sendPacket(fd: number, bytes: Uint8Array): void {
  const n = send(fd, bytes, bytes.length, MSG_DONTWAIT);
  if (n !== bytes.length) throw new HostError('send', n < 0 ? errno() : 0, `${n} of ${bytes.length} bytes`);
}

/** Receives one packet (at most `max` bytes), or null when none is waiting. */
export function recvPacket(fd: number, max = 70_000): Uint8Array | null {
  const buf = new Uint8Array(max);
  const n = recv(fd, buf, max, MSG_DONTWAIT);
  if (n >= 0) return buf.slice(0, n);
  const e = errno();
  if (e === EAGAIN) return null;
  throw new HostError('recv', e);
}

export function closeFd(fd: number): void {
  closeRaw(fd);
}

/** An AF_PACKET socket bound to interface `ifname`: sends frames out of it, and sees every frame on it. */
export function packetSocket(ifname: string): number {
  const fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, ETH_P_ALL_BE);
  if (fd < 0) throw new HostError('socket(AF_PACKET)', errno());
  const ifindex = Number(readFileSync(`/sys/class/net/${ifname}/ifindex`, 'utf8').trim());
  const sll = new Uint8Array(SOCKADDR_LL_SIZE);
  const v = new DataView(sll.buffer);
  v.setUint16(0, AF_PACKET, true); // sll_family
  v.setUint16(2, ETH_P_ALL_BE, true); // sll_protocol, already big-endian
  v.setInt32(4, ifindex, true); // sll_ifindex
  if (bind(fd, sll, SOCKADDR_LL_SIZE) !== 0) {
    const e = errno();
    closeRaw(fd);
    throw new HostError('bind(AF_PACKET)', e, ifname);
  }
  return fd;
}

/** Brings `ifname` up with IPv6 off (no router solicitations or MLD reports on the wire). */
export function linkUp(ifname: string): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, '1');
  } catch {
    // No IPv6 in this kernel: nothing to silence.
  }
  execFileSync('ip', ['link', 'set', 'dev', ifname, 'up']);
}
