import test from 'ava';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LINUX_X86_GROUPS, countTier, failureLines, linuxX86Groups } from '../../run-tests.js';

test('countTier: ava closing lines, with tier prefixes and [skip] lines moved from passed to skipped', (t) => {
  const out = [
    '[unit]   ✔ a › b',
    '[skip] x: needs KVM: no /dev/kvm on this machine',
    '[skip] y: needs KVM: no /dev/kvm on this machine',
    '  ─',
    '',
    '  12 tests passed',
    '  1 test failed',
    '  3 tests skipped',
  ].join('\n');
  t.deepEqual(countTier(out), { passed: 10, failed: 1, skipped: 5 });
});

test('countTier: uncaught exceptions and unhandled rejections count as failures; nothing printed counts nothing', (t) => {
  t.deepEqual(countTier('  4 tests passed\n  1 uncaught exception\n  2 unhandled rejections\n'), { passed: 4, failed: 3, skipped: 0 });
  t.deepEqual(countTier('flintvm-host: test host setup failed\n'), { passed: 0, failed: 0, skipped: 0 });
});

test('countTier: with failures ava prints no passed total, so the ✔ lines count', (t) => {
  const out = ['[integration]   ✔ a › one', '[integration]   ✔ a › two (3s)', '[integration]   ✘ [fail]: a › three', '[integration]   1 test failed'].join('\n');
  t.deepEqual(countTier(out), { passed: 2, failed: 1, skipped: 0 });
});

test('failureLines: the ✘ and ◌ lines, without tier tags or indentation; passes and details are left out', (t) => {
  const out = [
    '[linux-x86_64:boot]   ✔ boot › one (3s)',
    '[linux-x86_64:boot]   ✘ [fail]: boot › two Error thrown in test',
    '[linux-x86_64:boot]   ✘ Timed out while running tests',
    '[linux-x86_64:boot]   ◌ boot › three',
    '[linux-x86_64:boot]   Error: expected ✘ here',
    '  ✘ [fail]: unit › four   ',
  ].join('\n');
  t.deepEqual(failureLines(out), ['✘ [fail]: boot › two Error thrown in test', '✘ Timed out while running tests', '◌ boot › three', '✘ [fail]: unit › four']);
  t.deepEqual(failureLines('  ✔ a\n  2 tests passed\n'), []);
});

test('countTier: a test whose title mentions "tests passed" is not a summary line', (t) => {
  t.deepEqual(countTier('  ✔ unit › 3 tests passed yesterday\n  2 tests passed\n'), { passed: 2, failed: 0, skipped: 0 });
});

test('linuxX86Groups: the named groups first, in order, then each ungrouped file alone; missing files drop out', (t) => {
  const files = ['dist/test/linux/boot.test.js', 'dist/test/linux/new-thing.test.js', 'dist/test/linux/snapshot.test.js', 'dist/test/linux/lifecycle.test.js'];
  t.deepEqual(linuxX86Groups(files), [
    ['dist/test/linux/lifecycle.test.js'],
    ['dist/test/linux/boot.test.js'],
    ['dist/test/linux/snapshot.test.js'],
    ['dist/test/linux/new-thing.test.js'],
  ]);
});

test('LINUX_X86_GROUPS names only test files that exist, each once', (t) => {
  const names = LINUX_X86_GROUPS.flat();
  t.is(new Set(names).size, names.length, 'a file in two groups would run twice');
  const dir = fileURLToPath(new URL('../../../../test/linux/', import.meta.url));
  for (const n of names) t.true(existsSync(`${dir}${n}.test.ts`), `test/linux/${n}.test.ts exists`);
});
