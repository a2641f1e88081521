// `mnist-par eval`: a saved model on the whole test split. The pool computes the softmax of every test image
// data-parallel, exactly as validation does during training; the main thread turns those probabilities into
// the report: loss, accuracy, per-class precision / recall / F1, the confusion matrix, and two PNGs (the
// matrix as a heatmap, a grid of the most confident mistakes).
import { basename, join } from 'node:path';
import { Coordinator } from './coordinator.js';
import { DATASETS, type DatasetName } from './data/datasets.js';
import { ensureDataset } from './data/download.js';
import { loadSplit } from './data/idx.js';
import { UserError } from './errors.js';
import { ensureWritableDir, errorCode, writeFileAtomic } from './fsutil.js';
import type { KernelFamily } from './kernels/wasm.js';
import type { OptimizerConfig } from './optim.js';
import { argmaxRow, chooseDataset, loadModel } from './predict.js';
import { svgToPng } from './ui/charts.js';
import { FONT_FAMILY } from './ui/fonts.js';

export interface EvalOptions {
  model: string;
  /** default: the dataset named in the model's metadata, else mnist */
  dataset?: DatasetName;
  /** default: datasets/<dataset> */
  dataDir?: string;
  threads: number;
  kernels: 'auto' | KernelFamily;
  /** folder for confusion_matrix.png and errors.png; none: no pictures */
  plots?: string;
  json: boolean;
  download: boolean;
  /** print the report (tables, or JSON with `json`); the library API does not */
  print?: boolean;
  /** where progress lines (a download) go; default stderr */
  log?: (line: string) => void;
}

export interface ClassStats {
  name: string;
  precision: number;
  recall: number;
  f1: number;
  /** test images of this class */
  support: number;
}

export interface Mistake {
  /** index in the test split */
  index: number;
  label: number;
  predicted: number;
  /** probability the model gave its (wrong) prediction */
  p: number;
}

export interface EvalReport {
  model: string;
  dataset: DatasetName;
  layers: number[];
  count: number;
  loss: number;
  accuracy: number;
  classes: ClassStats[];
  macro: { precision: number; recall: number; f1: number };
  /** confusion[true][predicted] */
  confusion: number[][];
  plots: string[];
}

export const CONFUSION_PNG = 'confusion_matrix.png';
export const ERRORS_PNG = 'errors.png';

/** Evaluates, prints the report (tables, or one JSON object with --json), writes the plots; returns the report. */
export async function evalCommand(opts: EvalOptions): Promise<EvalReport> {
  const model = await loadModel(opts.model);
  const dataset = chooseDataset(opts.dataset, model, opts.model, opts.log);
  const info = DATASETS[dataset];
  const dataDir = opts.dataDir ?? `datasets/${dataset}`;
  // Refuse an unwritable --plots before spending any time on the evaluation.
  if (opts.plots !== undefined) await ensureWritableDir(opts.plots, '--plots');
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  if (opts.download) await ensureDataset(dataset, dataDir, { log });
  const test = await loadSplit(dataDir, 'test', dataset);
  const pixels = test.rows * test.cols;
  const V = model.layers[model.layers.length - 1];

  // Built as a variable, not a literal in the call: the arena spec may grow fields that evaluation leaves at 0.
  const spec = {
    layers: model.layers, threads: opts.threads, shards: opts.threads, rows: 256, optimizerStates: 0,
    stepsPerEpoch: 0, trainCount: 0, testCount: test.count, pixels,
  };
  const optimizer: OptimizerConfig = {
    optimizer: 'sgd', momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8,
  };
  const coord = new Coordinator({ spec, optimizer, kernels: opts.kernels, mean: info.mean, std: info.std, labelSmoothing: 0 });
  let loss: number;
  let probs: Float32Array;
  try {
    coord.views.testX.set(test.images.subarray(0, test.count * pixels));
    coord.views.testY.set(test.labels.subarray(0, test.count));
    coord.views.params.set(model.params);
    await coord.ready();
    loss = (await coord.evaluate()).loss;
    probs = coord.views.testProbs.slice();
  } finally {
    await coord.close();
  }

  const confusion = confusionMatrix(probs, test.labels, V);
  const { classes, macro } = classStats(confusion, info.classes);
  const correct = confusion.reduce((s, row, t) => s + row[t], 0);
  const report: EvalReport = {
    model: opts.model, dataset, layers: model.layers, count: test.count, loss, accuracy: correct / test.count,
    classes, macro, confusion, plots: [],
  };
  const title = `${info.title}, test set`;
  const caption = `${basename(opts.model)} (${model.layers.join('-')}) · ${test.count.toLocaleString('en-US')} images · ` +
    `accuracy ${pct(report.accuracy)} · loss ${report.loss.toFixed(4)}`;
  const mistakes = confidentMistakes(probs, test.labels, V, ERROR_GRID.cols * ERROR_GRID.rows);
  const wrong = test.count - correct;
  if (opts.plots !== undefined) {
    report.plots = [
      await writePlot(opts.plots, CONFUSION_PNG, confusionSvg(confusion, info.classes, title, caption)),
      await writePlot(opts.plots, ERRORS_PNG, errorsSvg(mistakes, test.images, info.classes, wrong, title)),
    ];
  }
  if (opts.print !== false) process.stdout.write(opts.json ? JSON.stringify(report) + '\n' : formatReport(report, info.classes, dataDir));
  return report;
}

