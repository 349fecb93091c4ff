#!/usr/bin/env node
// The `flintvm-oci` command, an OCI runtime: dist/bin/flintvm-oci.js (source: bin/flintvm-oci.ts); see launch.cjs.
import { createRequire } from 'node:module';

await createRequire(import.meta.url)('./launch.cjs').launch('flintvm-oci');
