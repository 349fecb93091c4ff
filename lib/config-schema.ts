/**
 * A small declarative schema: one description of each config field that is
 * the single source of its TypeScript type ({@link Infer}), its validation
 * (every problem collected, not just the first), the name the user typed
 * (a CLI flag or a library field) and its documentation ({@link schemaReference}).
 *
 * It is deliberately tiny: the checks flintvm needs (integers in a range,
 * enums, files of a given type) read better as plain functions than as a
 * general schema language, and no dependency is added to the package.
 */

/** One problem found in a config. `path` is the library field path, e.g. `drives[1].path`. */
export interface ConfigIssue {
  readonly path: string;
  readonly message: string;
  readonly value?: unknown;
  readonly cause?: unknown;
}

/** Collects issues while a value is checked. */
export interface CheckContext {
  /** Records a problem on `path`. */
  issue(path: string, message: string, value?: unknown, cause?: unknown): void;
  /** Paths whose filesystem checks are left for later (the CLI's default guest, not built yet). */
  readonly skip: ReadonlySet<string>;
  /** Messages should name fields as the CLI does (`ro` rather than `readOnly: true`). */
  readonly cli?: boolean;
}

/** A field's description: what it accepts (`check`), how it is documented, and its CLI name. */
export interface Spec<T> {
  /** Human description of the accepted values, e.g. `integer 1-255` (the docs' Type column). */
  readonly type: string;
  /** One-line documentation. */
  readonly doc: string;
  /** How the CLI names it: `--mem` for a top-level field, `ro` for a key inside a `--drive` spec. */
  readonly cli?: string;
  readonly optional: boolean;
  /** Documented default, if any. */
  readonly default?: string;
  /** Returns the checked value, or undefined after recording at least one issue. */
  check(value: unknown, path: string, ctx: CheckContext): T | undefined;
  /** For objects: the field specs. For arrays: the item spec. */
  readonly fields?: Readonly<Record<string, AnySpec>>;
  readonly item?: AnySpec;
  /** Phantom marker for type inference. */
  readonly __type?: T;
}

/** Any spec (for containers). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnySpec = Spec<any>;

/** The TypeScript type a spec accepts. */
export type Infer<S> = S extends Spec<infer T> ? T : never;

type OptionalKeys<F> = { [K in keyof F]: F[K] extends { optional: true } ? K : never }[keyof F];
type RequiredKeys<F> = Exclude<keyof F, OptionalKeys<F>>;
/** The object type of a field map: optional specs become optional properties. */
export type InferFields<F> = { [K in RequiredKeys<F>]: Infer<F[K]> } & { [K in OptionalKeys<F>]?: Infer<F[K]> };

/** `a string ("512")`, `a number (2.5)`, `null`, `an array`: what a value is, for messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'an array';
  switch (typeof v) {
    case 'string': return `a string (${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)})`;
    case 'number': return `the number ${String(v)}`;
    case 'boolean': return `the boolean ${String(v)}`;
    case 'bigint': return `a bigint (${String(v)}n)`;
    case 'object': return 'an object';
    default: return `a ${typeof v}`;
  }
}

interface Base { doc: string; cli?: string; default?: string }

function spec<T>(type: string, base: Base, check: Spec<T>['check'], extra: Partial<Spec<T>> = {}): Spec<T> & { optional: false } {
  return { type, doc: base.doc, cli: base.cli, default: base.default, optional: false, check, ...extra } as Spec<T> & { optional: false };
}

/** Makes a spec optional: `undefined` is accepted (and returned). */
export function optional<S extends AnySpec>(s: S): Omit<S, 'optional'> & { optional: true } {
  return { ...s, optional: true };
}

/** A string; `more` may add checks (it records issues and returns false to reject). */
export function str(base: Base & { nonEmpty?: boolean; what?: string }, more?: (v: string, path: string, ctx: CheckContext) => boolean) {
  const what = base.what ?? (base.nonEmpty ? 'a non-empty string' : 'a string');
  return spec<string>('string', base, (v, path, ctx) => {
    if (typeof v !== 'string' || (base.nonEmpty && v.length === 0)) { ctx.issue(path, `must be ${what}, got ${describe(v)}`, v); return undefined; }
    return more && !more(v, path, ctx) ? undefined : v;
  });
}

/** A safe integer in [min, max], optionally a multiple of `multipleOf`. */
export function int(base: Base & { min: number; max?: number; unit?: string; multipleOf?: number }) {
  const positive = base.max === undefined && base.multipleOf !== undefined && base.min === base.multipleOf;
  const range = positive ? 'positive' : base.max === undefined ? `>= ${base.min}` : `from ${base.min} to ${base.max}`;
  const unit = base.unit ? ` ${base.unit}` : '';
  return spec<number>(positive ? `positive integer, multiple of ${base.multipleOf}` : `integer ${range}${base.multipleOf ? `, multiple of ${base.multipleOf}` : ''}`, base, (v, path, ctx) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) { ctx.issue(path, `must be an integer${unit ? ` number of${unit}` : ''} ${range}, got ${describe(v)}`, v); return undefined; }
    if (v < base.min || (base.max !== undefined && v > base.max)) {
      ctx.issue(path, positive ? `must be a positive multiple of ${base.multipleOf}${unit}, got ${v}` : `must be ${range}${unit}, got ${v}`, v);
      return undefined;
    }
    const m = base.multipleOf;
    if (m && v % m !== 0) { ctx.issue(path, `must be a multiple of ${m}${unit}, got ${v} (use ${v + (m - (v % m))})`, v); return undefined; }
    return v;
  });
}

