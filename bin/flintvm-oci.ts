#!/usr/bin/env node
/** `flintvm-oci`: the OCI runtime command line (runc's), see lib/oci/cli.ts. */
import { main } from '../lib/oci/cli.js';

// process.exit: a holder or `run` may still have its stdin pipe open when the container has ended. Output
// written before is not lost: on Linux, writes to pipes, files and terminals are synchronous.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`flintvm-oci: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
