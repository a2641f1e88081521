// The two networks, mlp and cnn: what they are (ModelSpec), and where each parameter lives in the flat buffer
// (Layout).
//
//   mlp   Linear(784, n1) ReLU Linear(n1, n2) ReLU … Linear(nk, V)               (--hidden n1,…,nk)
//   cnn   Conv2d(1, c1, 5) ReLU MaxPool2d(2) Conv2d(c1, c2, 5) ReLU MaxPool2d(2)  (--channels c1,c2)
//         Flatten Linear(c2·4·4, h) ReLU Linear(h, V)                             (--hidden h)
//
// V is the number of classes: 10 for the built-in datasets, whatever your data holds (--data) otherwise.
//
// Flat parameter layout, in the order of the modules: for each convolution i (input map C×H×W, OC outputs)
//   cw[i]: (OC, C, 5, 5) as nn.Conv2d.weight     cb[i]: (OC)
// then for each linear layer l (C inputs, OC outputs)
//   w[l]:  (OC, C) row-major, as nn.Linear.weight    b[l]: (OC)
// stored as cw[0] cb[0] … w[0] b[0] w[1] b[1] …. Gradients and optimizer moments reuse this layout, so zeroing
// is one fill and an optimizer is one loop over a slice.
//
// Activations of one image, stage by stage (`stages`, in floats): the input (784); for each convolution its
// ReLU'd output (OC·OH·OW) and that map max-pooled (OC·OH/2·OW/2); then the linear layers' outputs. The
// flattened last pooled map is the first linear layer's input: (channel, row, column), PyTorch's order.
import { CLASS_COUNT, IMAGE_PIXELS, IMAGE_SIDE } from './data/datasets.js';
import { KK, KS } from './kernels/reference.js';
import { Rng } from './rng.js';

/** The network's input width, one image's pixels, and its usual output width, the built-in datasets' classes. */
export const INPUT = IMAGE_PIXELS;
export const CLASSES = CLASS_COUNT;
export const MODEL_KINDS = ['mlp', 'cnn'] as const;
export type ModelKind = (typeof MODEL_KINDS)[number];
export const DEFAULT_HIDDEN: readonly number[] = [128, 256, 512, 128];
export const DEFAULT_CNN_HIDDEN: readonly number[] = [128];
export const DEFAULT_CHANNELS: readonly number[] = [16, 32];
/** A cnn has one or two convolution blocks: a third 5×5 convolution does not fit a 4×4 map. */
export const MAX_CONV_LAYERS = 2;

/**
 * Which network: its kind and sizes, as the flags give them (--model, --channels, --hidden), and its output
 * width, the data's number of classes (left out: CLASSES).
 */
export type ModelSpec =
  | { kind: 'mlp'; hidden: readonly number[]; classes?: number }
  | { kind: 'cnn'; channels: readonly number[]; hidden: readonly number[]; classes?: number };

/** The spec with `classes` outputs (the field is left out for the usual CLASSES, as a spec without it means). */
export function withClasses<S extends ModelSpec>(spec: S, classes: number): S {
  const { classes: _, ...rest } = spec;
  return (classes === CLASSES ? rest : { ...rest, classes }) as S;
}

/** The spec's output width. */
export function classCount(spec: ModelSpec): number {
  return spec.classes ?? CLASSES;
}

/** Where linear layer l's parameters live: it maps C inputs to OC outputs. */
export interface LinearLayer {
  C: number;
  OC: number;
  /** element offset of w[l] in the flat buffer */
  w: number;
  /** element offset of b[l] in the flat buffer */
  b: number;
}

/** Where convolution i's parameters live: a 5×5 valid convolution of a C×H×W map to OC channels (followed by
 *  ReLU and a 2×2 max-pool). */
export interface ConvLayer {
  C: number;
  OC: number;
  H: number;
  W: number;
  /** element offset of cw[i] (OC, C, 5, 5) in the flat buffer */
  w: number;
  /** element offset of cb[i] (OC) */
  b: number;
}

export interface Layout {
  spec: ModelSpec;
  /** the convolution blocks, input to output (none for an mlp) */
  conv: ConvLayer[];
  /** the linear layers' widths including their input and the output, e.g. [784, 128, 256, 512, 128, 10] for
   *  the default mlp, [512, 128, 10] for the default cnn */
  layers: readonly number[];
  /** one entry per linear layer, input to output */
  linear: LinearLayer[];
  /** floats of each activation stage of one image (see the top of this file); stages[0] is the input */
  stages: readonly number[];
  /** total number of parameters */
  size: number;
}

