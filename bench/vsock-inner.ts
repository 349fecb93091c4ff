/**
 * The inner half of bench/vsock.ts. It runs INSIDE the real-KVM test host:
 * one flintvm boot of the guest with the tools initramfs (socat with VSOCK)
 * and a hybrid vsock device, then, driven from here over the device's Unix
 * socket (`CONNECT <port>\n` -> `OK <port>\n` host -> guest; `<uds>_<port>`
 * listeners guest -> host):
 *
 * - connect latency: `--connects` host-initiated connections to a guest
 *   listener (`socat VSOCK-LISTEN:1300,fork`): the time from connect(2) on
 *   the Unix socket to the `OK` line, i.e. device accept, REQUEST to the
 *   guest, the guest kernel's RESPONSE and the OK back. Each connection is
 *   closed and its guest side gone before the next one starts;
 * - throughput, `--reps` times each way (after one uncounted warm-up round:
 *   the first transfers run while node's JIT is still compiling the device's
 *   hot path), alternating: host -> guest `--mib`
 *   MiB written after OK until the guest's socat (sink: /dev/null) has read
 *   EOF and closed; guest -> host `socat -u OPEN:/dev/zero,readbytes=N
 *   VSOCK-CONNECT:2:5000`, timed here from the accepted connection to EOF.
 *
 * QEMU has no hybrid (Unix-socket) vsock to compare with: the figures are
 * flintvm's alone. Prints one line `FLINTVM-VSOCK-RESULT <json>`.
 *
 * Usage: node dist/bench/vsock-inner.js [--reps 5] [--mib 32] [--connects 200] [--memory-mib 256]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { consoleTail, flintvmExtraCmdline, guestFiles, runMain, startFlintvm, testHostInfo } from './guest-run.js';
import { percentile } from './common.js';

export const VSOCK_MARKER = 'FLINTVM-VSOCK-RESULT ';

const GUEST_CID = 3;
const MIB = 1024 * 1024;
/** Guest listeners: connect latency, the barrier after it, host -> guest transfers. */
const PORT_CONNECT = 1300;
const PORT_BARRIER = 1301;
const PORT_SINK = 1302;
/** Host listener (`<uds>_5000`) for guest -> host transfers. */
const HOST_PORT = 5000;

export interface VsockInnerResult {
  reps: number;
  mib: number;
  connects: number;
  memoryMiB: number;
  guestScript: string;
  /** Host -> guest and guest -> host transfers, MiB/s (2^20 B/s), in order. */
  hostToGuestMiBs: number[];
  guestToHostMiBs: number[];
  /** Connect -> OK, microseconds, every connection. */
  connectUs: number[];
  connect: { medianUs: number; p99Us: number; minUs: number; maxUs: number };
  wallMs: number;
  error?: string;
  testHost: ReturnType<typeof testHostInfo>;
}

/** The guest's side: the connect listener, then `rounds` rounds of one transfer each way. */
export function vsockGuestScript(rounds: number, mib: number): string {
  return [
    `socat -u VSOCK-LISTEN:${PORT_CONNECT},reuseaddr,fork OPEN:/dev/null & l=$!`,
    'sleep 1; echo VS-READY',
    // Blocks until the host has finished its connects and connects here once.
    `socat -u VSOCK-LISTEN:${PORT_BARRIER} OPEN:/dev/null; kill $l`,
    `i=0; while [ $i -lt ${rounds} ]; do`,
    `  socat -u VSOCK-LISTEN:${PORT_SINK} OPEN:/dev/null || exit 3`,
    `  socat -u OPEN:/dev/zero,readbytes=${mib * MIB} VSOCK-CONNECT:2:${HOST_PORT} || exit 4`,
    '  i=$((i+1)); done',
    'echo VS-DONE',
  ].join('\n');
}

/** Connects to the device and asks for `port`; resolves with the socket and µs to OK, or null if the device closed it (nobody listens yet). */
function connectOnce(uds: string, port: number): Promise<{ s: net.Socket; us: number } | null> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = net.createConnection({ path: uds, allowHalfOpen: true });
    let buf = '';
    const fail = () => { s.destroy(); resolve(null); };
    s.on('error', () => {});
    s.on('end', fail);
    s.on('close', fail);
    s.setEncoding('latin1');
    s.on('data', function onData(d: string) {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      s.off('data', onData);
      s.off('end', fail);
      s.off('close', fail);
      if (!/^OK \d+$/.test(buf.slice(0, nl))) return reject(new Error(`unexpected reply ${JSON.stringify(buf.slice(0, nl))}`));
      if (nl + 1 !== buf.length) return reject(new Error('data before the guest sent any'));
      s.pause();
      resolve({ s, us });
    });
    s.write(`CONNECT ${port}\n`);
  });
}

