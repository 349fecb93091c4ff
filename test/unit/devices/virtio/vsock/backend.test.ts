/**
 * The vsock host side on the main thread (openVsockBackend: config checks,
 * the listening socket, stale sockets) and the I/O-worker factory; plus the
 * packet and CONNECT-line parsers.
 */
import test from 'ava';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../../../../lib/errors.js';
import { closeFd } from '../../../../../lib/io/epoll.js';
import { openUnixListener } from '../../../../../devices/virtio/backends/unix-socket.js';
import * as V from '../../../../../devices/virtio/vsock/constants.js';
import { createVsockDevice, openVsockBackend } from '../../../../../devices/virtio/vsock/index.js';
import { decodeHeader, encodeHeader, findNewline, parseConnectLine, type VsockHeader } from '../../../../../devices/virtio/vsock/packet.js';
import { countFds } from '../../../../helpers/io-fds.js';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'flintvm-vsock-'));
}

test('openVsockBackend: listens at udsPath, returns cloneable params, close() removes the socket', (t) => {
  const dir = tempDir();
  const path = join(dir, 'v.sock');
  const fds = countFds();
  const b = openVsockBackend({ guestCid: 3, udsPath: path }, 'vsock');
  try {
    t.true(lstatSync(path).isSocket());
    t.deepEqual(Object.keys(b.params).sort(), ['guestCid', 'listenFd', 'udsPath']);
    t.deepEqual(structuredClone(b.params), b.params);
    t.is(b.params.guestCid, 3);
    t.is(countFds(), fds + 1);
  } finally {
    b.close();
    b.close();
  }
  t.throws(() => lstatSync(path), { code: 'ENOENT' });
  t.is(countFds(), fds);
  rmSync(dir, { recursive: true });
});

test('openVsockBackend: bad CIDs are ConfigErrors naming vsock.guestCid', (t) => {
  const dir = tempDir();
  for (const guestCid of [0, 1, 2, -1, 0xffff_ffff, 2 ** 40, 3.5, '3' as unknown as number, undefined as unknown as number]) {
    const e = t.throws(() => openVsockBackend({ guestCid, udsPath: join(dir, 'v.sock') }, 'vsock'), { instanceOf: ConfigError }, String(guestCid));
    t.is(e?.field, 'vsock.guestCid');
  }
  t.throws(() => lstatSync(join(dir, 'v.sock')), { code: 'ENOENT' }, 'nothing created');
  t.throws(() => openVsockBackend(null as never, 'vsock'), { instanceOf: ConfigError });
  rmSync(dir, { recursive: true });
});

test('openVsockBackend: paths that are empty, have NUL, or leave no room for _<port> are refused', (t) => {
  const dir = tempDir();
  const long = join(dir, 'x'.repeat(107 - 11 - dir.length - 1)); // exactly 96 bytes: fits with the suffix
  t.is(Buffer.byteLength(long), 96);
  const ok = openVsockBackend({ guestCid: 3, udsPath: long }, 'vsock');
  ok.close();
  for (const udsPath of ['', 'a\0b', `${long}y`, 5 as unknown as string]) {
    const e = t.throws(() => openVsockBackend({ guestCid: 3, udsPath }, 'vsock'), { instanceOf: ConfigError }, JSON.stringify(udsPath));
    t.is(e?.field, 'vsock.udsPath');
  }
  rmSync(dir, { recursive: true });
});

test('openVsockBackend: an existing regular file or directory is never removed', (t) => {
  const dir = tempDir();
  const file = join(dir, 'file');
  writeFileSync(file, 'precious');
  t.throws(() => openVsockBackend({ guestCid: 3, udsPath: file }, 'vsock'), { instanceOf: ConfigError, message: /not a socket/ });
  t.is(readFileSync(file, 'utf8'), 'precious');
  mkdirSync(join(dir, 'sub'));
  t.throws(() => openVsockBackend({ guestCid: 3, udsPath: join(dir, 'sub') }, 'vsock'), { instanceOf: ConfigError, message: /not a socket/ });
  t.throws(() => openVsockBackend({ guestCid: 3, udsPath: join(dir, 'missing', 'v.sock') }, 'vsock'), { instanceOf: ConfigError, message: /directory does not exist/ });
  rmSync(dir, { recursive: true });
});

