/**
 * Per-figure summaries of benchmark runs that each booted one VMM (flintvm
 * or QEMU), and the flintvm/QEMU ratio of their medians, with a plain-text
 * table. Used by the test-host benches (net, vsock, share).
 */
import { summarize, type Summary } from './stats.js';

/** One figure over every run of flintvm's side and of the peer's. */
export interface Comparison {
  name: string;
  unit: string;
  /** Which way is better: for 'lower', a ratio above 1 means flintvm is slower. */
  better: 'higher' | 'lower';
  flintvm: Summary | null;
  qemu: Summary | null;
  /** flintvm median / QEMU median. */
  ratio: number | null;
}

/** [name, unit, better, value of one run (undefined: no value)]. */
export type FigureSpec<R> = readonly [string, string, 'higher' | 'lower', (r: R) => number | undefined];

/**
 * Each figure over the runs whose `side(run)` is `flintvm` (default: run.vmm === 'flintvm') and those
 * whose side is `qemu`. Runs that failed still count for the values they have.
 */
export function compareVmms<R extends { vmm: string }>(runs: readonly R[], figures: readonly FigureSpec<R>[], side: (r: R) => string = (r) => r.vmm, flintvmSide = 'flintvm', qemuSide = 'qemu'): Comparison[] {
  return figures.map(([name, unit, better, get]) => {
    const per = (s: string): Summary | null => {
      const xs = runs.filter((r) => side(r) === s).map(get).filter((x): x is number => x !== undefined && Number.isFinite(x));
      return xs.length ? summarize(xs) : null;
    };
    const flintvm = per(flintvmSide);
    const qemu = per(qemuSide);
    return { name, unit, better, flintvm, qemu, ratio: flintvm && qemu ? flintvm.median / qemu.median : null };
  });
}

const num = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));

/** `median [min..max] (n)` of a summary, or '-'. */
export function fmtSummary(s: Summary | null): string {
  return s ? `${num(s.median)} [${num(s.min)}..${num(s.max)}] (${s.n})` : '-';
}

/** The table: figure, unit, flintvm, QEMU, ratio. */
export function formatComparison(cs: readonly Comparison[], peer = 'QEMU'): string[] {
  const rows = cs.map((c) => [c.name, c.unit, fmtSummary(c.flintvm), fmtSummary(c.qemu), c.ratio === null ? '' : c.ratio.toFixed(2)]);
  const head = ['figure', 'unit', 'flintvm median [min..max] (n)', `${peer} median [min..max] (n)`, 'flintvm/' + peer];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => '  ' + r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)];
}
