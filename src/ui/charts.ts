// PNG charts of a run and of the scaling benchmark. We write the SVG ourselves (a small line-chart layout:
// panels, dual y-axes, 1-2-5 ticks, grid, legend) and sharp/librsvg rasterizes it. The charts read metric
// records and benchmark results only, never the training state.
import { writeFileAtomic } from '../fsutil.js';
import type { BatchRecord, EpochRecord } from '../metrics.js';
import { INK, MUTED, svgHead, svgToPng, text, textWidth } from './svg.js';

export { svgToPng };

export const CHART_WIDTH = 1800;
export const CHART_HEIGHT = 1000;

/**
 * Colours (matplotlib's tab10). In the epoch chart colour is the split and the dash is the metric (loss solid,
 * accuracy dashed); in the batch chart colour is the metric (raw batches faint, EMA bold); in the scaling
 * chart colour is the batch size, in order of first appearance, and a peer shares its batch size's colour.
 */
export const PALETTE = {
  train: '#1f77b4',    // tab:blue
  val: '#ff7f0e',      // tab:orange
  loss: '#1f77b4',     // tab:blue
  accuracy: '#2ca02c', // tab:green
  ideal: '#7f7f7f',    // tab:gray
  batchSizes: ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22'],
} as const;

const GRID = '#e3e3e3';

// ---------------------------------------------------------------------------------------------------------
// The chart model

export interface Series {
  /** legend text; '' keeps the series out of the legend */
  label: string;
  x: readonly number[];
  y: readonly number[];       // non-finite values leave a gap
  color: string;
  axis?: 'left' | 'right';
  width?: number;             // stroke width in px, default 3
  dash?: boolean;
  opacity?: number;
  markers?: boolean;
}

/** A horizontal reference line across the whole panel (a peer's throughput, ideal efficiency). */
export interface HLine {
  y: number;
  label: string;
  color: string;
  axis?: 'left' | 'right';
}

export interface Axis {
  title: string;
  format?: 'number' | 'percent';
  integer?: boolean;          // ticks on whole numbers only (epochs, threads)
  /** values the range must contain (0 for a throughput axis) */
  include?: readonly number[];
  /** the range never goes below / above these (loss ≥ 0, accuracy ≤ 100%) */
  floor?: number;
  ceil?: number;
  color?: string;             // title colour, when colour identifies the axis
}

export interface Panel {
  title?: string;
  x: Axis;
  left: Axis;
  right?: Axis;
  series: Series[];
  hlines?: HLine[];
  /** consecutive labelled spans of x, e.g. epochs on a step axis: dotted boundaries, labels above the frame */
  bands?: { from: number; to: number; label: string }[];
  /** shown in the middle of an empty panel */
  emptyNote?: string;
}

export interface ChartSpec {
  title: string;
  subtitle?: string;
  width?: number;
  height?: number;
  panels: Panel[];            // laid out side by side
}

// ---------------------------------------------------------------------------------------------------------
// Scales

export interface Scale {
  min: number;
  max: number;
  ticks: number[];
  step: number;
}

