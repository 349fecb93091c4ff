/**
 * A real tarball for the shared-directory benchmark and tests: the data
 * archive of a Debian binary package (`apt-get download`; these machines have
 * the Debian mirror but no deb-src), i.e. the tree dpkg would install, made by
 * dpkg-deb with GNU tar: directories, regular files, symlinks, real modes and
 * mtimes. Cached outside the clone in
 * `${FLINTVM_CACHE:-~/.cache/flintvm}/fixtures/`, keyed by the package's
 * file name (name, version, architecture).
 *
 * - tzdata (the default for the tests): ~900 files, ~365 symlinks, 50
 *   directories, 1.4 MB unpacked; its data.tar.xz is ~300 KB.
 * - perl-modules-5.36 (the default for the benchmark): ~1200 files, ~210
 *   directories, 17 MB unpacked: a source-tree-like mix of small and large files.
 *
 * Usage: node dist/bench/share-fixture.js [--package tzdata] [--stage DIR]
 *   prints the cached .tar.xz; with --stage, makes DIR a guest directory for
 *   the test host (symlinks to the guest images plus `share-fixture.tar.xz`),
 *   to run the share tarball test on the Debian tree:
 *   node dist/test/hosts/cli.js --arch x86_64 --guest-dir DIR --files dist/test/linux/share-tarball.test.js
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultGuestImages } from '../lib/guest-images.js';
import { isMain } from './common.js';

/** The file name the tests look for in the guest directory ($FLINTVM_GUEST_DIR). */
export const SHARE_FIXTURE_NAME = 'share-fixture.tar.xz';

export interface DebianTarball {
  /** Package name and version, e.g. `tzdata 2024a-0+deb12u1`. */
  package: string;
  deb: string;
  /** The package's data.tar.xz, as shipped. */
  tarXz: string;
  /** The same archive decompressed. */
  tar: string;
}

function cacheDir(): string {
  return join(process.env.FLINTVM_CACHE || join(homedir(), '.cache/flintvm'), 'fixtures');
}

/** Downloads (once) Debian package `pkg` and extracts its data archive, .tar.xz and .tar. */
export function debianTarball(pkg: string): DebianTarball {
  const show = execFileSync('apt-cache', ['show', '--no-all-versions', pkg], { encoding: 'utf8' });
  const version = /^Version: (.+)$/m.exec(show)?.[1];
  const filename = /^Filename: (.+)$/m.exec(show)?.[1];
  if (!version || !filename) throw new Error(`apt-cache show ${pkg}: no Version/Filename (apt-get update?)`);
  const dir = cacheDir();
  mkdirSync(dir, { recursive: true });
  const deb = join(dir, basename(filename));
  const stem = deb.replace(/\.deb$/, '');
  const tarXz = `${stem}.data.tar.xz`;
  const tar = `${stem}.data.tar`;
  if (!existsSync(deb)) {
    const tmp = mkdtempSync(join(dir, '.dl-'));
    try {
      chmodSync(tmp, 0o777); // apt's _apt user downloads into it when run as root
      execFileSync('apt-get', ['download', `${pkg}=${version}`], { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'] });
      const got = readdirSync(tmp).find((f) => f.endsWith('.deb'));
      if (!got) throw new Error(`apt-get download ${pkg}=${version} left no .deb`);
      renameSync(join(tmp, got), deb);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  if (!existsSync(tarXz)) {
    const members = execFileSync('ar', ['t', deb], { encoding: 'utf8' }).split('\n');
    if (!members.includes('data.tar.xz')) throw new Error(`${deb} has no data.tar.xz (members: ${members.join(' ')})`);
    execFileSync('sh', ['-c', 'ar p "$1" data.tar.xz > "$2.tmp" && mv "$2.tmp" "$2"', 'sh', deb, tarXz]);
  }
  if (!existsSync(tar)) execFileSync('sh', ['-c', 'xz -dc "$1" > "$2.tmp" && mv "$2.tmp" "$2"', 'sh', tarXz, tar]);
  return { package: `${pkg} ${version}`, deb, tarXz, tar };
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { package: { type: 'string', default: 'tzdata' }, stage: { type: 'string' } } });
  const t = debianTarball(values.package);
  if (values.stage) {
    const imgs = await defaultGuestImages();
    mkdirSync(values.stage, { recursive: true });
    for (const f of [imgs.vmlinux, imgs.bzImage, imgs.initrd, imgs.toolsInitrd, join(imgs.dir, 'manifest.json')]) {
      const link = join(values.stage, basename(f));
      rmSync(link, { force: true });
      if (existsSync(f)) symlinkSync(f, link);
    }
    rmSync(join(values.stage, SHARE_FIXTURE_NAME), { force: true });
    symlinkSync(t.tarXz, join(values.stage, SHARE_FIXTURE_NAME));
    console.error(`share-fixture: ${t.package}; guest directory ${values.stage}`);
    console.log(values.stage);
  } else {
    console.error(`share-fixture: ${t.package}`);
    console.log(t.tarXz);
  }
}
