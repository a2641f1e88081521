// Training on your own data through the built CLI and the library: a 3-class image folder, a 26-class IDX
// folder and a Kaggle-layout CSV with a --val-split hold-out each learn; eval and predict name the classes; the
// model file carries them and the normalization, and PyTorch loads it; a resumed run continues bit for bit;
// every bad input is one line naming the file (and the line of a CSV), and nothing is written.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, train, UsageError } from '../src/index.js';
import type { EvalReport } from '../src/eval/metrics.js';
import { pixelStats, readOwnData, holdOut, holdOutSeed } from '../src/data/own.js';
import { readSafetensors } from '../src/safetensors.js';
import { mnistDir, repoRoot, runCli } from './cli-run.js';
import { csvText, PIXELS, syntheticSet, writeIdxPair, writeImageFolder } from './own-fixtures.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-own-cli-'));
const root = tmp();

// MNIST's first training images and labels, for data that looks like what people bring
const mnistImages = gunzipSync(readFileSync(join(mnistDir, 'train-images-idx3-ubyte.gz'))).subarray(16);
const mnistLabels = gunzipSync(readFileSync(join(mnistDir, 'train-labels-idx1-ubyte.gz'))).subarray(8);

function lastEpoch(out: string): Record<string, number> {
  const [header, ...rows] = readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n');
  const values = rows[rows.length - 1].split(',').map(Number);
  return Object.fromEntries(header.split(',').map((k, i) => [k, values[i]]));
}

async function metadata(file: string): Promise<Record<string, string>> {
  return (await readSafetensors(file)).metadata;
}

describe('a 3-class image folder', () => {
  const data = join(root, 'digits');
  const out = join(root, 'digits-run');
  const names = ['zero', 'one', 'two'];

  beforeAll(async () => {
    // the first 150 zeros, ones and twos of MNIST, as PNG files in folders named for them
    const picked: number[] = [];
    for (let i = 0; picked.length < 450; i++) if (mnistLabels[i] <= 2 && picked.filter((j) => mnistLabels[j] === mnistLabels[i]).length < 150) picked.push(i);
    const images = new Uint8Array(picked.length * PIXELS);
    picked.forEach((i, k) => images.set(mnistImages.subarray(i * PIXELS, (i + 1) * PIXELS), k * PIXELS));
    await writeImageFolder(data, names, images, picked.map((i) => mnistLabels[i]), picked.length);
  });

  it('learns, and the model names the classes (the folders, sorted) and keeps the normalization of its images', async () => {
    const r = runCli(['--data', data, '--out', out, '--threads', '2', '--epochs', '3', '--batch-size', '32', '--val-split', '0.2', '--log-every', '1000']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.trim()).toBe(`mnist-par: note: --data ${data}: no test set given (--test): 90 of its 450 images (20% of each class, seed 42) are held out for validation`);
    expect(r.stdout).toMatch(/^digits \(3 classes\) · mlp 784→128→256→512→128→3 ·/);
    expect(r.stdout).toMatch(/held-out validation accuracy \d+\.\d+%/);
    expect(lastEpoch(out).val_accuracy).toBeGreaterThan(0.9);
    const meta = await metadata(join(out, 'model.safetensors'));
    expect(JSON.parse(meta.classes)).toEqual(['one', 'two', 'zero']);
    expect(meta.dataset).toBeUndefined();
    // the normalization of the training part (the 360 images not held out), as the images load
    const own = await readOwnData(data, '--data');
    const train = holdOut(own.train, 0.2, holdOutSeed(42)).train;
    const { mean, std } = pixelStats(train.images, train.count, 'x');
    expect([Number(meta.mean), Number(meta.std)]).toEqual([mean, std]);
    expect(Math.abs(mean - 0.1307)).toBeGreaterThan(1e-4); // not MNIST's constant
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toMatchObject({ data, test: '', valSplit: 0.2 });
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).dataset).toBeUndefined();
  });

  it('eval finds the same held-out set and names the classes; predict names the class of an image', () => {
    const ev = runCli(['eval', '--model', out, '--threads', '2', '--json', '--plots', join(root, 'digits-plots')]);
    expect(ev.code, ev.stderr).toBe(0);
    const report = JSON.parse(ev.stdout) as EvalReport;
    expect(report.classes.map((c) => c.name)).toEqual(['one', 'two', 'zero']);
    expect(report.count).toBe(90);
    expect(report.accuracy).toBeCloseTo(lastEpoch(out).val_accuracy, 6);
    const text = runCli(['eval', '--model', out, '--threads', '2', '--plots', join(root, 'digits-plots')]);
    expect(text.stdout).toMatch(/^data {5}.*digits \(held out\), 90 images$/m);
    expect(text.stdout).toMatch(/^1 two {2,}/m);
    // predict: a two of MNIST's test set, as a file of another size
    const file = join(root, 'a-two.png');
    const testImages = gunzipSync(readFileSync(join(mnistDir, 't10k-images-idx3-ubyte.gz'))).subarray(16);
    // test image 1 is a 2
    return sharp(Buffer.from(testImages.subarray(PIXELS, 2 * PIXELS)), { raw: { width: 28, height: 28, channels: 1 } })
      .resize(84, 84).png().toFile(file).then(() => {
        const p = runCli(['predict', '--model', out, file]);
        expect(p.code, p.stderr).toBe(0);
        expect(p.stdout).toMatch(new RegExp(`^${file}: class two \\(\\d+\\.\\d+%\\)\\n {2}one: \\d+\\.\\d+% {2}two: \\d+\\.\\d+% {2}zero: \\d+\\.\\d+%\\n$`));
        const j = runCli(['predict', '--model', out, '--json', file]);
        expect(JSON.parse(j.stdout)).toMatchObject({ file, digit: 1, label: 'two' });
        // --dataset means nothing to a model of your own classes
        const dd = runCli(['eval', '--model', out, '--data-dir', mnistDir]);
        expect(dd.code).toBe(2);
        expect(dd.stderr).toMatch(/^mnist-par: --data-dir .*: .* was trained on its own data, not on a built-in dataset; leave --data-dir out .*\n$/);
        const d = runCli(['predict', '--model', out, '--dataset', 'mnist', file]);
        expect(d.code).toBe(2);
        expect(d.stderr).toMatch(/^mnist-par: --dataset mnist: .* was trained on its own data \(3 classes: one, two, zero\), not on a built-in dataset; leave out --dataset\n$/);
      });
  });
});

