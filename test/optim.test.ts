// Optimizers and schedules against values worked out by hand (or in float64 from PyTorch's documented
// formulas, the working shown next to each number), plus slicing invariance and the checker itself.
import { describe, expect, it } from 'vitest';
import {
  adamStep, learningRate, optimizerStateCount, optimizerStep, sgdStep,
  type OptimizerConfig, type ScheduleConfig,
} from '../src/optim.js';
import { Rng } from '../src/rng.js';

// ---- the checker ---------------------------------------------------------------------------------------

/** |a − e| ≤ atol + rtol·|e|, and both finite: NaN and ±Infinity never pass. */
function close(a: number, e: number, atol: number, rtol: number): boolean {
  return Number.isFinite(a) && Number.isFinite(e) && Math.abs(a - e) <= atol + rtol * Math.abs(e);
}

function mismatches(actual: ArrayLike<number>, expected: readonly number[], atol: number, rtol: number): string[] {
  const bad: string[] = [];
  if (actual.length !== expected.length) bad.push(`length ${actual.length}, expected ${expected.length}`);
  for (let i = 0; i < Math.min(actual.length, expected.length); i++) {
    if (!close(actual[i], expected[i], atol, rtol)) bad.push(`[${i}] ${actual[i]} vs expected ${expected[i]}`);
  }
  return bad;
}

// The optimizers compute in float32, rounding after every operation (2^-24 ≈ 6e-8 relative each); the hand
// values are exact or float64. Over the handful of operations of three chained steps on values of size ~1
// that stays below 5e-7. A wrong formula moves these results by 1e-3 or more.
const ATOL = 5e-7;
const RTOL = 5e-7;

function expectClose(actual: ArrayLike<number>, expected: readonly number[], atol = ATOL, rtol = RTOL): void {
  expect(mismatches(actual, expected, atol, rtol)).toEqual([]);
}

describe('the checker', () => {
  it('passes the exact value and fails on a perturbed value, NaN and ±Infinity', () => {
    const ref = [0.5, -1.25, 3];
    expect(mismatches(new Float32Array(ref), ref, ATOL, RTOL)).toEqual([]);
    expect(mismatches([0.5, -1.25 + 1e-5, 3], ref, ATOL, RTOL)).toHaveLength(1);
    expect(mismatches([0.5, NaN, 3], ref, ATOL, RTOL)).toHaveLength(1);
    expect(mismatches([Infinity, -1.25, -Infinity], ref, ATOL, RTOL)).toHaveLength(2);
    expect(mismatches([0.5, -1.25], ref, ATOL, RTOL)).not.toEqual([]);
    expect(close(NaN, NaN, 1, 1)).toBe(false);
    expect(close(Infinity, Infinity, 1, 1)).toBe(false);
  });
});

// ---- optimizers ----------------------------------------------------------------------------------------

const BASE: OptimizerConfig = {
  optimizer: 'sgd', momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8,
};

/** Runs `grads.length` steps (t = 1, 2, …) on one parameter starting at p0; returns p after each step. */
function trace(cfg: OptimizerConfig, lr: number, p0: number, grads: number[]): number[] {
  const param = Float32Array.of(p0);
  const grad = new Float32Array(1);
  const state = Array.from({ length: optimizerStateCount(cfg) }, () => new Float32Array(1));
  const out: number[] = [];
  grads.forEach((g, k) => {
    grad[0] = g;
    optimizerStep(cfg, lr, k + 1, param, grad, state, 0, 1);
    expect(grad[0]).toBe(Math.fround(g)); // the gradient slot is read, never written
    out.push(param[0]);
  });
  return out;
}

describe('optimizerStateCount', () => {
  it('is 0 for plain sgd, 1 with momentum, 2 for adam and adamw', () => {
    expect(optimizerStateCount(BASE)).toBe(0);
    expect(optimizerStateCount({ ...BASE, momentum: 0.9 })).toBe(1);
    expect(optimizerStateCount({ ...BASE, optimizer: 'adam' })).toBe(2);
    expect(optimizerStateCount({ ...BASE, optimizer: 'adamw' })).toBe(2);
  });
});

