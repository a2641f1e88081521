// The mlp's forward and backward passes (and the cnn's linear head, cnn.ts): the kernels in order, nothing else.
//
// For L layers with widths n[0..L]:
//   h[0] = input (B, n[0]);  h[l+1] = relu(h[l] · w[l]ᵀ + b[l]) for l < L−1;  h[L] = logits (B, n[L])
// Backward walks the same list in reverse. h and dh are preallocated views with room for the largest B.
import type { F, KernelSet, Labels } from './kernels/index.js';
import type { Layout } from './model.js';
import { KK } from './kernels/reference.js';

/** Views of one parameter-shaped buffer (parameters or one gradient slot), per layer. */
export interface LayerViews {
  w: F[];
  b: F[];
  /** a cnn's convolution weights (OC,C,5,5) and biases, per convolution (empty for an mlp) */
  cw: F[];
  cb: F[];
  /** the parameters only, for families with linearForwardT: weightᵀ (C,OC) of each layer, kept current */
  wt?: F[];
}

/** Activation scratch for one shard, one view per stage of model.ts's `stages`: h[0..] and their gradients
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

/** Elements of scratch one shard of up to `rows` rows needs: Σ_l n[l]·rows for h plus Σ_{l≥1} n[l]·rows for
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
  /** Σ over the B rows of the per-row loss */
  lossSum: number;
  correct: number;
}

/**
 * Loss of the logits in acts.h[L] and the gradients of scale · Σ_rows loss into `grad`.
 * The softmax probabilities are written into dh[L] and turned into dlogits in place. With `inputGrad` (a cnn's
 * head) the gradient of the input h[0] goes to dh[0] too.
 */
export function mlpBackward(k: KernelSet, grad: LayerViews, net: LayerViews, acts: Activations, layout: Layout,
                            targets: Labels, B: number, smoothing: number, scale: number, inputGrad = false): LossStats {
  const L = layout.linear.length;
  const V = layout.layers[L];
  const logits = acts.h[L];
  const correct = k.countCorrect(logits, targets, B, V);
  const lossSum = k.crossEntropyForward(acts.dh[L], logits, targets, B, V, smoothing);
  k.crossEntropyBackward(acts.dh[L], acts.dh[L], targets, B, V, smoothing, scale);
  for (let l = L - 1; l >= 0; l--) {
    const { C, OC } = layout.linear[l];
    k.linearBackward(l > 0 || inputGrad ? acts.dh[l] : null, grad.w[l], grad.b[l], acts.dh[l + 1], acts.h[l], net.w[l], B, C, OC);
    if (l > 0) k.reluBackward(acts.dh[l], acts.dh[l], acts.h[l], B * C);
  }
  return { lossSum, correct };
}

/** Rows [first, first + count) of a group: one micro-shard. */
export interface RowRange {
  first: number;
  count: number;
}

/**
 * mlpBackward for several micro-shards whose rows lie together in `acts` (B rows in all, forward already
 * run over them): each shard's loss and weight gradients go to its own slot, grads[i] for shards[i], while
 * the input gradients run once over all B rows (with `inputGrad`, into dh[0] too). Needs k.groupsRows and k.linearBackwardInput; every shard's
 * gradient then has the same bits as mlpBackward on that shard alone.
 */
export function mlpBackwardGroup(k: KernelSet, grads: LayerViews[], net: LayerViews, acts: Activations, layout: Layout,
                                 targets: Labels, shards: readonly RowRange[], B: number, smoothing: number,
                                 scale: number, inputGrad = false): LossStats[] {
  if (!k.groupsRows || !k.linearBackwardInput) throw new Error(`the ${k.name} kernels cannot run micro-shards together`);
  const L = layout.linear.length;
  const V = layout.layers[L];
  const stats = shards.map(({ first, count }) => {
    const logits = acts.h[L].subarray(first * V, (first + count) * V);
    const probs = acts.dh[L].subarray(first * V, (first + count) * V);
    const t = targets.subarray(first, first + count);
    const correct = k.countCorrect(logits, t, count, V);
    const lossSum = k.crossEntropyForward(probs, logits, t, count, V, smoothing);
    k.crossEntropyBackward(probs, probs, t, count, V, smoothing, scale);
    return { lossSum, correct };
  });
  for (let l = L - 1; l >= 0; l--) {
    const { C, OC } = layout.linear[l];
    shards.forEach(({ first, count }, i) => {
      k.linearBackward(null, grads[i].w[l], grads[i].b[l], acts.dh[l + 1].subarray(first * OC, (first + count) * OC),
                       acts.h[l].subarray(first * C, (first + count) * C), net.w[l], count, C, OC);
    });
    if (l > 0 || inputGrad) k.linearBackwardInput(acts.dh[l], acts.dh[l + 1], net.w[l], B, C, OC);
    if (l > 0) k.reluBackward(acts.dh[l], acts.dh[l], acts.h[l], B * C);
  }
  return stats;
}
