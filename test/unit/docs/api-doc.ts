/**
 * Generates docs/api.md, the API reference, from the TSDoc comments of the
 * declarations that lib/index.ts exports (following re-exports and imports
 * through the .ts sources). TypeScript 7's compiler has no JavaScript API, so
 * this reads the sources with regular expressions and relies on the repo's
 * style: top-level declarations start at column 0, class and interface bodies
 * close with a `}` at column 0, and members are indented by two spaces.
 *
 *   npx tsc -p tsconfig.json && node dist/test/unit/docs/api-doc.js --write
 *
 * test/unit/docs/api-doc.test.ts fails when docs/api.md is not what this writes.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/test/unit/docs/). */
export const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const API_DOC_PATH = join(REPO_ROOT, 'docs', 'api.md');
const ENTRY = join(REPO_ROOT, 'lib', 'index.ts');

/** One documented member of a class or interface. */
export interface ApiMember {
  signature: string;
  doc: string;
}

/** One export of lib/index.ts. */
export interface ApiExport {
  name: string;
  kind: string;
  /** Source file, relative to the repository root. */
  file: string;
  signature: string;
  /** The TSDoc text, or '' when the declaration has none. */
  doc: string;
  members: ApiMember[];
}

const DECL_KINDS = 'class|interface|type|function|const|let|enum';

function read(file: string): string {
  return readFileSync(file, 'utf8');
}

/** `./x.js` from `file` -> the .ts source path. */
function resolveModule(file: string, spec: string): string {
  const base = resolve(dirname(file), spec);
  const ts = base.replace(/\.js$/, '.ts');
  if (existsSync(ts)) return ts;
  if (existsSync(`${base}.ts`)) return `${base}.ts`;
  throw new Error(`cannot resolve ${spec} from ${file}`);
}

/** Names in `{ a, type b, c as d }`: [exported or imported name, local/original name]. */
function braceNames(list: string): [string, string][] {
  return list.split(',').map((s) => s.replace(/\/\/.*$/gm, '').trim()).filter(Boolean).map((s) => {
    const parts = s.replace(/^type\s+/, '').split(/\s+as\s+/);
    return [parts[1] ?? parts[0]!, parts[0]!];
  });
}

/** The names a module exports, in order, with where each is declared from. */
export function exportedNames(file: string): string[] {
  const src = read(file);
  const names: string[] = [];
  const re = new RegExp(String.raw`^export\s+(?:type\s+)?\{([^}]*)\}(?:\s*from\s*'([^']+)')?|^export\s+\*\s+from\s+'([^']+)'|^export\s+(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?(?:${DECL_KINDS})\s+([A-Za-z_$][\w$]*)`, 'gm');
  for (const m of src.matchAll(re)) {
    if (m[1] !== undefined) names.push(...braceNames(m[1]).map(([exported]) => exported));
    else if (m[3] !== undefined) names.push(...exportedNames(resolveModule(file, m[3])));
    else if (m[4] !== undefined) names.push(m[4]);
  }
  return [...new Set(names)];
}

/** The TSDoc comment that ends right before `index` (only whitespace between), cleaned; '' if none. */
function leadingDoc(src: string, index: number): string {
  const before = src.slice(0, index).replace(/\s+$/, '');
  if (!before.endsWith('*/')) return '';
  const start = before.lastIndexOf('/**');
  if (start < 0) return '';
  return cleanDoc(before.slice(start));
}

function cleanDoc(comment: string): string {
  return comment
    .replace(/^\/\*\*\s?/, '').replace(/\s*\*\/$/, '')
    .split('\n').map((l) => l.replace(/^\s*\* ?/, '')).join('\n')
    .replace(/\{@link\s+([^}|\s]+)(?:\s*\|?\s*([^}]*))?\}/g, (_m, target: string, text: string) => `\`${text?.trim() || target}\``)
    .trim();
}

interface Declaration { file: string; kind: string; index: number; src: string }

/** Finds where `name` is declared, starting in `file` and following re-exports and imports. */
function findDeclaration(file: string, name: string, seen = new Set<string>()): Declaration | null {
  const key = `${file}#${name}`;
  if (seen.has(key)) return null;
  seen.add(key);
  const src = read(file);
  const decl = new RegExp(String.raw`^(?:export\s+)?(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?(${DECL_KINDS})\s+${name.replace(/\$/g, '\\$')}\b`, 'm').exec(src);
  if (decl) return { file, kind: decl[1]!, index: decl.index, src };
  const links = new RegExp(String.raw`^(?:export|import)\s+(?:type\s+)?\{([^}]*)\}\s*from\s*'([^']+)'`, 'gm');
  for (const m of src.matchAll(links)) {
    for (const [local, original] of braceNames(m[1]!)) {
      if (local === name) return findDeclaration(resolveModule(file, m[2]!), original, seen);
    }
  }
  for (const m of src.matchAll(/^export\s+\*\s+from\s+'([^']+)'/gm)) {
    const found = findDeclaration(resolveModule(file, m[1]!), name, seen);
    if (found) return found;
  }
  return null;
}

