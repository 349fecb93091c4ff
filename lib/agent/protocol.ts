/**
 * The host's side of the flintvm agent protocol, version 1
 * (docs/agent-protocol.md): frame and START-spec encoders, a streaming
 * frame decoder and decoders for the agent's replies. Pure functions over
 * Buffers; lib/agent/client.ts puts them on a socket.
 */

/** The protocol version this module speaks (the agent's HELLO carries its own). */
export const AGENT_PROTOCOL_VERSION = 1;
/** The guest vsock port the agent listens on. */
export const AGENT_VSOCK_PORT = 1024;
/** Frame header: u32 LE body length, u8 type, u32 LE process id. */
export const FRAME_HEADER_SIZE = 9;
/** The longest frame body either side may send. */
export const FRAME_MAX_BODY = 1 << 20;
/** The longest STDIN body the client sends (the agent reads its outputs in pieces of this size too). */
export const STDIO_CHUNK = 64 * 1024;

/** Message types (the `type` byte of a frame). */
export const MsgType = {
  START: 0x01,
  STDIN: 0x02,
  STDIN_CLOSE: 0x03,
  RESIZE: 0x04,
  SIGNAL: 0x05,
  HELLO: 0x80,
  STARTED: 0x81,
  STDOUT: 0x82,
  STDERR: 0x83,
  EXIT: 0x84,
  ERROR: 0x85,
} as const;

/** Field tags of a START body. */
export const Field = {
  ARG: 1,
  ENV: 2,
  CWD: 3,
  UID: 4,
  GID: 5,
  GROUP: 6,
  RLIMIT: 7,
  HOSTNAME: 8,
  TERMINAL: 9,
  ROOTFS: 10,
} as const;
const FIELD_HEADER_SIZE = 5;

/** The codes of an ERROR reply. */
export const AgentErrorCode = {
  BAD_FRAME: 1,
  BAD_SPEC: 2,
  ID_IN_USE: 3,
  NO_SUCH_PROCESS: 4,
  START_FAILED: 5,
  LIMIT: 6,
  NOT_TERMINAL: 7,
  SIGNAL_FAILED: 8,
  FRAME_TOO_LONG: 9,
} as const;

/** Linux's resource numbers (asm-generic/resource.h, the same on x86_64 and arm64), by their OCI names. */
export const RLIMIT_RESOURCES: Readonly<Record<string, number>> = {
  RLIMIT_CPU: 0, RLIMIT_FSIZE: 1, RLIMIT_DATA: 2, RLIMIT_STACK: 3, RLIMIT_CORE: 4, RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6, RLIMIT_NOFILE: 7, RLIMIT_MEMLOCK: 8, RLIMIT_AS: 9, RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11, RLIMIT_MSGQUEUE: 12, RLIMIT_NICE: 13, RLIMIT_RTPRIO: 14, RLIMIT_RTTIME: 15,
};
/** An rlimit value meaning "unlimited" (RLIM_INFINITY). */
export const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/** One resource limit; `resource` is a Linux resource number or its OCI name (`RLIMIT_NOFILE`). */
export interface Rlimit {
  resource: number | string;
  soft: bigint | number;
  hard: bigint | number;
}

/** What START runs: an OCI-like process description. */
export interface ProcessSpec {
  /** argv; args[0] is looked up in the PATH of `env` (or the default PATH) unless it has a slash. */
  args: string[];
  /** `KEY=VALUE` strings; the process gets exactly these. */
  env?: string[];
  /** Absolute working directory (inside `rootfs` when given). Default `/`. */
  cwd?: string;
  uid?: number;
  gid?: number;
  additionalGids?: number[];
  rlimits?: Rlimit[];
  /** Sets the guest's hostname (one per VM) before the process starts. */
  hostname?: string;
  /** A pty instead of pipes, of this size; stdout carries the terminal's output and stderr stays empty. */
  terminal?: { rows: number; cols: number };
  /** An absolute guest path to chroot into before `cwd`. */
  rootfs?: string;
}