/** Step of 1, 2 or 5 × 10^k giving about `target` intervals over `span`. */
export function niceStep(span: number, target: number): number {
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

/**
 * Axis range and ticks for `values`: the finite data (plus axis.include) padded a little, widened to whole
 * 1-2-5 steps unless `loose` (then the padded data range is the axis and the ticks are the steps inside it),
 * then cut to axis.floor/ceil. No finite data gives [0, 1]; a constant gets a small band around it.
 */
export function scaleFor(values: Iterable<number>, axis: Axis, target = 6, loose = false): Scale {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  for (const v of axis.include ?? []) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const empty = lo > hi;
  if (empty) { lo = axis.floor ?? 0; hi = axis.ceil ?? lo + 1; }
  const below = lo;
  const above = hi;
  if (!empty) {
    if (hi - lo <= 1e-12 * Math.max(1, Math.abs(lo))) {
      const pad = axis.integer ? 1 : Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 0.5;
      lo -= pad; hi += pad;
    } else {
      // A loose (x) axis gets matplotlib's 5% margin, and a whole-number one at least 0.3 so end markers clear the frame.
      const pad = loose ? Math.max(0.05 * (hi - lo), axis.integer ? 0.3 : 0) : 0.03 * (hi - lo);
      lo -= pad; hi += pad;
    }
  }
  let step = niceStep(hi - lo, target);
  if (axis.integer) step = Math.max(1, Math.round(step));
  const round = (v: number): number => Number(v.toPrecision(12));
  let min = loose ? lo : round(Math.floor(lo / step) * step);
  let max = loose ? hi : round(Math.ceil(hi / step) * step);
  // Cut to the hard limits, but never inside the data (a loss below the floor must still be seen).
  if (axis.floor !== undefined && min < axis.floor) min = Math.min(axis.floor, below);
  if (axis.ceil !== undefined && max > axis.ceil) max = Math.max(axis.ceil, above);
  if (max <= min) max = min + step;
  const ticks: number[] = [];
  for (let k = Math.ceil(min / step - 1e-9); k * step <= max + step * 1e-9; k++) ticks.push(round(k * step));
  if (loose && ticks.length > 0 && ticks[0] < min) ticks.shift();
  return { min, max, ticks, step };
}

export function formatTick(v: number, step: number, format: Axis['format'] = 'number'): string {
  const k = format === 'percent' ? 100 : 1;
  const value = v * k;
  // As many decimals as the step needs: step 0.05 → 2, step 5 → 0.
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step * k) + 1e-9)));
  const s = Math.abs(value) >= 1000 && decimals === 0 ? Math.round(value).toLocaleString('en-US') : value.toFixed(decimals);
  return (/^-0(\.0*)?$/.test(s) ? s.slice(1) : s) + (format === 'percent' ? '%' : '');
}

/**
 * Exponential moving average with bias correction (as TensorBoard smooths), skipping non-finite inputs:
 * their output is NaN and they do not disturb the state.
 */
export function ema(values: readonly number[], beta: number): number[] {
  let s = 0;
  let w = 0;
  return values.map((v) => {
    if (!Number.isFinite(v)) return NaN;
    s = beta * s + (1 - beta) * v;
    w = beta * w + (1 - beta);
    return s / w;
  });
}

// ---------------------------------------------------------------------------------------------------------
// SVG

interface Box { x: number; y: number; w: number; h: number }

