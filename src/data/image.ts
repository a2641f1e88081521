// Turns any image of a single handwritten digit into a 28×28 MNIST-style input (ink 255 on black 0), the way
// MNIST itself was made: the digit's bounding box is scaled to fit 20×20 keeping its aspect ratio, then placed
// in the 28×28 field so that its centre of mass lands on pixel (14, 14). `predict` prepares each image with it,
// and an image folder given to --data (data/folder.ts) every one of its images, so both see the same inputs.
//
// One sharp call per image, which is most of the time an image takes (about 0.5 ms of CPU for a 28×28 PNG):
// a small 8-bit PNG is decoded as it is, anything else through the general pipeline; the crop is scaled in
// TypeScript (resizeLinear), which for a few hundred pixels costs far less than a second call.
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import ndarray, { type NdArray } from 'ndarray';
import type { OutputInfo } from 'sharp';
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
/** The largest image file read: a photo is a few MB; this keeps a mistaken path (a disk image) out of memory. */
export const MAX_FILE_BYTES = 256 * 1024 * 1024;
/** Images are scaled down to fit this square first: a phone photo needs no more to find a 20-pixel digit in. */
const WORK_SIDE = 512;
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
  const scaled = fitBox(ink.hi(box.y1, box.x1).lo(box.y0, box.x0));
  return placeByMass(scaled);
}

/**
 * Greyscale 0..255 in float64, (height, width); transparent pixels become the side the ink is not on.
 * `general` takes the general pipeline even for a plain PNG (for the test that both give the same bits).
 */
