// The fast kernel families (WebAssembly simd and relaxed; native on each instruction-set path this CPU has)
// against the reference, on views of a shared WebAssembly.Memory like the arena.
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, it } from 'vitest';
import * as ref from '../src/kernels/reference.js';
import {
  enableRelaxedSimd, jsKernels, loadKernels, resolveKernels, wasmPath, type Kernels,
} from '../src/kernels/wasm.js';
import { loadNative, nativeBuildPath } from '../src/kernels/native.js';
import { optimizerStep, type OptimizerConfig } from '../src/optim.js';
import { Rng } from '../src/rng.js';
import { Arena, fastFamilies, rebuildWasm } from './arena.js';
import { expectClose } from './check.js';

const PAGES = 512; // 32 MiB
const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true });
const U = 2 ** -24; // float32 unit roundoff

const f64 = (v: Float32Array) => Float64Array.from(v);

// Tolerance for a float32 sum of K products of values in [−1, 1], compared with the float64 reference.
// The wasm kernels sum in a different order (4 lanes, then a horizontal fold) and round every partial sum
// (once or twice per multiply-add), so the error grows like a random walk: relative ~ u·√K, and since such a
// sum is ~√K in size, absolute ~ u·K. Factor 16 for the tail of the distribution over thousands of outputs.
// Dropping a single term (see the last test) overshoots this by orders of magnitude.
const tol = (K: number) => ({ rtol: 16 * U * Math.sqrt(K), atol: 16 * U * K });

// Every leftover of the blockings: the forward does 4 rows × 2 outputs (B mod 4, odd OC, C mod 4); the
// backward 2 × 16 columns of C (odd OC for dweight, odd B for dinp, C mod 16 in steps of 4, then C mod 4).
const SHAPES: [number, number][] = [ // (C, OC)
  [1, 1], [5, 10], [10, 5], [17, 3], [3, 17], [33, 7], [47, 2], [31, 16], [16, 31], [20, 1], [9, 9],
  [128, 10], [784, 128], [128, 256], [256, 512], [512, 128], [12, 784],
];
const ROWS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15, 16, 17, 31, 32, 33, 63, 64];

const native = loadNative();
const families = fastFamilies(memory, 11, ' kernels');

beforeAll(rebuildWasm);

