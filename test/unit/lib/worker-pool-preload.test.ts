import test from 'ava';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PRELOAD } from '../../../lib/worker-pool.js';

// A standby imports these before it is ready; a moved module made every standby fail to start (each
// pooled start then fell back to spawning), which only the KVM tiers showed.
test('every module a standby worker preloads exists', (t) => {
  t.true(DEFAULT_PRELOAD.length > 0);
  for (const u of DEFAULT_PRELOAD) t.true(existsSync(fileURLToPath(u)), u);
});
