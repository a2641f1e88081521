// Choosing a kernel family, and the loader of the WebAssembly families with their KernelSet wrappers.
//
//   native   dist/native/mnist_par.node: C++ with AVX-512 or AVX2+FMA intrinsics (see native.ts)
//   relaxed  dist/kernels/relaxed.wasm: SIMD with f32x4.relaxed_madd (fused on CPUs with FMA)
//   simd     dist/kernels/simd.wasm:    the same kernels with a separate multiply and add
//   js       the reference kernels (src/kernels/reference.ts) and optim.ts
//
// The wasm kernels work in place in the shared arena: every view handed to them must be a Float32Array
// over `memory.buffer` (the arena), and they receive its byteOffset. Each thread instantiates the module
// against the same memory. The linear kernels differ between families in the last bits (summation order,
// fused vs separate multiply-add); ReLU backward and the optimizers (float32 arithmetic as optim.ts) are
// bit-identical in all of them. Cross-entropy and countCorrect
// are tiny (B×10) and run the JS reference on the same views.
//
// Relaxed SIMD: Node ≥ 22 has it on; Node 20 needs the V8 flag --experimental-wasm-relaxed-simd. V8 flags
// are per process, so enableRelaxedSimd() (v8.setFlagsFromString) in any thread enables it for the main
// thread and every worker, including workers started earlier. Node refuses the flag in NODE_OPTIONS and in
// Worker execArgv, but accepts it on the node command line.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import v8 from 'node:v8';
import { UserError } from '../errors.js';
import { packageRoot } from '../paths.js';
import { optimizerStateCount, optimizerStep as jsOptimizerStep, type OptimizerConfig } from '../optim.js';
import { referenceKernels, withWholeBackward, type F, type KernelFamily, type KernelHalves, type Kernels } from './index.js';
import * as ref from './reference.js';
import { loadNative, nativeKernels, type NativeIsa } from './native.js';

export type { KernelFamily, Kernels } from './index.js';

// (func (param v128) (result v128) (f32x4.add (local.get 0) (local.get 0)))
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 6, 1, 96, 1, 123, 1, 123, 3, 2, 1, 0, 10, 11, 1, 9,
  0, 32, 0, 32, 0, 253, 228, 1, 11]);
// (func (param v128 v128 v128) (result v128) (f32x4.relaxed_madd (local.get 0) (local.get 1) (local.get 2)))
const RELAXED_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123, 3, 2, 1, 0,
  10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 133, 2, 11]);
const RELAXED_FLAG = '--experimental-wasm-relaxed-simd';

export function simdSupported(): boolean {
  return WebAssembly.validate(SIMD_PROBE);
}

export function relaxedSimdSupported(): boolean {
  return WebAssembly.validate(RELAXED_PROBE);
}

/** Turns relaxed SIMD on for this process if V8 has it behind a flag (Node 20); returns whether it is on.
 *  Call it before compiling any wasm; every thread of the process sees the change. */
export function enableRelaxedSimd(): boolean {
  if (!relaxedSimdSupported()) v8.setFlagsFromString(RELAXED_FLAG);
  return relaxedSimdSupported();
}

/** Where the build writes the module of a wasm family. */
export function wasmPath(family: 'relaxed' | 'simd'): string {
  return join(packageRoot(), 'dist', 'kernels', `${family}.wasm`);
}

/** The family a choice resolves to, the native instruction-set path when native, and why `auto` did not
 *  take native (null when it did, or when the choice was explicit). */
export interface ResolvedKernels {
  family: KernelFamily;
  isa: NativeIsa | null;
  /** "native avx512", "relaxed", …: what runs, for start lines, checkpoints and benchmark reports */
  label: string;
  fallback: string | null;
}

/**
 * 'auto' → native when the addon loaded and the CPU has one of its paths, else relaxed if V8 can run it
 * (turning the flag on if needed), else simd, else js; without a shared memory the WebAssembly families
 * are out (js). An explicit family that cannot run here is a UserError naming --kernels.
 */
