// Your own data, room by room: the CSV parser (values, layouts, every bad line named), the three layouts
// --data reads and their class names, the stratified seeded hold-out, the normalization statistics, matching a
// test set's classes, the 2..1,000 class limits, labels past 255 through every kernel family's gather, the
// fast PNG path of loadDigitImage (the general pipeline's bits), the confusion matrix at 26 and 47 classes,
// and where --data may go with the other flags.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { checkDataSources, modelSpec, parseValue, validate } from '../src/config.js';
import { parseCsv } from '../src/data/csv.js';
import { listImageFolder, readImageFolder } from '../src/data/folder.js';
import { isPlainPng, loadDigitImage, readGrey } from '../src/data/image.js';
import { holdOut, matchClasses, pixelStats, readOwnData, readTestSet, type LabeledSet } from '../src/data/own.js';
import { UsageError, UserError } from '../src/errors.js';
import { confusionLayout, confusionSvg } from '../src/eval/pictures.js';
import { loadKernels } from '../src/kernels/wasm.js';
import * as ref from '../src/kernels/reference.js';
import { describeModel, modelLayout } from '../src/model.js';
import { paramsFromTensors, weightTensors } from '../src/safetensors.js';
import { svgToPng } from '../src/ui/svg.js';
import { csvText, idxBytes, PIXELS, syntheticSet, writeIdxPair, writeImageFolder } from './own-fixtures.js';
import { availableFamilies } from '../bench/kernels.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-own-'));
const bytes = (text: string) => Buffer.from(text);
const row = (label: number | string, px: (number | string)[]) => `${label},${px.join(',')}`;
const zeros = (n = PIXELS) => new Array<number>(n).fill(0);

/** The UserError a call throws (fails the test if it throws nothing or something else). */
function refusal(f: () => unknown): UserError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  throw new Error('expected a refusal, got none');
}

async function refusalOf(p: Promise<unknown>): Promise<UserError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  throw new Error('expected a refusal, got none');
}

