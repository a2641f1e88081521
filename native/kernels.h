// mnist-par's native kernels, written once over a small vector vocabulary and compiled twice by
// kernels.cc: once for AVX-512 (16 floats a vector, 32 registers) and once for AVX2+FMA (8 floats, 16
// registers). kernels.cc includes this file inside `#pragma GCC target(...)` with the vocabulary defined:
//
//   V            one vector of W floats
//   vzero() vset1(x) vload(p) vstore(p,v)          vadd vsub vmul vdiv vsqrt (one rounding each)
//   vfma(a,b,c) = a·b + c with one rounding          vselect_pos(x,y) = x > 0 ? y : 0 per lane
//   vloadn(p,n) / vstoren(p,v,n)   the first n ≤ W floats; never touch memory past p + n
//   vgather_rows(p,stride,n)       p[0], p[stride], … (n ≤ W lanes)
//   vtranspose(r[W])               W vectors transposed in registers (lane i of r[j] ↔ lane j of r[i])
//   vtranspose_tile(dst,ldd,src,lds)  a W×W tile transposed through memory, where TILE_TRANSPOSE
//   M  vgt(a,b)  vblend(m,a,b) = m ? b : a  vmaskz(m,a) = m ? a : 0  vmaskz_not(m,a) = m ? 0 : a  mor  mandnot
//                                  lane masks (the max-pool's ordered selections)
//   vdeinterleave(a,b,even,odd) / vinterleave(e,o,lo,hi)   2W consecutive floats split by parity, and back
//   FWD_ROWS × FWD_OUTS            forward register block;  fwd_reduce() its horizontal sums
//   FWDT_ROWS × FWDT_VECS          forward block on transposed weights
//   BWD_OUTS × BWD_VECS            weight-gradient block;   DIN_ROWS × DIN_VECS  input-gradient block
//   LCONV_OUTS × LCONV_XS, LDW_OUTS, LDI_XS, DCONV1_ACC   the convolutions' blocks (see their section)
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
static inline void dw_cols(float* dw, const float* dout, const float* inp, int B, int C, int OC, int o0, int o1, int c,
                           int last) {
  int o = o0;
  for (; o + BWD_OUTS <= o1; o += BWD_OUTS) dw_block<BWD_OUTS, NV>(dw, dout, inp, B, C, OC, o, c, last);
  for (; o < o1; o++) dw_block<1, NV>(dw, dout, inp, B, C, OC, o, c, last);
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
// worker may compute the input gradient of all its rows in one call.
static void linear_bwd_input(float* dinp, const float* dout, const float* w, int B, int C, int OC) {
  const int strip = DIN_VECS * W;
  int c = 0;
  for (; c + strip <= C; c += strip) di_cols<DIN_VECS>(dinp, dout, w, B, C, OC, c, W);
  for (; c < C; c += W) di_cols<1>(dinp, dout, w, B, C, OC, c, C - c < W ? C - c : W);
}

// linear_bwd_weight: rows [o0, o1) of the weight and bias gradients of out = inp · wᵀ + bias
// dout (B,OC)  inp (B,C)  →  dweight[o] (C) = Σ_r dout[r][o] · inp[r],  dbias[o] = Σ_r dout[r][o]   for o0 ≤ o < o1
// Every element is one sum over the B rows in order r = 0, 1, … (a multiply-add per row into its own lane), so
// its bits depend neither on which outputs share the call nor on the vector width: threads that own different
// outputs of a layer together compute exactly the whole layer's call, on either path. Columns of C go in strips
// of BWD_VECS vectors, outermost, so the strip of inp (B rows) is reused from L1/L2 by every block of outputs;
// the last strip is narrower and its last vector partial.
static void linear_bwd_weight(float* dw, float* db, const float* dout, const float* inp, int B, int C, int OC, int o0,
                              int o1) {
  for (int o = o0; o < o1; o++) {
    float s = 0;
    for (int r = 0; r < B; r++) s += dout[(long)r * OC + o];
    db[o] = s;
  }
  const int strip = BWD_VECS * W;
  int c = 0;
  for (; c + strip <= C; c += strip) dw_cols<BWD_VECS>(dw, dout, inp, B, C, OC, o0, o1, c, W);
  for (; c < C; c += W) dw_cols<1>(dw, dout, inp, B, C, OC, o0, o1, c, C - c < W ? C - c : W);
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

// The optimizers of src/optim.ts over n elements (pointers already at the slice's start): float32 arithmetic in
// optim.ts's order, one rounding per operation (the build disables contraction into FMA), so every family gives
// the same bits. The constants arrive rounded to float32 once, as optim.ts rounds them.
struct SgdArgs { float lr, wd, mu, damp; int first, nesterov; };
struct AdamArgs { float b1, c1, b2, c2, l2, keep, step, bc2, eps; };

// The max-pool's choice in a 2×2 window, lane by lane, in the reference's order: (0,0), then (0,1), (1,0),
// (1,1), each taking over only when strictly greater (ties stay with the first; a NaN only in the first place
// survives). k1..k3 say where each later element took over, which the backward kernels route the gradient by.
struct PoolPick { V best; M k1, k2, k3; };
static inline PoolPick pool_pick(V v00, V v01, V v10, V v11) {
  PoolPick p;
  p.k1 = vgt(v01, v00);
  p.best = vblend(p.k1, v00, v01);
  p.k2 = vgt(v10, p.best);
  p.best = vblend(p.k2, p.best, v10);
  p.k3 = vgt(v11, p.best);
  p.best = vblend(p.k3, p.best, v11);
  return p;
}

// sgd without momentum: p = p − lr·(g + wd·p)
static void sgd_plain(float* param, const float* grad, long n, const SgdArgs& a) {
  const V lr = vset1(a.lr), wd = vset1(a.wd);
  long i = 0;
  for (; i + W <= n; i += W) {
    const V p = vload(param + i);
    vstore(param + i, vsub(p, vmul(lr, vadd(vload(grad + i), vmul(wd, p)))));
  }
  for (; i < n; i++) {
    const float p = param[i];
    param[i] = p - a.lr * (grad[i] + a.wd * p);
  }
}

// sgd with momentum μ: g = grad + wd·p; b = first ? g : μ·b + damp·g; p = p − lr·(nesterov ? g + μ·b : b)
static void sgd_momentum(float* param, const float* grad, float* buf, long n, const SgdArgs& a) {
  const V lr = vset1(a.lr), wd = vset1(a.wd), mu = vset1(a.mu), damp = vset1(a.damp);
  long i = 0;
  for (; i + W <= n; i += W) {
    const V p = vload(param + i);
    const V g = vadd(vload(grad + i), vmul(wd, p));
    const V b = a.first ? g : vadd(vmul(mu, vload(buf + i)), vmul(damp, g));
    vstore(buf + i, b);
    vstore(param + i, vsub(p, vmul(lr, a.nesterov ? vadd(g, vmul(mu, b)) : b)));
  }
  for (; i < n; i++) {
    const float p = param[i];
    const float g = grad[i] + a.wd * p;
    const float b = a.first ? g : a.mu * buf[i] + a.damp * g;
    buf[i] = b;
    param[i] = p - a.lr * (a.nesterov ? g + a.mu * b : b);
  }
}

// adam / adamw: g = grad + l2·p; m = b1·m + c1·g; v = b2·v + c2·g·g; p = p·keep − (step·m) / (sqrt(v)/bc2 + eps)
static void adam(float* param, const float* grad, float* m, float* v, long n, const AdamArgs& a) {
  const V b1 = vset1(a.b1), c1 = vset1(a.c1), b2 = vset1(a.b2), c2 = vset1(a.c2), l2 = vset1(a.l2);
  const V keep = vset1(a.keep), step = vset1(a.step), bc2 = vset1(a.bc2), eps = vset1(a.eps);
  long i = 0;
  for (; i + W <= n; i += W) {
    const V p = vload(param + i);
    const V g = vadd(vload(grad + i), vmul(l2, p));
    const V mi = vadd(vmul(b1, vload(m + i)), vmul(c1, g));
    const V vi = vadd(vmul(b2, vload(v + i)), vmul(vmul(c2, g), g));
    vstore(m + i, mi);
    vstore(v + i, vi);
    vstore(param + i, vsub(vmul(p, keep), vdiv(vmul(step, mi), vadd(vdiv(vsqrt(vi), bc2), eps))));
  }
  for (; i < n; i++) {
    const float p = param[i];
    const float g = grad[i] + a.l2 * p;
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
// the reference's H/W: W is the vector width in this file.)
//
// The convolutions run on groups of W images held "in lanes": a map (C, IH, IW) of W images becomes
// (C, IH, IW, W), one vector per pixel whose lane b is image b of the group (to_lanes, from_lanes: W×W tile
// transposes in registers; a group of fewer than W images has zero lanes). Every multiply-add then works on
// W images at once with the weight broadcast, so no vector is partly wasted on a map's edge (24 or 8 pixels
// wide), nothing is copied into im2col matrices, and the sums of one image never mix with another's: each
// image's outputs and input gradients are computed in its own lane by the same operations in the same order
// whatever else shares the group, hence the same bits. The weight gradient sums each lane over the pixels,
// then the lanes (a fixed tree), then the groups in order: it depends only on the images of the call.
//   forward   out(o, y, x)  = bias(o) + Σ_{c,i,j} w(o,c,i,j) · in(c, y+i, x+j)        blocks of outputs × columns
//   dw        dw(o, t)      = Σ_{lanes} Σ_{y,x} dout(o, y, x) · in(t shifted by y, x)  blocks of outputs × taps
//   dinp      din(c, y', ·) = Σ_{i,o,j} w(o,c,i,j) · dout(o, y'−i, · − j)           one input row in registers
// `cols` holds the group's input, output (or output gradient) and input gradient in lanes:
// conv_scratch_floats(C, OC, IH, IW) floats (src/kernels/reference.ts conv2dScratchLength, with 16 lanes).

constexpr int KS = 5, KK = KS * KS;

// r[i] = row i of src (i < ni; its first nj floats, the rest 0), 0 for i ≥ ni; transposed; then
// dst[j·ldd .. + sw) = the transposed row j for j < nj (sw ≤ W floats stored)
static inline void transpose_tile_n(float* dst, long ldd, const float* src, long lds, int ni, int nj, int sw) {
  V r[W];
  if (ni == W && nj == W && sw == W) {  // a whole tile: no masks, no branches
    for (int i = 0; i < W; i++) r[i] = vload(src + i * lds);
    vtranspose(r);
    for (int j = 0; j < W; j++) vstore(dst + (long)j * ldd, r[j]);
    return;
  }
  for (int i = 0; i < W; i++) r[i] = i >= ni ? vzero() : nj == W ? vload(src + i * lds) : vloadn(src + i * lds, nj);
  vtranspose(r);
  for (int j = 0; j < nj; j++) {
    if (sw == W) vstore(dst + (long)j * ldd, r[j]);
    else vstoren(dst + (long)j * ldd, r[j], sw);
  }
}

// lanes (elems, W) ← the first elems floats of n ≤ W images `stride` apart: lanes[e·W + b] = img[b·stride + e],
// 0 for b ≥ n
static void to_lanes(float* lanes, const float* img, int n, long elems, long stride) {
  for (long e = 0; e < elems; e += W) {
    const int m = elems - e < W ? (int)(elems - e) : W;
    transpose_tile_n(lanes + e * W, W, img + e, stride, n, m, W);
  }
}

// n ≤ W images ← lanes (elems, W): img[b·stride + e] = lanes[e·W + b] for b < n, e < elems
static void from_lanes(float* img, long stride, const float* lanes, int n, long elems) {
  for (long e = 0; e < elems; e += W) {
    const int m = elems - e < W ? (int)(elems - e) : W;
    transpose_tile_n(img + e, stride, lanes + e * W, W, m, n, m);
  }
}

// Forward block: outputs o0 .. o0+NO of row y, columns x0 .. x0+NX, in lanes, stored at out + r·ostride + x·W
// (out: output o0's row y at column 0)
template <int NO, int NX>
static inline void lconv_block(float* out, long ostride, const float* in, const float* w, const float* bias, int C,
                               int IH, int IW, int o0, int y, int x0, int relu) {
  const long KC = (long)C * KK;
  V acc[NO][NX];
  for (int r = 0; r < NO; r++) {
    const V b = vset1(bias[o0 + r]);
    for (int s = 0; s < NX; s++) acc[r][s] = b;
  }
  for (int c = 0; c < C; c++) {
    for (int i = 0; i < KS; i++) {
      const float* row = in + (((long)c * IH + y + i) * IW + x0) * W;
      const float* wr = w + o0 * KC + c * KK + i * KS;
      V v[NX + KS - 1];
      for (int s = 0; s < NX + KS - 1; s++) v[s] = vload(row + s * W);
      for (int j = 0; j < KS; j++) {
        for (int r = 0; r < NO; r++) {
          const V wv = vset1(wr[r * KC + j]);
          for (int s = 0; s < NX; s++) acc[r][s] = vfma(wv, v[s + j], acc[r][s]);
        }
      }
    }
  }
  for (int r = 0; r < NO; r++) {
    float* d = out + r * ostride + (long)x0 * W;
    for (int s = 0; s < NX; s++) vstore(d + s * W, relu ? vselect_pos(acc[r][s], acc[r][s]) : acc[r][s]);
  }
}

// the last n < NX columns of a row, one block
template <int NO, int NX>
static inline void lconv_rest(float* out, long ostride, const float* in, const float* w, const float* bias, int C,
                              int IH, int IW, int o0, int y, int x0, int n, int relu) {
  if constexpr (NX > 1) {
    if (n < NX) return lconv_rest<NO, NX - 1>(out, ostride, in, w, bias, C, IH, IW, o0, y, x0, n, relu);
  }
  lconv_block<NO, NX>(out, ostride, in, w, bias, C, IH, IW, o0, y, x0, relu);
}

template <int NO>
static inline void lconv_outs(float* out, long ostride, const float* in, const float* w, const float* bias, int C,
                              int IH, int IW, int o0, int y, int relu) {
  const int OW = IW - KS + 1;
  int x = 0;
  for (; x + LCONV_XS <= OW; x += LCONV_XS) lconv_block<NO, LCONV_XS>(out, ostride, in, w, bias, C, IH, IW, o0, y, x, relu);
  if (x < OW) lconv_rest<NO, LCONV_XS - 1>(out, ostride, in, w, bias, C, IH, IW, o0, y, x, OW - x, relu);
}

// rows y0 .. y0+R of out = conv(in (C, IH, IW) in lanes) + bias, then ReLU when relu ≠ 0, into chunk (OC, R, OW) in lanes
static void lconv_rows(float* chunk, const float* in, const float* w, const float* bias, int C, int OC, int IH, int IW,
                       int y0, int R, int relu) {
  const int OW = IW - KS + 1;
  const long ostride = (long)R * OW * W;
  for (int y = y0; y < y0 + R; y++) {
    float* row = chunk + (long)(y - y0) * OW * W;
    int o = 0;
    for (; o + LCONV_OUTS <= OC; o += LCONV_OUTS)
      lconv_outs<LCONV_OUTS>(row + o * ostride, ostride, in, w, bias, C, IH, IW, o, y, relu);
    for (; o < OC; o++) lconv_outs<1>(row + o * ostride, ostride, in, w, bias, C, IH, IW, o, y, relu);
  }
}

// pooled (OC, R/2 rows from py, PW) in lanes (whole map: rows PH) ← the 2×2 max of chunk (OC, R, OW) in lanes, R even,
// with the reference's rule and order (maxpool_fwd)
static void lpool_rows(float* pooled, const float* chunk, int OC, int R, int OW, int PH, int py) {
  const int PW = OW / 2;
  for (int o = 0; o < OC; o++) {
    for (int q = 0; q < R / 2; q++) {
      const float* r0 = chunk + ((long)o * R + 2 * q) * OW * W;
      const float* r1 = r0 + (long)OW * W;
      float* d = pooled + (((long)o * PH + py + q) * PW) * W;
      for (int x = 0; x < PW; x++) {
        vstore(d + x * W, pool_pick(vload(r0 + 2 * x * W), vload(r0 + (2 * x + 1) * W), vload(r1 + 2 * x * W),
                                    vload(r1 + (2 * x + 1) * W)).best);
      }
    }
  }
}

// Weight-gradient block: dw[o0 + r][c·25 + i·5 + j] for r < NO, j < 5 (+)= Σ_lanes Σ_{y,x} dout(o0+r, y, x) ·
// in(c, y+i, x+j): one row of taps of NO outputs. Along x the five taps read a sliding window of five input
// vectors, so each position loads one new input vector and NO output-gradient vectors for 5·NO multiply-adds (the
// window rotates by renaming: the loop is unrolled by 5). The first group stores, later groups add (in order).
template <int NO, int K>
static inline void ldw_step(V (&acc)[NO][KS], V (&win)[KS], const float* g, long P, const float* xr, int x) {
  win[(K + KS - 1) % KS] = vload(xr + (long)(x + K + KS - 1) * W);
  V gv[NO];
  for (int r = 0; r < NO; r++) gv[r] = vload(g + (r * P + x + K) * W);
  for (int j = 0; j < KS; j++)
    for (int r = 0; r < NO; r++) acc[r][j] = vfma(gv[r], win[(K + j) % KS], acc[r][j]);
}

template <int NO>
static inline void ldw_row(float* dw, const float* dout, const float* in, int C, int IH, int IW, int OH, int OW, int o0,
                           int c, int i, int first) {
  const long KC = (long)C * KK, P = (long)OH * OW;
  V acc[NO][KS];
  for (int r = 0; r < NO; r++)
    for (int j = 0; j < KS; j++) acc[r][j] = vzero();
  for (int y = 0; y < OH; y++) {
    const float* g = dout + ((long)o0 * P + (long)y * OW) * W;
    const float* xr = in + ((long)c * IH + y + i) * IW * W;
    V win[KS];
    for (int j = 0; j < KS - 1; j++) win[j] = vload(xr + j * W);
    int x = 0;
    for (; x + KS <= OW; x += KS) {
      ldw_step<NO, 0>(acc, win, g, P, xr, x);
      ldw_step<NO, 1>(acc, win, g, P, xr, x);
      ldw_step<NO, 2>(acc, win, g, P, xr, x);
      ldw_step<NO, 3>(acc, win, g, P, xr, x);
      ldw_step<NO, 4>(acc, win, g, P, xr, x);
    }
    static_assert(KS == 5, "the leftover steps below assume 5 taps a row");
    const int rest = OW - x;
    if (rest > 0) ldw_step<NO, 0>(acc, win, g, P, xr, x);
    if (rest > 1) ldw_step<NO, 1>(acc, win, g, P, xr, x);
    if (rest > 2) ldw_step<NO, 2>(acc, win, g, P, xr, x);
    if (rest > 3) ldw_step<NO, 3>(acc, win, g, P, xr, x);
  }
  float s[NO][KS];
  if constexpr (NO == 4) {
    // the first four taps of the four outputs in one transposing tree, the fifth one at a time
    V a[4][4];
    for (int r = 0; r < 4; r++)
      for (int j = 0; j < 4; j++) a[r][j] = acc[r][j];
    float t[16];
    fwd_reduce<4, 4>(a, t);
    V e[4][1];
    for (int r = 0; r < 4; r++) e[r][0] = acc[r][4];
    float u[4];
    fwd_reduce<4, 1>(e, u);
    for (int r = 0; r < 4; r++) {
      for (int j = 0; j < 4; j++) s[r][j] = t[r * 4 + j];
      s[r][4] = u[r];
    }
  } else {
    fwd_reduce<NO, KS>(acc, &s[0][0]);
  }
  for (int r = 0; r < NO; r++) {
    float* d = dw + (o0 + r) * KC + ((long)c * KS + i) * KS;
    for (int j = 0; j < KS; j++) d[j] = first ? s[r][j] : d[j] + s[r][j];
  }
}

template <int NO>
static inline void ldw_outs(float* dw, const float* dout, const float* in, int C, int IH, int IW, int OH, int OW, int o0,
                            int first) {
  for (int c = 0; c < C; c++)
    for (int i = 0; i < KS; i++) ldw_row<NO>(dw, dout, in, C, IH, IW, OH, OW, o0, c, i, first);
}

// dw (OC, KC) and db (OC) (+)= the group's sums, from dout (OC, OH, OW) and in (C, IH, IW) in lanes
static void lconv_dw(float* dw, float* db, const float* dout, const float* in, int C, int OC, int IH, int IW, int first) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  const long P = (long)OH * OW;
  for (int o = 0; o < OC; o++) {
    V acc[1][1] = {{vzero()}};
    for (long p = 0; p < P; p++) acc[0][0] = vadd(acc[0][0], vload(dout + (o * P + p) * W));
    float s;
    fwd_reduce<1, 1>(acc, &s);
    db[o] = first ? s : db[o] + s;
  }
  int o = 0;
  for (; o + LDW_OUTS <= OC; o += LDW_OUTS) ldw_outs<LDW_OUTS>(dw, dout, in, C, IH, IW, OH, OW, o, first);
  for (; o < OC; o++) ldw_outs<1>(dw, dout, in, C, IH, IW, OH, OW, o, first);
}

// Input-gradient chunk: the contributions of output channels o0 .. o1 and output columns x0 .. x0+NX to input row yy
// of channel c, i.e. to input columns x0 .. x0+NX+4, summed over i (rows yy−i of dout), o and j in registers. With
// `add` = 0 (the first block of outputs) the first chunk of a row stores and a later one adds its first 4 columns
// (where it overlaps the previous chunk) and stores the rest; with add ≠ 0 every column adds.
template <int NX>
static inline void ldi_chunk(float* din, const float* dout, const float* w, int C, int IH, int IW, int OH, int OW,
                             int o0, int o1, int c, int yy, int x0, int add) {
  const long KC = (long)C * KK, P = (long)OH * OW;
  V acc[NX + KS - 1];
  for (int u = 0; u < NX + KS - 1; u++) acc[u] = vzero();
  const int i0 = yy - (OH - 1) > 0 ? yy - (OH - 1) : 0, i1 = yy < KS - 1 ? yy : KS - 1;
  for (int i = i0; i <= i1; i++) {
    const float* g = dout + ((long)o0 * P + (long)(yy - i) * OW + x0) * W;
    const float* wr = w + o0 * KC + (long)c * KK + i * KS;
    for (int o = o0; o < o1; o++, g += P * W, wr += KC) {
      V d[NX];
      for (int x = 0; x < NX; x++) d[x] = vload(g + x * W);
      for (int j = 0; j < KS; j++) {
        const V wv = vset1(wr[j]);
        for (int x = 0; x < NX; x++) acc[x + j] = vfma(wv, d[x], acc[x + j]);
      }
    }
  }
  float* dst = din + (((long)c * IH + yy) * IW + x0) * W;
  const int keep = add ? NX + KS - 1 : x0 > 0 ? KS - 1 : 0;  // the first `keep` columns add to what is there
  for (int u = 0; u < NX + KS - 1; u++) vstore(dst + u * W, u >= keep ? acc[u] : vadd(vload(dst + u * W), acc[u]));
}

template <int NX>
static inline void ldi_rest(float* din, const float* dout, const float* w, int C, int IH, int IW, int OH, int OW,
                            int o0, int o1, int c, int yy, int x0, int n, int add) {
  if constexpr (NX > 1) {
    if (n < NX) return ldi_rest<NX - 1>(din, dout, w, C, IH, IW, OH, OW, o0, o1, c, yy, x0, n, add);
  }
  ldi_chunk<NX>(din, dout, w, C, IH, IW, OH, OW, o0, o1, c, yy, x0, add);
}

// din (C, IH, IW) in lanes = the input gradient of dout (OC, OH, OW) in lanes; overwritten. Input rows outermost,
// then blocks of output channels whose five rows of dout (the ones an input row reads) fit in a good part of L1,
// then the input channels: each block of dout is read from L2 once per input row instead of once per channel.
// An element's sum: over the blocks in order, each summed over (i, o, j) in registers.
static void lconv_dinp(float* din, const float* dout, const float* w, int C, int OC, int IH, int IW) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  const long rows_bytes = (long)KS * OW * W * sizeof(float);  // one output channel's five rows
  const int OB = rows_bytes > 0 && 20480 / rows_bytes > 0 ? (int)(20480 / rows_bytes) : 1;
  for (int yy = 0; yy < IH; yy++) {
    for (int o0 = 0; o0 < OC; o0 += OB) {
      const int o1 = OC - o0 < OB ? OC : o0 + OB;
      for (int c = 0; c < C; c++) {
        int x = 0;
        for (; x + LDI_XS <= OW; x += LDI_XS) ldi_chunk<LDI_XS>(din, dout, w, C, IH, IW, OH, OW, o0, o1, c, yy, x, o0 > 0);
        if (x < OW) ldi_rest<LDI_XS - 1>(din, dout, w, C, IH, IW, OH, OW, o0, o1, c, yy, x, OW - x, o0 > 0);
      }
    }
  }
}

// Direct forward for a single input channel (conv1: C = 1) on the images as they lie, without lanes: the
// transposes into and out of lanes would cost as much as this layer's arithmetic (its output is 16× its input).
// Vectors run along a row of outputs, NV = ⌈OW/W⌉ of them (the last one partial: 24 = 16 + 8 columns on AVX-512);
// a block holds NO output channels × NY ≤ 2 rows, so the two rows of a pooling window are pooled in registers
// (vdeinterleave splits even and odd columns). Each output sums its 25 taps in the lanes kernels' order
// (i, then j, from the bias), one image at a time.
template <int NO, int NY, int NV>
static inline void dconv1_block(float* out, float* pooled, const float* img, const float* w, const float* bias, int IH,
                                int IW, int o0, int y, int relu) {
  const int OH = IH - KS + 1, OW = IW - KS + 1, PH = OH / 2, PW = OW / 2;
  const int last = OW - (NV - 1) * W;  // columns in the last vector, 1 … W (every other vector is whole)
  V acc[NO][NY][NV];
  for (int r = 0; r < NO; r++) {
    const V b = vset1(bias[o0 + r]);
    for (int s = 0; s < NY; s++)
      for (int v = 0; v < NV; v++) acc[r][s][v] = b;
  }
  for (int i = 0; i < KS; i++) {
    for (int j = 0; j < KS; j++) {
      // NO broadcast weights live, one input vector at a time: NO·NY·NV + NO + 1 registers
      V wv[NO];
      for (int r = 0; r < NO; r++) wv[r] = vset1(w[(o0 + r) * KK + i * KS + j]);
      for (int s = 0; s < NY; s++) {
        const float* row = img + (long)(y + s + i) * IW + j;
        for (int v = 0; v < NV; v++) {
          const V xv = v < NV - 1 ? vload(row + v * W) : vloadn(row + v * W, last);
          for (int r = 0; r < NO; r++) acc[r][s][v] = vfma(wv[r], xv, acc[r][s][v]);
        }
      }
    }
  }
  for (int r = 0; r < NO; r++) {
    for (int s = 0; s < NY; s++) {
      float* d = out + ((long)(o0 + r) * OH + y + s) * OW;
      for (int v = 0; v < NV; v++) {
        if (relu) acc[r][s][v] = vselect_pos(acc[r][s][v], acc[r][s][v]);
        if (v < NV - 1) vstore(d + v * W, acc[r][s][v]);
        else vstoren(d + v * W, acc[r][s][v], last);
      }
    }
  }
  if (pooled == nullptr || NY < 2) return;
  for (int r = 0; r < NO; r++) {
    float* d = pooled + ((long)(o0 + r) * PH + y / 2) * PW;
    for (int v = 0; v < NV; v += 2) {
      // windows v/2·W … of the two rows: columns 2x, 2x+1 from the vector pair (v, v+1)
      V v00, v01, v10, v11;
      vdeinterleave(acc[r][0][v], v + 1 < NV ? acc[r][0][v + 1] : vzero(), v00, v01);
      vdeinterleave(acc[r][NY - 1][v], v + 1 < NV ? acc[r][NY - 1][v + 1] : vzero(), v10, v11);
      const V best = pool_pick(v00, v01, v10, v11).best;
      const int x = v / 2 * W, n = PW - x < W ? PW - x : W;
      if (n == W) vstore(d + x, best);
      else if (n > 0) vstoren(d + x, best, n);
    }
  }
}

template <int NO, int NV>
static inline void dconv1_outs(float* out, float* pooled, const float* img, const float* w, const float* bias, int IH,
                               int IW, int o0, int relu) {
  const int OH = IH - KS + 1;
  int y = 0;
  for (; y + 2 <= OH; y += 2) dconv1_block<NO, 2, NV>(out, pooled, img, w, bias, IH, IW, o0, y, relu);
  if (y < OH) dconv1_block<NO, 1, NV>(out, pooled, img, w, bias, IH, IW, o0, y, relu);
}

// the last n < NO + 1 output channels, one block
template <int NO, int NV>
static inline void dconv1_rest(float* out, float* pooled, const float* img, const float* w, const float* bias, int IH,
                               int IW, int o0, int n, int relu) {
  if constexpr (NO > 1) {
    if (n < NO) return dconv1_rest<NO - 1, NV>(out, pooled, img, w, bias, IH, IW, o0, n, relu);
  }
  dconv1_outs<NO, NV>(out, pooled, img, w, bias, IH, IW, o0, relu);
}

template <int NV>
static void dconv1_fwd(float* out, float* pooled, const float* inp, const float* w, const float* bias, int B, int OC,
                       int IH, int IW, int relu) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  const long in_img = (long)IH * IW, out_img = (long)OC * OH * OW, pool_img = (long)OC * (OH / 2) * (OW / 2);
  constexpr int NO = DCONV1_ACC / (2 * NV) > 0 ? DCONV1_ACC / (2 * NV) : 1;
  for (int b = 0; b < B; b++) {
    float* o_img = out + b * out_img;
    float* p_img = pooled ? pooled + b * pool_img : nullptr;
    const float* img = inp + b * in_img;
    int o = 0;
    for (; o + NO <= OC; o += NO) dconv1_outs<NO, NV>(o_img, p_img, img, w, bias, IH, IW, o, relu);
    if (o < OC) dconv1_rest<NO - 1, NV>(o_img, p_img, img, w, bias, IH, IW, o, OC - o, relu);
  }
}

// conv2d_fwd: out = conv(inp, w) + bias, then ReLU when relu ≠ 0; and pooled = the 2×2 max-pool of out unless null
// (the same bits as maxpool_fwd on out)
// inp (B, C, IH, IW)  w (OC, C, 5, 5)  bias (OC)  cols: scratch (conv_scratch_floats)  →  out (B, OC, OH, OW),
// pooled (B, OC, OH/2, OW/2)
// Per group: the input in lanes, then two rows of outputs at a time (all channels) into a chunk in lanes that
// stays in L1, copied out to the images (and pooled in lanes) before the next two rows.
static void conv2d_fwd(float* out, float* pooled, const float* inp, const float* w, const float* bias, float* cols,
                       int B, int C, int OC, int IH, int IW, int relu) {
  const int OH = IH - KS + 1, OW = IW - KS + 1, PH = OH / 2, PW = OW / 2;
  if (C == 1 && OW <= 4 * W) {
    switch ((OW + W - 1) / W) {
      case 1: return dconv1_fwd<1>(out, pooled, inp, w, bias, B, OC, IH, IW, relu);
      case 2: return dconv1_fwd<2>(out, pooled, inp, w, bias, B, OC, IH, IW, relu);
      case 3: return dconv1_fwd<3>(out, pooled, inp, w, bias, B, OC, IH, IW, relu);
      default: return dconv1_fwd<4>(out, pooled, inp, w, bias, B, OC, IH, IW, relu);
    }
  }
  const long in_img = (long)C * IH * IW, out_img = (long)OC * OH * OW, pool_img = (long)OC * PH * PW;
  float* in_l = cols;
  float* chunk = cols + in_img * W;         // (OC, 2, OW) in lanes
  float* pool_l = chunk + out_img * W;      // (OC, PH, PW) in lanes
  for (int b = 0; b < B; b += W) {
    const int n = B - b < W ? B - b : W;
    to_lanes(in_l, inp + b * in_img, n, in_img, in_img);
    for (int y0 = 0; y0 < OH; y0 += 2) {
      const int R = OH - y0 < 2 ? OH - y0 : 2;
      lconv_rows(chunk, in_l, w, bias, C, OC, IH, IW, y0, R, relu);
      for (int o = 0; o < OC; o++)
        from_lanes(out + b * out_img + ((long)o * OH + y0) * OW, out_img, chunk + (long)o * R * OW * W, n, (long)R * OW);
      if (pooled != nullptr && R == 2) lpool_rows(pool_l, chunk, OC, 2, OW, PH, y0 / 2);
    }
    if (pooled != nullptr) from_lanes(pooled + b * pool_img, pool_img, pool_l, n, pool_img);
  }
}

// dout (OC, OH, OW) in lanes ← the gradient of a ReLU's output out under a 2×2 max-pool, from out (OC, OH, OW) in
// lanes, which dout holds on entry (overwritten in place), and the pooled map's gradient dpool (OC, PH, PW) in lanes:
// maxpool_bwd with relu, lane by lane (the same selection, the same bits)
static void lpool_relu_bwd(float* dout, const float* dpool, int OC, int OH, int OW) {
  const int PH = OH / 2, PW = OW / 2;
  for (int o = 0; o < OC; o++) {
    float* map = dout + (long)o * OH * OW * W;
    for (int py = 0; py < PH; py++) {
      float* r0 = map + (long)2 * py * OW * W;
      float* r1 = r0 + (long)OW * W;
      const float* g = dpool + ((long)o * PH + py) * PW * W;
      for (int px = 0; px < PW; px++) {
        float* a0 = r0 + 2 * px * W;
        float* a1 = r1 + 2 * px * W;
        const V v00 = vload(a0), v01 = vload(a0 + W), v10 = vload(a1), v11 = vload(a1 + W);
        const auto [best, k1, k2, k3] = pool_pick(v00, v01, v10, v11);
        const V gv = vselect_pos(best, vload(g + px * W));
        const M later = mor(mor(k1, k2), k3);
        vstore(a0, vmaskz_not(later, gv));
        vstore(a0 + W, vmaskz(mandnot(mor(k2, k3), k1), gv));
        vstore(a1, vmaskz(mandnot(k3, k2), gv));
        vstore(a1 + W, vmaskz(k3, gv));
      }
      if (OW & 1) {
        vstore(r0 + (long)(OW - 1) * W, vzero());
        vstore(r1 + (long)(OW - 1) * W, vzero());
      }
    }
    if (OH & 1)
      for (int x = 0; x < OW; x++) vstore(map + ((long)(OH - 1) * OW + x) * W, vzero());
  }
}

// The gradient of a convolution's output, in lanes, for output channels [o0, o1) of n ≤ W images at
// b·out_img (b·pool_img): read from dout (B, OC, OH, OW), or, with dpool (B, OC, OH/2, OW/2) non-null, the
// max-pool + ReLU backward of dpool for `out` (B, OC, OH, OW), the ReLU's output that was pooled (the same bits
// as maxpool_bwd with relu, which then never has to be written out). dout_l (o1 − o0, OH, OW) in lanes; pool_l is
// scratch for (o1 − o0, OH/2, OW/2) in lanes.
static void dout_to_lanes(float* dout_l, float* pool_l, const float* dout, const float* dpool, const float* out,
                          int OC, int OH, int OW, int o0, int o1, long b, int n) {
  const long P = (long)OH * OW, PP = (long)(OH / 2) * (OW / 2), out_img = OC * P, pool_img = OC * PP;
  const int m = o1 - o0;
  if (dpool == nullptr) {
    to_lanes(dout_l, dout + b * out_img + o0 * P, n, m * P, out_img);
    return;
  }
  to_lanes(dout_l, out + b * out_img + o0 * P, n, m * P, out_img);
  to_lanes(pool_l, dpool + b * pool_img + o0 * PP, n, m * PP, pool_img);
  lpool_relu_bwd(dout_l, pool_l, m, OH, OW);
}

// conv2d_bwd_weight: output channels [o0, o1) of the weight and bias gradients of out = conv(inp, w) + bias
// dout (B, OC, OH, OW) or dpool + out (see dout_to_lanes)  inp (B, C, IH, IW)  cols: scratch (conv_scratch_floats)
//   →  dw (OC, C, 5, 5) and db (OC), rows o0..o1 only, summed over the B images
// Per group of W images: the input and the channels' output gradient in lanes, then lconv_dw: an element sums
// each lane over the pixels, then the lanes (a fixed tree), then the groups in order; a channel's sums do not
// depend on which other channels share the call, so threads that own different channels together compute the
// whole layer's call.
static void conv2d_bwd_weight(float* dw, float* db, const float* dout, const float* dpool, const float* out,
                              const float* inp, float* cols, int B, int C, int OC, int IH, int IW, int o0, int o1) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  const long in_img = (long)C * IH * IW, KC = (long)C * KK;
  const int m = o1 - o0;
  if (m <= 0) return;
  if (B == 0) {
    for (long e = o0 * KC; e < o1 * KC; e++) dw[e] = 0;
    for (int o = o0; o < o1; o++) db[o] = 0;
  }
  float* in_l = cols;
  float* dout_l = cols + in_img * W;
  float* pool_l = dout_l + (long)m * OH * OW * W;
  for (int b = 0; b < B; b += W) {
    const int n = B - b < W ? B - b : W;
    to_lanes(in_l, inp + b * in_img, n, in_img, in_img);
    dout_to_lanes(dout_l, pool_l, dout, dpool, out, OC, OH, OW, o0, o1, b, n);
    lconv_dw(dw + o0 * KC, db + o0, dout_l, in_l, C, m, IH, IW, b == 0);
  }
}

