#!/usr/bin/env node
// The `flintvm-oci` command, an OCI runtime: dist/bin/flintvm-oci.js (source: bin/flintvm-oci.ts); see launch.js.
import { launch } from './launch.js';

await launch('flintvm-oci');