// ---------------------------------------------------------------------------------------------------------
// Metrics

/** confusion[t][p]: test images of true class t whose most probable class is p. probs (N, V), labels (N). */
export function confusionMatrix(probs: Float32Array, labels: Uint8Array, V: number): number[][] {
  const m = Array.from({ length: V }, () => new Array<number>(V).fill(0));
  const n = probs.length / V;
  for (let i = 0; i < n; i++) m[labels[i]][argmaxRow(probs, i, V)]++;
  return m;
}

/**
 * Per-class precision (of the images predicted as the class, the share that are), recall (of the images of
 * the class, the share found) and F1, and their unweighted means. A ratio with nothing to divide by is 0,
 * as scikit-learn reports it.
 */
export function classStats(confusion: number[][], names: readonly string[]): { classes: ClassStats[]; macro: EvalReport['macro'] } {
  const V = confusion.length;
  const ratio = (a: number, b: number): number => (b > 0 ? a / b : 0);
  const classes = confusion.map((row, c) => {
    const tp = row[c];
    const support = row.reduce((s, x) => s + x, 0);
    const predicted = confusion.reduce((s, r) => s + r[c], 0);
    const precision = ratio(tp, predicted);
    const recall = ratio(tp, support);
    return { name: names[c] ?? String(c), precision, recall, f1: ratio(2 * precision * recall, precision + recall), support };
  });
  const mean = (k: 'precision' | 'recall' | 'f1'): number => classes.reduce((s, c) => s + c[k], 0) / V;
  return { classes, macro: { precision: mean('precision'), recall: mean('recall'), f1: mean('f1') } };
}

/** The k misclassified images the model was surest about, surest first (ties: lower index first). */
export function confidentMistakes(probs: Float32Array, labels: Uint8Array, V: number, k: number): Mistake[] {
  const out: Mistake[] = [];
  const n = probs.length / V;
  for (let i = 0; i < n; i++) {
    const predicted = argmaxRow(probs, i, V);
    if (predicted !== labels[i]) out.push({ index: i, label: labels[i], predicted, p: probs[i * V + predicted] });
  }
  return out.sort((a, b) => b.p - a.p || a.index - b.index).slice(0, k);
}

// ---------------------------------------------------------------------------------------------------------
// Text

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

