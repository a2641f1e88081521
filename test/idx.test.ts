// IDX parsing: the real MNIST files, then one synthetic file per way a file can be wrong. Every error test
// checks that the message names the file and the specific problem.
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { loadSplit, parseIdx } from '../src/data/idx.js';
import { fashionDir, mnistDir } from './cli-run.js';

const MNIST_DIR = mnistDir;

/** An IDX file: magic bytes [0, 0, type, ndims], big-endian uint32 dims, then the payload. */
function idx(type: number, dims: number[], payload: Uint8Array | number): Uint8Array {
  const body = typeof payload === 'number' ? new Uint8Array(payload) : payload;
  const buf = new Uint8Array(4 + 4 * dims.length + body.length);
  const view = new DataView(buf.buffer);
  buf[2] = type;
  buf[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  buf.set(body, 4 + 4 * dims.length);
  return buf;
}

const images = (n: number, extra = 0) => idx(0x08, [n, 28, 28], n * 784 + extra);
const labels = (values: number[]) => idx(0x08, [values.length], Uint8Array.from(values));

/** Asserts that `fn` throws a UserError whose message contains every fragment. */
function expectUserError(fn: () => unknown, ...fragments: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  for (const f of fragments) typeof f === 'string' ? expect(msg).toContain(f) : expect(msg).toMatch(f);
}

async function expectUserErrorAsync(p: Promise<unknown>, ...fragments: string[]): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(UserError);
  for (const f of fragments) expect((err as Error).message).toContain(f);
}

