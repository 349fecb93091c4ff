/**
 * shellQuote and the flintvm.cmd= parameter, checked against a real POSIX
 * shell (/bin/sh) rather than against our own idea of quoting.
 */
import test from 'ava';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { guestCommandCmdline, shellQuote } from '../../../lib/guest-command.js';

/** Arguments that break naive quoting. */
const NASTY = [
  'plain', 'with space', '  leading and trailing  ', "it's", "''", "'", '"double"', '\\back\\slash\\', '$HOME', '${PATH}',
  '$(id)', '`id`', 'a;b', 'a && b', 'a|b', '>out', '<in', '*', '?', '[a-z]', '~', '~root', '#comment', '!',
  'tab\there', 'new\nline', '\n', 'trailing newline\n', '', ' ', '-n', '--', 'x=1', 'unicode: héllo 日本語 🚀', '\u00a0nbsp',
  "mixed 'single' and \"double\" and `back` and $dollar",
];

/** Runs `script` with sh -c and returns its stdout as UTF-8. */
function sh(script: string): string {
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sh failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

test('each nasty argument survives sh -c exactly (printf %s, no separator)', (t) => {
  for (const arg of NASTY) t.is(sh(`printf '%s' ${shellQuote(arg)}`), arg, JSON.stringify(arg));
});

test('all nasty arguments at once stay separate words: printf "%s\\n" ARGS', (t) => {
  const out = sh(`printf "%s\\n" ${NASTY.map(shellQuote).join(' ')}`);
  t.is(out, NASTY.map((a) => `${a}\n`).join(''));
  // And the word count is right (an unquoted empty string would vanish).
  t.is(sh(`set -- ${NASTY.map(shellQuote).join(' ')}; printf %s "$#"`), String(NASTY.length));
});

test('safe words are left bare, everything else is single-quoted', (t) => {
  t.is(shellQuote('abc-DEF_1.2/x:y@z,%+='), 'abc-DEF_1.2/x:y@z,%+=');
  t.is(shellQuote(''), "''");
  t.is(shellQuote('a b'), "'a b'");
  t.is(shellQuote("it's"), `'it'\\''s'`);
});

test('property: random strings round-trip through sh', (t) => {
  // Any string without NUL (argv cannot hold one) that is valid UTF-16 (so UTF-8 round-trips).
  const arg = fc.string({ unit: 'binary', maxLength: 24 }).filter((s) => !s.includes('\0') && s.isWellFormed());
  fc.assert(
    fc.property(fc.array(arg, { minLength: 1, maxLength: 4 }), (args) => {
      const out = sh(`for a in ${args.map(shellQuote).join(' ')}; do printf '%s|' "$a"; done`);
      if (out !== args.map((a) => `${a}|`).join('')) throw new Error(`mismatch: ${JSON.stringify(args)} -> ${JSON.stringify(out)}`);
    }),
    { numRuns: 150 },
  );
  t.pass();
});

test('flintvm.cmd= carries base64 of the quoted command, with no spaces', (t) => {
  const argv = ['echo', 'hello world', "it's"];
  const p = guestCommandCmdline(argv);
  t.regex(p, /^flintvm\.cmd=[A-Za-z0-9+/]+=*$/);
  const decoded = Buffer.from(p.slice('flintvm.cmd='.length), 'base64').toString('utf8');
  t.is(decoded, argv.map(shellQuote).join(' '));
  t.is(sh(decoded), 'hello world it\'s\n');
});

test('the decoded command, run by sh -c as init does, sees exactly argv', (t) => {
  const p = guestCommandCmdline(['printf', '%s\\n', ...NASTY]);
  const decoded = Buffer.from(p.slice('flintvm.cmd='.length), 'base64').toString('utf8');
  t.is(sh(decoded), NASTY.map((a) => `${a}\n`).join(''));
});

test('an empty argv is refused', (t) => {
  t.throws(() => guestCommandCmdline([]), { instanceOf: RangeError });
});
