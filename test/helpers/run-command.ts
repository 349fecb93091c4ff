import { spawn } from 'node:child_process';

/** A finished command: its exit code (null when it was killed, e.g. at the time limit), stdout and stderr. */
export interface Run { code: number | null; stdout: Buffer; stderr: string }

/**
 * Runs `cmd` with `input` on its stdin and resolves when it is done; killed after `timeoutMs`. `until: 'exit'`
 * resolves when the process itself exits (plus 100 ms for the last output), for commands that leave a detached
 * child holding their stdout open (flintvm-oci create); the default, 'close', waits for the pipes to close.
 */
export function runCommand(cmd: string, args: string[], input?: Buffer, o: { timeoutMs?: number; until?: 'close' | 'exit' } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? Buffer.alloc(0));
    child.on('error', (e) => { err += e.message; });
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 4 * 60_000);
    child.on(o.until ?? 'close', (code: number | null) => {
      clearTimeout(timer);
      const done = () => resolve({ code, stdout: Buffer.concat(out), stderr: err });
      if (o.until === 'exit') setTimeout(done, 100);
      else done();
    });
  });
}
