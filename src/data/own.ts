// Your own data (--data, --test, eval --data): which of the three layouts a path is, each read into images,
// class indices and class names; the test set's classes matched to the training set's; the seeded,
// stratified hold-out when there is no test set; and the normalization statistics of the training images.
//
//   a folder of IDX files   MNIST's four names, or a pair per split: <name>-train-images-idx3-ubyte[.gz] with
//                           <name>-train-labels-idx1-ubyte[.gz], and the same with -test- or -t10k- (EMNIST's,
//                           KMNIST's); classes are the label values found, named by their number
//   a .csv file             Kaggle's layout (data/csv.ts); classes are the label values found
//   a folder of folders     <class name>/*.png|jpg|jpeg|webp (data/folder.ts); classes are the folder names
//
// Label values need not start at 0 nor be contiguous (EMNIST letters are 1..26): the classes are the values
// present in the training set, in numeric order, and a label is stored as its class's index.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { printable, UsageError, UserError } from '../errors.js';
import { Rng } from '../rng.js';
import { parseCsv } from './csv.js';
import { IMAGE_PIXELS, MAX_CLASSES, MIN_CLASSES, type DataInfo, type Labels } from './datasets.js';
import { readImageFolder, type Progress } from './folder.js';
import { loadIdxPair, type Split } from './idx.js';

export type DataLayout = 'idx' | 'csv' | 'images';

/** A set of images with class names: what one path of your own data holds (or one split of it). */
export interface LabeledSet {
  /** the path as given, and which split of it for an IDX folder of two ("data/ (train)") */
  name: string;
  layout: DataLayout;
  /** count × 784 pixels */
  images: Uint8Array;
  /** class indices into `classes` */
  labels: Labels;
  count: number;
  /** the image folders' names, or the label values as text (in numeric order) */
  classes: string[];
}

/** What --data holds: the training set and, for an IDX folder with a test split, that split. */
export interface OwnData {
  train: LabeledSet;
  test: LabeledSet | null;
  /** what the caller may tell the user (files skipped) */
  notes: string[];
}

/** Where a run's own data comes from: what a model file records, so that eval finds the same test set. */
export interface DataSource {
  /** --data */
  data: string;
  /** --test, or '' */
  test: string;
  valSplit: number;
  /** the seed of the hold-out (the run's --seed) */
  seed: number;
}

/** True when `v` is a DataSource as a model file records it. */
export function isDataSource(v: unknown): v is DataSource {
  const o = v as Partial<DataSource> | null;
  return typeof o === 'object' && o !== null && typeof o.data === 'string' && o.data !== '' && typeof o.test === 'string'
    && typeof o.valSplit === 'number' && o.valSplit > 0 && o.valSplit <= 0.9 && Number.isInteger(o.seed) && o.seed! >= 0;
}

/** The largest CSV file read: some 27 times Kaggle's train.csv, about 1.1 million images. */
export const MAX_CSV_BYTES = 2 * 1024 * 1024 * 1024 - 1;

const LAYOUTS = 'a folder of IDX files, a .csv file (a label, then 784 pixels per line) or a folder of class folders of images';

/**
 * Reads --data (or --test, eval --data: `flag` names it in messages) in whichever layout it is. `training`:
 * the set is to be trained on, so an IDX folder must hold a training split.
 */
export async function readOwnData(path: string, flag: string, progress?: Progress, training = true): Promise<OwnData> {
  let isDir: boolean;
  try {
    const st = statSync(path);
    if (!st.isDirectory() && !st.isFile()) throw new UsageError(`${flag} ${path}: neither a file nor a folder; give ${LAYOUTS}`);
    isDir = st.isDirectory();
  } catch (e) {
    if (e instanceof UserError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`${flag} ${path}: ${code === 'ENOENT' ? 'no such file or folder' : `cannot read it (${code})`}; give ${LAYOUTS}`);
  }
  if (!isDir) {
    if (!path.toLowerCase().endsWith('.csv')) throw new UsageError(`${flag} ${path}: not a .csv file nor a folder; give ${LAYOUTS}`);
    return { train: readCsvSet(path), test: null, notes: [] };
  }
  const pairs = idxPairs(path);
  if (pairs.length > 0) return readIdxFolder(path, pairs, training);
  const folder = await readImageFolder(path, progress);
  const notes = folder.skipped > 0
    ? [`${flag} ${path}: left out ${folder.skipped} file${folder.skipped === 1 ? '' : 's'} in the class folders that ${folder.skipped === 1 ? 'is' : 'are'} not .png, .jpg, .jpeg or .webp`]
    : [];
  return { train: { name: path, layout: 'images', ...folder }, test: null, notes };
}

