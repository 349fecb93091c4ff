#!/usr/bin/env node
// The `flintvm` command: the compiled CLI, dist/bin/flintvm.js (source: bin/flintvm.ts); see launch.js.
import { launch } from './launch.js';

await launch('flintvm');
