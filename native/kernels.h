// mnist-par's native kernels, written once over a small vector vocabulary and compiled twice by
// kernels.cc: once for AVX-512 (16 floats a vector, 32 registers) and once for AVX2+FMA (8 floats, 16
// registers). kernels.cc includes this file inside `#pragma GCC target(...)` with the vocabulary defined:
//
//   V            one vector of W floats
//   vzero() vset1(x) vload(p) vstore(p,v)          vadd vsub vmul vdiv vsqrt (one rounding each)
//   vfma(a,b,c) = a·b + c with one rounding          vselect_pos(x,y) = x > 0 ? y : 0 per lane
//   vloadn(p,n) / vstoren(p,v,n)   the first n ≤ W floats; never touch memory past p + n
//   vgather_rows(p,stride,n)       p[0], p[stride], … (n ≤ W lanes)
//   vtranspose_tile(dst,ldd,src,lds)  a W×W tile transposed in registers, where TILE_TRANSPOSE
//   FWD_ROWS × FWD_OUTS            forward register block;  fwd_reduce() its horizontal sums
//   FWDT_ROWS × FWDT_VECS          forward block on transposed weights
//   BWD_OUTS × BWD_VECS            weight-gradient block;   DIN_ROWS × DIN_VECS  input-gradient block
//
// Legend as in src/kernels/reference.ts: B rows in the shard, C in-features, OC out-features; matrices are
// row-major; weights are (OC, C) exactly as nn.Linear.weight, the layout of the arena and the files. The
// training forward pass reads a transposed copy (C, OC) that the arena keeps beside them (transpose_rows).
// Every kernel OVERWRITES its outputs. Nothing here allocates, keeps state or touches a global: the same
// code runs in every worker thread at once.
//
// Why these blockings (measured with bench/kernels.ts and micro-benchmarks on Zen 5, 16-64 rows):
// - forward, out = inp · weightᵀ on (OC, C) weights: both operands are contiguous along C, so each output
//   is a dot product along C. A FWD_ROWS × FWD_OUTS block keeps one accumulator per output; per W floats of
//   C it loads FWD_ROWS input vectors and FWD_OUTS weight vectors. The horizontal sums happen once per block
//   (C/W steps long), as a transposing tree of shuffles; at C = 128 they cost about half the time, which is
//   why training reads the transposed copy instead:
// - forward on transposed weights (C, OC): vectors run along OC and each input value is broadcast, no
//   horizontal sums; 8 rows × 2 vectors beat 4 × 4, 6 × 4 and 16 × 1 (1.4-2× the dot-product form).
// - weight gradient, dweight = doutᵀ · inp: vectors run along C; each dout value is broadcast. A block of
//   BWD_OUTS outputs × BWD_VECS vectors of C sums over the B rows in registers and is stored once.
// - input gradient, dinp = dout · weight: vectors along C again; a DIN_ROWS × DIN_VECS block sums over OC.
// A multiply-add has 4 cycles of latency and two issue per cycle, so at least 8 independent accumulators
// keep both units busy; AVX-512 blocks hold 16, AVX2 blocks 8-12 (it has only 16 registers).

// ---------------------------------------------------------------------------------------------------------
// Linear forward

