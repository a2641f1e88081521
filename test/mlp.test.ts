// The whole net (src/mlp.ts over the reference kernels): float64 gradient checks of every w[l] and b[l],
// the initial loss, overfitting a tiny subset, and the properties the data-parallel step relies on:
// gradients of row subsets with scale 1/B sum to the gradient of the whole batch, and the step split among
// threads (rows, then outputs: partition.ts) gives the bits of the whole backward pass in one thread.
import { describe, expect, it } from 'vitest';
import { referenceKernels as k } from '../src/kernels/index.js';
import type { F, Labels } from '../src/kernels/index.js';
import { activationElements, activationViews, layerViews, mlpBackward, mlpForward, rowsOf } from '../src/mlp.js';
import { backwardRows, evaluate, weightGradient } from '../src/network.js';
import { ownedParts, ROW_BLOCK, threadRows } from '../src/partition.js';
import { CLASSES, DEFAULT_HIDDEN, INPUT, initParams, paramLayout, widths } from '../src/model.js';
import type { Layout } from '../src/model.js';
import { Rng } from '../src/rng.js';
import { expectClose, gradCheck, randomArray } from './check.js';

/**
 * A net with PyTorch-style init (every bias raised by `biasShift`), a gradient buffer, and activations for B rows
 * of zero-mean, unit-variance input.
 */
function makeNet<T extends Float32Array | Float64Array>(layers: number[], B: number, seed: number,
                                                        Arr: new (n: number) => T, biasShift = 0) {
  const layout = paramLayout(layers);
  const params = new Arr(layout.size);
  initParams(params, layout, seed);
  for (const { b, OC } of layout.linear) for (let i = 0; i < OC; i++) params[b + i] += biasShift;
  const grads = new Arr(layout.size).fill(NaN); // mlpBackward must overwrite every slot
  const acts = activationViews(new Arr(activationElements(layout, B)), layout, B);
  const rng = new Rng(seed + 1000);
  // Uniform on ±√3 has mean 0 and variance 1, like MNIST after its (x − 0.1307) / 0.3081 normalization.
  acts.h[0].set(randomArray(rng, B * layers[0], -Math.sqrt(3), Math.sqrt(3), Arr));
  const targets = Uint8Array.from({ length: B }, () => rng.int(layers[layers.length - 1]));
  return { layout, params, grads, net: layerViews(params, layout), grad: layerViews(grads, layout), acts, targets };
}

/** Indices in [start, start + n): all of them, or `count` of them at random (both ends always included). */
function sample(start: number, n: number, count: number, rng: Rng): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => start + i);
  const picked = new Set([start, start + n - 1]);
  while (picked.size < count) picked.add(start + rng.int(n));
  return [...picked];
}

/**
 * Checks mlpBackward's gradient of scale · Σ_rows loss against centered differences of the same objective,
 * for `perTensor` entries of every w[l] and b[l]. An entry is skipped when either ±h evaluation changes the
 * ReLU mask of any hidden activation (the objective has a kink between the two points there).
 * Biases start 1 higher than PyTorch's init: in nets this narrow many hidden units are otherwise dead on
 * every row, and their weights' gradients are exactly 0, which a check cannot tell from a missing gradient.
 */
function checkNet(layers: number[], B: number, seed: number, smoothing: number, perTensor: number): void {
  const { layout, params, grads, net, grad, acts, targets } = makeNet(layers, B, seed, Float64Array, 1);
  const L = layout.linear.length;
  const V = layers[L];
  const scale = 1 / B;
  mlpForward(k, net, acts, layout, B);
  const masks = acts.h.slice(1, L).map((h) => h.map((v) => (v > 0 ? 1 : 0)));
  const { lossSum } = mlpBackward(k, grad, net, acts, layout, targets, B, smoothing, scale);
  expect(Number.isFinite(lossSum)).toBe(true);
  expect(grads.every(Number.isFinite), 'every gradient slot overwritten (it started as NaN)').toBe(true);

  const probs = new Float64Array(B * V);
  const f = () => scale * k.crossEntropyForward(probs, mlpForward(k, net, acts, layout, B), targets, B, V, smoothing);
  expect(f()).toBeCloseTo(scale * lossSum, 14);
  const kinkCrossed = () => masks.some((m, i) => m.some((bit, j) => (acts.h[i + 1][j] > 0 ? 1 : 0) !== bit));

  const rng = new Rng(seed + 7);
  for (let l = 0; l < L; l++) {
    const { C, OC, w, b } = layout.linear[l];
    for (const [what, start, n] of [[`w[${l}]`, w, OC * C], [`b[${l}]`, b, OC]] as const) {
      const idx = sample(start, n, perTensor, rng);
      const r = gradCheck(`${layers.join('-')} ${what}`, params, grads, f, idx, { kinkCrossed });
      // Most entries must really be held to relErr, not skipped at a kink nor ~0 (a dead unit passes trivially).
      expect(r.checked - r.nearZero, `${what}: ${r.skipped} skipped, ${r.nearZero} ~0`)
        .toBeGreaterThanOrEqual(0.6 * idx.length);
    }
  }
}

describe('whole-net float64 gradient check (h = 1e-5, relErr < 1e-7)', () => {
  it('layers 7-5-6-4, every entry, label smoothing 0.1', () => {
    checkNet([7, 5, 6, 4], 6, 21, 0.1, Infinity);
  });

  it('layers 784-6-5-10 (the real input), 40 entries per tensor, no smoothing', () => {
    checkNet([INPUT, 6, 5, CLASSES], 4, 22, 0, 40);
  });
});