/** The set a test set or an evaluation reads from `path`: an IDX folder's test split when it has one. */
export async function readTestSet(path: string, flag: string, progress?: Progress): Promise<LabeledSet> {
  const own = await readOwnData(path, flag, progress, false);
  return own.test ?? own.train;
}

// ---------------------------------------------------------------------------------------------------------
// The three layouts

function readCsvSet(path: string): LabeledSet {
  let bytes: Buffer;
  try {
    const { size } = statSync(path);
    if (size > MAX_CSV_BYTES) throw new UserError(`${path}: ${size} bytes, more than the ${MAX_CSV_BYTES} a CSV file may be; split it`);
    bytes = readFileSync(path);
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); check its permissions`);
  }
  // labels are needed whatever the set is for: a test set without them cannot be scored either
  const csv = parseCsv(bytes, path, true);
  return numbered(path, 'csv', csv.images, csv.labels!, csv.count, (i) => `image ${i + 1}`);
}

interface IdxPair { prefix: string; images: string; labels: string; split: 'train' | 'test' | null }

const IMAGES_FILE = /^(.*)-images-idx3-ubyte(\.gz)?$/;
const MNIST_PREFIX: Record<string, 'train' | 'test'> = { train: 'train', t10k: 'test' };

/** The IDX image files of a folder, each with its labels file and the split its name says. */
function idxPairs(dir: string): IdxPair[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new UserError(`${dir}: cannot read the folder (${(e as NodeJS.ErrnoException).code}); check the path and its permissions`);
  }
  const pairs = new Map<string, IdxPair>();
  for (const name of names.sort()) {
    const m = IMAGES_FILE.exec(name);
    if (!m) continue;
    const prefix = m[1];
    // both a .gz and a plain copy: the .gz (sorted after) wins
    const labels = [`${prefix}-labels-idx1-ubyte.gz`, `${prefix}-labels-idx1-ubyte`].find((f) => names.includes(f));
    if (labels === undefined) {
      throw new UserError(`${join(dir, name)}: no labels file beside it; expected ${prefix}-labels-idx1-ubyte or ${prefix}-labels-idx1-ubyte.gz in ${dir}`);
    }
    const split = MNIST_PREFIX[prefix] ?? (/(^|[-_.])train$/i.test(prefix) ? 'train' : /(^|[-_.])(test|t10k)$/i.test(prefix) ? 'test' : null);
    pairs.set(prefix, { prefix, images: join(dir, name), labels: join(dir, labels), split });
  }
  return [...pairs.values()];
}

async function readIdxFolder(dir: string, pairs: IdxPair[], training: boolean): Promise<OwnData> {
  const of = (split: IdxPair['split']) => pairs.filter((p) => p.split === split);
  for (const split of ['train', 'test'] as const) {
    if (of(split).length > 1) {
      throw new UserError(`${dir}: holds ${of(split).length} ${split}ing sets (${of(split).map((p) => p.prefix).join(', ')}); keep one pair of images and labels files per split in a folder`);
    }
  }
  let train = of('train')[0];
  const test = of('test')[0];
  const other = of(null);
  if (train === undefined && other.length === 1 && test === undefined) train = other[0];
  if (train === undefined && test === undefined) {
    throw new UserError(`${dir}: holds IDX files (${other.map((p) => p.prefix).join(', ')}) but none named for the training or the test split; ` +
      'name them <name>-train-images-idx3-ubyte and <name>-test-images-idx3-ubyte, with their -labels-idx1-ubyte files');
  }
  const read = async (p: IdxPair, split: string): Promise<LabeledSet> => {
    const s: Split = await loadIdxPair(p.images, p.labels, null);
    return numbered(p.labels, 'idx', s.images, s.labels, s.count, (i) => `index ${i}`, `${dir} (${split})`);
  };
  if (train === undefined) {
    // a folder of one test split: fine to evaluate on, not to train on
    if (training) {
      throw new UserError(`${dir}: holds only a test split (${test!.prefix}-images-idx3-ubyte); training needs a training split beside it (<name>-train-images-idx3-ubyte and its labels)`);
    }
    return { train: await read(test!, 'test'), test: null, notes: [] };
  }
  const [trainSet, testSet] = await Promise.all([read(train, 'train'), test ? read(test, 'test') : Promise.resolve(null)]);
  return { train: trainSet, test: testSet, notes: [] };
}

/**
 * A set whose labels are numbers (a CSV file's, an IDX file's): its classes are the values present, in
 * numeric order, and each label becomes its class's index. `where(i)` names image i in a message.
 */
function numbered(file: string, layout: DataLayout, images: Uint8Array, values: ArrayLike<number>, count: number,
                  where: (i: number) => string, name = file): LabeledSet {
  const present = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    if (!present.has(values[i])) {
      present.set(values[i], i);
      if (present.size > MAX_CLASSES) {
        throw new UserError(`${file}: holds more than ${MAX_CLASSES} different labels (${values[i]}, at ${where(i)}, is one too many); ` +
          `mnist-par trains at most ${MAX_CLASSES} classes: merge classes or use fewer`);
      }
    }
  }
  const sorted = [...present.keys()].sort((a, b) => a - b);
  const index = new Map(sorted.map((v, c) => [v, c]));
  const labels = new Uint16Array(count);
  for (let i = 0; i < count; i++) labels[i] = index.get(values[i])!;
  return { name, layout, images, labels, count, classes: sorted.map(String) };
}

// ---------------------------------------------------------------------------------------------------------
// Classes, the hold-out, normalization

/** Refuses a training set of fewer than MIN_CLASSES classes. */
export function checkTrainingClasses(set: LabeledSet, flag: string): void {
  if (set.classes.length < MIN_CLASSES) {
    const what = set.layout === 'images' ? 'class folder' : 'label';
    throw new UserError(`${flag} ${set.name}: holds one class only (${what} ${printable(set.classes[0])}); training needs at least ${MIN_CLASSES}`);
  }
}

/**
 * The set's labels as indices into `classes` (the model's). An image folder must have exactly these class
 * folders; numbered labels must each be one of them (a test set may lack a class). `what` names the set.
 */
export function matchClasses(set: LabeledSet, classes: readonly string[], what: string): Labels {
  const list = (names: string[]): string => {
    const shown = names.slice(0, 8).map((n) => printable(n, 30)).join(', ');
    return names.length > 8 ? `${shown}, … (${names.length} in all)` : shown;
  };
  const known = new Map(classes.map((c, i) => [c, i]));
  const unknown = set.classes.filter((c) => !known.has(c));
  const missing = set.layout === 'images' ? classes.filter((c) => !set.classes.includes(c)) : [];
  if (unknown.length > 0 || missing.length > 0) {
    const parts = [
      unknown.length > 0 ? `${set.layout === 'images' ? 'class folders' : 'labels'} ${list(unknown)} that the model's classes lack` : '',
      missing.length > 0 ? `no class folder for ${list(missing)}` : '',
    ].filter(Boolean);
    throw new UserError(`${what}: its classes differ from the training set's: it has ${parts.join(' and ')}; ` +
      `the training set's classes are ${list([...classes])}`);
  }
  const map = set.classes.map((c) => known.get(c)!);
  if (map.every((m, i) => m === i) && set.labels instanceof Uint16Array) return set.labels;
  return Uint16Array.from(set.labels, (c) => map[c]);
}

