// The mlp's forward and backward passes (and the cnn's linear head, cnn.ts): the kernels in order, nothing else.
//
// For L layers with widths n[0..L]:
//   h[0] = input (B, n[0]);  h[l+1] = relu(h[l] · w[l]ᵀ + b[l]) for l < L−1;  h[L] = logits (B, n[L])
// Backward walks the same list in reverse. h and dh are preallocated views with room for the largest B.
import type { F, KernelSet, Labels } from './kernels/index.js';
import type { Layout } from './model.js';
import { KK } from './kernels/reference.js';

/** Views of one parameter-shaped buffer (the parameters or the gradient), per layer. */
export interface LayerViews {
  w: F[];
  b: F[];
  /** a cnn's convolution weights (OC,C,5,5) and biases, per convolution (empty for an mlp) */
  cw: F[];
  cb: F[];
  /** the parameters only, for families with linearForwardT: weightᵀ (C,OC) of each layer, kept current */
  wt?: F[];
}

/** Activation scratch for a number of rows, one view per stage of model.ts's `stages`: h[0..] and their gradients
 *  dh[1..] (dh[0], the input's, is never needed). For an mlp h[l] is linear layer l's input. */
export interface Activations {
  h: F[];
  dh: F[];
}

export function layerViews(buf: F, layout: Layout): LayerViews {
  const w: F[] = [];
  const b: F[] = [];
  for (const s of layout.linear) {
    w.push(buf.subarray(s.w, s.w + s.OC * s.C));
    b.push(buf.subarray(s.b, s.b + s.OC));
  }
  const cw = layout.conv.map((s) => buf.subarray(s.w, s.w + s.OC * s.C * KK));
  const cb = layout.conv.map((s) => buf.subarray(s.b, s.b + s.OC));
  return { w, b, cw, cb };
}

/** The parameters' views plus their transposed weights, stored in `transposed` at the weights' offsets. */
export function layerViewsWithTransposed(buf: F, transposed: F, layout: Layout): LayerViews {
  return { ...layerViews(buf, layout), wt: layerViews(transposed, layout).w };
}

/** Brings the transposed copy up to date for the flat parameter range [start, end) (biases are skipped). */
export function syncTransposed(k: KernelSet, net: LayerViews, layout: Layout, start: number, end: number): void {
  if (!k.transposeRows || !net.wt) return;
  layout.linear.forEach((s, l) => {
    const a = Math.max(start, s.w);
    const z = Math.min(end, s.w + s.OC * s.C);
    if (a < z) k.transposeRows!(net.wt![l], net.w[l], s.C, s.OC, a - s.w, z - s.w);
  });
}

/** Elements of scratch `rows` rows need: Σ_l n[l]·rows for h plus Σ_{l≥1} n[l]·rows for
 *  dh, n = the stages. */
export function activationElements(layout: Layout, rows: number): number {
  const n = layout.stages;
  let total = 0;
  for (let l = 0; l < n.length; l++) total += n[l] * rows * (l === 0 ? 1 : 2);
  return total;
}

/** Carves activation views for up to `rows` rows out of `buf` (at least activationElements long). */
export function activationViews(buf: F, layout: Layout, rows: number): Activations {
  const n = layout.stages;
  const h: F[] = [];
  const dh: F[] = [];
  let off = 0;
  for (let l = 0; l < n.length; l++) {
    h.push(buf.subarray(off, off + n[l] * rows));
    off += n[l] * rows;
  }
  dh.push(buf.subarray(0, 0));
  for (let l = 1; l < n.length; l++) {
    dh.push(buf.subarray(off, off + n[l] * rows));
    off += n[l] * rows;
  }
  return { h, dh };
}

/** Views of rows [first, first + count) of activations carved for more rows (each h[l], dh[l] is row-major). */
export function rowsOf(acts: Activations, layout: Layout, first: number, count: number): Activations {
  const n = layout.stages;
  return {
    h: acts.h.map((v, l) => v.subarray(first * n[l], (first + count) * n[l])),
    dh: acts.dh.map((v, l) => (l === 0 ? v : v.subarray(first * n[l], (first + count) * n[l]))),
  };
}

