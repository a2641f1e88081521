// Either network, one door: the worker, predict and the tests call these, and they run mlp.ts's or cnn.ts's
// passes by the layout's kind. An mlp ignores `cols` (the convolutions' scratch).
import type { F, KernelSet, Labels } from './kernels/index.js';
import { conv2dScratchLength } from './kernels/reference.js';
import { cnnBackward, cnnBackwardRows, cnnConvWeightGradient, cnnForward, headOf } from './cnn.js';
import {
  mlpBackward, mlpBackwardRows, mlpForward, mlpWeightGradient, type Activations, type LayerViews, type LossStats,
  type RowRange,
} from './mlp.js';
import type { Layout } from './model.js';
import type { Part } from './partition.js';

/** Floats of convolution scratch one forward or backward pass needs (0 for an mlp): the largest layer's. */
export function colsElements(layout: Layout): number {
  return Math.max(0, ...layout.conv.map(({ C, OC, H, W }) => conv2dScratchLength(C, OC, H, W)));
}

/** Fills every stage after acts.h[0] (B rows); returns the logits. */
export function forward(k: KernelSet, net: LayerViews, acts: Activations, layout: Layout, cols: F, B: number): F {
  return layout.conv.length > 0 ? cnnForward(k, net, acts, layout, cols, B) : mlpForward(k, net, acts, layout, B);
}

/** Loss and gradients of scale · Σ_rows loss into `grad`, after forward() over the same rows, in one thread:
 *  backwardRows over all B rows as one block, then weightGradient of every output of every layer. */
export function backward(k: KernelSet, grad: LayerViews, net: LayerViews, acts: Activations, layout: Layout, cols: F,
                         targets: Labels, B: number, smoothing: number, scale: number): LossStats {
  return layout.conv.length > 0
    ? cnnBackward(k, grad, net, acts, layout, cols, targets, B, smoothing, scale)
    : mlpBackward(k, grad, net, acts, layout, targets, B, smoothing, scale);
}

/** The rows' half of the backward pass (after forward() over the same B rows): each block's loss sum and correct
 *  count, and the gradient of scale · Σ_rows loss with respect to every activation the weight gradients read. */
export function backwardRows(k: KernelSet, net: LayerViews, acts: Activations, layout: Layout, cols: F, targets: Labels,
                             blocks: readonly RowRange[], B: number, smoothing: number, scale: number): LossStats[] {
  return layout.conv.length > 0
    ? cnnBackwardRows(k, net, acts, layout, cols, targets, blocks, B, smoothing, scale)
    : mlpBackwardRows(k, net, acts, layout, targets, blocks, B, smoothing, scale);
}

/** The outputs' half: the weight and bias gradients of one part's outputs over all B rows of acts (after
 *  backwardRows over every one of them, by whichever threads), into grad. */
export function weightGradient(k: KernelSet, grad: LayerViews, acts: Activations, layout: Layout, cols: F, part: Part,
                               B: number): void {
  if (part.kind === 'conv') cnnConvWeightGradient(k, grad, acts, layout, cols, part.index, part.o0, part.o1, B);
  else mlpWeightGradient(k, grad, layout.conv.length > 0 ? headOf(acts, layout) : acts, layout, part.index, part.o0, part.o1, B);
}

/** The softmax probabilities evaluate() leaves: (B, classes) rows of the last stage's gradient buffer. */
export function probsOf(acts: Activations): F {
  return acts.dh[acts.dh.length - 1];
}

/** Forward pass and loss only (validation): loss sum and correct count; the probabilities land in probsOf(acts). */
export function evaluate(k: KernelSet, net: LayerViews, acts: Activations, layout: Layout, cols: F, targets: Labels,
                         B: number): LossStats {
  const V = layout.layers[layout.layers.length - 1];
  const logits = forward(k, net, acts, layout, cols, B);
  const correct = k.countCorrect(logits, targets, B, V);
  const lossSum = k.crossEntropyForward(probsOf(acts), logits, targets, B, V, 0);
  return { lossSum, correct };
}
