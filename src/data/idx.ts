// The IDX format (MNIST's container), gzipped or raw. Layout, all integers big-endian:
//   bytes 0-1  zero
//   byte  2    element type (0x08 = unsigned byte, the only one we accept)
//   byte  3    number of dimensions n
//   n × uint32 the dimensions
//   then exactly prod(dims) elements, row-major.
// Labels are magic 0x00000801 = 2049 (n = 1), images 0x00000803 = 2051 (n = 3, each 28×28).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { constants as zlibConstants, gunzip, gunzipSync, type ZlibOptions } from 'node:zlib';

const gunzipAsync = promisify(gunzip) as (buf: Uint8Array, options: ZlibOptions) => Promise<Buffer>;
import { printable, UserError } from '../errors.js';
import { CLASS_COUNT as CLASSES, IMAGE_SIDE as SIDE, othersOfSize, SPLIT_FILES, type DatasetName, type Labels, type SplitName } from './datasets.js';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

export type IdxKind = 'images' | 'labels';

export interface Split {
  /** count × height × width pixels, row-major, 0..255 */
  images: Uint8Array;
  /** count class indices (0..9 for the built-in datasets) */
  labels: Labels;
  count: number;
  /** an image's height and width in pixels (28 × 28) */
  height: number;
  width: number;
}

const UBYTE = 0x08;
const TYPE_NAMES: Record<number, string> = { 0x08: 'unsigned byte', 0x09: 'signed byte', 0x0b: 'int16', 0x0c: 'int32', 0x0d: 'float32', 0x0e: 'float64' };
const NDIMS: Record<IdxKind, number> = { labels: 1, images: 3 };

const hex = (n: number, width: number) => '0x' + n.toString(16).padStart(width, '0');

/** The command that fetches a fresh copy of the dataset into `dir`. */
function downloadHint(dir: string, dataset: IdxSource): string {
  return `mnist-par download --dataset ${dataset} --data-dir ${dir}`;
}

/**
 * Which files these are: a built-in dataset's (a bad file is fetched again) or, null, your own (--data: their
 * labels may be any byte, and a bad file is yours to fix).
 */
export type IdxSource = DatasetName | null;

function fail(file: string, problem: string, dataset: IdxSource): never {
  if (dataset === null) throw new UserError(`${file}: ${problem}; expected an IDX file of 28×28 images or of their labels, as MNIST's`);
  throw new UserError(`${file}: ${problem}; delete it and run \`${downloadHint(dirname(file), dataset)}\` to fetch a fresh copy`);
}

/**
 * Parses one IDX file (gunzipping it first if it starts with the gzip magic 0x1f 0x8b) and validates it as
 * MNIST labels or images: `kind` pins which one, otherwise the number of dimensions decides. `file` only
 * names the file in error messages. The returned data views the decompressed buffer (or `bytes`), no copy.
 */
export function parseIdx(bytes: Uint8Array, file: string, kind?: IdxKind, dataset: IdxSource = 'mnist'): IdxArray {
  // your own data (null) is no known dataset's
  if (dataset !== null) refuseOtherDataset(file, bytes, dataset);
  if (!isGzip(bytes)) return parseRaw(bytes, file, kind, dataset);
  const plan = gunzipPlan(bytes, file, kind, dataset);
  let buf: Uint8Array;
  try {
    buf = gunzipSync(bytes, plan.options);
  } catch (e) {
    failGunzip(file, e, plan, dataset);
  }
  return parseRaw(buf, file, kind, dataset);
}

/** The largest IDX file we read, decompressed: 20× MNIST's training images (47 MB). */
export const MAX_IDX_BYTES = 1 << 30;
/** Compressed bytes inflated first to read the header from: MNIST's header comes out of the first few dozen. */
const HEAD_INPUT = 1024;
/** Bytes inflated beyond the promised size before we stop and call the rest trailing data. */
const TRAILING_SLACK = 64 * 1024;
/** Deflate's best case: 258 bytes from about two bits, so a stream inflates to at most ~1032× its size. */
const DEFLATE_MAX_RATIO = 1032;

function isGzip(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b;
}

interface GunzipPlan { dims: number[]; want: number; options: ZlibOptions }

/**
 * How far to inflate a gzipped IDX file: what the header (inflated from the first kilobyte) promises, plus a
 * little to notice and count trailing data. Damaged or hostile data cannot make us allocate more (a "gzip
 * bomb" stops just past the promised size), and the promise itself is checked against MAX_IDX_BYTES and
 * against what a deflate stream of this length can hold before anything is allocated for it. One output
 * chunk of the whole size avoids collecting 64 KiB chunks and concatenating them, which doubled the memory
 * of a 47 MB load.
 */
