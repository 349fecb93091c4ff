/**
 * `flintvm run -e/-w/-t`: the guest command's shell string (guest/init runs it with `sh -c`), checked
 * against a real POSIX shell here.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestCommandCmdline, guestCommandScript } from '../../../lib/guest-command.js';

const dir = realpathSync(mkdtempSync(join(tmpdir(), 'flintvm-gc-')));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function sh(script: string) {
  return spawnSync('sh', ['-c', script], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
}

test('-e sets the environment and -w the directory; values with quotes and spaces survive', (t) => {
  const nasty = `it's "quoted" $HOME \`id\` ; rm -rf /`;
  const script = guestCommandScript(['sh', '-c', 'printf "%s|%s|%s" "$A" "$B_2" "$PWD"'], { env: { A: nasty, B_2: '' }, cwd: dir });
  const r = sh(script);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, `${nasty}||${dir}`);
});

test("the command's exit status comes through; a missing -w directory fails without running it", (t) => {
  t.is(sh(guestCommandScript(['sh', '-c', 'exit 7'], { env: { X: '1' }, cwd: dir })).status, 7);
  const r = sh(guestCommandScript(['sh', '-c', 'echo ran'], { cwd: join(dir, 'missing') }));
  t.not(r.status, 0);
  t.notRegex(r.stdout, /ran/);
});

test('-t wraps the command for a controlling terminal (busybox setsid + cttyhack in the guest)', (t) => {
  const s = guestCommandScript(['top'], { tty: true, env: { TERM: 'xterm' } });
  t.regex(s, /^setsid cttyhack sh -c '/);
  t.true(guestCommandScript(['top']) === 'top', 'no wrapper without options');
});

test('bad names and empty directories are refused; the cmdline parameter is base64 of the script', (t) => {
  t.throws(() => guestCommandScript(['true'], { env: { '1X': 'a' } }), { instanceOf: RangeError });
  t.throws(() => guestCommandScript(['true'], { env: { 'A B': 'a' } }), { instanceOf: RangeError });
  t.throws(() => guestCommandScript(['true'], { cwd: '' }), { instanceOf: RangeError });
  const opts = { env: { A: '1' }, cwd: '/tmp' };
  t.is(Buffer.from(guestCommandCmdline(['id'], opts).slice('flintvm.cmd='.length), 'base64').toString(), guestCommandScript(['id'], opts));
});
