// The convolutional network's forward and backward passes: the kernels in order, nothing else. Its linear
// head is mlp.ts's, run on the stages after the convolutions.
//
// Stages (model.ts): h[0] the image (B,1,28,28); for convolution i, h[2i+1] = relu(conv(h[2i])) (B,OC,OH,OW)
// and h[2i+2] = maxpool(h[2i+1]) (B,OC,OH/2,OW/2); the head's input is h[2n], flattened as it lies
// (channel, row, column). dh[s] is the gradient of h[s] (dh[2i+1] only with families without the fused
// conv2dReluPoolBackward kernels). `cols` is the fast families' convolution scratch
// (conv2dScratchLength floats of the largest convolution).
import type { F, KernelSet, Labels } from './kernels/index.js';
import { KS } from './kernels/reference.js';
import {
  mlpBackwardRows, mlpForward, mlpWeightGradient, type Activations, type LayerViews, type LossStats, type RowRange,
} from './mlp.js';
import type { Layout } from './model.js';

const heads = new WeakMap<Activations, Activations>();

/** The stages from the head's input on: what mlp.ts's passes see as h[0..L]. */
export function headOf(acts: Activations, layout: Layout): Activations {
  let head = heads.get(acts);
  if (!head) {
    const n = 2 * layout.conv.length;
    head = { h: acts.h.slice(n), dh: acts.dh.slice(n) };
    heads.set(acts, head);
  }
  return head;
}

/** Fills every stage after acts.h[0] (B images); returns the logits. */
export function cnnForward(k: KernelSet, net: LayerViews, acts: Activations, layout: Layout, cols: F, B: number): F {
  const { h } = acts;
  layout.conv.forEach(({ C, OC, H, W }, i) => {
    if (k.conv2dReluPoolForward) {
      k.conv2dReluPoolForward(h[2 * i + 1], h[2 * i + 2], h[2 * i], net.cw[i], net.cb[i], cols, B, C, OC, H, W);
    } else {
      k.conv2dReluForward(h[2 * i + 1], h[2 * i], net.cw[i], net.cb[i], cols, B, C, OC, H, W);
      k.maxPoolForward(h[2 * i + 2], h[2 * i + 1], B, OC, H - KS + 1, W - KS + 1);
    }
  });
  return mlpForward(k, net, headOf(acts, layout), layout, B);
}

/** Whether the family computes a convolution block's backward pass straight from the pooled map's gradient. */
function fusedPool(k: KernelSet): boolean {
  return k.conv2dReluPoolBackwardWeight !== undefined && k.conv2dReluPoolBackwardInput !== undefined;
}

/**
 * The images' half of the backward pass, after cnnForward over the same B images: the head's (mlpBackwardRows,
 * down to the gradient of its input), then each convolution block in reverse: the gradient of its input, unless
 * it is the image. With the fused kernels that is one call from the pooled map's gradient (unpooling and ReLU
 * mask inside; dh[2i+1] stays unwritten); otherwise the unpooled gradient dh[2i+1] is written (for every block:
 * its weight gradient reads it) and the input gradient computed from it.
 */
export function cnnBackwardRows(k: KernelSet, net: LayerViews, acts: Activations, layout: Layout, cols: F, targets: Labels,
                                blocks: readonly RowRange[], B: number, smoothing: number, scale: number): LossStats[] {
  const stats = mlpBackwardRows(k, net, headOf(acts, layout), layout, targets, blocks, B, smoothing, scale, true);
  const { h, dh } = acts;
  for (let i = layout.conv.length - 1; i >= 0; i--) {
    const { C, OC, H, W } = layout.conv[i];
    if (fusedPool(k)) {
      if (i > 0) k.conv2dReluPoolBackwardInput!(dh[2 * i], dh[2 * i + 2], h[2 * i + 1], net.cw[i], cols, B, C, OC, H, W);
    } else {
      unpool(k, acts, layout, i, B);
      if (i > 0) k.conv2dBackwardInput(dh[2 * i], dh[2 * i + 1], net.cw[i], cols, B, C, OC, H, W);
    }
  }
  return stats;
}

/** Output channels [o0, o1) of convolution i: their weight and bias gradients over all B images of acts (after
 *  cnnBackwardRows over them), into grad's rows o0..o1. */
export function cnnConvWeightGradient(k: KernelSet, grad: LayerViews, { h, dh }: Activations, layout: Layout, cols: F,
                                      i: number, o0: number, o1: number, B: number): void {
  const { C, OC, H, W } = layout.conv[i];
  if (fusedPool(k)) {
    k.conv2dReluPoolBackwardWeight!(grad.cw[i], grad.cb[i], dh[2 * i + 2], h[2 * i + 1], h[2 * i], cols, B, C, OC, H, W,
                                    o0, o1);
  } else {
    k.conv2dBackwardWeight(grad.cw[i], grad.cb[i], dh[2 * i + 1], h[2 * i], cols, B, C, OC, H, W, o0, o1);
  }
}

/** The whole backward pass in one thread: cnnBackwardRows over the B images as one block, then every layer's
 *  weight gradient, into `grad`. */
export function cnnBackward(k: KernelSet, grad: LayerViews, net: LayerViews, acts: Activations, layout: Layout, cols: F,
                            targets: Labels, B: number, smoothing: number, scale: number): LossStats {
  const [stats] = cnnBackwardRows(k, net, acts, layout, cols, targets, [{ first: 0, count: B }], B, smoothing, scale);
  layout.conv.forEach(({ OC }, i) => cnnConvWeightGradient(k, grad, acts, layout, cols, i, 0, OC, B));
  const head = headOf(acts, layout);
  layout.linear.forEach(({ OC }, l) => mlpWeightGradient(k, grad, head, layout, l, 0, OC, B));
  return stats;
}

/** dh[2i+1] = the gradient of convolution i's pre-ReLU output, from dh[2i+2] (its pooled map's gradient). */
function unpool(k: KernelSet, { h, dh }: Activations, layout: Layout, i: number, B: number): void {
  const { OC, H, W } = layout.conv[i];
  const OH = H - KS + 1;
  const OW = W - KS + 1;
  if (k.maxPoolReluBackward) {
    k.maxPoolReluBackward(dh[2 * i + 1], dh[2 * i + 2], h[2 * i + 1], B, OC, OH, OW);
  } else {
    k.maxPoolBackward(dh[2 * i + 1], dh[2 * i + 2], h[2 * i + 1], B, OC, OH, OW);
    k.reluBackward(dh[2 * i + 1], dh[2 * i + 1], h[2 * i + 1], B * OC * OH * OW);
  }
}
