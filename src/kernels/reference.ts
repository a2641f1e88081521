// Reference kernels: plain loops over typed arrays, float32 or float64.
//
// They are the definition of what every fast kernel must compute (the oracle in tests) and the fallback
// when no fast family is available (`--kernels js`). They know nothing about threads, pools or arenas:
// every argument is a view the caller built once, and sizes are passed explicitly.
//
// Legend used in every comment: B rows in the call, C in-features, OC out-features, V classes.
// Matrices are row-major. `d` prefixes a gradient. Outputs come first, then inputs, then sizes.
// All kernels OVERWRITE their outputs: nothing accumulates across calls, so nothing needs zeroing.

export type F = Float32Array | Float64Array;
/** Class labels of the rows of a call, one per row, each in [0, V). */
export type Labels = Uint8Array | Int32Array;

// out = inp · weightᵀ + bias
// inp (B,C)  weight (OC,C)  bias (OC)  →  out (B,OC)
export function linearForward(out: F, inp: F, weight: F, bias: F, B: number, C: number, OC: number): void {
  for (let r = 0; r < B; r++) {
    const ir = r * C;
    const or = r * OC;
    for (let o = 0; o < OC; o++) {
      const wr = o * C;
      let acc = 0;
      for (let c = 0; c < C; c++) acc += inp[ir + c] * weight[wr + c];
      out[or + o] = acc + bias[o];
    }
  }
}

// weightT (C,OC) ← weight (OC,C) for the elements [from, to) of the flattened weight (row-major (OC,C)):
// weightT[c·OC + o] = weight[o·C + c]. The layout the native family's forward pass reads.
export function transposeRows(weightT: F, weight: F, C: number, OC: number, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const o = Math.floor(i / C);
    weightT[(i - o * C) * OC + o] = weight[i];
  }
}

// Gradients of out = inp · weightᵀ + bias: linearBackwardWeight over every output, then linearBackwardInput.
// dout (B,OC)  inp (B,C)  weight (OC,C)  →  dweight (OC,C) = doutᵀ · inp,  dbias (OC) = Σ_rows dout,
//                                            dinp (B,C) = dout · weight   (skipped when dinp is null:
//                                            the first layer's input gradient is never needed)
export function linearBackward(dinp: F | null, dweight: F, dbias: F, dout: F, inp: F, weight: F,
                               B: number, C: number, OC: number): void {
  linearBackwardWeight(dweight, dbias, dout, inp, B, C, OC, 0, OC);
  if (dinp !== null) linearBackwardInput(dinp, dout, weight, B, C, OC);
}

// Rows [o0, o1) of the weight and bias gradients: for o0 ≤ o < o1
//   dweight[o][c] = Σ_r dout[r][o] · inp[r][c],   dbias[o] = Σ_r dout[r][o]
// dout (B,OC)  inp (B,C)  →  dweight (OC,C), dbias (OC): only rows o0..o1 written.
// Each element is one sum over the B rows in order r = 0, 1, …: the bits of an element do not depend on which
// other outputs share the call, so threads that own different outputs together compute the whole-layer call.
export function linearBackwardWeight(dweight: F, dbias: F, dout: F, inp: F, B: number, C: number, OC: number,
                                     o0: number, o1: number): void {
  for (let o = o0; o < o1; o++) {
    const wr = o * C;
    let db = 0;
    for (let c = 0; c < C; c++) dweight[wr + c] = 0;
    for (let r = 0; r < B; r++) {
      const g = dout[r * OC + o];
      db += g;
      const ir = r * C;
      for (let c = 0; c < C; c++) dweight[wr + c] += g * inp[ir + c];
    }
    dbias[o] = db;
  }
}

// dinp = dout · weight, the input gradient alone
// dout (B,OC)  weight (OC,C)  →  dinp (B,C); each row's sum runs over o in order, whatever rows share the call
export function linearBackwardInput(dinp: F, dout: F, weight: F, B: number, C: number, OC: number): void {
  for (let r = 0; r < B; r++) {
    const ir = r * C;
    const or = r * OC;
    for (let c = 0; c < C; c++) dinp[ir + c] = 0;
    for (let o = 0; o < OC; o++) {
      const g = dout[or + o];
      const wr = o * C;
      for (let c = 0; c < C; c++) dinp[ir + c] += g * weight[wr + c];
    }
  }
}

// out = max(inp, 0), elementwise over n values; out may alias inp
export function reluForward(out: F, inp: F, n: number): void {
  for (let i = 0; i < n; i++) out[i] = inp[i] > 0 ? inp[i] : 0;
}

