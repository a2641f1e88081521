// The reference kernels: hand-worked values, float64 gradient checks, and the checker the tests rely on.
import { describe, expect, it } from 'vitest';
import {
  countCorrect, crossEntropyBackward, crossEntropyForward, linearBackward, linearForward, reluBackward, reluForward,
} from '../src/kernels/reference.js';
import { referenceKernels } from '../src/kernels/index.js';
import { Rng } from '../src/rng.js';
import { allIndices, expectClose, gradCheck, randomArray, relErr } from './check.js';

const f64 = (xs: number[]) => Float64Array.from(xs);
const f32 = (xs: number[]) => Float32Array.from(xs);
const nans = (n: number) => new Float64Array(n).fill(NaN); // outputs start as NaN: every kernel must overwrite
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

describe('the checker', () => {
  it('accepts values within atol + rtol·|expected| and the identical infinity', () => {
    expectClose([1, 2.0000001, -Infinity, Infinity], [1, 2, -Infinity, Infinity], 0, 1e-6, 'ok');
    expectClose([0.5e-9], [0], 1e-9, 0, 'atol only');
  });

  it('throws on a perturbed value, naming the index, both values and the tolerance', () => {
    expect(() => expectClose([1, 2, 3.00001], [1, 2, 3], 1e-6, 1e-6, 'perturbed'))
      .toThrow(/perturbed: index 2: actual 3\.00001, expected 3, .*> tol 0\.000004/);
  });

  it('throws on NaN on either side, and on NaN against NaN', () => {
    expect(() => expectClose([NaN], [1], 1, 1, 'nan')).toThrow(/nan: index 0/);
    expect(() => expectClose([1], [NaN], 1, 1, 'nan')).toThrow(/index 0/);
    expect(() => expectClose([NaN], [NaN], 1, 1, 'nan')).toThrow(/index 0/);
  });

  it('throws on an infinity against a finite value or the other infinity', () => {
    expect(() => expectClose([Infinity], [1e308], 1, 1, 'inf')).toThrow(/index 0/);
    expect(() => expectClose([5], [-Infinity], 1, 1, 'inf')).toThrow(/index 0/);
    expect(() => expectClose([Infinity], [-Infinity], 1, 1, 'inf')).toThrow(/index 0/);
    expect(() => expectClose([NaN], [Infinity], 1, 1, 'inf')).toThrow(/index 0/);
  });

  it('throws on a length mismatch', () => {
    expect(() => expectClose([1, 2], [1], 1, 1, 'len')).toThrow(/length/);
  });

  it('relErr is symmetric, 0 for two zeros and NaN (never below a bound) for NaN', () => {
    expect(relErr(0, 0)).toBe(0);
    expect(relErr(1, 1.5)).toBeCloseTo(1 / 3, 15);
    expect(relErr(1.5, 1)).toBe(relErr(1, 1.5));
    expect(relErr(0, 1e-30)).toBe(1);
    expect(relErr(NaN, 1) < 1).toBe(false);
  });

  it('randomArray fills the requested type within [lo, hi)', () => {
    const a = randomArray(new Rng(1), 1000, -2, 3, Float32Array);
    expect(a).toBeInstanceOf(Float32Array);
    expect(Math.min(...a)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...a)).toBeLessThan(3);
    expect(new Set(a).size).toBeGreaterThan(990);
  });

  it('gradCheck fails on a wrong gradient', () => {
    const x = f64([0.3, -0.7]);
    const f = () => x[0] * x[0] + 3 * x[1];
    expect(gradCheck('right', x, [0.6, 3], f, [0, 1]).checked).toBe(2);
    expect(() => gradCheck('wrong', x, [0.6, 3 * (1 + 1e-6)], f, [0, 1])).toThrow(/wrong: index 1/);
    expect(() => gradCheck('nan', x, [NaN, 3], f, [0, 1])).toThrow(/nan: index 0/);
  });

  it('gradCheck holds derivatives ~0 to the rounding floor, and skips entries whose kink check fires', () => {
    const x = f64([0.5, 2]);
    const f = () => 1e-12 * x[0] + x[1] * x[1]; // ∂f/∂x0 = 1e-12: relErr of the difference is meaningless
    const r = gradCheck('tiny', x, [1e-12, 4], f, [0, 1]);
    expect([r.checked, r.nearZero]).toEqual([2, 1]);
    expect(() => gradCheck('tiny', x, [1e-6, 4], f, [0, 1])).toThrow(/tiny: index 0: .*rounding floor/);
    const y = f64([0, 1]);
    const kink = () => Math.max(y[0], 0) + y[1];
    const s = gradCheck('kink', y, [0, 1], kink, [0, 1], { kinkCrossed: () => y[0] !== 0 });
    expect([s.checked, s.skipped]).toEqual([1, 1]);
  });
});