/** Pixel points of a series, split into runs at non-finite values. */
function runs(s: Series, px: (x: number) => number, py: (y: number) => number): [number, number][][] {
  const out: [number, number][][] = [];
  let cur: [number, number][] = [];
  const n = Math.min(s.x.length, s.y.length);
  for (let i = 0; i < n; i++) {
    if (Number.isFinite(s.x[i]) && Number.isFinite(s.y[i])) {
      cur.push([px(s.x[i]), py(s.y[i])]);
    } else if (cur.length > 0) {
      out.push(cur); cur = [];
    }
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/**
 * Keeps a dense run drawable: per pixel column only the first, lowest, highest and last points survive, so
 * the envelope of noisy batch curves is exact while the path stays a few thousand points long.
 */
function decimate(pts: [number, number][], width: number): [number, number][] {
  if (pts.length <= 2 * width) return pts;
  const out: [number, number][] = [];
  let col = NaN;
  let bucket: [number, number][] = [];
  const flush = (): void => {
    if (bucket.length === 0) return;
    let lo = 0;
    let hi = 0;
    for (let i = 1; i < bucket.length; i++) {
      if (bucket[i][1] < bucket[lo][1]) lo = i;
      if (bucket[i][1] > bucket[hi][1]) hi = i;
    }
    const keep = [...new Set([0, Math.min(lo, hi), Math.max(lo, hi), bucket.length - 1])].sort((a, b) => a - b);
    for (const i of keep) out.push(bucket[i]);
    bucket = [];
  };
  for (const p of pts) {
    const c = Math.floor(p[0]);
    if (c !== col) { flush(); col = c; }
    bucket.push(p);
  }
  flush();
  return out;
}

function pathOf(pts: [number, number][]): string {
  return pts.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${x.toFixed(1)} ${y.toFixed(1)}`).join('');
}

interface LegendEntry { label: string; color: string; dash: boolean; width: number; opacity: number; marker: boolean }

function legendEntries(p: Panel): LegendEntry[] {
  const out: LegendEntry[] = [];
  for (const s of p.series) {
    const any = s.y.some((v, i) => Number.isFinite(v) && Number.isFinite(s.x[i]));
    if (s.label !== '' && any) {
      out.push({ label: s.label, color: s.color, dash: s.dash ?? false, width: s.width ?? 3,
        opacity: s.opacity ?? 1, marker: s.markers ?? false });
    }
  }
  for (const h of p.hlines ?? []) {
    if (Number.isFinite(h.y)) out.push({ label: h.label, color: h.color, dash: true, width: 2.5, opacity: 1, marker: false });
  }
  return out;
}

/**
 * Puts the legend where it covers the fewest data points (matplotlib's loc='best' idea): nine candidate
 * places inside the plot, ties going to the upper right.
 */
function placeLegend(plot: Box, w: number, h: number, points: [number, number][]): { box: Box; count: number } {
  const m = 18;
  const clear = 14; // a marker's radius and a little air
  const xs = [plot.x + plot.w - w - m, plot.x + m, plot.x + (plot.w - w) / 2];
  const ys = [plot.y + m, plot.y + (plot.h - h) / 2, plot.y + plot.h - h - m];
  let best: Box = { x: xs[0], y: ys[0], w, h };
  let bestCount = Infinity;
  for (const y of ys) {
    for (const x of xs) {
      let count = 0;
      for (const [px, py] of points) if (px >= x - clear && px <= x + w + clear && py >= y - clear && py <= y + h + clear) count++;
      if (count < bestCount) { bestCount = count; best = { x, y, w, h }; }
    }
  }
  return { box: best, count: bestCount };
}

/** Points along every drawn line, dense enough that a line crossing a candidate legend box is seen. */
function samplePoints(lines: [number, number][][]): [number, number][] {
  const out: [number, number][] = [];
  for (const pts of lines) {
    for (let i = 0; i < pts.length; i++) {
      out.push(pts[i]);
      if (i + 1 < pts.length) {
        const [x0, y0] = pts[i];
        const [x1, y1] = pts[i + 1];
        const n = Math.min(50, Math.floor(Math.hypot(x1 - x0, y1 - y0) / 10));
        for (let k = 1; k < n; k++) out.push([x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n]);
      }
    }
  }
  return out;
}

let clipId = 0;

function panelBody(p: Panel, region: Box, below: boolean): { svg: string; hidden: number } {
  const hasRight = p.right !== undefined;
  const top = region.y + (p.title ? 58 : 16) + (p.bands?.length ? 30 : 0);
  const plot: Box = {
    x: region.x + 128,
    y: top,
    w: region.w - 128 - (hasRight ? 128 : 46),
    h: 0,
  };
  const legendH = below ? legendRows(legendEntries(p), plot.w).rows * LEGEND_ROW + 14 : 0;
  plot.h = region.y + region.h - 108 - legendH - top;
  const leftValues: number[] = [];
  const rightValues: number[] = [];
  const xValues: number[] = [];
  for (const s of p.series) {
    xValues.push(...s.x);
    (s.axis === 'right' ? rightValues : leftValues).push(...s.y);
  }
  for (const h of p.hlines ?? []) (h.axis === 'right' ? rightValues : leftValues).push(h.y);
  const sx = scaleFor(xValues, p.x, Math.max(4, Math.round(plot.w / 160)), true);
  const sl = scaleFor(leftValues, p.left, 6);
  const sr = p.right ? scaleFor(rightValues, p.right, 6) : undefined;
  const px = (x: number): number => plot.x + (x - sx.min) / (sx.max - sx.min) * plot.w;
  const pyOf = (s: Scale) => (y: number): number => plot.y + plot.h - (y - s.min) / (s.max - s.min) * plot.h;
  const pyl = pyOf(sl);
  const pyr = sr ? pyOf(sr) : pyl;

  const out: string[] = [];
  const id = `clip${clipId++}`;
  out.push(`<clipPath id="${id}"><rect x="${plot.x}" y="${plot.y}" width="${plot.w}" height="${plot.h}"/></clipPath>`);
  if (p.title) out.push(text(plot.x + plot.w / 2, region.y + 36, p.title, 28, { anchor: 'middle', weight: 'bold' }));

  // Grid on the left axis' ticks and the x ticks, under everything else.
  for (const t of sx.ticks) out.push(`<line x1="${px(t).toFixed(1)}" y1="${plot.y}" x2="${px(t).toFixed(1)}" y2="${plot.y + plot.h}" stroke="${GRID}" stroke-width="1.5"/>`);
  for (const t of sl.ticks) out.push(`<line x1="${plot.x}" y1="${pyl(t).toFixed(1)}" x2="${plot.x + plot.w}" y2="${pyl(t).toFixed(1)}" stroke="${GRID}" stroke-width="1.5"/>`);

  const bands = (p.bands ?? []).filter((b) => b.to > sx.min && b.from < sx.max);
  // Mark and label every k-th band so that labels never collide however many epochs there are.
  const narrowest = Math.min(...bands.map((b) => px(b.to) - px(b.from)));
  const widest = Math.max(0, ...bands.map((b) => textWidth(b.label, 18)));
  const stride = Math.max(1, Math.ceil((widest + 16) / narrowest));
  bands.forEach((b, i) => {
    if (i > 0 && b.from > sx.min && i % stride === 0) {
      const x = px(b.from);
      out.push(`<line x1="${x.toFixed(1)}" y1="${plot.y}" x2="${x.toFixed(1)}" y2="${plot.y + plot.h}" stroke="#a0a0a0" stroke-width="1.5" stroke-dasharray="3 6"/>`);
    }
    if (i % stride === 0) {
      const mid = px((Math.max(b.from, sx.min) + Math.min(b.to, sx.max)) / 2);
      out.push(text(mid, plot.y - 12, b.label, 18, { anchor: 'middle', color: '#7a7a7a' }));
    }
  });

  const drawn: [number, number][][] = [];
  const body: string[] = [];
  for (const h of p.hlines ?? []) {
    if (!Number.isFinite(h.y)) continue;
    const y = (h.axis === 'right' ? pyr : pyl)(h.y);
    body.push(`<line x1="${plot.x}" y1="${y.toFixed(1)}" x2="${plot.x + plot.w}" y2="${y.toFixed(1)}" stroke="${h.color}" stroke-width="2.5" stroke-dasharray="14 8"/>`);
    drawn.push([[plot.x, y], [plot.x + plot.w, y]]);
  }
  for (const s of p.series) {
    const width = s.width ?? 3;
    const opacity = s.opacity ?? 1;
    const lines = runs(s, px, s.axis === 'right' ? pyr : pyl).map((r) => decimate(r, plot.w));
    if (opacity >= 0.5) drawn.push(...lines);
    const dash = s.dash ? ` stroke-dasharray="${(width * 4).toFixed(0)} ${(width * 2.2).toFixed(0)}"` : '';
    const d = lines.filter((r) => r.length > 1).map(pathOf).join('');
    if (d) {
      body.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${width}" stroke-opacity="${opacity}" stroke-linejoin="round" stroke-linecap="round"${dash}/>`);
    }
    // Markers on request, and always for a point with no neighbour (it would be invisible as a line).
    for (const r of lines) {
      if (!(s.markers || r.length === 1)) continue;
      for (const [x, y] of r) {
        body.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${(width + 4).toFixed(1)}" fill="${s.color}" fill-opacity="${opacity}" stroke="white" stroke-width="1.5"/>`);
      }
    }
  }
  out.push(`<g clip-path="url(#${id})">${body.join('')}</g>`);

  if (p.series.every((s) => !s.y.some(Number.isFinite)) && p.emptyNote) {
    out.push(text(plot.x + plot.w / 2, plot.y + plot.h / 2, p.emptyNote, 26, { anchor: 'middle', color: MUTED, baseline: 'middle' }));
  }

  // Frame, ticks and tick labels.
  out.push(`<rect x="${plot.x}" y="${plot.y}" width="${plot.w}" height="${plot.h}" fill="none" stroke="${INK}" stroke-width="1.8"/>`);
  const tick = 9;
  for (const t of sx.ticks) {
    const x = px(t);
    out.push(`<line x1="${x.toFixed(1)}" y1="${plot.y + plot.h}" x2="${x.toFixed(1)}" y2="${plot.y + plot.h + tick}" stroke="${INK}" stroke-width="1.8"/>`);
    out.push(text(x, plot.y + plot.h + tick + 28, formatTick(t, sx.step, p.x.format), 22, { anchor: 'middle' }));
  }
  for (const t of sl.ticks) {
    const y = pyl(t);
    out.push(`<line x1="${plot.x - tick}" y1="${y.toFixed(1)}" x2="${plot.x}" y2="${y.toFixed(1)}" stroke="${INK}" stroke-width="1.8"/>`);
    out.push(text(plot.x - tick - 8, y, formatTick(t, sl.step, p.left.format), 22, { anchor: 'end', baseline: 'middle' }));
  }
  if (sr && p.right) {
    for (const t of sr.ticks) {
      const y = pyr(t);
      out.push(`<line x1="${plot.x + plot.w}" y1="${y.toFixed(1)}" x2="${plot.x + plot.w + tick}" y2="${y.toFixed(1)}" stroke="${INK}" stroke-width="1.8"/>`);
      out.push(text(plot.x + plot.w + tick + 8, y, formatTick(t, sr.step, p.right.format), 22, { baseline: 'middle' }));
    }
    out.push(text(plot.x + plot.w + 112, plot.y + plot.h / 2, p.right.title, 26, { anchor: 'middle', rotate: 90, color: p.right.color }));
  }
  out.push(text(plot.x + plot.w / 2, plot.y + plot.h + 92, p.x.title, 26, { anchor: 'middle', color: p.x.color }));
  out.push(text(plot.x - 100, plot.y + plot.h / 2, p.left.title, 26, { anchor: 'middle', rotate: -90, color: p.left.color }));

  // Legend: inside the plot where it hides no data, else in rows under the x-axis title (see panelSvg).
  const entries = legendEntries(p);
  if (entries.length === 0) return { svg: out.join('\n'), hidden: 0 };
  if (below) {
    for (const [e, x, y] of legendRows(entries, plot.w).cells) {
      out.push(legendItem(e, plot.x + x, plot.y + plot.h + 134 + y));
    }
    return { svg: out.join('\n'), hidden: 0 };
  }
  const w = 24 + LEGEND_SWATCH + Math.max(...entries.map((e) => textWidth(e.label, LEGEND_SIZE))) + 20;
  const h = 14 + entries.length * LEGEND_ROW + 6;
  const { box, count } = placeLegend(plot, w, h, samplePoints(drawn));
  out.push(`<rect x="${box.x.toFixed(1)}" y="${box.y.toFixed(1)}" width="${w.toFixed(1)}" height="${h}" rx="6" fill="white" fill-opacity="0.88" stroke="#c8c8c8" stroke-width="1.5"/>`);
  entries.forEach((e, i) => out.push(legendItem(e, box.x + 20, box.y + 14 + LEGEND_ROW * i + LEGEND_ROW / 2 - 3)));
  return { svg: out.join('\n'), hidden: count };
}