// conv2d_bwd_input: the input gradient of out = conv(inp, w) + bias
// dout (B, OC, OH, OW) or dpool + out (see dout_to_lanes)  w (OC, C, 5, 5)  cols: scratch  →  dinp (B, C, IH, IW)
// Per group of W images, in lanes: each image's gradient is the same bits whatever images share the group.
static void conv2d_bwd_input(float* dinp, const float* dout, const float* dpool, const float* out, const float* w,
                             float* cols, int B, int C, int OC, int IH, int IW) {
  const int OH = IH - KS + 1, OW = IW - KS + 1;
  const long in_img = (long)C * IH * IW, out_img = (long)OC * OH * OW;
  float* dout_l = cols;
  float* din_l = dout_l + out_img * W;  // also the pooled map's gradient, before dinp is computed
  for (int b = 0; b < B; b += W) {
    const int n = B - b < W ? B - b : W;
    dout_to_lanes(dout_l, din_l, dout, dpool, out, OC, OH, OW, 0, OC, b, n);
    lconv_dinp(din_l, dout_l, w, C, OC, IH, IW);
    from_lanes(dinp + b * in_img, in_img, din_l, n, in_img);
  }
}

// conv2d_fwd_direct: the same function as conv2d_fwd on images one at a time (NCHW, no lanes), kept to measure the choice (bench/kernels.ts
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

