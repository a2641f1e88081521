// Turns any image of a single handwritten digit into a 28×28 MNIST-style input (ink 255 on black 0), the way
// MNIST itself was made: the digit's bounding box is scaled to fit 20×20 keeping its aspect ratio, then placed
// in the 28×28 field so that its centre of mass lands on pixel (14, 14).
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { mat2d, vec2 } from 'gl-matrix';
import ndarray, { type NdArray } from 'ndarray';
import sharp, { type OutputInfo } from 'sharp';
import { UserError } from '../errors.js';
import { IMAGE_SIDE as SIDE } from './datasets.js';

// ndarray-ops ships no types; these are the few functions used here.
type Nd = NdArray<Float64Array>;
const ops = createRequire(import.meta.url)('ndarray-ops') as {
  sum(a: Nd): number; sup(a: Nd): number;
  addseq(a: Nd, s: number): void; subseq(a: Nd, s: number): void; mulseq(a: Nd, s: number): void;
  maxseq(a: Nd, s: number): void; negeq(a: Nd): void;
};

const BOX = 20;
/** MNIST's centres of mass sit at (14.0, 14.0) on average, in pixel-index coordinates. */
const CENTRE = 14;
/**
 * The most pixels an input image may have: a 64-megapixel photo. The decoder works through every pixel the
 * header declares, so without a limit below sharp's own (268M) a 500-byte PNG declaring 8257564×28 pixels
 * kept it busy for 6 s before it failed.
 */
export const MAX_PIXELS = 64 * 1024 * 1024;
/** Ink must stand out from the background by this many grey levels (of 255) at its strongest. */
const MIN_CONTRAST = 32;
/** A row or column belongs to the digit when its strongest ink reaches this fraction of the peak. */
const BOX_THRESHOLD = 0.2;

/** An image's bytes as they came (an upload), and the name that messages give it. */
export interface ImageBytes {
  name: string;
  bytes: Uint8Array;
}

/**
 * The image (a file, or bytes of a file's contents) as 784 bytes, ink bright on black; throws a UserError
 * naming the file when that is impossible.
 */
export async function loadDigitImage(source: string | ImageBytes): Promise<Uint8Array> {
  const path = typeof source === 'string' ? source : source.name;
  const grey = await readGrey(source);
  const ink = inkLayer(grey, path);
  const box = boundingBox(ink);
  const scaled = await fitBox(ink.hi(box.y1, box.x1).lo(box.y0, box.x0));
  return placeByMass(scaled);
}