/** One decoded frame. `body` may share memory with the decoder's input. */
export interface Frame {
  type: number;
  id: number;
  body: Buffer;
}

/** How a process ended: its exit code, or the signal that killed it. */
export type ExitStatus = { code: number; signal: null } | { code: null; signal: number };

/** An ERROR reply. */
export interface AgentErrorReply {
  code: number;
  errno: number;
  message: string;
}

/** A malformed value given to an encoder, or a malformed frame from the agent. */
export class AgentProtocolError extends Error {
  /** The offending field (for an encoder) or frame part. */
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'AgentProtocolError';
    this.field = field;
  }
}

const U32_MAX = 0xffff_ffff;
const U16_MAX = 0xffff;

function checkU32(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > U32_MAX) throw new AgentProtocolError(field, `${v} is not an integer in 0..${U32_MAX}`);
  return v;
}

/** One frame: header and body. */
export function encodeFrame(type: number, id: number, body: Uint8Array = Buffer.alloc(0)): Buffer {
  checkU32('id', id);
  if (body.length > FRAME_MAX_BODY) throw new AgentProtocolError('body', `${body.length} bytes, at most ${FRAME_MAX_BODY}`);
  const f = Buffer.allocUnsafe(FRAME_HEADER_SIZE + body.length);
  f.writeUInt32LE(body.length, 0);
  f.writeUInt8(type, 4);
  f.writeUInt32LE(id, 5);
  f.set(body, FRAME_HEADER_SIZE);
  return f;
}

function stringValue(field: string, s: string): Buffer {
  if (typeof s !== 'string') throw new AgentProtocolError(field, `${String(s)} is not a string`);
  if (s.includes('\0')) throw new AgentProtocolError(field, 'contains a NUL character');
  return Buffer.from(s, 'utf8');
}

function resourceNumber(r: number | string, field: string): number {
  if (typeof r === 'number') {
    if (!Number.isInteger(r) || r < 0 || r > 15) throw new AgentProtocolError(field, `resource ${r} is not one of 0..15`);
    return r;
  }
  const n = RLIMIT_RESOURCES[r];
  if (n === undefined) throw new AgentProtocolError(field, `unknown resource ${JSON.stringify(r)} (one of ${Object.keys(RLIMIT_RESOURCES).join(', ')})`);
  return n;
}

function limitValue(v: bigint | number, field: string): bigint {
  const b = typeof v === 'bigint' ? v : Number.isInteger(v) && v >= 0 ? BigInt(v) : -1n;
  if (b < 0n || b > RLIM_INFINITY) throw new AgentProtocolError(field, `${String(v)} is not an integer in 0..2^64-1`);
  return b;
}