// The 2×2 max-pool, vectorized along a row of windows: vdeinterleave splits 2W input columns into the windows'
// left and right elements, and the window's maximum is taken with the reference's rule, in its order (0,0),
// (0,1), (1,0), (1,1), replacing only on a strictly greater value (an ordered compare: NaN never replaces): a
// selection, so bit-identical to the reference. An odd last row or column is dropped.

// the four elements of windows x .. x+n of rows r0, r1 (n ≤ W): 2n floats of each row, never read past them
static inline void pool_load(const float* r0, const float* r1, int x, int n, V& v00, V& v01, V& v10, V& v11) {
  const int m = 2 * n;  // floats of each row
  V a0, a1, b0, b1;
  if (m >= 2 * W) {
    a0 = vload(r0 + 2 * x), a1 = vload(r0 + 2 * x + W), b0 = vload(r1 + 2 * x), b1 = vload(r1 + 2 * x + W);
  } else {
    const int m0 = m < W ? m : W, m1 = m - m0;
    a0 = vloadn(r0 + 2 * x, m0), b0 = vloadn(r1 + 2 * x, m0);
    a1 = m1 > 0 ? vloadn(r0 + 2 * x + W, m1) : vzero();
    b1 = m1 > 0 ? vloadn(r1 + 2 * x + W, m1) : vzero();
  }
  vdeinterleave(a0, a1, v00, v01);
  vdeinterleave(b0, b1, v10, v11);
}

