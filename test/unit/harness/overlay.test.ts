/**
 * The test host's overlay archive (test/hosts/run.ts writeOverlay): what it
 * carries of the project, and how it treats symbolic links, loops included.
 */
import test from 'ava';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeOverlay } from '../../hosts/run.js';

/** Entries of a newc cpio archive: name -> mode (the TRAILER excluded). */
function cpioNames(buf: Buffer): Map<string, number> {
  const out = new Map<string, number>();
  let off = 0;
  const pad4 = (n: number): number => (n + 3) & ~3;
  while (off + 110 <= buf.length) {
    const magic = buf.toString('latin1', off, off + 6);
    if (magic !== '070701') break;
    const field = (i: number): number => parseInt(buf.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    if (name === 'TRAILER!!!') break;
    out.set(name, mode);
    off = pad4(pad4(off + 110 + nameSize) + size);
  }
  return out;
}

/** A minimal project (package.json, test/hosts/, dist/) plus a directory outside it. */
function fixture(t: import('ava').ExecutionContext): { project: string; outside: string; archive: string } {
  const base = mkdtempSync(join(tmpdir(), 'flintvm-overlay-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const project = join(base, 'project');
  const outside = join(base, 'outside');
  mkdirSync(join(project, 'test/hosts'), { recursive: true });
  mkdirSync(join(project, 'dist/lib'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(project, 'package.json'), '{"name":"x"}');
  writeFileSync(join(project, 'dist/lib/a.js'), 'a');
  writeFileSync(join(outside, 'o.txt'), 'o');
  return { project, outside, archive: join(base, 'overlay.cpio') };
}

function write(project: string, archive: string): Map<string, number> {
  const fd = openSync(archive, 'w');
  try {
    writeOverlay(fd, { projectDir: project, guestDir: null, env: {}, command: ['true'] });
  } finally {
    closeSync(fd);
  }
  return cpioNames(readFileSync(archive));
}

test('the overlay carries the project; a relative link inside it stays a link, a link outside is followed', (t) => {
  const { project, outside, archive } = fixture(t);
  symlinkSync('lib/a.js', join(project, 'dist/inside-link.js'));
  symlinkSync(outside, join(project, 'dist/ext'));
  const names = write(project, archive);
  t.true(names.has('work/project/package.json'));
  t.true(names.has('work/project/dist/lib/a.js'));
  t.is(names.get('work/project/dist/inside-link.js')! & 0o170000, 0o120000, 'kept as a symlink');
  t.is(names.get('work/project/dist/ext')! & 0o170000, 0o040000, 'followed: a directory in the archive');
  t.true(names.has('work/project/dist/ext/o.txt'));
  t.true(names.has('work/cmd'));
});

test('a followed link that leads back to a directory above it is an error naming the link, not an endless copy', (t) => {
  const { project, outside, archive } = fixture(t);
  symlinkSync(outside, join(project, 'dist/ext'));
  // outside/back -> outside: followed from dist/ext, it leads back to dist/ext itself.
  symlinkSync(outside, join(outside, 'back'));
  const e = t.throws(() => write(project, archive));
  t.regex(e!.message, /dist\/ext\/back is a symbolic link back to a directory that contains it/);
});

test('two links to one outside directory (no loop) are both copied', (t) => {
  const { project, outside, archive } = fixture(t);
  symlinkSync(outside, join(project, 'dist/one'));
  symlinkSync(outside, join(project, 'dist/two'));
  const names = write(project, archive);
  t.true(names.has('work/project/dist/one/o.txt'));
  t.true(names.has('work/project/dist/two/o.txt'));
});

test('the overlay carries the commands (bin/*.cjs) and the launcher they require, not the TypeScript sources', (t) => {
  const { project, archive } = fixture(t);
  mkdirSync(join(project, 'bin'));
  for (const f of ['flintvm.cjs', 'launch.cjs', 'flintvm.ts']) writeFileSync(join(project, 'bin', f), '');
  const names = write(project, archive);
  t.true(names.has('work/project/bin/flintvm.cjs'));
  t.true(names.has('work/project/bin/launch.cjs'), 'bin/flintvm.cjs requires it: without it every command fails in the test host');
  t.false(names.has('work/project/bin/flintvm.ts'));
});