/** Greyscale 0..255 in float64, (height, width); transparent pixels become the side the ink is not on. */
async function readGrey(source: string | ImageBytes): Promise<Nd> {
  const path = typeof source === 'string' ? source : source.name;
  const fail = (why: string): UserError =>
    new UserError(`${path}: ${why}; expected a PNG, JPEG, WebP, GIF or TIFF image of one digit`);
  if (typeof source === 'string') {
    try {
      if (!(await stat(source)).isFile()) throw fail('not a file');
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw fail((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message);
    }
  } else if (source.bytes.length === 0) {
    // what sharp says of an empty file (of empty bytes in memory it says "Input Buffer is empty")
    throw fail('cannot decode it (Input file contains unsupported image format)');
  }
  const input = typeof source === 'string' ? source : source.bytes;
  let raw: { data: Buffer; info: OutputInfo };
  try {
    // A phone photo needs no more than 512 pixels a side to find a 20-pixel digit in.
    raw = await sharp(input, { failOn: 'warning', limitInputPixels: MAX_PIXELS }).autoOrient()
      .resize(512, 512, { fit: 'inside', withoutEnlargement: true, kernel: 'linear' })
      .toColourspace('srgb').ensureAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    // sharp words a complaint about bytes in memory "Input buffer …": the bytes are a file to whoever sent
    // them, so the message is the one the same bytes in a file get
    const why = (e as Error).message.split('\n')[0].replace(/^Input buffer\b/, 'Input file');
    if (/pixel limit/.test(why)) throw fail(`more than ${MAX_PIXELS} pixels (its header says so); scale it down`);
    throw fail(`cannot decode it (${why})`);
  }
  const { data, info: { width, height, channels } } = raw;
  if (channels !== 4) throw fail(`decoded to ${channels} channels instead of RGBA`);
  const n = width * height;
  const grey = new Float64Array(n);
  const alpha = new Float64Array(n);
  let opaque = 0, weighted = 0;
  for (let i = 0; i < n; i++) {
    grey[i] = 0.299 * data[4 * i] + 0.587 * data[4 * i + 1] + 0.114 * data[4 * i + 2];
    alpha[i] = data[4 * i + 3] / 255;
    opaque += alpha[i];
    weighted += alpha[i] * grey[i];
  }
  // A drawing on a transparent canvas: the visible strokes are the ink whatever their colour, so put them on
  // a background of the opposite brightness (dark strokes on white, light strokes on black).
  if (opaque < n) {
    const bg = opaque > 0 && weighted / opaque < 128 ? 255 : 0;
    for (let i = 0; i < n; i++) grey[i] = alpha[i] * grey[i] + (1 - alpha[i]) * bg;
  }
  return ndarray(grey, [height, width]);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * Ink strength 0..255 (background 0) from a greyscale image, in place. The background is the median of the
 * border pixels; the ink is on whichever side of it holds more deviation (dark ink on light paper is
 * inverted); the border's own spread is taken as noise and subtracted, and the strongest ink is scaled to 255.
 */
function inkLayer(img: Nd, path: string): Nd {
  const [h, w] = img.shape;
  const border: number[] = [];
  for (let x = 0; x < w; x++) border.push(img.get(0, x), img.get(h - 1, x));
  for (let y = 1; y < h - 1; y++) border.push(img.get(y, 0), img.get(y, w - 1));
  let bg = median(border);
  let bright = 0, dark = 0;
  for (const v of img.data) {
    if (v > bg) bright += v - bg;
    else dark += bg - v;
  }
  if (dark > bright) {
    ops.negeq(img);
    ops.addseq(img, 255);
    bg = 255 - bg;
    for (let i = 0; i < border.length; i++) border[i] = 255 - border[i];
  }
  const spread = border.map((v) => Math.abs(v - bg)).sort((a, b) => a - b);
  const noise = spread[Math.floor(0.9 * (spread.length - 1))];
  ops.subseq(img, bg + noise);
  ops.maxseq(img, 0);
  const peak = ops.sup(img);
  if (peak < MIN_CONTRAST) {
    throw new UserError(`${path}: no ink found (the strongest stroke differs from the background by ${Math.round(peak)} `
      + `of 255 grey levels, at least ${MIN_CONTRAST} needed); use an image with a clearly visible digit`);
  }
  ops.mulseq(img, 255 / peak);
  return img;
}

/** Half-open [y0, y1) × [x0, x1) of the rows and columns whose ink reaches BOX_THRESHOLD of the peak. */
function boundingBox(ink: Nd): { y0: number; y1: number; x0: number; x1: number } {
  const [h, w] = ink.shape;
  const thr = BOX_THRESHOLD * 255;
  const rows = Array.from({ length: h }, (_, y) => ops.sup(ink.pick(y, null)) >= thr);
  const cols = Array.from({ length: w }, (_, x) => ops.sup(ink.pick(null, x)) >= thr);
  return { y0: rows.indexOf(true), y1: rows.lastIndexOf(true) + 1, x0: cols.indexOf(true), x1: cols.lastIndexOf(true) + 1 };
}

/** Scales the cropped ink so its longer side is 20 pixels, keeping the aspect ratio. */
async function fitBox(crop: Nd): Promise<Nd> {
  const [h, w] = crop.shape;
  const bytes = new Uint8Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) bytes[y * w + x] = Math.round(crop.get(y, x));
  const k = BOX / Math.max(h, w);
  const nh = Math.max(1, Math.round(h * k)), nw = Math.max(1, Math.round(w * k));
  // b-w output: sharp would otherwise hand back the single channel as sRGB, three times over.
  const { data, info } = await sharp(bytes, { raw: { width: w, height: h, channels: 1 } })
    .resize(nw, nh, { fit: 'fill', kernel: 'linear' }).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 1 || info.width !== nw || info.height !== nh) throw new Error(`fitBox: sharp returned ${JSON.stringify(info)}`);
  return ndarray(Float64Array.from(data), [nh, nw]);
}

/**
 * Places the box in 28×28 so its centre of mass lands exactly on (14, 14): each output pixel looks up the
 * translated position in the box, bilinearly, with zero outside (a shift of a fraction of a pixel blurs less
 * than the half-pixel error of rounding it, which matters for strokes two pixels wide).
 */
function placeByMass(box: Nd): Uint8Array {
  const [h, w] = box.shape;
  const total = ops.sum(box);
  let my = 0, mx = 0;
  for (let y = 0; y < h; y++) my += y * ops.sum(box.pick(y, null));
  for (let x = 0; x < w; x++) mx += x * ops.sum(box.pick(null, x));
  // Output → box coordinates.
  const back = mat2d.fromTranslation(mat2d.create(), [mx / total - CENTRE, my / total - CENTRE]);
  const at = (y: number, x: number): number => (y >= 0 && y < h && x >= 0 && x < w ? box.get(y, x) : 0);
  const out = new Uint8Array(SIDE * SIDE);
  const p = vec2.create();
  for (let v = 0; v < SIDE; v++) {
    for (let u = 0; u < SIDE; u++) {
      vec2.transformMat2d(p, vec2.set(p, u, v), back);
      const x0 = Math.floor(p[0]), y0 = Math.floor(p[1]);
      const fx = p[0] - x0, fy = p[1] - y0;
      const val = (at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
                + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy;
      out[v * SIDE + u] = Math.round(val);
    }
  }
  return out;
}