/** The mlp's linear widths: input, hidden, classes. */
export function widths(hidden: readonly number[]): number[] {
  return [INPUT, ...hidden, CLASSES];
}

/** The layout of an mlp with these widths, input to output: widths(hidden) for the real network; the tests also
 *  lay out smaller ones (e.g. [7, 5, 6, 4]), whose first and last widths are kept as given. */
export function paramLayout(layers: readonly number[]): Layout {
  return withLinear({ kind: 'mlp', hidden: layers.slice(1, -1) }, [], [layers[0]], 0, layers);
}

export function modelLayout(spec: ModelSpec): Layout {
  const conv: ConvLayer[] = [];
  const stages: number[] = [INPUT];
  let off = 0;
  let head = INPUT;
  if (spec.kind === 'cnn') {
    let C = 1;
    let side = IMAGE_SIDE;
    for (const OC of spec.channels) {
      const out = side - KS + 1;
      conv.push({ C, OC, H: side, W: side, w: off, b: off + OC * C * KK });
      off += OC * C * KK + OC;
      stages.push(OC * out * out);
      side = out >> 1;
      stages.push(OC * side * side);
      C = OC;
    }
    head = C * side * side;
  }
  return withLinear(spec, conv, stages, off, [head, ...spec.hidden, classCount(spec)]);
}

/** The layout with linear layers of these widths after the convolutions (`stages` so far, parameters up to `off`). */
function withLinear(spec: ModelSpec, conv: ConvLayer[], stages: number[], off: number, layers: readonly number[]): Layout {
  const linear: LinearLayer[] = [];
  for (let l = 0; l + 1 < layers.length; l++) {
    const C = layers[l];
    const OC = layers[l + 1];
    linear.push({ C, OC, w: off, b: off + OC * C });
    off += OC * C + OC;
    stages.push(OC);
  }
  return { spec, conv, layers: [...layers], linear, stages, size: off };
}

/** The spec's sizes after a cnn's convolutions: the first linear layer's input width. */
export function flattenedWidth(channels: readonly number[]): number {
  return modelLayout({ kind: 'cnn', channels, hidden: [] }).layers[0];
}

/** One line for the dashboard and logs: "mlp 784→128→256→512→128→10", "cnn 1→16→32 conv5 pool2 · 512→128→10". */
export function describeModel(spec: ModelSpec): string {
  const layout = modelLayout(spec);
  if (spec.kind === 'mlp') return `mlp ${layout.layers.join('→')}`;
  return `cnn ${[1, ...spec.channels].join('→')} conv5 pool2 · ${layout.layers.join('→')}`;
}

/** True when the two specs name the same network. */
export function sameModel(a: ModelSpec, b: ModelSpec): boolean {
  return describeModel(a) === describeModel(b);
}

/**
 * PyTorch's default initialization of nn.Linear and nn.Conv2d: weight ~ U(−1/√fan_in, 1/√fan_in)
 * (kaiming_uniform with a = √5 works out to exactly this bound) and bias ~ U(−1/√fan_in, 1/√fan_in), with
 * fan_in = C for a linear layer and C·25 for a 5×5 convolution; drawn from a seeded generator, module by
 * module, weights before biases.
 */
export function initParams(params: Float32Array | Float64Array, layout: Layout, seed: number): void {
  const rng = new Rng(seed);
  const fill = (fanIn: number, w: number, wn: number, b: number, bn: number) => {
    const bound = 1 / Math.sqrt(fanIn);
    for (let i = 0; i < wn; i++) params[w + i] = rng.uniform(-bound, bound);
    for (let i = 0; i < bn; i++) params[b + i] = rng.uniform(-bound, bound);
  };
  for (const { C, OC, w, b } of layout.conv) fill(C * KK, w, OC * C * KK, b, OC);
  for (const { C, OC, w, b } of layout.linear) fill(C, w, OC * C, b, OC);
}

/**
 * Tensor names used in safetensors files: the indices of the modules in PyTorch's nn.Sequential. An mlp is
 * Linear, ReLU, Linear, … (0, 2, 4, …); a cnn is Conv2d, ReLU, MaxPool2d per block (0, 3), Flatten (6), then
 * Linear, ReLU, … (7, 9).
 */
export function tensorNames(layout: Layout): { conv: { weight: string; bias: string }[]; linear: { weight: string; bias: string }[] } {
  const n = layout.conv.length;
  const name = (i: number) => ({ weight: `${i}.weight`, bias: `${i}.bias` });
  return {
    conv: layout.conv.map((_, i) => name(3 * i)),
    linear: layout.linear.map((_, l) => name(n === 0 ? 2 * l : 3 * n + 1 + 2 * l)),
  };
}
