// The convolutional net through the engine's one door (src/network.ts forward / backward / backwardRows /
// weightGradient, over src/cnn.ts and mlp.ts's head): float64 gradient checks of every parameter tensor of the
// whole net against finite differences, the step split among threads against one thread bit for bit, and every
// fast family against the float64 reference on real MNIST images at the default sizes.
// (The kernels alone are in conv-kernels.test.ts; a trained cnn's file through eval, predict, the library and
// PyTorch in cnn-model.test.ts.)
import { beforeAll, describe, expect, it } from 'vitest';
import { loadSplit } from '../src/data/idx.js';
import { DATASETS, normalizationTable } from '../src/data/datasets.js';
import { referenceKernels, type F, type KernelSet } from '../src/kernels/index.js';
import * as ref from '../src/kernels/reference.js';
import type { Kernels } from '../src/kernels/wasm.js';
import {
  activationElements, activationViews, layerViews, layerViewsWithTransposed, rowsOf, syncTransposed, type Activations,
  type LayerViews, type RowRange,
} from '../src/mlp.js';
import {
  CLASSES, DEFAULT_CHANNELS, DEFAULT_CNN_HIDDEN, initParams, modelLayout, tensorNames, type Layout, type ModelSpec,
} from '../src/model.js';
import { backward, backwardRows, colsElements, evaluate, forward, weightGradient } from '../src/network.js';
import { ownedParts, ROW_BLOCK, threadRows } from '../src/partition.js';
import { Rng } from '../src/rng.js';
import { Arena, fastFamilies, rebuildWasm } from './arena.js';
import { expectClose, gradCheck, randomArray } from './check.js';
import { mnistDir } from './cli-run.js';

const k64 = referenceKernels;
type CnnSpec = Extract<ModelSpec, { kind: 'cnn' }>;
const cnn = (channels: number[], hidden: number[]): CnnSpec => ({ kind: 'cnn', channels, hidden });

/** Every parameter tensor of the layout with its safetensors name: [name, start, length]. */
function tensors(layout: Layout): [string, number, number][] {
  const names = tensorNames(layout);
  return [
    ...layout.conv.flatMap(({ C, OC, w, b }, i): [string, number, number][] =>
      [[names.conv[i].weight, w, OC * C * ref.KK], [names.conv[i].bias, b, OC]]),
    ...layout.linear.flatMap(({ C, OC, w, b }, l): [string, number, number][] =>
      [[names.linear[l].weight, w, OC * C], [names.linear[l].bias, b, OC]]),
  ];
}

/** Indices in [start, start + n): all of them, or `count` of them at random (both ends always included). */
function sample(start: number, n: number, count: number, rng: Rng): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => start + i);
  const picked = new Set([start, start + n - 1]);
  while (picked.size < count) picked.add(start + rng.int(n));
  return [...picked];
}

/**
 * The kinks of the objective at the current activations: each ReLU's sign pattern (the convolutions' and the
 * hidden linear layers') and each max-pool's routing (which element of every window is its maximum, from
 * maxPoolBackward of ones). A finite difference whose two points see different kinks is skipped.
 */
function kinks(layout: Layout, acts: Activations, B: number): number[] {
  const out: number[] = [];
  const n = layout.conv.length;
  layout.conv.forEach(({ OC, H, W }, i) => {
    const r = acts.h[2 * i + 1];
    for (const v of r) out.push(v > 0 ? 1 : 0);
    const route = new Float64Array(r.length);
    k64.maxPoolBackward(route, new Float64Array(acts.h[2 * i + 2].length).fill(1), r, B, OC, H - ref.KS + 1, W - ref.KS + 1);
    for (const v of route) out.push(v);
  });
  for (let l = 1; l < layout.linear.length; l++) for (const v of acts.h[2 * n + l]) out.push(v > 0 ? 1 : 0);
  return out;
}

