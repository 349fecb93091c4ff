#!/usr/bin/env node
// The `flintvm` command: the compiled CLI, dist/bin/flintvm.js (source: bin/flintvm.ts); see launch.cjs.
// CommonJS, like everything it loads: with no ES module on the way, node never starts its ES-module loader.
'use strict';
require('./launch.cjs').launch('flintvm');
