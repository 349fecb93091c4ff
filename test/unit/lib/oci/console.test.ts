/**
 * The console socket (lib/oci/console.ts): a pty's master sent as SCM_RIGHTS, received here with recvmsg the
 * way conmon receives it, and used: bytes written to the master come out of the slave.
 */
import test from 'ava';
import { mkdtempSync, readSync, rmSync, writeSync, closeSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isatty } from 'node:tty';
import { libc } from '../../../../lib/sys.js';
import { addressOf as address } from '../../../../lib/kvm/ffi.js';
import { OciError } from '../../../../lib/oci/bundle.js';
import { openPty, sendFd } from '../../../../lib/oci/console.js';

const socket = libc.func('socket', 'int', ['int', 'int', 'int']) as (d: number, t: number, p: number) => number;
const bind = libc.func('bind', 'int', ['int', 'void *', 'uint32']) as (fd: number, a: Uint8Array, l: number) => number;
const listen = libc.func('listen', 'int', ['int', 'int']) as (fd: number, n: number) => number;
const accept = libc.func('accept', 'int', ['int', 'void *', 'void *']) as (fd: number, a: null, l: null) => number;
const recvmsg = libc.func('recvmsg', 'long', ['int', 'void *', 'int']) as (fd: number, m: Uint8Array, f: number) => number;

function listenAt(path: string): number {
  const s = socket(1, 1, 0);
  const sun = Buffer.alloc(110);
  sun.writeUInt16LE(1, 0);
  sun.write(path, 2);
  if (bind(s, sun, 110) < 0 || listen(s, 1) < 0) throw new Error('bind/listen failed');
  return s;
}

/** recvmsg of one message with one SCM_RIGHTS fd: [payload, fd]. */
function receiveFd(conn: number): [string, number] {
  const data = Buffer.alloc(256);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(address(data), 0);
  iov.writeBigUInt64LE(256n, 8);
  const cmsg = Buffer.alloc(64);
  const msg = Buffer.alloc(56);
  msg.writeBigUInt64LE(address(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(address(cmsg), 32);
  msg.writeBigUInt64LE(BigInt(cmsg.length), 40);
  const n = Number(recvmsg(conn, msg, 0));
  if (n < 0) throw new Error('recvmsg failed');
  if (cmsg.readInt32LE(8) !== 1 || cmsg.readInt32LE(12) !== 1) throw new Error('no SCM_RIGHTS message');
  return [data.subarray(0, n).toString(), cmsg.readInt32LE(16)];
}

test('a pty master sent over a console socket arrives as a working terminal fd', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-console-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'console.sock');
  const server = listenAt(path);
  const { master, slavePath } = openPty();
  t.regex(slavePath, /^\/dev\/pts\/\d+$/);
  // The connection queues in the backlog, so one thread can send, then accept and receive.
  sendFd(path, master, slavePath);
  closeSync(master);
  const conn = accept(server, null, null);
  t.true(conn >= 0);
  const [name, fd] = receiveFd(conn);
  t.is(name, slavePath);
  t.true(isatty(fd), 'the received fd is a terminal');
  const slave = openSync(slavePath, 'r+');
  writeSync(fd, 'hello\n');
  const buf = Buffer.alloc(64);
  const n = readSync(slave, buf, 0, 64, null);
  t.is(buf.subarray(0, n).toString(), 'hello\n');
  for (const f of [slave, fd, conn, server]) closeSync(f);
});

test('sendFd: an unreachable or overlong console socket path is a clear error', (t) => {
  const { master } = openPty();
  t.throws(() => sendFd('/nonexistent/console.sock', master, 'x'), { instanceOf: OciError, message: /--console-socket \/nonexistent\/console.sock: cannot connect/ });
  t.throws(() => sendFd(`/tmp/${'x'.repeat(120)}`, master, 'x'), { instanceOf: OciError, message: /longer than a Unix socket address holds/ });
  closeSync(master);
});