describe('parseCsv: Kaggle\'s layout', () => {
  const s = syntheticSet(3, 4, 1);

  it('reads labels and pixels exactly, with or without the header, CRLF, a BOM, blanks and blank lines', () => {
    const plain = csvText(s.images, s.labels, s.count, true);
    for (const text of [plain, csvText(s.images, s.labels, s.count, false), plain.replace(/\n/g, '\r\n'),
      '\ufeff' + plain, plain.replace(/,/g, ' , '), `\n${plain}\n\n`, plain.trimEnd()]) {
      const c = parseCsv(bytes(text), 'x.csv', true);
      expect(c.count).toBe(s.count);
      expect(Array.from(c.labels!)).toEqual(Array.from(s.labels));
      expect(Buffer.from(c.images).equals(Buffer.from(s.images))).toBe(true);
    }
    expect(parseCsv(bytes(plain), 'x.csv', true).header).toBe(true);
    // pixels only (Kaggle's test.csv) is fine where no labels are needed
    const unlabeled = parseCsv(bytes(csvText(s.images, null, s.count)), 'test.csv', false);
    expect(unlabeled.labels).toBeNull();
    expect(Buffer.from(unlabeled.images).equals(Buffer.from(s.images))).toBe(true);
  });

  const good = row(3, zeros());
  const head = ['label', ...zeros().map((_, i) => `pixel${i}`)].join(',');
  const cases: [string, string, RegExp][] = [
    ['a row with a missing column', `${head}\n${good}\n${row(3, zeros(783))}\n`, /x\.csv: line 3: expected 785 columns \(a label, then 784 pixels\), as the header has, found 784/],
    ['a row with an extra column', `${good}\n${good},0\n`, /x\.csv: line 2: expected 785 columns .* as the first line has, found 786/],
    ['a non-numeric pixel', `${good}\n${row(1, [...zeros(10), 'abc', ...zeros(773)])}\n`, /x\.csv: line 2: column 12 \(pixel10\): expected a pixel value, an integer 0-255, found 'abc'/],
    ['a decimal pixel', `${row(1, [...zeros(783), '12.5'])}\n`, /line 1: column 785 \(pixel783\): expected a pixel value, an integer 0-255, found '12\.5'/],
    ['an empty value', `${row(1, [...zeros(5), '', ...zeros(778)])}\n`, /line 1: column 7 \(pixel5\): .* found nothing/],
    ['a pixel above 255', `${good}\n${good}\n${row(1, [256, ...zeros(783)])}\n`, /x\.csv: line 3: column 2 \(pixel0\): expected a pixel value 0-255, found 256/],
    ['a negative pixel', `${row(1, [...zeros(3), -4, ...zeros(780)])}\n`, /line 1: column 5 \(pixel3\): .* found -4, outside 0-255/],
    ['a non-numeric label', `${good}\n${row('seven', zeros())}\n`, /x\.csv: line 2: column 1 \(label\): expected a class label, an integer ≥ 0, found 'seven'/],
    ['a negative label', `${row(-1, zeros())}\n`, /line 1: column 1 \(label\): expected a class label, an integer ≥ 0, found '-1'/],
    ['no label column (Kaggle\'s test.csv)', `${zeros().map((_, i) => `pixel${i}`).join(',')}\n${zeros().join(',')}\n`,
      /x\.csv: line 1: has 784 columns, pixels only, and no label column \(as Kaggle's test\.csv\); this set needs one/],
    ['images of another size', `${row(1, zeros(1024))}\n`, /line 1: expected 785 columns .* found 1025; mnist-par trains on 28×28 greyscale images/],
    ['an empty file', '', /x\.csv: holds no lines of data/],
    ['a header and nothing else', `${head}\n`, /x\.csv: holds a header and no images/],
  ];
  for (const [what, text, message] of cases) {
    it(`refuses ${what} in one line naming the file and the line`, () => {
      const e = refusal(() => parseCsv(bytes(text), 'x.csv', true));
      expect(e.message).toMatch(message);
      expect(e.message).not.toContain('\n');
    });
  }
});

describe('readOwnData: the three layouts and their classes', () => {
  it('an IDX folder with a train/test pair (EMNIST letters: labels 1..26) and one with MNIST\'s four names', async () => {
    const dir = tmp();
    const s = syntheticSet(26, 3, 2);
    const labels = s.labels.map((l) => l + 1);
    writeIdxPair(join(dir, 'letters'), 'emnist-letters-train', s.images, labels);
    writeIdxPair(join(dir, 'letters'), 'emnist-letters-test', s.images.subarray(0, 26 * PIXELS), labels.subarray(0, 26));
    const own = await readOwnData(join(dir, 'letters'), '--data');
    expect(own.train.layout).toBe('idx');
    expect(own.train.classes).toEqual(Array.from({ length: 26 }, (_, c) => String(c + 1)));
    expect(Array.from(own.train.labels.subarray(0, 5))).toEqual([0, 1, 2, 3, 4]); // label 1 is class 0
    expect(own.test!.count).toBe(26);
    // as a test set: its test split
    expect((await readTestSet(join(dir, 'letters'), '--test')).count).toBe(26);

    writeIdxPair(join(dir, 'mnistlike'), 'train', s.images, s.labels);
    writeIdxPair(join(dir, 'mnistlike'), 't10k', s.images.subarray(0, 5 * PIXELS), s.labels.subarray(0, 5));
    const m = await readOwnData(join(dir, 'mnistlike'), '--data');
    expect([m.train.count, m.test!.count]).toEqual([78, 5]);
    expect(m.train.classes).toHaveLength(26);
  });

  it('refuses an IDX folder of a test split only, two training sets, a lone images file', async () => {
    const dir = tmp();
    const s = syntheticSet(3, 2, 3);
    writeIdxPair(join(dir, 'only-test'), 'x-test', s.images, s.labels);
    expect((await refusalOf(readOwnData(join(dir, 'only-test'), '--data'))).message).toMatch(/holds only a test split .*training needs a training split/);
    expect((await readTestSet(join(dir, 'only-test'), '--data')).count).toBe(6); // fine to evaluate on (eval --data)
    writeIdxPair(join(dir, 'two'), 'a-train', s.images, s.labels);
    writeIdxPair(join(dir, 'two'), 'b-train', s.images, s.labels);
    expect((await refusalOf(readOwnData(join(dir, 'two'), '--data'))).message).toMatch(/holds 2 training sets \(a-train, b-train\); keep one pair/);
    mkdirSync(join(dir, 'lone'));
    writeFileSync(join(dir, 'lone', 'x-train-images-idx3-ubyte.gz'), idxBytes(s.images, [6, 28, 28]));
    expect((await refusalOf(readOwnData(join(dir, 'lone'), '--data'))).message).toMatch(/x-train-images-idx3-ubyte\.gz: no labels file beside it/);
    // an IDX file of your own gets no "download" advice
    writeIdxPair(join(dir, 'junk'), 'a-train', s.images, s.labels);
    writeFileSync(join(dir, 'junk', 'a-train-images-idx3-ubyte.gz'), Buffer.from('junk'));
    const e = await refusalOf(readOwnData(join(dir, 'junk'), '--data'));
    expect(e.message).toMatch(/a-train-images-idx3-ubyte\.gz: expected IDX magic .*; expected an IDX file of 28×28 images or of their labels, as MNIST's$/);
    expect(e.message).not.toMatch(/download/);
    writeIdxPair(join(dir, 'short'), 'a-train', s.images, s.labels);
    writeFileSync(join(dir, 'short', 'a-train-labels-idx1-ubyte.gz'), idxBytes(s.labels.subarray(0, 5), [5]));
    expect((await refusalOf(readOwnData(join(dir, 'short'), '--data'))).message)
      .toMatch(/a-train-labels-idx1-ubyte\.gz: expected 6 labels to match a-train-images-idx3-ubyte\.gz, found 5; give the labels file that belongs to these images/);
  });

  it('a CSV file: classes are the label values present, in numeric order', async () => {
    const dir = tmp();
    const s = syntheticSet(3, 2, 4);
    const labels = Array.from(s.labels, (l) => [10, 2, 7][l]);
    writeFileSync(join(dir, 'a.csv'), csvText(s.images, labels, s.count));
    const own = await readOwnData(join(dir, 'a.csv'), '--data');
    expect(own.train.classes).toEqual(['2', '7', '10']);
    expect(Array.from(own.train.labels)).toEqual(labels.map((v) => ({ 2: 0, 7: 1, 10: 2 })[v]));
    expect((await refusalOf(readOwnData(join(dir, 'missing.csv'), '--data'))).message).toMatch(/--data .*missing\.csv: no such file or folder; give a folder of IDX files, a \.csv file/);
    writeFileSync(join(dir, 'a.txt'), 'x');
    expect((await refusalOf(readOwnData(join(dir, 'a.txt'), '--data'))).message).toMatch(/not a \.csv file nor a folder/);
  });

  it('an image folder: classes are its folders, sorted as Python sorts; other files and hidden ones are left out, and counted', async () => {
    const dir = join(tmp(), 'imgs');
    const s = syntheticSet(3, 2, 5);
    await writeImageFolder(dir, ['b', 'a', 'C'], s.images, s.labels, s.count);
    writeFileSync(join(dir, 'a', 'notes.txt'), 'x');
    writeFileSync(join(dir, 'a', '.DS_Store'), 'x');
    mkdirSync(join(dir, '.cache'));
    writeFileSync(join(dir, 'README'), 'x');
    const own = await readOwnData(dir, '--data');
    expect(own.train.classes).toEqual(['C', 'a', 'b']);
    expect(own.train.count).toBe(6);
    expect(own.notes.join()).toMatch(/left out 1 file in the class folders that is not \.png/);
    // folder 'b' held class 0's images: its images are class index 2 and equal loadDigitImage of the files
    const list = listImageFolder(dir);
    expect(list.files[2].map((f) => f.split('/').pop())).toEqual(['00000.png', '00003.png']);
    expect(Buffer.from(own.train.images.subarray(4 * PIXELS, 5 * PIXELS)).equals(Buffer.from(await loadDigitImage(list.files[2][0])))).toBe(true);
    expect(Array.from(own.train.labels)).toEqual([0, 0, 1, 1, 2, 2]);
  });

  it('refuses an image folder with no class folders, with one, with an empty class, and names an unreadable, an empty and a blank image', async () => {
    const root = tmp();
    const s = syntheticSet(2, 2, 6);
    const none = join(root, 'none');
    mkdirSync(none);
    writeFileSync(join(none, 'x.png'), 'x');
    expect(refusal(() => listImageFolder(none)).message).toMatch(/none: holds no class folders; expected .*\/<class name>\/\*\.png/);
    const one = join(root, 'one');
    await writeImageFolder(one, ['cat'], s.images, [0, 0, 0, 0], 4);
    expect(refusal(() => listImageFolder(one)).message).toMatch(/one: holds one class folder \(cat\), at least 2 are needed/);
    const empty = join(root, 'emptyclass');
    await writeImageFolder(empty, ['cat', 'dog'], s.images, [0, 0, 0, 0], 4);
    expect(refusal(() => listImageFolder(empty)).message).toMatch(/emptyclass\/dog: class folder dog holds no images/);
    for (const [what, content, message] of [
      ['unreadable', Buffer.from('not a png at all'), /cannot decode it/],
      ['empty', Buffer.alloc(0), /an empty file \(0 bytes\)/],
    ] as const) {
      const dir = join(root, what);
      await writeImageFolder(dir, ['cat', 'dog'], s.images, s.labels, s.count);
      writeFileSync(join(dir, 'dog', 'bad.png'), content);
      const e = await refusalOf(readImageFolder(dir));
      expect(e.message).toMatch(message);
      expect(e.message).toContain(join(dir, 'dog', 'bad.png'));
    }
    const blank = join(root, 'blank');
    await writeImageFolder(blank, ['cat', 'dog'], s.images, s.labels, s.count);
    await sharp({ create: { width: 28, height: 28, channels: 3, background: '#000000' } }).png().toFile(join(blank, 'cat', 'zz.png'));
    expect((await refusalOf(readImageFolder(blank))).message).toMatch(/blank\/cat\/zz\.png: no ink found/);
  });

  it('refuses more than 1,000 classes: 1,001 class folders, 1,001 labels in a CSV', async () => {
    const root = tmp();
    for (let c = 0; c <= 1000; c++) mkdirSync(join(root, 'many', `c${c}`), { recursive: true });
    expect(refusal(() => listImageFolder(join(root, 'many'))).message).toMatch(/holds 1001 class folders, more than the 1000 classes/);
    const lines = Array.from({ length: 1001 }, (_, i) => row(i, zeros()));
    writeFileSync(join(root, 'many.csv'), lines.join('\n'));
    expect((await refusalOf(readOwnData(join(root, 'many.csv'), '--data'))).message)
      .toMatch(/many\.csv: holds more than 1000 different labels \(1000, at image 1001, is one too many\)/);
    // 1,000 are fine
    writeFileSync(join(root, 'thousand.csv'), lines.slice(0, 1000).join('\n'));
    expect((await readOwnData(join(root, 'thousand.csv'), '--data')).train.classes).toHaveLength(1000);
  });
});

/** A set of `counts[c]` images of class c, image i's first pixel = i (so a subset tells which images it kept). */
function setOf(counts: number[], layout: LabeledSet['layout'] = 'csv'): LabeledSet {
  const count = counts.reduce((a, b) => a + b, 0);
  const labels = new Uint16Array(count);
  let at = 0;
  counts.forEach((n, c) => labels.fill(c, at, (at += n)));
  const images = new Uint8Array(count * PIXELS);
  for (let i = 0; i < count; i++) images[i * PIXELS] = i % 256;
  return { name: 'set', layout, images, labels, count, classes: counts.map((_, c) => String(c)) };
}

describe('holdOut: seeded and stratified', () => {
  it('holds out the fraction of every class, keeps the order, splits without overlap, the same for the same seed', () => {
    const set = setOf([100, 50, 10, 1]);
    const { train, held } = holdOut(set, 0.2, 7);
    const per = (s: LabeledSet) => [0, 1, 2, 3].map((c) => s.labels.filter((l) => l === c).length);
    expect(per(held)).toEqual([20, 10, 2, 0]); // a class of one image keeps it for training
    expect(per(train)).toEqual([80, 40, 8, 1]);
    const firsts = (s: LabeledSet) => Array.from({ length: s.count }, (_, i) => s.images[i * PIXELS]);
    const all = [...firsts(train), ...firsts(held)].sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 161 }, (_, i) => i % 256).sort((a, b) => a - b));
    for (const s of [train, held]) expect(firsts(s)).toEqual([...firsts(s)].sort((a, b) => a - b)); // in order
    expect(firsts(holdOut(set, 0.2, 7).held)).toEqual(firsts(held));
    expect(firsts(holdOut(set, 0.2, 8).held)).not.toEqual(firsts(held));
  });

  it('refuses a split that holds out nothing, naming --val-split', () => {
    const e = refusal(() => holdOut(setOf([3, 3]), 0.1, 1));
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toMatch(/--val-split 0\.1: holds out no image of the 6 in set .*give a larger --val-split, or a test set with --test/);
  });
});