export function resolveKernels(family: 'auto' | KernelFamily, memory: WebAssembly.Memory | null): ResolvedKernels {
  const plain = (f: KernelFamily, fallback: string | null = null): ResolvedKernels =>
    ({ family: f, isa: null, label: f, fallback });
  if (family === 'auto' || family === 'native') {
    const native = loadNative();
    if (native.ok) return { family: 'native', isa: native.addon.isa, label: `native ${native.addon.isa}`, fallback: null };
    if (family === 'native') {
      throw new UserError(`--kernels native: the native addon ${native.reason}; use --kernels auto or relaxed`);
    }
    const wasm: KernelFamily = memory === null ? 'js' : enableRelaxedSimd() ? 'relaxed' : simdSupported() ? 'simd' : 'js';
    return plain(wasm, `using the ${wasm} kernels: the native addon ${native.reason}`);
  }
  if (family === 'js') return plain('js');
  if (memory === null) throw new Error(`kernel family '${family}' needs the shared WebAssembly.Memory arena, got null`);
  if (family === 'relaxed' && !enableRelaxedSimd()) {
    throw new UserError(`--kernels relaxed: this Node (${process.version}) has no relaxed SIMD; it needs Node ≥ 22 or ` +
      `the V8 flag ${RELAXED_FLAG}; use --kernels simd or auto`);
  }
  if (!simdSupported()) {
    throw new UserError(`--kernels ${family}: this Node (${process.version}) has no WebAssembly SIMD; use --kernels js`);
  }
  return plain(family);
}

export function resolveFamily(family: 'auto' | KernelFamily, memory: WebAssembly.Memory | null): KernelFamily {
  return resolveKernels(family, memory).family;
}

// One compile per family per thread; each instantiation binds it to a memory.
const compiled = new Map<'relaxed' | 'simd', Promise<WebAssembly.Module>>();

async function compileFamily(family: 'relaxed' | 'simd'): Promise<WebAssembly.Module> {
  const path = wasmPath(family);
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    throw new UserError(`${path}: kernel module missing (found no file); run npm run build`);
  }
  return WebAssembly.compile(bytes);
}

/** The kernels of `family` ('auto': the fastest this Node runs) bound to the shared arena `memory`. */
export async function loadKernels(family: 'auto' | KernelFamily, memory: WebAssembly.Memory | null): Promise<Kernels> {
  const chosen = resolveFamily(family, memory);
  if (chosen === 'native') {
    const native = loadNative();
    if (!native.ok) throw new UserError(`--kernels native: the native addon ${native.reason}`);
    return nativeKernels(native.addon);
  }
  if (chosen === 'js' || memory === null) return jsKernels; // memory is non-null here: resolveFamily checked
  let mod = compiled.get(chosen);
  if (!mod) {
    mod = compileFamily(chosen);
    compiled.set(chosen, mod);
    mod.catch(() => compiled.delete(chosen));
  }
  const instance = await WebAssembly.instantiate(await mod, { env: { memory } });
  return wasmKernels(chosen, instance.exports as unknown as Exports, memory);
}

export const jsKernels: Kernels = {
  ...referenceKernels,
  name: 'js',
  family: 'js',
  optimizerStep: jsOptimizerStep,
  gather: ref.gather,
};

interface Exports {
  linear_fwd(out: number, inp: number, w: number, bias: number, B: number, C: number, OC: number, relu: number): void;
  linear_bwd_weight(dweight: number, dbias: number, dout: number, inp: number, B: number, C: number, OC: number,
                    o0: number, o1: number): void;
  linear_bwd_input(dinp: number, dout: number, w: number, B: number, C: number, OC: number): void;
  relu_bwd(dinp: number, dout: number, out: number, n: number): void;
  conv2d_fwd(out: number, inp: number, w: number, bias: number, cols: number, B: number, C: number, OC: number,
             H: number, W: number, relu: number): void;
  conv2d_bwd_weight(dw: number, db: number, dout: number, inp: number, cols: number, B: number, C: number, OC: number,
                    H: number, W: number, o0: number, o1: number): void;
  conv2d_bwd_input(dinp: number, dout: number, w: number, cols: number, B: number, C: number, OC: number, H: number,
                   W: number): void;
  maxpool_fwd(out: number, inp: number, maps: number, H: number, W: number): void;
  maxpool_bwd(dinp: number, dout: number, inp: number, maps: number, H: number, W: number): void;
  // n4 quads of floats from param (byte offsets)
  sgd_plain(param: number, grad: number, n4: number, lr: number, wd: number): void;
  sgd_momentum(param: number, grad: number, buf: number, n4: number, lr: number, wd: number, mu: number, damp: number,
               first: number, nesterov: number): void;
  adam(param: number, grad: number, m: number, v: number, n4: number, b1: number, c1: number, b2: number, c2: number,
       l2: number, keep: number, step: number, bc2: number, eps: number): void;
}

