// Kaggle's Digit Recognizer layout: one image per line, comma-separated integers, the label first and then the
// 784 pixels of a 28×28 image row by row, each 0..255 (its train.csv); the test.csv it asks predictions for has
// the pixels only. A header line (label,pixel0,…,pixel783) is optional: a first line holding anything but
// numbers is one. Blank lines are skipped, CRLF line ends are accepted, blanks around a value are ignored.
//
// The parser reads bytes, not text: one pass over the file with no string per line or per value, which is what
// makes Kaggle's 73 MB train.csv parse in a fraction of a second (bench data). Every problem is one UserError
// naming the file, the line and, where it is one value's, the column.
import { UserError, printable } from '../errors.js';
import { IMAGE_PIXELS, IMAGE_SIDE } from './datasets.js';

export interface CsvImages {
  /** count × 784 pixels, row-major */
  images: Uint8Array;
  /** count labels as written (any non-negative integer), or null for a file of pixels only */
  labels: Int32Array | null;
  count: number;
  /** the file began with a header line */
  header: boolean;
}

const COMMA = 0x2c, LF = 0x0a, CR = 0x0d, SPACE = 0x20, TAB = 0x09, ZERO = 0x30, NINE = 0x39;
/** The largest label value: labels are names of classes, and a number this long is no class (2^31 − 1). */
const MAX_LABEL = 0x7fffffff;

/** A value's text, for a message: the bytes from `at` up to the next comma or line end, at most 40. */
function valueText(b: Uint8Array, at: number): string {
  let end = at;
  while (end < b.length && b[end] !== COMMA && b[end] !== LF && b[end] !== CR && end - at < 40) end++;
  return printable(Buffer.from(b.buffer, b.byteOffset + at, end - at).toString('utf8'), 40);
}

const isBlank = (c: number): boolean => c === SPACE || c === TAB;

/** Commas + 1 on the line starting at `at` (its end: `end`). */
function columnsOf(b: Uint8Array, at: number, end: number): number {
  let n = 1;
  for (let i = at; i < end; i++) if (b[i] === COMMA) n++;
  return n;
}

/** True when the line [at, end) holds something other than digits, signs, points, commas and blanks. */
function isHeaderLine(b: Uint8Array, at: number, end: number): boolean {
  for (let i = at; i < end; i++) {
    const c = b[i];
    if (!((c >= ZERO && c <= NINE) || c === COMMA || isBlank(c) || c === CR || c === 0x2d || c === 0x2b || c === 0x2e)) return true;
  }
  return false;
}

/**
 * Parses a whole CSV file of images. `file` names it in messages; `needLabels` refuses a file of pixels only
 * (a training set, or a test set that is to be scored) with a message that says so.
 */