// One FWD-style block of NR rows × NO outputs at (r, o): out[r+i][o+j] = Σ_c inp[r+i][c]·w[o+j][c] + bias.
template <int NR, int NO>
static inline void fwd_block(float* out, const float* inp, const float* w, const float* bias,
                             int C, int OC, int r, int o, int relu) {
  V acc[NR][NO];
  for (int i = 0; i < NR; i++)
    for (int j = 0; j < NO; j++) acc[i][j] = vzero();
  const float* x[NR];
  const float* y[NO];
  for (int i = 0; i < NR; i++) x[i] = inp + (long)(r + i) * C;
  for (int j = 0; j < NO; j++) y[j] = w + (long)(o + j) * C;
  int c = 0;
  for (; c + W <= C; c += W) {
    V wv[NO];
    for (int j = 0; j < NO; j++) wv[j] = vload(y[j] + c);
    for (int i = 0; i < NR; i++) {
      V xv = vload(x[i] + c);
      for (int j = 0; j < NO; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  if (c < C) {
    const int n = C - c;
    V wv[NO];
    for (int j = 0; j < NO; j++) wv[j] = vloadn(y[j] + c, n);
    for (int i = 0; i < NR; i++) {
      V xv = vloadn(x[i] + c, n);
      for (int j = 0; j < NO; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  float s[NR * NO];
  fwd_reduce<NR, NO>(acc, s);
  for (int i = 0; i < NR; i++) {
    for (int j = 0; j < NO; j++) {
      float v = s[i * NO + j] + bias[o + j];
      // `v > 0 ? v : 0`, as the reference: NaN and −0 become 0
      if (relu) v = v > 0 ? v : 0.0f;
      out[(long)(r + i) * OC + o + j] = v;
    }
  }
}

template <int NR>
static inline void fwd_rows(float* out, const float* inp, const float* w, const float* bias,
                            int C, int OC, int r, int relu) {
  int o = 0;
  // outputs in blocks of FWD_OUTS; the last OC mod FWD_OUTS one at a time
  for (; o + FWD_OUTS <= OC; o += FWD_OUTS) fwd_block<NR, FWD_OUTS>(out, inp, w, bias, C, OC, r, o, relu);
  for (; o < OC; o++) fwd_block<NR, 1>(out, inp, w, bias, C, OC, r, o, relu);
}

// linear_fwd: out = inp · wᵀ + bias, then ReLU when relu ≠ 0
// inp (B,C)  w (OC,C)  bias (OC)  →  out (B,OC)
// Rows outer: the FWD_ROWS input rows stay in L1 while the weights stream from L2 (with B = 16, outputs
// outer would move the same bytes the other way round). Training uses linear_fwd_t; this form is the
// KernelSet's linearForward, for callers without the transposed copy (the tests, bench kernels).
static void linear_fwd(float* out, const float* inp, const float* w, const float* bias,
                       int B, int C, int OC, int relu) {
  int r = 0;
  for (; r + FWD_ROWS <= B; r += FWD_ROWS) fwd_rows<FWD_ROWS>(out, inp, w, bias, C, OC, r, relu);
  // the last B mod FWD_ROWS rows
  static_assert(FWD_ROWS == 4, "the leftover rows below assume blocks of 4 rows");
  switch (B - r) {
    case 3: fwd_rows<3>(out, inp, w, bias, C, OC, r, relu); break;
    case 2: fwd_rows<2>(out, inp, w, bias, C, OC, r, relu); break;
    case 1: fwd_rows<1>(out, inp, w, bias, C, OC, r, relu); break;
    default: break;
  }
}

// Linear forward on transposed weights (the layout the native family keeps a copy in)

// out[r+i][o .. o + NV·W) = bias + Σ_c inp[r+i][c] · wt[c][o ..]; the last vector holds `last` ≤ W outputs.
template <int NR, int NV>
static inline void fwdt_block(float* out, const float* inp, const float* wt, const float* bias,
                              int C, int OC, int r, int o, int last, int relu) {
  V acc[NR][NV];
  for (int v = 0; v < NV; v++) {
    V b = (v == NV - 1 && last < W) ? vloadn(bias + o + v * W, last) : vload(bias + o + v * W);
    for (int i = 0; i < NR; i++) acc[i][v] = b;
  }
  const float* x = inp + (long)r * C;
  for (int c = 0; c < C; c++) {
    const float* y = wt + (long)c * OC + o;
    V wv[NV];
    for (int v = 0; v < NV; v++) wv[v] = (v == NV - 1 && last < W) ? vloadn(y + v * W, last) : vload(y + v * W);
    for (int i = 0; i < NR; i++) {
      V xv = vset1(x[(long)i * C + c]);
      for (int v = 0; v < NV; v++) acc[i][v] = vfma(xv, wv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < NR; i++) {
    float* d = out + (long)(r + i) * OC + o;
    for (int v = 0; v < NV; v++) {
      V a = relu ? vselect_pos(acc[i][v], acc[i][v]) : acc[i][v];
      if (v == NV - 1 && last < W) vstoren(d + v * W, a, last);
      else vstore(d + v * W, a);
    }
  }
}

template <int NV>
static inline void fwdt_cols(float* out, const float* inp, const float* wt, const float* bias, int B, int C, int OC,
                             int o, int last, int relu) {
  int r = 0;
  for (; r + FWDT_ROWS <= B; r += FWDT_ROWS) fwdt_block<FWDT_ROWS, NV>(out, inp, wt, bias, C, OC, r, o, last, relu);
  if constexpr (FWDT_ROWS > 4) {
    if (r + 4 <= B) {
      fwdt_block<4, NV>(out, inp, wt, bias, C, OC, r, o, last, relu);
      r += 4;
    }
  }
  for (; r < B; r++) fwdt_block<1, NV>(out, inp, wt, bias, C, OC, r, o, last, relu);
}

// linear_fwd_t: out = inp · wt + bias, then ReLU when relu ≠ 0 (the same function as linear_fwd)
// inp (B,C)  wt (C,OC): the weight transposed  bias (OC)  →  out (B,OC)
// Vectors run along OC and each input value is broadcast, so there are no horizontal sums. Blocks of
// FWDT_ROWS rows × FWDT_VECS vectors of outputs; output strips outermost, so the strip of wt they read
// (C × FWDT_VECS·W floats) is reused by every row block while it is in L2.
static void linear_fwd_t(float* out, const float* inp, const float* wt, const float* bias,
                         int B, int C, int OC, int relu) {
  const int strip = FWDT_VECS * W;
  int o = 0;
  for (; o + strip <= OC; o += strip) fwdt_cols<FWDT_VECS>(out, inp, wt, bias, B, C, OC, o, W, relu);
  for (; o < OC; o += W) fwdt_cols<1>(out, inp, wt, bias, B, C, OC, o, OC - o < W ? OC - o : W, relu);
}

// transpose_rows: wt (C,OC) ← w (OC,C) for the elements w[from .. to) of the flattened w, 0 ≤ from ≤ to ≤ OC·C.
// Keeps the transposed copy current for the slice of the parameters a thread has just updated. Whole rows
// go W at a time: for each column c, one gather reads w[o .. o+W)[c] (W rows, stride C) and one store writes
// them as W consecutive floats of wt's row c, so every store fills a run of a cache line instead of one float
// per line (element by element, the strides of OC·4 bytes, multiples of 512, also map all those lines to the
// same few L1 sets). The partial rows at the two ends of the range go element by element.
static void transpose_rows(float* wt, const float* w, int C, int OC, long from, long to) {
  auto one_by_one = [&](long a, long z) {
    for (long i = a; i < z; i++) {
      const long o = i / C;
      wt[(i - o * C) * OC + o] = w[i];
    }
  };
  const long o0 = (from + C - 1) / C;  // first whole row
  const long o1 = to / C;              // past the last whole row
  if (o0 >= o1) {
    one_by_one(from, to);
    return;
  }
  one_by_one(from, o0 * C);
  for (long ob = o0; ob < o1; ob += W) {
    const int n = o1 - ob < W ? (int)(o1 - ob) : W;
    const float* src = w + ob * C;
    long c = 0;
    // AVX-512: whole W×W tiles transposed in registers, 4× the speed of the gathers
    if (TILE_TRANSPOSE && n == W)
      for (; c + W <= C; c += W) vtranspose_tile(wt + c * OC + ob, OC, src + c, C);
    for (; c < C; c++) vstoren(wt + c * OC + ob, vgather_rows(src + c, C, n), n);
  }
  one_by_one(o1 * C, to);
}

// ---------------------------------------------------------------------------------------------------------
// Linear backward

// dweight[o+j][c .. c + NV·W) = Σ_r dout[r][o+j] · inp[r][c ..]; the last vector holds `last` ≤ W floats.
template <int NO, int NV>
static inline void dw_block(float* dw, const float* dout, const float* inp, int B, int C, int OC,
                            int o, int c, int last) {
  V acc[NO][NV];
  for (int j = 0; j < NO; j++)
    for (int v = 0; v < NV; v++) acc[j][v] = vzero();
  for (int r = 0; r < B; r++) {
    const float* x = inp + (long)r * C + c;
    const float* g = dout + (long)r * OC + o;
    V xv[NV];
    for (int v = 0; v < NV; v++) xv[v] = (v == NV - 1 && last < W) ? vloadn(x + v * W, last) : vload(x + v * W);
    for (int j = 0; j < NO; j++) {
      V gv = vset1(g[j]);
      for (int v = 0; v < NV; v++) acc[j][v] = vfma(gv, xv[v], acc[j][v]);
    }
  }
  for (int j = 0; j < NO; j++) {
    float* d = dw + (long)(o + j) * C + c;
    for (int v = 0; v < NV; v++) {
      if (v == NV - 1 && last < W) vstoren(d + v * W, acc[j][v], last);
      else vstore(d + v * W, acc[j][v]);
    }
  }
}

template <int NV>
static inline void dw_cols(float* dw, const float* dout, const float* inp, int B, int C, int OC, int c, int last) {
  int o = 0;
  for (; o + BWD_OUTS <= OC; o += BWD_OUTS) dw_block<BWD_OUTS, NV>(dw, dout, inp, B, C, OC, o, c, last);
  for (; o < OC; o++) dw_block<1, NV>(dw, dout, inp, B, C, OC, o, c, last);
}

// dinp[r+i][c .. c + NV·W) = Σ_o dout[r+i][o] · w[o][c ..]; the last vector holds `last` ≤ W floats.
template <int NR, int NV>
static inline void di_block(float* dinp, const float* dout, const float* w, int C, int OC, int r, int c, int last) {
  V acc[NR][NV];
  for (int i = 0; i < NR; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = vzero();
  for (int o = 0; o < OC; o++) {
    const float* y = w + (long)o * C + c;
    V wv[NV];
    for (int v = 0; v < NV; v++) wv[v] = (v == NV - 1 && last < W) ? vloadn(y + v * W, last) : vload(y + v * W);
    for (int i = 0; i < NR; i++) {
      V gv = vset1(dout[(long)(r + i) * OC + o]);
      for (int v = 0; v < NV; v++) acc[i][v] = vfma(gv, wv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < NR; i++) {
    float* d = dinp + (long)(r + i) * C + c;
    for (int v = 0; v < NV; v++) {
      if (v == NV - 1 && last < W) vstoren(d + v * W, acc[i][v], last);
      else vstore(d + v * W, acc[i][v]);
    }
  }
}

template <int NV>
static inline void di_cols(float* dinp, const float* dout, const float* w, int B, int C, int OC, int c, int last) {
  int r = 0;
  for (; r + DIN_ROWS <= B; r += DIN_ROWS) di_block<DIN_ROWS, NV>(dinp, dout, w, C, OC, r, c, last);
  for (; r < B; r++) di_block<1, NV>(dinp, dout, w, C, OC, r, c, last);
}

// linear_bwd_input: dinp = dout · w, the input gradient alone
// dout (B,OC)  w (OC,C)  →  dinp (B,C)
// Each row's result is the same whatever rows it is computed with (a sum over OC in order, per row), so a
// thread may compute the input gradient of all its micro-shards in one call.
static void linear_bwd_input(float* dinp, const float* dout, const float* w, int B, int C, int OC) {
  const int strip = DIN_VECS * W;
  int c = 0;
  for (; c + strip <= C; c += strip) di_cols<DIN_VECS>(dinp, dout, w, B, C, OC, c, W);
  for (; c < C; c += W) di_cols<1>(dinp, dout, w, B, C, OC, c, C - c < W ? C - c : W);
}

// linear_bwd: gradients of out = inp · wᵀ + bias
// dout (B,OC)  inp (B,C)  w (OC,C)  →  dweight (OC,C) = doutᵀ · inp,  dbias (OC) = Σ_rows dout,
//                                      dinp (B,C) = dout · w   (skipped when dinp is null)
// Columns of C go in strips of BWD_VECS (DIN_VECS) vectors, outermost, so the strip of inp (of w) that a
// block reads stays in L1 while the blocks of outputs (of rows) walk over it; the last strip is narrower
// and its last vector partial.
static void linear_bwd(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                       int B, int C, int OC) {
  for (int o = 0; o < OC; o++) {
    float s = 0;
    for (int r = 0; r < B; r++) s += dout[(long)r * OC + o];
    db[o] = s;
  }
  {
    const int strip = BWD_VECS * W;
    int c = 0;
    for (; c + strip <= C; c += strip) dw_cols<BWD_VECS>(dw, dout, inp, B, C, OC, c, W);
    for (; c < C; c += W) dw_cols<1>(dw, dout, inp, B, C, OC, c, C - c < W ? C - c : W);
  }
  if (dinp != nullptr) linear_bwd_input(dinp, dout, w, B, C, OC);
}

// ---------------------------------------------------------------------------------------------------------
// Elementwise kernels: bit-identical to the reference and to the WebAssembly families

// relu_bwd: dinp = dout where out > 0, else 0 (also for a NaN out)
// dout (n)  out (n)  →  dinp (n); dinp may alias dout
static void relu_bwd(float* dinp, const float* dout, const float* out, long n) {
  long i = 0;
  for (; i + W <= n; i += W) vstore(dinp + i, vselect_pos(vload(out + i), vload(dout + i)));
  if (i < n) vstoren(dinp + i, vselect_pos(vloadn(out + i, n - i), vloadn(dout + i, n - i)), (int)(n - i));
}

// The gradient of element i: Σ_{s<S} slots[s·stride + i], added in slot order and rounded to float32 after
// every addition (src/kernels/reduce.ts).
static inline V slot_sum(const float* slots, long stride, int S, long i) {
  V g = vload(slots + i);
  for (int s = 1; s < S; s++) g = vadd(g, vload(slots + s * stride + i));
  return g;
}

static inline float slot_sum1(const float* slots, long stride, int S, long i) {
  float g = slots[i];
  for (int s = 1; s < S; s++) g = g + slots[s * stride + i];
  return g;
}

// reduce_slots: grad[i] = Σ_s slots[s·stride + i] for i in [0, n)   (pointers already at the slice start)
static void reduce_slots(float* grad, const float* slots, long stride, int S, long n) {
  long i = 0;
  for (; i + W <= n; i += W) vstore(grad + i, slot_sum(slots, stride, S, i));
  for (; i < n; i++) grad[i] = slot_sum1(slots, stride, S, i);
}

// The optimizers of src/optim.ts with the gradient summed from the slots on the fly (never stored): float32
// arithmetic in optim.ts's order, one rounding per operation (the build disables contraction into FMA), so
// every family gives the same bits. The constants arrive rounded to float32 once, as optim.ts rounds them.
struct SgdArgs { float lr, wd, mu, damp; int first, nesterov; };
struct AdamArgs { float b1, c1, b2, c2, l2, keep, step, bc2, eps; };

// sgd without momentum: p = p − lr·(g + wd·p)
static void sgd_plain(float* param, const float* slots, long stride, int S, long n, const SgdArgs& a) {
  const V lr = vset1(a.lr), wd = vset1(a.wd);
  long i = 0;
  for (; i + W <= n; i += W) {
    const V p = vload(param + i);
    vstore(param + i, vsub(p, vmul(lr, vadd(slot_sum(slots, stride, S, i), vmul(wd, p)))));
  }
  for (; i < n; i++) {
    const float p = param[i];
    param[i] = p - a.lr * (slot_sum1(slots, stride, S, i) + a.wd * p);
  }
}

// sgd with momentum μ: g = grad + wd·p; b = first ? g : μ·b + damp·g; p = p − lr·(nesterov ? g + μ·b : b)
static void sgd_momentum(float* param, const float* slots, long stride, int S, float* buf, long n, const SgdArgs& a) {
  const V lr = vset1(a.lr), wd = vset1(a.wd), mu = vset1(a.mu), damp = vset1(a.damp);
  long i = 0;
  for (; i + W <= n; i += W) {
    const V p = vload(param + i);
    const V g = vadd(slot_sum(slots, stride, S, i), vmul(wd, p));
    const V b = a.first ? g : vadd(vmul(mu, vload(buf + i)), vmul(damp, g));
    vstore(buf + i, b);
    vstore(param + i, vsub(p, vmul(lr, a.nesterov ? vadd(g, vmul(mu, b)) : b)));
  }
  for (; i < n; i++) {
    const float p = param[i];
    const float g = slot_sum1(slots, stride, S, i) + a.wd * p;
    const float b = a.first ? g : a.mu * buf[i] + a.damp * g;
    buf[i] = b;
    param[i] = p - a.lr * (a.nesterov ? g + a.mu * b : b);
  }
}

// adam / adamw: g = grad + l2·p; m = b1·m + c1·g; v = b2·v + c2·g·g; p = p·keep − (step·m) / (sqrt(v)/bc2 + eps)
static void adam(float* param, const float* slots, long stride, int S, float* m, float* v, long n, const AdamArgs& a) {
  const V b1 = vset1(a.b1), c1 = vset1(a.c1), b2 = vset1(a.b2), c2 = vset1(a.c2), l2 = vset1(a.l2);
  const V keep = vset1(a.keep), step = vset1(a.step), bc2 = vset1(a.bc2), eps = vset1(a.eps);
  long i = 0;
  for (; i + W <= n; i += W) {
    const V p = vload(param + i);
    const V g = vadd(slot_sum(slots, stride, S, i), vmul(l2, p));
    const V mi = vadd(vmul(b1, vload(m + i)), vmul(c1, g));
    const V vi = vadd(vmul(b2, vload(v + i)), vmul(vmul(c2, g), g));
    vstore(m + i, mi);
    vstore(v + i, vi);
    vstore(param + i, vsub(vmul(p, keep), vdiv(vmul(step, mi), vadd(vdiv(vsqrt(vi), bc2), eps))));
  }
  for (; i < n; i++) {
    const float p = param[i];
    const float g = slot_sum1(slots, stride, S, i) + a.l2 * p;
    const float mi = a.b1 * m[i] + a.c1 * g;
    const float vi = a.b2 * v[i] + a.c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = p * a.keep - a.step * mi / (__builtin_sqrtf(vi) / a.bc2 + a.eps);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Convolution (5×5, stride 1, no padding) and 2×2 max-pool
//
// Activations are per image (C, IH, IW) as in PyTorch, images one after another; OH = IH − 4, OW = IW − 4,
// P = OH·OW output pixels, KC = C·25 taps; weights (OC, C, 5, 5) = (OC, KC) row-major. (IH/IW here are
// the reference's H/W: W is the vector width in this file.) A convolution runs as im2col + matrix
// products, one image at a time, so each image's outputs are the same bits whatever images share the call:
//   forward   cols (KC, P) = im2col(img);          out_img (OC, P) = bias + w (OC, KC) · cols
//   backward  cols (P, KC) = im2row(img);          dw (OC, KC) += dout_img (OC, P) · cols   (images in order)
//             dcols (KC, P) = wᵀ · dout_img;       dinp_img = col2im(dcols)                  (same scratch)
// Each product keeps its vectors along the contiguous axis of its output (P for out and dcols, KC for dw)
// and broadcasts the other operand, so no product needs a horizontal sum; the two copies of the input
// (im2col for the forward, im2row for dw) cost a few percent of the products they feed. Measured against a
// direct convolution (conv2d_fwd_direct below, vectors along a row of OW outputs) with bench/kernels.ts
// --conv; see the README for the numbers.

constexpr int KS = 5, KK = KS * KS;

// dst[0 .. n) = src[0 .. n)
static inline void copy_floats(float* dst, const float* src, int n) {
  int k = 0;
  for (; k + W <= n; k += W) vstore(dst + k, vload(src + k));
  if (k < n) vstoren(dst + k, vloadn(src + k, n - k), n - k);
}

// dst[0 .. n) += src[0 .. n)
static inline void add_floats(float* dst, const float* src, int n) {
  int k = 0;
  for (; k + W <= n; k += W) vstore(dst + k, vadd(vload(dst + k), vload(src + k)));
  if (k < n) vstoren(dst + k, vadd(vloadn(dst + k, n - k), vloadn(src + k, n - k)), n - k);
}

// cols (C·25, OH·OW): cols[c·25 + i·5 + j][y·OW + x] = img[c][y+i][x+j]   img (C, IH, IW); one row copy per (c,i,j,y)
static void im2col(float* cols, const float* img, int C, int IH, int IW) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  float* d = cols;
  for (int c = 0; c < C; c++)
    for (int i = 0; i < KS; i++)
      for (int j = 0; j < KS; j++)
        for (int y = 0; y < OH; y++, d += OW) copy_floats(d, img + ((long)c * IH + y + i) * IW + j, OW);
}

// cols (OH·OW, C·25): cols[y·OW + x][c·25 + i·5 + j] = img[c][y+i][x+j]; one 5-float copy per (y,x,c,i)
static void im2row(float* cols, const float* img, int C, int IH, int IW) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  float* d = cols;
  for (int y = 0; y < OH; y++)
    for (int x = 0; x < OW; x++)
      for (int c = 0; c < C; c++)
        for (int i = 0; i < KS; i++, d += KS) vstoren(d, vloadn(img + ((long)c * IH + y + i) * IW + x, KS), KS);
}

// img (C, IH, IW) = Σ over (c,i,j,y,x) of dcols[c·25 + i·5 + j][y·OW + x] placed at img[c][y+i][x+j]; overwrites img
static void col2im(float* img, const float* dcols, int C, int IH, int IW) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  for (long e = 0; e < (long)C * IH * IW; e += W) vstoren(img + e, vzero(), (long)C * IH * IW - e < W ? (int)((long)C * IH * IW - e) : W);
  const float* s = dcols;
  for (int c = 0; c < C; c++)
    for (int i = 0; i < KS; i++)
      for (int j = 0; j < KS; j++)
        for (int y = 0; y < OH; y++, s += OW) add_floats(img + ((long)c * IH + y + i) * IW + j, s, OW);
}

// D[m+i][n .. n + NV·W) = (bias ? bias[m+i] : 0) + Σ_{q<Q} A[(m+i)·am + q·aq] · Bm[q·ldb + n ..], then ReLU when
// relu ≠ 0; the last vector holds `last` ≤ W floats. Vectors along n; each A value is broadcast.
template <int NR, int NV>
static inline void gemm_block(float* D, long ldd, const float* A, long am, long aq, const float* Bm, long ldb, int Q,
                              const float* bias, int m, int n, int last, int relu) {
  V acc[NR][NV];
  for (int i = 0; i < NR; i++) {
    const V b0 = bias ? vset1(bias[m + i]) : vzero();
    for (int v = 0; v < NV; v++) acc[i][v] = b0;
  }
  const float* a = A + (long)m * am;
  const float* bq = Bm + n;
  for (int q = 0; q < Q; q++, a += aq, bq += ldb) {
    V bv[NV];
    for (int v = 0; v < NV; v++) bv[v] = (v == NV - 1 && last < W) ? vloadn(bq + v * W, last) : vload(bq + v * W);
    for (int i = 0; i < NR; i++) {
      const V av = vset1(a[i * am]);
      for (int v = 0; v < NV; v++) acc[i][v] = vfma(av, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < NR; i++) {
    float* d = D + (long)(m + i) * ldd + n;
    for (int v = 0; v < NV; v++) {
      const V r = relu ? vselect_pos(acc[i][v], acc[i][v]) : acc[i][v];
      if (v == NV - 1 && last < W) vstoren(d + v * W, r, last);
      else vstore(d + v * W, r);
    }
  }
}

template <int NV>
static inline void gemm_cols(float* D, long ldd, const float* A, long am, long aq, const float* Bm, long ldb, int Q,
                             const float* bias, int M, int n, int last, int relu) {
  int m = 0;
  for (; m + CONV_ROWS <= M; m += CONV_ROWS) gemm_block<CONV_ROWS, NV>(D, ldd, A, am, aq, Bm, ldb, Q, bias, m, n, last, relu);
  for (; m < M; m++) gemm_block<1, NV>(D, ldd, A, am, aq, Bm, ldb, Q, bias, m, n, last, relu);
}

// D (M, N) row stride ldd = bias-per-row + A · Bm: A (M, Q) read at A[m·am + q·aq] (am, aq pick A or Aᵀ),
// Bm (Q, N) row stride ldb. Blocks of CONV_ROWS rows × CONV_VECS vectors; strips of N outermost, so the
// strip of Bm (Q × CONV_VECS·W floats) stays in L1/L2 while the row blocks walk over it.
static void gemm(float* D, long ldd, const float* A, long am, long aq, const float* Bm, long ldb, int Q,
                 const float* bias, int M, int N, int relu) {
  const int strip = CONV_VECS * W;
  int n = 0;
  for (; n + strip <= N; n += strip) gemm_cols<CONV_VECS>(D, ldd, A, am, aq, Bm, ldb, Q, bias, M, n, W, relu);
  for (; n < N; n += W) gemm_cols<1>(D, ldd, A, am, aq, Bm, ldb, Q, bias, M, n, N - n < W ? N - n : W, relu);
}

// dw[o+j][k .. k + NV·W) (+)= Σ_{p<P} dout[o+j][p] · cols[p][k ..]   dout (OC, P)  cols (P, KC)
// Starts from dw's values when acc ≠ 0 (the images after the first), from 0 otherwise.
template <int NO, int NV>
static inline void conv_dw_block(float* dw, const float* dout, const float* cols, int P, int KC, int o, int k, int last,
                                 int acc0) {
  V acc[NO][NV];
  for (int j = 0; j < NO; j++) {
    float* d = dw + (long)(o + j) * KC + k;
    for (int v = 0; v < NV; v++)
      acc[j][v] = !acc0 ? vzero() : (v == NV - 1 && last < W) ? vloadn(d + v * W, last) : vload(d + v * W);
  }
  for (int p = 0; p < P; p++) {
    const float* x = cols + (long)p * KC + k;
    V xv[NV];
    for (int v = 0; v < NV; v++) xv[v] = (v == NV - 1 && last < W) ? vloadn(x + v * W, last) : vload(x + v * W);
    for (int j = 0; j < NO; j++) {
      const V g = vset1(dout[(long)(o + j) * P + p]);
      for (int v = 0; v < NV; v++) acc[j][v] = vfma(g, xv[v], acc[j][v]);
    }
  }
  for (int j = 0; j < NO; j++) {
    float* d = dw + (long)(o + j) * KC + k;
    for (int v = 0; v < NV; v++) {
      if (v == NV - 1 && last < W) vstoren(d + v * W, acc[j][v], last);
      else vstore(d + v * W, acc[j][v]);
    }
  }
}

template <int NO, int NV>
static inline void conv_dw_cols(float* dw, const float* dout, const float* cols, int P, int KC, int OC, int k, int last,
                                int acc0) {
  int o = 0;
  for (; o + NO <= OC; o += NO) conv_dw_block<NO, NV>(dw, dout, cols, P, KC, o, k, last, acc0);
  for (; o < OC; o++) conv_dw_block<1, NV>(dw, dout, cols, P, KC, o, k, last, acc0);
}

// The last strip of KC (NV ≤ CONV_DW_VECS vectors, shorter than a whole strip) in one pass, with more outputs per block
// so that it still keeps about as many accumulators: conv1's KC = 25 is 2 vectors, one of 9 floats.
template <int NV>
static inline void conv_dw_tail(float* dw, const float* dout, const float* cols, int P, int KC, int OC, int k, int acc0) {
  constexpr int NO = (CONV_DW_OUTS * CONV_DW_VECS) % NV == 0 ? CONV_DW_OUTS * CONV_DW_VECS / NV : CONV_DW_OUTS;
  conv_dw_cols<NO, NV>(dw, dout, cols, P, KC, OC, k, KC - k - (NV - 1) * W, acc0);
}

// conv2d_fwd: out = conv(inp, w) + bias, then ReLU when relu ≠ 0
// inp (B, C, IH, IW)  w (OC, C, 5, 5)  bias (OC)  cols: scratch of C·25·OH·OW floats  →  out (B, OC, OH, OW)
static void conv2d_fwd(float* out, const float* inp, const float* w, const float* bias, float* cols,
                       int B, int C, int OC, int IH, int IW, int relu) {
  const int OH = IH - KS + 1, OW = IW - KS + 1, P = OH * OW, KC = C * KK;
  for (int b = 0; b < B; b++) {
    im2col(cols, inp + (long)b * C * IH * IW, C, IH, IW);
    gemm(out + (long)b * OC * P, P, w, KC, 1, cols, P, KC, bias, OC, P, relu);
  }
}

// conv2d_bwd: gradients of out = conv(inp, w) + bias
// dout (B, OC, OH, OW)  inp (B, C, IH, IW)  w (OC, C, 5, 5)  cols: scratch (C·25·OH·OW)  →
//   dw (OC, C, 5, 5) and db (OC) summed over the images, dinp (B, C, IH, IW) (skipped when null)
// dw adds the images in order 0, 1, …; each image's dinp is computed from that image alone.
static void conv2d_bwd(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                       float* cols, int B, int C, int OC, int IH, int IW) {
  const int OH = IH - KS + 1, OW = IW - KS + 1, P = OH * OW, KC = C * KK;
  for (int o = 0; o < OC; o++) {
    V acc[1][1] = {{vzero()}};
    for (int b = 0; b < B; b++) {
      const float* g = dout + ((long)b * OC + o) * P;
      int p = 0;
      for (; p + W <= P; p += W) acc[0][0] = vadd(acc[0][0], vload(g + p));
      if (p < P) acc[0][0] = vadd(acc[0][0], vloadn(g + p, P - p));
    }
    fwd_reduce<1, 1>(acc, db + o);
  }
  if (B == 0)
    for (long e = 0; e < (long)OC * KC; e++) dw[e] = 0;
  const int strip = CONV_DW_VECS * W;
  for (int b = 0; b < B; b++) {
    const float* g = dout + (long)b * OC * P;
    im2row(cols, inp + (long)b * C * IH * IW, C, IH, IW);
    int k = 0;
    for (; k + strip <= KC; k += strip) conv_dw_cols<CONV_DW_OUTS, CONV_DW_VECS>(dw, g, cols, P, KC, OC, k, W, b > 0);
    static_assert(CONV_DW_VECS <= 4, "the tail below handles strips of up to 4 vectors");
    switch ((KC - k + W - 1) / W) {  // the vectors left, the last one partial unless KC is a multiple of W
      case 4: conv_dw_tail<4>(dw, g, cols, P, KC, OC, k, b > 0); break;
      case 3: conv_dw_tail<3>(dw, g, cols, P, KC, OC, k, b > 0); break;
      case 2: conv_dw_tail<2>(dw, g, cols, P, KC, OC, k, b > 0); break;
      case 1: conv_dw_tail<1>(dw, g, cols, P, KC, OC, k, b > 0); break;
      default: break;
    }
    if (dinp != nullptr) {
      // dcols (KC, P) = wᵀ · dout_img: A = w read down its columns (am = 1, aq = KC)
      gemm(cols, P, w, 1, KC, g, P, OC, nullptr, KC, P, 0);
      col2im(dinp + (long)b * C * IH * IW, cols, C, IH, IW);
    }
  }
}

// conv2d_fwd_direct: the same function as conv2d_fwd without im2col, kept to measure the choice (bench/kernels.ts
// --conv); not used in training. Vectors run along a row of outputs (x), NR output channels × NY output rows
// per block; per tap (c, i, j) it loads NY input rows and broadcasts NR weights. OW = 8 fills half an AVX-512
// vector, OW = 24 three quarters of two.
template <int NR, int NY>
static inline void direct_block(float* out, const float* img, const float* w, const float* bias, int C, int IH, int IW,
                                int OC, int o, int y, int x, int n, int relu) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  V acc[NR][NY];
  for (int r = 0; r < NR; r++)
    for (int s = 0; s < NY; s++) acc[r][s] = vset1(bias[o + r]);
  for (int c = 0; c < C; c++) {
    for (int i = 0; i < KS; i++) {
      for (int j = 0; j < KS; j++) {
        V xv[NY];
        for (int s = 0; s < NY; s++) xv[s] = vloadn(img + ((long)c * IH + y + s + i) * IW + x + j, n);
        for (int r = 0; r < NR; r++) {
          const V wv = vset1(w[((long)(o + r) * C + c) * KK + i * KS + j]);
          for (int s = 0; s < NY; s++) acc[r][s] = vfma(wv, xv[s], acc[r][s]);
        }
      }
    }
  }
  for (int r = 0; r < NR; r++)
    for (int s = 0; s < NY; s++)
      vstoren(out + ((long)(o + r) * OH + y + s) * OW + x, relu ? vselect_pos(acc[r][s], acc[r][s]) : acc[r][s], n);
}

template <int NR>
static inline void direct_rows(float* out, const float* img, const float* w, const float* bias, int C, int IH, int IW,
                               int OC, int o, int relu) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  for (int x = 0; x < OW; x += W) {
    const int n = OW - x < W ? OW - x : W;
    int y = 0;
    for (; y + 4 <= OH; y += 4) direct_block<NR, 4>(out, img, w, bias, C, IH, IW, OC, o, y, x, n, relu);
    for (; y < OH; y++) direct_block<NR, 1>(out, img, w, bias, C, IH, IW, OC, o, y, x, n, relu);
  }
}

static void conv2d_fwd_direct(float* out, const float* inp, const float* w, const float* bias,
                              int B, int C, int OC, int IH, int IW, int relu) {
  const int P = (IH - KS + 1) * (IW - KS + 1);
  for (int b = 0; b < B; b++) {
    const float* img = inp + (long)b * C * IH * IW;
    float* o_img = out + (long)b * OC * P;
    int o = 0;
    for (; o + 4 <= OC; o += 4) direct_rows<4>(o_img, img, w, bias, C, IH, IW, OC, o, relu);
    for (; o < OC; o++) direct_rows<1>(o_img, img, w, bias, C, IH, IW, OC, o, relu);
  }
}

// maxpool_fwd: out (B·C maps, IH/2, IW/2) = the 2×2 max of inp (B·C maps, IH, IW), taken in the order
// (0,0), (0,1), (1,0), (1,1) and replaced only by a strictly greater value (reference.ts): a selection, so
// bit-identical to the reference. An odd last row or column is dropped.
static void maxpool_fwd(float* out, const float* inp, long maps, int IH, int IW) {
  const int PH = IH / 2, PW = IW / 2;
  for (long m = 0; m < maps; m++) {
    for (int y = 0; y < PH; y++) {
      const float* r0 = inp + (m * IH + 2 * y) * IW;
      const float* r1 = r0 + IW;
      float* d = out + (m * PH + y) * PW;
      for (int x = 0; x < PW; x++) {
        float best = r0[2 * x];
        if (r0[2 * x + 1] > best) best = r0[2 * x + 1];
        if (r1[2 * x] > best) best = r1[2 * x];
        if (r1[2 * x + 1] > best) best = r1[2 * x + 1];
        d[x] = best;
      }
    }
  }
}

// maxpool_bwd: dinp (maps, IH, IW) = dout routed to the element maxpool_fwd chose (recomputed from inp), 0 elsewhere
static void maxpool_bwd(float* dinp, const float* dout, const float* inp, long maps, int IH, int IW) {
  const int PH = IH / 2, PW = IW / 2;
  for (long m = 0; m < maps; m++) {
    float* dm = dinp + m * IH * IW;
    for (long e = 0; e < (long)IH * IW; e++) dm[e] = 0;
    for (int y = 0; y < PH; y++) {
      const long a = (m * IH + 2 * y) * IW;
      // No branches: which element wins is data, and random (gcc compiles `c ? a : b` on floats to jumps, which
      // mispredicted made this 15× slower than the forward). maxss(v, best) is exactly `v > best ? v : best`
      // (a NaN v keeps best), and the offset moves by an integer multiply.
      for (int x = 0; x < PW; x++) {
        const long e = a + 2 * x;
        const long off[4] = {0, 1, IW, IW + 1};
        long at = 0;
        float best = inp[e];
        for (int q = 1; q < 4; q++) {
          const float v = inp[e + off[q]];
          const long gt = v > best;
          at += gt * (off[q] - at);
          best = _mm_cvtss_f32(_mm_max_ss(_mm_set_ss(v), _mm_set_ss(best)));
        }
        dinp[e + at] = dout[(m * PH + y) * PW + x];
      }
    }
  }
}
