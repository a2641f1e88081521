// Loader for the native kernel family (native/kernels.cc, a Node-API addon) and its KernelSet wrapper.
//
// Where the addon comes from, first found wins:
//   dist/native/mnist_par.node                  built from native/ by scripts/build-native.mjs (npm install)
//   prebuilds/<platform>-<arch>/*.node           a prebuilt binary in node-gyp-build's layout, so that a
//                                                registry release could ship binaries and skip the compiler
// MNIST_PAR_NATIVE=off hides the addon (as if it had not been built), to run or test the fallback.
//
// The addon is context-aware: every worker thread loads its own instance, and the kernels share no mutable
// state. They take any Float32Array (in training, views of the shared arena) and check each view's length
// against the sizes they are given. The linear kernels round differently from the other families (wider
// vectors, fused multiply-adds, other summation orders); ReLU backward, the optimizers and the gather are
// bit-identical to the reference, as in the WebAssembly families, except where a value is
// subnormal: each native call runs with flush-to-zero (see FlushDenormals in kernels.cc).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';
import { optimizerStateCount, type OptimizerConfig } from '../optim.js';
import * as ref from './reference.js';
import { withWholeBackward, type F, type KernelHalves, type Kernels } from './index.js';

export type NativeIsa = 'avx512' | 'avx2';

/** The functions of one instruction-set path of the addon (see native/kernels.cc for each one's shapes). */
export interface NativePath {
  readonly isa: NativeIsa;
  linearForward(out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array,
                B: number, C: number, OC: number, relu: number): void;
  linearForwardT(out: Float32Array, inp: Float32Array, weightT: Float32Array, bias: Float32Array,
                 B: number, C: number, OC: number, relu: number): void;
  transposeRows(weightT: Float32Array, weight: Float32Array, C: number, OC: number, from: number, to: number): void;
  linearBackwardWeight(dweight: Float32Array, dbias: Float32Array, dout: Float32Array, inp: Float32Array, B: number,
                       C: number, OC: number, o0: number, o1: number): void;
  linearBackwardInput(dinp: Float32Array, dout: Float32Array, weight: Float32Array, B: number, C: number, OC: number): void;
  reluBackward(dinp: Float32Array, dout: Float32Array, out: Float32Array, n: number): void;
  sgd(param: Float32Array, grad: Float32Array, start: number, end: number, buf: Float32Array | null, lr: number,
      wd: number, mu: number, damp: number, first: number, nesterov: number): void;
  adam(param: Float32Array, grad: Float32Array, start: number, end: number, m: Float32Array, v: Float32Array, b1: number,
       c1: number, b2: number, c2: number, l2: number, keep: number, step: number, bc2: number, eps: number): void;
  gather(x: Float32Array, y: Int32Array, images: Uint8Array, labels: Uint8Array | Uint16Array, index: Uint32Array | null,
         start: number, rows: number, pixels: number, table: Float32Array): void;
  /** with pooled, also the 2×2 max-pool of out into it (KernelSet.conv2dReluPoolForward) */
  conv2dForward(out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array, cols: Float32Array,
                B: number, C: number, OC: number, H: number, W: number, relu: number, pooled?: Float32Array | null): void;
  /** the direct convolution (one image at a time, no lanes), kept for the benchmark's comparison; not in the KernelSet */
  conv2dForwardDirect(out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array,
                      B: number, C: number, OC: number, H: number, W: number, relu: number): void;
  /** output channels o0..o1; with out, dout is the pooled map's gradient of the max-pool of the ReLU output out
   *  (KernelSet.conv2dReluPoolBackwardWeight) */
  conv2dBackwardWeight(dweight: Float32Array, dbias: Float32Array, dout: Float32Array, inp: Float32Array,
                       cols: Float32Array, B: number, C: number, OC: number, H: number, W: number, o0: number, o1: number,
                       out?: Float32Array | null): void;
  /** with out, dout is the pooled map's gradient (KernelSet.conv2dReluPoolBackwardInput) */
  conv2dBackwardInput(dinp: Float32Array, dout: Float32Array, weight: Float32Array, cols: Float32Array, B: number,
                      C: number, OC: number, H: number, W: number, out?: Float32Array | null): void;
  maxPoolForward(out: Float32Array, inp: Float32Array, B: number, C: number, H: number, W: number): void;
  /** relu = 1: also the mask of the ReLU whose output inp is (KernelSet.maxPoolReluBackward) */
  maxPoolBackward(dinp: Float32Array, dout: Float32Array, inp: Float32Array, B: number, C: number, H: number,
                  W: number, relu?: number): void;
}

export interface NativeAddon extends NativePath {
  /** every path this CPU runs, by name */
  readonly paths: Partial<Record<NativeIsa, NativePath>>;
}

/** reason completes "the native addon …": "was not built (…)", "is hidden by …", "did not load: …" */
export type NativeLoad = { ok: true; addon: NativeAddon; file: string } | { ok: false; reason: string };