// The SGD cases use dyadic numbers (halves, quarters), so every hand value below is exact in float32.
describe('sgd', () => {
  it('plain: p − lr·g', () => {
    const param = Float32Array.of(1, -2, 0.75);
    const grad = Float32Array.of(0.5, -0.25, 2);
    sgdStep(BASE, 0.5, 1, param, null, grad, 0, 3);
    // 1 − 0.5·0.5 = 0.75;  −2 − 0.5·(−0.25) = −1.875;  0.75 − 0.5·2 = −0.25
    expectClose(param, [0.75, -1.875, -0.25], 0, 0);
  });

  it('momentum: buf = g on step 1, then μ·buf + g', () => {
    // μ = 0.5, lr = 0.25, p0 = 1, g = 1, 2, −1
    // t1: buf = 1                      p = 1 − 0.25·1       = 0.75
    // t2: buf = 0.5·1 + 2   = 2.5      p = 0.75 − 0.25·2.5  = 0.125
    // t3: buf = 0.5·2.5 − 1 = 0.25     p = 0.125 − 0.25·0.25 = 0.0625
    expectClose(trace({ ...BASE, momentum: 0.5 }, 0.25, 1, [1, 2, -1]), [0.75, 0.125, 0.0625], 0, 0);
  });

  it('dampening: the first step is not dampened, later ones are', () => {
    // μ = 0.5, τ = 0.5, lr = 0.25, p0 = 1, g = 1, 2, −1
    // t1: buf = g = 1 (not (1−τ)·g)                p = 1 − 0.25·1      = 0.75
    // t2: buf = 0.5·1 + 0.5·2      = 1.5           p = 0.75 − 0.25·1.5 = 0.375
    // t3: buf = 0.5·1.5 + 0.5·(−1) = 0.25          p = 0.375 − 0.0625  = 0.3125
    expectClose(trace({ ...BASE, momentum: 0.5, dampening: 0.5 }, 0.25, 1, [1, 2, -1]), [0.75, 0.375, 0.3125], 0, 0);
  });

  it('nesterov: step along g + μ·buf', () => {
    // μ = 0.5, lr = 0.25, p0 = 1, g = 1, 2, −1
    // t1: buf = 1      d = 1 + 0.5·1     = 1.5     p = 1 − 0.375         = 0.625
    // t2: buf = 2.5    d = 2 + 0.5·2.5   = 3.25    p = 0.625 − 0.8125    = −0.1875
    // t3: buf = 0.25   d = −1 + 0.5·0.25 = −0.875  p = −0.1875 + 0.21875 = 0.03125
    expectClose(trace({ ...BASE, momentum: 0.5, nesterov: true }, 0.25, 1, [1, 2, -1]), [0.625, -0.1875, 0.03125], 0, 0);
  });

  it('weight decay: g + wd·p feeds the momentum buffer', () => {
    // wd = 0.5, μ = 0.5, lr = 0.25, p0 = 1, g = 1, 2, −1
    // t1: g = 1 + 0.5·1 = 1.5                          buf = 1.5        p = 1 − 0.375 = 0.625
    // t2: g = 2 + 0.5·0.625 = 2.3125                   buf = 0.75 + 2.3125 = 3.0625
    //                                                  p = 0.625 − 0.25·3.0625 = −0.140625
    // t3: g = −1 + 0.5·(−0.140625) = −1.0703125        buf = 1.53125 − 1.0703125 = 0.4609375
    //                                                  p = −0.140625 − 0.25·0.4609375 = −0.255859375
    expectClose(trace({ ...BASE, momentum: 0.5, weightDecay: 0.5 }, 0.25, 1, [1, 2, -1]),
      [0.625, -0.140625, -0.255859375], 0, 0);
  });

  it('ignores whatever the momentum buffer held before the first step', () => {
    const param = Float32Array.of(1);
    const buf = Float32Array.of(NaN);
    sgdStep({ ...BASE, momentum: 0.5 }, 0.25, 1, param, buf, Float32Array.of(1), 0, 1);
    expectClose(param, [0.75], 0, 0); // 1 − 0.25·1
    expectClose(buf, [1], 0, 0);
  });

  it('touches only [start, end)', () => {
    const param = Float32Array.of(1, 1, 1, 1);
    sgdStep(BASE, 0.5, 1, param, null, Float32Array.of(1, 1, 1, 1), 1, 3);
    expectClose(param, [1, 0.5, 0.5, 1], 0, 0);
  });
});

