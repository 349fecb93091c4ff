import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PRELOAD } from '../../../lib/worker-pool.js';

// A standby imports these before it is ready; a moved module made every standby fail to start (each
// pooled start then fell back to spawning), which only the KVM tiers showed.
test('every module a standby worker preloads exists', (t) => {
  t.true(DEFAULT_PRELOAD.length > 0);
  for (const u of DEFAULT_PRELOAD) t.true(existsSync(fileURLToPath(u)), u);
});

// In the worker bundle a standby's preloads must come from the bundle (worker-bundle.ts's table), or the
// standby would load a second copy of them as separate ES modules.
test('every module a standby worker preloads is in the worker bundle', (t) => {
  const root = new URL('../../../lib/', import.meta.url).href;
  const entry = readFileSync(fileURLToPath(new URL('worker-bundle.js', root)), 'utf8');
  for (const u of DEFAULT_PRELOAD) {
    t.true(u.startsWith(root), u);
    const key = u.slice(root.length);
    t.true(entry.includes(`'${key}': () => import('./${key}')`), `worker-bundle.ts maps '${key}'`);
  }
});
