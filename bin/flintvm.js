#!/usr/bin/env node
// Kept for links made before the commands became CommonJS (an npx cache of a clone, a script or a podman
// runtime path naming this file). The command is bin/flintvm.cjs (package.json's `bin`), which this only
// loads, after node has started its ES-module loader for this file.
import { createRequire } from 'node:module';

createRequire(import.meta.url)('./flintvm.cjs');