describe('real MNIST files', () => {
  it('train split: 60000 images of 28×28, labels start 5 0 4 1, known pixels', async () => {
    const s = await loadSplit(MNIST_DIR, 'train');
    expect([s.count, s.height, s.width]).toEqual([60000, 28, 28]);
    expect(s.images.length).toBe(60000 * 784);
    expect(s.labels.length).toBe(60000);
    expect(Array.from(s.labels.subarray(0, 10))).toEqual([5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    // per-class counts are the published ones
    const hist = new Array(10).fill(0);
    for (const l of s.labels) hist[l]++;
    expect(hist).toEqual([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    // the first image (a 5): row 5 starts its first stroke at column 12
    const first = s.images.subarray(0, 784);
    expect(Array.from(first.subarray(5 * 28 + 11, 5 * 28 + 17))).toEqual([0, 3, 18, 18, 18, 126]);
    expect(first.reduce((a, b) => a + b, 0)).toBe(27525);
    expect(first.filter((p) => p > 0).length).toBe(166);
    // the last image pins the end of the payload
    const last = s.images.subarray(59999 * 784);
    expect(last.reduce((a, b) => a + b, 0)).toBe(20920);
  });

  it('test split: 10000 images, labels start 7 2 1 0', async () => {
    const s = await loadSplit(MNIST_DIR, 'test');
    expect([s.count, s.height, s.width]).toEqual([10000, 28, 28]);
    expect(s.images.length).toBe(10000 * 784);
    expect(Array.from(s.labels.subarray(0, 4))).toEqual([7, 2, 1, 0]);
  });
});

describe('parseIdx', () => {
  const F = '/data/x-idx-ubyte.gz';

  it('parses raw and gzipped copies of the same file identically', () => {
    const raw = labels([3, 1, 4, 1, 5, 9]);
    for (const bytes of [raw, gzipSync(raw)]) {
      const a = parseIdx(bytes, F);
      expect(a.dims).toEqual([6]);
      expect(Array.from(a.data)).toEqual([3, 1, 4, 1, 5, 9]);
    }
    const img = images(2);
    img[16 + 784 + 5] = 200;
    const b = parseIdx(gzipSync(img), F, 'images');
    expect(b.dims).toEqual([2, 28, 28]);
    expect(b.data.length).toBe(2 * 784);
    expect(b.data[784 + 5]).toBe(200);
  });

  it('rejects a wrong magic', () => {
    const bad = labels([1, 2]);
    bad[0] = 0x50; // e.g. a PNG or text file
    expectUserError(() => parseIdx(bad, F), F, 'expected IDX magic 0x00000801', 'found 0x50000801', 'mnist-par download');
  });

  it('rejects a non-ubyte element type', () => {
    expectUserError(() => parseIdx(idx(0x0d, [2], 8), F), F, 'expected element type 0x08', 'found 0x0d (float32)');
  });

  it('rejects a wrong number of dimensions', () => {
    expectUserError(() => parseIdx(idx(0x08, [2, 3], 6), F), F, 'found 0x00000802 (2 dimensions)');
    // a label file where images are expected, and the other way round
    expectUserError(() => parseIdx(labels([1]), F, 'images'), F, 'expected magic 0x00000803 (images', 'found 0x00000801');
    expectUserError(() => parseIdx(images(1), F, 'labels'), F, 'expected magic 0x00000801 (labels', 'found 0x00000803');
  });

  it('rejects images that are not 28×28', () => {
    expectUserError(() => parseIdx(idx(0x08, [1, 32, 32], 1024), F), F, 'expected 28×28 images, found 32×32');
  });

  it('rejects a truncated header and a truncated payload', () => {
    expectUserError(() => parseIdx(new Uint8Array([0, 0, 8]), F), F, 'found a 3-byte file');
    expectUserError(() => parseIdx(images(1).subarray(0, 10), F), F, 'header is truncated');
    expectUserError(() => parseIdx(images(3).subarray(0, 16 + 3 * 784 - 1), F), F, 'is truncated', 'promises 2352 data bytes, found 2351');
    expectUserError(() => parseIdx(gzipSync(labels([1, 2, 3]).subarray(0, 10)), F), F, 'promises 3 data bytes, found 2');
  });

  it('rejects trailing bytes', () => {
    expectUserError(() => parseIdx(images(2, 1), F), F, '1 unexpected trailing bytes', 'exactly 1568 data bytes');
    expectUserError(() => parseIdx(gzipSync(idx(0x08, [2], 5)), F), F, '3 unexpected trailing bytes');
  });

  it('rejects a file of zero images or labels, which would train for zero steps with NaN metrics', () => {
    expectUserError(() => parseIdx(images(0), F), F, 'holds no images: its header gives 0×28×28');
    expectUserError(() => parseIdx(gzipSync(labels([])), F, 'labels'), F, 'holds no labels: its header gives 0');
  });

  it('rejects labels outside 0..9', () => {
    expectUserError(() => parseIdx(labels([0, 9, 10, 1]), F), F, 'expected labels 0..9, found 10 at index 2');
    expectUserError(() => parseIdx(labels([255]), F), F, 'found 255 at index 0');
  });

  it('rejects a corrupt deflate stream and a truncated gzip', () => {
    const gz = gzipSync(images(4)); // compresses well: a short stream where any flipped byte matters
    const corrupt = new Uint8Array(gz); // a copy (Buffer.slice would be a view)
    for (let i = 12; i < corrupt.length - 8; i++) corrupt[i] ^= 0xa5;
    expectUserError(() => parseIdx(corrupt, F), F, 'is not a valid gzip file', 'mnist-par download');
    expectUserError(() => parseIdx(gz.subarray(0, gz.length - 5), F), F, 'is not a valid gzip file', /unexpected end of file/);
    expectUserError(() => parseIdx(new Uint8Array([0x1f, 0x8b, 0x08]), F), F, 'is not a valid gzip file');
  });
});

describe('limits: nothing read from a file makes us allocate without bound', () => {
  const F = '/data/x-idx-ubyte.gz';
  /** One gzip member of 16 MiB of zeros (about 16 KB), repeated: concatenated members inflate as one stream. */
  const zeros16M = gzipSync(new Uint8Array(16 << 20), { level: 9 });

  it('a gzip bomb stops just past the size its header promises', () => {
    // 3 images, then 256 members of zeros: 4 GiB from a 4 MB file. The old cap (64× the file, 256 MB) let
    // it inflate a quarter of a gigabyte before failing with zlib's "Cannot create a Buffer larger than …"
    const bomb = Buffer.concat([gzipSync(images(3)), ...new Array(256).fill(zeros16M)]);
    const t0 = performance.now();
    expectUserError(() => parseIdx(bomb, F), F, 'has unexpected trailing bytes: header 3×28×28 promises exactly 2352 data bytes, its gzip stream holds more');
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('a header promising more than the gzip stream can hold is refused before anything is inflated', () => {
    const big = images(3);
    new DataView(big.buffer).setUint32(4, 1_000_000); // 784 MB promised by a file of a few hundred bytes
    expectUserError(() => parseIdx(gzipSync(big), F), F, /is truncated: header 1000000×28×28 promises 784000000 data bytes, more than a \d+-byte gzip file can hold/);
  });

  it('a header promising more than 1 GiB is refused, raw or gzipped', () => {
    const huge = images(1);
    new DataView(huge.buffer).setUint32(4, 0xffffffff);
    for (const b of [huge, gzipSync(huge)]) expectUserError(() => parseIdx(b, F), F, 'promises 3367254359280 data bytes, more than the 1073741824 this reader accepts');
  });
});

describe('loadSplit', () => {
  const dirs: string[] = [];
  const tmp = (files: Record<string, Uint8Array>) => {
    const dir = mkdtempSync(join(tmpdir(), 'mnist-idx-'));
    dirs.push(dir);
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
    return dir;
  };
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('reads a small synthetic split', async () => {
    const dir = tmp({ 't10k-images-idx3-ubyte.gz': gzipSync(images(3)), 't10k-labels-idx1-ubyte.gz': gzipSync(labels([7, 0, 9])) });
    const s = await loadSplit(dir, 'test');
    expect(s.count).toBe(3);
    expect(Array.from(s.labels)).toEqual([7, 0, 9]);
    expect(s.images.length).toBe(3 * 784);
  });

  it('rejects a label count that differs from the image count', async () => {
    const dir = tmp({ 't10k-images-idx3-ubyte.gz': gzipSync(images(3)), 't10k-labels-idx1-ubyte.gz': gzipSync(labels([7, 0])) });
    await expectUserErrorAsync(loadSplit(dir, 'test'), join(dir, 't10k-labels-idx1-ubyte.gz'), 'expected 3 labels', 'found 2', 'delete both');
  });

  it('names the missing files, the folder and the fix', async () => {
    const dir = tmp({ 'train-labels-idx1-ubyte.gz': gzipSync(labels([1])) });
    await expectUserErrorAsync(loadSplit(dir, 'train'), 'missing train-images-idx3-ubyte.gz in ' + dir, `mnist-par download --dataset mnist --data-dir ${dir}`);
    await expectUserErrorAsync(loadSplit(dir, 'train', 'fashion-mnist'), `mnist-par download --dataset fashion-mnist --data-dir ${dir}`);
    const empty = tmp({});
    await expectUserErrorAsync(loadSplit(empty, 'test'), 't10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz', empty, '--data-dir');
  });

  it('an empty split (zero images and zero labels, consistent) is refused naming the images file', async () => {
    const dir = tmp({ 't10k-images-idx3-ubyte.gz': gzipSync(images(0)), 't10k-labels-idx1-ubyte.gz': gzipSync(labels([])) });
    await expectUserErrorAsync(loadSplit(dir, 'test'), join(dir, 't10k-images-idx3-ubyte.gz'), 'holds no images');
  });

  it('a file over 1 GiB is refused before it is read into memory', async () => {
    const dir = tmp({ 't10k-images-idx3-ubyte.gz': new Uint8Array(0), 't10k-labels-idx1-ubyte.gz': gzipSync(labels([1])) });
    const big = join(dir, 't10k-images-idx3-ubyte.gz');
    truncateSync(big, 2 ** 30 + 1); // sparse: costs no disk
    await expectUserErrorAsync(loadSplit(dir, 'test'), big, 'is 1073741825 bytes, more than the 1073741824 an IDX file may be');
  });

  it('another known dataset\'s files given as this one\'s are refused, saying which they are; a size alone is not enough', async () => {
    const wrong = async (dir: string, split: 'train' | 'test', dataset: 'mnist' | 'fashion-mnist') =>
      (await loadSplit(dir, split, dataset).then(() => null, (e: unknown) => e)) as Error;
    for (const split of ['train', 'test'] as const) {
      const e = await wrong(mnistDir, split, 'fashion-mnist');
      expect(e).toBeInstanceOf(UserError);
      expect(e.message).toMatch(new RegExp(`^${mnistDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} holds the mnist files, not fashion-mnist's ` +
        '\\((train|t10k)-(images|labels)-idx[13]-ubyte\\.gz has the size and sha256 of mnist\'s\\): give --dataset mnist, ' +
        'or a --data-dir with the fashion-mnist files$'));
    }
    expect((await wrong(fashionDir, 'test', 'mnist')).message).toContain('holds the fashion-mnist files, not mnist\'s');
    // MNIST's test labels file is 4542 bytes: a file of that size that is not it goes to the parser as any other
    const bytes = new Uint8Array(4542).fill(7);
    const dir = tmp({ 't10k-images-idx3-ubyte.gz': gzipSync(images(1)), 't10k-labels-idx1-ubyte.gz': bytes });
    const e = await wrong(dir, 'test', 'fashion-mnist');
    expect(e.message).toContain(join(dir, 't10k-labels-idx1-ubyte.gz'));
    expect(e.message).not.toContain('holds the');
  });

  it('names the file when one of them is corrupt', async () => {
    const dir = tmp({ 't10k-images-idx3-ubyte.gz': gzipSync(images(2)), 't10k-labels-idx1-ubyte.gz': gzipSync(labels([3, 12])) });
    await expectUserErrorAsync(loadSplit(dir, 'test'), join(dir, 't10k-labels-idx1-ubyte.gz'), 'found 12 at index 1');
  });
});