const LEGEND_SIZE = 21;
const LEGEND_ROW = 34;
const LEGEND_SWATCH = 68; // line sample and the gap after it

/** One legend entry: the line sample starting at x, centred on y, then the label. */
function legendItem(e: LegendEntry, x: number, y: number): string {
  const dash = e.dash ? ` stroke-dasharray="${(e.width * 4).toFixed(0)} ${(e.width * 2.2).toFixed(0)}"` : '';
  const parts = [`<line x1="${x.toFixed(1)}" y1="${y.toFixed(1)}" x2="${(x + 56).toFixed(1)}" y2="${y.toFixed(1)}" stroke="${e.color}" stroke-width="${e.width}" stroke-opacity="${e.opacity}"${dash}/>`];
  if (e.marker) parts.push(`<circle cx="${(x + 28).toFixed(1)}" cy="${y.toFixed(1)}" r="${e.width + 4}" fill="${e.color}" stroke="white" stroke-width="1.5"/>`);
  parts.push(text(x + LEGEND_SWATCH, y, e.label, LEGEND_SIZE, { baseline: 'middle' }));
  return parts.join('');
}

/** Entries flowed left to right in rows no wider than `width`, each row centred; offsets from the top left. */
function legendRows(entries: LegendEntry[], width: number): { rows: number; cells: [LegendEntry, number, number][] } {
  const gap = 40;
  const rows: { items: [LegendEntry, number][]; w: number }[] = [{ items: [], w: 0 }];
  for (const e of entries) {
    const w = LEGEND_SWATCH + textWidth(e.label, LEGEND_SIZE);
    let row = rows[rows.length - 1];
    if (row.items.length > 0 && row.w + gap + w > width) { row = { items: [], w: 0 }; rows.push(row); }
    if (row.items.length > 0) row.w += gap;
    row.items.push([e, row.w]);
    row.w += w;
  }
  const cells: [LegendEntry, number, number][] = [];
  rows.forEach((r, i) => {
    for (const [e, x] of r.items) cells.push([e, (width - r.w) / 2 + x, i * LEGEND_ROW]);
  });
  return { rows: rows.length, cells };
}