function wasmKernels(family: 'relaxed' | 'simd', x: Exports, memory: WebAssembly.Memory): Kernels {
  const arena = memory.buffer;
  // Byte offset of a view that must lie in the arena and hold at least n floats. A view anywhere else
  // would make the kernel read and write unrelated arena bytes, so this is a bug in the caller, not a user error.
  const at = (v: F, n: number, what: string): number => {
    if (!(v instanceof Float32Array) || v.buffer !== arena) {
      throw new Error(`${family} kernels: ${what} must be a Float32Array over the shared arena`);
    }
    if (v.length < n) throw new Error(`${family} kernels: ${what} has ${v.length} floats, needs ${n}`);
    return v.byteOffset;
  };
  const poolSizes = (B: number, C: number, H: number, W: number) => {
    for (const [name, v] of [['B', B], ['C', C], ['H', H], ['W', W]] as const) {
      if (!Number.isInteger(v) || v < 0) throw new Error(`${family} kernels: ${name} must be a non-negative integer, got ${v}`);
    }
  };
  // The convolutions' sizes: 5×5 valid needs H, W ≥ 5 (a smaller map would index outside its views)
  const convSizes = (B: number, C: number, OC: number, H: number, W: number) => {
    poolSizes(B, C, H, W);
    if (!Number.isInteger(OC) || OC < 0) throw new Error(`${family} kernels: OC must be a non-negative integer, got ${OC}`);
    if (H < 5 || W < 5) throw new Error(`${family} kernels: a 5×5 valid convolution needs H ≥ 5 and W ≥ 5, got ${H}×${W}`);
    const P = (H - 4) * (W - 4);
    return { inp: B * C * H * W, out: B * OC * P, weight: OC * C * 25, cols: ref.conv2dScratchLength(C, OC, H, W) };
  };
  const convForward = (relu: number) => (out: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number,
                                         H: number, W: number) => {
    const n = convSizes(B, C, OC, H, W);
    x.conv2d_fwd(at(out, n.out, 'out'), at(inp, n.inp, 'inp'), at(weight, n.weight, 'weight'), at(bias, OC, 'bias'),
                 at(cols, n.cols, 'cols'), B, C, OC, H, W, relu);
  };
  const forward = (relu: number) => (out: F, inp: F, weight: F, bias: F, B: number, C: number, OC: number) => {
    x.linear_fwd(at(out, B * OC, 'out'), at(inp, B * C, 'inp'), at(weight, OC * C, 'weight'), at(bias, OC, 'bias'),
                 B, C, OC, relu);
  };
  // The wasm optimizer over the whole quads of [start, end); returns where the leftover (end − start) mod 4 elements
  // start, for the caller to do with optim.ts (which computes the same thing element by element).
  const update = (cfg: OptimizerConfig, lr: number, t: number, param: Float32Array, grad: Float32Array,
                  state: Float32Array[], start: number, end: number): number => {
    const need = optimizerStateCount(cfg);
    if (state.length < need) throw new Error(`optimizer '${cfg.optimizer}' needs ${need} state arrays, got ${state.length}`);
    if (end <= start) return end;
    const n4 = (end - start) >> 2;
    const p = at(param, end, 'param') + 4 * start;
    const g = at(grad, end, 'grad') + 4 * start;
    if (cfg.optimizer === 'sgd') {
      if (need === 0) x.sgd_plain(p, g, n4, lr, cfg.weightDecay);
      else {
        x.sgd_momentum(p, g, at(state[0], end, 'momentum') + 4 * start, n4, lr, cfg.weightDecay,
                       cfg.momentum, 1 - cfg.dampening, t === 1 ? 1 : 0, cfg.nesterov ? 1 : 0);
      }
    } else {
      // the constants exactly as optim.ts's adamStep computes them
      const decoupled = cfg.optimizer === 'adamw';
      x.adam(p, g, at(state[0], end, 'm') + 4 * start, at(state[1], end, 'v') + 4 * start, n4,
             cfg.beta1, 1 - cfg.beta1, cfg.beta2, 1 - cfg.beta2, decoupled ? 0 : cfg.weightDecay,
             decoupled ? 1 - lr * cfg.weightDecay : 1, lr / (1 - Math.pow(cfg.beta1, t)),
             Math.sqrt(1 - Math.pow(cfg.beta2, t)), cfg.eps);
    }
    return start + 4 * n4;
  };
  const outputs = (o0: number, o1: number, OC: number) => {
    if (!(Number.isInteger(o0) && Number.isInteger(o1) && 0 <= o0 && o0 <= o1 && o1 <= OC)) {
      throw new Error(`${family} kernels: expected 0 ≤ o0 ≤ o1 ≤ OC, got o0 = ${o0}, o1 = ${o1}, OC = ${OC}`);
    }
  };
  return {
    ...withWholeBackward<KernelHalves>({
      name: family,
      linearForward: forward(0),
      linearReluForward: forward(1),
      linearBackwardWeight(dweight: F, dbias: F, dout: F, inp: F, B: number, C: number, OC: number, o0: number, o1: number) {
        outputs(o0, o1, OC);
        x.linear_bwd_weight(at(dweight, OC * C, 'dweight'), at(dbias, OC, 'dbias'), at(dout, B * OC, 'dout'),
                            at(inp, B * C, 'inp'), B, C, OC, o0, o1);
      },
      linearBackwardInput(dinp: F, dout: F, weight: F, B: number, C: number, OC: number) {
        x.linear_bwd_input(at(dinp, B * C, 'dinp'), at(dout, B * OC, 'dout'), at(weight, OC * C, 'weight'), B, C, OC);
      },
      reluBackward(dinp: F, dout: F, out: F, n: number) {
        x.relu_bwd(at(dinp, n, 'dinp'), at(dout, n, 'dout'), at(out, n, 'out'), n);
      },
      crossEntropyForward: ref.crossEntropyForward,
      crossEntropyBackward: ref.crossEntropyBackward,
      countCorrect: ref.countCorrect,
      conv2dForward: convForward(0),
      conv2dReluForward: convForward(1),
      conv2dBackwardWeight(dweight: F, dbias: F, dout: F, inp: F, cols: F, B: number, C: number, OC: number, H: number,
                           W: number, o0: number, o1: number) {
        const n = convSizes(B, C, OC, H, W);
        outputs(o0, o1, OC);
        x.conv2d_bwd_weight(at(dweight, n.weight, 'dweight'), at(dbias, OC, 'dbias'), at(dout, n.out, 'dout'),
                            at(inp, n.inp, 'inp'), at(cols, n.cols, 'cols'), B, C, OC, H, W, o0, o1);
      },
      conv2dBackwardInput(dinp: F, dout: F, weight: F, cols: F, B: number, C: number, OC: number, H: number, W: number) {
        const n = convSizes(B, C, OC, H, W);
        x.conv2d_bwd_input(at(dinp, n.inp, 'dinp'), at(dout, n.out, 'dout'), at(weight, n.weight, 'weight'),
                           at(cols, n.cols, 'cols'), B, C, OC, H, W);
      },
      maxPoolForward(out: F, inp: F, B: number, C: number, H: number, W: number) {
        poolSizes(B, C, H, W);
        x.maxpool_fwd(at(out, B * C * (H >> 1) * (W >> 1), 'out'), at(inp, B * C * H * W, 'inp'), B * C, H, W);
      },
      maxPoolBackward(dinp: F, dout: F, inp: F, B: number, C: number, H: number, W: number) {
        poolSizes(B, C, H, W);
        x.maxpool_bwd(at(dinp, B * C * H * W, 'dinp'), at(dout, B * C * (H >> 1) * (W >> 1), 'dout'),
                      at(inp, B * C * H * W, 'inp'), B * C, H, W);
      },
    }),
    family,
    optimizerStep(cfg, lr, t, param, grad, state, start, end) {
      const tail = update(cfg, lr, t, param, grad, state, start, end);
      if (tail < end) jsOptimizerStep(cfg, lr, t, param, grad, state, tail, end);
    },
    gather: ref.gather,
  };
}
