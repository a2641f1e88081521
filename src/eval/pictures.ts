// eval's two pictures as SVG (rasterized by ui/svg.ts with the shipped fonts): the confusion matrix as a
// heatmap, and a grid of the most confidently misclassified test images.
import { IMAGE_PIXELS, IMAGE_SIDE } from '../data/datasets.js';
import { fmtPct } from '../ui/format.js';
import { esc, INK, MUTED, svgHead, text, textWidth } from '../ui/svg.js';
import type { Mistake } from './metrics.js';

export const CONFUSION_PNG = 'confusion_matrix.png';
export const ERRORS_PNG = 'errors.png';

// tab10's green and red, as in the other charts
const RIGHT = '#2ca02c';
const WRONG = '#d62728';
/** ColorBrewer's sequential "Blues" (9 classes), light to dark */
const BLUES = ['#f7fbff', '#deebf7', '#c6dbef', '#9ecae1', '#6baed6', '#4292c6', '#2171b5', '#08519c', '#08306b'];

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
  const out = [
    ...svgHead(W, H, `Confusion matrix — ${title}`, caption),
    text(mx + side / 2, 154, 'predicted class', 26, { anchor: 'middle' }),
    text(44, my + side / 2, 'true class', 26, { anchor: 'middle', rotate: -90 }),
  ];
  for (let c = 0; c < V; c++) {
    const x = mx + c * cell + cell / 2;
    out.push(slant ? text(x, my - 14, label(c), 22, { rotate: -45 }) : text(x, my - 16, label(c), 22, { anchor: 'middle' }));
    out.push(text(mx - 16, my + c * cell + cell / 2, label(c), 22, { anchor: 'end', baseline: 'middle' }));
  }
  for (let t = 0; t < V; t++) {
    for (let p = 0; p < V; p++) {
      const n = confusion[t][p];
      const v = colourOf(supports[t] > 0 ? n / supports[t] : 0);
      const x = mx + p * cell, y = my + t * cell;
      out.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${blues(v)}" stroke="white" stroke-width="1.5"/>`);
      const colour = n === 0 ? '#b0b0b0' : v > 0.55 ? 'white' : INK;
      out.push(text(x + cell / 2, y + cell / 2, String(n), n >= 10000 ? 20 : 24, { anchor: 'middle', baseline: 'middle', color: colour, weight: t === p ? 'bold' : undefined }));
    }
  }
  out.push(`<rect x="${mx}" y="${my}" width="${side}" height="${side}" fill="none" stroke="${INK}" stroke-width="1.8"/>`);
  // Margins: recall (diagonal / row sum) on the right, precision (diagonal / column sum) below.
  const rx = mx + side + 62;
  out.push(text(rx, my - 16, 'recall', 20, { anchor: 'middle', color: MUTED, weight: 'bold' }));
  for (let t = 0; t < V; t++) {
    const r = supports[t] > 0 ? confusion[t][t] / supports[t] : 0;
    out.push(text(rx, my + t * cell + cell / 2, fmtPct(r, 2), 19, { anchor: 'middle', baseline: 'middle', color: MUTED }));
  }
  out.push(text(mx - 16, my + side + 34, 'precision', 20, { anchor: 'end', baseline: 'middle', color: MUTED, weight: 'bold' }));
  for (let p = 0; p < V; p++) {
    const r = predicted[p] > 0 ? confusion[p][p] / predicted[p] : 0;
    out.push(text(mx + p * cell + cell / 2, my + side + 34, fmtPct(r, 2), 19, { anchor: 'middle', baseline: 'middle', color: MUTED }));
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
    out.push(text(barX + 42, y, `${Math.round(s * 100)}%`, 19, { baseline: 'middle' }));
  }
  out.push(text(barX + 124, my + side / 2, 'share of the true class', 22, { anchor: 'middle', rotate: 90 }));
  out.push('</svg>');
  return out.join('\n');
}

export const ERROR_GRID = { cols: 6, rows: 6, scale: 6 } as const;

/** Pixel size of errors.png for `shown` mistakes whose longest label is `labelChars` characters. */
export function errorsSize(shown: number, labelChars: number): { width: number; height: number; cellW: number; cellH: number } {
  const img = IMAGE_SIDE * ERROR_GRID.scale;
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
  const img = IMAGE_SIDE * s;
  const x0 = (W - ERROR_GRID.cols * cellW) / 2;
  const out = svgHead(W, H, `Most confident mistakes — ${title}`, mistakes.length === 0 ? 'no test image is misclassified'
    : `${mistakes.length} of ${wrong.toLocaleString('en-US')} misclassified images, surest first · true (green) → predicted (red), probability of the prediction`);
  mistakes.forEach((m, k) => {
    const cx = x0 + (k % ERROR_GRID.cols) * cellW;
    const cy = 140 + Math.floor(k / ERROR_GRID.cols) * cellH;
    const ix = cx + (cellW - img) / 2;
    const px: string[] = [];
    for (let y = 0; y < IMAGE_SIDE; y++) {
      for (let x = 0; x < IMAGE_SIDE; x++) {
        const v = images[m.index * IMAGE_PIXELS + y * IMAGE_SIDE + x];
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