/** The images `keep` (sorted indices) of a set, in their order. */
function subset(set: LabeledSet, keep: number[], name: string): LabeledSet {
  const images = new Uint8Array(keep.length * IMAGE_PIXELS);
  const labels = new Uint16Array(keep.length);
  keep.forEach((i, k) => {
    images.set(set.images.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS), k * IMAGE_PIXELS);
    labels[k] = set.labels[i];
  });
  return { ...set, name, images, labels, count: keep.length };
}

/**
 * Holds out `fraction` of every class for validation, chosen by a generator seeded with `seed`: the same
 * images for the same data and seed, whatever the machine. A class keeps at least one training image. The
 * two parts keep the images' order.
 */
export function holdOut(set: LabeledSet, fraction: number, seed: number): { train: LabeledSet; held: LabeledSet } {
  const V = set.classes.length;
  const members: number[][] = Array.from({ length: V }, () => []);
  for (let i = 0; i < set.count; i++) members[set.labels[i]].push(i);
  const rng = new Rng(seed);
  const held = new Uint8Array(set.count);
  for (const idx of members) {
    const k = Math.min(idx.length - 1, Math.round(fraction * idx.length));
    // the first k of a seeded shuffle (Fisher–Yates, as Rng.permutation draws)
    for (let j = 0; j < k; j++) {
      const r = j + rng.int(idx.length - j);
      [idx[j], idx[r]] = [idx[r], idx[j]];
      held[idx[j]] = 1;
    }
  }
  const keep: number[] = [], out: number[] = [];
  for (let i = 0; i < set.count; i++) (held[i] ? out : keep).push(i);
  if (out.length === 0) {
    throw new UsageError(`--val-split ${fraction}: holds out no image of the ${set.count} in ${set.name} (too few per class); ` +
      'give a larger --val-split, or a test set with --test');
  }
  return { train: subset(set, keep, set.name), held: subset(set, out, `${set.name} (held out)`) };
}