/** true or false. */
export function bool(base: Base) {
  return spec<boolean>('boolean', base, (v, path, ctx) => {
    if (typeof v !== 'boolean') { ctx.issue(path, `must be true or false, got ${describe(v)}`, v); return undefined; }
    return v;
  });
}

/** One of a fixed set of strings. */
export function oneOf<const V extends readonly string[]>(base: Base, values: V) {
  const list = values.map((x) => `'${x}'`).join(' or ');
  return spec<V[number]>(list, base, (v, path, ctx) => {
    if (typeof v !== 'string' || !values.includes(v)) { ctx.issue(path, `must be ${list}, got ${describe(v)}`, v); return undefined; }
    return v as V[number];
  });
}

/** An object whose keys are exactly `fields` (an unknown key is an issue, with a "did you mean" hint). */
export function obj<F extends Record<string, AnySpec>>(base: Base & { example: string }, fields: F) {
  return spec<InferFields<F>>('object', base, (v, path, ctx) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) { ctx.issue(path, `must be an object like ${base.example}, got ${describe(v)}`, v); return undefined; }
    const rec = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    let ok = true;
    for (const key of Object.keys(rec)) {
      if (Object.hasOwn(fields, key)) continue;
      const near = closest(key, Object.keys(fields));
      ctx.issue(join(path, key), `is not a known field${near ? `; did you mean '${near}'?` : ''} (known: ${Object.keys(fields).join(', ')})`, rec[key]);
      ok = false;
    }
    for (const [key, s] of Object.entries(fields)) {
      const value = rec[key];
      if (value === undefined) {
        if (!s.optional) { ctx.issue(join(path, key), `is required: ${s.doc}`); ok = false; }
        continue;
      }
      const r = s.check(value, join(path, key), ctx);
      if (r === undefined) ok = false;
      else out[key] = r;
    }
    return ok ? (out as InferFields<F>) : undefined;
  }, { fields });
}

/** An array of `item`, at most `max` long. */
export function list<S extends AnySpec>(base: Base & { max?: number }, item: S) {
  return spec<Infer<S>[]>(`array of ${item.type}`, base, (v, path, ctx) => {
    if (!Array.isArray(v)) { ctx.issue(path, `must be an array, got ${describe(v)}`, v); return undefined; }
    if (base.max !== undefined && v.length > base.max) { ctx.issue(path, `has ${v.length} entries; at most ${base.max} are supported`, v.length); return undefined; }
    const out = v.map((x, i) => item.check(x, `${path}[${i}]`, ctx) as Infer<S> | undefined);
    return out.every((x) => x !== undefined) ? (out as Infer<S>[]) : undefined;
  }, { item });
}

/** Anything a check function accepts (e.g. an instance of a class). */
export function custom<T>(type: string, base: Base, check: (v: unknown, path: string, ctx: CheckContext) => T | undefined) {
  return spec<T>(type, base, check);
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** Levenshtein distance, small strings only. */
function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The candidate nearest to `key` (case-insensitively), if it is close enough to be a typo. */
export function closest(key: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(key.toLowerCase(), c.toLowerCase());
    if (d < bestD) { best = c; bestD = d; }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

/**
 * The user-facing name of a library path under `root`: with `cli`, `memoryMiB` becomes `--mem` and
 * `drives[1].readOnly` becomes `--drive #2 ro`; otherwise the path itself.
 */
export function displayName(root: AnySpec, path: string, cli: boolean): string {
  if (!cli) return path;
  const parts = path.match(/[^.[\]]+|\[\d+\]/g) ?? [];
  let s: AnySpec | undefined = root;
  const out: string[] = [];
  for (const p of parts) {
    if (p.startsWith('[')) {
      out.push(`#${Number(p.slice(1, -1)) + 1}`);
      s = s?.item;
      continue;
    }
    s = s?.fields?.[p];
    out.push(s?.cli ?? p);
  }
  return out.join(' ') || path;
}

/** Markdown rows `| field | type | default | doc |` for every field under `root` (nested with dots). */
export function schemaReference(root: AnySpec, prefix = ''): string[] {
  const rows: string[] = [];
  for (const [key, s] of Object.entries(root.fields ?? {})) {
    const name = `${prefix}${key}${s.item ? '[]' : ''}`;
    const cli = s.cli ? `\`${s.cli}\`` : '';
    rows.push(`| \`${name}\` | ${cli} | ${s.type.replace(/\|/g, '\\|')} | ${s.default ?? (s.optional ? '' : 'required')} | ${s.doc.replace(/\|/g, '\\|')} |`);
    const inner = s.item ?? s;
    if (inner.fields) rows.push(...schemaReference(inner, `${name}.`));
  }
  return rows;
}

/** `s` with a further check on its (already type-checked) value; the check records issues and returns false to reject. */
export function refine<S extends AnySpec>(s: S, more: (v: Infer<S>, path: string, ctx: CheckContext) => unknown): S {
  return {
    ...s,
    check: (v: unknown, path: string, ctx: CheckContext) => {
      const r = s.check(v, path, ctx) as Infer<S> | undefined;
      return r !== undefined && more(r, path, ctx) !== false ? r : undefined;
    },
  };
}