// maxpool_fwd: out (B·C maps, IH/2, IW/2) = the 2×2 max of inp (B·C maps, IH, IW)
static void maxpool_fwd(float* out, const float* inp, long maps, int IH, int IW) {
  const int PH = IH / 2, PW = IW / 2;
  for (long m = 0; m < maps; m++) {
    for (int y = 0; y < PH; y++) {
      const float* r0 = inp + (m * IH + 2 * y) * IW;
      const float* r1 = r0 + IW;
      float* d = out + (m * PH + y) * PW;
      for (int x = 0; x < PW; x += W) {
        const int n = PW - x < W ? PW - x : W;
        V v00, v01, v10, v11;
        pool_load(r0, r1, x, n, v00, v01, v10, v11);
        const V best = pool_pick(v00, v01, v10, v11).best;
        if (n == W) vstore(d + x, best);
        else vstoren(d + x, best, n);
      }
    }
  }
}

// maxpool_bwd: dinp (maps, IH, IW) = dout routed to the element maxpool_fwd chose (recomputed from inp), 0
// elsewhere. With relu ≠ 0 it is also reluBackward's mask with inp as the ReLU's output (inp is the pooled
// ReLU map): the chosen element keeps its gradient only where it is > 0, which is the same bits as the two
// kernels one after the other (the others are 0 either way).
static void maxpool_bwd(float* dinp, const float* dout, const float* inp, long maps, int IH, int IW, int relu) {
  const int PH = IH / 2, PW = IW / 2;
  for (long m = 0; m < maps; m++) {
    for (int y = 0; y < PH; y++) {
      const float* r0 = inp + (m * IH + 2 * y) * IW;
      const float* r1 = r0 + IW;
      float* d0 = dinp + (m * IH + 2 * y) * IW;
      float* d1 = d0 + IW;
      const float* g = dout + (m * PH + y) * PW;
      for (int x = 0; x < PW; x += W) {
        const int n = PW - x < W ? PW - x : W;
        V v00, v01, v10, v11;
        pool_load(r0, r1, x, n, v00, v01, v10, v11);
        const auto [best, k1, k2, k3] = pool_pick(v00, v01, v10, v11);
        V gv = n == W ? vload(g + x) : vloadn(g + x, n);
        if (relu) gv = vselect_pos(best, gv);
        // the winner: (1,1) if k3, else (1,0) if k2, else (0,1) if k1, else (0,0)
        const M w3 = k3, w2 = mandnot(k3, k2), w1 = mandnot(mor(k2, k3), k1);
        const M later = mor(mor(k1, k2), k3);
        V lo, hi;
        vinterleave(vmaskz_not(later, gv), vmaskz(w1, gv), lo, hi);
        const int m2 = 2 * n, m0 = m2 < W ? m2 : W, m1 = m2 - m0;
        if (m0 == W) vstore(d0 + 2 * x, lo);
        else vstoren(d0 + 2 * x, lo, m0);
        if (m1 == W) vstore(d0 + 2 * x + W, hi);
        else if (m1 > 0) vstoren(d0 + 2 * x + W, hi, m1);
        vinterleave(vmaskz(w2, gv), vmaskz(w3, gv), lo, hi);
        if (m0 == W) vstore(d1 + 2 * x, lo);
        else vstoren(d1 + 2 * x, lo, m0);
        if (m1 == W) vstore(d1 + 2 * x + W, hi);
        else if (m1 > 0) vstoren(d1 + 2 * x + W, hi, m1);
      }
      if (IW & 1) d0[IW - 1] = d1[IW - 1] = 0;
    }
    if (IH & 1) {
      float* d = dinp + (m * IH + IH - 1) * IW;
      for (int x = 0; x < IW; x++) d[x] = 0;
    }
  }
}