/** The declaration's head: up to its body for classes, interfaces and functions; the whole statement otherwise. */
function signatureOf(d: Declaration): string {
  const rest = d.src.slice(d.index);
  const lines = rest.split('\n');
  if (d.kind === 'class' || d.kind === 'interface' || d.kind === 'function') {
    const head: string[] = [];
    for (const line of lines) {
      head.push(line);
      if (/\{\s*$/.test(line) && (d.kind !== 'function' || /\)\s*(:[^=]*)?\{\s*$/.test(line))) break;
    }
    return head.join('\n').replace(/\s*\{\s*$/, '');
  }
  // type / const / let / enum: the statement, up to a line ending with ';' (or the enum's closing brace).
  const out: string[] = [];
  for (const line of lines) {
    out.push(line);
    if (/;\s*(\/\/.*)?$/.test(line) || (d.kind === 'enum' && /^}/.test(line))) break;
  }
  return out.join('\n');
}

const MEMBER = /^ {2}(?!private\b|protected\b|#)((?:(?:public|static|readonly|async|get|set|abstract|override|declare)\s+)*)([A-Za-z_$][\w$]*|\[[^\]]+\]|'[^']+')\s*(\??)\s*([(<:;=!]?)/;

/** Public members of a class or interface: lines at two-space indent inside its body. */
function membersOf(d: Declaration): ApiMember[] {
  if (d.kind !== 'class' && d.kind !== 'interface') return [];
  const body = d.src.slice(d.index);
  const end = body.search(/\n}/);
  const text = body.slice(0, end < 0 ? undefined : end);
  const lines = text.split('\n').slice(1);
  const members: ApiMember[] = [];
  let offset = d.index + body.indexOf('\n') + 1;
  for (const line of lines) {
    const m = MEMBER.exec(line);
    if (m && !/^ {2}(\/\/|\/\*|\*|})/.test(line) && m[4] !== '=') {
      // A trailing `// note` is the member's doc when it has no TSDoc.
      const note = /;\s*\/\/\s*(.*)$/.exec(line)?.[1] ?? '';
      let sig = line.trim().replace(/;\s*\/\/.*$/, ';').replace(/\s*\{\s*(\}\s*)?$/, '').replace(/;$/, '').replace(/^(readonly\s+[^=(]*?)\s*=.*$/, '$1');
      if (/\($/.test(sig) || (sig.split('(').length > sig.split(')').length)) sig += ' …)';
      members.push({ signature: sig, doc: leadingDoc(d.src, offset) || note });
    }
    offset += line.length + 1;
  }
  return members;
}

/** Every export of lib/index.ts with its declaration and TSDoc. */
export function collectApi(entry = ENTRY): ApiExport[] {
  return exportedNames(entry).map((name): ApiExport => {
    const d = findDeclaration(entry, name);
    if (!d) throw new Error(`api-doc: cannot find the declaration of ${name} exported by ${relative(REPO_ROOT, entry)}`);
    return {
      name, kind: d.kind, file: relative(REPO_ROOT, d.file), signature: signatureOf(d), doc: leadingDoc(d.src, d.index), members: membersOf(d),
    };
  });
}

const anchor = (name: string) => name.toLowerCase().replace(/[^a-z0-9_-]/g, '');

/** The Markdown of docs/api.md. */
export function renderApiDoc(api: readonly ApiExport[]): string {
  const out: string[] = [
    '# flintvm API reference',
    '',
    'Everything `import … from \'flintvm\'` gives you. Generated from the TSDoc comments in the sources by',
    '`test/unit/docs/api-doc.ts`; `test/unit/docs/api-doc.test.ts` fails when this file is out of date.',
    'Regenerate with `npx tsc -p tsconfig.json && node dist/test/unit/docs/api-doc.js --write`.',
    '',
    '## Contents',
    '',
    ...api.map((e) => `- [\`${e.name}\`](#${anchor(e.name)}) (${e.kind})`),
  ];
  for (const e of api) {
    out.push('', `## ${e.name}`, '', `*${e.kind}*, declared in \`${e.file}\``, '', '```ts', e.signature, '```', '');
    out.push(e.doc || '*(no documentation)*');
    if (e.members.length) {
      out.push('', '**Members**', '');
      for (const m of e.members) out.push(`- \`${m.signature.replace(/`/g, "'")}\`${m.doc ? `: ${m.doc.replace(/\n+/g, ' ')}` : ''}`);
    }
  }
  return out.join('\n') + '\n';
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const md = renderApiDoc(collectApi());
  if (process.argv.includes('--write')) {
    writeFileSync(API_DOC_PATH, md);
    console.log(`wrote ${relative(process.cwd(), API_DOC_PATH)}`);
  } else {
    process.stdout.write(md);
  }
}