/** connectOnce, retried every 50 ms until the guest listens (up to `ms`). */
async function connectWhenListening(uds: string, port: number, ms: number): Promise<{ s: net.Socket; us: number }> {
  const end = Date.now() + ms;
  for (;;) {
    const c = await connectOnce(uds, port);
    if (c) return c;
    if (Date.now() > end) throw new Error(`guest port ${port} never accepted`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Half-closes after writing `data` (if any) and resolves once the peer has closed too. */
function finish(s: net.Socket, data?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    s.on('error', reject);
    s.on('close', () => resolve());
    s.on('data', () => {});
    s.resume();
    if (data) s.end(data);
    else s.end();
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '5' },
      mib: { type: 'string', default: '32' },
      connects: { type: 'string', default: '200' },
      'memory-mib': { type: 'string', default: '256' },
    },
  });
  const reps = Number(values.reps);
  const mib = Number(values.mib);
  const connects = Number(values.connects);
  const memoryMiB = Number(values['memory-mib']);
  const { kernel, initrd } = guestFiles();
  const loadavgStart = readFileSync('/proc/loadavg', 'utf8').trim();
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-vsock-bench-'));
  const uds = join(dir, 'v.sock');

  // guest -> host: each accepted connection's time from accept to EOF.
  const fromGuest: { ms: number; bytes: number }[] = [];
  let fromGuestWaiter: (() => void) | null = null;
  const server = net.createServer((s) => {
    const t0 = performance.now();
    let bytes = 0;
    s.on('data', (d: Buffer) => { bytes += d.length; });
    s.on('end', () => {
      fromGuest.push({ ms: performance.now() - t0, bytes });
      s.end();
      fromGuestWaiter?.();
    });
  });
  await new Promise<void>((r) => server.listen(`${uds}_${HOST_PORT}`, () => r()));

  const script = vsockGuestScript(reps + 1, mib);
  console.log(`vsock: ${connects} connects, ${reps} x ${mib} MiB each way`);
  const t0 = performance.now();
  const g = await startFlintvm({ kernel, initrd, memoryMiB, vcpus: 1, vsock: { guestCid: GUEST_CID, udsPath: uds }, extraCmdline: flintvmExtraCmdline(script) }, 600);
  const connectUs: number[] = [];
  const h2g: number[] = [];
  const g2h: number[] = [];
  let error: string | undefined;
  try {
    await g.waitFor(/^VS-READY/m, 300_000);
    console.log(`vsock: guest ready after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // Warm-up: the first connection waits for the listener.
    await finish((await connectWhenListening(uds, PORT_CONNECT, 60_000)).s);
    const tc = performance.now();
    for (let i = 0; i < connects; i++) {
      const c = await connectOnce(uds, PORT_CONNECT);
      if (!c) throw new Error(`connect ${i} refused`);
      connectUs.push(c.us);
      await finish(c.s);
    }
    console.log(`vsock: connect -> OK median ${percentile(connectUs, 50).toFixed(0)} us over ${connects} (${((performance.now() - tc) / 1000).toFixed(1)} s in all)`);
    await finish((await connectWhenListening(uds, PORT_BARRIER, 60_000)).s);
    const data = Buffer.alloc(mib * MIB, 0x5a);
    // Round 0 is the warm-up.
    for (let i = 0; i <= reps; i++) {
      const c = await connectWhenListening(uds, PORT_SINK, 60_000);
      const t0 = performance.now();
      await finish(c.s, data);
      const toGuest = mib / ((performance.now() - t0) / 1000);
      await new Promise<void>((r) => { if (fromGuest.length > i) r(); else fromGuestWaiter = r; });
      const f = fromGuest[i]!;
      if (f.bytes !== mib * MIB) throw new Error(`guest -> host transfer ${i}: ${f.bytes} bytes, not ${mib * MIB}`);
      const toHost = mib / (f.ms / 1000);
      if (i > 0) { h2g.push(toGuest); g2h.push(toHost); }
      console.log(`vsock: ${i ? `rep ${i - 1}` : 'warm-up'}: host->guest ${toGuest.toFixed(1)} MiB/s, guest->host ${toHost.toFixed(1)} MiB/s`);
    }
  } catch (e) {
    error = (e as Error).message;
  }
  const end = await g.end;
  server.close();
  rmSync(dir, { recursive: true, force: true });
  error ??= end.error;
  if (error) console.log(`vsock: FAILED: ${error}\n--- guest console tail ---\n${consoleTail(g.output())}\n---`);
  const result: VsockInnerResult = {
    reps, mib, connects, memoryMiB, guestScript: script,
    hostToGuestMiBs: h2g, guestToHostMiBs: g2h, connectUs,
    connect: connectUs.length
      ? { medianUs: percentile(connectUs, 50), p99Us: percentile(connectUs, 99), minUs: Math.min(...connectUs), maxUs: Math.max(...connectUs) }
      : { medianUs: NaN, p99Us: NaN, minUs: NaN, maxUs: NaN },
    wallMs: end.wallMs,
    ...(error ? { error } : {}),
    testHost: testHostInfo(loadavgStart),
  };
  console.log(VSOCK_MARKER + JSON.stringify(result));
}

runMain(import.meta.url, 'vsock-inner', main);