/** The body of a START frame for `spec`; throws {@link AgentProtocolError} naming the bad field. */
export function encodeStartSpec(spec: ProcessSpec): Buffer {
  const parts: Buffer[] = [];
  const field = (tag: number, value: Buffer): void => {
    const h = Buffer.allocUnsafe(FIELD_HEADER_SIZE);
    h.writeUInt8(tag, 0);
    h.writeUInt32LE(value.length, 1);
    parts.push(h, value);
  };
  const u32 = (name: string, v: number): Buffer => {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(checkU32(name, v));
    return b;
  };
  if (!Array.isArray(spec.args) || spec.args.length === 0) throw new AgentProtocolError('args', 'must be a non-empty array of strings');
  spec.args.forEach((a, i) => field(Field.ARG, stringValue(`args[${i}]`, a)));
  (spec.env ?? []).forEach((e, i) => {
    const v = stringValue(`env[${i}]`, e);
    if (e.indexOf('=') < 1) throw new AgentProtocolError(`env[${i}]`, `${JSON.stringify(e)} is not KEY=VALUE`);
    field(Field.ENV, v);
  });
  for (const [name, tag, v] of [['cwd', Field.CWD, spec.cwd], ['rootfs', Field.ROOTFS, spec.rootfs]] as const) {
    if (v === undefined) continue;
    if (!v.startsWith('/')) throw new AgentProtocolError(name, `${JSON.stringify(v)} is not an absolute path`);
    field(tag, stringValue(name, v));
  }
  if (spec.uid !== undefined) field(Field.UID, u32('uid', spec.uid));
  if (spec.gid !== undefined) field(Field.GID, u32('gid', spec.gid));
  (spec.additionalGids ?? []).forEach((g, i) => field(Field.GROUP, u32(`additionalGids[${i}]`, g)));
  (spec.rlimits ?? []).forEach((r, i) => {
    const name = `rlimits[${i}]`;
    const b = Buffer.allocUnsafe(20);
    b.writeUInt32LE(resourceNumber(r.resource, name), 0);
    const soft = limitValue(r.soft, `${name}.soft`);
    const hard = limitValue(r.hard, `${name}.hard`);
    if (soft > hard) throw new AgentProtocolError(name, 'soft limit above the hard limit');
    b.writeBigUInt64LE(soft, 4);
    b.writeBigUInt64LE(hard, 12);
    field(Field.RLIMIT, b);
  });
  if (spec.hostname !== undefined) {
    const h = stringValue('hostname', spec.hostname);
    if (h.length === 0 || h.length > 64) throw new AgentProtocolError('hostname', `${h.length} bytes, must be 1 to 64`);
    field(Field.HOSTNAME, h);
  }
  if (spec.terminal !== undefined) field(Field.TERMINAL, encodeWindowSize(spec.terminal.rows, spec.terminal.cols));
  const body = Buffer.concat(parts);
  if (body.length > FRAME_MAX_BODY) throw new AgentProtocolError('spec', `encodes to ${body.length} bytes, at most ${FRAME_MAX_BODY}`);
  return body;
}

/** The 4-byte rows, cols body of RESIZE (and value of TERMINAL). */
export function encodeWindowSize(rows: number, cols: number): Buffer {
  for (const [n, v] of [['rows', rows], ['cols', cols]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > U16_MAX) throw new AgentProtocolError(n, `${v} is not an integer in 0..${U16_MAX}`);
  }
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16LE(rows, 0);
  b.writeUInt16LE(cols, 2);
  return b;
}

/** The body of SIGNAL. */
export function encodeSignal(signo: number): Buffer {
  if (!Number.isInteger(signo) || signo < 1 || signo > 64) throw new AgentProtocolError('signal', `${signo} is not a signal number in 1..64`);
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(signo);
  return b;
}

/**
 * Splits a byte stream into frames. Push chunks as they arrive; it returns
 * every frame now complete. A header announcing more than FRAME_MAX_BODY
 * throws: the stream cannot be trusted after it.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes the frame at the front needs in all (0: unknown until its header is in). */
  private need = 0;

  /** Bytes held that do not form a complete frame yet. */
  get pending(): number {
    return this.buffered;
  }

  push(chunk: Buffer): Frame[] {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: Frame[] = [];
    if (this.buffered < FRAME_HEADER_SIZE || this.buffered < this.need) return out;
    let buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    let pos = 0;
    while (buf.length - pos >= FRAME_HEADER_SIZE) {
      const len = buf.readUInt32LE(pos);
      if (len > FRAME_MAX_BODY) throw new AgentProtocolError('frame', `body length ${len} is over ${FRAME_MAX_BODY}`);
      if (buf.length - pos < FRAME_HEADER_SIZE + len) {
        this.need = FRAME_HEADER_SIZE + len;
        break;
      }
      this.need = 0;
      out.push({ type: buf.readUInt8(pos + 4), id: buf.readUInt32LE(pos + 5), body: buf.subarray(pos + FRAME_HEADER_SIZE, pos + FRAME_HEADER_SIZE + len) });
      pos += FRAME_HEADER_SIZE + len;
    }
    if (buf.length - pos < FRAME_HEADER_SIZE) this.need = 0;
    buf = buf.subarray(pos);
    this.chunks = buf.length ? [buf] : [];
    this.buffered = buf.length;
    return out;
  }
}