// The native family must be here wherever a compiler is: CI and every developer machine build it. It may
// be missing only when the build reported why (no compiler), and then the suite says so instead of passing.
it('the native addon was built and loads (or the build said why not)', () => {
  if (native.ok) expect(native.addon.isa).toMatch(/^(avx512|avx2)$/);
  else expect(native.reason, 'the addon did not load').toMatch(/^was not built \(/);
});

for (const fam of families) {
  const title = fam.skip === null ? fam.title : `${fam.title} (SKIPPED: ${fam.skip})`;
  describe.skipIf(fam.skip !== null)(title, () => {
    let k: Kernels;
    const rng = new Rng(fam.seed);
    const arena = new Arena(memory, rng);
    const isWasm = fam.title.startsWith('simd') || fam.title.startsWith('relaxed');
    // tests of what only one kind of family has are defined only for it (not defined-and-skipped)
    const none = (() => undefined) as unknown as typeof it;
    const itWasm = isWasm ? it : none;
    const itNative = isWasm ? none : it;
    beforeAll(async () => {
      k = await fam.load();
    });

    it('linearForward and linearReluForward match the reference on every shape', () => {
      for (const B of ROWS) {
        for (const [C, OC] of SHAPES) {
          for (const relu of [false, true]) {
            arena.reset();
            const inp = arena.random(B * C);
            const w = arena.random(OC * C);
            const bias = arena.random(OC);
            const out = arena.take(B * OC);
            const expected = new Float64Array(B * OC);
            ref.linearForward(expected, f64(inp), f64(w), f64(bias), B, C, OC);
            if (relu) ref.reluForward(expected, expected, B * OC);
            (relu ? k.linearReluForward : k.linearForward)(out, inp, w, bias, B, C, OC);
            const what = `${relu ? 'linearReluForward' : 'linearForward'} B=${B} C=${C} OC=${OC}`;
            const { atol, rtol } = tol(C + 1);
            expectClose(out, expected, atol, rtol, what);
            arena.checkGuards(what);
          }
        }
      }
    });

    itNative('linearForwardT and linearReluForwardT (transposed weights) match the reference on every shape', () => {
      expect(k.linearForwardT && k.linearReluForwardT && k.transposeRows, 'native keeps transposed weights').toBeTruthy();
      for (const B of ROWS) {
        for (const [C, OC] of SHAPES) {
          for (const relu of [false, true]) {
            arena.reset();
            const inp = arena.random(B * C);
            const w = arena.random(OC * C);
            const wt = arena.take(OC * C);
            ref.transposeRows(wt, w, C, OC, 0, OC * C);
            const bias = arena.random(OC);
            const out = arena.take(B * OC);
            const expected = new Float64Array(B * OC);
            ref.linearForward(expected, f64(inp), f64(w), f64(bias), B, C, OC);
            if (relu) ref.reluForward(expected, expected, B * OC);
            (relu ? k.linearReluForwardT! : k.linearForwardT!)(out, inp, wt, bias, B, C, OC);
            const what = `${relu ? 'linearReluForwardT' : 'linearForwardT'} B=${B} C=${C} OC=${OC}`;
            expectClose(out, expected, tol(C + 1).atol, tol(C + 1).rtol, what);
            arena.checkGuards(what);
          }
        }
      }
    });

    itNative('linearForwardT gives each row the same bits whichever rows it is computed with', () => {
      // what lets a worker run the forward pass of all its rows in one call
      arena.reset();
      const [B, C, OC] = [37, 129, 70];
      const inp = arena.random(B * C);
      const wt = arena.random(OC * C);
      const bias = arena.random(OC);
      const all = arena.take(B * OC);
      k.linearReluForwardT!(all, inp, wt, bias, B, C, OC);
      for (const [a, z] of [[0, 1], [3, 20], [20, 37], [5, 6]]) {
        const part = arena.take((z - a) * OC);
        k.linearReluForwardT!(part, inp.subarray(a * C), wt, bias, z - a, C, OC);
        expectClose(part, all.subarray(a * OC, z * OC), 0, 0, `rows [${a}, ${z})`);
      }
    });

    it('linearBackwardInput matches the reference, each row the same bits in any call starting at a block', () => {
      // what lets a thread run the input gradients of all its rows in one call: its rows start at a multiple
      // of 8 (partition.ts ROW_BLOCK); native gives every row the same bits wherever its call starts
      for (const B of [1, 5, 16, 33]) {
        for (const [C, OC] of SHAPES) {
          arena.reset();
          const dout = arena.random(B * OC);
          const w = arena.random(OC * C);
          const dinp = arena.take(B * C);
          const e = new Float64Array(B * C);
          ref.linearBackwardInput(e, f64(dout), f64(w), B, C, OC);
          k.linearBackwardInput(dinp, dout, w, B, C, OC);
          const what = `linearBackwardInput B=${B} C=${C} OC=${OC}`;
          expectClose(dinp, e, tol(OC).atol, tol(OC).rtol, what);
          arena.checkGuards(what);
          // the same rows from a later start, and the full backward's dinp: the same bits
          const a = isWasm ? 8 * Math.floor(B / 16) : Math.floor(B / 3);
          const part = arena.take((B - a) * C);
          k.linearBackwardInput(part, dout.subarray(a * OC), w, B - a, C, OC);
          expectClose(part, dinp.subarray(a * C), 0, 0, `${what} rows [${a}, ${B})`);
          const full = arena.take(B * C);
          k.linearBackward(full, arena.take(OC * C), arena.take(OC), dout, arena.random(B * C), w, B, C, OC);
          expectClose(full, dinp, 0, 0, `${what} = linearBackward's dinp`);
        }
      }
    });

    it('linearBackwardWeight on outputs [o0, o1) gives their bits of the whole layer\'s call and writes nothing else', () => {
      // what lets threads that own different outputs together compute a layer's gradient: each output's sum over
      // the rows does not depend on which outputs share the call
      for (const B of [1, 7, 8, 33, 64]) {
        for (const [C, OC] of SHAPES) {
          arena.reset();
          const dout = arena.random(B * OC);
          const inp = arena.random(B * C);
          const dweight = arena.take(OC * C);
          const dbias = arena.take(OC);
          k.linearBackwardWeight(dweight, dbias, dout, inp, B, C, OC, 0, OC);
          const e = { dweight: new Float64Array(OC * C), dbias: new Float64Array(OC) };
          ref.linearBackwardWeight(e.dweight, e.dbias, f64(dout), f64(inp), B, C, OC, 0, OC);
          const what = `linearBackwardWeight B=${B} C=${C} OC=${OC}`;
          expectClose(dweight, e.dweight, tol(B).atol, tol(B).rtol, `${what} dweight`);
          expectClose(dbias, e.dbias, tol(B).atol, tol(B).rtol, `${what} dbias`);
          for (const [o0, o1] of [[0, 1], [1, OC], [Math.floor(OC / 3), Math.floor((2 * OC) / 3) + 1], [OC - 1, OC], [2, 2]]) {
            if (o1 > OC || o0 > o1) continue;
            const dw = arena.take(OC * C);
            const db = arena.take(OC);
            k.linearBackwardWeight(dw, db, dout, inp, B, C, OC, o0, o1);
            const range = `${what} outputs [${o0}, ${o1})`;
            expectClose(dw.subarray(o0 * C, o1 * C), dweight.subarray(o0 * C, o1 * C), 0, 0, `${range} dweight`);
            expectClose(db.subarray(o0, o1), dbias.subarray(o0, o1), 0, 0, `${range} dbias`);
            expect(dw.every((v, i) => (i >= o0 * C && i < o1 * C) || Number.isNaN(v)), `${range}: other rows written`).toBe(true);
            expect(db.every((v, i) => (i >= o0 && i < o1) || Number.isNaN(v)), `${range}: other biases written`).toBe(true);
          }
          arena.checkGuards(what);
        }
      }
    });

    itNative('transposeRows equals the reference bit for bit on whole and partial rows', () => {
      for (const [C, OC] of [[1, 1], [5, 3], [17, 33], [784, 128], [128, 10], [3, 40]]) {
        const n = C * OC;
        for (const [from, to] of [[0, n], [1, n - 1], [0, Math.min(n, 3)], [C, Math.min(n, 5 * C + 2)], [n, n],
                                  [Math.floor(n / 3), Math.floor(n / 2) + 1]]) {
          if (from > to) continue;
          arena.reset();
          const w = arena.random(n);
          const wt = arena.take(n);
          const expected = Float32Array.from(wt);
          ref.transposeRows(expected, w, C, OC, from, to);
          k.transposeRows!(wt, w, C, OC, from, to);
          const what = `transposeRows C=${C} OC=${OC} [${from}, ${to})`;
          expect(wt.every((v, i) => Object.is(v, expected[i])), what).toBe(true);
          arena.checkGuards(what);
        }
      }
    });

    it('linearBackward matches the reference on every shape, with and without dinp', () => {
      for (const B of ROWS) {
        for (const [C, OC] of SHAPES) {
          for (const withDinp of [true, false]) {
            arena.reset();
            const dout = arena.random(B * OC);
            const inp = arena.random(B * C);
            const w = arena.random(OC * C);
            const dinp = arena.take(B * C);
            const dweight = arena.take(OC * C);
            const dbias = arena.take(OC);
            const e = { dinp: new Float64Array(B * C), dweight: new Float64Array(OC * C), dbias: new Float64Array(OC) };
            ref.linearBackward(e.dinp, e.dweight, e.dbias, f64(dout), f64(inp), f64(w), B, C, OC);
            k.linearBackward(withDinp ? dinp : null, dweight, dbias, dout, inp, w, B, C, OC);
            const what = `linearBackward B=${B} C=${C} OC=${OC}${withDinp ? '' : ' dinp=null'}`;
            expectClose(dweight, e.dweight, tol(B).atol, tol(B).rtol, `${what} dweight`);
            expectClose(dbias, e.dbias, tol(B).atol, tol(B).rtol, `${what} dbias`);
            if (withDinp) expectClose(dinp, e.dinp, tol(OC).atol, tol(OC).rtol, `${what} dinp`);
            else expect(dinp.every(Number.isNaN), `${what}: dinp must stay untouched`).toBe(true);
            arena.checkGuards(what);
          }
        }
      }
    });

    it('linearBackward with dinp = null writes nothing but dweight and dbias anywhere in the memory', () => {
      arena.reset();
      const [B, C, OC] = [13, 33, 7];
      const dout = arena.random(B * OC);
      const inp = arena.random(B * C);
      const w = arena.random(OC * C);
      const dweight = arena.take(OC * C);
      const dbias = arena.take(OC);
      const before = new Uint8Array(memory.buffer).slice();
      k.linearBackward(null, dweight, dbias, dout, inp, w, B, C, OC);
      const after = new Uint8Array(memory.buffer);
      const inside = (i: number, v: Float32Array) => i >= v.byteOffset && i < v.byteOffset + v.byteLength;
      for (let i = 0; i < after.length; i++) {
        if (after[i] !== before[i] && !inside(i, dweight) && !inside(i, dbias)) throw new Error(`byte ${i} changed`);
      }
    });

    it('reads nothing past a view that ends at the very end of the memory', () => {
      // A partial vector load that is too wide would trap here (out of bounds).
      const [B, C, OC] = [3, 7, 5];
      const end = memory.buffer.byteLength;
      const inp = new Float32Array(memory.buffer, end - 4 * B * C, B * C);
      const dout = new Float32Array(memory.buffer, end - 4 * (B * C + B * OC), B * OC);
      arena.reset();
      for (let i = 0; i < B * C; i++) inp[i] = rng.uniform(-1, 1);
      for (let i = 0; i < B * OC; i++) dout[i] = rng.uniform(-1, 1);
      const w = arena.random(OC * C);
      const bias = arena.random(OC);
      const out = arena.take(B * OC);
      const expected = new Float64Array(B * OC);
      ref.linearForward(expected, f64(inp), f64(w), f64(bias), B, C, OC);
      k.linearForward(out, inp, w, bias, B, C, OC);
      expectClose(out, expected, tol(C + 1).atol, tol(C + 1).rtol, 'forward at the end');
      const dweight = arena.take(OC * C);
      const dbias = arena.take(OC);
      const e = new Float64Array(OC * C);
      ref.linearBackward(null, e, new Float64Array(OC), f64(dout), f64(inp), f64(w), B, C, OC);
      k.linearBackward(null, dweight, dbias, dout, inp, w, B, C, OC);
      expectClose(dweight, e, tol(B).atol, tol(B).rtol, 'backward at the end');
      const relu = new Float32Array(memory.buffer, end - 4 * 5, 5);
      k.reluBackward(relu, relu, relu, 5);
    });

    it('reluBackward matches the reference exactly, aliased or not, for every tail length', () => {
      for (const n of [1, 2, 3, 4, 5, 7, 8, 13, 16, 1000, 1003]) {
        arena.reset();
        const dout = arena.random(n);
        const out = arena.random(n);
        out[0] = 0; // the gradient at exactly 0 is 0
        if (n > 1) out[1] = -0;
        const dinp = arena.take(n);
        const expected = new Float32Array(n);
        ref.reluBackward(expected, dout, out, n);
        k.reluBackward(dinp, dout, out, n);
        expectClose(dinp, expected, 0, 0, `reluBackward n=${n}`);
        k.reluBackward(dout, dout, out, n); // in place, as mlp.ts calls it
        expectClose(dout, expected, 0, 0, `reluBackward in place n=${n}`);
        arena.checkGuards(`reluBackward n=${n}`);
      }
    });

    const base: OptimizerConfig = {
      optimizer: 'sgd', momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8,
    };
    const configs: [string, OptimizerConfig][] = [
      ['sgd', base],
      ['sgd + wd', { ...base, weightDecay: 0.01 }],
      ['sgd momentum', { ...base, momentum: 0.9, dampening: 0.1, weightDecay: 1e-4 }],
      ['sgd nesterov', { ...base, momentum: 0.9, nesterov: true, weightDecay: 5e-4 }],
      ['adam', { ...base, optimizer: 'adam', weightDecay: 0.01 }],
      ['adamw', { ...base, optimizer: 'adamw', weightDecay: 0.05, beta2: 0.99 }],
    ];
    for (const [name, cfg] of configs) {
      it(`optimizerStep ${name} matches src/optim.ts bit for bit over three steps`, () => {
        for (const [start, end] of [[0, 1], [0, 2], [1, 2], [3, 1000], [0, 1001], [2, 997]]) {
          arena.reset();
          const N = 1001;
          const param = arena.random(N);
          const grad = arena.random(N, -0.1, 0.1);
          const state = [arena.random(N, -0.01, 0.01), arena.random(N, 0, 1e-4)];
          const jsParam = Float32Array.from(param);
          const jsState = state.map((s) => Float32Array.from(s));
          for (let t = 1; t <= 3; t++) {
            k.optimizerStep(cfg, 0.01 * t, t, param, grad, state, start, end);
            optimizerStep(cfg, 0.01 * t, t, jsParam, grad, jsState, start, end);
            const what = `${name} [${start},${end}) t=${t}`;
            expectClose(param, jsParam, 0, 0, `${what} param`);
            for (let s = 0; s < state.length; s++) expectClose(state[s], jsState[s], 0, 0, `${what} state[${s}]`);
          }
          arena.checkGuards(name);
        }
      });

    }

    itWasm('rejects views that are not float32 views of the shared memory', () => {
      const outside = new Float32Array(4);
      const inside = new Float32Array(memory.buffer, 0, 4);
      expect(() => k.linearForward(outside, inside, inside, inside, 1, 1, 1)).toThrow(/out must be a Float32Array/);
      expect(() => k.linearForward(inside, new Float64Array(4), inside, inside, 1, 1, 1)).toThrow(/inp/);
      expect(() => k.linearForward(inside, inside, inside, inside, 2, 3, 1)).toThrow(/inp has 4 floats, needs 6/);
    });

    itNative('rejects views of the wrong type or too short for the sizes, before touching memory', () => {
      const v4 = new Float32Array(4);
      expect(() => k.linearForward(v4, new Float64Array(4), v4, v4, 1, 1, 1)).toThrow(/inp must be a Float32Array/);
      expect(() => k.linearForward(v4, v4, v4, v4, 2, 3, 1)).toThrow(/inp has 4 elements, needs 6/);
      expect(() => k.linearBackward(null, v4, v4, v4, v4, v4, 1, 5, 1)).toThrow(/dweight has 4 elements, needs 5/);
      expect(() => k.linearForward(v4, v4, v4, v4, -1, 1, 1)).toThrow(/non-negative integer for B/);
      expect(() => k.reluBackward(v4, v4, v4, 5)).toThrow(/dinp has 4 elements, needs 5/);
      expect(() => k.linearBackwardWeight(v4, v4, v4, v4, 1, 1, 4, 3, 5)).toThrow(/o0 ≤ o1 ≤ OC/);
      const images = new Uint8Array(2 * 3);
      const labels = new Uint8Array(2);
      expect(() => k.gather(new Float32Array(6), new Int32Array(2), images, labels, Uint32Array.of(0, 2), 0, 2, 3,
        new Float32Array(256))).toThrow(/index out of range|out of range/);
    });

    itNative('flushes subnormal floats to zero inside its calls and leaves the thread in IEEE mode', () => {
      // Adam's first moment of a weight whose gradient is 0 decays by β1 a step until it is subnormal (below
      // 2^-126 ≈ 1.18e-38): the
      // native family flushes it (as torch.set_flush_denormal(True)); the reference keeps it.
      const cfg: OptimizerConfig = { ...base, optimizer: 'adam' };
      arena.reset();
      const param = arena.take(16).fill(0.5);
      const grad = arena.take(16).fill(0);
      const m = arena.take(16).fill(1.2e-38);
      const v = arena.take(16).fill(1e-30);
      k.optimizerStep(cfg, 1e-3, 5, param, grad, [m, v], 0, 16);
      expect(Array.from(m), 'β1 · 1.2e-38 is subnormal: flushed').toEqual(new Array(16).fill(0));
      const jsM = new Float32Array(16).fill(1.2e-38);
      optimizerStep(cfg, 1e-3, 5, new Float32Array(16).fill(0.5), new Float32Array(16), [jsM, new Float32Array(16).fill(1e-30)], 0, 16);
      expect(jsM[0]).toBeGreaterThan(0); // the reference keeps the subnormal value
      // the thread's own arithmetic is IEEE again after the call: subnormals survive in JavaScript
      expect(Number.MIN_VALUE * 2).toBe(2 * 5e-324);
      expect(Math.fround(1e-40)).not.toBe(0);
      expect(new Float32Array([1e-40])[0] * 0.5).not.toBe(0);
    });

    it('gather copies rows through the normalization table bit for bit, by index or in order', () => {
      const pixels = 13;
      const N = 40;
      const images = new Uint8Array(N * pixels).map(() => rng.int(256));
      const labels = new Uint8Array(N).map(() => rng.int(10));
      const table = new Float32Array(256).map((_, v) => (v / 255 - 0.1307) / 0.3081);
      const index = new Uint32Array(N).map(() => rng.int(N));
      for (const [idx, start, rows] of [[index, 3, 17], [null, 5, 9], [index, 0, 1], [null, 0, N]] as const) {
        arena.reset();
        const x = arena.take(rows * pixels);
        const y = new Int32Array(rows).fill(-1);
        const ex = new Float32Array(rows * pixels);
        const ey = new Int32Array(rows);
        ref.gather(ex, ey, images, labels, idx, start, rows, pixels, table);
        k.gather(x, y, images, labels, idx, start, rows, pixels, table);
        const what = `gather ${idx ? 'by index' : 'in order'} from ${start}, ${rows} rows`;
        expectClose(x, ex, 0, 0, what);
        expect(Array.from(y), what).toEqual(Array.from(ey));
        arena.checkGuards(what);
      }
    });

    it('the tolerance catches a single missing term', () => {
      arena.reset();
      const [B, C, OC] = [16, 784, 128];
      const inp = arena.random(B * C);
      const w = arena.random(OC * C);
      const bias = arena.random(OC);
      const out = arena.take(B * OC);
      k.linearForward(out, inp, w, bias, B, C, OC);
      const missing = new Float64Array(B * OC);
      const wrong = f64(w);
      for (let o = 0; o < OC; o++) wrong[o * C + C - 1] = 0; // drop the product of the last column
      ref.linearForward(missing, f64(inp), wrong, f64(bias), B, C, OC);
      expect(() => expectClose(out, missing, tol(C + 1).atol, tol(C + 1).rtol, 'missing term')).toThrow();
    });
  });
}

describe('loading', () => {
  it('auto picks native where the addon loaded, else relaxed where supported; js without a memory', async () => {
    const wasm = enableRelaxedSimd() ? 'relaxed' : 'simd';
    expect((await loadKernels('auto', memory)).family).toBe(native.ok ? 'native' : wasm);
    expect((await loadKernels('auto', null)).family).toBe(native.ok ? 'native' : 'js');
    expect(await loadKernels('js', memory)).toBe(jsKernels);
    await expect(loadKernels('simd', null)).rejects.toThrow(/needs the shared WebAssembly.Memory/);
    const r = resolveKernels('auto', memory);
    if (native.ok) expect(r).toMatchObject({ family: 'native', isa: native.addon.isa, fallback: null });
    else expect(r.fallback).toMatch(/^using the (relaxed|simd) kernels: the native addon was not built \(.+\)$/);
  });

  it.runIf(native.ok)('a worker thread loads its own instance of the addon and works on the shared memory', async () => {
    const n = 37;
    const all = new Float32Array(memory.buffer);
    const at = 3001; // float index, deliberately not vector-aligned
    for (let i = 0; i < n; i++) {
      all[at + i] = i - 4.5; // dout
      all[at + 100 + i] = (i % 3) - 1; // out
      all[at + 200 + i] = NaN; // dinp
    }
    const src = `
      const { parentPort, workerData: d } = require('node:worker_threads');
      const addon = require(d.file);
      const all = new Float32Array(d.memory.buffer);
      addon.reluBackward(all.subarray(d.at + 200, d.at + 200 + d.n), all.subarray(d.at, d.at + d.n),
                         all.subarray(d.at + 100, d.at + 100 + d.n), d.n);
      parentPort.postMessage(addon.isa);`;
    const worker = new Worker(src, { eval: true, workerData: { memory, file: nativeBuildPath(), at, n } });
    const reply = await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(reply).toBe(native.ok ? native.addon.isa : '');
    const expected = new Float32Array(n);
    ref.reluBackward(expected, all.subarray(at, at + n), all.subarray(at + 100, at + 100 + n), n);
    expectClose(all.subarray(at + 200, at + 200 + n), expected, 0, 0, 'reluBackward from a worker');
  });

  it('a worker thread instantiates the same module on the same memory and sees what the main thread wrote', async () => {
    const n = 10;
    const all = new Float32Array(memory.buffer);
    const at = 1000; // float index
    for (let i = 0; i < n; i++) {
      all[at + i] = i - 4.5; // dout
      all[at + 100 + i] = i % 3 - 1; // out
      all[at + 200 + i] = NaN; // dinp
    }
    const family = enableRelaxedSimd() ? 'relaxed' : 'simd';
    const src = `
      const { parentPort, workerData: d } = require('node:worker_threads');
      WebAssembly.instantiate(d.bytes, { env: { memory: d.memory } }).then(({ instance }) => {
        instance.exports.relu_bwd(4 * (d.at + 200), 4 * d.at, 4 * (d.at + 100), d.n);
        parentPort.postMessage('done');
      }, (e) => parentPort.postMessage(String(e)));`;
    const worker = new Worker(src, { eval: true, workerData: { memory, bytes: readFileSync(wasmPath(family)), at, n } });
    const reply = await new Promise((resolve) => worker.once('message', resolve));
    await worker.terminate();
    expect(reply).toBe('done');
    const expected = new Float32Array(n);
    ref.reluBackward(expected, all.subarray(at, at + n), all.subarray(at + 100, at + 100 + n), n);
    expectClose(all.subarray(at + 200, at + 200 + n), expected, 0, 0, 'relu_bwd from a worker');
  });
});
