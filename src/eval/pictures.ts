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

/** A cell's side in pixels for up to 10 classes; more classes get smaller cells (confusionLayout). */
export const CONFUSION_CELL = 88;
/** Up to this many classes every cell holds its count and every class its label, recall and precision. */
export const CONFUSION_DETAILED = 60;

/**
 * How the matrix is drawn for V classes: the cell side, and whether cells hold their counts. Up to 10
 * classes, 88-pixel cells; up to CONFUSION_DETAILED, cells shrink so the matrix stays about 1,800 pixels wide
 * but no smaller than 36 (a three-digit count at 18 px still fits: 47 classes give 38-pixel cells); beyond, the
 * matrix is a picture of colours about 2,400 pixels wide with every k-th class labelled.
 */
export function confusionLayout(V: number): { cell: number; detailed: boolean; labelEvery: number } {
  if (V > CONFUSION_DETAILED) {
    const cell = Math.max(2, Math.floor(2400 / V));
    return { cell, detailed: false, labelEvery: Math.ceil(V / Math.floor((V * cell) / 40)) };
  }
  return { cell: Math.min(CONFUSION_CELL, Math.max(36, Math.round(1800 / V))), detailed: true, labelEvery: 1 };
}

/**
 * The confusion matrix as a heatmap: cells coloured by the share of the true class (row), counts in the
 * cells, recall per row on the right, precision per column below, a colour bar. Reads like the text table:
 * predicted classes across the top, true classes down the side. Fonts follow the cell size, so 26 or 47
 * classes read as well as 10 (confusionLayout).
 */
