// The convolutional network's forward and backward passes: the kernels in order, nothing else. Its linear
// head is mlp.ts's, run on the stages after the convolutions.
//
// Stages (model.ts): h[0] the image (B,1,28,28); for convolution i, h[2i+1] = relu(conv(h[2i])) (B,OC,OH,OW)
// and h[2i+2] = maxpool(h[2i+1]) (B,OC,OH/2,OW/2); the head's input is h[2n], flattened as it lies
// (channel, row, column). dh[s] is the gradient of h[s] (dh[2i+1] only with families without the fused
// conv2dReluPoolBackward). `cols` is the fast families' convolution scratch
// (conv2dScratchLength floats of the largest convolution).
import type { F, KernelSet, Labels } from './kernels/index.js';
import { KS } from './kernels/reference.js';
import {
  mlpBackward, mlpBackwardGroup, mlpForward, rowsOf, type Activations, type LayerViews, type LossStats, type RowRange,
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

/**
 * Loss of the logits and the gradients of scale · Σ_images loss into `grad`, after cnnForward over the same B
 * images: the head (mlpBackward, down to the gradient of its input), then each convolution block in reverse:
 * unpool, ReLU mask, convolution backward (no input gradient for the image); the three in one kernel where the
 * family has conv2dReluPoolBackward (then dh[2i+1] stays unwritten).
 */
export function cnnBackward(k: KernelSet, grad: LayerViews, net: LayerViews, acts: Activations, layout: Layout, cols: F,
                            targets: Labels, B: number, smoothing: number, scale: number): LossStats {
  const stats = mlpBackward(k, grad, net, headOf(acts, layout), layout, targets, B, smoothing, scale, true);
  for (let i = layout.conv.length - 1; i >= 0; i--) {
    if (k.conv2dReluPoolBackward) {
      convPoolBackward(k, grad, net, acts, layout, cols, i, B);
    } else {
      unpool(k, acts, layout, i, B);
      convBackward(k, grad, net, acts, layout, cols, i, B);
    }
  }
  return stats;
}

/**
 * cnnBackward for several micro-shards whose images lie together in `acts` (B in all, forward already run
 * over them), as mlp.ts's mlpBackwardGroup: each shard's loss and weight gradients go to its own slot. Each
 * convolution block's backward runs per shard (its weight gradient sums that shard's images only): with the
 * fused kernel, unpooling and ReLU mask included; without it, those two run once over all B images first.
 * Every shard's gradient has the bits of cnnBackward on it alone.
 */
export function cnnBackwardGroup(k: KernelSet, grads: LayerViews[], net: LayerViews, acts: Activations, layout: Layout,
                                 cols: F, targets: Labels, shards: readonly RowRange[], B: number, smoothing: number,
                                 scale: number): LossStats[] {
  const stats = mlpBackwardGroup(k, grads, net, headOf(acts, layout), layout, targets, shards, B, smoothing, scale, true);
  for (let i = layout.conv.length - 1; i >= 0; i--) {
    // an empty shard too: its convolutions' gradients must be written (zeros), as its linear layers' are, or
    // its slot would keep the gradient of an earlier step
    if (k.conv2dReluPoolBackward) {
      shards.forEach(({ first, count }, s) => {
        if (count > 0) {
          convPoolBackward(k, grads[s], net, rowsOf(acts, layout, first, count), layout, cols, i, count);
        } else {
          grads[s].cw[i].fill(0);
          grads[s].cb[i].fill(0);
        }
      });
      continue;
    }
    unpool(k, acts, layout, i, B);
    shards.forEach(({ first, count }, s) => {
      convBackward(k, grads[s], net, rowsOf(acts, layout, first, count), layout, cols, i, count);
    });
  }
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

/** convBackward straight from dh[2i+2], the pooled map's gradient, with the unpooling and ReLU mask inside the
 *  kernel (conv2dReluPoolBackward): dh[2i+1] is left unwritten. */
function convPoolBackward(k: KernelSet, grad: LayerViews, net: LayerViews, { h, dh }: Activations, layout: Layout, cols: F,
                          i: number, B: number): void {
  const { C, OC, H, W } = layout.conv[i];
  k.conv2dReluPoolBackward!(i > 0 ? dh[2 * i] : null, grad.cw[i], grad.cb[i], dh[2 * i + 2], h[2 * i + 1], h[2 * i],
                            net.cw[i], cols, B, C, OC, H, W);
}

/** Convolution i's weight and bias gradients into `grad`, and its input's gradient dh[2i] unless i = 0. */
function convBackward(k: KernelSet, grad: LayerViews, net: LayerViews, { h, dh }: Activations, layout: Layout, cols: F,
                      i: number, B: number): void {
  const { C, OC, H, W } = layout.conv[i];
  k.conv2dBackward(i > 0 ? dh[2 * i] : null, grad.cw[i], grad.cb[i], dh[2 * i + 1], h[2 * i], net.cw[i], cols, B, C, OC, H, W);
}