function needLength(what: string, body: Buffer, n: number, exact = true): void {
  if (exact ? body.length !== n : body.length < n) {
    throw new AgentProtocolError(what, `body of ${body.length} bytes, expected ${exact ? '' : 'at least '}${n}`);
  }
}

/** HELLO: the agent's protocol version and its name. */
export function decodeHello(body: Buffer): { version: number; agent: string } {
  needLength('HELLO', body, 4, false);
  return { version: body.readUInt32LE(0), agent: body.subarray(4).toString('utf8') };
}

/** STARTED: the process's guest pid. */
export function decodeStarted(body: Buffer): number {
  needLength('STARTED', body, 4);
  return body.readUInt32LE(0);
}

/** EXIT: the exit code or the terminating signal. */
export function decodeExit(body: Buffer): ExitStatus {
  needLength('EXIT', body, 5);
  const kind = body.readUInt8(0);
  const value = body.readUInt32LE(1);
  if (kind === 0) return { code: value, signal: null };
  if (kind === 1) return { code: null, signal: value };
  throw new AgentProtocolError('EXIT', `unknown kind ${kind}`);
}

/** ERROR: code, errno (0 for none) and message. */
export function decodeError(body: Buffer): AgentErrorReply {
  needLength('ERROR', body, 8, false);
  return { code: body.readUInt32LE(0), errno: body.readUInt32LE(4), message: body.subarray(8).toString('utf8') };
}

/** Decodes a START body back into a spec (the agent's view; used by tests and tools). */
export function decodeStartSpec(body: Buffer): ProcessSpec {
  const spec: ProcessSpec = { args: [] };
  let pos = 0;
  while (pos < body.length) {
    if (body.length - pos < FIELD_HEADER_SIZE) throw new AgentProtocolError('spec', `truncated field header at byte ${pos}`);
    const tag = body.readUInt8(pos);
    const len = body.readUInt32LE(pos + 1);
    if (len > body.length - pos - FIELD_HEADER_SIZE) throw new AgentProtocolError('spec', `field ${tag} at byte ${pos} runs past the body`);
    const v = body.subarray(pos + FIELD_HEADER_SIZE, pos + FIELD_HEADER_SIZE + len);
    pos += FIELD_HEADER_SIZE + len;
    const str = v.toString('utf8');
    switch (tag) {
      case Field.ARG: spec.args.push(str); break;
      case Field.ENV: (spec.env ??= []).push(str); break;
      case Field.CWD: spec.cwd = str; break;
      case Field.ROOTFS: spec.rootfs = str; break;
      case Field.HOSTNAME: spec.hostname = str; break;
      case Field.UID: needLength('UID', v, 4); spec.uid = v.readUInt32LE(0); break;
      case Field.GID: needLength('GID', v, 4); spec.gid = v.readUInt32LE(0); break;
      case Field.GROUP: needLength('GROUP', v, 4); (spec.additionalGids ??= []).push(v.readUInt32LE(0)); break;
      case Field.RLIMIT:
        needLength('RLIMIT', v, 20);
        (spec.rlimits ??= []).push({ resource: v.readUInt32LE(0), soft: v.readBigUInt64LE(4), hard: v.readBigUInt64LE(12) });
        break;
      case Field.TERMINAL: needLength('TERMINAL', v, 4); spec.terminal = { rows: v.readUInt16LE(0), cols: v.readUInt16LE(2) }; break;
      default: throw new AgentProtocolError('spec', `unknown field tag ${tag}`);
    }
  }
  return spec;
}