describe('hand values', () => {
  // A 2×3 linear layer (C = 3 in, OC = 2 out) on B = 2 rows, worked on paper:
  //   inp = [ 1  2  3 ]    weight = [ 1  0  -1  ]    bias = [ 0.5  -1 ]
  //         [-1  0  2 ]             [ 2  1  0.5 ]
  //   out[0] = [ 1 + 0 − 3 + 0.5,    2 + 2 + 1.5 − 1 ] = [ −1.5,  4.5 ]
  //   out[1] = [ −1 + 0 − 2 + 0.5,  −2 + 0 + 1 − 1   ] = [ −2.5, −2   ]
  // Backward with dout = [ 1  2 ]
  //                      [ 0 −1 ]:
  //   dweight = doutᵀ·inp:  row 0 = 1·[1 2 3] + 0·[−1 0 2]  = [1 2 3]
  //                         row 1 = 2·[1 2 3] − 1·[−1 0 2]  = [3 4 4]
  //   dbias   = column sums of dout = [1 1]
  //   dinp    = dout·weight: row 0 = 1·[1 0 −1] + 2·[2 1 0.5] = [5 2 0]
  //                          row 1 = 0·[1 0 −1] − 1·[2 1 0.5] = [−2 −1 −0.5]
  // Every number is exact in float32, so the comparisons are exact.
  const inp = [1, 2, 3, -1, 0, 2];
  const weight = [1, 0, -1, 2, 1, 0.5];
  const bias = [0.5, -1];
  const dout = [1, 2, 0, -1];

  for (const [name, make] of [['float32', f32], ['float64', f64]] as const) {
    it(`linearForward / linearBackward on the 2×3 layer (${name})`, () => {
      const out = make(new Array(4).fill(NaN));
      linearForward(out, make(inp), make(weight), make(bias), 2, 3, 2);
      expectClose(out, [-1.5, 4.5, -2.5, -2], 0, 0, 'out');

      const dinp = make(new Array(6).fill(NaN));
      const dweight = make(new Array(6).fill(NaN));
      const dbias = make(new Array(2).fill(NaN));
      linearBackward(dinp, dweight, dbias, make(dout), make(inp), make(weight), 2, 3, 2);
      expectClose(dweight, [1, 2, 3, 3, 4, 4], 0, 0, 'dweight');
      expectClose(dbias, [1, 1], 0, 0, 'dbias');
      expectClose(dinp, [5, 2, 0, -2, -1, -0.5], 0, 0, 'dinp');

      // dinp = null skips the input gradient and leaves the others the same
      dweight.fill(NaN);
      dbias.fill(NaN);
      linearBackward(null, dweight, dbias, make(dout), make(inp), make(weight), 2, 3, 2);
      expectClose(dweight, [1, 2, 3, 3, 4, 4], 0, 0, 'dweight (dinp null)');
      expectClose(dbias, [1, 1], 0, 0, 'dbias (dinp null)');

      // linearReluForward: the same layer with the negatives clipped
      const outRelu = make(new Array(4).fill(NaN));
      referenceKernels.linearReluForward(outRelu, make(inp), make(weight), make(bias), 2, 3, 2);
      expectClose(outRelu, [0, 4.5, 0, 0], 0, 0, 'linearReluForward');
    });
  }

  it('ReLU on [1, −2, 0, 3]: forward [1, 0, 0, 3], backward passes only where the output is positive', () => {
    const x = f64([1, -2, 0, 3]);
    const out = nans(4);
    reluForward(out, x, 4);
    expectClose(out, [1, 0, 0, 3], 0, 0, 'relu forward');
    const dinp = nans(4);
    reluBackward(dinp, f64([10, 20, 30, 40]), out, 4);
    expectClose(dinp, [10, 0, 0, 40], 0, 0, 'relu backward (gradient at 0 is 0)');
    // in place, as mlp.ts uses them
    reluForward(x, x, 4);
    expectClose(x, [1, 0, 0, 3], 0, 0, 'relu forward in place');
    const g = f64([10, 20, 30, 40]);
    reluBackward(g, g, x, 4);
    expectClose(g, [10, 0, 0, 40], 0, 0, 'relu backward in place');
  });

  // Row 0: logits [0, ln 2, ln 3, ln 4] → exp = [1, 2, 3, 4], softmax p = [0.1, 0.2, 0.3, 0.4]; target 2.
  //   ε = 0:   loss = −ln 0.3 = 1.2039728043259361;  dlogits = p − onehot = [0.1, 0.2, −0.7, 0.4]
  //   ε = 0.1: q = 0.9·onehot + 0.1/4 = [0.025, 0.025, 0.925, 0.025]
  //            loss = −0.9·ln 0.3 − 0.025·(ln 0.1 + ln 0.2 + ln 0.3 + ln 0.4) = 1.2343826874340484
  //            dlogits = p − q = [0.075, 0.175, −0.625, 0.375]
  // Row 1: logits [5, 5, 5, 5] → p = 0.25 each, target 0; loss = ln 4 for any ε (q sums to 1, log p constant)
  //   ε = 0:   dlogits = [−0.75, 0.25, 0.25, 0.25];   ε = 0.1: q = [0.925, 0.025, 0.025, 0.025],
  //            dlogits = [−0.675, 0.225, 0.225, 0.225]
  const ceLogits = [0, Math.LN2, Math.log(3), Math.log(4), 5, 5, 5, 5];
  const ceTargets = Int32Array.from([2, 0]);
  const ceProbs = [0.1, 0.2, 0.3, 0.4, 0.25, 0.25, 0.25, 0.25];

  it('cross-entropy without smoothing, worked by hand', () => {
    const probs = nans(8);
    const loss = crossEntropyForward(probs, f64(ceLogits), ceTargets, 2, 4, 0);
    expectClose(probs, ceProbs, 1e-15, 1e-14, 'probs');
    expectClose([loss], [1.2039728043259361 + 1.3862943611198906], 0, 1e-14, 'loss (sum over rows)');
    const d = nans(8);
    crossEntropyBackward(d, probs, ceTargets, 2, 4, 0, 0.5);
    expectClose(d, [0.05, 0.1, -0.35, 0.2, -0.375, 0.125, 0.125, 0.125], 1e-15, 1e-14, 'dlogits, scale 0.5');
  });

  it('cross-entropy with label smoothing 0.1, worked by hand', () => {
    const probs = nans(8);
    const loss = crossEntropyForward(probs, f64(ceLogits), ceTargets, 2, 4, 0.1);
    expectClose([loss], [1.2343826874340484 + 1.3862943611198906], 0, 1e-14, 'loss (sum over rows)');
    crossEntropyBackward(probs, probs, ceTargets, 2, 4, 0.1, 1); // in place, as mlp.ts uses it
    expectClose(probs, [0.075, 0.175, -0.625, 0.375, -0.675, 0.225, 0.225, 0.225], 1e-15, 1e-14, 'dlogits');
  });

  it('cross-entropy does not overflow on logits of ±1000', () => {
    for (const make of [f32, f64]) {
      const probs = make(new Array(8).fill(NaN));
      const logits = make([1000, -1000, 0, 1000, -1000, -1000, -1000, -1000]);
      const loss = crossEntropyForward(probs, logits, Int32Array.from([0, 3]), 2, 4, 0.1);
      expect(Number.isFinite(loss)).toBe(true);
      // row 0: p = [0.5, 0, 0, 0.5]; row 1: p = 0.25 each
      expectClose(probs, [0.5, 0, 0, 0.5, 0.25, 0.25, 0.25, 0.25], 1e-7, 0, 'probs at ±1000');
      expectClose([probs[0] + probs[1] + probs[2] + probs[3], probs[4] + probs[5] + probs[6] + probs[7]], [1, 1],
        1e-6, 0, 'rows sum to 1');
      const plain = crossEntropyForward(probs, logits, Int32Array.from([0, 3]), 2, 4, 0);
      expectClose([plain], [Math.LN2 + Math.log(4)], 1e-6, 0, 'loss ln 2 + ln 4');
    }
  });

  it('countCorrect takes the lowest index on ties', () => {
    const logits = f64([1, 3, 3, 0, 1, 3, 3, 0, 2, 2, 2, 2, -1, -5, 7, 7]);
    expect(countCorrect(logits, Uint8Array.from([1, 2, 0, 2]), 4, 4)).toBe(3); // row 1 picks 1, not 2
    expect(countCorrect(logits, Uint8Array.from([2, 1, 3, 3]), 4, 4)).toBe(1);
    expect(countCorrect(logits, Uint8Array.from([0, 0, 1, 3]), 4, 4)).toBe(0);
  });
});