// dinp = dout where the forward output was positive, else 0 (the gradient at exactly 0 is 0)
// dout (n)  out (n): the ReLU's forward output  →  dinp (n); dinp may alias dout
export function reluBackward(dinp: F, dout: F, out: F, n: number): void {
  for (let i = 0; i < n; i++) dinp[i] = out[i] > 0 ? dout[i] : 0;
}

// Softmax + cross-entropy with optional label smoothing ε (PyTorch's CrossEntropyLoss semantics):
//   p = softmax(logits row),  q = (1−ε)·onehot(target) + ε/V,  loss_row = −Σ_v q_v · log p_v
// logits (B,V)  targets (B)  →  probs (B,V); returns Σ over rows of loss_row (the caller divides).
// Computed with the max subtracted, so large logits do not overflow.
export function crossEntropyForward(probs: F, logits: F, targets: Labels, B: number, V: number,
                                    smoothing: number): number {
  let total = 0;
  for (let r = 0; r < B; r++) {
    const base = r * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[base + v] > max) max = logits[base + v];
    let sum = 0;
    for (let v = 0; v < V; v++) {
      const e = Math.exp(logits[base + v] - max);
      probs[base + v] = e;
      sum += e;
    }
    const logSum = Math.log(sum);
    const inv = 1 / sum;
    let sumLogP = 0; // Σ_v log p_v, needed only for the smoothing term
    for (let v = 0; v < V; v++) {
      probs[base + v] *= inv;
      sumLogP += logits[base + v] - max - logSum;
    }
    const t = targets[r];
    const logPt = logits[base + t] - max - logSum;
    total += -(1 - smoothing) * logPt - (smoothing / V) * sumLogP;
  }
  return total;
}

// dlogits = scale · (p − q), the gradient of scale · Σ_rows loss_row
// probs (B,V) from crossEntropyForward  targets (B)  →  dlogits (B,V); dlogits may alias probs.
// scale is 1/(rows in the whole batch), so that the gradients are of the batch mean whatever rows a call holds.
export function crossEntropyBackward(dlogits: F, probs: F, targets: Labels, B: number, V: number,
                                     smoothing: number, scale: number): void {
  const off = smoothing / V;
  for (let r = 0; r < B; r++) {
    const base = r * V;
    const t = targets[r];
    for (let v = 0; v < V; v++) {
      const q = (v === t ? 1 - smoothing : 0) + off;
      dlogits[base + v] = scale * (probs[base + v] - q);
    }
  }
}

// Number of rows whose arg-max (ties → lowest index) equals the target.
// logits (B,V)  targets (B)
export function countCorrect(logits: F, targets: Labels, B: number, V: number): number {
  let correct = 0;
  for (let r = 0; r < B; r++) {
    const base = r * V;
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[base + v] > logits[base + best]) best = v;
    if (best === targets[r]) correct++;
  }
  return correct;
}

// Copies and normalizes rows of a uint8 image set: image i = index[start + r] (start + r when index is
// null) becomes row r, x[r][p] = table[images[i][p]], and y[r] = labels[i]. A table lookup, so every
// family gives the same bits.
// images (N, pixels) uint8  labels (N) uint8  table (256)  →  x (rows, pixels), y (rows)
export function gather(x: Float32Array, y: Int32Array, images: Uint8Array, labels: Uint8Array | Uint16Array, index: Uint32Array | null,
                       start: number, rows: number, pixels: number, table: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const i = index ? index[start + r] : start + r;
    const src = i * pixels;
    const dst = r * pixels;
    for (let p = 0; p < pixels; p++) x[dst + p] = table[images[src + p]];
    y[r] = labels[i];
  }
}

// ---------------------------------------------------------------------------------------------------------
// Convolution and pooling (the small convolutional net of issue 11)
//
// Activation layout: per image (channels, rows, columns), images one after another, exactly PyTorch's
// NCHW. Flattening a pooled map into the linear layer is then the identity (PyTorch's flatten order
// (channel, row, column)), and no layout kernel is needed between the layers.
// Legend: B images in the call, C input channels, OC output channels, H × W an input map, OH × OW an
// output map. The convolutions are 5×5, stride 1, no padding ("valid"): OH = H − 4, OW = W − 4.
// Weights are PyTorch's Conv2d layout (OC, C, 5, 5), i.e. (OC, C·25) row-major: the layout of nn.Linear,
// which is what lets the WebAssembly families run a convolution as im2col + matrix products.

/** Side of the square convolution kernels. */
export const KS = 5;
/** Taps of one output channel per input channel: KS·KS. */
export const KK = KS * KS;

