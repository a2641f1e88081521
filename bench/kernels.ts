// Kernel benchmark: every kernel × family (js, simd, relaxed, native on each of its instruction-set paths
// this CPU has: native-avx512, native-avx2) on the model's real shapes.
//
// Each variant is first checked against the float64 reference (linear kernels, with the tolerance of
// test/wasm-kernels.test.ts) or against the js family bit for bit (elementwise kernels), and only then
// timed: warm-up, then the median of `repeats` timed runs of at least `minMs` each. Rates are GFLOP/s
// (2 flops per multiply-add) for the linear kernels and GB/s of memory traffic for the others, with the
// ratio to the js family measured in the same run.
// Times are this process's CPU time, not wall time: the kernels run on one thread, and on a shared
// machine wall time also counts whatever else ran while this process waited for a core.
//
// For the convolutional net (`--model cnn`, or its older spelling `--conv`) it times the cnn's kernels instead
// (issue 11): conv2d forward (+ReLU) and backward, the 2×2 max-pool, and the fused conv+ReLU+pool kernels where a
// family has them, per family, on the net's real layers (by default conv1 1→16 on 28×28, conv2 16→32 on 12×12),
// plus, for each native path, the direct convolution on one image at a time (vectors along a row of outputs, no
// lanes), kept for comparison; then the cnn's linear head (by default 512→128→10) as training runs it, and the
// whole net's forward + backward.
//
//   mnist-par bench kernels [--model mlp|cnn] [--channels c1,c2] [--hidden …]
import { packageRoot } from '../src/paths.js';
import { cpus, arch, platform } from 'node:os';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { UsageError, UserError } from '../src/errors.js';
import { writeFileAtomic } from '../src/fsutil.js';
import * as ref from '../src/kernels/reference.js';
import {
  enableRelaxedSimd, jsKernels, loadKernels, simdSupported, type KernelFamily, type Kernels,
} from '../src/kernels/wasm.js';
import { loadNative, nativeKernels, type NativeIsa } from '../src/kernels/native.js';

import {
  DEFAULT_CHANNELS, DEFAULT_CNN_HIDDEN, DEFAULT_HIDDEN, describeModel, modelLayout, type Layout, type ModelSpec,
} from '../src/model.js';
import type { BenchFamily } from './families.js';

/** The families this process can run: js, the WebAssembly ones V8 has, and every native path of this CPU. */
export function availableFamilies(): BenchFamily[] {
  const native = loadNative();
  const paths = native.ok ? (['avx2', 'avx512'] as const).filter((p) => native.addon.paths[p]) : [];
  return ['js', ...(simdSupported() ? ['simd' as const] : []), ...(enableRelaxedSimd() ? ['relaxed' as const] : []),
    ...paths.map((p) => `native-${p}` as const)];
}

async function loadBenchFamily(f: BenchFamily, memory: WebAssembly.Memory): Promise<Kernels> {
  if (!f.startsWith('native-')) return loadKernels(f as KernelFamily, memory);
  const native = loadNative();
  if (!native.ok) throw new UserError(`--kernels ${f}: the native addon ${native.reason}`);
  const isa = f.slice('native-'.length) as NativeIsa;
  if (!native.addon.paths[isa]) throw new UserError(`--kernels ${f}: this CPU has no ${isa} path`);
  return nativeKernels(native.addon, isa);
}
import type { OptimizerConfig } from '../src/optim.js';
import { Rng } from '../src/rng.js';

export interface BenchOptions {
  /** rows of a kernel call to try (default 8, 16, 32, 64: a worker's rows, from batch 64 on 8 threads to batch 128 on 2) */
  batches?: number[];
  /** families to time (default: js, every wasm family this Node runs, every native path this CPU has) */
  families?: BenchFamily[];
  /** the network whose kernels are timed, on its real shapes (default the default mlp,
   *  784→128→256→512→128→10); a cnn's are its convolutions, pools and linear head */
  model?: ModelSpec;
  /** the mlp's layer widths, input to output (another way to give an mlp `model`) */
  layers?: number[];
  /** timed runs per variant; the median is reported (default 7) */
  repeats?: number;
  /** minimum milliseconds of one timed run (default 20) */
  minMs?: number;
  /** where the JSON goes (default <package>/bench/results); null: not saved */
  outDir?: string | null;
  /** the older spelling of `model: the default cnn` (default false) */
  conv?: boolean;
  log?: (line: string) => void;
}

