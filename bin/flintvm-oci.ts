#!/usr/bin/env node
/** `flintvm-oci`: the OCI runtime command line (runc's), see lib/oci/cli.ts. */
import { main } from '../lib/oci/cli.js';

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    process.stderr.write(`flintvm-oci: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
