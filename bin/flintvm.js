#!/usr/bin/env node
// The `flintvm` command: the compiled CLI, dist/bin/flintvm.js (source: bin/flintvm.ts); see launch.cjs.
import { createRequire } from 'node:module';

await createRequire(import.meta.url)('./launch.cjs').launch('flintvm');
