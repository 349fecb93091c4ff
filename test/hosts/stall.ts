/**
 * A test host that stops using CPU: how run.ts notices it, and what it does.
 *
 * Five times on 2026-12-06 an x86_64 test host went idle for good while its
 * command was running: QEMU's emulated CPU thread slept on a futex, its main
 * loop waited in ppoll with no time-out, and nothing more came out for 10-16
 * minutes. The fifth was looked at over QMP: the CPU was halted in the idle
 * loop with interrupts enabled (RFL=0x246, HLT=1), and its local APIC held
 * the timer's vector (236) in IRR, above the priority (PPR 0x10), with
 * nothing in service: an interrupt QEMU had accepted but never woke the CPU
 * for (QEMU 7.2, TCG). An NMI did not help (the CPU handled it and halted
 * again). A key press did: an interrupt through the IOAPIC makes QEMU look at
 * the local APIC again, the CPU took the timer interrupt, and the host ran on.
 *
 * So run.ts watches the QEMU process's threads. When none has run for
 * {@link STALL_LIMIT_MS}, it logs the emulated CPU's state (the RIP line and
 * the local APIC's timer, IRR and ISR) and presses and releases Shift on the
 * emulated keyboard (HMP `sendkey`), over QMP. A healthy test host always has
 * a thread waking within that time, and a false alarm costs one key press on
 * a console nobody reads.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';

/** How long the QEMU process may use no CPU at all before run.ts nudges it. */
export const STALL_LIMIT_MS = 20_000;
/** How many times one run nudges its test host; a host that needs more is left to its time-out. */
export const MAX_NUDGES = 5;

/**
 * A count that grows whenever a thread of `pid` runs: the context switches of
 * all its threads (exact: a thread that wakes and sleeps again adds one) plus
 * the process's utime + stime in clock ticks. Null once the process is gone.
 * (schedstat's run time would be finer, but reads 0 on some kernels.)
 */
export function processActivity(pid: number): number | null {
  try {
    let n = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s*(\d+)/gm)) n += Number(m[1]);
    }
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces), from field 3 (state) on: utime is 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    n += Number(rest[11]) + Number(rest[12]);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

/**
 * Says when a counter has not moved for `limitMs`. Feed it samples; it returns
 * true once per still stretch of that length, then starts counting again.
 */
export class StallWatch {
  private last: number | null = null;
  private since = 0;

  constructor(private readonly limitMs: number) {}

  observe(ticks: number | null, nowMs: number): boolean {
    if (ticks === null) return false;
    if (ticks !== this.last) {
      this.last = ticks;
      this.since = nowMs;
      return false;
    }
    if (nowMs - this.since < this.limitMs) return false;
    this.since = nowMs;
    return true;
  }
}

/** One QMP command: `execute` and its `arguments`. */
export interface QmpCommand {
  execute: string;
  arguments?: Record<string, unknown>;
}

/**
 * Runs `commands` in order on QEMU's QMP socket at `path` and resolves with
 * each one's `return` value. Rejects on a QMP error (naming the command), a
 * closed socket, or after `timeoutMs` in all.
 */
export function qmp(path: string, commands: readonly QmpCommand[], timeoutMs = 5000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    const results: unknown[] = [];
    // The greeting comes first; then one reply per command sent, capabilities negotiation first. Each command
    // carries its index as `id`, which QEMU echoes: a reply with another id (or none) is not its answer.
    const queue: QmpCommand[] = [{ execute: 'qmp_capabilities' }, ...commands];
    let sent = 0;
    let greeted = false;
    let buf = '';
    let done = false;
    const end = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(results);
    };
    const timer = setTimeout(() => end(new Error(`QMP at ${path}: no answer within ${timeoutMs} ms`)), timeoutMs);
    const sendNext = () => {
      const c = queue[0];
      if (!c) return end();
      sock.write(JSON.stringify({ ...c, id: ++sent }) + '\n');
    };
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let i: number;
      // Stop at the end: a line after the last answer must not reach queue.shift() below.
      while (!done && (i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        let msg: { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string; id?: unknown };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          return end(new Error(`QMP at ${path}: not JSON: ${line.slice(0, 200)}`));
        }
        if (msg.event !== undefined) continue;
        if (!greeted) {
          if (msg.QMP === undefined) return end(new Error(`QMP at ${path}: no greeting`));
          greeted = true;
          sendNext();
          continue;
        }
        if (msg.id !== sent) continue;
        const c = queue.shift();
        if (!c) return end();
        if (msg.error) return end(new Error(`QMP ${c.execute}: ${msg.error.desc ?? JSON.stringify(msg.error)}`));
        if (c.execute !== 'qmp_capabilities') results.push(msg.return);
        sendNext();
      }
    });
    sock.on('error', (e) => end(new Error(`QMP at ${path}: ${e.message}`)));
    sock.on('close', () => end(new Error(`QMP at ${path}: closed before every command was answered`)));
  });
}

/**
 * The lines of HMP `info registers` worth a log line: the instruction pointer with the flags, privilege level
 * and halted state (x86: `RIP=... RFL=... CPL=... HLT=...`; arm64: `PC=...`), and the control registers.
 */
export function registerSummary(infoRegisters: string): string {
  const keep = infoRegisters.split('\n').filter((l) => /^\s*(RIP|EIP|PC|CR0|EFER)=/.test(l) || /HLT=/.test(l));
  return keep.map((l) => l.trim().replace(/\s+/g, ' ')).join(' | ');
}

/** The local APIC's timer, ISR and IRR lines of HMP `info lapic` (x86 only; '' elsewhere). */
export function lapicSummary(infoLapic: string): string {
  return infoLapic.split('\n').filter((l) => /^\s*(LVTT|Timer|ISR|IRR|APR)\b/.test(l)).map((l) => l.trim().replace(/\s+/g, ' ')).join(' | ');
}

async function hmp(qmpPath: string, commandLine: string): Promise<string> {
  const [r] = await qmp(qmpPath, [{ execute: 'human-monitor-command', arguments: { 'command-line': commandLine } }]);
  return typeof r === 'string' ? r.trim() : '';
}

/**
 * The nudge: the emulated CPU's state for the log, then a Shift key press and
 * release. Resolves with a line for the log that says both (or why either
 * failed); never rejects.
 */
export async function nudge(qmpPath: string): Promise<string> {
  let state: string;
  try {
    const regs = registerSummary(await hmp(qmpPath, 'info registers'));
    const lapic = lapicSummary(await hmp(qmpPath, 'info lapic'));
    state = [regs, lapic].filter(Boolean).join(' | ') || 'not in the answers';
  } catch (e) {
    state = `unknown (${(e as Error).message})`;
  }
  try {
    // HMP answers a command it cannot carry out with text, not a QMP error.
    const said = await hmp(qmpPath, 'sendkey shift');
    return said ? `the key press failed (${said}); its CPU: ${state}` : `pressed Shift on its keyboard; its CPU before: ${state}`;
  } catch (e) {
    return `the key press failed (${(e as Error).message}); its CPU: ${state}`;
  }
}