/** Fills acts.h[1..L] from acts.h[0] (B rows); returns the logits view h[L]. */
export function mlpForward(k: KernelSet, net: LayerViews, acts: Activations, layout: Layout, B: number): F {
  const last = layout.linear.length - 1;
  const wt = k.linearForwardT && k.linearReluForwardT ? net.wt : undefined;
  for (let l = 0; l <= last; l++) {
    const { C, OC } = layout.linear[l];
    if (wt) {
      if (l < last) k.linearReluForwardT!(acts.h[l + 1], acts.h[l], wt[l], net.b[l], B, C, OC);
      else k.linearForwardT!(acts.h[l + 1], acts.h[l], wt[l], net.b[l], B, C, OC);
    } else if (l < last) k.linearReluForward(acts.h[l + 1], acts.h[l], net.w[l], net.b[l], B, C, OC);
    else k.linearForward(acts.h[l + 1], acts.h[l], net.w[l], net.b[l], B, C, OC);
  }
  return acts.h[last + 1];
}

export interface LossStats {
  /** Σ over the rows of the per-row loss */
  lossSum: number;
  correct: number;
}

/** Rows [first, first + count) of the rows a call holds: one row block, or every row. */
export interface RowRange {
  first: number;
  count: number;
}

/**
 * The rows' half of the backward pass, after mlpForward over the same B rows: the loss of each block of rows
 * (its sum and correct count), then the gradient of scale · Σ_rows loss with respect to every stage's output:
 * dh[L] (the softmax probabilities, turned into dlogits in place) down to dh[1], and with `inputGrad` (a cnn's
 * head) dh[0] too. No weight gradient: that is mlpWeightGradient's, over all the batch's rows.
 */
export function mlpBackwardRows(k: KernelSet, net: LayerViews, acts: Activations, layout: Layout, targets: Labels,
                                blocks: readonly RowRange[], B: number, smoothing: number, scale: number,
                                inputGrad = false): LossStats[] {
  const L = layout.linear.length;
  const V = layout.layers[L];
  const stats = blocks.map(({ first, count }) => {
    const logits = acts.h[L].subarray(first * V, (first + count) * V);
    const probs = acts.dh[L].subarray(first * V, (first + count) * V);
    const t = targets.subarray(first, first + count);
    const correct = k.countCorrect(logits, t, count, V);
    const lossSum = k.crossEntropyForward(probs, logits, t, count, V, smoothing);
    return { lossSum, correct };
  });
  k.crossEntropyBackward(acts.dh[L], acts.dh[L], targets, B, V, smoothing, scale);
  for (let l = L - 1; l >= (inputGrad ? 0 : 1); l--) {
    const { C, OC } = layout.linear[l];
    k.linearBackwardInput(acts.dh[l], acts.dh[l + 1], net.w[l], B, C, OC);
    if (l > 0) k.reluBackward(acts.dh[l], acts.dh[l], acts.h[l], B * C);
  }
  return stats;
}

/** Outputs [o0, o1) of linear layer l: their weight and bias gradients over all B rows of acts (after
 *  mlpBackwardRows over them), into grad's rows o0..o1. */
export function mlpWeightGradient(k: KernelSet, grad: LayerViews, acts: Activations, layout: Layout, l: number, o0: number,
                                  o1: number, B: number): void {
  const { C, OC } = layout.linear[l];
  k.linearBackwardWeight(grad.w[l], grad.b[l], acts.dh[l + 1], acts.h[l], B, C, OC, o0, o1);
}

/**
 * The whole backward pass in one thread: mlpBackwardRows over the B rows as one block, then every layer's
 * weight gradient, into `grad`. Returns the rows' loss sum and correct count.
 */
export function mlpBackward(k: KernelSet, grad: LayerViews, net: LayerViews, acts: Activations, layout: Layout,
                            targets: Labels, B: number, smoothing: number, scale: number): LossStats {
  const [stats] = mlpBackwardRows(k, net, acts, layout, targets, [{ first: 0, count: B }], B, smoothing, scale);
  layout.linear.forEach(({ OC }, l) => mlpWeightGradient(k, grad, acts, layout, l, 0, OC, B));
  return stats;
}
