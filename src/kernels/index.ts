// A kernel family: the same operations, implemented in different ways. The reference family (plain
// TypeScript) is the oracle; faster families must agree with it within the tolerances in the tests.
// Every kernel takes views (Float32Array over the shared arena in training) and explicit sizes, and
// overwrites its outputs; see reference.ts for the exact definitions and shapes.
import * as ref from './reference.js';
import type { OptimizerConfig } from '../optim.js';
import type { F, Labels } from './reference.js';

export type { F, Labels };

/** What every family implements; the whole backward kernels of KernelSet are made of these halves once, below. */
export interface KernelHalves {
  readonly name: string;
  // out = inp · weightᵀ + bias      inp (B,C) weight (OC,C) bias (OC) → out (B,OC)
  linearForward(out: F, inp: F, weight: F, bias: F, B: number, C: number, OC: number): void;
  // out = max(inp · weightᵀ + bias, 0)
  linearReluForward(out: F, inp: F, weight: F, bias: F, B: number, C: number, OC: number): void;
  // rows [o0, o1) of dweight = doutᵀ·inp and dbias = Σ_rows dout (OC,C) and (OC); each element sums the B rows in
  // order, so its bits do not depend on which other outputs share the call (threads owning different outputs
  // together compute the whole layer's gradient)
  linearBackwardWeight(dweight: F, dbias: F, dout: F, inp: F, B: number, C: number, OC: number, o0: number,
                       o1: number): void;
  // dinp = dout · weight (B,C)
  linearBackwardInput(dinp: F, dout: F, weight: F, B: number, C: number, OC: number): void;
  // dinp = dout · [out > 0]
  reluBackward(dinp: F, dout: F, out: F, n: number): void;
  // probs = softmax(logits); returns Σ rows of the (label-smoothed) cross-entropy
  crossEntropyForward(probs: F, logits: F, targets: Labels, B: number, V: number, smoothing: number): number;
  // dlogits = scale · (probs − q)
  crossEntropyBackward(dlogits: F, probs: F, targets: Labels, B: number, V: number,
                       smoothing: number, scale: number): void;
  countCorrect(logits: F, targets: Labels, B: number, V: number): number;
  // Families whose forward pass is faster on transposed weights (native) keep a copy weightT (C,OC) = weightᵀ
  // beside the parameters and implement these three; mlp.ts uses them when the copy is there.
  // out = inp · weightT + bias (then ReLU): the same functions as linearForward / linearReluForward
  linearForwardT?(out: F, inp: F, weightT: F, bias: F, B: number, C: number, OC: number): void;
  linearReluForwardT?(out: F, inp: F, weightT: F, bias: F, B: number, C: number, OC: number): void;
  // weightT (C,OC) ← weight (OC,C) for the elements [from, to) of the flattened weight
  transposeRows?(weightT: F, weight: F, C: number, OC: number, from: number, to: number): void;
  //
  // Every row's forward pass and input gradient (and every image's, for the convolutions) is the same bits
  // whatever other rows share the call, provided the call starts at a multiple of 8 rows of the batch (the
  // WebAssembly linear kernels work in blocks of 4 and 2 rows): a thread runs all its rows in one call.

  // Convolution and pooling (see reference.ts for the exact definitions). Activations are per image
  // (C,H,W) like PyTorch; B counts images. The convolutions are 5×5 valid: OH = H − 4, OW = W − 4; weights
  // (OC,C,5,5) as nn.Conv2d. `cols` is scratch of conv2dScratchLength(C, OC, H, W) floats for the fast
  // families (the native family's groups of 16 images in lanes, or one image's im2col matrix), left
  // unspecified; the reference ignores it.
  // out = conv(inp, weight) + bias      inp (B,C,H,W) weight (OC,C,5,5) bias (OC) → out (B,OC,OH,OW)
  conv2dForward(out: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number, H: number, W: number): void;
  // out = max(conv(inp, weight) + bias, 0)
  conv2dReluForward(out: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number, H: number,
                    W: number): void;
  // conv2dReluForward then maxPoolForward(pooled, out, B, OC, OH, OW) in one call: the same bits as the two
  // (families that have it; cnn.ts uses it when there)
  conv2dReluPoolForward?(out: F, pooled: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number,
                         H: number, W: number): void;
  // output channels [o0, o1) of dweight (OC,C,5,5) and dbias (OC) summed over the B images; an element's bits do
  // not depend on which other channels share the call
  conv2dBackwardWeight(dweight: F, dbias: F, dout: F, inp: F, cols: F, B: number, C: number, OC: number, H: number,
                       W: number, o0: number, o1: number): void;
  // dinp (B,C,H,W) from dout (B,OC,OH,OW)
  conv2dBackwardInput(dinp: F, dout: F, weight: F, cols: F, B: number, C: number, OC: number, H: number, W: number): void;
  // The two halves of the backward pass of a convolution followed by ReLU and the 2×2 max-pool, from the pooled
  // map's gradient dpooled (B,OC,OH/2,OW/2) and the ReLU's output out (B,OC,OH,OW): the same bits as
  // maxPoolReluBackward(dout, dpooled, out) then conv2dBackwardWeight / conv2dBackwardInput on dout, without
  // writing dout anywhere (families that have them; cnn.ts uses them when there, and then leaves the gradient
  // stage of out unwritten)
  conv2dReluPoolBackwardWeight?(dweight: F, dbias: F, dpooled: F, out: F, inp: F, cols: F, B: number, C: number,
                                OC: number, H: number, W: number, o0: number, o1: number): void;
  conv2dReluPoolBackwardInput?(dinp: F, dpooled: F, out: F, weight: F, cols: F, B: number, C: number, OC: number,
                               H: number, W: number): void;
  // out (B,C,⌊H/2⌋,⌊W/2⌋) = 2×2 max of inp (B,C,H,W); bit-identical in every family
  maxPoolForward(out: F, inp: F, B: number, C: number, H: number, W: number): void;
  // dinp (B,C,H,W) = dout routed to each window's maximum of inp (recomputed), 0 elsewhere; bit-identical
  maxPoolBackward(dinp: F, dout: F, inp: F, B: number, C: number, H: number, W: number): void;
  // maxPoolBackward then reluBackward(dinp, dinp, inp) in one pass, for a pool whose input inp is a ReLU's output:
  // the same bits as the two calls (families that have it; cnn.ts uses it when there)
  maxPoolReluBackward?(dinp: F, dout: F, inp: F, B: number, C: number, H: number, W: number): void;
}