test('openVsockBackend: a stale socket (nobody listening) is replaced; a live one is an error', async (t) => {
  const dir = tempDir();
  const path = join(dir, 'v.sock');
  // A VMM that died: its socket file stays, nobody listens.
  const dead = openUnixListener(path, { field: 'x' });
  closeFd(dead.fd);
  t.true(lstatSync(path).isSocket());
  const b = openVsockBackend({ guestCid: 3, udsPath: path }, 'vsock');
  // Now it is live: a second VM on the same path is refused, and the first keeps working.
  t.throws(() => openVsockBackend({ guestCid: 4, udsPath: path }, 'vsock'), { instanceOf: ConfigError, message: /in use/ });
  await new Promise<void>((resolve, reject) => {
    const s = net.createConnection(path, () => { s.destroy(); resolve(); });
    s.on('error', reject);
  });
  b.close();
  rmSync(dir, { recursive: true });
  t.pass();
});

test('close() does not unlink a socket that someone else bound at the path later', (t) => {
  const dir = tempDir();
  const path = join(dir, 'v.sock');
  const a = openVsockBackend({ guestCid: 3, udsPath: path }, 'vsock');
  rmSync(path);
  const other = openUnixListener(path, { field: 'x' });
  a.close();
  t.true(lstatSync(path).isSocket(), 'the other socket is still there');
  other.close();
  rmSync(dir, { recursive: true });
});

test('createVsockDevice builds the device from the params (I/O worker factory)', (t) => {
  const dir = tempDir();
  const b = openVsockBackend({ guestCid: 77, udsPath: join(dir, 'v.sock') }, 'vsock');
  const fds = countFds();
  const dev = createVsockDevice(b.params);
  t.is(new DataView(dev.info.config.buffer).getBigUint64(0, true), 77n);
  dev.dispose();
  t.is(countFds(), fds, 'the ticker and wakeup fds are released; the listener is not the device\'s');
  b.close();
  rmSync(dir, { recursive: true });
});

// ---- packet.ts ----

test('header encode/decode round trip, little-endian at the spec offsets', (t) => {
  const h: VsockHeader = {
    srcCid: 0x1122334455667788n, dstCid: 2n, srcPort: 0xdeadbeef, dstPort: 7, len: 65536, type: 1, op: 5, flags: 3, bufAlloc: 262144, fwdCnt: 0xffff_ffff,
  };
  const b = new Uint8Array(44);
  encodeHeader(h, b);
  t.deepEqual(decodeHeader(b), h);
  const dv = new DataView(b.buffer);
  t.is(dv.getUint32(V.VSOCK_HDR_SRC_PORT, true), 0xdeadbeef);
  t.is(dv.getUint16(V.VSOCK_HDR_OP, true), 5);
  t.is(dv.getUint32(V.VSOCK_HDR_FWD_CNT, true), 0xffff_ffff);
  t.is(b[0], 0x88);
});

test('parseConnectLine: accepts CONNECT <u32>\\n (CR tolerated), refuses everything else', (t) => {
  const enc = (s: string) => new TextEncoder().encode(s);
  t.deepEqual(parseConnectLine(enc('CONNECT 52\n')), { kind: 'port', port: 52 });
  t.deepEqual(parseConnectLine(enc('CONNECT 0\n')), { kind: 'port', port: 0 });
  t.deepEqual(parseConnectLine(enc('CONNECT 4294967295\r\n')), { kind: 'port', port: 0xffff_ffff });
  for (const s of ['CONNECT 4294967296\n', 'CONNECT 52', 'CONNECT  52\n', 'CONNECT 0x10\n', 'connect 52\n', 'CONNECT 5\u00e92\n', 'CONNECT +5\n', ' CONNECT 5\n']) {
    t.is(parseConnectLine(enc(s)).kind, 'bad', JSON.stringify(s));
  }
  t.is(findNewline(enc('ab\ncd'), 5), 2);
  t.is(findNewline(enc('ab\ncd'), 2), -1);
});
