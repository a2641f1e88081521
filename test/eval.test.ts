// `mnist-par eval` through the built CLI: the numbers agree with training's validation and with a forward pass
// of our own on the main thread, the confusion matrix adds up, the two PNGs are real and the right size, and
// every bad input is one line with the right exit code. Build first (npm run build).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSplit, type Split } from '../src/data/idx.js';
import { classStats, confusionMatrix, confidentMistakes, type EvalReport } from '../src/eval/metrics.js';
import { errorsSize } from '../src/eval/pictures.js';
import { argmaxRow, forwardProbs, loadModel, normalizeTable } from '../src/predict.js';
import { encodeSafetensors } from '../src/safetensors.js';
import { mnistDir, runCli } from './cli-run.js';

const root = mkdtempSync(join(tmpdir(), 'mnist-par-eval-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const modelDir = join(root, 'models');
const model = join(modelDir, 'model.safetensors');
let test: Split;
let mainProbs: Float32Array;   // our own forward pass over the whole test split

beforeAll(async () => {
  const r = runCli(['--data-dir', mnistDir, '--out', modelDir, '--threads', '2', '--limit-train', '8192', '--epochs', '2',
    '--limit-test', '500', '--no-download', '--log-every', '1000']);
  expect(r.code, r.stderr).toBe(0);
  test = await loadSplit(mnistDir, 'test');
  mainProbs = forwardProbs(await loadModel(model), normalizeTable('mnist'), test.images, test.count);
}, 120_000);

const evalArgs = (plots: string, ...more: string[]) =>
  ['eval', '--model', model, '--data-dir', mnistDir, '--threads', '2', '--plots', plots, '--no-download', ...more];

function mainAccuracy(n: number): number {
  let correct = 0;
  for (let i = 0; i < n; i++) if (argmaxRow(mainProbs, i, 10) === test.labels[i]) correct++;
  return correct / n;
}

function classCounts(): number[] {
  const counts = new Array<number>(10).fill(0);
  for (const y of test.labels) counts[y]++;
  return counts;
}

describe('eval --json', () => {
  let report: EvalReport;
  let plots: string;
  beforeAll(() => {
    plots = join(root, 'plots-json');
    const r = runCli(evalArgs(plots, '--json'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    report = JSON.parse(r.stdout) as EvalReport;
  }, 60_000);

  it('agrees with training\'s validation on the same 500 images and with a main-thread forward pass on all', () => {
    const [header, ...rows] = readFileSync(join(modelDir, 'epoch_metrics.csv'), 'utf8').trim().split('\n');
    const valAccuracy = Number(rows[rows.length - 1].split(',')[header.split(',').indexOf('val_accuracy')]);
    expect(valAccuracy).toBeGreaterThan(0.85);
    // The pool may run SIMD kernels, we run the reference: summation order may flip a near tie, hence ±1 image.
    expect(Math.abs(mainAccuracy(500) - valAccuracy)).toBeLessThanOrEqual(1 / 500 + 1e-9);
    expect(report.count).toBe(10000);
    expect(Math.abs(report.accuracy - mainAccuracy(10000))).toBeLessThanOrEqual(3 / 10000);
    let loss = 0;
    for (let i = 0; i < test.count; i++) loss -= Math.log(mainProbs[i * 10 + test.labels[i]]);
    expect(Math.abs(report.loss - loss / test.count)).toBeLessThan(1e-3 * (loss / test.count));
    expect(report.layers).toEqual([784, 128, 256, 512, 128, 10]);
    expect(report.dataset).toBe('mnist');
  });

  it('has a confusion matrix whose rows sum to the class counts and per-class metrics that follow from it', () => {
    const counts = classCounts();
    expect(report.confusion).toHaveLength(10);
    report.confusion.forEach((row, t) => {
      expect(row).toHaveLength(10);
      expect(row.reduce((a, b) => a + b, 0), `row ${t}`).toBe(counts[t]);
    });
    const trace = report.confusion.reduce((s, row, t) => s + row[t], 0);
    expect(report.accuracy).toBe(trace / 10000);
    report.classes.forEach((c, k) => {
      const predicted = report.confusion.reduce((s, row) => s + row[k], 0);
      expect(c.support).toBe(counts[k]);
      expect(c.recall).toBeCloseTo(report.confusion[k][k] / counts[k], 12);
      expect(c.precision).toBeCloseTo(report.confusion[k][k] / predicted, 12);
      expect(c.f1).toBeCloseTo((2 * c.precision * c.recall) / (c.precision + c.recall), 12);
    });
    expect(report.macro.recall).toBeCloseTo(report.classes.reduce((s, c) => s + c.recall, 0) / 10, 12);
  });

  it('writes two valid PNGs of the expected size, with the colours they are drawn in, atomically', async () => {
    expect(report.plots).toEqual([join(plots, 'confusion_matrix.png'), join(plots, 'errors.png')]);
    expect(readdirSync(plots).sort()).toEqual(['confusion_matrix.png', 'errors.png']); // no temporary files left
    const cm = await sharp(report.plots[0]).raw().toBuffer({ resolveWithObject: true });
    expect((await sharp(report.plots[0]).metadata()).format).toBe('png');
    expect(cm.info.width).toBeGreaterThanOrEqual(1000);
    expect(cm.info.height).toBeGreaterThanOrEqual(1000);
    // The diagonal cells are dark blue (#08306b-ish at ~95% share): a blank or broken render has none.
    expect(countNear(cm.data, cm.info.channels, [8, 48, 107], 40)).toBeGreaterThan(10 * 60 * 60);

    const er = await sharp(report.plots[1]).raw().toBuffer({ resolveWithObject: true });
    expect((await sharp(report.plots[1]).metadata()).format).toBe('png');
    // MNIST labels like "7 → 2 (98.1%)": at most 14 characters.
    const size = errorsSize(36, 14);
    expect([er.info.width, er.info.height]).toEqual([size.width, size.height]);
    expect(size.width).toBeGreaterThanOrEqual(1000);
    expect(countNear(er.data, er.info.channels, [214, 39, 40], 30)).toBeGreaterThan(36 * 20);   // predicted, red
    expect(countNear(er.data, er.info.channels, [44, 160, 44], 30)).toBeGreaterThan(36 * 20);   // true, green
    expect(countNear(er.data, er.info.channels, [0, 0, 0], 10)).toBeGreaterThan(36 * 36 * 20);  // ink of 36 digits
  });
});

/** Pixels within `tol` (per channel) of `rgb`. */
function countNear(data: Buffer, channels: number, rgb: number[], tol: number): number {
  let n = 0;
  for (let i = 0; i < data.length; i += channels) {
    if (Math.abs(data[i] - rgb[0]) <= tol && Math.abs(data[i + 1] - rgb[1]) <= tol && Math.abs(data[i + 2] - rgb[2]) <= tol) n++;
  }
  return n;
}

describe('eval, tables', () => {
  it('prints accuracy, per-class metrics and an aligned confusion matrix whose rows sum to the class counts', () => {
    const r = runCli(evalArgs(join(root, 'plots-text')));
    expect(r.code, r.stderr).toBe(0);
    const acc = /accuracy (\d+\.\d\d)% \((\d+) of 10000\)/.exec(r.stdout);
    expect(acc, r.stdout).not.toBeNull();
    expect(Math.abs(Number(acc![1]) / 100 - mainAccuracy(10000))).toBeLessThanOrEqual(3 / 10000 + 5e-5);
    expect(r.stdout).toMatch(/^class\s+precision\s+recall\s+F1\s+support$/m);
    expect(r.stdout).toMatch(/^macro avg\s+\d+\.\d\d%\s+\d+\.\d\d%\s+\d+\.\d\d%\s+10000$/m);
    const lines = r.stdout.split('\n');
    const at = lines.findIndex((l) => l.startsWith('confusion matrix'));
    expect(at).toBeGreaterThan(0);
    const header = lines[at + 1];
    expect(header.trim().split(/\s+/)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    const counts = classCounts();
    for (let t = 0; t < 10; t++) {
      const line = lines[at + 2 + t];
      expect(line.length, 'aligned').toBe(header.length);
      const cells = line.trim().split(/\s+/).map(Number);
      expect(cells[0]).toBe(t);
      expect(cells.slice(1).reduce((a, b) => a + b, 0), `row ${t}`).toBe(counts[t]);
    }
    expect(r.stdout).toContain(`wrote ${join(root, 'plots-text', 'confusion_matrix.png')}`);
  });
});

describe('eval, bad inputs: one line, the file or flag named, nothing half-written', () => {
  const oneLine = (stderr: string): string => {
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(stderr).not.toMatch(/\n\s+at /);
    return lines[0];
  };

  it('a missing model', () => {
    const r = runCli(evalArgs(join(root, 'p1')).map((a) => (a === model ? join(root, 'nope.safetensors') : a)));
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/nope\.safetensors: cannot read \(no such file\)/);
  });

  it('a truncated model', () => {
    const cut = join(root, 'cut.safetensors');
    writeFileSync(cut, readFileSync(model).subarray(0, 3000));
    const r = runCli(evalArgs(join(root, 'p2')).map((a) => (a === model ? cut : a)));
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/cut\.safetensors: .*run past/);
  });

  it('a model whose layers do not start at 784 or do not end at 10', () => {
    const t = (name: string, shape: number[]) => ({ name, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
    for (const [file, first, last, pattern] of [
      ['in100.safetensors', 100, 10, /0\.weight has shape \[16, 100\], expected \[OC, 784\]/],
      ['out5.safetensors', 784, 5, /2\.weight has shape \[5, 16\], expected \[10, 16\]/],
    ] as const) {
      const path = join(root, file);
      writeFileSync(path, encodeSafetensors([t('0.weight', [16, first]), t('0.bias', [16]), t('2.weight', [last, 16]), t('2.bias', [last])]));
      const r = runCli(evalArgs(join(root, 'p3')).map((a) => (a === model ? path : a)));
      expect(r.code, file).toBe(1);
      expect(oneLine(r.stderr)).toMatch(pattern);
    }
  });

  it('an unwritable --plots folder is named before any work is done', () => {
    const underFile = join(model, 'plots'); // a folder inside a regular file: ENOTDIR even for root
    const r = runCli(evalArgs(underFile));
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toContain(`--plots ${underFile}: cannot write there`);
    expect(r.stdout).toBe('');
  });

  it('missing test files with --no-download', () => {
    const empty = mkdtempSync(join(root, 'nodata-'));
    const r = runCli(evalArgs(join(root, 'p4')).map((a) => (a === mnistDir ? empty : a)));
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toMatch(/missing t10k-images-idx3-ubyte\.gz/);
  });

  for (const [flag, value] of [['--threads', '0'], ['--threads', '1.5'], ['--kernels', 'gpu'], ['--dataset', 'cifar'], ['--plots', '']]) {
    it(`${flag} '${value}' → exit 2 naming ${flag}`, () => {
      const plots = join(root, `p-${flag}`);
      const args = evalArgs(plots);
      const i = args.indexOf(flag);
      if (i >= 0) args[i + 1] = value;
      else args.push(flag, value);
      const r = runCli(args);
      expect(r.code).toBe(2);
      expect(oneLine(r.stderr)).toMatch(new RegExp(`^mnist-par: ${flag}: expected`));
      expect(existsSync(plots)).toBe(false);
    });
  }

  it('no --model and no run to take it from → one line naming --model and how to get a model', () => {
    const r = runCli(['eval', '--data-dir', mnistDir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('--model: no run in models/ holds model.safetensors; train one first');
  });
});

describe('the metrics, on hand-made values', () => {
  it('confusion, precision / recall / F1 (0 where nothing was predicted) and the surest mistakes', () => {
    // 3 classes, 5 images: labels 0 0 1 2 2; predictions 0 1 1 1 2
    const probs = new Float32Array([0.8, 0.1, 0.1, 0.3, 0.6, 0.1, 0.2, 0.7, 0.1, 0.1, 0.9, 0.0, 0.2, 0.2, 0.6]);
    const labels = new Uint8Array([0, 0, 1, 2, 2]);
    const m = confusionMatrix(probs, labels, 3);
    expect(m).toEqual([[1, 1, 0], [0, 1, 0], [0, 1, 1]]);
    const { classes, macro } = classStats(m, ['a', 'b', 'c']);
    expect(classes.map((c) => [c.precision, c.recall, c.support])).toEqual([[1, 0.5, 2], [1 / 3, 1, 1], [1, 0.5, 2]]);
    expect(classes[1].f1).toBeCloseTo(0.5, 12);
    expect(macro.recall).toBeCloseTo(2 / 3, 12);
    const none = classStats([[0, 1], [0, 1]], ['a', 'b']).classes[0];
    expect([none.precision, none.recall, none.f1]).toEqual([0, 0, 0]);
    expect(confidentMistakes(probs, labels, 3, 5)).toEqual([
      { index: 3, label: 2, predicted: 1, p: Math.fround(0.9) },
      { index: 1, label: 0, predicted: 1, p: Math.fround(0.6) },
    ]);
  });
});
