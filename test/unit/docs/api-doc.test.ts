import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { API_DOC_PATH, REPO_ROOT, collectApi, exportedNames, renderApiDoc } from './api-doc.js';

const REGENERATE = 'regenerate it: npx tsc -p tsconfig.json && node dist/test/unit/docs/api-doc.js --write';

test('every export of lib/index.ts has TSDoc on its declaration', (t) => {
  const api = collectApi();
  t.true(api.length >= 20, `found ${api.length} exports`);
  const undocumented = api.filter((e) => e.doc.length === 0).map((e) => `${e.name} (${e.file})`);
  t.deepEqual(undocumented, [], 'add a /** ... */ comment to each of these declarations');
});

test('docs/api.md has a section for every export of lib/index.ts', (t) => {
  t.true(existsSync(API_DOC_PATH), `docs/api.md is missing; ${REGENERATE}`);
  const md = readFileSync(API_DOC_PATH, 'utf8');
  const missing = exportedNames(join(REPO_ROOT, 'lib', 'index.ts')).filter((name) => !md.includes(`\n## ${name}\n`));
  t.deepEqual(missing, [], `docs/api.md lacks these exports; ${REGENERATE}`);
});

test('docs/api.md is exactly what the generator writes from the current sources', (t) => {
  const md = readFileSync(API_DOC_PATH, 'utf8');
  t.true(md === renderApiDoc(collectApi()), `docs/api.md is out of date; ${REGENERATE}`);
});

test('the generator follows re-exports and imports, and reads class members and their docs', (t) => {
  const api = collectApi();
  const vm = api.find((e) => e.name === 'MicroVM');
  t.is(vm?.kind, 'class');
  t.is(vm?.file, 'lib/microvm.ts');
  t.true(vm!.members.some((m) => m.signature.startsWith('async start()') && /Builds the VM/.test(m.doc)));
  t.false(vm!.members.some((m) => m.signature.startsWith('private')), 'private members are left out');
  // ExitReason is exported through lib/index.ts from lib/vcpu/protocol.ts.
  t.is(api.find((e) => e.name === 'ExitReason')?.file, 'lib/vcpu/protocol.ts');
});