/** The report as aligned tables: summary, per-class metrics, confusion matrix (rows true, columns predicted). */
export function formatReport(r: EvalReport, names: readonly string[], dataDir: string): string {
  // MNIST's class names are the digits themselves; other datasets get "index name".
  const rowName = (c: number): string => (names[c] === String(c) ? names[c] : `${c} ${names[c]}`);
  const V = r.confusion.length;
  const lines: string[] = [
    `model    ${r.model} (${r.layers.join('-')})`,
    `dataset  ${r.dataset} test split, ${r.count} images from ${dataDir}`,
    `test loss ${r.loss.toFixed(4)}, accuracy ${pct(r.accuracy)} (${Math.round(r.accuracy * r.count)} of ${r.count})`,
    '',
  ];
  const w0 = Math.max(9, ...Array.from({ length: V }, (_, c) => rowName(c).length));
  const row = (cells: string[]): string => cells[0].padEnd(w0) + cells.slice(1).map((s) => s.padStart(11)).join('');
  lines.push(row(['class', 'precision', 'recall', 'F1', 'support']));
  r.classes.forEach((c, i) => lines.push(row([rowName(i), pct(c.precision), pct(c.recall), pct(c.f1), String(c.support)])));
  lines.push(row(['macro avg', pct(r.macro.precision), pct(r.macro.recall), pct(r.macro.f1), String(r.count)]), '');

  const w = Math.max(5, ...r.confusion.flat().map((x) => String(x).length + 1));
  lines.push('confusion matrix (rows: true class, columns: predicted class)');
  lines.push(' '.repeat(w0) + Array.from({ length: V }, (_, c) => String(c).padStart(w)).join(''));
  r.confusion.forEach((cells, t) => lines.push(rowName(t).padEnd(w0) + cells.map((x) => String(x).padStart(w)).join('')));
  lines.push('', `wrote ${r.plots.join(', ')}`, '');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// Plots: SVG written here, rasterized by sharp with the shipped fonts (ui/charts.ts svgToPng)

const INK = '#222222';
const MUTED = '#555555';
// tab10's green and red, as in the other charts
const RIGHT = '#2ca02c';
const WRONG = '#d62728';
/** ColorBrewer's sequential "Blues" (9 classes), light to dark */
const BLUES = ['#f7fbff', '#deebf7', '#c6dbef', '#9ecae1', '#6baed6', '#4292c6', '#2171b5', '#08519c', '#08306b'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Rough advance width of `s` in DejaVu Sans at `size` px (an average glyph is ~0.6 em), for layout. */
const textWidth = (s: string, size: number): number => s.length * size * 0.6;

function text(x: number, y: number, s: string, size: number, o: { anchor?: 'start' | 'middle' | 'end';
  bold?: boolean; color?: string; rotate?: number; middle?: boolean } = {}): string {
  const attrs = [`x="${x.toFixed(1)}"`, `y="${y.toFixed(1)}"`, `font-size="${size}"`, `text-anchor="${o.anchor ?? 'start'}"`,
    `fill="${o.color ?? INK}"`];
  if (o.bold) attrs.push('font-weight="bold"');
  if (o.middle) attrs.push('dominant-baseline="central"');
  if (o.rotate) attrs.push(`transform="rotate(${o.rotate} ${x.toFixed(1)} ${y.toFixed(1)})"`);
  return `<text ${attrs.join(' ')}>${esc(s)}</text>`;
}

/** Colour of t in [0, 1] on the BLUES ramp, linearly between its stops. */
export function blues(t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (BLUES.length - 1);
  const i = Math.min(BLUES.length - 2, Math.floor(x));
  const f = x - i;
  const a = BLUES[i], b = BLUES[i + 1];
  const ch = (k: number): number => {
    const u = parseInt(a.slice(1 + 2 * k, 3 + 2 * k), 16), v = parseInt(b.slice(1 + 2 * k, 3 + 2 * k), 16);
    return Math.round(u + (v - u) * f);
  };
  return `#${[0, 1, 2].map((k) => ch(k).toString(16).padStart(2, '0')).join('')}`;
}

// The off-diagonal shares are mostly under 2% and the diagonal above 90%: a square-root colour scale keeps
// both visible in one ramp.
const colourOf = (share: number): number => Math.sqrt(share);
const SCALE_TICKS = [0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1];

export const CONFUSION_CELL = 88;

/**
 * The confusion matrix as a heatmap: cells coloured by the share of the true class (row), counts in the
 * cells, recall per row on the right, precision per column below, a colour bar. Reads like the text table:
 * predicted classes across the top, true classes down the side.
 */
export function confusionSvg(confusion: number[][], names: readonly string[], title: string, caption: string): string {
  const V = confusion.length;
  const cell = CONFUSION_CELL;
  const side = V * cell;
  const label = (c: number): string => names[c] ?? String(c);
  const longest = Math.max(...Array.from({ length: V }, (_, c) => textWidth(label(c), 22)));
  // Column labels stand upright when they fit a cell, else slanted.
  const slant = longest > cell - 10;
  const mx = Math.max(150, 100 + longest + 18);
  const my = 130 + 56 + (slant ? longest * 0.72 + 20 : 40);
  const barX = mx + side + 150;
  const W = Math.max(1000, Math.round(barX + 28 + 90 + 60));
  const H = Math.round(my + side + 150);
  const supports = confusion.map((row) => row.reduce((s, x) => s + x, 0));
  const predicted = Array.from({ length: V }, (_, c) => confusion.reduce((s, r) => s + r[c], 0));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT_FAMILY}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    text(W / 2, 54, `Confusion matrix — ${title}`, 34, { anchor: 'middle', bold: true }),
    text(W / 2, 94, caption, 22, { anchor: 'middle', color: MUTED }),
    text(mx + side / 2, 154, 'predicted class', 26, { anchor: 'middle' }),
    text(44, my + side / 2, 'true class', 26, { anchor: 'middle', rotate: -90 }),
  ];
  for (let c = 0; c < V; c++) {
    const x = mx + c * cell + cell / 2;
    out.push(slant ? text(x, my - 14, label(c), 22, { rotate: -45 }) : text(x, my - 16, label(c), 22, { anchor: 'middle' }));
    out.push(text(mx - 16, my + c * cell + cell / 2, label(c), 22, { anchor: 'end', middle: true }));
  }
  for (let t = 0; t < V; t++) {
    for (let p = 0; p < V; p++) {
      const n = confusion[t][p];
      const v = colourOf(supports[t] > 0 ? n / supports[t] : 0);
      const x = mx + p * cell, y = my + t * cell;
      out.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${blues(v)}" stroke="white" stroke-width="1.5"/>`);
      const colour = n === 0 ? '#b0b0b0' : v > 0.55 ? 'white' : INK;
      out.push(text(x + cell / 2, y + cell / 2, String(n), n >= 10000 ? 20 : 24, { anchor: 'middle', middle: true, color: colour, bold: t === p }));
    }
  }
  out.push(`<rect x="${mx}" y="${my}" width="${side}" height="${side}" fill="none" stroke="${INK}" stroke-width="1.8"/>`);
  // Margins: recall (diagonal / row sum) on the right, precision (diagonal / column sum) below.
  const rx = mx + side + 62;
  out.push(text(rx, my - 16, 'recall', 20, { anchor: 'middle', color: MUTED, bold: true }));
  for (let t = 0; t < V; t++) {
    const r = supports[t] > 0 ? confusion[t][t] / supports[t] : 0;
    out.push(text(rx, my + t * cell + cell / 2, pct(r), 19, { anchor: 'middle', middle: true, color: MUTED }));
  }
  out.push(text(mx - 16, my + side + 34, 'precision', 20, { anchor: 'end', middle: true, color: MUTED, bold: true }));
  for (let p = 0; p < V; p++) {
    const r = predicted[p] > 0 ? confusion[p][p] / predicted[p] : 0;
    out.push(text(mx + p * cell + cell / 2, my + side + 34, pct(r), 19, { anchor: 'middle', middle: true, color: MUTED }));
  }
  out.push(text(mx + side / 2, my + side + 90, 'cell colour: share of the true class (square-root scale) · numbers: image counts',
    20, { anchor: 'middle', color: MUTED }));
  // Colour bar: top = 100%, bottom = 0%, in colour space (so the ticks are spaced as sqrt(share)).
  const stops = Array.from({ length: 17 }, (_, i) => `<stop offset="${(i / 16).toFixed(4)}" stop-color="${blues(1 - i / 16)}"/>`);
  out.push(`<defs><linearGradient id="scale" x1="0" y1="0" x2="0" y2="1">${stops.join('')}</linearGradient></defs>`);
  out.push(`<rect x="${barX}" y="${my}" width="28" height="${side}" fill="url(#scale)" stroke="${INK}" stroke-width="1.2"/>`);
  for (const s of SCALE_TICKS) {
    const y = my + side * (1 - colourOf(s));
    out.push(`<line x1="${barX + 28}" y1="${y.toFixed(1)}" x2="${barX + 36}" y2="${y.toFixed(1)}" stroke="${INK}" stroke-width="1.5"/>`);
    out.push(text(barX + 42, y, `${Math.round(s * 100)}%`, 19, { middle: true }));
  }
  out.push(text(barX + 124, my + side / 2, 'share of the true class', 22, { anchor: 'middle', rotate: 90 }));
  out.push('</svg>');
  return out.join('\n');
}