describe('float64 gradient checks (centered differences, h = 1e-5, relErr < 1e-7)', () => {
  const B = 3, C = 5, OC = 4, V = 6;

  it('linearForward w.r.t. inp, weight and bias, against linearBackward', () => {
    const rng = new Rng(11);
    const inp = randomArray(rng, B * C, -1, 1, Float64Array);
    const weight = randomArray(rng, OC * C, -1, 1, Float64Array);
    const bias = randomArray(rng, OC, -1, 1, Float64Array);
    const G = randomArray(rng, B * OC, -1, 1, Float64Array); // objective Σ out·G: every output matters
    const out = new Float64Array(B * OC);
    const f = () => {
      linearForward(out, inp, weight, bias, B, C, OC);
      return dot(out, G);
    };
    const dinp = nans(B * C), dweight = nans(OC * C), dbias = nans(OC);
    linearBackward(dinp, dweight, dbias, G, inp, weight, B, C, OC);
    // Each check covers every entry; the objective is linear in each, so no kink or skip applies.
    expect(gradCheck('dinp', inp, dinp, f, allIndices(B * C)).checked).toBe(B * C);
    expect(gradCheck('dweight', weight, dweight, f, allIndices(OC * C)).checked).toBe(OC * C);
    expect(gradCheck('dbias', bias, dbias, f, allIndices(OC)).checked).toBe(OC);
  });

  it('reluBackward, skipping inputs within ±h of the kink', () => {
    const n = 40;
    const rng = new Rng(12);
    const x = randomArray(rng, n, -1, 1, Float64Array);
    const G = randomArray(rng, n, -1, 1, Float64Array);
    const out = new Float64Array(n);
    const f = () => {
      reluForward(out, x, n);
      return dot(out, G);
    };
    f();
    const dinp = nans(n);
    reluBackward(dinp, G, out, n);
    // Negative entries have derivative exactly 0 on both sides (relErr 0); only |x| < 2h is skipped.
    const away = allIndices(n).filter((i) => Math.abs(x[i]) > 2e-5);
    expect(away.length).toBeGreaterThan(n - 2);
    expect(gradCheck('relu dinp', x, dinp, f, away).checked).toBe(away.length);
  });

  for (const smoothing of [0, 0.1]) {
    it(`crossEntropy w.r.t. logits, smoothing ${smoothing}, scale 1/7`, () => {
      const rng = new Rng(13 + smoothing * 10);
      const logits = randomArray(rng, B * V, -3, 3, Float64Array);
      const targets = Int32Array.from({ length: B }, () => rng.int(V));
      const scale = 1 / 7;
      const scratch = new Float64Array(B * V);
      const f = () => scale * crossEntropyForward(scratch, logits, targets, B, V, smoothing);
      const probs = new Float64Array(B * V);
      crossEntropyForward(probs, logits, targets, B, V, smoothing);
      const dlogits = nans(B * V);
      crossEntropyBackward(dlogits, probs, targets, B, V, smoothing, scale);
      expect(gradCheck('dlogits', logits, dlogits, f, allIndices(B * V)).checked).toBe(B * V);
    });
  }

  it('linearReluForward (referenceKernels) w.r.t. inp, weight and bias, skipping ReLU flips', () => {
    const k = referenceKernels;
    const rng = new Rng(14);
    const inp = randomArray(rng, B * C, -1, 1, Float64Array);
    const weight = randomArray(rng, OC * C, -1, 1, Float64Array);
    const bias = randomArray(rng, OC, -1, 1, Float64Array);
    const G = randomArray(rng, B * OC, -1, 1, Float64Array);
    const out = new Float64Array(B * OC);
    const f = () => {
      k.linearReluForward(out, inp, weight, bias, B, C, OC);
      return dot(out, G);
    };
    f();
    const mask = out.map((v) => (v > 0 ? 1 : 0));
    expect(mask.some((m) => m === 1) && mask.some((m) => m === 0)).toBe(true); // both sides of the kink occur
    const dpre = nans(B * OC);
    k.reluBackward(dpre, G, out, B * OC);
    const dinp = nans(B * C), dweight = nans(OC * C), dbias = nans(OC);
    k.linearBackward(dinp, dweight, dbias, dpre, inp, weight, B, C, OC);
    const kinkCrossed = () => out.some((v, i) => (v > 0 ? 1 : 0) !== mask[i]);
    for (const [what, x, g] of [['dinp', inp, dinp], ['dweight', weight, dweight], ['dbias', bias, dbias]] as const) {
      const r = gradCheck(what, x, g, f, allIndices(x.length), { kinkCrossed });
      expect(r.checked).toBeGreaterThan(0.9 * x.length);
    }
  });
});