// Adam cases: β1 = 0.9, β2 = 0.999, lr = 0.1, p0 = 1, g = 1, −2, 0.5; worked in float64:
//   m = β1·m + (1−β1)·g   v = β2·v + (1−β2)·g²   bc1 = 1 − β1^t   bc2 = 1 − β2^t
//   p = p − lr·(m/bc1) / (sqrt(v)/sqrt(bc2) + eps)
describe('adam', () => {
  it('three steps with bias correction', () => {
    // t1: m = 0.1   v = 0.001      bc1 = 0.1   bc2 = 0.001     m̂ = 1   denom = 1 + 1e-8
    //     p = 1 − 0.1·1/(1 + 1e-8)                                              = 0.900000001
    // t2: m = 0.09 − 0.2 = −0.11   v = 0.000999 + 0.004 = 0.004999   bc1 = 0.19   bc2 = 0.001999
    //     m̂ = −0.578947368   denom = sqrt(0.004999/0.001999) + 1e-8 = 1.581376112
    //     p = 0.900000001 + 0.1·0.578947368/1.581376112                         = 0.936610353
    // t3: m = −0.099 + 0.05 = −0.049   v = 0.004994001 + 0.00025 = 0.005244001   bc1 = 0.271   bc2 = 0.002997001
    //     m̂ = −0.180811808   denom = sqrt(0.005244001/0.002997001) + 1e-8 = 1.322780982
    //     p = 0.936610353 + 0.1·0.180811808/1.322780982                         = 0.950279420
    expectClose(trace({ ...BASE, optimizer: 'adam' }, 0.1, 1, [1, -2, 0.5]),
      [0.900000001, 0.9366103535, 0.9502794197]);
  });

  it('L2 weight decay is added to the gradient; eps is added to sqrt(v̂)', () => {
    // wd = 0.1, eps = 0.1 (large, so that where eps goes shows in the result)
    // t1: g = 1 + 0.1·1 = 1.1   m = 0.11   v = 0.00121   m̂ = 1.1   denom = sqrt(1.21) + 0.1 = 1.2
    //     p = 1 − 0.1·1.1/1.2                                                   = 0.908333333
    // t2: g = −2 + 0.0908333 = −1.909166667   m = −0.091916667   v = 0.004853707
    //     m̂ = −0.091916667/0.19 = −0.483771930   denom = sqrt(0.004853707/0.001999) + 0.1 = 1.658225823
    //     p = 0.908333333 + 0.1·0.483771930/1.658225823                         = 0.937507401
    // t3: g = 0.5 + 0.0937507 = 0.593750740   m = −0.023349926   v = 0.005201394
    //     m̂ = −0.086162089   denom = sqrt(0.005201394/0.002997001) + 0.1 = 1.417396227
    //     p = 0.937507401 + 0.1·0.086162089/1.417396227                         = 0.943586301
    expectClose(trace({ ...BASE, optimizer: 'adam', weightDecay: 0.1, eps: 0.1 }, 0.1, 1, [1, -2, 0.5]),
      [0.9083333333, 0.9375074014, 0.9435863006]);
  });
});

describe('adamw', () => {
  it('decays the parameter by (1 − lr·wd) before the Adam update, leaving the moments alone', () => {
    // wd = 0.1: each step first multiplies p by 1 − 0.1·0.1 = 0.99; m, v, m̂, denom are those of plain Adam above.
    // t1: p = 0.99·1 − 0.1·1/(1 + 1e-8)                      = 0.890000001
    // t2: p = 0.99·0.890000001 + 0.1·0.578947368/1.581376112 = 0.881100001 + 0.036610353 = 0.917710353
    // t3: p = 0.99·0.917710353 + 0.1·0.180811808/1.322780982 = 0.908533250 + 0.013669066 = 0.922202316
    expectClose(trace({ ...BASE, optimizer: 'adamw', weightDecay: 0.1 }, 0.1, 1, [1, -2, 0.5]),
      [0.890000001, 0.9177103535, 0.9222023161]);
  });

});

// ---- slicing invariance --------------------------------------------------------------------------------

describe('slicing', () => {
  const configs: OptimizerConfig[] = [
    BASE,
    { ...BASE, momentum: 0.9, dampening: 0.1, weightDecay: 5e-4 },
    { ...BASE, momentum: 0.9, nesterov: true, weightDecay: 5e-4 },
    { ...BASE, optimizer: 'adam', weightDecay: 1e-2 },
    { ...BASE, optimizer: 'adamw', weightDecay: 1e-2 },
  ];
  const N = 1001;

  /** Three steps where each step updates the slices given by `cuts` one after another; returns all arrays' bytes. */
  function run(cfg: OptimizerConfig, cuts: number[]): Uint8Array {
    const rng = new Rng(7);
    const param = new Float32Array(N).map(() => rng.uniform(-1, 1));
    const grad = new Float32Array(N);
    const state = Array.from({ length: optimizerStateCount(cfg) }, () => new Float32Array(N));
    const bounds = [0, ...cuts, N];
    for (let t = 1; t <= 3; t++) {
      for (let i = 0; i < N; i++) grad[i] = rng.uniform(-1, 1);
      for (let s = 0; s + 1 < bounds.length; s++) optimizerStep(cfg, 0.05, t, param, grad, state, bounds[s], bounds[s + 1]);
    }
    const all = new Float32Array(N * (1 + state.length));
    [param, ...state].forEach((a, k) => all.set(a, k * N));
    return new Uint8Array(all.buffer);
  }

  for (const cfg of configs) {
    it(`${cfg.optimizer} momentum=${cfg.momentum} nesterov=${cfg.nesterov}: [0,n) equals any split, byte for byte`, () => {
      const whole = run(cfg, []);
      expect(Buffer.compare(whole, run(cfg, [400]))).toBe(0);
      expect(Buffer.compare(whole, run(cfg, [1, 333, 1000]))).toBe(0);
    });
  }
});