/**
 * A panel: try the legend inside the plot; if every place inside would hide data, shrink the plot and put
 * the legend in rows under it.
 */
function panelSvg(p: Panel, region: Box): string {
  const inside = panelBody(p, region, false);
  if (inside.hidden === 0) return inside.svg;
  return panelBody(p, region, true).svg;
}

/** The chart as an SVG document (exposed for tests and for anyone who wants vector output). */
export function chartSvg(spec: ChartSpec): string {
  const W = spec.width ?? CHART_WIDTH;
  const H = spec.height ?? CHART_HEIGHT;
  const head = spec.subtitle ? 118 : 80;
  const out = svgHead(W, H, spec.title, spec.subtitle);
  const n = Math.max(1, spec.panels.length);
  spec.panels.forEach((p, i) => {
    out.push(panelSvg(p, { x: (W / n) * i, y: head, w: W / n, h: H - head }));
  });
  out.push('</svg>');
  return out.join('\n');
}

export async function renderMetricsChart(spec: ChartSpec): Promise<Buffer> {
  return svgToPng(chartSvg(spec));
}

// ---------------------------------------------------------------------------------------------------------
// The three charts

const pct = (x: number): string => Number.isFinite(x) ? `${(x * 100).toFixed(2)}%` : String(x);
const fix = (x: number): string => Number.isFinite(x) ? x.toFixed(4) : String(x);