export async function readGrey(source: string | ImageBytes, general = false): Promise<Nd> {
  const path = typeof source === 'string' ? source : source.name;
  const fail = (why: string): UserError =>
    new UserError(`${path}: ${why}; expected a PNG, JPEG, WebP, GIF or TIFF image of one digit`);
  const bytes = typeof source === 'string' ? readImageFile(path, fail) : imageBytes(source.bytes, fail);
  const plain = !general && isPlainPng(bytes);
  let raw: { data: Buffer; info: OutputInfo };
  try {
    const input = (await sharpModule())(bytes, { failOn: 'warning', limitInputPixels: MAX_PIXELS });
    raw = plain
      ? await input.raw().toBuffer({ resolveWithObject: true })
      : await input.autoOrient().resize(WORK_SIDE, WORK_SIDE, { fit: 'inside', withoutEnlargement: true, kernel: 'linear' })
        .toColourspace('srgb').ensureAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  } catch (e) {
    // sharp words a complaint about bytes in memory "Input buffer …": the bytes are a file to whoever sent
    // them, so the message is the one the same bytes in a file get
    const why = (e as Error).message.split('\n')[0].replace(/^Input buffer\b/, 'Input file');
    if (/pixel limit/.test(why)) throw fail(`more than ${MAX_PIXELS} pixels (its header says so); scale it down`);
    throw fail(`cannot decode it (${why})`);
  }
  const { data, info: { width, height, channels } } = raw;
  // a plain PNG comes as it is stored: grey, grey + alpha, RGB or RGBA; the general pipeline gives RGBA
  if (plain ? channels < 1 || channels > 4 : channels !== 4) throw fail(`decoded to ${channels} channels instead of ${plain ? '1 to 4' : 'RGBA'}`);
  const n = width * height;
  const grey = new Float64Array(n);
  const alpha = new Float64Array(n);
  const colour = channels >= 3 ? 1 : 0;
  const hasAlpha = channels === 2 || channels === 4;
  let opaque = 0, weighted = 0;
  for (let i = 0, p = 0; i < n; i++, p += channels) {
    // grey keeps R = G = B, as the conversion to sRGB would have made it, so both paths give the same bits
    const r = data[p], g = data[p + colour], b = data[p + 2 * colour];
    grey[i] = 0.299 * r + 0.587 * g + 0.114 * b;
    alpha[i] = hasAlpha ? data[p + channels - 1] / 255 : 1;
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

/**
 * The file's bytes; a missing file, a folder, an empty or an oversized file is refused naming `path`. Read
 * synchronously: for an image file that is a few dozen microseconds, five times less CPU than the
 * asynchronous calls, which is what loading a folder of thousands of them is bound by.
 */
function readImageFile(path: string, fail: (why: string) => UserError): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw fail(code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'not a file' : `cannot read it (${code ?? (e as Error).message})`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw fail('not a file');
    if (st.size === 0) throw fail('an empty file (0 bytes)');
    if (st.size > MAX_FILE_BYTES) throw fail(`${st.size} bytes, more than the ${MAX_FILE_BYTES} an image file may be`);
    return readFileSync(fd);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw fail(`cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  } finally {
    closeSync(fd);
  }
}

// sharp (libvips, about 30 MB resident) is loaded on the first image, not by every command that imports this file:
// a training run on MNIST never needs it
type Sharp = (typeof import('sharp'))['default'];
let sharpLoaded: Promise<Sharp> | null = null;
function sharpModule(): Promise<Sharp> {
  sharpLoaded ??= import('sharp').then((m) => m.default);
  return sharpLoaded;
}

/** Bytes of a file's contents that came without a file (an upload): refused as readImageFile refuses a file. */
function imageBytes(bytes: Uint8Array, fail: (why: string) => UserError): Uint8Array {
  if (bytes.length === 0) throw fail('an empty file (0 bytes)');
  if (bytes.length > MAX_FILE_BYTES) throw fail(`${bytes.length} bytes, more than the ${MAX_FILE_BYTES} an image file may be`);
  return bytes;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * A PNG that the general pipeline would only decode: at most WORK_SIDE pixels a side (nothing to scale down),
 * 8 bits or fewer per sample (nothing to narrow), and neither an orientation (eXIf) nor a colour profile (iCCP)
 * to apply. Its chunks are walked by their lengths, as a decoder would; anything unexpected says no.
 */
export function isPlainPng(b: Uint8Array): boolean {
  if (b.length < 33 || PNG_SIGNATURE.some((v, i) => b[i] !== v)) return false;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const type = (at: number) => String.fromCharCode(b[at + 4], b[at + 5], b[at + 6], b[at + 7]);
  if (type(8) !== 'IHDR') return false;
  const width = view.getUint32(16), height = view.getUint32(20), depth = b[24];
  if (width > WORK_SIDE || height > WORK_SIDE || depth > 8) return false;
  for (let at = 8; at + 12 <= b.length;) {
    const t = type(at);
    if (t === 'eXIf' || t === 'iCCP') return false;
    if (t === 'IEND') return true;
    at += 12 + view.getUint32(at);
  }
  return false;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/**
 * Ink strength 0..255 (background 0) from a greyscale image, in place. The background is the median of the
 * border pixels; the ink is on whichever side of it holds more deviation (dark ink on light paper is
 * inverted); the border's own spread (its 90th percentile, or its median when the object reaches the border)
 * is taken as noise and subtracted, and the strongest ink is scaled to 255.
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
  // An object that touches the border (a tight crop, as Fashion-MNIST's bags) makes the border's 90th
  // percentile the object itself: then the median border pixel's deviation is the noise.
  const strongest = ops.sup(img) - bg;
  let noise = spread[Math.floor(0.9 * (spread.length - 1))];
  if (strongest - noise < MIN_CONTRAST) noise = spread[Math.floor(0.5 * (spread.length - 1))];
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
  const rows = new Array<boolean>(h).fill(false);
  const cols = new Array<boolean>(w).fill(false);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (ink.get(y, x) >= thr) rows[y] = cols[x] = true;
    }
  }
  return { y0: rows.indexOf(true), y1: rows.lastIndexOf(true) + 1, x0: cols.indexOf(true), x1: cols.lastIndexOf(true) + 1 };
}

/** Scales the cropped ink so its longer side is 20 pixels, keeping the aspect ratio. */
function fitBox(crop: Nd): Nd {
  const [h, w] = crop.shape;
  const k = BOX / Math.max(h, w);
  const nh = Math.max(1, Math.round(h * k)), nw = Math.max(1, Math.round(w * k));
  const src = new Float64Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) src[y * w + x] = crop.get(y, x);
  const wide = resample(src, h, w, nw, false); // (h, nw)
  return ndarray(resample(wide, h, nw, nh, true), [nh, nw]);
}

/**
 * Resamples a (R, C) plane with a triangle (linear) filter: each row to m samples, giving (R, m), or with
 * `columns` each column, giving (m, C). Enlarging, it interpolates between the two nearest samples; shrinking,
 * the triangle widens to the reduction, so every input pixel counts (a thin stroke never falls between
 * samples). Sample i's centre is at i + 0.5; the weights are normalized where the triangle passes an edge.
 */
function resample(src: Float64Array, R: number, C: number, m: number, columns: boolean): Float64Array {
  const n = columns ? R : C;
  const lines = columns ? C : R;
  const at = columns ? (line: number, i: number) => i * C + line : (line: number, i: number) => line * C + i;
  const to = columns ? (line: number, j: number) => j * C + line : (line: number, j: number) => line * m + j;
  const scale = n / m;
  const support = Math.max(1, scale);
  const out = new Float64Array(lines * m);
  const weights = new Float64Array(2 * Math.ceil(support) + 3);
  for (let j = 0; j < m; j++) {
    const centre = (j + 0.5) * scale;
    const i0 = Math.max(0, Math.floor(centre - support)), i1 = Math.min(n - 1, Math.ceil(centre + support));
    let total = 0;
    for (let i = i0; i <= i1; i++) total += weights[i - i0] = Math.max(0, 1 - Math.abs(i + 0.5 - centre) / support);
    for (let line = 0; line < lines; line++) {
      let acc = 0;
      for (let i = i0; i <= i1; i++) acc += weights[i - i0] * src[at(line, i)];
      out[to(line, j)] = acc / total;
    }
  }
  return out;
}

/**
 * Places the box in 28×28 so its centre of mass lands exactly on (14, 14): each output pixel looks up the
 * translated position in the box, bilinearly, with zero outside (a shift of a fraction of a pixel blurs less
 * than the half-pixel error of rounding it, which matters for strokes two pixels wide).
 */
function placeByMass(box: Nd): Uint8Array {
  const [h, w] = box.shape;
  // the total in row-major order, each row's sum along x and each column's along y
  let total = 0;
  const rowSum = new Float64Array(h), colSum = new Float64Array(w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = box.get(y, x);
      total += v;
      rowSum[y] += v;
      colSum[x] += v;
    }
  }
  let my = 0, mx = 0;
  for (let y = 0; y < h; y++) my += y * rowSum[y];
  for (let x = 0; x < w; x++) mx += x * colSum[x];
  // Output → box coordinates: a translation, in float32 (gl-matrix's mat2d and vec2 held it so, and the
  // results stay the same bits).
  const tx = Math.fround(mx / total - CENTRE), ty = Math.fround(my / total - CENTRE);
  const at = (y: number, x: number): number => (y >= 0 && y < h && x >= 0 && x < w ? box.get(y, x) : 0);
  const out = new Uint8Array(SIDE * SIDE);
  for (let v = 0; v < SIDE; v++) {
    for (let u = 0; u < SIDE; u++) {
      const px = Math.fround(u + tx), py = Math.fround(v + ty);
      const x0 = Math.floor(px), y0 = Math.floor(py);
      const fx = px - x0, fy = py - y0;
      const val = (at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
                + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy;
      out[v * SIDE + u] = Math.round(val);
    }
  }
  return out;
}