// ---- schedules -----------------------------------------------------------------------------------------

const SCHED: ScheduleConfig = {
  schedule: 'none', lr: 0.1, totalSteps: 100, stepsPerEpoch: 10, stepSize: 2, gamma: 0.5, warmupPct: 0,
  minLr: 0, divFactor: 25, finalDivFactor: 1e4,
};

const lrs = (s: ScheduleConfig, steps: number[]): number[] => steps.map((k) => learningRate(s, k));
// Schedules are pure float64 arithmetic; the hand values are given to ~10 digits.
const SCHED_TOL = 1e-9;

describe('schedules', () => {
  it('none is constant', () => {
    expectClose(lrs(SCHED, [0, 57, 10_000]), [0.1, 0.1, 0.1], 0, 0);
  });

  it('step decays by gamma every stepSize epochs', () => {
    // 10 steps per epoch, stepSize 2 epochs: steps 0..19 are epochs 0–1 → 0.1; 20..39 → 0.05; 40.. → 0.025
    const s: ScheduleConfig = { ...SCHED, schedule: 'step' };
    expectClose(lrs(s, [0, 19, 20, 39, 40]), [0.1, 0.1, 0.05, 0.05, 0.025], 1e-15, 0);
  });

  it('cosine with linear warmup', () => {
    // lr = 1, T = 100, warmup W = 0.1·100 = 10 steps from lr/10 = 0.1, then cosine from 1 to minLr = 0.01 over 90 steps
    const s: ScheduleConfig = { ...SCHED, schedule: 'cosine', lr: 1, warmupPct: 0.1, divFactor: 10, minLr: 0.01 };
    // step 0: 0.1    step 5: 0.1 + 0.9·5/10 = 0.55    step 10: 1
    // step 55 (half of the cosine): 0.01 + 0.99·(cos(π/2) + 1)/2 = 0.505
    // step 99: 0.01 + 0.99·(cos(π·89/90) + 1)/2 = 0.01 + 0.99·sin²(π/180) = 0.0103015406
    // step 100: minLr = 0.01; beyond: stays 0.01
    expectClose(lrs(s, [0, 5, 10, 55, 99, 100, 150]), [0.1, 0.55, 1, 0.505, 0.0103015406, 0.01, 0.01], SCHED_TOL, 0);
  });

  it('cosine without warmup starts at lr', () => {
    // step 25 of 100: 0.01 + 0.99·(cos(π/4) + 1)/2 = 0.01 + 0.99·0.853553391 = 0.855017857
    const s: ScheduleConfig = { ...SCHED, schedule: 'cosine', lr: 1, minLr: 0.01 };
    expectClose(lrs(s, [0, 25, 50, 100]), [1, 0.855017857, 0.505, 0.01], SCHED_TOL, 0);
  });

  it('onecycle: initial, peak, half-way down, minimum', () => {
    // lr = 0.1, div 25 → initial 0.004; final div 1e4 → min 4e-7. T = 100, pct 0.3:
    // phase 1 ends at 0.3·100 − 1 = 29, phase 2 at 99; step 64 is half-way down: (0.1 + 4e-7)/2 = 0.0500002
    const s: ScheduleConfig = { ...SCHED, schedule: 'onecycle', warmupPct: 0.3 };
    expectClose(lrs(s, [0, 29, 64, 99]), [0.004, 0.1, 0.0500002, 4e-7], SCHED_TOL, 0);
  });

  it('onecycle keeps the fractional end of phase 1, as PyTorch does', () => {
    // T = 101, pct 0.2: phase 1 ends at 0.2·101 − 1 = 19.2 (not 19 or 20); phase 2 spans 19.2 → 100
    // cos(a, b, x) = b + (a − b)/2·(cos(πx) + 1)
    // step 10: cos(0.004, 0.1, 10/19.2)           = 0.0551393502
    // step 19: cos(0.004, 0.1, 19/19.2)           = 0.0999743002   (still rising)
    // step 20: cos(0.1, 4e-7, 0.8/80.8)           = 0.0999758142   (already falling)
    // step 100: 4e-7
    const s: ScheduleConfig = { ...SCHED, schedule: 'onecycle', totalSteps: 101, warmupPct: 0.2 };
    expectClose(lrs(s, [0, 10, 19, 20, 100]), [0.004, 0.0551393502, 0.0999743002, 0.0999758142, 4e-7], SCHED_TOL, 0);
  });
});