export async function confusionSvg(confusion: number[][], names: readonly string[], title: string, caption: string): Promise<string> {
  const V = confusion.length;
  const { cell, detailed, labelEvery } = confusionLayout(V);
  const side = V * cell;
  const label = (c: number): string => names[c] ?? String(c);
  const labelled = (c: number): boolean => c % labelEvery === 0;
  // class labels: 22 px, smaller in small cells (they sit one per row and column)
  const labelFont = detailed ? Math.min(22, Math.floor(cell * 0.62)) : 18;
  const longest = Math.max(...Array.from({ length: V }, (_, c) => (labelled(c) ? textWidth(label(c), labelFont) : 0)));
  // Column labels stand upright when they fit a cell, else slanted.
  const slant = longest > cell * labelEvery - 10;
  // counts: 24 px in 88-pixel cells, as large as the widest count allows in smaller ones
  const digits = String(confusion.reduce((m, row) => row.reduce((a, n) => Math.max(a, n), m), 0)).length;
  const countFont = Math.min(24, Math.floor((cell * 0.9) / (0.62 * digits)), Math.floor(cell * 0.55));
  const marginFont = Math.min(19, Math.floor(cell * 0.6));
  // precision under each column: side by side when "100.00%" fits a cell, else turned upright
  const upright = textWidth('100.00%', marginFont) > cell - 6;
  const mx = Math.max(150, 100 + longest + 18);
  const my = 130 + 56 + (slant ? longest * 0.72 + 20 : 40);
  const recallW = detailed ? 124 : 0;
  const barX = mx + side + recallW + 26;
  const W = Math.max(1000, Math.round(barX + 28 + 90 + 60));
  const below = detailed ? (upright ? textWidth('100.00%', marginFont) + 30 : 50) : 10;
  const H = Math.round(my + side + below + 100);
  const supports = confusion.map((row) => row.reduce((s, x) => s + x, 0));
  const predicted = Array.from({ length: V }, (_, c) => confusion.reduce((s, r) => s + r[c], 0));
  const out = [
    ...svgHead(W, H, `Confusion matrix — ${title}`, caption),
    text(mx + side / 2, 154, 'predicted class', 26, { anchor: 'middle' }),
    text(44, my + side / 2, 'true class', 26, { anchor: 'middle', rotate: -90 }),
  ];
  for (let c = 0; c < V; c++) {
    if (!labelled(c)) continue;
    const x = mx + c * cell + cell / 2;
    out.push(slant ? text(x, my - 14, label(c), labelFont, { rotate: -45 }) : text(x, my - 16, label(c), labelFont, { anchor: 'middle' }));
    out.push(text(mx - 16, my + c * cell + cell / 2, label(c), labelFont, { anchor: 'end', baseline: 'middle' }));
  }
  const shade = (t: number, p: number): number => colourOf(supports[t] > 0 ? confusion[t][p] / supports[t] : 0);
  if (detailed) {
    for (let t = 0; t < V; t++) {
      for (let p = 0; p < V; p++) {
        const n = confusion[t][p];
        const v = shade(t, p);
        const x = mx + p * cell, y = my + t * cell;
        out.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${blues(v)}" stroke="white" stroke-width="1.5"/>`);
        const colour = n === 0 ? '#b0b0b0' : v > 0.55 ? 'white' : INK;
        out.push(text(x + cell / 2, y + cell / 2, String(n), countFont, { anchor: 'middle', baseline: 'middle', color: colour, weight: t === p ? 'bold' : undefined }));
      }
    }
  } else {
    // V² rectangles would make an SVG of millions of elements at 1,000 classes: the cells are one picture
    out.push(`<image x="${mx}" y="${my}" width="${side}" height="${side}" href="data:image/png;base64,${(await cellsPng(V, cell, shade)).toString('base64')}"/>`);
  }
  out.push(`<rect x="${mx}" y="${my}" width="${side}" height="${side}" fill="none" stroke="${INK}" stroke-width="1.8"/>`);
  if (detailed) {
    // Margins: recall (diagonal / row sum) on the right, precision (diagonal / column sum) below.
    const rx = mx + side + 62;
    out.push(text(rx, my - 16, 'recall', 20, { anchor: 'middle', color: MUTED, weight: 'bold' }));
    for (let t = 0; t < V; t++) {
      const r = supports[t] > 0 ? confusion[t][t] / supports[t] : 0;
      out.push(text(rx, my + t * cell + cell / 2, fmtPct(r, 2), marginFont, { anchor: 'middle', baseline: 'middle', color: MUTED }));
    }
    out.push(text(mx - 16, my + side + 34, 'precision', 20, { anchor: 'end', baseline: 'middle', color: MUTED, weight: 'bold' }));
    for (let p = 0; p < V; p++) {
      const r = predicted[p] > 0 ? confusion[p][p] / predicted[p] : 0;
      const x = mx + p * cell + cell / 2;
      out.push(upright
        ? text(x, my + side + 14, fmtPct(r, 2), marginFont, { anchor: 'end', baseline: 'middle', color: MUTED, rotate: -90 })
        : text(x, my + side + 34, fmtPct(r, 2), marginFont, { anchor: 'middle', baseline: 'middle', color: MUTED }));
    }
  }
  out.push(text(mx + side / 2, my + side + below + 40, detailed
    ? 'cell colour: share of the true class (square-root scale) · numbers: image counts'
    : `cell colour: share of the true class (square-root scale) · ${V} classes, every ${labelEvery === 1 ? '' : `${labelEvery}th `}one labelled`,
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

/** The cells as a PNG of (V·cell)² pixels, each cell a square of its colour. */
async function cellsPng(V: number, cell: number, shade: (t: number, p: number) => number): Promise<Buffer> {
  const side = V * cell;
  const rgb = Buffer.alloc(side * side * 3);
  const ramp = Array.from({ length: 256 }, (_, i) => blues(i / 255)).map((hex) => [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16)));
  for (let t = 0; t < V; t++) {
    for (let p = 0; p < V; p++) {
      const c = ramp[Math.round(255 * shade(t, p))];
      for (let y = t * cell; y < (t + 1) * cell; y++) {
        for (let x = p * cell; x < (p + 1) * cell; x++) rgb.set(c, 3 * (y * side + x));
      }
    }
  }
  const sharp = (await import('sharp')).default;
  return sharp(rgb, { raw: { width: side, height: side, channels: 3 } }).png().toBuffer();
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