export interface KernelSet extends KernelHalves {
  // both halves in one call: dweight = doutᵀ·inp, dbias = Σ dout, dinp = dout·weight (skipped when null)
  linearBackward(dinp: F | null, dweight: F, dbias: F, dout: F, inp: F, weight: F,
                 B: number, C: number, OC: number): void;
  // dweight (OC,C,5,5), dbias (OC) summed over the B images; dinp (B,C,H,W) (skipped when null)
  conv2dBackward(dinp: F | null, dweight: F, dbias: F, dout: F, inp: F, weight: F, cols: F,
                 B: number, C: number, OC: number, H: number, W: number): void;
  // both halves of the fused pool backward (families that have them)
  conv2dReluPoolBackward?(dinp: F | null, dweight: F, dbias: F, dpooled: F, out: F, inp: F, weight: F, cols: F,
                          B: number, C: number, OC: number, H: number, W: number): void;
}

/** A family's halves with the whole backward kernels made of them: the weight half over every output, then
 *  the input half. (Training calls the halves on their own; the tests and benchmarks call both at once.) */
export function withWholeBackward<K extends KernelHalves>(k: K): K & KernelSet {
  const whole: KernelSet = {
    ...k,
    linearBackward(dinp, dweight, dbias, dout, inp, weight, B, C, OC) {
      k.linearBackwardWeight(dweight, dbias, dout, inp, B, C, OC, 0, OC);
      if (dinp !== null) k.linearBackwardInput(dinp, dout, weight, B, C, OC);
    },
    conv2dBackward(dinp, dweight, dbias, dout, inp, weight, cols, B, C, OC, H, W) {
      k.conv2dBackwardWeight(dweight, dbias, dout, inp, cols, B, C, OC, H, W, 0, OC);
      if (dinp !== null) k.conv2dBackwardInput(dinp, dout, weight, cols, B, C, OC, H, W);
    },
  };
  const weight = k.conv2dReluPoolBackwardWeight;
  const input = k.conv2dReluPoolBackwardInput;
  if (weight && input) {
    whole.conv2dReluPoolBackward = (dinp, dweight, dbias, dpooled, out, inp, w, cols, B, C, OC, H, W) => {
      weight(dweight, dbias, dpooled, out, inp, cols, B, C, OC, H, W, 0, OC);
      if (dinp !== null) input(dinp, dpooled, out, w, cols, B, C, OC, H, W);
    };
  }
  return whole as K & KernelSet;
}

export const referenceKernels: KernelSet = withWholeBackward({
  name: 'js',
  linearForward: ref.linearForward,
  linearReluForward(out: F, inp: F, weight: F, bias: F, B: number, C: number, OC: number) {
    ref.linearForward(out, inp, weight, bias, B, C, OC);
    ref.reluForward(out, out, B * OC);
  },
  linearBackwardWeight: ref.linearBackwardWeight,
  linearBackwardInput: ref.linearBackwardInput,
  reluBackward: ref.reluBackward,
  crossEntropyForward: ref.crossEntropyForward,
  crossEntropyBackward: ref.crossEntropyBackward,
  countCorrect: ref.countCorrect,
  conv2dForward: ref.conv2dForward,
  conv2dReluForward(out: F, inp: F, weight: F, bias: F, cols: F, B: number, C: number, OC: number, H: number, W: number) {
    ref.conv2dForward(out, inp, weight, bias, cols, B, C, OC, H, W);
    ref.reluForward(out, out, B * OC * (H - ref.KS + 1) * (W - ref.KS + 1));
  },
  conv2dBackwardWeight: ref.conv2dBackwardWeight,
  conv2dBackwardInput: ref.conv2dBackwardInput,
  maxPoolForward: ref.maxPoolForward,
  maxPoolBackward: ref.maxPoolBackward,
});

export type KernelFamily = 'native' | 'relaxed' | 'simd' | 'js';

/** A kernel family plus the optimizer-side kernels that run over a worker's [start, end) ranges. */
export interface Kernels extends KernelSet {
  readonly family: KernelFamily;
  // the update of src/optim.ts over [start, end) (same signature, bit-identical results)
  optimizerStep(cfg: OptimizerConfig, lr: number, t: number, param: Float32Array, grad: Float32Array,
                state: Float32Array[], start: number, end: number): void;
  // reference.gather: rows of uint8 images through the normalization table (bit-identical in every family)
  gather(x: Float32Array, y: Int32Array, images: Uint8Array, labels: Uint8Array | Uint16Array, index: Uint32Array | null,
         start: number, rows: number, pixels: number, table: Float32Array): void;
}
