// Convolution and max-pool kernels (issue 11): hand values and float64 gradient checks of the reference, a
// whole small convolutional net's gradient against finite differences built from the reference kernels
// alone, and every fast family against the reference (odd sizes and the real shapes, unaligned views,
// guard bands, each image's bits independent of the others in the call, the native glue's argument checks).
import { beforeAll, describe, expect, it } from 'vitest';
import * as ref from '../src/kernels/reference.js';
import { conv2dScratchLength, KK } from '../src/kernels/reference.js';
import { referenceKernels } from '../src/kernels/index.js';
import type { Kernels } from '../src/kernels/wasm.js';
import { loadNative, type NativeIsa } from '../src/kernels/native.js';
import { Rng } from '../src/rng.js';
import { Arena, fastFamilies, rebuildWasm } from './arena.js';
import { allIndices, expectClose, gradCheck, randomArray } from './check.js';

const f64 = (xs: ArrayLike<number>) => Float64Array.from(xs);
const nans = (n: number) => new Float64Array(n).fill(NaN); // outputs start as NaN: every kernel must overwrite
const NONE = new Float64Array(0); // the reference's unused scratch

/** Σ a[i]·b[i] */
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

/** Evenly spread indices of an n-element tensor, at most `count`, always including the first and last. */
function spread(n: number, count: number): number[] {
  if (n <= count) return allIndices(n);
  const out = new Set<number>();
  for (let i = 0; i < count; i++) out.add(Math.round((i * (n - 1)) / (count - 1)));
  return [...out];
}