describe('a 26-class IDX folder (EMNIST letters: labels 1..26, a train and a test pair)', () => {
  const data = join(root, 'letters');
  const out = join(root, 'letters-run');

  beforeAll(() => {
    const s = syntheticSet(26, 120, 11);
    const labels = s.labels.map((l) => l + 1);
    const n = 26 * 100;
    writeIdxPair(data, 'emnist-letters-train', s.images.subarray(0, n * PIXELS), labels.subarray(0, n));
    writeIdxPair(data, 'emnist-letters-test', s.images.subarray(n * PIXELS), labels.subarray(n));
  });

  it('learns, validating on its own test split, with a last layer of 26', async () => {
    const r = runCli(['--data', data, '--out', out, '--threads', '2', '--epochs', '3', '--batch-size', '64', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(''); // its test split is the test set: nothing held out, nothing to say
    const start = JSON.parse(r.stdout.split('\n')[0]);
    expect(start).toMatchObject({ type: 'start', dataset: data, classes: 26, layers: [784, 128, 256, 512, 128, 26] });
    expect(lastEpoch(out).val_accuracy).toBeGreaterThan(0.9);
    const model = await loadModel(out);
    expect(model.classes).toEqual(Array.from({ length: 26 }, (_, c) => String(c + 1)));
    expect(model.dataset).toBeNull();
    expect(model.network).toBe('mlp 784→128→256→512→128→26');
  });

  it('eval reports its 26 classes by their labels and draws them', async () => {
    const plots = join(root, 'letters-plots');
    const ev = runCli(['eval', '--model', out, '--threads', '2', '--plots', plots]);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stdout).toMatch(/^data {5}.*letters \(test\), 520 images$/m);
    expect(ev.stdout).toMatch(/^26 {8}/m); // the last class, by its label
    expect(ev.stdout).toMatch(/the 26×26 confusion matrix is in confusion_matrix\.png and --json; its largest mistakes/);
    const png = await sharp(join(plots, 'confusion_matrix.png')).metadata();
    expect(png.width).toBeGreaterThan(2000);
    const json = JSON.parse(runCli(['eval', '--model', out, '--threads', '2', '--json', '--plots', plots]).stdout) as EvalReport;
    expect(json.confusion).toHaveLength(26);
    expect(json.accuracy).toBeCloseTo(lastEpoch(out).val_accuracy, 6);
  });
});

describe('a Kaggle-layout CSV with a --val-split hold-out', () => {
  const csv = join(root, 'train.csv');
  const testCsv = join(root, 'test.csv');
  const run = (out: string, ...extra: string[]) => runCli(['--data', csv, '--val-split', '0.2', '--out', out, '--threads', '2',
    '--batch-size', '64', '--schedule', 'none', '--lr', '0.002', '--log-every', '1000', ...extra]);

  beforeAll(() => {
    writeFileSync(csv, csvText(mnistImages, mnistLabels, 3000));
    writeFileSync(testCsv, csvText(mnistImages.subarray(3000 * PIXELS), mnistLabels.subarray(3000), 1000));
  });

  it('holds out 20% of each class, learns, and a resumed run continues bit for bit', () => {
    const straight = join(root, 'csv-straight');
    const r = run(straight, '--epochs', '2');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/no test set given \(--test\): 600 of its 3000 images \(20% of each class, seed 42\) are held out for validation/);
    expect(lastEpoch(straight).val_accuracy).toBeGreaterThan(0.85);
    const resumed = join(root, 'csv-resumed');
    expect(run(resumed, '--epochs', '1').code).toBe(0);
    const again = runCli(['--resume', resumed, '--epochs', '2', '--threads', '2']);
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(join(resumed, 'model.safetensors')).equals(readFileSync(join(straight, 'model.safetensors')))).toBe(true);
    // the checkpoint carries the classes and normalization: --data cannot swap in other data
    const other = join(root, 'other.csv');
    writeFileSync(other, csvText(mnistImages, Array.from(mnistLabels.subarray(0, 3000), (l) => l % 5), 3000));
    const swapped = runCli(['--resume', resumed, '--epochs', '3', '--data', other]);
    expect(swapped.code, swapped.stderr).toBe(1);
    expect(swapped.stderr.trim().split('\n').at(-1)).toMatch(/the checkpoint was trained on the classes 0, 1, 2, 3, 4, 5, … \(10\), but --data now holds 0, 1, 2, 3, 4; resume with the data it was trained on/);
  });

  it('eval --data and predict name the classes; PyTorch loads the model', async () => {
    const model = join(root, 'csv-straight');
    const ev = runCli(['eval', '--model', model, '--data', testCsv, '--threads', '2', '--json', '--plots', join(root, 'csv-plots')]);
    expect(ev.code, ev.stderr).toBe(0);
    const report = JSON.parse(ev.stdout) as EvalReport;
    expect(report.count).toBe(1000);
    expect(report.dataset).toBe(testCsv);
    expect(report.classes.map((c) => c.name)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    expect(report.accuracy).toBeGreaterThan(0.85);
    const both = runCli(['eval', '--model', model, '--data', testCsv, '--dataset', 'mnist']);
    expect(both.code).toBe(2);
    expect(both.stderr).toBe('mnist-par: --data: give either --data (your own files) or --dataset (a built-in dataset), not both\n');

    const PYTHON = '/usr/bin/python3';
    const torch = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
    if (torch.error || torch.status !== 0) {
      console.log(`SKIPPED the PyTorch half: ${PYTHON} cannot import torch (apt-get install python3-torch)`);
      return;
    }
    const pt = spawnSync(PYTHON, [join(repoRoot, 'scripts', 'pytorch-eval.py'), model, '--data', testCsv, '--json'], { encoding: 'utf8', timeout: 120_000 });
    expect(pt.status, pt.stderr).toBe(0);
    const t = JSON.parse(pt.stdout) as { count: number; accuracy: number; loss: number; network: string };
    expect(t.count).toBe(1000);
    expect(t.network).toBe('Linear ReLU Linear ReLU Linear ReLU Linear ReLU Linear');
    // PyTorch sums in its own order: a near tie may flip one image
    expect(Math.abs(t.accuracy - report.accuracy)).toBeLessThanOrEqual(2 / 1000);
    expect(Math.abs(t.loss - report.loss)).toBeLessThan(1e-4 * report.loss);
  });

  it('the library: train({ data }), the model\'s classes, predict and evaluate({ data }), and the same refusals', async () => {
    const out = join(root, 'csv-api');
    const r = await train({ data: csv, valSplit: 0.2, out, threads: 2, batchSize: 64, schedule: 'none', lr: 0.002, epochs: 2 });
    // the same run as the command line's, byte for byte
    expect(readFileSync(join(out, 'model.safetensors')).equals(readFileSync(join(root, 'csv-straight', 'model.safetensors')))).toBe(true);
    expect(r.model.classes).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    expect(r.model.dataset).toBeNull();
    const p = await r.model.predict(mnistImages.subarray(3000 * PIXELS, 3001 * PIXELS));
    expect(p.label).toBe(String(mnistLabels[3000]));
    const ev = await r.model.evaluate({ data: testCsv, threads: 2 });
    expect(ev.count).toBe(1000);
    await expect(train({ data: csv, dataset: 'mnist' })).rejects.toThrow(new UsageError('--data: give either --data (your own files) or --dataset (a built-in dataset), not both'));
    await expect(train({ data: '' })).rejects.toThrow('--data: expected a .csv file or a folder, got an empty string');
    await expect(train({ valSplit: 0.2 })).rejects.toThrow(/^--val-split: the held-out share applies to --data/);
    await expect(r.model.evaluate({ data: testCsv, dataDir: mnistDir })).rejects.toThrow(/^--data: give either --data \(your own files\) or --data-dir/);
  });
});