export const ERROR_GRID = { cols: 6, rows: 6, scale: 6 } as const;

/** Pixel size of errors.png for `shown` mistakes whose longest label is `labelChars` characters. */
export function errorsSize(shown: number, labelChars: number): { width: number; height: number; cellW: number; cellH: number } {
  const img = 28 * ERROR_GRID.scale;
  const cellW = Math.max(img + 44, Math.ceil(labelChars * 22 * 0.6) + 24);
  const cellH = img + 78;
  const rows = Math.max(1, Math.ceil(shown / ERROR_GRID.cols));
  return { width: Math.max(1000, 2 * 50 + ERROR_GRID.cols * cellW), height: 140 + rows * cellH + 30, cellW, cellH };
}

const mistakeLabel = (m: Mistake, names: readonly string[]): string =>
  `${names[m.label]} → ${names[m.predicted]} (${(100 * m.p).toFixed(1)}%)`;

/**
 * A grid of the most confidently misclassified test images, surest first: each the 28×28 image scaled up
 * (dark ink on white), "true → predicted (probability)" and its index in the test split under it.
 */
export function errorsSvg(mistakes: Mistake[], images: Uint8Array, names: readonly string[], wrong: number, title: string): string {
  const labelChars = Math.max(0, ...mistakes.map((m) => mistakeLabel(m, names).length));
  const { width: W, height: H, cellW, cellH } = errorsSize(mistakes.length, labelChars);
  const s = ERROR_GRID.scale;
  const img = 28 * s;
  const x0 = (W - ERROR_GRID.cols * cellW) / 2;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT_FAMILY}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    text(W / 2, 54, `Most confident mistakes — ${title}`, 34, { anchor: 'middle', bold: true }),
    text(W / 2, 94, mistakes.length === 0 ? 'no test image is misclassified'
      : `${mistakes.length} of ${wrong.toLocaleString('en-US')} misclassified images, surest first · true (green) → predicted (red), probability of the prediction`,
    22, { anchor: 'middle', color: MUTED }),
  ];
  mistakes.forEach((m, k) => {
    const cx = x0 + (k % ERROR_GRID.cols) * cellW;
    const cy = 140 + Math.floor(k / ERROR_GRID.cols) * cellH;
    const ix = cx + (cellW - img) / 2;
    const px: string[] = [];
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) {
        const v = images[m.index * 784 + y * 28 + x];
        if (v === 0) continue;
        const g = (255 - v).toString(16).padStart(2, '0');
        px.push(`<rect x="${ix + x * s}" y="${cy + y * s}" width="${s}" height="${s}" fill="#${g}${g}${g}"/>`);
      }
    }
    out.push(`<g shape-rendering="crispEdges"><rect x="${ix}" y="${cy}" width="${img}" height="${img}" fill="white"/>${px.join('')}</g>`);
    out.push(`<rect x="${ix - 1}" y="${cy - 1}" width="${img + 2}" height="${img + 2}" fill="none" stroke="#9a9a9a" stroke-width="1.5"/>`);
    const tx = cx + cellW / 2, ty = cy + img + 30;
    out.push(`<text x="${tx}" y="${ty}" font-size="22" text-anchor="middle" fill="${INK}">` +
      `<tspan fill="${RIGHT}" font-weight="bold">${esc(names[m.label])}</tspan> → ` +
      `<tspan fill="${WRONG}" font-weight="bold">${esc(names[m.predicted])}</tspan> (${(100 * m.p).toFixed(1)}%)</text>`);
    out.push(text(tx, ty + 24, `test #${m.index}`, 17, { anchor: 'middle', color: MUTED }));
  });
  out.push('</svg>');
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// Files

async function writePlot(dir: string, file: string, svg: string): Promise<string> {
  const path = join(dir, file);
  const png = await svgToPng(svg);
  try {
    await writeFileAtomic(path, png);
  } catch (e) {
    throw new UserError(`--plots ${dir}: cannot write ${file} there (${errorCode(e)}); choose a writable folder with --plots <dir>`);
  }
  return path;
}
