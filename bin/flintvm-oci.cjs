#!/usr/bin/env node
// The `flintvm-oci` command, an OCI runtime: dist/bin/flintvm-oci.js (source: bin/flintvm-oci.ts); see launch.cjs.
// CommonJS, like everything it loads: with no ES module on the way, node never starts its ES-module loader.
'use strict';
require('./launch.cjs').launch('flintvm-oci');