export function parseCsv(b: Uint8Array, file: string, needLabels: boolean): CsvImages {
  const fail = (line: number, what: string): never => {
    throw new UserError(`${file}: line ${line}: ${what}`);
  };
  const n = b.length;
  let pos = 0;
  let line = 1;
  // skip a byte-order mark and leading blank lines
  if (n >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) pos = 3;
  const lineEnd = (at: number): number => {
    const i = b.indexOf(LF, at);
    return i < 0 ? n : i;
  };
  const blankLine = (at: number, end: number): boolean => {
    for (let i = at; i < end; i++) if (!isBlank(b[i]) && b[i] !== CR) return false;
    return true;
  };
  while (pos < n && blankLine(pos, lineEnd(pos))) {
    pos = lineEnd(pos) + 1;
    line++;
  }
  if (pos >= n) throw new UserError(`${file}: holds no lines of data; expected a label and ${IMAGE_PIXELS} pixel values per line (Kaggle's train.csv layout)`);

  // the first line decides the layout: a header, then label + pixels or pixels only
  let end = lineEnd(pos);
  const header = isHeaderLine(b, pos, end);
  const columns = columnsOf(b, pos, end);
  if (columns !== IMAGE_PIXELS + 1 && columns !== IMAGE_PIXELS) {
    fail(line, `expected ${IMAGE_PIXELS + 1} columns (a label, then the ${IMAGE_PIXELS} pixels of a ${IMAGE_SIDE}×${IMAGE_SIDE} image) ` +
      `or ${IMAGE_PIXELS} (pixels only), found ${columns}; mnist-par trains on ${IMAGE_SIDE}×${IMAGE_SIDE} greyscale images`);
  }
  const labeled = columns === IMAGE_PIXELS + 1;
  if (!labeled && needLabels) {
    fail(line, `has ${IMAGE_PIXELS} columns, pixels only, and no label column (as Kaggle's test.csv); ` +
      `this set needs one: a label first on every line, then the ${IMAGE_PIXELS} pixels (as Kaggle's train.csv)`);
  }
  if (header) {
    pos = end + 1;
    line++;
  }

  // an upper bound on the images: the lines left, and what the bytes left can hold ("0,0,…,0" is the shortest
  // line), so that a file of many short lines allocates no more than its own size
  const width = labeled ? IMAGE_PIXELS + 1 : IMAGE_PIXELS;
  let lines = 0;
  for (let i = pos; i < n; i = lineEnd(i) + 1) lines++;
  lines = Math.min(lines, Math.floor((n - pos) / (2 * width - 1)) + 1);
  const images = new Uint8Array(lines * IMAGE_PIXELS);
  const labels = labeled ? new Int32Array(lines) : null;
  let count = 0;
  let px = 0;
  while (pos < n) {
    end = lineEnd(pos);
    if (blankLine(pos, end)) {
      pos = end + 1;
      line++;
      continue;
    }
    let col = 0;
    for (;;) {
      while (pos < end && isBlank(b[pos])) pos++;
      const start = pos;
      let v = 0;
      while (pos < end && b[pos] >= ZERO && b[pos] <= NINE && v <= MAX_LABEL) v = v * 10 + (b[pos++] - ZERO);
      const digits = pos - start;
      while (pos < end && isBlank(b[pos])) pos++;
      const next = pos < end ? b[pos] : LF;
      const isLast = next === LF || (next === CR && pos + 1 >= end);
      if (digits === 0 || digits > 10 || (next !== COMMA && !isLast) || v > MAX_LABEL) {
        const text = valueText(b, start);
        const what = col === 0 && labeled ? 'label' : `pixel${col - (labeled ? 1 : 0)}`;
        const negative = /^-\d+$/.test(text);
        if (col === 0 && labeled) {
          fail(line, `column 1 (${what}): expected a class label, an integer ≥ 0, found ${text === '' ? 'nothing' : `'${text}'`}`);
        }
        fail(line, `column ${col + 1} (${what}): expected a pixel value, an integer 0-255, found ` +
          `${text === '' ? 'nothing' : negative ? `${text}, outside 0-255` : `'${text}'`}`);
      }
      if (col < width) {
        if (labeled && col === 0) {
          labels![count] = v;
        } else {
          if (v > 255) fail(line, `column ${col + 1} (pixel${col - (labeled ? 1 : 0)}): expected a pixel value 0-255, found ${v}`);
          images[px++] = v;
        }
      }
      col++;
      if (isLast) break;
      pos++; // the comma
    }
    if (col !== width) {
      fail(line, `expected ${width} columns (${labeled ? 'a label, then ' : ''}${IMAGE_PIXELS} pixels), as the ` +
        `${header ? 'header' : 'first line'} has, found ${col}`);
    }
    count++;
    pos = end + 1;
    line++;
  }
  if (count === 0) throw new UserError(`${file}: holds a header and no images; expected a label and ${IMAGE_PIXELS} pixel values per line after it`);
  return { images: images.subarray(0, count * IMAGE_PIXELS), labels: labels ? labels.subarray(0, count) : null, count, header };
}