export interface Result {
  kernel: string;
  /** e.g. "784→128" for a layer, "n=…" for elementwise kernels */
  shape: string;
  B: number;
  family: BenchFamily;
  /** median time of one call */
  us: number;
  rate: number;
  unit: 'GFLOP/s' | 'GB/s' | 'k images/s';
  /** rate ÷ the js family's rate for the same kernel and shape (null when js was not timed) */
  vsJs: number | null;
}

const U = 2 ** -24;

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** CPU milliseconds used by this process so far. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Median CPU seconds per call of fn, after warming up (so V8 has compiled and tiered up). */
function time(fn: () => void, repeats: number, minMs: number): number {
  let calls = 0;
  const warm = cpuMs();
  while (cpuMs() - warm < Math.max(30, minMs) || calls < 3) {
    fn();
    calls++;
  }
  const perCall = (cpuMs() - warm) / calls;
  const iters = Math.max(1, Math.ceil(minMs / perCall));
  const samples: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = cpuMs();
    for (let i = 0; i < iters; i++) fn();
    samples.push((cpuMs() - t0) / 1000 / iters);
  }
  return median(samples);
}

/** Throws unless |a − e| ≤ atol + rtol·|e| everywhere (NaN fails). */
function verify(a: ArrayLike<number>, e: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  for (let i = 0; i < e.length; i++) {
    if (!(Math.abs(a[i] - e[i]) <= atol + rtol * Math.abs(e[i]))) {
      throw new Error(`bench: ${what} disagrees with the reference at ${i}: ${a[i]} vs ${e[i]}; not timing it`);
    }
  }
}
const tolFor = (K: number) => [16 * U * K, 16 * U * Math.sqrt(K)] as const;

/** The network `opts` asks for: `model`, else an mlp of `layers`, else the default cnn for `conv`, else the default mlp. */
export function benchModel(opts: Pick<BenchOptions, 'model' | 'layers' | 'conv'>): ModelSpec {
  if (opts.model) return opts.model;
  if (opts.layers) return { kind: 'mlp', hidden: opts.layers.slice(1, -1) };
  if (opts.conv) return { kind: 'cnn', channels: DEFAULT_CHANNELS, hidden: DEFAULT_CNN_HIDDEN };
  return { kind: 'mlp', hidden: DEFAULT_HIDDEN };
}

/** The file name prefix of a kernels result: kernels-<timestamp>.json for an mlp, kernels-cnn-… for a cnn. */
export function kernelsPrefix(spec: ModelSpec): string {
  return spec.kind === 'mlp' ? 'kernels' : `kernels-${spec.kind}`;
}