/** Batch loss and accuracy against the global step: raw batches faint, their EMA bold. */
export function batchChartSpec(batches: readonly BatchRecord[]): ChartSpec {
  const x = batches.map((b) => b.step);
  const loss = batches.map((b) => b.loss);
  const acc = batches.map((b) => b.accuracy);
  // Smooth over ~2% of the run (at least 1, at most 100 steps), so the trend reads at any run length.
  const window = Math.min(100, Math.max(1, Math.round(batches.length / 50)));
  const beta = 1 - 1 / window;
  // Epoch spans on the step axis: from half a step before an epoch's first batch to after its last.
  const bands: { from: number; to: number; label: string }[] = [];
  for (const b of batches) {
    const cur = bands[bands.length - 1];
    if (cur && cur.label === `epoch ${b.epoch}`) cur.to = b.step + 0.5;
    else bands.push({ from: b.step - 0.5, to: b.step + 0.5, label: `epoch ${b.epoch}` });
  }
  const epochs = new Set(batches.map((b) => b.epoch)).size;
  const last = batches[batches.length - 1];
  const subtitle = batches.length === 0 ? 'no batches recorded'
    // counted by step number: a long run's history merges old batches in pairs (BatchHistory)
    : `${last.step - batches[0].step + 1} steps over ${epochs} epoch${epochs === 1 ? '' : 's'} · bold: EMA over ~${window} point${window === 1 ? '' : 's'}` +
      ` · last batch: loss ${fix(last.loss)}, accuracy ${pct(last.accuracy)}`;
  return {
    title: 'Training, per batch',
    subtitle,
    panels: [{
      x: { title: 'global step', integer: true },
      left: { title: 'loss', floor: 0, include: [0], color: PALETTE.loss },
      right: { title: 'accuracy', format: 'percent', floor: 0, ceil: 1, color: PALETTE.accuracy },
      series: [
        { label: '', x, y: loss, color: PALETTE.loss, width: 1.5, opacity: 0.28 },
        { label: '', x, y: acc, color: PALETTE.accuracy, width: 1.5, opacity: 0.28, axis: 'right' },
        { label: 'loss (EMA)', x, y: ema(loss, beta), color: PALETTE.loss, width: 3.5 },
        { label: 'accuracy (EMA)', x, y: ema(acc, beta), color: PALETTE.accuracy, width: 3.5, axis: 'right' },
      ],
      bands: bands.length > 1 ? bands : [],
      emptyNote: 'no batches recorded',
    }],
  };
}

