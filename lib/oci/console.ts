/**
 * The container's terminal on the host side, for `process.terminal: true`.
 *
 * With `--console-socket SOCK` (what conmon passes for `podman run -t`), a new pty's master goes to SOCK as
 * an SCM_RIGHTS message, as runc does; the caller (conmon) keeps it and is the terminal's user. This process
 * keeps the slave, in raw mode, and relays it to the pty the guest agent gives the container process, so the
 * guest's line discipline is the only one. The slave becomes this process's controlling terminal (a holder is
 * a session leader), so a size change on the master reaches us as SIGWINCH and is passed on.
 *
 * Without a console socket, a terminal on our own stdin (a foreground `flintvm-oci run` in a shell) is used.
 */
import tty from 'node:tty';
import { O_CLOEXEC, O_RDWR, addressOf as address, close, errno, ioctlPtr, open } from '../kvm/ffi.js';
import { libc } from '../sys.js';
import { OciError } from './bundle.js';

const O_NOCTTY = 0o400;
const TIOCGPTN = 0x80045430;
const TIOCSPTLCK = 0x40045431;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

const socket = libc.func('socket', 'int', ['int', 'int', 'int']) as (domain: number, type: number, proto: number) => number;
const connect = libc.func('connect', 'int', ['int', 'void *', 'uint32']) as (fd: number, addr: Uint8Array, len: number) => number;
const sendmsg = libc.func('sendmsg', 'long', ['int', 'void *', 'int']) as (fd: number, msg: Uint8Array, flags: number) => number;
const tcgetattr = libc.func('tcgetattr', 'int', ['int', 'void *']) as (fd: number, t: Uint8Array) => number;
const tcsetattr = libc.func('tcsetattr', 'int', ['int', 'int', 'void *']) as (fd: number, when: number, t: Uint8Array) => number;
const cfmakeraw = libc.func('cfmakeraw', 'void', ['void *']) as (t: Uint8Array) => void;

/** A terminal the container process's pty is relayed to. */
export interface TerminalIo {
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream;
  /** Its size now. */
  size(): { rows: number; cols: number };
  /** Calls `cb` with the new size whenever it changes. */
  onResize(cb: (rows: number, cols: number) => void): void;
  close(): void;
}

/** Opens a new pty: its master fd and its slave's path. */
export function openPty(): { master: number; slavePath: string } {
  const master = open('/dev/ptmx', O_RDWR | O_NOCTTY | O_CLOEXEC, 0);
  if (master < 0) throw new OciError(`cannot open /dev/ptmx for the container's terminal (errno ${errno()})`);
  const n = Buffer.alloc(4);
  if (ioctlPtr(master, TIOCSPTLCK, n) < 0 || ioctlPtr(master, TIOCGPTN, n) < 0) {
    const e = errno();
    close(master);
    throw new OciError(`cannot set up a pty for the container's terminal (errno ${e})`);
  }
  return { master, slavePath: `/dev/pts/${n.readUInt32LE(0)}` };
}

/** Sends `fd` over the Unix stream socket at `path` as SCM_RIGHTS, with `name` as the message (runc sends the pty's name). */
export function sendFd(path: string, fd: number, name: string): void {
  const sun = Buffer.alloc(110);
  sun.writeUInt16LE(AF_UNIX, 0);
  if (Buffer.byteLength(path) > 107) throw new OciError(`--console-socket ${path}: the path is longer than a Unix socket address holds (107 bytes)`);
  sun.write(path, 2);
  const s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw new OciError(`--console-socket ${path}: socket() failed (errno ${errno()})`);
  try {
    if (connect(s, sun, 2 + Buffer.byteLength(path) + 1) < 0) throw new OciError(`--console-socket ${path}: cannot connect (errno ${errno()})`);
    const payload = Buffer.from(name);
    const iov = Buffer.alloc(16); // struct iovec { void *base; size_t len; }
    iov.writeBigUInt64LE(address(payload), 0);
    iov.writeBigUInt64LE(BigInt(payload.length), 8);
    const cmsg = Buffer.alloc(24); // CMSG_SPACE(sizeof(int)): { size_t len; int level; int type; int fd; pad }
    cmsg.writeBigUInt64LE(20n, 0); // CMSG_LEN(sizeof(int))
    cmsg.writeInt32LE(SOL_SOCKET, 8);
    cmsg.writeInt32LE(SCM_RIGHTS, 12);
    cmsg.writeInt32LE(fd, 16);
    const msg = Buffer.alloc(56); // struct msghdr (LP64)
    msg.writeBigUInt64LE(address(iov), 16);
    msg.writeBigUInt64LE(1n, 24);
    msg.writeBigUInt64LE(address(cmsg), 32);
    msg.writeBigUInt64LE(BigInt(cmsg.length), 40);
    if (sendmsg(s, msg, 0) < 0) throw new OciError(`--console-socket ${path}: sending the terminal failed (errno ${errno()})`);
  } finally {
    close(s);
  }
}

/**
 * The terminal for a container process: a new pty whose master goes to `consoleSocket`, or, without one, our
 * stdin/stdout when they are a terminal. Throws an OciError that names the fix otherwise.
 */
export function openTerminal(consoleSocket: string | undefined): TerminalIo {
  let fdIn: number;
  let fdOut: number;
  let own = false;
  if (consoleSocket) {
    const { master, slavePath } = openPty();
    try {
      sendFd(consoleSocket, master, slavePath);
    } finally {
      close(master);
    }
    // Without O_NOCTTY: a session leader with no terminal (a holder) gets this one as its controlling terminal.
    fdIn = open(slavePath, O_RDWR | O_CLOEXEC, 0);
    fdOut = fdIn < 0 ? -1 : open(slavePath, O_RDWR | O_NOCTTY | O_CLOEXEC, 0);
    if (fdIn < 0 || fdOut < 0) throw new OciError(`cannot open the terminal ${slavePath} (errno ${errno()})`);
    own = true;
  } else if (process.stdin.isTTY && process.stdout.isTTY) {
    fdIn = 0;
    fdOut = 1;
  } else {
    throw new OciError('process.terminal is true but there is no terminal: pass --console-socket (podman and conmon do), or run from a terminal');
  }
  const input = fdIn === 0 ? process.stdin as tty.ReadStream : new tty.ReadStream(fdIn);
  const output = fdOut === 1 ? process.stdout as tty.WriteStream : new tty.WriteStream(fdOut);
  if (own) {
    // Fully raw (cfmakeraw): libuv's raw mode keeps output's \n -> \r\n, which the guest's pty has done already.
    const t = Buffer.alloc(64); // struct termios is 60 bytes
    if (tcgetattr(fdOut, t) < 0) throw new OciError(`tcgetattr on the container's terminal failed (errno ${errno()})`);
    cfmakeraw(t);
    if (tcsetattr(fdOut, 0, t) < 0) throw new OciError(`tcsetattr on the container's terminal failed (errno ${errno()})`);
  } else input.setRawMode(true);
  input.on('error', () => undefined); // EIO once the master's user hangs up
  output.on('error', () => undefined);
  const size = () => {
    const [cols, rows] = output.getWindowSize();
    return { rows: rows || 24, cols: cols || 80 };
  };
  return {
    input,
    output,
    size,
    onResize(cb) {
      process.on('SIGWINCH', () => {
        const s = size();
        cb(s.rows, s.cols);
      });
    },
    close() {
      if (!own) try { input.setRawMode(false); } catch { /* already gone */ }
      if (own) {
        input.destroy();
        output.destroy();
      }
    },
  };
}