function gunzipPlan(buf: Uint8Array, file: string, kind: IdxKind | undefined, dataset: IdxSource): GunzipPlan {
  let head: Uint8Array;
  try {
    // a sync flush inflates what a prefix holds without asking for the rest of the stream; a file no longer
    // than the prefix is inflated whole, so that a truncated stream is reported as such
    const whole = buf.length <= HEAD_INPUT;
    head = gunzipSync(whole ? buf : buf.subarray(0, HEAD_INPUT), {
      finishFlush: whole ? zlibConstants.Z_FINISH : zlibConstants.Z_SYNC_FLUSH, maxOutputLength: DEFLATE_MAX_RATIO * HEAD_INPUT,
    });
  } catch (e) {
    failGunzip(file, e, null, dataset);
  }
  const { dims, header, want } = readHeader(head, file, kind, dataset);
  const size = header + want;
  if (size > DEFLATE_MAX_RATIO * buf.length) {
    fail(file, `is truncated: header ${dims.join('×')} promises ${want} data bytes, more than a ${buf.length}-byte gzip file can hold`, dataset);
  }
  // room for a little more, so that a few trailing bytes are counted in the message
  return { dims, want, options: { chunkSize: Math.max(size + 1, 64), maxOutputLength: size + TRAILING_SLACK } };
}