/**
 * Whole-net gradient check in float64 through network.ts: backward()'s gradient of scale · Σ_images loss
 * against centered differences of forward() + crossEntropyForward, for `perTensor` entries of every tensor
 * (0.weight … 9.bias); entries whose ±h evaluations cross a ReLU kink or change a pool's routing are skipped.
 * Inputs are uniform on ±√3 (mean 0, variance 1, like normalized MNIST); PyTorch's init (initParams), with the
 * convolutions' biases raised by 0.5 and the hidden units centred (centreHiddenUnits): in nets this narrow a
 * pool window whose four outputs are all negative feeds the head an exact 0, and a hidden unit can be dead on
 * every image; the weights on either have a gradient of exactly 0, which a check cannot tell from a missing one.
 */
function checkCnn(spec: CnnSpec, B: number, seed: number, smoothing: number, perTensor: number, names: string[]): void {
  const layout = modelLayout(spec);
  const params = new Float64Array(layout.size);
  initParams(params, layout, seed);
  for (const { b, OC } of layout.conv) for (let i = 0; i < OC; i++) params[b + i] += 0.5;
  const grads = new Float64Array(layout.size).fill(NaN); // backward must overwrite every entry
  const net = layerViews(params, layout);
  const acts = activationViews(new Float64Array(activationElements(layout, B)), layout, B);
  const cols = new Float64Array(colsElements(layout));
  const rng = new Rng(seed + 1000);
  acts.h[0].set(randomArray(rng, B * layout.stages[0], -Math.sqrt(3), Math.sqrt(3), Float64Array));
  const targets = Uint8Array.from({ length: B }, () => rng.int(CLASSES));
  const scale = 1 / B;

  centreHiddenUnits(layout, params, acts, cols, B);
  forward(k64, net, acts, layout, cols, B);
  const base = kinks(layout, acts, B);
  const { lossSum } = backward(k64, layerViews(grads, layout), net, acts, layout, cols, targets, B, smoothing, scale);
  expect(Math.abs(lossSum / B - Math.LN10), 'a fresh net is near chance').toBeLessThan(0.5);
  const unwritten = grads.findIndex((g) => !Number.isFinite(g));
  expect(unwritten, 'every gradient entry written (they started as NaN)').toBe(-1);

  const probs = new Float64Array(B * CLASSES);
  const f = () => scale * k64.crossEntropyForward(probs, forward(k64, net, acts, layout, cols, B), targets, B, CLASSES, smoothing);
  expect(f()).toBeCloseTo(scale * lossSum, 14);
  const kinkCrossed = () => kinks(layout, acts, B).some((v, i) => v !== base[i]);

  const seen: string[] = [];
  for (const [name, start, n] of tensors(layout)) {
    const idx = sample(start, n, perTensor, rng);
    const r = gradCheck(`cnn ${spec.channels.join(',')} ${name}`, params, grads, f, idx, { kinkCrossed });
    // most entries must really be held to relErr: not skipped at a kink, not ~0 (a dead unit passes trivially)
    expect(r.checked - r.nearZero, `${name}: ${r.skipped} skipped, ${r.nearZero} ~0 of ${idx.length}`)
      .toBeGreaterThanOrEqual(Math.floor(0.6 * idx.length));
    seen.push(name);
  }
  expect(seen).toEqual(names);
}

/**
 * Shifts the hidden linear units' biases, layer by layer: every third unit (o mod 3 = 2) so that its
 * pre-activation is positive on half of the B images (its median moved to 0: its ReLU mask matters in the
 * backward pass), the others so that it is at least 0.5 on every image. The head's inputs are pooled ReLU
 * outputs of images with the same statistics, so a unit's pre-activation barely varies over the images: left as
 * initialized, a unit is dead on all of them or on none, and a centred unit's outputs are tiny; weights that
 * multiply only those get gradients too small to hold to relErr.
 */
