// Shared numeric checks for the tests. A check must be able to fail: NaN never matches anything (not even
// NaN), an infinity matches only the same infinity, and the tolerance is atol + rtol·|expected|.
import { Rng } from '../src/rng.js';

/**
 * Throws unless every |actual[i] − expected[i]| ≤ atol + rtol·|expected[i]| and the lengths agree. A non-finite
 * value on either side passes only when both sides are the identical infinity (NaN always fails). The message
 * names `what`, the first offending index, both values and the tolerance there.
 */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number,
                            what: string): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length}, expected ${expected.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const tol = atol + rtol * Math.abs(e);
    // Written so that NaN lands on the failing side; the finite test is explicit because
    // |finite − Inf| > Inf is false and would otherwise let an infinity through.
    const ok = Number.isFinite(a) && Number.isFinite(e)
      ? Math.abs(a - e) <= tol
      : a === e && !Number.isNaN(a);
    if (!ok) throw new Error(`${what}: index ${i}: actual ${a}, expected ${e}, |diff| ${Math.abs(a - e)} > tol ${tol}`);
  }
}

/** |a − n| / max(|a|, |n|); 0 when both are 0, NaN when either is NaN (so `< bound` fails). */
export function relErr(a: number, n: number): number {
  const m = Math.max(Math.abs(a), Math.abs(n));
  if (m === 0) return 0;
  return Math.abs(a - n) / m;
}

/** n values uniform in [lo, hi) from `rng`, in a fresh array of the given type. */
export function randomArray<T extends Float32Array | Float64Array>(rng: Rng, n: number, lo: number, hi: number,
                                                                  Ctor: new (n: number) => T): T {
  const out = new Ctor(n);
  for (let i = 0; i < n; i++) out[i] = rng.uniform(lo, hi);
  return out;
}

export interface GradCheckOptions {
  /** step; 1e-5 balances truncation (∝ h²) against rounding (∝ ε/h) in float64 */
  h?: number;
  /** largest relErr accepted */
  bound?: number;
  /**
   * Called right after each of the two evaluations, while the state f left behind is still there; returning
   * true means a ReLU kink was crossed (its mask differs from the unperturbed one), so the entry is skipped.
   */
  kinkCrossed?: () => boolean;
}

export interface GradCheckResult {
  /** entries compared (relErr, or the rounding floor for derivatives ~0) */
  checked: number;
  /** entries skipped because a ReLU kink lay between the two evaluations */
  skipped: number;
  /** checked entries whose derivative is ~0: below what the difference can resolve to relErr `bound` */
  nearZero: number;
  /** checked entries whose analytic gradient is not 0 (a check of only zeros proves little) */
  nonzero: number;
  /** largest relErr among the entries held to relErr */
  worst: number;
}

/**
 * Rounding floor of a centered difference, in units of ε·max|f±|/step. Measured worst cases in our tests are
 * about 6 of these units; 16 leaves a margin without hiding a wrong gradient (which is off by far more).
 */
const NOISE_UNITS = 16;

/**
 * Compares analytic[i] with the centered difference of the scalar f at x[i] for each i in `indices`
 * (float64 only: in float32 the rounding error of f swamps the difference). x[i] is perturbed in place and
 * restored. The test is relErr < bound, except where the derivative is ~0 in both: when
 * bound·max(|a|, |n|) is below the rounding floor of f(x+h) − f(x−h), relErr says nothing, so |a − n| must be
 * within that floor instead (counted as nearZero). Throws at the first failing entry (NaN always fails).
 */
export function gradCheck(what: string, x: Float64Array, analytic: ArrayLike<number>, f: () => number,
                          indices: Iterable<number>, opts: GradCheckOptions = {}): GradCheckResult {
  const h = opts.h ?? 1e-5;
  const bound = opts.bound ?? 1e-7;
  const r: GradCheckResult = { checked: 0, skipped: 0, nearZero: 0, nonzero: 0, worst: 0 };
  for (const i of indices) {
    const x0 = x[i];
    let crossed = false;
    x[i] = x0 + h;
    const xp = x[i];
    const fp = f();
    if (opts.kinkCrossed?.()) crossed = true;
    x[i] = x0 - h;
    const xm = x[i];
    const fm = f();
    if (opts.kinkCrossed?.()) crossed = true;
    x[i] = x0;
    if (crossed) {
      r.skipped++;
      continue;
    }
    // Divide by the step actually taken: x0 ± h is rounded, so xp − xm is not exactly 2h.
    const numeric = (fp - fm) / (xp - xm);
    const a = analytic[i];
    const err = relErr(a, numeric);
    const floor = NOISE_UNITS * Number.EPSILON * Math.max(Math.abs(fp), Math.abs(fm)) / (xp - xm);
    const nearZero = bound * Math.max(Math.abs(a), Math.abs(numeric)) < floor;
    const ok = nearZero ? Math.abs(a - numeric) <= floor : err < bound;
    if (!ok) {
      throw new Error(`${what}: index ${i}: analytic ${a}, numeric ${numeric}, relErr ${err} ≥ ${bound}` +
        (nearZero ? ` and |diff| ${Math.abs(a - numeric)} > rounding floor ${floor}` : ''));
    }
    if (nearZero) r.nearZero++;
    else r.worst = Math.max(r.worst, err);
    r.checked++;
    if (a !== 0) r.nonzero++;
  }
  return r;
}

/** 0, 1, ..., n−1 */
export function allIndices(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