/** Train vs validation per epoch: loss (solid, left axis) and accuracy (dashed, right axis). */
export function epochChartSpec(epochs: readonly EpochRecord[]): ChartSpec {
  const x = epochs.map((e) => e.epoch);
  const last = epochs[epochs.length - 1];
  const subtitle = epochs.length === 0 ? 'no epochs recorded'
    : `after epoch ${last.epoch}: validation loss ${fix(last.valLoss)}, accuracy ${pct(last.valAccuracy)}` +
      ` · train loss ${fix(last.trainLoss)}, accuracy ${pct(last.trainAccuracy)}`;
  return {
    title: 'Training vs validation, per epoch',
    subtitle,
    panels: [{
      x: { title: 'epoch', integer: true },
      left: { title: 'loss (solid)', floor: 0, include: [0] },
      right: { title: 'accuracy (dashed)', format: 'percent', floor: 0, ceil: 1 },
      series: [
        { label: 'train loss', x, y: epochs.map((e) => e.trainLoss), color: PALETTE.train, markers: true },
        { label: 'validation loss', x, y: epochs.map((e) => e.valLoss), color: PALETTE.val, markers: true },
        { label: 'train accuracy', x, y: epochs.map((e) => e.trainAccuracy), color: PALETTE.train, dash: true, markers: true, axis: 'right' },
        { label: 'validation accuracy', x, y: epochs.map((e) => e.valAccuracy), color: PALETTE.val, dash: true, markers: true, axis: 'right' },
      ],
      emptyNote: 'no epochs recorded',
    }],
  };
}

export interface ScalingRun {
  threads: number;
  batchSize: number;
  samplesPerSec: number;
  efficiency?: number;   // speedup / threads; computed from the runs when absent
  speedup?: number;
}

