// Optimizers and learning-rate schedules, with PyTorch's documented semantics.
//
// Each worker owns a slice [start, end) of the flat parameter vector and updates it in place. Every rule is
// elementwise (no norms, no sums across elements), so the float32 result does not depend on how the vector
// is sliced among workers. The arithmetic is float32, as PyTorch's for float32 parameters: every constant is
// rounded to float32 once, and every operation's result is rounded to float32 (Math.fround; for +, −, ×, ÷
// and √ that gives exactly the float32 operation's bits), so the SIMD kernels of every family reproduce it
// bit for bit. Float32 division and square root are what let the step keep up with memory (float64 ones,
// used here before, made Adam the largest cost of a step after the matrix products).

export type OptimizerName = 'sgd' | 'adam' | 'adamw';

export interface OptimizerConfig {
  optimizer: OptimizerName;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

export type SgdParams = Pick<OptimizerConfig, 'momentum' | 'dampening' | 'nesterov' | 'weightDecay'>;
export type AdamParams = Pick<OptimizerConfig, 'beta1' | 'beta2' | 'eps' | 'weightDecay'>;

/** Number of float32 state arrays (each the size of the parameter vector) the optimizer needs: sgd with momentum 1, sgd without 0, adam/adamw 2. */
export function optimizerStateCount(cfg: OptimizerConfig): number {
  if (cfg.optimizer === 'sgd') return cfg.momentum !== 0 ? 1 : 0;
  return 2;
}

/** One update of param[start,end) in place. lr is this step's learning rate; t is the 1-based step count
 *  (Adam bias correction; SGD's first step initialises the momentum buffer with the gradient, as PyTorch). */
export function optimizerStep(cfg: OptimizerConfig, lr: number, t: number, param: Float32Array, grad: Float32Array,
                              state: Float32Array[], start: number, end: number): void {
  const need = optimizerStateCount(cfg);
  if (state.length < need) throw new Error(`optimizer '${cfg.optimizer}' needs ${need} state arrays, got ${state.length}`);
  if (cfg.optimizer === 'sgd') sgdStep(cfg, lr, t, param, need ? state[0] : null, grad, start, end);
  else adamStep(cfg, cfg.optimizer === 'adamw', lr, t, param, state[0], state[1], grad, start, end);
}

// torch.optim.SGD, per element i in [start, end), each operation rounded to float32:
//   g = grad + wd·p
//   if momentum μ ≠ 0:  buf = g on the first step (t = 1), else μ·buf + (1 − dampening)·g
//                       g = nesterov ? g + μ·buf : buf
//   p = p − lr·g
// param, buf (updated in place; null when μ = 0), grad (read only): all (N), only [start, end) touched.
export function sgdStep(o: SgdParams, lr: number, t: number, param: Float32Array, buf: Float32Array | null,
                        grad: Float32Array, start: number, end: number): void {
  const f = Math.fround;
  const lr32 = f(lr);
  const wd = f(o.weightDecay);
  const mu = f(o.momentum);
  if (mu === 0 || buf === null) {
    for (let i = start; i < end; i++) {
      const p = param[i];
      param[i] = f(p - f(lr32 * f(grad[i] + f(wd * p))));
    }
    return;
  }
  const damp = f(1 - o.dampening);
  const nesterov = o.nesterov;
  // PyTorch creates the buffer from the gradient on the first step, so whatever the buffer held is ignored.
  const first = t === 1;
  for (let i = start; i < end; i++) {
    const p = param[i];
    const g = f(grad[i] + f(wd * p));
    const b = first ? g : f(f(mu * buf[i]) + f(damp * g));
    buf[i] = b;
    param[i] = f(p - f(lr32 * (nesterov ? f(g + f(mu * b)) : b)));
  }
}

// torch.optim.Adam (decoupled = false: L2 decay added to the gradient) or torch.optim.AdamW (decoupled =
// true: p = p·(1 − lr·wd) before the Adam update). Per element, with t the 1-based step:
//   m = β1·m + (1 − β1)·g        v = β2·v + (1 − β2)·g·g
//   p = p·keep − (step · m) / (sqrt(v) / bc2 + eps)
// with step = lr / (1 − β1^t) and bc2 = sqrt(1 − β2^t) computed in float64 and rounded once, as PyTorch
// computes its Python-float scalars. param, m, v (updated in place), grad (read only): all (N), only
// [start, end) touched.
export function adamStep(o: AdamParams, decoupled: boolean, lr: number, t: number, param: Float32Array,
                         m: Float32Array, v: Float32Array, grad: Float32Array, start: number, end: number): void {
  const f = Math.fround;
  const b1 = f(o.beta1);
  const c1 = f(1 - o.beta1);
  const b2 = f(o.beta2);
  const c2 = f(1 - o.beta2);
  const eps = f(o.eps);
  // Exactly one of the two decays is active; the other is the identity (l2 = 0, keep = 1), so one loop serves both.
  const l2 = f(decoupled ? 0 : o.weightDecay);
  const keep = f(decoupled ? 1 - lr * o.weightDecay : 1);
  const step = f(lr / (1 - Math.pow(o.beta1, t)));
  const bc2 = f(Math.sqrt(1 - Math.pow(o.beta2, t)));
  for (let i = start; i < end; i++) {
    const p = param[i];
    const g = f(grad[i] + f(l2 * p));
    const mi = f(f(b1 * m[i]) + f(c1 * g));
    const vi = f(f(b2 * v[i]) + f(f(c2 * g) * g));
    m[i] = mi;
    v[i] = vi;
    param[i] = f(f(p * keep) - f(f(step * mi) / f(f(f(Math.sqrt(vi)) / bc2) + eps)));
  }
}

export type ScheduleName = 'none' | 'step' | 'cosine' | 'onecycle';

export interface ScheduleConfig {
  schedule: ScheduleName;
  lr: number;
  totalSteps: number;
  stepsPerEpoch: number;
  /** epochs between decays, for 'step' */
  stepSize: number;
  gamma: number;
  /** fraction of totalSteps: linear warmup for 'cosine', the rising phase (pct_start) for 'onecycle' */
  warmupPct: number;
  /** cosine floor */
  minLr: number;
  divFactor: number;
  finalDivFactor: number;
}

// PyTorch's cosine interpolation: `from` at pct = 0, `to` at pct = 1.
function cosAnneal(from: number, to: number, pct: number): number {
  return to + ((from - to) / 2) * (Math.cos(Math.PI * pct) + 1);
}

function clamp01(x: number): number {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}

/** Warmup length of the 'cosine' schedule in steps (rounded, so 0.29·100 is 29, not 28). */
export function warmupSteps(s: ScheduleConfig): number {
  return Math.round(s.warmupPct * s.totalSteps);
}

/** Learning rate used at 0-based global step `step` (the value PyTorch's scheduler would have set when that optimizer.step() runs). */
export function learningRate(s: ScheduleConfig, step: number): number {
  switch (s.schedule) {
    case 'none':
      return s.lr;
    case 'step': {
      // StepLR stepped once per epoch
      const epoch = Math.floor(step / s.stepsPerEpoch);
      return s.lr * Math.pow(s.gamma, Math.floor(epoch / s.stepSize));
    }
    case 'cosine': {
      // LinearLR(start_factor = 1/divFactor, total_iters = W) then CosineAnnealingLR(T_max = totalSteps − W,
      // eta_min = minLr), switched at step W (SequentialLR). Past totalSteps it stays at minLr instead of
      // rising again as PyTorch's closed form would.
      const W = warmupSteps(s);
      if (step < W) {
        const start = 1 / s.divFactor;
        return s.lr * (start + (1 - start) * (step / W));
      }
      const span = s.totalSteps - W;
      return cosAnneal(s.lr, s.minLr, span > 0 ? clamp01((step - W) / span) : 1);
    }
    case 'onecycle': {
      // OneCycleLR, two phases, anneal_strategy='cos'. Phase boundaries are floats, as in PyTorch:
      // phase 1 ends at pct_start·T − 1, phase 2 at T − 1.
      const initial = s.lr / s.divFactor;
      const min = initial / s.finalDivFactor;
      const up = s.warmupPct * s.totalSteps - 1;
      const last = s.totalSteps - 1;
      // PyTorch divides by zero when phase 1 ends at step 0; we treat an empty phase as already finished.
      if (step <= up) return cosAnneal(initial, s.lr, up > 0 ? step / up : 1);
      return cosAnneal(s.lr, min, last > up ? clamp01((step - up) / (last - up)) : 1);
    }
  }
}
