/**
 * A hand-written SVG of the boot breakdowns (no browser, no library): one
 * panel per scale, one stacked horizontal bar per VMM and mode, one segment per
 * phase (the phase's median duration), with a legend and a time axis.
 * A stack of medians is not the median of the totals; the figure says so.
 */
import type { BootResult } from './boot.js';
import type { LinuxBootResult } from './linux-boot.js';

export interface Segment { name: string; ms: number; color: string }
export interface Bar { label: string; segments: Segment[]; note?: string }
export interface Panel { title: string; bars: Bar[] }

const WIDTH = 1000;
const LABEL_W = 215;
const RIGHT_PAD = 70;
const BAR_H = 22;
const BAR_GAP = 12;
const FONT = 'font-family="Helvetica, Arial, sans-serif"';

/** Phase colours by kind: process start (greys), VMM set-up (blues), worker spawn (orange), guest (greens), teardown (purples), peer (reds). */
export const PHASE_COLORS: Record<string, string> = {
  'exec + node start': '#9e9e9e',
  'node bootstrap': '#bdbdbd',
  'main script': '#d6d6d6',
  'import flintvm + koffi': '#757575',
  config: '#c5cae9',
  'create VM + memory': '#64b5f6',
  'load kernel, set regs': '#1e88e5',
  'load kernel+initrd, set regs': '#1e88e5',
  'vCPU worker, rest of its start': '#fb8c00',
  'to first KVM_RUN': '#ffcc80',
  'guest to boot timer': '#66bb6a',
  'guest kernel to init': '#66bb6a',
  'init to banner on console': '#a5d6a7',
  'guest to exit port': '#2e7d32',
  'banner to exit port': '#2e7d32',
  release: '#8e24aa',
  'process exit': '#ce93d8',
  'QEMU: spawn -> first guest output': '#e53935',
  'QEMU: first output -> exit': '#ef9a9a',
  'spawn -> banner': '#e57373',
  'banner -> exit': '#ffcdd2',
};

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A "nice" axis step (1, 2 or 5 x 10^k) for about `ticks` ticks over [0, max]. */
function niceStep(max: number, ticks = 8): number {
  const raw = max / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function panelSvg(p: Panel, y0: number): { svg: string; height: number } {
  const max = Math.max(...p.bars.map((b) => b.segments.reduce((a, s) => a + s.ms, 0)), 1e-3);
  const step = niceStep(max);
  const axisMax = Math.ceil(max / step) * step;
  const plotW = WIDTH - LABEL_W - RIGHT_PAD;
  const x = (ms: number) => LABEL_W + (ms / axisMax) * plotW;
  const out: string[] = [];
  let y = y0;
  out.push(`<text x="10" y="${y + 16}" ${FONT} font-size="15" font-weight="bold">${esc(p.title)}</text>`);
  y += 30;
  const barsTop = y;
  for (const b of p.bars) {
    out.push(`<text x="${LABEL_W - 8}" y="${y + BAR_H / 2 + 4}" ${FONT} font-size="12" text-anchor="end">${esc(b.label)}</text>`);
    let t = 0;
    for (const s of b.segments) {
      const w = Math.max(x(t + s.ms) - x(t), 0);
      out.push(`<rect x="${x(t).toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${BAR_H}" fill="${s.color}" stroke="#fff" stroke-width="0.5"><title>${esc(`${b.label}: ${s.name} ${s.ms.toFixed(2)} ms (from ${t.toFixed(1)} ms)`)}</title></rect>`);
      // Label a segment in place when it is wide enough.
      if (w > 46) out.push(`<text x="${(x(t) + w / 2).toFixed(1)}" y="${y + BAR_H / 2 + 4}" ${FONT} font-size="10" text-anchor="middle" fill="#000">${s.ms.toFixed(s.ms < 10 ? 1 : 0)}</text>`);
      t += s.ms;
    }
    out.push(`<text x="${(x(t) + 4).toFixed(1)}" y="${y + BAR_H / 2 + 4}" ${FONT} font-size="11">${t.toFixed(t < 100 ? 1 : 0)} ms</text>`);
    if (b.note) out.push(`<text x="${LABEL_W}" y="${y + BAR_H + 10}" ${FONT} font-size="9" fill="#555">${esc(b.note)}</text>`);
    y += BAR_H + BAR_GAP + (b.note ? 8 : 0);
  }
  // Axis and grid.
  for (let v = 0; v <= axisMax + 1e-9; v += step) {
    out.push(`<line x1="${x(v).toFixed(1)}" y1="${barsTop - 4}" x2="${x(v).toFixed(1)}" y2="${y - BAR_GAP + 4}" stroke="#ddd" stroke-width="0.7"/>`);
    out.push(`<text x="${x(v).toFixed(1)}" y="${y + 8}" ${FONT} font-size="10" text-anchor="middle" fill="#444">${v >= 1000 ? `${(v / 1000).toFixed(v % 1000 ? 1 : 0)} s` : `${v} ms`}</text>`);
  }
  y += 20;
  // Legend: every segment name used in this panel, in order of first use.
  const names: string[] = [];
  for (const b of p.bars) for (const s of b.segments) if (!names.includes(s.name)) names.push(s.name);
  let lx = LABEL_W;
  for (const n of names) {
    const w = 18 + n.length * 6.2;
    if (lx + w > WIDTH - 10) { lx = LABEL_W; y += 16; }
    const color = p.bars.flatMap((b) => b.segments).find((s) => s.name === n)!.color;
    out.push(`<rect x="${lx}" y="${y}" width="10" height="10" fill="${color}"/><text x="${lx + 14}" y="${y + 9}" ${FONT} font-size="10">${esc(n)}</text>`);
    lx += w + 10;
  }
  y += 24;
  // The background goes first in the document, so the rows draw over it.
  const bg = `<rect x="4" y="${y0}" width="${WIDTH - 8}" height="${y - y0 - 4}" fill="#fafafa" stroke="#e0e0e0"/>`;
  return { svg: [bg, ...out].join('\n'), height: y - y0 };
}

/** Renders panels into one standalone SVG document. */
export function renderSvg(title: string, subtitle: string, panels: Panel[]): string {
  const parts: string[] = [];
  let y = 44;
  for (const p of panels) {
    const r = panelSvg(p, y);
    parts.push(r.svg);
    y += r.height + 10;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y + 10}" viewBox="0 0 ${WIDTH} ${y + 10}">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="20" ${FONT} font-size="17" font-weight="bold">${esc(title)}</text>`,
    `<text x="10" y="36" ${FONT} font-size="11" fill="#555">${esc(subtitle)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

const seg = (name: string, ms: number): Segment => ({ name, ms, color: PHASE_COLORS[name] ?? '#607d8b' });

/** The boot figure of bench/results/boot.svg from the boot (and, if present, Linux-boot) results. */
export function bootSvg(boot: BootResult, linux: LinuxBootResult | undefined, subtitle: string): string {
  const cold = Object.entries(boot.flintvmCold.phases).map(([k, s]) => seg(k, s.median));
  const warm = Object.entries(boot.flintvmWarm.pvh.phases).map(([k, s]) => seg(k, s.median));
  const bars: Bar[] = [{ label: 'flintvm cold', segments: cold, note: `spawn -> first guest output ${boot.flintvmCold.toFirstOutput.median.toFixed(1)} ms (median of runs)` }];
  if (!('error' in boot.qemuCold)) {
    const q = boot.qemuCold;
    bars.push({
      label: 'QEMU microvm cold',
      segments: [seg('QEMU: spawn -> first guest output', q.toFirstOutput.median), seg('QEMU: first output -> exit', q.total.median - q.toFirstOutput.median)],
      note: 'QEMU is opaque: process start, machine set-up, qboot firmware and the guest are one segment',
    });
  }
  bars.push({ label: 'flintvm warm', segments: warm, note: 'from start() in a node process that already runs flintvm' });
  const panels: Panel[] = [{ title: `Tiny guest on the local nested KVM (kvm_pvm): medians of ${boot.runs} boots per phase`, bars }];

  const li = linux?.inner;
  if (li) {
    const lbars: Bar[] = [];
    if (!('error' in li.flintvmCold)) {
      lbars.push({ label: 'flintvm run --pvh (cold)', segments: [seg('spawn -> banner', li.flintvmCold.toBanner.median), seg('banner -> exit', li.flintvmCold.total.median - li.flintvmCold.toBanner.median)],
        note: `guest's own uptime at its command: ${li.flintvmCold.guestUptime.median.toFixed(0)} ms` });
    }
    if (!('error' in li.qemuCold)) {
      lbars.push({ label: 'QEMU microvm (cold)', segments: [seg('spawn -> banner', li.qemuCold.toBanner.median), seg('banner -> exit', li.qemuCold.total.median - li.qemuCold.toBanner.median)],
        note: `guest's own uptime at its command: ${li.qemuCold.guestUptime.median.toFixed(0)} ms` });
    }
    const w = li.flintvmWarm.pvh;
    if (!('error' in w)) lbars.push({ label: 'flintvm warm PVH', segments: Object.entries(w.phases).map(([k, s]) => seg(k, s.median)), note: 'from start() in a node process that already runs flintvm' });
    if (lbars.length) panels.push({ title: `Linux guest inside the TCG test host (kvm_amd under TCG; absolute times inflated): medians of ${li.runs}`, bars: lbars });
  }
  return renderSvg('flintvm boot breakdown vs QEMU microvm', subtitle, panels);
}