export async function benchKernels(opts: BenchOptions = {}): Promise<Result[]> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const spec = benchModel(opts);
  const relaxed = enableRelaxedSimd();
  const families = opts.families ?? availableFamilies();
  if (spec.kind === 'cnn') return benchCnn(opts, spec, families, relaxed, log);
  const batches = opts.batches ?? [8, 16, 32, 64];
  const repeats = opts.repeats ?? 7;
  const minMs = opts.minMs ?? 20;
  const layout = modelLayout(spec);
  const layers = layout.layers;
  const P = layout.size;
  const maxB = Math.max(...batches);
  const a = await linearArena(layout, maxB, families);
  const { inp, dout, dinp, grad, param, moments, kernels } = a;

  const results: Result[] = [];
  const record = recorder(results);

  for (const B of batches) {
    timeLinear(a, layout, B, false, repeats, minMs, record);
    // the whole network's kernels as training runs them, one shard: total flops over total time (the
    // forward on transposed weights where the family has it)
    for (const [family, k] of kernels) {
      record('mlp fwd+bwd', layers.join('-'), B, family, ...asTrained(results, B, family, k, 'GFLOP/s'));
    }
  }

  // Elementwise kernels: bit-identical across families, so checked against js exactly.
  const n = maxB * Math.max(...layers.slice(1, -1));
  const reluExpected = new Float32Array(n);
  ref.reluBackward(reluExpected, dout.subarray(0, n), inp.subarray(0, n), n);
  const adamw: OptimizerConfig = {
    optimizer: 'adamw', momentum: 0, dampening: 0, nesterov: false, weightDecay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8,
  };
  const momentum: OptimizerConfig = { ...adamw, optimizer: 'sgd', momentum: 0.9, weightDecay: 5e-4 };
  const paramStart = Float32Array.from(param);
  const momentStart = moments.map((m) => Float32Array.from(m));
  const restore = () => {
    param.set(paramStart);
    moments.forEach((m, i) => m.set(momentStart[i]));
  };
  // The expected bits come from the js family (optim.ts), never from a family under test.
  const stepExpected = new Map<string, Float32Array>();
  for (const [name, cfg, nState] of [['adamw', adamw, 2], ['sgd momentum', momentum, 1]] as const) {
    restore();
    jsKernels.optimizerStep(cfg, 1e-3, 1, param, grad, moments.slice(0, nState), 0, P);
    stepExpected.set(name, Float32Array.from(param));
  }
  for (const [family, k] of kernels) {
    dinp.fill(NaN);
    k.reluBackward(dinp, dout, inp, n);
    verify(dinp.subarray(0, n), reluExpected, 0, 0, `${family} reluBackward`);
    record('reluBackward', `n=${n}`, maxB, family, time(() => k.reluBackward(dinp, dout, inp, n), repeats, minMs),
           12 * n, 'GB/s');

    for (const [name, cfg, nState] of [['adamw', adamw, 2], ['sgd momentum', momentum, 1]] as const) {
      const state = moments.slice(0, nState);
      // the js family's bits before it is timed
      restore();
      k.optimizerStep(cfg, 1e-3, 1, param, grad, state, 0, P);
      verify(param, stepExpected.get(name)!, 0, 0, `${family} optimizerStep ${name}`);
      let t = 1;
      // bytes of one step: the gradient read, the parameters and the state read and written
      record(`optimizerStep ${name}`, `P=${P}`, 0, family,
             time(() => k.optimizerStep(cfg, 1e-3, ++t, param, grad, state, 0, P), repeats, minMs),
             4 * (1 + 2 * (1 + nState)) * P, 'GB/s');
    }
  }
  restore();

  log(formatTable(results, families));
  const info = machineInfo(relaxed);
  log(`${info.cpu} · ${info.cores} cores · Node ${info.node} · relaxed SIMD ${relaxed ? 'on' : 'off'} · ` +
      `native ${info.native} · one thread`);
  if (opts.outDir !== null) {
    const path = await saveJson(opts.outDir ?? resultsDir(), kernelsPrefix(spec),
                                { model: describeModel(spec), modelSpec: spec, machine: info, repeats, minMs, results });
    log(`saved ${path}`);
  }
  return results;
}

/**
 * The cnn's kernels (issue 11) on its real shapes: each 5×5 valid convolution (PyTorch's NCHW) forward with its
 * ReLU and backward, each 2×2 max-pool, then the linear head; and sums over what training runs. The first
 * convolution needs no input gradient (its input is the image); the head's first layer does (it goes back
 * to the convolutions).
 */