describe('sanity', () => {
  it('the initial loss on the real widths is ≈ ln 10', () => {
    const B = 64;
    const { layout, net, acts, targets } = makeNet(widths(DEFAULT_HIDDEN), B, 31, Float32Array);
    const { lossSum, correct } = evaluate(k, net, acts, layout, new Float32Array(0), targets, B);
    expect(Math.abs(lossSum / B - Math.LN10)).toBeLessThan(0.1);
    expect(correct).toBeLessThan(B / 2);
  });

  it('plain SGD overfits 32 random samples to loss < 0.01 (float32)', () => {
    // Hidden widths smaller than the real ones keep this under a few seconds with the plain kernels.
    const B = 32;
    const { layout, params, grads, net, grad, acts, targets } = makeNet(widths([64, 32]), B, 41, Float32Array);
    const lr = 0.1;
    let loss = Infinity;
    let correct = 0;
    let step = 0;
    for (; step < 300; step++) {
      mlpForward(k, net, acts, layout, B);
      const stats = mlpBackward(k, grad, net, acts, layout, targets, B, 0, 1 / B);
      loss = stats.lossSum / B;
      correct = stats.correct;
      if (loss < 0.01) break;
      for (let i = 0; i < layout.size; i++) params[i] -= lr * grads[i];
    }
    expect(loss, `loss after ${step} steps`).toBeLessThan(0.01);
    expect(correct).toBe(B);
  });
});

describe('rows and outputs split among threads', () => {
  /** Gradient, loss sum and correct count of rows [r0, r0 + rows) of `x`, with the given scale. */
  function rowsGrad(layout: Layout, params: Float64Array, x: F, targets: Labels, r0: number, rows: number,
                     scale: number) {
    const C = layout.layers[0];
    const grads = new Float64Array(layout.size).fill(NaN);
    const acts = activationViews(new Float64Array(activationElements(layout, rows)), layout, rows);
    acts.h[0].set(x.subarray(r0 * C, (r0 + rows) * C));
    const net = layerViews(params, layout);
    mlpForward(k, net, acts, layout, rows);
    const stats = mlpBackward(k, layerViews(grads, layout), net, acts, layout, targets.subarray(r0, r0 + rows),
      rows, 0.1, scale);
    return { grads, ...stats };
  }

  it('the gradient of B rows with scale 1/B equals the sum of its two halves\' with scale 1/B', () => {
    const B = 6;
    const { layout, params, acts, targets } = makeNet([7, 5, 6, 4], B, 51, Float64Array);
    const x = acts.h[0];
    const whole = rowsGrad(layout, params, x, targets, 0, B, 1 / B);
    const a = rowsGrad(layout, params, x, targets, 0, 3, 1 / B);
    const b = rowsGrad(layout, params, x, targets, 3, 3, 1 / B);
    const sum = a.grads.map((g, i) => g + b.grads[i]);
    // Only the order of the row sums differs (one pass over 6 rows vs 3 + 3): a few ulps.
    expectClose(sum, whole.grads, 1e-15, 1e-12, 'Σ half gradients');
    expect(whole.grads.some((g) => g !== 0)).toBe(true);
    expectClose([a.lossSum + b.lossSum], [whole.lossSum], 0, 1e-14, 'Σ half losses');
    expect(a.correct + b.correct).toBe(whole.correct);
  });

  it('rows split in blocks among 1, 2, 3 and 5 threads, outputs among the same: the bits of one thread', () => {
    // 21 rows: blocks of 8, 8 and 5; widths of 7, 37 and 18 outputs split unevenly, 10 classes
    const B = 21;
    const { layout, params, acts, targets } = makeNet([20, 37, 18, 10], B, 61, Float64Array);
    const net = layerViews(params, layout);
    const whole = new Float64Array(layout.size).fill(NaN);
    mlpForward(k, net, acts, layout, B);
    const total = mlpBackward(k, layerViews(whole, layout), net, acts, layout, targets, B, 0.1, 1 / B);
    for (const active of [1, 2, 3, 5]) {
      const split = activationViews(new Float64Array(activationElements(layout, B)), layout, B);
      split.h[0].set(acts.h[0]);
      const grad = new Float64Array(layout.size).fill(NaN);
      let correct = 0;
      for (let t = 0; t < active; t++) {
        const { first, count } = threadRows(B, active, t);
        if (count === 0) continue;
        const mine = rowsOf(split, layout, first, count);
        mlpForward(k, net, mine, layout, count);
        const blocks = Array.from({ length: Math.ceil(count / ROW_BLOCK) },
          (_, i) => ({ first: i * ROW_BLOCK, count: Math.min(ROW_BLOCK, count - i * ROW_BLOCK) }));
        for (const r of backwardRows(k, net, mine, layout, null as unknown as F, targets.subarray(first, first + count), blocks,
          count, 0.1, 1 / B)) correct += r.correct;
      }
      for (let t = 0; t < active; t++) {
        for (const part of ownedParts(layout, active, t)) weightGradient(k, layerViews(grad, layout), split, layout, null as unknown as F, part, B);
      }
      expect(correct, `${active} threads`).toBe(total.correct);
      const diff = grad.findIndex((v, i) => !Object.is(v, whole[i]));
      expect(diff, `${active} threads: one thread ${whole[diff]}, split ${grad[diff]} at ${diff}`).toBe(-1);
    }
    expect(whole.some((g) => g !== 0)).toBe(true);
  });
});