describe('reference conv2d and max-pool: hand values', () => {
  it('a 1-channel 6×6 image through a 5×5 kernel, worked by hand', () => {
    // inp[y][x] = y·6 + x (0..35); weight: 1 at the centre (2,2), 2 at the top-left (0,0), 0 elsewhere; bias −1.
    //   out[y][x] = 1·inp[y+2][x+2] + 2·inp[y][x] − 1 = (y+2)·6 + x + 2 + 2·(6y + x) − 1 = 18y + 3x + 13
    //   → [[13, 16], [31, 34]]
    const inp = f64(Array.from({ length: 36 }, (_, i) => i));
    const w = new Float64Array(KK);
    w[12] = 1;
    w[0] = 2;
    const out = nans(4);
    ref.conv2dForward(out, inp, w, f64([-1]), NONE, 1, 1, 1, 6, 6);
    expectClose(out, [13, 16, 31, 34], 0, 0, 'conv out');
    // dout = [[1, 0], [0, −1]]: dbias = 0; dweight[i][j] = inp[i][j] − inp[1+i][1+j] = −7 for every tap;
    // dinp = 1·w placed at (0,0) − 1·w placed at (1,1): dinp[2][2] = 1, dinp[0][0] = 2, dinp[3][3] = −1,
    // dinp[1][1] = −2, zeros elsewhere.
    const dout = f64([1, 0, 0, -1]);
    const dinp = nans(36);
    const dw = nans(KK);
    const db = nans(1);
    ref.conv2dBackward(dinp, dw, db, dout, inp, w, NONE, 1, 1, 1, 6, 6);
    expectClose(db, [0], 0, 0, 'dbias');
    expectClose(dw, new Array(KK).fill(-7), 0, 0, 'dweight');
    const e = new Array(36).fill(0);
    e[0] = 2;
    e[2 * 6 + 2] = 1;
    e[1 * 6 + 1] = -2;
    e[3 * 6 + 3] = -1;
    expectClose(dinp, e, 0, 0, 'dinp');
    // dinp = null: the other two unchanged
    dw.fill(NaN);
    db.fill(NaN);
    ref.conv2dBackward(null, dw, db, dout, inp, w, NONE, 1, 1, 1, 6, 6);
    expectClose(dw, new Array(KK).fill(-7), 0, 0, 'dweight (dinp null)');
    // the fused ReLU clips the outputs of a negative bias
    const relu = nans(4);
    referenceKernels.conv2dReluForward(relu, inp, w, f64([-32]), NONE, 1, 1, 1, 6, 6);
    expectClose(relu, [0, 0, 0, 3], 0, 0, 'conv2dReluForward'); // [14, 17, 32, 35] − 32
  });

  it('max-pool 2×2: ties go to the first in (0,0), (0,1), (1,0), (1,1) order; an odd last row/column is dropped', () => {
    // one 3×5 map: windows over rows 0-1 and columns 0-1, 2-3; row 2 and column 4 are dropped
    const inp = f64([
      1, 5, 2, 2, 9,
      3, 4, 2, -1, 9,
      9, 9, 9, 9, 9,
    ]);
    const out = nans(2);
    ref.maxPoolForward(out, inp, 1, 1, 3, 5);
    expectClose(out, [5, 2], 0, 0, 'pool out');
    const dinp = nans(15);
    ref.maxPoolBackward(dinp, f64([10, 20]), inp, 1, 1, 3, 5);
    // the tie of 2s in the second window goes to (0,2), the first
    expectClose(dinp, [0, 10, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, 0, 'pool dinp');
  });

  it('max-pool keeps a NaN only in the first position, as `v > best` does', () => {
    const inp = f64([NaN, 1, 2, 3, /* second map */ 0, NaN, 5, 1]);
    const out = nans(2);
    ref.maxPoolForward(out, inp, 1, 2, 2, 2);
    expect(Number.isNaN(out[0])).toBe(true);
    expect(out[1]).toBe(5);
    const dinp = nans(8);
    ref.maxPoolBackward(dinp, f64([7, 8]), inp, 1, 2, 2, 2);
    expectClose(dinp, [7, 0, 0, 0, 0, 0, 8, 0], 0, 0, 'NaN routes to the first');
  });
});

describe('reference conv2d and max-pool: float64 gradient checks', () => {
  // f = Σ out·R for a fixed random R, so ∂f/∂out = R and the kernels' backward gives the analytic gradient.
  for (const [B, C, OC, H, W] of [[2, 3, 4, 7, 8], [1, 1, 2, 5, 5], [3, 2, 1, 9, 6]]) {
    it(`conv2d B=${B} C=${C} OC=${OC} ${H}×${W}: input, weight and bias gradients`, () => {
      const rng = new Rng(100 + B * 7 + C);
      const OH = H - 4;
      const OW = W - 4;
      const inp = randomArray(rng, B * C * H * W, -1, 1, Float64Array);
      const w = randomArray(rng, OC * C * KK, -0.5, 0.5, Float64Array);
      const bias = randomArray(rng, OC, -0.5, 0.5, Float64Array);
      const R = randomArray(rng, B * OC * OH * OW, -1, 1, Float64Array);
      const out = new Float64Array(B * OC * OH * OW);
      const f = () => {
        ref.conv2dForward(out, inp, w, bias, NONE, B, C, OC, H, W);
        return dot(out, R);
      };
      const dinp = nans(inp.length);
      const dw = nans(w.length);
      const db = nans(bias.length);
      ref.conv2dBackward(dinp, dw, db, R, inp, w, NONE, B, C, OC, H, W);
      for (const [name, x, g] of [['inp', inp, dinp], ['weight', w, dw], ['bias', bias, db]] as const) {
        const r = gradCheck(`conv2d d${name}`, x, g, f, allIndices(x.length));
        expect(r.nonzero, `${name}: a check of zeros proves little`).toBeGreaterThan(x.length / 2);
      }
    });
  }

  it('max-pool (odd sizes): the input gradient, skipping entries whose window maximum changes', () => {
    const rng = new Rng(7);
    const [B, C, H, W] = [2, 3, 7, 6];
    const PH = H >> 1;
    const PW = W >> 1;
    const inp = randomArray(rng, B * C * H * W, -1, 1, Float64Array);
    const R = randomArray(rng, B * C * PH * PW, -1, 1, Float64Array);
    const out = new Float64Array(R.length);
    const dinp = nans(inp.length);
    ref.maxPoolBackward(dinp, R, inp, B, C, H, W);
    // the routing pattern (which element of each window is the max) at the unperturbed point
    const ones = new Float64Array(R.length).fill(1);
    const pattern = () => {
      const m = new Float64Array(inp.length);
      ref.maxPoolBackward(m, ones, inp, B, C, H, W);
      return m;
    };
    const base = pattern();
    const r = gradCheck('maxPool dinp', inp, dinp, () => {
      ref.maxPoolForward(out, inp, B, C, H, W);
      return dot(out, R);
    }, allIndices(inp.length), { kinkCrossed: () => pattern().some((v, i) => v !== base[i]) });
    // one element in four (fewer with the dropped row) carries a gradient
    expect(r.nonzero).toBe(B * C * PH * PW);
    expect(r.checked).toBeGreaterThan(inp.length - 4);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The whole small cnn, composed here from the reference kernels only (the engine's model comes later):
//   conv(1→c1, 5×5) → ReLU → maxpool 2 → conv(c1→c2, 5×5) → ReLU → maxpool 2 → flatten (c2,ph,pw)
//   → linear(c2·ph·pw → h) → ReLU → linear(h → 10) → cross-entropy (mean over the batch)
// with PyTorch's parameter names and layouts: 0.weight (c1,1,5,5), 3.weight (c2,c1,5,5), 7.weight (h, c2·ph·pw),
// 9.weight (10, h).
interface Cnn {
  B: number; S: number; c1: number; c2: number; h: number;
  params: Record<string, Float64Array>;
}

function cnnSizes(n: Cnn) {
  const o1 = n.S - 4;
  const p1 = o1 >> 1;
  const o2 = p1 - 4;
  const p2 = o2 >> 1;
  return { o1, p1, o2, p2, flat: n.c2 * p2 * p2 };
}

/** Loss and, when `grads` is given, the gradient of every parameter; `kinks` collects the ReLU signs and
 *  pooling choices, so a finite difference can tell when it crossed one. */
function cnnLoss(n: Cnn, x: Float64Array, y: Int32Array, grads: Record<string, Float64Array> | null,
                 kinks: number[] | null = null): number {
  const k = referenceKernels;
  const { B, S, c1, c2, h } = n;
  const { o1, p1, o2, flat } = cnnSizes(n);
  const P = n.params;
  const r1 = new Float64Array(B * c1 * o1 * o1);
  k.conv2dReluForward(r1, x, P['0.weight'], P['0.bias'], NONE, B, 1, c1, S, S);
  const q1 = new Float64Array(B * c1 * p1 * p1);
  k.maxPoolForward(q1, r1, B, c1, o1, o1);
  const r2 = new Float64Array(B * c2 * o2 * o2);
  k.conv2dReluForward(r2, q1, P['3.weight'], P['3.bias'], NONE, B, c1, c2, p1, p1);
  const q2 = new Float64Array(B * flat); // (B, c2, p2, p2) is already PyTorch's flatten order
  k.maxPoolForward(q2, r2, B, c2, o2, o2);
  const hid = new Float64Array(B * h);
  k.linearReluForward(hid, q2, P['7.weight'], P['7.bias'], B, flat, h);
  const logits = new Float64Array(B * 10);
  k.linearForward(logits, hid, P['9.weight'], P['9.bias'], B, h, 10);
  const probs = new Float64Array(B * 10);
  const loss = k.crossEntropyForward(probs, logits, y, B, 10, 0) / B;
  if (kinks) {
    kinks.length = 0;
    for (const r of [r1, r2, hid]) for (const v of r) kinks.push(v > 0 ? 1 : 0);
    const route = (q: Float64Array, r: Float64Array, C: number, side: number) => {
      const m = new Float64Array(r.length);
      k.maxPoolBackward(m, new Float64Array(q.length).fill(1), r, B, C, side, side);
      for (const v of m) kinks.push(v);
    };
    route(q1, r1, c1, o1);
    route(q2, r2, c2, o2);
  }
  if (!grads) return loss;
  k.crossEntropyBackward(probs, probs, y, B, 10, 0, 1 / B);
  const dhid = new Float64Array(B * h);
  k.linearBackward(dhid, grads['9.weight'], grads['9.bias'], probs, hid, P['9.weight'], B, h, 10);
  k.reluBackward(dhid, dhid, hid, B * h);
  const dq2 = new Float64Array(B * flat);
  k.linearBackward(dq2, grads['7.weight'], grads['7.bias'], dhid, q2, P['7.weight'], B, flat, h);
  const dr2 = new Float64Array(r2.length);
  k.maxPoolBackward(dr2, dq2, r2, B, c2, o2, o2);
  k.reluBackward(dr2, dr2, r2, r2.length);
  const dq1 = new Float64Array(q1.length);
  k.conv2dBackward(dq1, grads['3.weight'], grads['3.bias'], dr2, q1, P['3.weight'], NONE, B, c1, c2, p1, p1);
  const dr1 = new Float64Array(r1.length);
  k.maxPoolBackward(dr1, dq1, r1, B, c1, o1, o1);
  k.reluBackward(dr1, dr1, r1, r1.length);
  k.conv2dBackward(null, grads['0.weight'], grads['0.bias'], dr1, x, P['0.weight'], NONE, B, 1, c1, S, S);
  return loss;
}

describe('the whole small cnn in float64', () => {
  it('conv-relu-pool-conv-relu-pool-flatten-linear-relu-linear + cross-entropy: every parameter against finite differences', () => {
    const rng = new Rng(2024);
    // 20×20 images: conv 16×16 → pool 8×8 → conv 4×4 → pool 2×2 → flatten c2·4
    const n: Cnn = { B: 3, S: 20, c1: 3, c2: 4, h: 7, params: {} };
    const { flat } = cnnSizes(n);
    const shapes: Record<string, number> = {
      '0.weight': n.c1 * KK, '0.bias': n.c1, '3.weight': n.c2 * n.c1 * KK, '3.bias': n.c2,
      '7.weight': n.h * flat, '7.bias': n.h, '9.weight': 10 * n.h, '9.bias': 10,
    };
    const fanIn: Record<string, number> = { 0: KK, 3: n.c1 * KK, 7: flat, 9: n.h };
    for (const [name, size] of Object.entries(shapes)) {
      const s = 1 / Math.sqrt(fanIn[name.split('.')[0]]);
      n.params[name] = randomArray(rng, size, -s, s, Float64Array);
    }
    const x = randomArray(rng, n.B * n.S * n.S, -1, 2, Float64Array);
    const y = Int32Array.from([3, 0, 9]);
    const grads: Record<string, Float64Array> = {};
    for (const [name, size] of Object.entries(shapes)) grads[name] = nans(size);
    const loss = cnnLoss(n, x, y, grads);
    expect(Math.abs(loss - Math.log(10))).toBeLessThan(0.5); // a fresh net is near chance
    const base: number[] = [];
    cnnLoss(n, x, y, null, base);
    const now: number[] = [];
    let total = 0;
    for (const name of Object.keys(shapes)) {
      const r = gradCheck(`cnn ${name}`, n.params[name], grads[name], () => cnnLoss(n, x, y, null, now),
                          spread(shapes[name], 40),
                          { kinkCrossed: () => now.some((v, i) => v !== base[i]) });
      expect(r.nonzero, `${name}: some checked entries must carry a gradient`).toBeGreaterThan(r.checked / 2);
      total += r.checked;
    }
    expect(total).toBeGreaterThan(150);
  });

  it('the check can fail: a gradient with one conv tap dropped is caught', () => {
    const rng = new Rng(5);
    const [B, C, OC, H, W] = [1, 2, 2, 6, 6];
    const inp = randomArray(rng, B * C * H * W, -1, 1, Float64Array);
    const w = randomArray(rng, OC * C * KK, -1, 1, Float64Array);
    const R = randomArray(rng, B * OC * 4, -1, 1, Float64Array);
    const dw = nans(w.length);
    ref.conv2dBackward(null, dw, nans(OC), R, inp, w, NONE, B, C, OC, H, W);
    dw[7] *= 1 + 1e-5;
    const out = new Float64Array(R.length);
    expect(() => gradCheck('broken', w, dw, () => {
      ref.conv2dForward(out, inp, w, new Float64Array(OC), NONE, B, C, OC, H, W);
      return dot(out, R);
    }, allIndices(w.length))).toThrow(/broken: index 7/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The fast families against the reference, on views of a shared WebAssembly.Memory like the arena.

const PAGES = 1024; // 64 MiB: the real shapes at 16 images with their scratch, twice over
const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true });
const U = 2 ** -24; // float32 unit roundoff
const f64v = (v: Float32Array) => Float64Array.from(v);

// A float32 sum of K products of values in [−1, 1] against the float64 reference: the fast families sum in
// another order (lanes, blocks, the bias first) and round each multiply-add once or twice, so the error
// grows like a random walk: relative ~ u·√K, absolute ~ u·K (as in fast-kernels.test.ts; factor 16 for the
// tail over many thousands of outputs). A dropped tap overshoots it by orders of magnitude (last test).
const tol = (K: number) => ({ rtol: 16 * U * Math.sqrt(K), atol: 16 * U * K });

// (B, C, OC, H, W): odd sizes that exercise every leftover of the blockings (output rows not a multiple of
// the 4-row blocks, pixel counts not a multiple of the vector widths, KC = C·25 not a multiple of 16), the
// smallest map, a 1×1 channel count, non-square maps, and the real layers at 2 and 5 images.
const CONV_SHAPES: [number, number, number, number, number][] = [
  [3, 3, 5, 11, 11], [1, 1, 1, 5, 5], [2, 2, 7, 9, 6], [3, 1, 17, 6, 13], [2, 5, 9, 8, 21], [1, 7, 3, 10, 10],
  [2, 1, 16, 28, 28], [5, 16, 32, 12, 12],
];
// (B, C, H, W) for the pool, including odd heights and widths
const POOL_SHAPES: [number, number, number, number][] = [
  [3, 5, 7, 7], [1, 1, 2, 2], [2, 3, 5, 8], [4, 16, 24, 24], [4, 32, 8, 8], [1, 2, 9, 3], [2, 1, 1, 4],
];

const native = loadNative();
const families = fastFamilies(memory, 21);

beforeAll(rebuildWasm);

for (const fam of families) {
  const title = fam.skip === null ? `${fam.title} conv and pool kernels` : `${fam.title} conv and pool kernels (SKIPPED: ${fam.skip})`;
  describe.skipIf(fam.skip !== null)(title, () => {
    let k: Kernels;
    const rng = new Rng(fam.seed);
    const arena = new Arena(memory, rng);
    const isNative = fam.title.startsWith('native');
    // a test of what only the native family has is defined only for it (not defined-and-skipped)
    const itNative = isNative ? it : ((() => undefined) as unknown as typeof it);
    beforeAll(async () => {
      k = await fam.load();
    });

    it('conv2dForward and conv2dReluForward match the reference on odd and real shapes', () => {
      for (const [B, C, OC, H, W] of CONV_SHAPES) {
        for (const relu of [false, true]) {
          arena.reset();
          const P = (H - 4) * (W - 4);
          const inp = arena.random(B * C * H * W);
          const w = arena.random(OC * C * KK);
          const bias = arena.random(OC);
          const cols = arena.take(conv2dScratchLength(C, OC, H, W));
          const out = arena.take(B * OC * P);
          const e = new Float64Array(B * OC * P);
          ref.conv2dForward(e, f64v(inp), f64v(w), f64v(bias), null, B, C, OC, H, W);
          if (relu) ref.reluForward(e, e, e.length);
          (relu ? k.conv2dReluForward : k.conv2dForward)(out, inp, w, bias, cols, B, C, OC, H, W);
          const what = `${relu ? 'conv2dReluForward' : 'conv2dForward'} B=${B} C=${C} OC=${OC} ${H}×${W}`;
          const t = tol(C * KK + 1);
          expectClose(out, e, t.atol, t.rtol, what);
          if (relu && k.conv2dReluPoolForward) {
            // the fused form: the same bits as conv2dReluForward then maxPoolForward
            const Q = ((H - 4) >> 1) * ((W - 4) >> 1);
            const pooled = arena.take(B * OC * Q);
            const out2 = arena.take(B * OC * P);
            k.conv2dReluPoolForward(out2, pooled, inp, w, bias, cols, B, C, OC, H, W);
            const ep = new Float32Array(B * OC * Q);
            k.maxPoolForward(ep, out, B, OC, H - 4, W - 4);
            expect(out2.every((v, i) => Object.is(v, out[i])), `${what} conv2dReluPoolForward out`).toBe(true);
            expect(pooled.every((v, i) => Object.is(v, ep[i])), `${what} conv2dReluPoolForward pooled`).toBe(true);
          }
          arena.checkGuards(what);
        }
      }
    });

    it('conv2dBackward matches the reference on odd and real shapes, with and without dinp', () => {
      for (const [B, C, OC, H, W] of CONV_SHAPES) {
        for (const withDinp of [true, false]) {
          arena.reset();
          const P = (H - 4) * (W - 4);
          const dout = arena.random(B * OC * P);
          const inp = arena.random(B * C * H * W);
          const w = arena.random(OC * C * KK);
          const cols = arena.take(conv2dScratchLength(C, OC, H, W));
          const dinp = arena.take(B * C * H * W);
          const dw = arena.take(OC * C * KK);
          const db = arena.take(OC);
          const e = { dinp: new Float64Array(dinp.length), dw: new Float64Array(dw.length), db: new Float64Array(OC) };
          ref.conv2dBackward(e.dinp, e.dw, e.db, f64v(dout), f64v(inp), f64v(w), null, B, C, OC, H, W);
          k.conv2dBackward(withDinp ? dinp : null, dw, db, dout, inp, w, cols, B, C, OC, H, W);
          const what = `conv2dBackward B=${B} C=${C} OC=${OC} ${H}×${W}${withDinp ? '' : ' dinp=null'}`;
          expectClose(dw, e.dw, tol(B * P).atol, tol(B * P).rtol, `${what} dweight`);
          expectClose(db, e.db, tol(B * P).atol, tol(B * P).rtol, `${what} dbias`);
          // a pixel of dinp sums at most OC·25 products
          if (withDinp) expectClose(dinp, e.dinp, tol(OC * KK).atol, tol(OC * KK).rtol, `${what} dinp`);
          else expect(dinp.every(Number.isNaN), `${what}: dinp must stay untouched`).toBe(true);
          if (k.conv2dReluPoolBackward && k.maxPoolReluBackward) {
            // the fused form: the same bits as maxPoolReluBackward (dout from a pooled gradient and a ReLU output)
            // then conv2dBackward; with a ReLU output of zeros, ties and values of both signs
            const Q = ((H - 4) >> 1) * ((W - 4) >> 1);
            const dpooled = arena.random(B * OC * Q);
            const out = arena.random(B * OC * P);
            for (let i = 0; i < out.length; i++) if (rng.int(4) === 0) out[i] = 0;
            const dout2 = arena.take(B * OC * P);
            k.maxPoolReluBackward(dout2, dpooled, out, B, OC, H - 4, W - 4);
            const want = { dinp: arena.take(dinp.length), dw: arena.take(dw.length), db: arena.take(OC) };
            k.conv2dBackward(withDinp ? want.dinp : null, want.dw, want.db, dout2, inp, w, cols, B, C, OC, H, W);
            const got = { dinp: arena.take(dinp.length), dw: arena.take(dw.length), db: arena.take(OC) };
            k.conv2dReluPoolBackward(withDinp ? got.dinp : null, got.dw, got.db, dpooled, out, inp, w, cols, B, C, OC, H, W);
            for (const key of ['dinp', 'dw', 'db'] as const) {
              expect(got[key].every((v, i) => Object.is(v, want[key][i])), `${what} conv2dReluPoolBackward ${key}`).toBe(true);
            }
          }
          arena.checkGuards(what);
        }
      }
    });

    it('conv2dBackward with no images gives zero gradients', () => {
      arena.reset();
      const [C, OC, H, W] = [2, 3, 7, 7];
      const dw = arena.take(OC * C * KK);
      const db = arena.take(OC);
      k.conv2dBackward(arena.take(0), dw, db, arena.take(0), arena.take(0), arena.random(OC * C * KK),
                       arena.take(conv2dScratchLength(C, OC, H, W)), 0, C, OC, H, W);
      expect(Array.from(dw).every((v) => v === 0) && Array.from(db).every((v) => v === 0)).toBe(true);
      arena.checkGuards('conv2dBackward B=0');
    });

    it('each image gets the same bits whatever other images share the call (forward and dinp)', () => {
      // what lets a worker run all its images in one call
      for (const [B, C, OC, H, W] of [[7, 16, 32, 12, 12], [6, 1, 16, 28, 28], [5, 3, 5, 11, 11]]) {
        arena.reset();
        const P = (H - 4) * (W - 4);
        const img = C * H * W;
        const inp = arena.random(B * img);
        const w = arena.random(OC * C * KK);
        const bias = arena.random(OC);
        const dout = arena.random(B * OC * P);
        const cols = arena.take(conv2dScratchLength(C, OC, H, W));
        const out = arena.take(B * OC * P);
        const dinp = arena.take(B * img);
        k.conv2dReluForward(out, inp, w, bias, cols, B, C, OC, H, W);
        k.conv2dBackward(dinp, arena.take(OC * C * KK), arena.take(OC), dout, inp, w, cols, B, C, OC, H, W);
        for (const [a, z] of [[0, 1], [2, 5], [B - 1, B], [1, B]]) {
          const part = arena.take((z - a) * OC * P);
          k.conv2dReluForward(part, inp.subarray(a * img), w, bias, cols, z - a, C, OC, H, W);
          expectClose(part, out.subarray(a * OC * P, z * OC * P), 0, 0, `forward images [${a}, ${z}) of ${B}`);
          const dpart = arena.take((z - a) * img);
          k.conv2dBackward(dpart, arena.take(OC * C * KK), arena.take(OC), dout.subarray(a * OC * P), inp.subarray(a * img),
                           w, cols, z - a, C, OC, H, W);
          expectClose(dpart, dinp.subarray(a * img, z * img), 0, 0, `dinp images [${a}, ${z}) of ${B}`);
        }
        const Q = ((H - 4) >> 1) * ((W - 4) >> 1);
        const pooled = arena.take(B * OC * Q);
        k.maxPoolForward(pooled, out, B, OC, H - 4, W - 4);
        const one = arena.take(OC * Q);
        k.maxPoolForward(one, out.subarray(2 * OC * P), 1, OC, H - 4, W - 4);
        expectClose(one, pooled.subarray(2 * OC * Q, 3 * OC * Q), 0, 0, 'maxpool image 2 alone');
        arena.checkGuards(`images B=${B} C=${C} OC=${OC}`);
      }
    });

    it('conv2dBackward with dinp = null writes nothing but dweight, dbias and its scratch anywhere in the memory', () => {
      arena.reset();
      const [B, C, OC, H, W] = [3, 2, 5, 9, 8];
      const dout = arena.random(B * OC * 20);
      const inp = arena.random(B * C * H * W);
      const w = arena.random(OC * C * KK);
      const cols = arena.take(conv2dScratchLength(C, OC, H, W));
      const dw = arena.take(OC * C * KK);
      const db = arena.take(OC);
      const before = new Uint8Array(memory.buffer).slice();
      k.conv2dBackward(null, dw, db, dout, inp, w, cols, B, C, OC, H, W);
      const after = new Uint8Array(memory.buffer);
      const inside = (i: number, v: Float32Array) => i >= v.byteOffset && i < v.byteOffset + v.byteLength;
      for (let i = 0; i < after.length; i++) {
        if (after[i] !== before[i] && !inside(i, dw) && !inside(i, db) && !inside(i, cols)) throw new Error(`byte ${i} changed`);
      }
    });

    it('reads nothing past views that end at the very end of the memory', () => {
      // a load that is too wide (im2row's 4 + 1 floats, a partial vector) would trap or read past the end
      const [B, C, OC, H, W] = [2, 3, 4, 7, 9];
      const P = 15;
      const end = memory.buffer.byteLength;
      const inp = new Float32Array(memory.buffer, end - 4 * B * C * H * W, B * C * H * W);
      arena.reset();
      for (let i = 0; i < inp.length; i++) inp[i] = rng.uniform(-1, 1);
      const w = arena.random(OC * C * KK);
      const bias = arena.random(OC);
      const cols = arena.take(conv2dScratchLength(C, OC, H, W));
      const out = arena.take(B * OC * P);
      const e = new Float64Array(out.length);
      ref.conv2dForward(e, f64v(inp), f64v(w), f64v(bias), null, B, C, OC, H, W);
      k.conv2dForward(out, inp, w, bias, cols, B, C, OC, H, W);
      expectClose(out, e, tol(C * KK + 1).atol, tol(C * KK + 1).rtol, 'forward at the end');
      const dout = arena.random(B * OC * P);
      const dw = arena.take(OC * C * KK);
      const ew = new Float64Array(dw.length);
      ref.conv2dBackward(null, ew, new Float64Array(OC), f64v(dout), f64v(inp), f64v(w), null, B, C, OC, H, W);
      k.conv2dBackward(null, dw, arena.take(OC), dout, inp, w, cols, B, C, OC, H, W);
      expectClose(dw, ew, tol(B * P).atol, tol(B * P).rtol, 'backward at the end');
      const pooled = arena.take(B * C * 3 * 4);
      k.maxPoolForward(pooled, inp, B, C, H, W);
      const epool = new Float32Array(pooled.length);
      ref.maxPoolForward(epool, inp, B, C, H, W);
      expectClose(pooled, epool, 0, 0, 'maxpool at the end');
      arena.checkGuards('at the end');
    });

    it('maxPoolForward and maxPoolBackward equal the reference bit for bit, with ties and NaN', () => {
      for (const [B, C, H, W] of POOL_SHAPES) {
        arena.reset();
        const inp = arena.random(B * C * H * W);
        // ties (a ReLU's zeros, repeated values) and a few NaN, which only count in a window's first place
        for (let i = 0; i < inp.length; i++) {
          const r = rng.int(10);
          if (r < 3) inp[i] = 0;
          else if (r === 3) inp[i] = 0.5;
          else if (r === 4 && rng.int(4) === 0) inp[i] = NaN;
        }
        const PH = H >> 1;
        const PW = W >> 1;
        const out = arena.take(B * C * PH * PW);
        const e = new Float32Array(out.length);
        ref.maxPoolForward(e, inp, B, C, H, W);
        k.maxPoolForward(out, inp, B, C, H, W);
        const what = `maxPool B=${B} C=${C} ${H}×${W}`;
        expect(out.every((v, i) => Object.is(v, e[i])), `${what} forward`).toBe(true);
        const dout = arena.random(out.length);
        const dinp = arena.take(inp.length);
        const ed = new Float32Array(inp.length);
        ref.maxPoolBackward(ed, dout, inp, B, C, H, W);
        k.maxPoolBackward(dinp, dout, inp, B, C, H, W);
        expect(dinp.every((v, i) => Object.is(v, ed[i])), `${what} backward`).toBe(true);
        if (k.maxPoolReluBackward) {
          // the fused form: the pool's backward then the ReLU's mask (inp as the ReLU's output), bit for bit
          ref.reluBackward(ed, ed, inp, ed.length);
          const fused = arena.take(inp.length);
          k.maxPoolReluBackward(fused, dout, inp, B, C, H, W);
          expect(fused.every((v, i) => Object.is(v, ed[i])), `${what} maxPoolReluBackward`).toBe(true);
        }
        arena.checkGuards(what);
      }
    });

    it('rejects views that are too short for the sizes, and maps smaller than the kernel, before touching memory', () => {
      arena.reset();
      const [B, C, OC, H, W] = [2, 3, 4, 8, 8];
      const inp = arena.random(B * C * H * W);
      const w = arena.random(OC * C * KK);
      const bias = arena.random(OC);
      const cols = arena.take(conv2dScratchLength(C, OC, H, W));
      const out = arena.take(B * OC * 16);
      const short = (v: Float32Array) => v.subarray(0, v.length - 1);
      const fwd = (o: Float32Array, i: Float32Array, ww: Float32Array, bb: Float32Array, cc: Float32Array, h = H) =>
        () => k.conv2dForward(o, i, ww, bb, cc, B, C, OC, h, W);
      expect(fwd(short(out), inp, w, bias, cols)).toThrow(/out has 127 (floats|elements), needs 128/);
      expect(fwd(out, short(inp), w, bias, cols)).toThrow(/inp has 383 (floats|elements), needs 384/);
      expect(fwd(out, inp, short(w), bias, cols)).toThrow(/weight has 299 (floats|elements), needs 300/);
      expect(fwd(out, inp, w, short(bias), cols)).toThrow(/bias has 3 (floats|elements), needs 4/);
      // conv2dScratchLength(3, 4, 8, 8) = 16 · (2·3·64 + 4·16)
      expect(fwd(out, inp, w, bias, short(cols))).toThrow(/cols has 7167 (floats|elements), needs 7168/);
      expect(fwd(out, inp, w, bias, cols, 4)).toThrow(/H ≥ 5 and W ≥ 5/);
      expect(() => k.conv2dForward(out, inp, w, bias, cols, -1, C, OC, H, W)).toThrow(/non-negative integer/);
      const dw = arena.take(OC * C * KK);
      const db = arena.take(OC);
      // the backward pass's two halves, each checked before it writes (the whole kernel is the two in turn)
      const dinp = arena.take(B * C * H * W);
      expect(() => k.conv2dBackwardInput(short(dinp), out, w, cols, B, C, OC, H, W)).toThrow(/dinp has/);
      expect(() => k.conv2dBackwardInput(dinp, short(out), w, cols, B, C, OC, H, W)).toThrow(/dout has/);
      expect(() => k.conv2dBackwardInput(dinp, out, short(w), cols, B, C, OC, H, W)).toThrow(/weight has/);
      expect(() => k.conv2dBackwardInput(dinp, out, w, short(cols), B, C, OC, H, W)).toThrow(/cols has/);
      expect(() => k.conv2dBackwardWeight(short(dw), db, out, inp, cols, B, C, OC, H, W, 0, OC)).toThrow(/dweight has/);
      expect(() => k.conv2dBackwardWeight(dw, db, short(out), inp, cols, B, C, OC, H, W, 0, OC)).toThrow(/dout has/);
      expect(() => k.conv2dBackwardWeight(dw, db, out, short(inp), cols, B, C, OC, H, W, 0, OC)).toThrow(/inp has/);
      expect(() => k.conv2dBackwardWeight(dw, db, out, inp, short(cols), B, C, OC, H, W, 0, OC)).toThrow(/cols has/);
      expect(() => k.conv2dBackwardWeight(dw, db, out, inp, cols, B, C, OC, H, W, 3, 5)).toThrow(/o0 ≤ o1 ≤ OC/);
      expect(() => k.maxPoolForward(arena.take(B * C * 16 - 1), inp, B, C, H, W)).toThrow(/out has/);
      expect(() => k.maxPoolBackward(short(inp), arena.take(B * C * 16), inp, B, C, H, W)).toThrow(/dinp has/);
      expect(() => k.maxPoolBackward(inp, arena.take(B * C * 16), short(inp), B, C, H, W)).toThrow(/inp has/);
      // nothing was written by the calls that threw
      for (const [name, v] of [['out', out], ['dinp', dinp], ['dweight', dw], ['dbias', db], ['cols', cols]] as const) {
        expect(v.every(Number.isNaN), `${name} untouched`).toBe(true);
      }
      // the whole backward is the two halves in turn: the second one's check still refuses
      expect(() => k.conv2dBackward(short(inp), dw, db, out, inp, w, cols, B, C, OC, H, W)).toThrow(/dinp has/);
      expect(() => k.conv2dForward(out, new Float64Array(inp.length), w, bias, cols, B, C, OC, H, W))
        .toThrow(/inp must be a Float32Array/);
      if (!isNative) {
        expect(() => k.conv2dForward(new Float32Array(out.length), inp, w, bias, cols, B, C, OC, H, W))
          .toThrow(/out must be a Float32Array over the shared arena/);
      }
      arena.checkGuards('argument checks');
    });

    itNative('the direct convolution (the benchmark\'s comparison) matches the reference too', () => {
      if (!native.ok) throw new Error('unreachable');
      const x = native.addon.paths[fam.title.slice('native '.length) as NativeIsa]!;
      for (const [B, C, OC, H, W] of CONV_SHAPES) {
        arena.reset();
        const P = (H - 4) * (W - 4);
        const inp = arena.random(B * C * H * W);
        const w = arena.random(OC * C * KK);
        const bias = arena.random(OC);
        const out = arena.take(B * OC * P);
        const e = new Float64Array(out.length);
        ref.conv2dForward(e, f64v(inp), f64v(w), f64v(bias), null, B, C, OC, H, W);
        ref.reluForward(e, e, e.length);
        x.conv2dForwardDirect(out, inp, w, bias, B, C, OC, H, W, 1);
        const what = `conv2dForwardDirect B=${B} C=${C} OC=${OC} ${H}×${W}`;
        expectClose(out, e, tol(C * KK + 1).atol, tol(C * KK + 1).rtol, what);
        arena.checkGuards(what);
      }
      expect(() => x.conv2dForwardDirect(new Float32Array(3), new Float32Array(25), new Float32Array(25),
        new Float32Array(1), 1, 1, 1, 5, 5, 0)).not.toThrow();
      expect(() => x.conv2dForwardDirect(new Float32Array(0), new Float32Array(25), new Float32Array(25),
        new Float32Array(1), 1, 1, 1, 5, 5, 0)).toThrow(/out has 0 elements, needs 1/);
    });

    it('the tolerance catches a single dropped tap', () => {
      arena.reset();
      const [B, C, OC, H, W] = [2, 16, 32, 12, 12];
      const inp = arena.random(B * C * H * W);
      const w = arena.random(OC * C * KK);
      const bias = arena.random(OC);
      const out = arena.take(B * OC * 64);
      k.conv2dForward(out, inp, w, bias, arena.take(conv2dScratchLength(C, OC, H, W)), B, C, OC, H, W);
      const wrong = f64v(w);
      for (let o = 0; o < OC; o++) wrong[o * C * KK + 7] = 0;
      const e = new Float64Array(out.length);
      ref.conv2dForward(e, f64v(inp), wrong, f64v(bias), null, B, C, OC, H, W);
      expect(() => expectClose(out, e, tol(C * KK + 1).atol, tol(C * KK + 1).rtol, 'dropped tap')).toThrow();
    });
  });
}