async function benchCnn(opts: BenchOptions, spec: ModelSpec & { kind: 'cnn' }, families: BenchFamily[], relaxed: boolean,
                        log: (line: string) => void): Promise<Result[]> {
  const batches = opts.batches ?? [16, 32, 64];
  const repeats = opts.repeats ?? 7;
  const minMs = opts.minMs ?? 20;
  const layout = modelLayout(spec);
  const convLayers = layout.conv.map((l, i) => ({ ...l, name: `conv${i + 1}`, dinp: i > 0 }));
  const maxB = Math.max(...batches);
  const most = (f: (l: (typeof convLayers)[number]) => number) => Math.max(...convLayers.map(f));
  const inN = maxB * most((l) => l.C * l.H * l.W);
  const outN = maxB * most((l) => l.OC * (l.H - 4) * (l.W - 4));
  const wN = most((l) => l.OC * l.C * 25);
  const bN = most((l) => l.OC);
  const colsN = most((l) => ref.conv2dScratchLength(l.C, l.OC, l.H, l.W));
  const floats = 2 * inN + 4 * outN + 3 * wN + 2 * bN + colsN + 6 * 64 + 1024;
  const pages = Math.ceil((floats * 4) / 65536) + 1;
  const memory = benchMemory(pages);
  let off = 0;
  const take = (n: number): Float32Array => {
    const v = new Float32Array(memory.buffer, off, n);
    off += Math.ceil(n / 16) * 64;
    return v;
  };
  const rng = new Rng(1);
  const fill = (v: Float32Array, lo = -1, hi = 1): Float32Array => {
    for (let i = 0; i < v.length; i++) v[i] = rng.uniform(lo, hi);
    return v;
  };
  const inp = fill(take(inN));
  const dinp = take(Math.max(inN, outN)); // the conv's input gradient, and the pool's (the size of a conv output)
  const out = take(outN);
  const dout = fill(take(outN));
  const weight = fill(take(wN), -0.2, 0.2);
  const dweight = take(wN);
  const bias = fill(take(bN), -0.1, 0.1);
  const dbias = take(bN);
  const cols = take(colsN);
  const pooled = take(outN);

  const kernels = new Map<BenchFamily, Kernels>();
  for (const f of families) kernels.set(f, await loadBenchFamily(f, memory));
  const native = loadNative();
  // the head in an arena of its own (its kernels are loaded on it)
  const head = await linearArena(layout, maxB, families);

  const results: Result[] = [];
  const record = recorder(results);

  for (const B of batches) {
    for (const l of convLayers) {
      const { C, OC, H, W } = l;
      const OH = H - 4;
      const OW = W - 4;
      const P = OH * OW;
      const shape = `${l.name} ${C}→${OC} ${H}×${W}`;
      const nIn = B * C * H * W;
      const nOut = B * OC * P;
      const nW = OC * C * 25;
      const flops = 2 * B * OC * P * C * 25; // one product of the layer
      const expected = new Float64Array(nOut);
      ref.conv2dForward(expected, f64(inp, nIn), f64(weight, nW), f64(bias, OC), null, B, C, OC, H, W);
      ref.reluForward(expected, expected, nOut);
      const e = { dinp: new Float64Array(nIn), dweight: new Float64Array(nW), dbias: new Float64Array(OC) };
      ref.conv2dBackward(l.dinp ? e.dinp : null, e.dweight, e.dbias, f64(dout, nOut), f64(inp, nIn), f64(weight, nW), null,
                         B, C, OC, H, W);
      const PH = OH >> 1;
      const PW = OW >> 1;
      const poolShape = `${OC}×${OH}×${OW}`;
      // the pool's input is the ReLU's output, with its zeros (ties) and all
      const poolIn = Float32Array.from(expected);
      const poolOut = new Float32Array(B * OC * PH * PW);
      ref.maxPoolForward(poolOut, poolIn, B, OC, OH, OW);
      const poolBack = new Float32Array(nOut);
      ref.maxPoolBackward(poolBack, dout.subarray(0, poolOut.length), poolIn, B, OC, OH, OW);
      // the fused backward's expected gradients: the pool's and the ReLU's backward, then the convolution's
      let eFused: { dinp: Float64Array; dweight: Float64Array; dbias: Float64Array } | null = null;
      const fusedExpected = () => {
        if (eFused) return eFused;
        const g = Float64Array.from(poolBack);
        ref.reluBackward(g, g, poolIn, nOut);
        eFused = { dinp: new Float64Array(nIn), dweight: new Float64Array(nW), dbias: new Float64Array(OC) };
        ref.conv2dBackward(l.dinp ? eFused.dinp : null, eFused.dweight, eFused.dbias, g, f64(inp, nIn), f64(weight, nW),
                           null, B, C, OC, H, W);
        return eFused;
      };
      for (const [family, k] of kernels) {
        const fwd = () => k.conv2dReluForward(out, inp, weight, bias, cols, B, C, OC, H, W);
        out.fill(NaN);
        fwd();
        verify(out.subarray(0, nOut), expected, ...tolFor(C * 25 + 1), `${family} conv2dReluForward ${shape} B=${B}`);
        record('conv2dReluForward', shape, B, family, time(fwd, repeats, minMs), flops, 'GFLOP/s');

        const isa = family.startsWith('native-') ? (family.slice('native-'.length) as NativeIsa) : null;
        const direct = isa && native.ok ? native.addon.paths[isa] : undefined;
        if (direct) {
          const fwdDirect = () => direct.conv2dForwardDirect(out, inp, weight, bias, B, C, OC, H, W, 1);
          out.fill(NaN);
          fwdDirect();
          verify(out.subarray(0, nOut), expected, ...tolFor(C * 25 + 1), `${family} direct conv ${shape} B=${B}`);
          record('conv2dReluForward direct', shape, B, family, time(fwdDirect, repeats, minMs), flops, 'GFLOP/s');
        }

        const bwd = () => k.conv2dBackward(l.dinp ? dinp : null, dweight, dbias, dout, inp, weight, cols, B, C, OC, H, W);
        dweight.fill(NaN);
        dinp.fill(NaN);
        bwd();
        const what = `${family} conv2dBackward ${shape} B=${B}`;
        verify(dweight.subarray(0, nW), e.dweight, ...tolFor(B * P), `${what} dweight`);
        verify(dbias.subarray(0, OC), e.dbias, ...tolFor(B * P), `${what} dbias`);
        if (l.dinp) verify(dinp.subarray(0, nIn), e.dinp, ...tolFor(OC * 25), `${what} dinp`);
        record('conv2dBackward', shape, B, family, time(bwd, repeats, minMs), (l.dinp ? 2 : 1) * flops, 'GFLOP/s');

        // the pool moves bytes: its input read, its output written (backward: dout and inp read, dinp written)
        out.set(poolIn);
        const pf = () => k.maxPoolForward(pooled, out, B, OC, OH, OW);
        pooled.fill(NaN);
        pf();
        verify(pooled.subarray(0, poolOut.length), poolOut, 0, 0, `${family} maxPoolForward ${poolShape} B=${B}`);
        record('maxPoolForward', poolShape, B, family, time(pf, repeats, minMs), 4 * (nOut + poolOut.length), 'GB/s');
        const pb = () => k.maxPoolBackward(dinp, dout, out, B, OC, OH, OW);
        dinp.fill(NaN);
        pb();
        verify(dinp.subarray(0, nOut), poolBack, 0, 0, `${family} maxPoolBackward ${poolShape} B=${B}`);
        record('maxPoolBackward', poolShape, B, family, time(pb, repeats, minMs), 4 * (2 * nOut + poolOut.length), 'GB/s');

        // the fused kernels the net runs where the family has them: convolution + ReLU + pool forward, and the
        // pool + ReLU + convolution backward from the pooled gradient (rates count the convolution's flops)
        if (k.conv2dReluPoolForward) {
          const fused = () => k.conv2dReluPoolForward!(out, pooled, inp, weight, bias, cols, B, C, OC, H, W);
          out.fill(NaN);
          pooled.fill(NaN);
          fused();
          verify(out.subarray(0, nOut), expected, ...tolFor(C * 25 + 1), `${family} conv2dReluPoolForward ${shape} B=${B}`);
          const ePooled = new Float32Array(poolOut.length);
          ref.maxPoolForward(ePooled, out, B, OC, OH, OW);
          verify(pooled.subarray(0, poolOut.length), ePooled, 0, 0, `${family} conv2dReluPoolForward pooled ${shape} B=${B}`);
          record('conv2dReluPoolForward', shape, B, family, time(fused, repeats, minMs), flops, 'GFLOP/s');
        }
        if (k.conv2dReluPoolBackward) {
          out.set(poolIn);
          const dpooled = dout.subarray(0, poolOut.length);
          const fused = () => k.conv2dReluPoolBackward!(l.dinp ? dinp : null, dweight, dbias, dpooled, out, inp, weight, cols,
                                                        B, C, OC, H, W);
          dweight.fill(NaN);
          dinp.fill(NaN);
          fused();
          const ef = fusedExpected();
          const fwhat = `${family} conv2dReluPoolBackward ${shape} B=${B}`;
          verify(dweight.subarray(0, nW), ef.dweight, ...tolFor(B * P), `${fwhat} dweight`);
          verify(dbias.subarray(0, OC), ef.dbias, ...tolFor(B * P), `${fwhat} dbias`);
          if (l.dinp) verify(dinp.subarray(0, nIn), ef.dinp, ...tolFor(OC * 25), `${fwhat} dinp`);
          record('conv2dReluPoolBackward', shape, B, family, time(fused, repeats, minMs), (l.dinp ? 2 : 1) * flops, 'GFLOP/s');
        }
      }
    }
    // the conv layers' convolution kernels (pools and ReLU backward left out): total flops over total time, and
    // the images per second that alone would allow on one thread; then, for families with the fused kernels, the
    // conv blocks as the net runs them (convolution, ReLU and pool, both ways)
    const convNames = convLayers.map((l) => l.name).join('+');
    for (const family of kernels.keys()) {
      const total = (re: RegExp, kernel: string, unitKernel: string) => {
        const mine = results.filter((r) => r.B === B && r.family === family && re.test(r.kernel));
        if (mine.length === 0) return;
        const flops = mine.reduce((sum, r) => sum + (r.rate * 1e9 * r.us) / 1e6, 0);
        const us = mine.reduce((sum, r) => sum + r.us, 0);
        record(kernel, convNames, B, family, us / 1e6, flops, 'GFLOP/s');
        record(unitKernel, convNames, B, family, us / 1e6, B * 1e6, 'k images/s');
      };
      total(/^conv2d(ReluForward|Backward)$/, 'conv layers fwd+bwd', 'conv layers images/s');
      total(/^conv2dReluPool(Forward|Backward)$/, 'conv blocks fused fwd+bwd', 'conv blocks fused images/s');
    }

    // the linear head, as training runs it (its first layer's input gradient goes back to the convolutions)
    timeLinear(head, layout, B, true, repeats, minMs, record);
    const headShape = layout.layers.join('-');
    for (const [family, k] of head.kernels) {
      const mine = results.filter((r) => r.B === B && r.family === family && r.kernel.startsWith('linear'));
      record('cnn head fwd+bwd', headShape, B, family, ...asTrained(mine, B, family, k, 'GFLOP/s'));
      // the whole net: convolutions and head; pools and ReLU backward left out
      record('cnn fwd+bwd', `${convNames}+${headShape}`, B, family, ...asTrained(results, B, family, k, 'GFLOP/s'));
      record('cnn images/s', `${convNames}+${headShape}`, B, family, ...asTrained(results, B, family, k, 'k images/s'));
    }
  }

  log(formatTable(results, families));
  const info = machineInfo(relaxed);
  log(`${describeModel(spec)} · ${info.cpu} · ${info.cores} cores · Node ${info.node} · relaxed SIMD ${relaxed ? 'on' : 'off'} · ` +
      `native ${info.native} · one thread`);
  if (opts.outDir !== null) {
    const path = await saveJson(opts.outDir ?? resultsDir(), kernelsPrefix(spec),
                                { model: describeModel(spec), modelSpec: spec, machine: info, repeats, minMs, results });
    log(`saved ${path}`);
  }
  return results;
}