function centreHiddenUnits(layout: Layout, params: Float64Array, acts: Activations, cols: F, B: number): void {
  const net = layerViews(params, layout);
  const n = 2 * layout.conv.length;
  for (let l = 0; l + 1 < layout.linear.length; l++) {
    forward(k64, net, acts, layout, cols, B);
    const { C, OC, b } = layout.linear[l];
    const z = new Float64Array(B * OC);
    k64.linearForward(z, acts.h[n + l], net.w[l], net.b[l], B, C, OC);
    for (let o = 0; o < OC; o++) {
      const v = Array.from({ length: B }, (_, r) => z[r * OC + o]).sort((p, q) => p - q);
      params[b + o] -= o % 3 === 2 ? (v[(B - 1) >> 1] + v[B >> 1]) / 2 + (B % 2) * 1e-3 : v[0] - 0.5;
    }
  }
}

describe('the whole cnn in float64 through network.ts: every tensor against finite differences (h = 1e-5, relErr < 1e-7)', () => {
  it('channels 2,3, hidden 6, label smoothing 0.1: every entry of every tensor', () => {
    checkCnn(cnn([2, 3], [6]), 4, 11, 0.1, Infinity,
      ['0.weight', '0.bias', '3.weight', '3.bias', '7.weight', '7.bias', '9.weight', '9.bias']);
  });

  it('channels 3,2, hidden 5,4 (two hidden layers), no smoothing: 40 entries per tensor', () => {
    checkCnn(cnn([3, 2], [5, 4]), 4, 12, 0, 40,
      ['0.weight', '0.bias', '3.weight', '3.bias', '7.weight', '7.bias', '9.weight', '9.bias', '11.weight', '11.bias']);
  });

  it('one convolution (channels 3): the head reads a 3×12×12 map', () => {
    expect(modelLayout(cnn([3], [4])).layers[0]).toBe(3 * 12 * 12);
    // nn.Sequential(Conv2d, ReLU, MaxPool2d, Flatten, Linear, ReLU, Linear)
    checkCnn(cnn([3], [4]), 2, 13, 0.1, 30, ['0.weight', '0.bias', '4.weight', '4.bias', '6.weight', '6.bias']);
  });

  it('the check can fail: one 3.weight gradient entry off by 1e-5 (relative) is caught', () => {
    const layout = modelLayout(cnn([2, 3], [6]));
    const B = 2;
    const params = new Float64Array(layout.size);
    initParams(params, layout, 5);
    const grads = new Float64Array(layout.size);
    const net = layerViews(params, layout);
    const acts = activationViews(new Float64Array(activationElements(layout, B)), layout, B);
    const cols = new Float64Array(0);
    acts.h[0].set(randomArray(new Rng(6), B * 784, -1.7, 1.7, Float64Array));
    const y = Uint8Array.from([4, 7]);
    forward(k64, net, acts, layout, cols, B);
    backward(k64, layerViews(grads, layout), net, acts, layout, cols, y, B, 0, 1 / B);
    const i = layout.conv[1].w + 17;
    expect(grads[i]).not.toBe(0);
    grads[i] *= 1 + 1e-5;
    const probs = new Float64Array(B * CLASSES);
    const f = () => k64.crossEntropyForward(probs, forward(k64, net, acts, layout, cols, B), y, B, CLASSES, 0) / B;
    expect(() => gradCheck('broken', params, grads, f, [i])).toThrow(/broken: index \d+: analytic/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The step split in two halves, as the workers run it (partition.ts): each thread's rows through forward and
// backwardRows, then each thread's outputs of every layer through weightGradient over all the rows. Whatever
// the number of threads, the gradient has the bits of backward() in one thread, and the loss of every row block
// is the same: what keeps --threads invisible in the weights.

interface Buffers {
  /** a fresh array of n floats, every one NaN */
  take(n: number): F;
  /** n random floats in [−1, 1) */
  random(n: number): F;
}

// 19 images: blocks of 8, 8 and 3 (a ragged last block); 5 threads leave two without rows
const SPLIT_ROWS = 19;

/** Runs the two halves split among 1, 2, 3 and 5 threads and compares each with backward() in one thread. */
function splitAgainstWhole(k: KernelSet, buf: Buffers, spec: ModelSpec, smoothing: number, transposed: boolean): void {
  const layout = modelLayout(spec);
  const params = buf.random(layout.size);
  for (let i = 0; i < layout.size; i++) params[i] *= 0.3;
  const net: LayerViews = transposed ? layerViewsWithTransposed(params, buf.take(layout.size), layout) : layerViews(params, layout);
  syncTransposed(k, net, layout, 0, layout.size);
  const B = SPLIT_ROWS;
  const x = buf.random(B * layout.stages[0]);
  const y = Int32Array.from({ length: B }, (_, i) => (i * 7 + 3) % CLASSES);
  // a thread's rows in blocks, as rows of its own views
  const blocksOf = (count: number): RowRange[] =>
    Array.from({ length: Math.ceil(count / ROW_BLOCK) }, (_, i) => ({ first: i * ROW_BLOCK, count: Math.min(ROW_BLOCK, count - i * ROW_BLOCK) }));

  const whole = buf.take(layout.size);
  const acts0 = activationViews(buf.take(activationElements(layout, B)), layout, B);
  acts0.h[0].set(x);
  const cols0 = buf.take(colsElements(layout));
  forward(k, net, acts0, layout, cols0, B);
  const total = backward(k, layerViews(whole, layout), net, acts0, layout, cols0, y, B, smoothing, 1 / B);

  let blockStats0: { lossSum: number; correct: number }[] = [];
  for (const active of [1, 2, 3, 5]) {
    const acts = activationViews(buf.take(activationElements(layout, B)), layout, B);
    acts.h[0].set(x);
    const grad = buf.take(layout.size);
    const cols = Array.from({ length: active }, () => buf.take(colsElements(layout)));
    const stats: { lossSum: number; correct: number }[] = [];
    for (let t = 0; t < active; t++) {
      const { first, count } = threadRows(B, active, t);
      if (count === 0) continue;
      const mine = rowsOf(acts, layout, first, count);
      forward(k, net, mine, layout, cols[t], count);
      stats.push(...backwardRows(k, net, mine, layout, cols[t], y.subarray(first, first + count), blocksOf(count),
        count, smoothing, 1 / B));
    }
    for (let t = 0; t < active; t++) {
      for (const part of ownedParts(layout, active, t)) weightGradient(k, layerViews(grad, layout), acts, layout, cols[t], part, B);
    }
    const what = `${k.name} ${JSON.stringify(spec)} smoothing ${smoothing} on ${active} threads`;
    expect(stats, what).toHaveLength(Math.ceil(B / ROW_BLOCK));
    if (active === 1) blockStats0 = stats;
    else expect(stats, `${what}: the blocks' losses`).toEqual(blockStats0);
    expect(stats.reduce((a, r) => a + r.correct, 0), what).toBe(total.correct);
    const diff = grad.findIndex((v, i) => !Object.is(v, whole[i]));
    expect(diff, `${what}: one thread ${whole[diff]}, split ${grad[diff]} at ${diff}`).toBe(-1);
  }
  // the comparison can fail: the gradient is not all zeros
  expect(whole.some((v) => v !== 0)).toBe(true);
}

const SPECS = [cnn([3, 5], [7]), cnn([4], [6, 5])];

describe('the step split among threads = backward() in one thread, bit for bit', () => {
  it.each(SPECS)('%o, the float64 reference (smoothing 0.1 and 0)', (spec) => {
    const rng = new Rng(31);
    const buf: Buffers = {
      take: (n) => new Float64Array(n).fill(NaN),
      random: (n) => randomArray(rng, n, -1, 1, Float64Array),
    };
    for (const smoothing of [0.1, 0]) splitAgainstWhole(k64, buf, spec, smoothing, false);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The fast families, on views of a shared WebAssembly.Memory like the arena.

const PAGES = 512; // 32 MiB
const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true });
const families = fastFamilies(memory, 41);
beforeAll(rebuildWasm);

/** err = max|ours − ref| / max|ref| over a tensor; NaN (never ≤ a bound) when either side is not finite. */
function relMaxErr(ours: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (ours.length !== expected.length) throw new Error(`length ${ours.length}, expected ${expected.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    if (!Number.isFinite(ours[i]) || !Number.isFinite(expected[i])) return NaN;
    diff = Math.max(diff, Math.abs(ours[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return scale > 0 ? diff / scale : diff === 0 ? 0 : Infinity;
}

// Tolerances on err = max|ours − ref| / max|ref| per tensor, the float32 family against the float64 reference
// run from the same float32 weights and images. u = 2⁻²⁴. The families sum each output in their own order
// (vector lanes, im2col blocks, fused multiply-adds): ~u·√K relative per sum of K terms (K up to 400 taps, 512
// head inputs, 8 images × 576 pixels for 0.weight's gradient), compounding over the layers. The same bounds as
// the mlp's against PyTorch (pytorch-oracle.test.ts): logits 4e-6, loss 2e-7, gradients 1e-5. Measured here
// (each test prints its line): logits ≤ 4.1e-7, loss ≤ 6.8e-9, gradients ≤ 7.4e-7, every family. A pool
// window whose two largest values lie within float32 rounding of each other could route its gradient to
// another element in float32 than in float64, a difference that is no error of the family: nearTies() checks
// that these images have none (windows of exactly equal values are left out: they lie on the blank background,
// where whichever element takes the gradient sees the same inputs).
const TOL = { logits: 4e-6, loss: 2e-7, grad: 1e-5 };

const B_REAL = 8;
let images: Uint8Array;
let labels: Int32Array;
beforeAll(async () => {
  const test = await loadSplit(mnistDir, 'test');
  images = test.images.subarray(0, B_REAL * 784);
  labels = Int32Array.from(test.labels.subarray(0, B_REAL));
});

for (const fam of families) {
  const title = fam.skip === null ? `${fam.title}: the whole cnn` : `${fam.title}: the whole cnn (SKIPPED: ${fam.skip})`;
  describe.skipIf(fam.skip !== null)(title, () => {
    let k: Kernels;
    const rng = new Rng(fam.seed);
    const arena = new Arena(memory, rng);
    beforeAll(async () => {
      k = await fam.load();
    });

    it(`forward + backward on ${B_REAL} MNIST images at the default sizes match the float64 reference`, () => {
      for (const [spec, smoothing] of [[cnn([...DEFAULT_CHANNELS], [...DEFAULT_CNN_HIDDEN]), 0.1], [cnn([5], [9, 7]), 0]] as const) {
        arena.reset();
        const layout = modelLayout(spec);
        const B = B_REAL;
        const params = arena.take(layout.size);
        initParams(params, layout, 42);
        const net = layerViewsWithTransposed(params, arena.take(layout.size), layout);
        syncTransposed(k, net, layout, 0, layout.size);
        const grads = arena.take(layout.size);
        const acts = activationViews(arena.take(activationElements(layout, B)), layout, B);
        const { mean, std } = DATASETS.mnist;
        const table = normalizationTable(mean, std);
        for (let i = 0; i < B * 784; i++) acts.h[0][i] = table[images[i]];
        const cols = arena.take(colsElements(layout));
        const logits = Float64Array.from(forward(k, net, acts, layout, cols, B));
        const stats = backward(k, layerViews(grads, layout), net, acts, layout, cols, labels, B, smoothing, 1 / B);
        arena.checkGuards(`${fam.title} ${JSON.stringify(spec)}`);

        const p64 = Float64Array.from(params);
        const g64 = new Float64Array(layout.size);
        const a64 = activationViews(new Float64Array(activationElements(layout, B)), layout, B);
        a64.h[0].set(acts.h[0]);
        const e = Float64Array.from(forward(k64, layerViews(p64, layout), a64, layout, new Float64Array(0), B));
        const near = nearTies(layout, a64, B);
        expect(near, 'a pool window of these images holds two maxima within float32 rounding: pick other images').toEqual([]);
        const es = backward(k64, layerViews(g64, layout), layerViews(p64, layout), a64, layout, new Float64Array(0), labels, B, smoothing, 1 / B);

        const errs: string[] = [];
        const failures: string[] = [];
        const compare = (name: string, ours: ArrayLike<number>, expected: ArrayLike<number>, tol: number) => {
          const err = relMaxErr(ours, expected);
          errs.push(`${name} ${err.toExponential(1)}`);
          if (!(err <= tol)) failures.push(`${name}: err ${err} > ${tol}`);
        };
        compare('logits', logits, e, TOL.logits);
        compare('loss', [stats.lossSum / B], [es.lossSum / B], TOL.loss);
        expect(stats.correct).toBe(es.correct);
        for (const [name, start, n] of tensors(layout)) {
          compare(name, grads.subarray(start, start + n), g64.subarray(start, start + n), TOL.grad);
        }
        console.log(`${fam.title} ${spec.kind} ${spec.channels.join(',')} / ${spec.hidden.join(',')}: ${errs.join(', ')}`);
        expect(failures, failures.join('; ')).toEqual([]);
        // the comparison can fail: one conv tap's gradient dropped moves 0.weight far past its tolerance
        const broken = Float64Array.from(grads.subarray(layout.conv[0].w, layout.conv[0].w + 25));
        broken[12] = 0;
        expect(relMaxErr(broken, g64.subarray(layout.conv[0].w, layout.conv[0].w + 25))).toBeGreaterThan(TOL.grad);
      }
    });

    it('evaluate() gives the logits\' softmax and counts the same images correct as forward + backward', () => {
      arena.reset();
      const layout = modelLayout(cnn([4, 6], [8]));
      const B = 5;
      const params = arena.take(layout.size);
      initParams(params, layout, 7);
      const net = layerViewsWithTransposed(params, arena.take(layout.size), layout);
      syncTransposed(k, net, layout, 0, layout.size);
      const acts = activationViews(arena.take(activationElements(layout, B)), layout, B);
      acts.h[0].set(arena.random(B * 784));
      const y = Int32Array.from([1, 2, 3, 4, 5]);
      const cols = arena.take(colsElements(layout));
      const r = evaluate(k, net, acts, layout, cols, y, B);
      const probs = Float64Array.from(acts.dh[acts.dh.length - 1].subarray(0, B * CLASSES));
      const logits = Float64Array.from(acts.h[acts.h.length - 1]);
      const e = new Float64Array(B * CLASSES);
      const loss = k64.crossEntropyForward(e, logits, y, B, CLASSES, 0);
      expectClose(probs, e, 1e-7, 1e-6, `${fam.title} evaluate probabilities`);
      expect(r.lossSum).toBeCloseTo(loss, 5);
      expect(r.correct).toBe(k64.countCorrect(logits, y, B, CLASSES));
      arena.checkGuards(`${fam.title} evaluate`);
    });

    it('the step split among 1, 2, 3 and 5 threads = backward() in one thread, bit for bit', () => {
      for (const spec of SPECS) {
        for (const smoothing of [0.1, 0]) {
          arena.reset();
          splitAgainstWhole(k, { take: (n) => arena.take(n), random: (n) => arena.random(n) }, spec, smoothing, true);
          arena.checkGuards(`${fam.title} split ${JSON.stringify(spec)}`);
        }
      }
    });
  });
}

/**
 * Pool windows (of either convolution) whose largest two values differ by less than float32 rounding of the
 * activations could route differently in float32 and float64; returns them as "conv i, window j".
 */
function nearTies(layout: Layout, acts: Activations, B: number): string[] {
  const out: string[] = [];
  layout.conv.forEach(({ OC, H, W }, i) => {
    const r = acts.h[2 * i + 1];
    const OH = H - ref.KS + 1;
    const OW = W - ref.KS + 1;
    for (let m = 0; m < B * OC; m++) {
      for (let y = 0; y + 1 < OH; y += 2) {
        for (let x = 0; x + 1 < OW; x += 2) {
          const at = m * OH * OW + y * OW + x;
          const v = [r[at], r[at + 1], r[at + OW], r[at + OW + 1]].sort((a, b) => b - a);
          if (v[0] > 0 && v[0] !== v[1] && v[0] - v[1] < 1e-5 * v[0]) out.push(`conv ${i}, map ${m}, (${y}, ${x}): ${v[0]} vs ${v[1]}`);
        }
      }
    }
  });
  return out.slice(0, 5);
}
