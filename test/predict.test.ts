// `mnist-par predict` through the built CLI: real test digits written out as image files of other sizes,
// polarities and colour models get the class the model gives the original 28×28 image; bad inputs are one
// line each and do not stop the others. Build first (npm run build).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSplit, type Split } from '../src/data/idx.js';
import { crossEntropyForward } from '../src/kernels/reference.js';
import { activationElements, activationViews, layerViews, mlpForward } from '../src/mlp.js';
import { referenceKernels } from '../src/kernels/index.js';
import { argmaxRow, forwardProbs, loadModel, normalizeTable, type Prediction } from '../src/predict.js';
import { encodeSafetensors } from '../src/safetensors.js';
import { cliPath, mnistDir, runCli } from './cli-run.js';

const root = mkdtempSync(join(tmpdir(), 'mnist-par-predict-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const model = join(root, 'models', 'model.safetensors');
let test: Split;

beforeAll(async () => {
  const r = runCli(['--data-dir', mnistDir, '--out', join(root, 'models'), '--threads', '2', '--limit-train', '8192',
    '--epochs', '2', '--limit-test', '500', '--no-download', '--log-every', '1000']);
  expect(r.code, r.stderr).toBe(0);
  test = await loadSplit(mnistDir, 'test');
}, 120_000);

const digit = (k: number): Uint8Array => test.images.subarray(784 * k, 784 * (k + 1));
const grey28 = (px: Uint8Array) => sharp(Buffer.from(px), { raw: { width: 28, height: 28, channels: 1 } });

/** Each writes test digit `px` to `file` in another form than MNIST's own. */
const VARIANTS: [string, (px: Uint8Array, file: string) => Promise<void>][] = [
  ['56×56', async (px, f) => { await grey28(px).resize(56, 56, { kernel: 'linear' }).png().toFile(f); }],
  ['200×120, padded off-centre', async (px, f) => {
    await grey28(px).resize(90, 90).extend({ top: 20, bottom: 10, left: 30, right: 80, background: '#000000' }).png().toFile(f);
  }],
  ['inverted, black on white 84×84', async (px, f) => {
    await grey28(px.map((v) => 255 - v)).resize(84, 84).png().toFile(f);
  }],
  ['RGB, dark red ink on pale grey 112×112', async (px, f) => {
    const rgb = new Uint8Array(784 * 3);
    const paper = [235, 235, 228], ink = [120, 10, 20];
    for (let i = 0; i < 784; i++) {
      for (let c = 0; c < 3; c++) rgb[3 * i + c] = Math.round(paper[c] + (ink[c] - paper[c]) * (px[i] / 255));
    }
    await sharp(Buffer.from(rgb), { raw: { width: 28, height: 28, channels: 3 } }).resize(112, 112).png().toFile(f);
  }],
];

describe('forwardProbs', () => {
  it('gives the reference kernels\' softmax bit for bit, as eval\'s workers compute it', async () => {
    const m = await loadModel(model);
    const B = 500;
    const V = 10;
    const probs = forwardProbs(m, normalizeTable('mnist'), test.images.subarray(0, B * 784), B);
    // the same network by hand: the forward kernels, then the cross-entropy kernel's probabilities
    const acts = activationViews(new Float32Array(activationElements(m.layout, B)), m.layout, B);
    const table = normalizeTable('mnist');
    for (let i = 0; i < B * 784; i++) acts.h[0][i] = table[test.images[i]];
    const logits = mlpForward(referenceKernels, layerViews(m.params, m.layout), acts, m.layout, B);
    const want = new Float32Array(B * V);
    crossEntropyForward(want, logits, Int32Array.from(test.labels.subarray(0, B)), B, V, 0);
    const differ = Array.from(want).filter((x, i) => !Object.is(x, probs[i])).length;
    expect(differ, `${differ} of ${B * V} probabilities differ from the kernel's`).toBe(0);
  });
});

describe('predict on test digits written as other images', () => {
  it('gives the model\'s own prediction on the original 28×28 image for ≥ 90%, and the true label for most', async () => {
    const K = 20;
    const files: string[] = [];
    for (let k = 0; k < K; k++) {
      const [name, write] = VARIANTS[k % VARIANTS.length];
      const f = join(root, `digit-${k}-${name.split(',')[0].replace(/\W+/g, '')}.png`);
      await write(digit(k), f);
      files.push(f);
    }
    const meta = await sharp(files[1]).metadata();
    expect([meta.width, meta.height]).toEqual([200, 120]);
    expect((await sharp(files[3]).metadata()).channels).toBe(3);

    const r = runCli(['predict', '--json', '--model', model, ...files]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const preds = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Prediction);
    expect(preds.map((p) => p.file)).toEqual(files);

    const original = forwardProbs(await loadModel(model), normalizeTable('mnist'), test.images, K);
    let agree = 0, right = 0;
    preds.forEach((p, k) => {
      expect(p.probabilities).toHaveLength(10);
      expect(Math.abs(p.probabilities.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-4);
      expect(p.digit).toBe(argmaxRow(p.probabilities, 0, 10));
      expect(p.label).toBe(String(p.digit));
      if (p.digit === argmaxRow(original, k, 10)) agree++;
      if (p.digit === test.labels[k]) right++;
    });
    expect(agree).toBeGreaterThanOrEqual(18);
    expect(right).toBeGreaterThanOrEqual(16);
  });

  it('prints "file: digit D (p%)" and the ten probabilities in text mode', async () => {
    const f = join(root, 'one.png');
    await grey28(digit(0)).png().toFile(f);
    const r = runCli(['predict', '--model', model, f]);
    expect(r.code, r.stderr).toBe(0);
    const [head, probs] = r.stdout.trim().split('\n');
    const m = new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: digit (\\d) \\((\\d+\\.\\d\\d)%\\)$`).exec(head);
    expect(m, head).not.toBeNull();
    const ps = [...probs.matchAll(/(\d): (\d+\.\d\d)%/g)];
    expect(ps.map((x) => Number(x[1]))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Math.abs(ps.reduce((s, x) => s + Number(x[2]), 0) - 100)).toBeLessThan(0.1);
    expect(ps[Number(m![1])][2]).toBe(m![2]);
  });
});

describe('predict, bad inputs', () => {
  it('a bad image is one line naming it; the others are still classified; exit 1 at the end', async () => {
    const good = join(root, 'good.png');
    await grey28(digit(1)).png().toFile(good);
    const bad = join(root, 'not-an-image.png');
    writeFileSync(bad, 'this is text, not a PNG\n');
    const blank = join(root, 'blank.png');
    await sharp({ create: { width: 40, height: 40, channels: 3, background: '#808080' } }).png().toFile(blank);
    const r = runCli(['predict', '--json', '--model', model, bad, good, join(root, 'missing.png'), blank]);
    expect(r.code).toBe(1);
    const err = r.stderr.trim().split('\n');
    expect(err).toHaveLength(3);
    expect(err[0]).toMatch(/not-an-image\.png: cannot decode it/);
    expect(err[1]).toMatch(/missing\.png: no such file/);
    expect(err[2]).toMatch(/blank\.png: no ink found/);
    const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(out.map((o) => o.file)).toEqual([bad, good, join(root, 'missing.png'), blank]);
    expect(typeof out[0].error).toBe('string');
    expect(out[1].digit).toBeTypeOf('number');
  });

  const oneLine = (stderr: string): string => {
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(stderr).not.toMatch(/\n\s+at /);
    return lines[0];
  };

  it('missing, truncated, corrupt and wrongly shaped models', async () => {
    const img = join(root, 'img.png');
    await grey28(digit(2)).png().toFile(img);
    const cut = join(root, 'cut.safetensors');
    writeFileSync(cut, readFileSync(model).subarray(0, 3000));
    const corrupt = join(root, 'corrupt.safetensors');
    const head = Buffer.from('{"0.weight": oops}      ');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(head.length));
    writeFileSync(corrupt, Buffer.concat([len, head]));
    const t = (name: string, shape: number[]) => ({ name, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
    const wide = join(root, 'wide.safetensors');
    writeFileSync(wide, encodeSafetensors([t('0.weight', [8, 1024]), t('0.bias', [8]), t('2.weight', [10, 8]), t('2.bias', [10])]));
    for (const [file, pattern] of [
      [join(root, 'none.safetensors'), /none\.safetensors: cannot read \(no such file\)/],
      [cut, /cut\.safetensors: .*run past/],
      [corrupt, /corrupt\.safetensors: header is not valid JSON/],
      [wide, /wide\.safetensors: 0\.weight has shape \[8, 1024\], expected \[OC, 784\]/],
    ] as const) {
      const r = runCli(['predict', '--model', file, img]);
      expect(r.code, file).toBe(1);
      expect(oneLine(r.stderr)).toMatch(pattern);
      expect(r.stdout).toBe('');
    }
  });

  it('no images, or an unknown --dataset → exit 2', () => {
    const r = runCli(['predict', '--model', model]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('images');
    const d = runCli(['predict', '--model', model, '--dataset', 'cifar', 'x.png']);
    expect(d.code).toBe(2);
    expect(oneLine(d.stderr)).toMatch(/^mnist-par: --dataset: expected one of mnist, fashion-mnist, got 'cifar'$/);
  });
});

describe('predict into a pipe that closes', () => {
  it('`predict a b c … | head -1`: exits quietly with 141, as SIGPIPE ends a program, without a stack trace', async () => {
    const f = join(root, 'pipe-digit.png');
    await grey28(digit(3)).png().toFile(f);
    // 50 images: the writes outlast head, whichever process the scheduler runs first
    const quoted = [process.execPath, cliPath, 'predict', '--model', model, ...new Array<string>(50).fill(f)].map((a) => `'${a}'`).join(' ');
    const r = spawnSync('bash', ['-c', `${quoted} | head -1; exit \${PIPESTATUS[0]}`], { encoding: 'utf8', cwd: root });
    expect(r.stdout).toMatch(/^\S+pipe-digit\.png: digit \d \(/);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(141);
  });
});