/** Images the convolutions' scratch holds at once in the native family's layout (its widest vector). */
export const CONV_LANES = 16;

/** Floats of the scratch `cols` the fast families' convolution kernels need, whatever B: room for CONV_LANES
 *  images' input (C,H,W), output or output gradient (OC,OH,OW), and input gradient or pooled output
 *  (OC,⌊OH/2⌋,⌊OW/2⌋), whichever is larger: the native family's groups of images in lanes (native/kernels.h).
 *  It also holds the WebAssembly families' im2col matrix of one image, (C·25) × (OH·OW), and their padded
 *  im2row matrix and weight gradient, (OH·OW + OC) × KCp with KCp = C·25 rounded up to a multiple of 16 (in
 *  practice always the smaller). The reference does not use it. */
export function conv2dScratchLength(C: number, OC: number, H: number, W: number): number {
  const OH = Math.max(0, H - KS + 1);
  const OW = Math.max(0, W - KS + 1);
  const inp = C * H * W;
  const KCp = Math.ceil((C * KK) / 16) * 16;
  return Math.max(CONV_LANES * (inp + OC * OH * OW + Math.max(inp, OC * (OH >> 1) * (OW >> 1))), C * KK * OH * OW,
                  (OH * OW + OC) * KCp);
}

// out[b][o][y][x] = bias[o] + Σ_{c, i<5, j<5} weight[o][c][i][j] · inp[b][c][y+i][x+j]
// inp (B,C,H,W)  weight (OC,C,5,5)  bias (OC)  →  out (B,OC,H−4,W−4); overwrites out, which must not
// overlap inp. A direct loop: the oracle of the fast families. `cols` is their scratch (see
// conv2dScratchLength); the reference ignores it.
export function conv2dForward(out: F, inp: F, weight: F, bias: F, _cols: F | null, B: number, C: number, OC: number,
                              H: number, W: number): void {
  const OH = H - KS + 1;
  const OW = W - KS + 1;
  for (let b = 0; b < B; b++) {
    for (let o = 0; o < OC; o++) {
      const ob = (b * OC + o) * OH * OW;
      for (let y = 0; y < OH; y++) {
        for (let x = 0; x < OW; x++) {
          let acc = 0;
          for (let c = 0; c < C; c++) {
            const ib = ((b * C + c) * H + y) * W + x;
            const wb = (o * C + c) * KK;
            for (let i = 0; i < KS; i++) {
              for (let j = 0; j < KS; j++) acc += weight[wb + i * KS + j] * inp[ib + i * W + j];
            }
          }
          out[ob + y * OW + x] = acc + bias[o];
        }
      }
    }
  }
}

// Gradients of out = conv2dForward(inp, weight, bias): conv2dBackwardWeight over every output channel, then
// conv2dBackwardInput.
// dout (B,OC,OH,OW)  inp (B,C,H,W)  weight (OC,C,5,5)  →
//   dweight (OC,C,5,5)[o][c][i][j] = Σ_{b,y,x} dout[b][o][y][x] · inp[b][c][y+i][x+j]
//   dbias (OC)[o]                  = Σ_{b,y,x} dout[b][o][y][x]
//   dinp (B,C,H,W)[b][c][y+i][x+j] = Σ_{o} … dout[b][o][y][x] · weight[o][c][i][j], summed over every (y, x, i, j)
//                                    that lands on the pixel (skipped when dinp is null: the first layer's)
// All three are overwritten. `cols` is the fast families' scratch, as in the forward.
export function conv2dBackward(dinp: F | null, dweight: F, dbias: F, dout: F, inp: F, weight: F, cols: F | null,
                               B: number, C: number, OC: number, H: number, W: number): void {
  conv2dBackwardWeight(dweight, dbias, dout, inp, cols, B, C, OC, H, W, 0, OC);
  if (dinp !== null) conv2dBackwardInput(dinp, dout, weight, cols, B, C, OC, H, W);
}

// Output channels [o0, o1) of the weight and bias gradients (conv2dBackward's first two), summed over the B
// images in order, then the pixels (y, x) in order; only rows o0..o1 of dweight (OC,C,5,5) and dbias written.
// An element's bits do not depend on which other channels share the call.
export function conv2dBackwardWeight(dweight: F, dbias: F, dout: F, inp: F, _cols: F | null, B: number, C: number,
                                     OC: number, H: number, W: number, o0: number, o1: number): void {
  const OH = H - KS + 1;
  const OW = W - KS + 1;
  dweight.fill(0, o0 * C * KK, o1 * C * KK);
  dbias.fill(0, o0, o1);
  for (let b = 0; b < B; b++) {
    for (let o = o0; o < o1; o++) {
      const ob = (b * OC + o) * OH * OW;
      for (let y = 0; y < OH; y++) {
        for (let x = 0; x < OW; x++) {
          const g = dout[ob + y * OW + x];
          dbias[o] += g;
          for (let c = 0; c < C; c++) {
            const ib = ((b * C + c) * H + y) * W + x;
            const wb = (o * C + c) * KK;
            for (let i = 0; i < KS; i++) {
              for (let j = 0; j < KS; j++) dweight[wb + i * KS + j] += g * inp[ib + i * W + j];
            }
          }
        }
      }
    }
  }
}