export interface ScalingPeer {
  name: string;
  batchSize: number;
  samplesPerSec: number;
  threads?: number;
  blasThreads?: number;
  /** the BLAS it ran ("openblas Cooperlake"), recorded by a bench peers that found it at its best; a level
   *  without it (from before bench peers checked) is not drawn */
  blas?: string;
}

/** bench/results/scaling-*.json */
export interface ScalingReport {
  kind: 'scaling';
  machine: { cpu: string; cores: number; node: string };
  kernels: string;
  /** the network trained, as describeModel writes it ("cnn 1→16→32 conv5 pool2 · 512→128→10"); absent in
   *  results from before the cnn, which were all of the default mlp */
  model?: string;
  runs: ScalingRun[];
  peers?: ScalingPeer[];
}

/** Throughput (left panel) and parallel efficiency (right panel) against threads, a line per batch size. */
export function scalingChartSpec(report: ScalingReport): ChartSpec {
  const sizes = [...new Set(report.runs.map((r) => r.batchSize))];
  const colorOf = (bs: number): string => {
    const i = sizes.indexOf(bs);
    return i < 0 ? PALETTE.ideal : PALETTE.batchSizes[i % PALETTE.batchSizes.length];
  };
  const throughput: Series[] = [];
  const efficiency: Series[] = [];
  for (const bs of sizes) {
    const rs = report.runs.filter((r) => r.batchSize === bs).sort((a, b) => a.threads - b.threads);
    const base = rs[0];
    const eff = rs.map((r) => r.efficiency ?? (r.samplesPerSec / base.samplesPerSec) * base.threads / r.threads);
    const x = rs.map((r) => r.threads);
    throughput.push({ label: `batch ${bs}`, x, y: rs.map((r) => r.samplesPerSec), color: colorOf(bs), markers: true });
    efficiency.push({ label: `batch ${bs}`, x, y: eff, color: colorOf(bs), markers: true });
  }
  const peers: HLine[] = (report.peers ?? []).filter((p) => p.blas !== undefined).map((p) => ({
    y: p.samplesPerSec,
    color: colorOf(p.batchSize),
    label: `${p.name} (${p.blas}), batch ${p.batchSize}` + (p.threads !== undefined ? `, ${p.threads} thread${p.threads === 1 ? '' : 's'}` : ''),
  }));
  const m = report.machine;
  return {
    title: report.model ? `Data-parallel scaling: ${report.model}` : 'Data-parallel scaling',
    subtitle: [m.cpu, Number.isFinite(m.cores) ? `${m.cores} core${m.cores === 1 ? '' : 's'}` : '', `Node ${m.node}`,
      `kernels: ${report.kernels}`, peers.length > 0 ? 'dashed: peer frameworks' : ''].filter((s) => s !== '').join(' · '),
    panels: [
      {
        title: 'Throughput',
        x: { title: 'worker threads', integer: true },
        left: { title: 'samples / s', include: [0], floor: 0 },
        series: throughput,
        hlines: peers,
        emptyNote: 'no runs',
      },
      {
        title: 'Parallel efficiency',
        x: { title: 'worker threads', integer: true },
        left: { title: 'efficiency (speedup / threads)', format: 'percent', include: [0, 1], floor: 0 },
        series: efficiency,
        hlines: [{ y: 1, label: 'ideal', color: PALETTE.ideal }],
        emptyNote: 'no runs',
      },
    ],
  };
}

export async function writeBatchChart(path: string, batches: readonly BatchRecord[]): Promise<void> {
  await writeFileAtomic(path, await renderMetricsChart(batchChartSpec(batches)));
}

export async function writeEpochChart(path: string, epochs: readonly EpochRecord[]): Promise<void> {
  await writeFileAtomic(path, await renderMetricsChart(epochChartSpec(epochs)));
}

export async function writeScalingChart(path: string, report: ScalingReport): Promise<void> {
  await writeFileAtomic(path, await renderMetricsChart(scalingChartSpec(report)));
}
