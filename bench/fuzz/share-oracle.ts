/**
 * What the 9P and FUSE targets share: the starting tree of the share (files,
 * directories, symlinks that point out of it), the hostile names the guest
 * uses, and the oracles on the host side: nothing outside the share changes
 * (the directory around the share root is snapshotted before and compared
 * after), no device node appears inside the share, and no reply carries the
 * bytes of the secret file that sits next to the share.
 */
import { lstatSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import type { Rng } from './prng.js';
import { check } from './target.js';

/** The secret's content (written by the harnesses into `outside/secret`). */
export const SECRET = new TextEncoder().encode('TOP-SECRET');

/** Populates a fresh share: a few files and directories, and symlinks that lead out of it. */
export function populateShare(share: string): void {
  mkdirSync(join(share, 'a'));
  mkdirSync(join(share, 'a', 'b'));
  writeFileSync(join(share, 'f'), 'hello\n');
  writeFileSync(join(share, 'a', 'g'), new Uint8Array(5000).fill(7));
  symlinkSync('../outside/secret', join(share, 'up'));
  symlinkSync('/etc/passwd', join(share, 'abs'));
  symlinkSync('..', join(share, 'a', 'dotdot'));
  symlinkSync('../../outside', join(share, 'a', 'out'));
}

/** Names the guest uses: the tree's own, new ones, and hostile ones. */
const NAMES = ['a', 'b', 'f', 'g', 'up', 'abs', 'dotdot', 'out', 'new', 'n2', 'secret', 'outside', 'share', '.', '..', '', 'a/b', '../outside', '/etc', 'x'.repeat(255), 'x'.repeat(256), 'nul\0x', '\u00e9\u{1f600}'];

export function pickName(rng: Rng): Uint8Array {
  if (rng.bool(0.05)) return rng.bytes(rng.int(20));
  return new TextEncoder().encode(rng.pick(NAMES));
}

/** The tree under `dir` (byte names: a guest may create names that are not UTF-8): path -> mode, size, mtime, links, owner. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: Buffer, rel: string) => {
    for (const name of readdirSync(d, { encoding: 'buffer' }).sort(Buffer.compare)) {
      const p = Buffer.concat([d, Buffer.from('/'), name]);
      const st = lstatSync(p);
      const key = `${rel}${name.toString('latin1')}`;
      out[key] = `${st.mode}:${st.size}:${st.mtimeMs}:${st.nlink}:${st.uid}:${st.gid}`;
      if (st.isDirectory()) walk(p, `${key}/`);
    }
  };
  walk(Buffer.from(dir), '');
  return out;
}

/** The host around the share: everything under `dir` except the share's own content. */
export class HostWatch {
  private readonly before: string;

  constructor(private readonly dir: string) {
    this.before = this.outside();
  }

  private outside(): string {
    const s = snapshot(this.dir);
    // The share's own entry changes (mtime, link count) when the guest creates files in it; its content is the guest's.
    return JSON.stringify(Object.entries(s).filter(([k]) => k !== 'share' && !k.startsWith('share/')));
  }

  /** Throws a FuzzFailure when anything outside the share changed or a device node appeared inside it. */
  check(share: string): void {
    const now = this.outside();
    check(now === this.before, () => `host files outside the share changed: before ${this.before}, after ${now}`);
    const walk = (d: Buffer): void => {
      for (const name of readdirSync(d, { encoding: 'buffer' })) {
        const p = Buffer.concat([d, Buffer.from('/'), name]);
        const st = lstatSync(p);
        check(!st.isBlockDevice() && !st.isCharacterDevice(), `a device node appeared in the share: ${p.toString('latin1')}`);
        if (st.isDirectory()) walk(p);
      }
    };
    walk(Buffer.from(share));
  }
}

/** Throws when `reply` contains the secret's bytes. */
export function checkNoSecret(reply: Uint8Array, what: string): void {
  const first = SECRET[0]!;
  for (let i = reply.indexOf(first); i >= 0 && i + SECRET.length <= reply.length; i = reply.indexOf(first, i + 1)) {
    let k = 1;
    while (k < SECRET.length && reply[i + k] === SECRET[k]) k++;
    check(k < SECRET.length, `${what}: a reply carries the content of a file outside the share`);
  }
}