// The input gradient alone (conv2dBackward's third): dinp (B,C,H,W) from dout (B,OC,OH,OW) and weight
// (OC,C,5,5); overwritten. Each image's sums run over (o, y, x, i, j) in order, whatever images share the call.
export function conv2dBackwardInput(dinp: F, dout: F, weight: F, _cols: F | null, B: number, C: number, OC: number,
                                    H: number, W: number): void {
  const OH = H - KS + 1;
  const OW = W - KS + 1;
  dinp.fill(0, 0, B * C * H * W);
  for (let b = 0; b < B; b++) {
    for (let o = 0; o < OC; o++) {
      const ob = (b * OC + o) * OH * OW;
      for (let y = 0; y < OH; y++) {
        for (let x = 0; x < OW; x++) {
          const g = dout[ob + y * OW + x];
          for (let c = 0; c < C; c++) {
            const ib = ((b * C + c) * H + y) * W + x;
            const wb = (o * C + c) * KK;
            for (let i = 0; i < KS; i++) {
              for (let j = 0; j < KS; j++) dinp[ib + i * W + j] += g * weight[wb + i * KS + j];
            }
          }
        }
      }
    }
  }
}

// 2×2 max-pool, stride 2 (PyTorch's MaxPool2d(2)): out[b][c][y][x] = max of inp[b][c][2y..2y+1][2x..2x+1]
// inp (B,C,H,W)  →  out (B,C,⌊H/2⌋,⌊W/2⌋); an odd last row or column is dropped, as PyTorch does.
// The maximum is taken in the order (0,0), (0,1), (1,0), (1,1), replacing only on a strictly greater value:
// ties go to the first, and a NaN is kept only in the first position (`v > best` is false for NaN).
// No argmax is recorded: maxPoolBackward recomputes it from inp with the same rule, so every family picks
// the same element and both kernels are exact (a selection, no arithmetic): bit-identical in every family.
export function maxPoolForward(out: F, inp: F, B: number, C: number, H: number, W: number): void {
  const PH = H >> 1;
  const PW = W >> 1;
  for (let m = 0; m < B * C; m++) {
    for (let y = 0; y < PH; y++) {
      const r0 = (m * H + 2 * y) * W;
      const r1 = r0 + W;
      const ob = (m * PH + y) * PW;
      for (let x = 0; x < PW; x++) {
        out[ob + x] = inp[poolChoice(inp, r0 + 2 * x, r1 + 2 * x)];
      }
    }
  }
}

/** Index in inp of the 2×2 window's chosen element, the window's rows starting at a0 and a1: the rule above,
 *  (0,0), (0,1), (1,0), (1,1), each taking over only when strictly greater. */
function poolChoice(inp: F, a0: number, a1: number): number {
  let at = a0;
  if (inp[a0 + 1] > inp[at]) at = a0 + 1;
  if (inp[a1] > inp[at]) at = a1;
  if (inp[a1 + 1] > inp[at]) at = a1 + 1;
  return at;
}

// dinp = dout routed to the element maxPoolForward chose in each window (same rule), 0 everywhere else
// (the other three of each window, and a dropped odd last row or column).
// dout (B,C,⌊H/2⌋,⌊W/2⌋)  inp (B,C,H,W): the forward's input  →  dinp (B,C,H,W); overwritten
export function maxPoolBackward(dinp: F, dout: F, inp: F, B: number, C: number, H: number, W: number): void {
  const PH = H >> 1;
  const PW = W >> 1;
  dinp.fill(0, 0, B * C * H * W);
  for (let m = 0; m < B * C; m++) {
    for (let y = 0; y < PH; y++) {
      const r0 = (m * H + 2 * y) * W;
      const r1 = r0 + W;
      const ob = (m * PH + y) * PW;
      for (let x = 0; x < PW; x++) {
        dinp[poolChoice(inp, r0 + 2 * x, r1 + 2 * x)] = dout[ob + x];
      }
    }
  }
}
