/**
 * The layering of ARCHITECTURE.md, checked on the sources: lib/ is the
 * ground floor and imports nothing from devices/ or arch/, except its
 * composition root lib/vm/ (the builder, the device registry, the wiring of
 * devices to the vCPU and I/O workers, the arch platforms); devices/ and
 * arch/ never import lib/vm or the public surface above it.
 */
import test from 'ava';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(ROOT, dir))) {
    const rel = join(dir, name);
    if (statSync(join(ROOT, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

/** Repository-relative targets of a file's relative imports (static, dynamic and `new URL(...)` module references). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*|new URL\(\s*)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specs.map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)));
}

test('lib/ imports devices/ and arch/ only from its composition root, lib/vm/', (t) => {
  const offenders: string[] = [];
  for (const f of sources('lib')) {
    if (f.startsWith('lib/vm/')) continue;
    for (const target of importsOf(f)) if (/^(devices|arch)\//.test(target)) offenders.push(`${f} -> ${target}`);
  }
  t.deepEqual(offenders, []);
});

test('devices/ and arch/ import no composition root and no public surface (lib/vm, lib/microvm, lib/config, lib/index)', (t) => {
  const offenders: string[] = [];
  for (const f of [...sources('devices'), ...sources('arch')]) {
    for (const target of importsOf(f)) {
      if (/^lib\/(vm\/|microvm\.|config\.|index\.|worker-pool\.|guest-images\.)/.test(target)) offenders.push(`${f} -> ${target}`);
    }
  }
  t.deepEqual(offenders, []);
});

test('lib/sys.ts is the only reader of process.arch and the only module that loads libc', (t) => {
  const arch: string[] = [];
  const libcLoads: string[] = [];
  for (const f of [...sources('lib'), ...sources('devices'), ...sources('arch')]) {
    if (f === 'lib/sys.ts') continue;
    // Comments may mention them; code may not.
    const code = readFileSync(join(ROOT, f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    // lib/koffi-addon.ts (below lib/koffi.ts and lib/sys.ts, which load koffi through it) compares process.arch
    // with the arch of the addon binary the build recorded; it picks a file, not arch-specific behaviour.
    if (/\bprocess\.arch\b/.test(code) && f !== 'lib/koffi-addon.ts') arch.push(f);
    if (/koffi\.load\(/.test(code)) libcLoads.push(f);
  }
  t.deepEqual(arch, []);
  t.deepEqual(libcLoads, []);
});
