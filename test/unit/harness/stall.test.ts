/**
 * test/hosts/stall.ts: noticing a test host that no longer runs, and the QMP
 * client that nudges it (against a Unix socket that speaks QMP's framing, and
 * against a real test host where one can boot).
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { StallWatch, lapicSummary, nudge, processActivity, qmp, registerSummary } from '../../hosts/stall.js';
import { haveTestHostQemu, runInTestHost } from '../../hosts/run.js';
import { skipOrFail } from '../../helpers/kvm.js';

test('StallWatch fires once per still stretch of its limit, and not while the count moves', (t) => {
  const w = new StallWatch(60_000);
  t.false(w.observe(5, 0));
  t.false(w.observe(5, 59_999));
  t.true(w.observe(5, 60_000));
  // Counting starts again from the nudge.
  t.false(w.observe(5, 100_000));
  t.true(w.observe(5, 120_000));
  // A move resets it; a process that is gone (null) never fires.
  t.false(w.observe(6, 150_000));
  t.false(w.observe(6, 209_999));
  t.false(w.observe(null, 500_000));
  t.true(w.observe(6, 500_000));
});

test('processActivity grows while a thread of the process runs and is null for a process that is gone', async (t) => {
  const before = processActivity(process.pid);
  t.is(typeof before, 'number');
  const w = new Worker('const end = Date.now() + 200; while (Date.now() < end); setTimeout(() => {}, 20);', { eval: true });
  await new Promise((r) => w.once('exit', r));
  t.true(processActivity(process.pid)! > before!);
  t.is(processActivity(2 ** 22 + 12345), null);
});

/** A Unix socket server that greets like QEMU and answers each line with `reply(command)`. */
async function fakeQmp(t: { teardown(f: () => void): void }, reply: (c: { execute: string; arguments?: unknown }) => object | null, after = ''): Promise<{ path: string; seen: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'flintvm-qmp-'));
  const path = join(dir, 'qmp.sock');
  const seen: string[] = [];
  const socks = new Set<Socket>();
  const server = createServer((s) => {
    socks.add(s);
    s.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const c = JSON.parse(buf.slice(0, i)) as { execute: string; id?: number };
        buf = buf.slice(i + 1);
        seen.push(c.execute);
        // An event first, as QEMU may send one at any time.
        s.write('{"event": "RTC_CHANGE", "data": {}}\r\n');
        const r = reply(c);
        if (r === null) s.end();
        else s.write(JSON.stringify({ ...r, id: c.id }) + '\r\n' + after);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.teardown(() => {
    for (const s of socks) s.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, seen };
}

test('qmp negotiates capabilities, skips events and returns each command\'s answer in order', async (t) => {
  const q = await fakeQmp(t, (c) => ({ return: c.execute === 'query-status' ? { status: 'running' } : {} }));
  t.deepEqual(await qmp(q.path, [{ execute: 'query-status' }, { execute: 'inject-nmi' }]), [{ status: 'running' }, {}]);
  t.deepEqual(q.seen, ['qmp_capabilities', 'query-status', 'inject-nmi']);
});

test('qmp takes only the answer that carries its command\'s id', async (t) => {
  // An answer without an id in the same write as each real answer: it must not be taken for the next one.
  const q = await fakeQmp(t, (c) => ({ return: c.execute === 'query-status' ? 'ok' : {} }), '{"return": "stray"}\r\n');
  const r = await qmp(q.path, [{ execute: 'query-status' }]);
  t.deepEqual(r, ['ok']);
});

test('qmp rejects naming the command QEMU refused, and when the socket closes or is not there', async (t) => {
  const q = await fakeQmp(t, (c) => (c.execute === 'inject-nmi' ? { error: { class: 'GenericError', desc: 'no NMI here' } } : { return: {} }));
  await t.throwsAsync(qmp(q.path, [{ execute: 'inject-nmi' }]), { message: 'QMP inject-nmi: no NMI here' });
  const closing = await fakeQmp(t, (c) => (c.execute === 'qmp_capabilities' ? { return: {} } : null));
  await t.throwsAsync(qmp(closing.path, [{ execute: 'query-status' }]), { message: /closed before every command was answered/ });
  await t.throwsAsync(qmp(join(tmpdir(), 'flintvm-no-such-qmp.sock'), []), { message: /ENOENT/ });
});

test('nudge logs the CPU\'s state, presses Shift, and reports a key press HMP refused instead of throwing', async (t) => {
  const answers: Record<string, string> = {
    'info registers': 'RAX=0 RBX=0\r\nRIP=ffffffff81000000 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n',
    'info lapic': 'LVTT\t 0x000000ec active-hi edge one-shot Fixed (vec 236)\r\nISR\t (none)\r\nIRR\t 236 \r\n',
    'sendkey shift': '',
  };
  const hmpLines: string[] = [];
  const q = await fakeQmp(t, (c) => {
    const line = (c.arguments as { 'command-line'?: string } | undefined)?.['command-line'] ?? '';
    if (c.execute === 'human-monitor-command') hmpLines.push(line);
    return { return: c.execute === 'human-monitor-command' ? answers[line] ?? `unknown command: '${line}'` : {} };
  });
  t.is(await nudge(q.path), 'pressed Shift on its keyboard; its CPU before: RIP=ffffffff81000000 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1 | LVTT 0x000000ec active-hi edge one-shot Fixed (vec 236) | ISR (none) | IRR 236');
  t.deepEqual(hmpLines, ['info registers', 'info lapic', 'sendkey shift']);
  answers['sendkey shift'] = 'Error: no keyboard';
  t.regex(await nudge(q.path), /^the key press failed \(Error: no keyboard\); its CPU: RIP=/);
});

test('lapicSummary keeps the timer and the pending and in-service vectors', (t) => {
  const info = 'dumping local APIC state for CPU 0\n\nLVT0\t 0x00010700 masked\nLVTT\t 0x000000ec one-shot (vec 236)\nTimer\t DCR=0x3 (divide by 16) initial_count = 61386 current_count = 0\nSPIV\t 0x000001ff\nISR\t (none)\nIRR\t 236 \n\nAPR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0x10\n';
  t.is(lapicSummary(info), 'LVTT 0x000000ec one-shot (vec 236) | Timer DCR=0x3 (divide by 16) initial_count = 61386 current_count = 0 | ISR (none) | IRR 236 | APR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0x10');
  t.is(lapicSummary(''), '');
});

test('registerSummary keeps the instruction pointer line and the control registers', (t) => {
  const info = [
    'RAX=0000000000000000 RBX=0000000000000001 RCX=0000000000000000 RDX=0000000000000000',
    'RIP=ffffffff81e3c2ab RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1',
    'ES =0000 0000000000000000 ffffffff 00c00000',
    'CR0=80050033 CR2=00007f0000000000 CR3=0000000102000000 CR4=00350ef0',
    'EFER=0000000000001d01',
  ].join('\r\n');
  t.is(registerSummary(info), 'RIP=ffffffff81e3c2ab RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1 | CR0=80050033 CR2=00007f0000000000 CR3=0000000102000000 CR4=00350ef0 | EFER=0000000000001d01');
  t.is(registerSummary('PC=ffff800080000000 X00=0\n'), 'PC=ffff800080000000 X00=0');
});

// The real thing: the key press reaches a running test host's kernel as a keyboard interrupt.
test('a key press sent over a running x86_64 test host\'s QMP socket reaches its kernel', async (t) => {
  if (!haveTestHostQemu('x86_64')) return skipOrFail(t, 'no qemu-system-x86_64 for a test host (test/setup.sh installs it)');
  t.timeout(300_000);
  let sent: Promise<string> | undefined;
  // The i8042 line of /proc/interrupts before and after the nudge (the keyboard's IRQ 1).
  const count = "$(awk '/i8042/ { print $2; exit }' /proc/interrupts)";
  const r = await runInTestHost({
    arch: 'x86_64', guestDir: null, timeoutMs: 240_000, onOutput: () => {}, onLog: () => {},
    command: `a=${count}; sleep 5; echo "KBD \${a:-none} ${count}"`,
    onReady: ({ qmpPath }) => { sent = new Promise((res) => setTimeout(() => void nudge(qmpPath).then(res), 1500)); },
  });
  t.is(r.exitCode, 0, r.error);
  t.regex((await sent) ?? '', /^pressed Shift on its keyboard; its CPU before: RIP=.* \| LVTT /);
  const m = /^KBD (\d+) (\d+)\s*$/m.exec(r.commandOutput);
  t.truthy(m, r.commandOutput);
  t.true(Number(m![2]) > Number(m![1]), `i8042 interrupts ${m![1]} -> ${m![2]}`);
  t.is(r.nudges, 0);
});
