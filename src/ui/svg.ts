// The SVG toolkit every picture shares (the run and scaling charts in charts.ts, eval's confusion matrix and
// mistakes grid in eval/pictures.ts): colours of the text, escaping, a text element, the document head with
// its title lines, and the rasterizer that renders with the shipped fonts.
import { ensureFonts, FONT_FAMILY } from './fonts.js';

/** Text and axes */
export const INK = '#222222';
/** Subtitles, notes, margins */
export const MUTED = '#555555';

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Rough advance width of `s` in DejaVu Sans at `size` px (its average glyph is ~0.6 em), for layout. */
export function textWidth(s: string, size: number): number {
  return s.length * size * 0.6;
}

export interface TextOptions {
  anchor?: 'start' | 'middle' | 'end';
  weight?: 'bold';
  color?: string;
  /** degrees, about (x, y) */
  rotate?: number;
  /** 'middle': y is the text's vertical centre; 'hanging': its top; else its baseline */
  baseline?: 'middle' | 'hanging';
}

/** One line of text at (x, y), `size` px, escaped. */
export function text(x: number, y: number, s: string, size: number, opts: TextOptions = {}): string {
  const attrs = [
    `x="${x.toFixed(1)}"`, `y="${y.toFixed(1)}"`, `font-size="${size}"`,
    `text-anchor="${opts.anchor ?? 'start'}"`, `fill="${opts.color ?? INK}"`,
  ];
  if (opts.weight) attrs.push(`font-weight="${opts.weight}"`);
  if (opts.baseline) attrs.push(`dominant-baseline="${opts.baseline === 'middle' ? 'central' : 'hanging'}"`);
  if (opts.rotate) attrs.push(`transform="rotate(${opts.rotate} ${x.toFixed(1)} ${y.toFixed(1)})"`);
  return `<text ${attrs.join(' ')}>${esc(s)}</text>`;
}

/**
 * The opening of a W×H picture: the <svg> element in the shipped font, a white background, the title
 * (bold, centred) and, when there is one, a muted subtitle under it. The caller closes it with '</svg>'.
 */
export function svgHead(W: number, H: number, title: string, subtitle?: string): string[] {
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT_FAMILY}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    text(W / 2, 54, title, 34, { anchor: 'middle', weight: 'bold' }),
  ];
  if (subtitle) out.push(text(W / 2, 94, subtitle, 22, { anchor: 'middle', color: MUTED }));
  return out;
}

/** Rasterizes an SVG with the shipped fonts in effect. */
export async function svgToPng(svg: string): Promise<Buffer> {
  ensureFonts();
  // Imported here, after ensureFonts(), so fontconfig can only ever start with our configuration.
  const sharp = (await import('sharp')).default;
  return sharp(Buffer.from(svg)).png().toBuffer();
}