/** The seed of the hold-out: its own stream, derived from --seed (as the permutation's is). */
export function holdOutSeed(seed: number): number {
  return (seed ^ 0x4d0ed0a7) >>> 0;
}

/**
 * Mean and standard deviation of the pixels scaled to [0, 1], over every pixel of the first `count` images:
 * what x ↦ (x/255 − mean) / std needs. Exact sums from a 256-bin histogram, so the order of the images does
 * not matter. A set whose pixels are all the same is refused: there is nothing to learn from it.
 */
export function pixelStats(images: Uint8Array, count: number, name: string): { mean: number; std: number } {
  const hist = new Float64Array(256);
  const n = count * IMAGE_PIXELS;
  for (let i = 0; i < n; i++) hist[images[i]]++;
  let sum = 0;
  for (let v = 0; v < 256; v++) sum += hist[v] * (v / 255);
  const mean = sum / n;
  let sq = 0;
  for (let v = 0; v < 256; v++) sq += hist[v] * (v / 255 - mean) ** 2;
  const std = Math.sqrt(sq / n);
  if (!(std > 0)) throw new UserError(`${name}: every pixel of its ${count} training images is ${images[0]}; there is nothing to learn from`);
  return { mean, std };
}

// ---------------------------------------------------------------------------------------------------------
// A run's splits

export interface OwnSplits {
  train: Split;
  test: Split;
  info: DataInfo;
  /** the test set is a held-out share of --data (no test set was given) */
  heldOut: boolean;
  /** what to tell the user: where the test set comes from, files left out */
  notes: string[];
}

const asSplit = (s: { images: Uint8Array; labels: Labels; count: number }): Split =>
  ({ images: s.images, labels: s.labels, count: s.count, height: 28, width: 28 });

/**
 * The training and test splits of a run on your own data: --data's training set; the test set from --test,
 * else --data's own test split (an IDX folder's), else a held-out share. The normalization is the training
 * images' (the first `limitTrain` of them when given), unless `fixed` (a resumed run's) is given.
 */
export async function loadOwnSplits(source: DataSource, limitTrain: number, progress?: Progress,
                                    fixed?: { mean: number; std: number }): Promise<OwnSplits> {
  const own = await readOwnData(source.data, '--data', progress);
  checkTrainingClasses(own.train, '--data');
  const notes = [...own.notes];
  let train = own.train;
  let test: LabeledSet;
  let heldOut = false;
  if (source.test !== '') {
    test = await readTestSet(source.test, '--test', progress);
  } else if (own.test !== null) {
    test = own.test;
  } else {
    const parts = holdOut(own.train, source.valSplit, holdOutSeed(source.seed));
    train = parts.train;
    test = parts.held;
    heldOut = true;
    notes.push(`--data ${source.data}: no test set given (--test): ${test.count} of its ${own.train.count} images ` +
      `(${+(100 * source.valSplit).toFixed(2)}% of each class, seed ${source.seed}) are held out for validation`);
  }
  const classes = train.classes;
  const testLabels = matchClasses(test, classes, source.test !== '' ? `--test ${source.test}` : `${test.name}`);
  const trainCount = limitTrain > 0 ? Math.min(limitTrain, train.count) : train.count;
  const { mean, std } = fixed ?? pixelStats(train.images, trainCount, `--data ${source.data}`);
  return {
    train: asSplit(train), test: asSplit({ ...test, labels: testLabels }),
    info: { title: basename(source.data.replace(/[/\\]+$/, '')) || source.data, classes, mean, std }, heldOut, notes,
  };
}

/** The test set a model trained on your own data was validated on, rebuilt from what its file records. */
export async function recordedTestSet(source: DataSource, classes: readonly string[], progress?: Progress):
    Promise<{ split: Split; name: string; heldOut: boolean }> {
  let test: LabeledSet;
  let heldOut = false;
  if (source.test !== '') {
    test = await readTestSet(source.test, '--test', progress);
  } else {
    const own = await readOwnData(source.data, '--data', progress);
    heldOut = own.test === null;
    test = own.test ?? holdOut(own.train, source.valSplit, holdOutSeed(source.seed)).held;
  }
  return { split: asSplit({ ...test, labels: matchClasses(test, classes, test.name) }), name: test.name, heldOut };
}