describe('pixelStats and matchClasses', () => {
  it('mean and std of the pixels scaled to [0, 1], over the first `count` images', () => {
    const images = new Uint8Array(3 * PIXELS);
    images.fill(255, 0, PIXELS / 2); // image 0: half white
    images.fill(51, PIXELS, 2 * PIXELS); // image 1: 0.2 everywhere
    const { mean, std } = pixelStats(images, 2, 'x');
    // values: 392 × 1, 392 × 0, 784 × 0.2 → mean 0.35, variance (392·0.65² + 392·0.35² + 784·0.15²)/1568
    expect(mean).toBeCloseTo(0.35, 14);
    expect(std).toBeCloseTo(Math.sqrt((392 * 0.65 ** 2 + 392 * 0.35 ** 2 + 784 * 0.15 ** 2) / 1568), 14);
    expect(refusal(() => pixelStats(new Uint8Array(PIXELS).fill(9), 1, 'flat.csv')).message).toMatch(/flat\.csv: every pixel of its 1 training images is 9/);
  });

  it('maps a test set\'s classes by name: a folder must have exactly the training classes, numbered labels any of them', () => {
    const folder = { ...setOf([1, 1, 1], 'images'), classes: ['a', 'b', 'c'] };
    expect(Array.from(matchClasses(folder, ['a', 'b', 'c'], 't'))).toEqual([0, 1, 2]);
    expect(refusal(() => matchClasses({ ...folder, classes: ['a', 'b', 'd'] }, ['a', 'b', 'c'], '--test t')).message)
      .toMatch(/--test t: its classes differ from the training set's: it has class folders d that the model's classes lack and no class folder for c; the training set's classes are a, b, c/);
    expect(refusal(() => matchClasses({ ...folder, count: 2, classes: ['a', 'b'] }, ['a', 'b', 'c'], 't')).message).toMatch(/no class folder for c/);
    const numbered = { ...setOf([2, 1]), classes: ['3', '9'] };
    expect(Array.from(matchClasses(numbered, ['1', '3', '5', '9'], 't'))).toEqual([1, 1, 3]);
    expect(refusal(() => matchClasses({ ...numbered, classes: ['3', '11'] }, ['1', '3', '9'], '--test t.csv')).message)
      .toMatch(/--test t\.csv: its classes differ .*: it has labels 11 that the model's classes lack/);
  });
});

describe('the network, the weights and the kernels for any number of classes', () => {
  it('the class count is the last layer\'s width; a file of 26 outputs loads only as 26 classes', () => {
    const cfg = validate({});
    expect(modelLayout(modelSpec(cfg, 26)).layers).toEqual([784, 128, 256, 512, 128, 26]);
    expect(describeModel(modelSpec(validate({ model: 'cnn' }), 47))).toBe('cnn 1→16→32 conv5 pool2 · 512→128→47');
    expect(modelSpec(cfg, 10)).toEqual(modelSpec(cfg)); // the usual 10 is the spec without a class count
    const layout = modelLayout(modelSpec(cfg, 26));
    const tensors = new Map(weightTensors(layout, new Float32Array(layout.size)).map((t) => [t.name, t]));
    expect(paramsFromTensors(tensors, 'm', 26).layers.at(-1)).toBe(26);
    expect(() => paramsFromTensors(tensors, 'm.safetensors')).toThrow(/8\.weight has shape \[26, 128\], expected \[10, 128\] \(the last layer has one output per class: 10, as the file's metadata names no classes of its own\)/);
  });

  it('the gather reads uint16 labels (up to 1,000 classes) in every family as the reference does', async () => {
    const pixels = 7, N = 30;
    const images = Uint8Array.from({ length: N * pixels }, (_, i) => (i * 37) % 256);
    const labels = Uint16Array.from({ length: N }, (_, i) => (i * 97) % 1000);
    const table = new Float32Array(256).map((_, v) => v / 255);
    const index = Uint32Array.from({ length: N }, (_, i) => (i * 7) % N);
    const ex = new Float32Array(N * pixels), ey = new Int32Array(N);
    ref.gather(ex, ey, images, labels, index, 0, N, pixels, table);
    expect(Array.from(ey).some((y) => y > 255)).toBe(true);
    const families = [...new Set(availableFamilies().map((f) => (f.startsWith('native') ? 'native' : f) as 'js' | 'simd' | 'relaxed' | 'native'))];
    expect(families).toContain('js');
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    for (const family of families) {
      const k = await loadKernels(family, memory);
      const x = new Float32Array(N * pixels), y = new Int32Array(N);
      k.gather(x, y, images, labels, index, 0, N, pixels, table);
      expect(Array.from(y), family).toEqual(Array.from(ey));
      expect(Buffer.from(x.buffer).equals(Buffer.from(ex.buffer)), family).toBe(true);
    }
  });
});

describe('loadDigitImage: the one-call path for small PNGs', () => {
  it('gives the general pipeline\'s bits for grey, grey + alpha, RGB, RGBA and palette PNGs; others take the general pipeline', async () => {
    const dir = tmp();
    const s = syntheticSet(1, 1, 9);
    const px = Buffer.from(s.images);
    const raw = (channels: number, f: (v: number, c: number) => number) =>
      sharp(Buffer.from(Uint8Array.from({ length: PIXELS * channels }, (_, i) => f(px[Math.floor(i / channels)], i % channels))),
        { raw: { width: 28, height: 28, channels: channels as 1 | 2 | 3 | 4 } });
    const files: [string, () => Promise<unknown>, boolean][] = [
      ['grey.png', () => raw(1, (v) => v).toColourspace('b-w').png().toFile(join(dir, 'grey.png')), true],
      ['grey-alpha.png', () => raw(2, (v, c) => (c === 0 ? 200 : v)).toColourspace('b-w').png().toFile(join(dir, 'grey-alpha.png')), true],
      ['rgb.png', () => raw(3, (v, c) => [250 - v / 2, 235 - v / 2, 150 - v / 3][c]).png().toFile(join(dir, 'rgb.png')), true],
      ['rgba.png', () => raw(4, (v, c) => (c === 3 ? v : 20)).png().toFile(join(dir, 'rgba.png')), true],
      ['palette.png', () => raw(1, (v) => v).png({ palette: true }).toFile(join(dir, 'palette.png')), true],
      ['grey16.png', () => raw(1, (v) => v).toColourspace('grey16').png().toFile(join(dir, 'grey16.png')), false],
      ['big.png', () => raw(1, (v) => v).resize(600, 600).png().toFile(join(dir, 'big.png')), false],
      ['photo.jpg', () => raw(1, (v) => 255 - v).jpeg().toFile(join(dir, 'photo.jpg')), false],
    ];
    for (const [name, make, plain] of files) {
      await make();
      const file = join(dir, name);
      expect(isPlainPng(readFileSync(file)), name).toBe(plain);
      if (!plain) continue;
      const [fast, general] = [await readGrey(file), await readGrey(file, true)];
      expect(Buffer.from(fast.data.buffer).equals(Buffer.from(general.data.buffer)), name).toBe(true);
    }
  });
});

describe('loadDigitImage: tight crops', () => {
  it('takes an object that fills the frame down to its border (as Fashion-MNIST\'s bags), and still refuses a blank image', async () => {
    const dir = tmp();
    // a bright block over the lower 60% of the frame, touching three borders, with a faint handle above it
    const px = new Uint8Array(PIXELS);
    for (let y = 0; y < 28; y++) {
      for (let x = 0; x < 28; x++) px[y * 28 + x] = y >= 11 ? 200 : (y === 4 && x > 8 && x < 20) ? 120 : 0;
    }
    const file = join(dir, 'bag.png');
    await sharp(Buffer.from(px), { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('b-w').png().toFile(file);
    const out = await loadDigitImage(file);
    expect(Math.max(...out)).toBe(255);
    expect(out.filter((v) => v > 100).length).toBeGreaterThan(150);
    const blank = join(dir, 'blank.png');
    await sharp({ create: { width: 28, height: 28, channels: 3, background: '#202020' } }).png().toFile(blank);
    await expect(loadDigitImage(blank)).rejects.toThrow(/no ink found/);
  });
});

describe('the confusion matrix for many classes', () => {
  it('shrinks its cells to stay readable: 88 px for 10 classes, 69 for 26, 38 for 47, a picture of colours past 60', () => {
    expect(confusionLayout(10)).toEqual({ cell: 88, detailed: true, labelEvery: 1 });
    expect(confusionLayout(26)).toEqual({ cell: 69, detailed: true, labelEvery: 1 });
    expect(confusionLayout(47)).toEqual({ cell: 38, detailed: true, labelEvery: 1 });
    expect(confusionLayout(1000)).toMatchObject({ cell: 2, detailed: false, labelEvery: 20 });
  });

  it('draws 47 classes with their counts, names and margins in a picture about 2,300 pixels wide', async () => {
    const V = 47;
    const m = Array.from({ length: V }, (_, t) => Array.from({ length: V }, (_, p) => (t === p ? 300 + t : (t + p) % 11 === 0 ? 12 : 0)));
    const svg = await confusionSvg(m, Array.from({ length: V }, (_, c) => `class-${c}`), 'many classes', 'caption');
    expect(svg).toContain('>class-46<');
    expect(svg).toContain('>346<'); // the last diagonal count
    expect((svg.match(/<rect /g) ?? []).length).toBeGreaterThanOrEqual(V * V);
    const png = await sharp(await svgToPng(svg)).raw().toBuffer({ resolveWithObject: true });
    expect(png.info.width).toBeGreaterThan(2000);
    expect(png.info.width).toBeLessThan(2600);
    // the diagonal cells are dark blue: 47 cells of 38 × 38, most of each cell not covered by its count
    let dark = 0;
    for (let i = 0; i < png.data.length; i += png.info.channels) {
      if (Math.abs(png.data[i] - 8) < 30 && Math.abs(png.data[i + 1] - 48) < 30 && Math.abs(png.data[i + 2] - 107) < 30) dark++;
    }
    expect(dark).toBeGreaterThan(V * 38 * 38 * 0.5);
  });
});

describe('where the data comes from: --data or --dataset, not both', () => {
  it('refuses --data with --dataset or --data-dir, --test without --data, --val-split with --test or without --data', () => {
    const msg = (given: Record<string, unknown>) => {
      try {
        checkDataSources(given);
        return '';
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return (e as Error).message;
      }
    };
    expect(msg({ data: 'a.csv', dataset: 'mnist' })).toBe('--data: give either --data (your own files) or --dataset (a built-in dataset), not both');
    expect(msg({ data: 'a.csv', dataDir: 'x', dataset: 'fashion-mnist' })).toMatch(/or --dataset and --data-dir \(a built-in dataset\), not both/);
    expect(msg({ test: 't.csv' })).toMatch(/^--test: a test set goes with --data/);
    expect(msg({ data: 'a.csv', test: 't.csv', valSplit: 0.2 })).toMatch(/^--val-split: the test set comes from --test/);
    expect(msg({ valSplit: 0.2 })).toMatch(/^--val-split: the held-out share applies to --data/);
    // a run's config.json holds '' for no --data and the default --val-split: fine
    expect(msg({ data: '', test: '', valSplit: 0.1, dataset: 'mnist', dataDir: 'datasets/mnist' })).toBe('');
    expect(msg({ data: 'a.csv', valSplit: 0.3 })).toBe('');
  });

  it('checks --val-split and the paths as the other flags', () => {
    expect(() => validate({ valSplit: 0 })).toThrow('--val-split: expected a fraction in (0, 0.9], got 0');
    expect(() => validate({ valSplit: 0.95 })).toThrow('--val-split: expected a fraction in (0, 0.9], got 0.95');
    expect(() => parseValue('data', '')).toThrow('--data: expected a .csv file or a folder, got an empty string');
    expect(() => validate({ data: 3 })).toThrow('--data: expected a path, got 3');
  });
});

describe('bench data', () => {
  it('checks, then times both loaders on data it writes itself, and saves the result', async () => {
    const { benchData } = await import('../bench/data.js');
    const { dataOptions } = await import('../bench/command.js');
    const out = tmp();
    const lines: string[] = [];
    const results = await benchData({ rows: 300, images: 60, repeats: 1, outDir: out, log: (l) => lines.push(l) });
    expect(results.map((r) => [r.what, r.count])).toEqual([['csv', 300], ['images', 60]]);
    for (const r of results) expect(r.seconds > 0 && r.cpuSeconds > 0 && r.baselineSeconds > 0 && Number.isFinite(r.perSecond)).toBe(true);
    expect(lines.join('\n')).toMatch(/^csv {5}300 rows, 0\.\d MB: .* MB\/s; reading the bytes alone/m);
    expect(lines.join('\n')).toMatch(/^images {2}60 PNGs, .* images\/s; one at a time/m);
    const saved = readdirSync(out).filter((f) => f.startsWith('data-'));
    expect(saved).toHaveLength(1);
    expect(JSON.parse(readFileSync(join(out, saved[0]), 'utf8')).results).toHaveLength(2);
    expect(dataOptions({ rows: '0', images: '5', repeats: '2' })).toEqual({ rows: 0, images: 5, repeats: 2 });
    expect(() => dataOptions({ rows: '-3' })).toThrow(/^--rows: expected an integer in 0\.\.1000000, got '-3'$/);
  });
});