/** Where benchmark JSON goes by default: <package>/bench/results. */
export function resultsDir(): string {
  return join(packageRoot(), 'bench', 'results');
}

/** Writes `data` as <dir>/<prefix>-<timestamp>.json (atomically) and returns the path. */
export async function saveJson(dir: string, prefix: string, data: unknown): Promise<string> {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new UserError(`--out ${dir}: cannot create the results folder (${(e as NodeJS.ErrnoException).code}); pass a writable --out`);
  }
  const path = join(dir, `${prefix}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFileAtomic(path, JSON.stringify(data, null, 2) + '\n');
  return path;
}

export function machineInfo(relaxed: boolean) {
  const c = cpus();
  const native = loadNative();
  return {
    cpu: c[0]?.model ?? 'unknown', cores: c.length, arch: arch(), platform: platform(),
    node: process.version, v8: process.versions.v8, relaxedSimd: relaxed,
    /** the native path `auto` takes here (avx512, avx2) or why there is none */
    native: native.ok ? native.addon.isa : `none: the addon ${native.reason}`,
    nativePaths: native.ok ? Object.keys(native.addon.paths) : [],
    date: new Date().toISOString(),
  };
}

/** One line per kernel, shape and B; one rate column per family, then each wasm family's speed-up over js. */
export function formatTable(results: Result[], families: BenchFamily[]): string {
  const keys = [...new Set(results.map((r) => `${r.kernel}\u0000${r.shape}\u0000${r.B}`))];
  const fast = families.filter((f) => f !== 'js');
  const header = ['kernel', 'shape', 'B', 'unit', ...families, ...(families.includes('js') ? fast.map((f) => `${f}/js`) : [])];
  const rows = keys.map((key) => {
    const [kernel, shape, B] = key.split('\u0000');
    const of = (f: BenchFamily) => results.find((r) => r.kernel === kernel && r.shape === shape && String(r.B) === B && r.family === f);
    // the forward on transposed weights has no js row: take the unit from any family that has the kernel
    const unit = families.map(of).find((r) => r !== undefined)?.unit ?? '';
    return [kernel, shape, B === '0' ? '' : B, unit,
      ...families.map((f) => of(f)?.rate.toFixed(2) ?? '–'),
      ...(families.includes('js') ? fast.map((f) => (of(f)?.vsJs ? `×${of(f)!.vsJs!.toFixed(1)}` : '–')) : [])];
  });
  return textTable(header, rows, 2);
}

/** Aligned text columns under a dashed rule: the first `textColumns` left-aligned, the rest (numbers) right. */
export function textTable(header: string[], rows: string[][], textColumns: number): string {
  const widthsOf = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < textColumns ? c.padEnd(widthsOf[i]) : c.padStart(widthsOf[i]))).join('  ');
  return [line(header), line(widthsOf.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchKernels().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}

/** Records a timing as a rate (amount / s / 1e9) beside the js family's rate for the same kernel, shape and B. */
function recorder(results: Result[]) {
  return (kernel: string, shape: string, B: number, family: BenchFamily, seconds: number, amount: number, unit: Result['unit']) => {
    const js = results.find((r) => r.kernel === kernel && r.shape === shape && r.B === B && r.family === 'js');
    const rate = amount / seconds / 1e9;
    results.push({ kernel, shape, B, family, us: seconds * 1e6, rate, unit, vsJs: js ? rate / js.rate : null });
  };
}

const f64 = (v: Float32Array, n: number) => Float64Array.from(v.subarray(0, n));

/** The views of one shared arena, as in training, for the linear layers of `layout` at up to maxB rows (plus
 *  the gradient, parameters and moments the step kernels read), and every family's kernels on it. */
async function linearArena(layout: Layout, maxB: number, families: BenchFamily[]) {
  const P = layout.size;
  const maxW = Math.max(...layout.linear.map((s) => s.C * s.OC));
  const maxN = Math.max(...layout.layers);
  const floats = 4 * maxB * maxN + 3 * maxW + 2 * maxN + 4 * P + 64;
  const pages = Math.ceil((floats * 4) / 65536) + 1;
  const memory = benchMemory(pages);
  let off = 0;
  const take = (n: number): Float32Array => {
    const v = new Float32Array(memory.buffer, off, n);
    off += Math.ceil(n / 16) * 64; // whole cache lines, like the arena
    return v;
  };
  const rng = new Rng(1);
  const fill = (v: Float32Array, lo = -1, hi = 1): Float32Array => {
    for (let i = 0; i < v.length; i++) v[i] = rng.uniform(lo, hi);
    return v;
  };
  const views = {
    inp: fill(take(maxB * maxN)),
    dout: fill(take(maxB * maxN)),
    out: take(maxB * maxN),
    dinp: take(maxB * maxN),
    weight: fill(take(maxW), -0.1, 0.1),
    weightT: take(maxW),
    dweight: take(maxW),
    bias: fill(take(maxN)),
    dbias: take(maxN),
    grad: fill(take(P), -1e-2, 1e-2),
    param: fill(take(P)),
    moments: [fill(take(P), -1e-3, 1e-3), fill(take(P), 0, 1e-6)],
  };
  const kernels = new Map<BenchFamily, Kernels>();
  for (const f of families) kernels.set(f, await loadBenchFamily(f, memory));
  return { ...views, kernels };
}

type RecordFn = ReturnType<typeof recorder>;

/**
 * Verifies, then times, every linear layer of `layout` at B rows in every family: the forward (+ReLU but the
 * last), the forward on transposed weights where the family has it, and the backward; the first layer's input
 * gradient only with `inputGrad` (a cnn's head passes it back to the convolutions, an mlp's input needs none).
 */
function timeLinear(a: Awaited<ReturnType<typeof linearArena>>, layout: Layout, B: number, inputGrad: boolean,
                    repeats: number, minMs: number, record: RecordFn): void {
  const { inp, dout, out, dinp, weight, weightT, dweight, bias, dbias, kernels } = a;
  for (let l = 0; l < layout.linear.length; l++) {
    const { C, OC } = layout.linear[l];
    const shape = `${C}→${OC}`;
    const last = l === layout.linear.length - 1;
    const fwdName = last ? 'linearForward' : 'linearReluForward';
    const expected = new Float64Array(B * OC);
    ref.linearForward(expected, f64(inp, B * C), f64(weight, OC * C), f64(bias, OC), B, C, OC);
    if (!last) ref.reluForward(expected, expected, B * OC);
    const withDinp = l > 0 || inputGrad;
    const e = { dinp: new Float64Array(B * C), dweight: new Float64Array(OC * C), dbias: new Float64Array(OC) };
    ref.linearBackward(withDinp ? e.dinp : null, e.dweight, e.dbias, f64(dout, B * OC), f64(inp, B * C),
                       f64(weight, OC * C), B, C, OC);
    for (const [family, k] of kernels) {
      const fwd = () => (last ? k.linearForward : k.linearReluForward)(out, inp, weight, bias, B, C, OC);
      out.fill(NaN);
      fwd();
      verify(out.subarray(0, B * OC), expected, ...tolFor(C + 1), `${family} ${fwdName} ${shape} B=${B}`);
      record(fwdName, shape, B, family, time(fwd, repeats, minMs), 2 * B * C * OC, 'GFLOP/s');
      if (k.linearForwardT && k.linearReluForwardT && k.transposeRows) {
        // the forward pass training runs in this family: on the transposed copy of the weights
        k.transposeRows(weightT, weight, C, OC, 0, OC * C);
        const fwdT = () => (last ? k.linearForwardT! : k.linearReluForwardT!)(out, inp, weightT, bias, B, C, OC);
        out.fill(NaN);
        fwdT();
        verify(out.subarray(0, B * OC), expected, ...tolFor(C + 1), `${family} ${fwdName}T ${shape} B=${B}`);
        record(`${fwdName}T`, shape, B, family, time(fwdT, repeats, minMs), 2 * B * C * OC, 'GFLOP/s');
      }

      const bwd = () => k.linearBackward(withDinp ? dinp : null, dweight, dbias, dout, inp, weight, B, C, OC);
      dweight.fill(NaN);
      dinp.fill(NaN);
      bwd();
      const what = `${family} linearBackward ${shape} B=${B}`;
      verify(dweight.subarray(0, OC * C), e.dweight, ...tolFor(B), `${what} dweight`);
      verify(dbias.subarray(0, OC), e.dbias, ...tolFor(B), `${what} dbias`);
      if (withDinp) verify(dinp.subarray(0, B * C), e.dinp, ...tolFor(OC), `${what} dinp`);
      record('linearBackward', shape, B, family, time(bwd, repeats, minMs), (withDinp ? 4 : 2) * B * C * OC, 'GFLOP/s');
    }
  }
}

/**
 * The kernels at B rows of `family` that training runs, summed: [seconds, amount] for record(). Linear
 * forwards on transposed weights where the family has them (else on the plain ones); with `unit` 'GFLOP/s'
 * every linear and (unfused) conv kernel's flops, with 'k images/s' B images in that time.
 */
function asTrained(results: Result[], B: number, family: BenchFamily, k: Kernels,
                   unit: 'GFLOP/s' | 'k images/s'): [number, number, Result['unit']] {
  const skip = k.linearForwardT ? /^linear(Relu)?Forward$/ : /^linear(Relu)?ForwardT$/;
  const mine = results.filter((r) => r.B === B && r.family === family && r.unit === 'GFLOP/s' && !skip.test(r.kernel) &&
    /^(linear(Relu)?Forward|linearBackward|conv2dReluForward|conv2dBackward)T?$/.test(r.kernel));
  const flops = mine.reduce((sum, r) => sum + (r.rate * 1e9 * r.us) / 1e6, 0);
  const us = mine.reduce((sum, r) => sum + r.us, 0);
  return [us / 1e6, unit === 'GFLOP/s' ? flops : B * 1e6, unit];
}

/** The shared memory a timing run works in; sizes past what WebAssembly allows are a one-line UsageError. */
function benchMemory(pages: number): WebAssembly.Memory {
  if (pages > 65536) {
    throw new UsageError(`bench kernels: these sizes need ${pages} pages of 64 KiB, more than the 4 GiB one shared memory ` +
      'holds; give smaller --batch-size, --channels or --hidden');
  }
  try {
    return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new UsageError(`bench kernels: cannot allocate ${pages * 64} KiB of shared memory (${e.message}); give smaller --batch-size, --channels or --hidden`);
  }
}
