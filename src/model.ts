// The fully connected network: layer widths and where each parameter lives in the flat buffer.
//
// Flat parameter layout. Layer l (0..L-1) maps C = layers[l] inputs to OC = layers[l+1] outputs:
//   w[l]: (OC, C) row-major, exactly as PyTorch's nn.Linear.weight     b[l]: (OC)
// stored as w[0] b[0] w[1] b[1] ... Gradients and optimizer moments reuse this layout, so zeroing is one
// fill and an optimizer is one loop over a slice.
import { CLASS_COUNT, IMAGE_PIXELS } from './data/datasets.js';
import { Rng } from './rng.js';

/** The network's input and output widths: one image's pixels, the datasets' classes. */
export const INPUT = IMAGE_PIXELS;
export const CLASSES = CLASS_COUNT;
export const DEFAULT_HIDDEN: readonly number[] = [128, 256, 512, 128];

/** Where linear layer l's parameters live: it maps C inputs to OC outputs. */
export interface LinearLayer {
  C: number;
  OC: number;
  /** element offset of w[l] in the flat buffer */
  w: number;
  /** element offset of b[l] in the flat buffer */
  b: number;
}

export interface Layout {
  /** widths including input and output, e.g. [784, 128, 256, 512, 128, 10] */
  layers: readonly number[];
  /** one entry per linear layer, input to output */
  linear: LinearLayer[];
  /** total number of parameters */
  size: number;
}

export function widths(hidden: readonly number[]): number[] {
  return [INPUT, ...hidden, CLASSES];
}

export function paramLayout(layers: readonly number[]): Layout {
  const linear: LinearLayer[] = [];
  let off = 0;
  for (let l = 0; l + 1 < layers.length; l++) {
    const C = layers[l];
    const OC = layers[l + 1];
    linear.push({ C, OC, w: off, b: off + OC * C });
    off += OC * C + OC;
  }
  return { layers: [...layers], linear, size: off };
}

/**
 * PyTorch's default nn.Linear initialization: weight ~ U(−1/√C, 1/√C) (kaiming_uniform with a = √5 works
 * out to exactly this bound) and bias ~ U(−1/√C, 1/√C), drawn from a seeded generator, layer by layer,
 * weights before biases.
 */
export function initParams(params: Float32Array | Float64Array, layout: Layout, seed: number): void {
  const rng = new Rng(seed);
  for (const { C, OC, w, b } of layout.linear) {
    const bound = 1 / Math.sqrt(C);
    for (let i = 0; i < OC * C; i++) params[w + i] = rng.uniform(-bound, bound);
    for (let i = 0; i < OC; i++) params[b + i] = rng.uniform(-bound, bound);
  }
}

/** Tensor names used in safetensors files, matching an nn.Sequential of Linear and ReLU modules. */
export function tensorNames(layout: Layout): { weight: string; bias: string }[] {
  return layout.linear.map((_, l) => ({ weight: `${2 * l}.weight`, bias: `${2 * l}.bias` }));
}