describe('bad input: one line naming the file, and nothing written', () => {
  const s = syntheticSet(3, 4, 21);
  const good = csvText(s.images, s.labels, s.count);
  const lines = good.split('\n');
  const withLine = (k: number, text: string) => lines.map((l, i) => (i === k ? text : l)).join('\n');
  const zeros = (n: number) => new Array<number>(n).fill(0).join(',');

  type Make = (dir: string) => Promise<string> | string;
  const csvFile = (text: string): Make => (dir) => {
    writeFileSync(join(dir, 'data.csv'), text);
    return 'data.csv';
  };
  const folder = (names: string[], after?: (dir: string) => Promise<void> | void): Make => async (dir) => {
    const d = join(dir, 'imgs');
    mkdirSync(d);
    const labels = Array.from({ length: s.count }, (_, i) => i % names.length);
    await writeImageFolder(d, names, s.images, labels, s.count);
    await after?.(d);
    return 'imgs';
  };
  const cases: [string, Make, string[], RegExp][] = [
    ['a CSV row with the wrong number of columns', csvFile(withLine(3, `1,${zeros(700)}`)), [], /^mnist-par: data\.csv: line 4: expected 785 columns \(a label, then 784 pixels\), as the header has, found 701\n$/],
    ['a non-numeric value', csvFile(withLine(5, `2,${zeros(100)},x7,${zeros(683)}`)), [], /^mnist-par: data\.csv: line 6: column 102 \(pixel100\): expected a pixel value, an integer 0-255, found 'x7'\n$/],
    ['a pixel outside 0-255', csvFile(withLine(2, `0,${zeros(783)},300`)), [], /^mnist-par: data\.csv: line 3: column 785 \(pixel783\): expected a pixel value 0-255, found 300\n$/],
    ['a training CSV without a label column', csvFile(csvText(s.images, null, s.count)), [], /^mnist-par: data\.csv: line 1: has 784 columns, pixels only, and no label column .*\n$/],
    ['an image folder with no class folders', async (dir) => {
      mkdirSync(join(dir, 'flat'));
      await sharp({ create: { width: 28, height: 28, channels: 3, background: '#ffffff' } }).png().toFile(join(dir, 'flat', 'a.png'));
      return 'flat';
    }, [], /^mnist-par: flat: holds no class folders; expected flat\/<class name>\/\*\.png .*\n$/],
    ['an image folder with one class', folder(['only']), [], /^mnist-par: imgs: holds one class folder \(only\), at least 2 are needed .*\n$/],
    ['an unreadable image', folder(['a', 'b'], (d) => writeFileSync(join(d, 'b', 'broken.png'), 'not an image')), [],
      /^mnist-par: imgs\/b\/broken\.png: cannot decode it .*\n$/],
    ['an empty image', folder(['a', 'b'], (d) => writeFileSync(join(d, 'a', 'empty.jpg'), '')), [], /^mnist-par: imgs\/a\/empty\.jpg: an empty file \(0 bytes\).*\n$/],
    ['more than 1,000 classes', csvFile(Array.from({ length: 1001 }, (_, i) => `${i},${zeros(784)}`).join('\n')), [],
      /^mnist-par: data\.csv: holds more than 1000 different labels .*\n$/],
    ['a test set whose class names differ', async (dir) => {
      await folder(['cat', 'dog', 'owl'])(dir);
      const t = join(dir, 'test');
      mkdirSync(t);
      await writeImageFolder(t, ['cat', 'dog', 'emu'], s.images, Array.from({ length: s.count }, (_, i) => i % 3), s.count);
      return 'imgs';
    }, ['--test', 'test'], /^mnist-par: --test test: its classes differ from the training set's: it has class folders emu that the model's classes lack and no class folder for owl; the training set's classes are cat, dog, owl\n$/],
    ['a missing path', () => 'nowhere.csv', [], /^mnist-par: --data nowhere\.csv: no such file or folder; give a folder of IDX files, a \.csv file .*\n$/],
  ];
  for (const [what, make, extra, message] of cases) {
    it(what, async () => {
      const cwd = tmp();
      const data = await make(cwd);
      const before = readdirSync(cwd).sort();
      // a numbered run in models/, and a run given --out with charts elsewhere: neither leaves anything
      for (const args of [[], ['--out', join('runs', 'a', 'b'), '--plots', join('charts', 'x')]]) {
        const r = runCli(['--data', data, ...extra, '--epochs', '1', '--threads', '2', ...args], {}, 60_000, cwd);
        expect(r.stderr).toMatch(message);
        expect(r.code).toBe(what === 'a missing path' ? 2 : 1);
        expect(readdirSync(cwd).sort(), 'files were written').toEqual(before);
      }
    });
  }

  it('--data with --dataset or --data-dir, in one line, exit 2', () => {
    const cwd = tmp();
    writeFileSync(join(cwd, 'a.csv'), good);
    for (const [args, line] of [
      [['--dataset', 'mnist'], 'mnist-par: --data: give either --data (your own files) or --dataset (a built-in dataset), not both\n'],
      [['--data-dir', mnistDir], 'mnist-par: --data: give either --data (your own files) or --data-dir (a built-in dataset), not both\n'],
      [['--test', 'a.csv', '--val-split', '0.3'], 'mnist-par: --val-split: the test set comes from --test, so nothing is held out; give one of them\n'],
    ] as const) {
      const r = runCli(['--data', 'a.csv', ...args], {}, 60_000, cwd);
      expect(r.stderr).toBe(line);
      expect(r.code).toBe(2);
    }
    const t = runCli(['--test', 'a.csv'], {}, 60_000, cwd);
    expect(t.stderr).toMatch(/^mnist-par: --test: a test set goes with --data/);
    expect(readdirSync(cwd)).toEqual(['a.csv']);
    expect(existsSync(join(cwd, 'models'))).toBe(false);
  });
});