function failGunzip(file: string, e: unknown, plan: GunzipPlan | null, dataset: IdxSource): never {
  if (plan && (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
    fail(file, `has unexpected trailing bytes: header ${plan.dims.join('×')} promises exactly ${plan.want} data bytes, its gzip stream holds more`, dataset);
  }
  fail(file, `is not a valid gzip file (${printable((e as Error).message)}); the download was probably cut short or corrupted`, dataset);
}

/** Validates the header (magic, element type, dimensions, 28×28, at least one entry); the data may be absent. */
function readHeader(buf: Uint8Array, file: string, kind: IdxKind | undefined, dataset: IdxSource): { dims: number[]; header: number; want: number } {
  if (buf.length < 4) fail(file, `expected an IDX header of at least 4 bytes, found a ${buf.length}-byte file`, dataset);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = view.getUint32(0);
  if (buf[0] !== 0 || buf[1] !== 0) {
    fail(file, `expected IDX magic 0x00000801 (labels) or 0x00000803 (images), found ${hex(magic, 8)}: not an IDX file`, dataset);
  }
  const type = buf[2];
  if (type !== UBYTE) {
    const what = TYPE_NAMES[type] ?? 'an unknown type';
    fail(file, `expected element type 0x08 (unsigned byte), found ${hex(type, 2)} (${what}) in magic ${hex(magic, 8)}`, dataset);
  }
  const n = buf[3];
  const wantN = kind ? NDIMS[kind] : n === 1 || n === 3 ? n : -1;
  if (n !== wantN) {
    const want = kind
      ? `magic ${hex(0x800 + wantN, 8)} (${kind}, ${wantN} dimension${wantN > 1 ? 's' : ''})`
      : 'magic 0x00000801 (labels, 1 dimension) or 0x00000803 (images, 3 dimensions)';
    fail(file, `expected ${want}, found ${hex(magic, 8)} (${n} dimension${n === 1 ? '' : 's'})`, dataset);
  }
  const header = 4 + 4 * n;
  if (buf.length < header) fail(file, `header is truncated: expected ${header} bytes for ${n} dimension${n === 1 ? '' : 's'}, found ${buf.length}`, dataset);
  const dims: number[] = [];
  for (let i = 0; i < n; i++) dims.push(view.getUint32(4 + 4 * i));
  if (n === 3 && (dims[1] !== SIDE || dims[2] !== SIDE)) {
    fail(file, `expected ${SIDE}×${SIDE} images, found ${dims[1]}×${dims[2]}`, dataset);
  }
  // an empty split would train for zero steps and report NaN metrics
  if (dims[0] === 0) fail(file, `holds no ${n === 1 ? 'labels' : 'images'}: its header gives ${dims.join('×')}`, dataset);
  const want = dims.reduce((a, b) => a * b, 1);
  if (header + want > MAX_IDX_BYTES) {
    fail(file, `header ${dims.join('×')} promises ${want} data bytes, more than the ${MAX_IDX_BYTES} this reader accepts`, dataset);
  }
  return { dims, header, want };
}

/** parseIdx of an already decompressed file. */
function parseRaw(buf: Uint8Array, file: string, kind: IdxKind | undefined, dataset: IdxSource): IdxArray {
  const { dims, header, want } = readHeader(buf, file, kind, dataset);
  const have = buf.length - header;
  if (have < want) fail(file, `is truncated: header ${dims.join('×')} promises ${want} data bytes, found ${have}`, dataset);
  if (have > want) fail(file, `has ${have - want} unexpected trailing bytes: header ${dims.join('×')} promises exactly ${want} data bytes, found ${have}`, dataset);
  const data = new Uint8Array(buf.buffer, buf.byteOffset + header, want);
  if (dims.length === 1 && dataset !== null) {
    for (let i = 0; i < want; i++) {
      if (data[i] >= CLASSES) fail(file, `expected labels 0..${CLASSES - 1}, found ${data[i]} at index ${i}`, dataset);
    }
  }
  return { dims, data };
}

/** Reads and validates the images and labels of one split from `dir`. */
export async function loadSplit(dir: string, split: SplitName, dataset: DatasetName = 'mnist'): Promise<Split> {
  const names = SPLIT_FILES[split];
  const missing = [names.images, names.labels].filter((f) => !existsSync(join(dir, f)));
  if (missing.length > 0) {
    throw new UserError(
      `missing ${missing.join(' and ')} in ${dir}; run \`${downloadHint(dir, dataset)}\` or pass --data-dir with the folder that holds them`,
    );
  }
  return loadIdxPair(join(dir, names.images), join(dir, names.labels), dataset);
}

/** Reads and validates an images file and its labels file, which must hold as many entries. */
export async function loadIdxPair(imagesFile: string, labelsFile: string, dataset: IdxSource): Promise<Split> {
  // read together; when both are bad, the images file's problem is the one reported, whichever fails first
  const [imagesRead, labelsRead] = await Promise.allSettled([
    readIdx(imagesFile, 'images', dataset),
    readIdx(labelsFile, 'labels', dataset),
  ]);
  if (imagesRead.status === 'rejected') throw imagesRead.reason;
  if (labelsRead.status === 'rejected') throw labelsRead.reason;
  const images = imagesRead.value;
  const labels = labelsRead.value;
  const count = images.dims[0];
  if (labels.dims[0] !== count) {
    const fix = dataset === null ? 'give the labels file that belongs to these images'
      : `the two files come from different downloads: delete both and run \`${downloadHint(dirname(imagesFile), dataset)}\``;
    throw new UserError(`${labelsFile}: expected ${count} labels to match ${basename(imagesFile)}, found ${labels.dims[0]}; ${fix}`);
  }
  return { images: images.data, labels: labels.data, count, height: images.dims[1], width: images.dims[2] };
}

/**
 * Refuses another known dataset's file given as `dataset`'s (MNIST and Fashion-MNIST share file names and
 * format, so nothing else would tell): judged by the size first, which costs nothing, then, only when the
 * size is the other dataset's, by the sha256 (about 10 ms per MB here, too much to pay on every load).
 */
function refuseOtherDataset(file: string, bytes: Uint8Array, dataset: DatasetName): void {
  for (const { info, file: known } of othersOfSize(dataset, basename(file), bytes.length)) {
    if (createHash('sha256').update(bytes).digest('hex') !== known.sha256) continue;
    throw new UserError(`${dirname(file)} holds the ${info.name} files, not ${dataset}'s (${known.name} has the size and sha256 of ` +
      `${info.name}'s): give --dataset ${info.name}, or a --data-dir with the ${dataset} files`);
  }
}

async function readIdx(file: string, kind: IdxKind, dataset: IdxSource): Promise<IdxArray> {
  let bytes: Uint8Array;
  try {
    // the size is checked before the file is read into memory
    const { size } = await stat(file);
    if (size > MAX_IDX_BYTES) fail(file, `is ${size} bytes, more than the ${MAX_IDX_BYTES} an IDX file may be`, dataset);
    bytes = await readFile(file);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${file}: cannot read it (${printable((e as Error).message)}); check its permissions or pass another --data-dir`);
  }
  if (dataset !== null) refuseOtherDataset(file, bytes, dataset);
  if (!isGzip(bytes)) return parseRaw(bytes, file, kind, dataset);
  const plan = gunzipPlan(bytes, file, kind, dataset);
  // decompressed in libuv's thread pool, so the splits' files (and the caller's other work) overlap
  let raw: Uint8Array;
  try {
    raw = await gunzipAsync(bytes, plan.options);
  } catch (e) {
    failGunzip(file, e, plan, dataset);
  }
  return parseRaw(raw, file, kind, dataset);
}