export const ISA_NAMES: Record<NativeIsa, string> = { avx512: 'AVX-512', avx2: 'AVX2+FMA' };

/** Where the build puts the addon, and its report of the last build. */
export function nativeBuildPath(): string {
  return join(packageRoot(), 'dist', 'native', 'mnist_par.node');
}
export function nativeBuildReport(): string {
  return join(packageRoot(), 'dist', 'native', 'build.json');
}

function prebuiltPath(): string | null {
  const dir = join(packageRoot(), 'prebuilds', `${process.platform}-${process.arch}`);
  if (!existsSync(dir)) return null;
  const f = readdirSync(dir).filter((n) => n.endsWith('.node')).sort()[0];
  return f ? join(dir, f) : null;
}

/** Why the build left no addon, from its report (one phrase), or a generic hint. */
function whyNotBuilt(): string {
  try {
    const r = JSON.parse(readFileSync(nativeBuildReport(), 'utf8')) as { ok?: boolean; reason?: string };
    if (r.ok === false && r.reason) return `was not built (${r.reason})`;
  } catch {
    // no report: the build never ran here
  }
  return 'was not built (run npm run build where a C++ compiler is installed)';
}

let cached: NativeLoad | null = null;

/** Loads the addon once per thread; never throws: a failure is a reason the caller can print. */
export function loadNative(): NativeLoad {
  if (cached) return cached;
  cached = tryLoad();
  return cached;
}

function tryLoad(): NativeLoad {
  if (process.env.MNIST_PAR_NATIVE === 'off') return { ok: false, reason: 'is hidden by MNIST_PAR_NATIVE=off' };
  if (process.arch !== 'x64') return { ok: false, reason: `has paths for x86-64 only, and this is ${process.arch}` };
  const file = existsSync(nativeBuildPath()) ? nativeBuildPath() : prebuiltPath();
  if (file === null) return { ok: false, reason: whyNotBuilt() };
  try {
    const addon = createRequire(import.meta.url)(file) as NativeAddon;
    return { ok: true, addon, file };
  } catch (e) {
    const why = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    return { ok: false, reason: `did not load (${file}: ${why})` };
  }
}

