import { readFileSync } from 'node:fs';

/** The package root: this file runs from dist/lib/, two levels below it. */
const PKG_JSON = new URL('../../package.json', import.meta.url);

/** flintvm's version, from its package.json (read once per call; callers are not hot). */
export function flintvmVersion(): string {
  return (JSON.parse(readFileSync(PKG_JSON, 'utf8')) as { version: string }).version;
}