/** The native family's kernels on one path (default: the one the addon chose for this CPU). */
export function nativeKernels(addon: NativeAddon, isa?: NativeIsa): Kernels & { readonly isa: NativeIsa } {
  const x: NativePath = isa ? addon.paths[isa] ?? missingPath(isa) : addon;
  const f32 = (v: unknown, what: string): Float32Array => {
    if (!(v instanceof Float32Array)) throw new Error(`native kernels: ${what} must be a Float32Array`);
    return v;
  };
  return {
    ...withWholeBackward<KernelHalves>({
      name: 'native',
      linearForward: (out: F, inp: F, weight: F, bias: F, B: number, C: number, OC: number) =>
        x.linearForward(f32(out, 'out'), f32(inp, 'inp'), f32(weight, 'weight'), f32(bias, 'bias'), B, C, OC, 0),
      linearReluForward: (out: F, inp: F, weight: F, bias: F, B: number, C: number, OC: number) =>
        x.linearForward(f32(out, 'out'), f32(inp, 'inp'), f32(weight, 'weight'), f32(bias, 'bias'), B, C, OC, 1),
      linearForwardT: (out: F, inp: F, weightT: F, bias: F, B: number, C: number, OC: number) =>
        x.linearForwardT(f32(out, 'out'), f32(inp, 'inp'), f32(weightT, 'weightT'), f32(bias, 'bias'), B, C, OC, 0),
      linearReluForwardT: (out: F, inp: F, weightT: F, bias: F, B: number, C: number, OC: number) =>
        x.linearForwardT(f32(out, 'out'), f32(inp, 'inp'), f32(weightT, 'weightT'), f32(bias, 'bias'), B, C, OC, 1),
      transposeRows: (weightT: F, weight: F, C: number, OC: number, from: number, to: number) =>
        x.transposeRows(f32(weightT, 'weightT'), f32(weight, 'weight'), C, OC, from, to),
      linearBackwardWeight: (dweight: F, dbias: F, dout: F, inp: F, B: number, C: number, OC: number, o0: number, o1: number) =>
        x.linearBackwardWeight(f32(dweight, 'dweight'), f32(dbias, 'dbias'), f32(dout, 'dout'), f32(inp, 'inp'), B, C, OC,
                               o0, o1),
      linearBackwardInput: (dinp: F, dout: F, weight: F, B: number, C: number, OC: number) =>
        x.linearBackwardInput(f32(dinp, 'dinp'), f32(dout, 'dout'), f32(weight, 'weight'), B, C, OC),
      reluBackward: (dinp: F, dout: F, out: F, n: number) => x.reluBackward(f32(dinp, 'dinp'), f32(dout, 'dout'), f32(out, 'out'), n),
      // B×10: too small to pay for a call
      crossEntropyForward: ref.crossEntropyForward,
      crossEntropyBackward: ref.crossEntropyBackward,
      countCorrect: ref.countCorrect,
      // groups of images in vector lanes (kernels.h): each image's bits do not depend on the others
      conv2dForward: (out: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number, H: number, W: number) =>
        x.conv2dForward(f32(out, 'out'), f32(inp, 'inp'), f32(weight, 'weight'), f32(bias, 'bias'), f32(cols, 'cols'),
                        B, C, OC, H, W, 0),
      conv2dReluForward: (out: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number, H: number, W: number) =>
        x.conv2dForward(f32(out, 'out'), f32(inp, 'inp'), f32(weight, 'weight'), f32(bias, 'bias'), f32(cols, 'cols'),
                        B, C, OC, H, W, 1),
      conv2dReluPoolForward: (out: F, pooled: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number,
                              H: number, W: number) =>
        x.conv2dForward(f32(out, 'out'), f32(inp, 'inp'), f32(weight, 'weight'), f32(bias, 'bias'), f32(cols, 'cols'),
                        B, C, OC, H, W, 1, f32(pooled, 'pooled')),
      conv2dBackwardWeight: (dweight: F, dbias: F, dout: F, inp: F, cols: F, B: number, C: number, OC: number, H: number,
                             W: number, o0: number, o1: number) =>
        x.conv2dBackwardWeight(f32(dweight, 'dweight'), f32(dbias, 'dbias'), f32(dout, 'dout'), f32(inp, 'inp'),
                               f32(cols, 'cols'), B, C, OC, H, W, o0, o1),
      conv2dBackwardInput: (dinp: F, dout: F, weight: F, cols: F, B: number, C: number, OC: number, H: number, W: number) =>
        x.conv2dBackwardInput(f32(dinp, 'dinp'), f32(dout, 'dout'), f32(weight, 'weight'), f32(cols, 'cols'), B, C, OC, H, W),
      conv2dReluPoolBackwardWeight: (dweight: F, dbias: F, dpooled: F, out: F, inp: F, cols: F, B: number, C: number,
                                     OC: number, H: number, W: number, o0: number, o1: number) =>
        x.conv2dBackwardWeight(f32(dweight, 'dweight'), f32(dbias, 'dbias'), f32(dpooled, 'dpooled'), f32(inp, 'inp'),
                               f32(cols, 'cols'), B, C, OC, H, W, o0, o1, f32(out, 'out')),
      conv2dReluPoolBackwardInput: (dinp: F, dpooled: F, out: F, weight: F, cols: F, B: number, C: number, OC: number,
                                    H: number, W: number) =>
        x.conv2dBackwardInput(f32(dinp, 'dinp'), f32(dpooled, 'dpooled'), f32(weight, 'weight'), f32(cols, 'cols'),
                              B, C, OC, H, W, f32(out, 'out')),
      maxPoolForward: (out: F, inp: F, B: number, C: number, H: number, W: number) =>
        x.maxPoolForward(f32(out, 'out'), f32(inp, 'inp'), B, C, H, W),
      maxPoolBackward: (dinp: F, dout: F, inp: F, B: number, C: number, H: number, W: number) =>
        x.maxPoolBackward(f32(dinp, 'dinp'), f32(dout, 'dout'), f32(inp, 'inp'), B, C, H, W, 0),
      maxPoolReluBackward: (dinp: F, dout: F, inp: F, B: number, C: number, H: number, W: number) =>
        x.maxPoolBackward(f32(dinp, 'dinp'), f32(dout, 'dout'), f32(inp, 'inp'), B, C, H, W, 1),
    }),
    family: 'native',
    isa: x.isa,
    optimizerStep(cfg, lr, t, param, grad, state, start, end) {
      const need = optimizerStateCount(cfg);
      if (state.length < need) throw new Error(`optimizer '${cfg.optimizer}' needs ${need} state arrays, got ${state.length}`);
      if (end <= start) return;
      if (cfg.optimizer === 'sgd') {
        x.sgd(param, grad, start, end, need === 0 ? null : state[0], lr, cfg.weightDecay, cfg.momentum, 1 - cfg.dampening,
              t === 1 ? 1 : 0, cfg.nesterov ? 1 : 0);
      } else {
        // the constants exactly as optim.ts's adamStep computes them
        const decoupled = cfg.optimizer === 'adamw';
        x.adam(param, grad, start, end, state[0], state[1], cfg.beta1, 1 - cfg.beta1, cfg.beta2, 1 - cfg.beta2,
               decoupled ? 0 : cfg.weightDecay, decoupled ? 1 - lr * cfg.weightDecay : 1, lr / (1 - Math.pow(cfg.beta1, t)),
               Math.sqrt(1 - Math.pow(cfg.beta2, t)), cfg.eps);
      }
    },
    gather: (xs, ys, images, labels, index, start, rows, pixels, table) =>
      x.gather(xs, ys, images, labels, index, start, rows, pixels, table),
  };
}

function missingPath(isa: NativeIsa): never {
  throw new Error(`native kernels: this CPU has no ${ISA_NAMES[isa]} path`);
}

