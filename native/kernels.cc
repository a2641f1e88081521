// mnist-par's native kernel family: a Node-API addon, built from this file by scripts/build-native.mjs
// during `npm install` (g++ and Node's headers; no network, no node-gyp).
//
// One binary holds two instruction-set paths of the same kernels (kernels.h), each compiled for its target
// with `#pragma GCC target`, never -march=native, so the binary runs on any x86-64:
//   avx512   AVX-512F/DQ: 16 floats a vector, 32 registers (Zen 4/5, Intel since Skylake-SP)
//   avx2     AVX2 + FMA:   8 floats a vector, 16 registers (x86-64 since Haswell / Zen 1)
// The path is chosen when the module loads in a thread, from the CPU's features (MNIST_PAR_NATIVE_ISA=avx2
// forces the narrower one, for tests and benchmarks). Neither path is available on other CPUs: the loader
// then reports the addon as unusable and `auto` falls back to WebAssembly.
//
// The kernels work in place on whatever Float32Array they are given (in training: views of the shared
// WebAssembly.Memory arena; napi_get_typedarray_info returns the pointer). The addon has no mutable global
// state, so every worker thread loads and calls it at once; each call checks the views' types and lengths
// against the sizes it is given and throws instead of touching memory outside them.
//
// Built with -ffp-contract=off: the optimizers must round after every operation, exactly as
// src/optim.ts does in float64, and the compiler must not fuse a multiply and an add behind our back.
#define NAPI_VERSION 8
#include <node_api.h>
#include <immintrin.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// Floats of the convolutions' scratch `cols` (kernels.h): a group's input, output (or output gradient) and input
// gradient or pooled output in lanes, sized for the widest path's 16 lanes (src/kernels/reference.ts conv2dScratchLength).
// Outside the two paths' target regions, so that the glue never runs instructions the CPU may lack.
constexpr int CONV_MAX_LANES = 16;
static inline double conv_scratch_floats(int C, int OC, int IH, int IW) {
  const double in = (double)C * IH * IW, out = (double)OC * (IH - 4) * (IW - 4), pooled = (double)OC * ((IH - 4) / 2) * ((IW - 4) / 2);
  return CONV_MAX_LANES * (in + out + (in > pooled ? in : pooled));
}

// ---------------------------------------------------------------------------------------------------------
// AVX-512 path
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace avx512 {
typedef __m512 V;
constexpr int W = 16;
static_assert(W <= CONV_MAX_LANES);
constexpr int FWD_ROWS = 4, FWD_OUTS = 4;  // 16 accumulators, 4 + 4 loads per 16 multiply-adds
constexpr int BWD_OUTS = 4, BWD_VECS = 4;  // 16 accumulators over a 64-float strip of C
constexpr int DIN_ROWS = 4, DIN_VECS = 4;
constexpr int FWDT_ROWS = 8, FWDT_VECS = 2;  // 16 accumulators; 8 broadcasts + 2 loads per 16 multiply-adds
// convolutions in lanes (kernels.h): forward 4 outputs × 4 columns (16 accumulators, 8 input vectors); weight
// gradient 4 outputs × a row of 5 taps (20 accumulators, a window of 5 inputs); input gradient rows of 8 + 4 columns (12 accumulators, 8 loads)
constexpr int LCONV_OUTS = 4, LCONV_XS = 4;
constexpr int LDW_OUTS = 4;
constexpr int LDI_XS = 8;
constexpr int DCONV1_ACC = 16;  // conv1 on images: outputs × 2 rows × vectors of a row (4 × 2 × 2 for 24 columns)
static inline __mmask16 first_lanes(int n) { return (__mmask16)((1u << n) - 1); }
static inline V vzero() { return _mm512_setzero_ps(); }
static inline V vset1(float x) { return _mm512_set1_ps(x); }
static inline V vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
static inline V vloadn(const float* p, int n) { return _mm512_maskz_loadu_ps(first_lanes(n), p); }
static inline void vstoren(float* p, V v, int n) { _mm512_mask_storeu_ps(p, first_lanes(n), v); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
// p[0], p[stride], …, p[(n−1)·stride] (n ≤ W; the other lanes 0, their addresses never read)
static inline V vgather_rows(const float* p, int stride, int n) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set1_epi32(stride), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), first_lanes(n), idx, p, 4);
}
// r[j] lane i ← r[i] lane j for i, j < 16: a 16×16 tile transposed in registers. Four rounds swap the
// off-diagonal blocks of 8, 4, 2 and 1 between rows i and i + d (two two-source permutes per pair).
static inline void vtranspose(V (&r)[16]) {
  // round d, lane j: lo keeps a[j] where j & d == 0 and takes b[j − d] elsewhere; hi takes a[j + d] / b[j]
  const __m512i lo8 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
  const __m512i hi8 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const __m512i lo4 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi4 = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  const __m512i lo2 = _mm512_setr_epi32(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
  const __m512i hi2 = _mm512_setr_epi32(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  const __m512i lo1 = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
  const __m512i hi1 = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  auto round = [&](int d, __m512i ilo, __m512i ihi) {
    for (int i = 0; i < 16; i++) {
      if (i & d) continue;
      const V a = r[i], b = r[i + d];
      r[i] = _mm512_permutex2var_ps(a, ilo, b);
      r[i + d] = _mm512_permutex2var_ps(a, ihi, b);
    }
  };
  round(8, lo8, hi8);
  round(4, lo4, hi4);
  round(2, lo2, hi2);
  round(1, lo1, hi1);
}
// dst[j·ldd + i] = src[i·lds + j] for i, j < 16
constexpr bool TILE_TRANSPOSE = true;
static inline void vtranspose_tile(float* dst, long ldd, const float* src, long lds) {
  V r[16];
  for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
  vtranspose(r);
  for (int j = 0; j < 16; j++) _mm512_storeu_ps(dst + j * ldd, r[j]);
}
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
// x > 0 ? y : 0 per lane (ordered compare: a NaN x gives 0)
static inline V vselect_pos(V x, V y) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ), y); }
static inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm512_div_ps(a, b); }
static inline V vsqrt(V a) { return _mm512_sqrt_ps(a); }
// lane masks of comparisons (the 2×2 max-pool): a > b ordered (false where either is NaN); m ? b : a; m ? a : 0
typedef __mmask16 M;
static inline M vgt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static inline V vblend(M m, V a, V b) { return _mm512_mask_mov_ps(a, m, b); }
static inline V vmaskz(M m, V a) { return _mm512_maskz_mov_ps(m, a); }
static inline V vmaskz_not(M m, V a) { return _mm512_maskz_mov_ps((M)~m, a); }  // m ? 0 : a
static inline M mor(M a, M b) { return (M)(a | b); }
static inline M mandnot(M a, M b) { return (M)(~a & b); }  // ¬a ∧ b
// even ← a[0], a[2], …, b[0], b[2], …; odd ← a[1], a[3], …, b[1], …  (2W consecutive floats a, b split by parity)
static inline void vdeinterleave(V a, V b, V& even, V& odd) {
  even = _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
  odd = _mm512_permutex2var_ps(a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b);
}
// lo ← e[0], o[0], e[1], o[1], … (the first W), hi ← the next W: the inverse of vdeinterleave
static inline void vinterleave(V e, V o, V& lo, V& hi) {
  lo = _mm512_permutex2var_ps(e, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), o);
  hi = _mm512_permutex2var_ps(e, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), o);
}

// s[i·NO + j] = Σ lanes of acc[i][j]. The 4×4 block (the one that does nearly all the work) folds its 16
// accumulators into one vector in four levels of shuffle + add (15 adds instead of 16 separate 4-level
// reductions); lane 4i + j of the result is output (i, j). Other shapes reduce one accumulator at a time.
template <int NR, int NO>
static inline void fwd_reduce(V (&acc)[NR][NO], float* s) {
  if constexpr (NR == 4 && NO == 4) {
    // level 1 pairs t[k] with t[k+8], level 2 t[k] with t[k+4], levels 3-4 within 128-bit units; tracing
    // the shuffles, result lane 4u + j sums t[UNIT[u] + LANE[j]], so accumulator (u, j) goes there.
    constexpr int UNIT[4] = {0, 8, 4, 12};
    constexpr int LANE[4] = {0, 2, 1, 3};
    V t[16];
    for (int u = 0; u < 4; u++)
      for (int j = 0; j < 4; j++) t[UNIT[u] + LANE[j]] = acc[u][j];
    V b[8];
    for (int k = 0; k < 8; k++)
      b[k] = _mm512_add_ps(_mm512_shuffle_f32x4(t[k], t[k + 8], 0x44), _mm512_shuffle_f32x4(t[k], t[k + 8], 0xEE));
    V c[4];
    for (int k = 0; k < 4; k++)
      c[k] = _mm512_add_ps(_mm512_shuffle_f32x4(b[k], b[k + 4], 0x88), _mm512_shuffle_f32x4(b[k], b[k + 4], 0xDD));
    V d[2];
    for (int k = 0; k < 2; k++)
      d[k] = _mm512_add_ps(_mm512_shuffle_ps(c[k], c[k + 2], 0x44), _mm512_shuffle_ps(c[k], c[k + 2], 0xEE));
    V e = _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
    _mm512_storeu_ps(s, e);
  } else {
    for (int i = 0; i < NR; i++)
      for (int j = 0; j < NO; j++) s[i * NO + j] = _mm512_reduce_add_ps(acc[i][j]);
  }
}
#include "kernels.h"
}  // namespace avx512
#pragma GCC pop_options

// ---------------------------------------------------------------------------------------------------------
// AVX2 + FMA path
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
typedef __m256 V;
constexpr int W = 8;
constexpr int FWD_ROWS = 4, FWD_OUTS = 2;  // 8 accumulators + 2 weight vectors + 1 input: 11 of 16 registers
constexpr int BWD_OUTS = 4, BWD_VECS = 2;
constexpr int DIN_ROWS = 4, DIN_VECS = 2;
constexpr int FWDT_ROWS = 4, FWDT_VECS = 2;
// convolutions in lanes: forward 4 outputs × 2 columns (8 accumulators + 6 inputs + 1 broadcast of 16
// registers); weight gradient 2 outputs × 5 taps (10 + a window of 5 + 2, one spilled: still faster than 1 × 5);
// input gradient rows of 4 + 4 columns (8 + 4 + 1). Measured against 2 × 3, 3 × 2 and 1 × 5 on the real layers.
constexpr int LCONV_OUTS = 4, LCONV_XS = 2;
constexpr int LDW_OUTS = 2;
constexpr int LDI_XS = 4;
constexpr int DCONV1_ACC = 12;  // conv1 on images: outputs × 2 rows × vectors of a row (2 × 2 × 3 for 24 columns)
static inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline V vzero() { return _mm256_setzero_ps(); }
static inline V vset1(float x) { return _mm256_set1_ps(x); }
static inline V vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
// masked-off lanes are neither read nor written, and cannot fault
static inline V vloadn(const float* p, int n) { return _mm256_maskload_ps(p, first_lanes(n)); }
static inline void vstoren(float* p, V v, int n) { _mm256_maskstore_ps(p, first_lanes(n), v); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline V vgather_rows(const float* p, int stride, int n) {
  const __m256i idx = _mm256_mullo_epi32(_mm256_set1_epi32(stride), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, idx, _mm256_castsi256_ps(first_lanes(n)), 4);
}
// r[j] lane i ← r[i] lane j for i, j < 8: the usual unpack / shuffle / 128-bit permute transpose
static inline void vtranspose(V (&r)[8]) {
  V t[8], u[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
    u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
    u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
    u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
  }
  for (int k = 0; k < 4; k++) {
    r[k] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
    r[k + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
  }
}
// the linear layers' transposed copy keeps using gathers on this path
constexpr bool TILE_TRANSPOSE = false;
static inline void vtranspose_tile(float*, long, const float*, long) {}
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V vselect_pos(V x, V y) { return _mm256_and_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ), y); }
static inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm256_div_ps(a, b); }
static inline V vsqrt(V a) { return _mm256_sqrt_ps(a); }
typedef __m256 M;  // all-ones lanes where true
static inline M vgt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
static inline V vblend(M m, V a, V b) { return _mm256_blendv_ps(a, b, m); }
static inline V vmaskz(M m, V a) { return _mm256_and_ps(m, a); }
static inline V vmaskz_not(M m, V a) { return _mm256_andnot_ps(m, a); }
static inline M mor(M a, M b) { return _mm256_or_ps(a, b); }
static inline M mandnot(M a, M b) { return _mm256_andnot_ps(a, b); }
static inline void vdeinterleave(V a, V b, V& even, V& odd) {
  // within 128-bit halves: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs put in order
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}
static inline void vinterleave(V e, V o, V& lo, V& hi) {
  const V l = _mm256_unpacklo_ps(e, o), h = _mm256_unpackhi_ps(e, o);  // e0 o0 e1 o1 | e4 o4 e5 o5 and e2 … | e6 …
  lo = _mm256_permute2f128_ps(l, h, 0x20);
  hi = _mm256_permute2f128_ps(l, h, 0x31);
}

static inline float hsum(V v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
}

template <int NR, int NO>
static inline void fwd_reduce(V (&acc)[NR][NO], float* s) {
  for (int i = 0; i < NR; i++)
    for (int j = 0; j < NO; j++) s[i * NO + j] = hsum(acc[i][j]);
}
#include "kernels.h"
}  // namespace avx2
#pragma GCC pop_options

// ---------------------------------------------------------------------------------------------------------
// Dispatch: one read-only table per path; each exported function carries a pointer to its path's table.

struct Ops {
  const char* name;
  void (*linear_fwd)(float*, const float*, const float*, const float*, int, int, int, int);
  void (*linear_fwd_t)(float*, const float*, const float*, const float*, int, int, int, int);
  void (*transpose_rows)(float*, const float*, int, int, long, long);
  void (*linear_bwd_weight)(float*, float*, const float*, const float*, int, int, int, int, int);
  void (*linear_bwd_input)(float*, const float*, const float*, int, int, int);
  void (*relu_bwd)(float*, const float*, const float*, long);
  void (*sgd_plain)(float*, const float*, long, const avx512::SgdArgs&);
  void (*sgd_momentum)(float*, const float*, float*, long, const avx512::SgdArgs&);
  void (*adam)(float*, const float*, float*, float*, long, const avx512::AdamArgs&);
  void (*conv2d_fwd)(float*, float*, const float*, const float*, const float*, float*, int, int, int, int, int, int);
  void (*conv2d_fwd_direct)(float*, const float*, const float*, const float*, int, int, int, int, int, int);
  void (*conv2d_bwd_weight)(float*, float*, const float*, const float*, const float*, const float*, float*,
                            int, int, int, int, int, int, int);
  void (*conv2d_bwd_input)(float*, const float*, const float*, const float*, const float*, float*, int, int, int, int, int);
  void (*maxpool_fwd)(float*, const float*, long, int, int);
  void (*maxpool_bwd)(float*, const float*, const float*, long, int, int, int);
};

// The two namespaces declare identical argument structs; the tables use one of them for both paths.
static_assert(sizeof(avx512::SgdArgs) == sizeof(avx2::SgdArgs) && sizeof(avx512::AdamArgs) == sizeof(avx2::AdamArgs));

static void avx2_sgd_plain(float* p, const float* g, long n, const avx512::SgdArgs& a) {
  avx2::SgdArgs b;
  std::memcpy(&b, &a, sizeof b);
  avx2::sgd_plain(p, g, n, b);
}
static void avx2_sgd_momentum(float* p, const float* g, float* buf, long n, const avx512::SgdArgs& a) {
  avx2::SgdArgs b;
  std::memcpy(&b, &a, sizeof b);
  avx2::sgd_momentum(p, g, buf, n, b);
}
static void avx2_adam(float* p, const float* g, float* m, float* v, long n, const avx512::AdamArgs& a) {
  avx2::AdamArgs b;
  std::memcpy(&b, &a, sizeof b);
  avx2::adam(p, g, m, v, n, b);
}

static const Ops OPS_AVX512 = {"avx512", avx512::linear_fwd, avx512::linear_fwd_t, avx512::transpose_rows,
                               avx512::linear_bwd_weight, avx512::linear_bwd_input, avx512::relu_bwd,
                               avx512::sgd_plain, avx512::sgd_momentum, avx512::adam,
                               avx512::conv2d_fwd, avx512::conv2d_fwd_direct, avx512::conv2d_bwd_weight,
                               avx512::conv2d_bwd_input, avx512::maxpool_fwd, avx512::maxpool_bwd};
static const Ops OPS_AVX2 = {"avx2", avx2::linear_fwd, avx2::linear_fwd_t, avx2::transpose_rows,
                             avx2::linear_bwd_weight, avx2::linear_bwd_input, avx2::relu_bwd,
                             avx2_sgd_plain, avx2_sgd_momentum, avx2_adam,
                             avx2::conv2d_fwd, avx2::conv2d_fwd_direct, avx2::conv2d_bwd_weight,
                             avx2::conv2d_bwd_input, avx2::maxpool_fwd, avx2::maxpool_bwd};

// ---------------------------------------------------------------------------------------------------------
// Node-API glue: argument checking, then one kernel call.

namespace {

// Subnormal floats (below 2^-126) cost this CPU one to two orders of magnitude per operation, and training
// makes them: Adam's first moment of a dead unit decays by β1 every step, tiny activations multiply tiny
// gradients. Every kernel call runs with flush-to-zero and denormals-are-zero set in MXCSR, and restores the
// thread's previous MXCSR on the way out, so the JavaScript around it keeps IEEE semantics. (The same
// trade-off as PyTorch's torch.set_flush_denormal(True).) The results differ from the other families only
// where a value is subnormal.
struct FlushDenormals {
  unsigned saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }  // FTZ (bit 15) | DAZ (bit 6)
  ~FlushDenormals() { _mm_setcsr(saved); }
};

struct Call {
  napi_env env;
  size_t argc = 20;
  napi_value argv[20];
  const Ops* ops = nullptr;
  bool failed = false;
  const char* fn;

  Call(napi_env e, napi_callback_info info, const char* name) : env(e), fn(name) {
    void* data = nullptr;
    if (napi_get_cb_info(env, info, &argc, argv, nullptr, &data) != napi_ok) fail("bad call");
    ops = static_cast<const Ops*>(data);
  }

  void fail(const char* what, const char* detail = "") {
    if (failed) return;
    failed = true;
    char msg[256];
    snprintf(msg, sizeof msg, "native %s: %s%s", fn, what, detail);
    napi_throw_type_error(env, nullptr, msg);
  }

  bool is_null(size_t i) {
    napi_valuetype t;
    return i < argc && napi_typeof(env, argv[i], &t) == napi_ok && (t == napi_null || t == napi_undefined);
  }

  // Element pointer of a typed array of the given type holding at least `need` elements.
  void* array(size_t i, napi_typedarray_type want, double need, const char* name) {
    if (failed) return nullptr;
    bool is = false;
    if (i >= argc || napi_is_typedarray(env, argv[i], &is) != napi_ok || !is) {
      fail("expected a typed array for ", name);
      return nullptr;
    }
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    if (napi_get_typedarray_info(env, argv[i], &type, &length, &data, nullptr, nullptr) != napi_ok || type != want) {
      fail("wrong typed-array type for ", name);
      return nullptr;
    }
    if (need < 0 || (double)length < need) {
      char d[160];
      snprintf(d, sizeof d, "%s has %zu elements, needs %.0f", name, length, need);
      fail("view too short: ", d);
      return nullptr;
    }
    return data;
  }
  float* f32(size_t i, double need, const char* name) {
    return static_cast<float*>(array(i, napi_float32_array, need, name));
  }

  double num(size_t i, const char* name) {
    double v = 0;
    if (failed) return 0;
    if (i >= argc || napi_get_value_double(env, argv[i], &v) != napi_ok) fail("expected a number for ", name);
    return v;
  }
  // A non-negative integer below 2^31 (sizes, counts, offsets).
  int size(size_t i, const char* name) {
    double v = num(i, name);
    if (failed) return 0;
    if (!(v >= 0 && v < 2147483648.0) || v != (double)(int)v) fail("expected a non-negative integer for ", name);
    return (int)v;
  }
  bool flag(size_t i, const char* name) { return num(i, name) != 0; }
};

// linearForward(out, inp, weight, bias, B, C, OC, relu)      weight (OC,C)
// linearForwardT(out, inp, weightT, bias, B, C, OC, relu)    weightT (C,OC)
template <bool TRANSPOSED>
napi_value Forward(napi_env env, napi_callback_info info) {
  Call a(env, info, TRANSPOSED ? "linearForwardT" : "linearForward");
  const int B = a.size(4, "B"), C = a.size(5, "C"), OC = a.size(6, "OC");
  const bool relu = a.flag(7, "relu");
  float* out = a.f32(0, (double)B * OC, "out");
  const float* inp = a.f32(1, (double)B * C, "inp");
  const float* w = a.f32(2, (double)OC * C, TRANSPOSED ? "weightT" : "weight");
  const float* bias = a.f32(3, OC, "bias");
  if (!a.failed) {
    FlushDenormals ftz;
    (TRANSPOSED ? a.ops->linear_fwd_t : a.ops->linear_fwd)(out, inp, w, bias, B, C, OC, relu);
  }
  return nullptr;
}

// transposeRows(weightT, weight, C, OC, from, to): weightT (C,OC) ← weight (OC,C) for flat elements [from, to)
napi_value TransposeRows(napi_env env, napi_callback_info info) {
  Call a(env, info, "transposeRows");
  const int C = a.size(2, "C"), OC = a.size(3, "OC"), from = a.size(4, "from"), to = a.size(5, "to");
  if (!a.failed && (from > to || (double)to > (double)C * OC)) a.fail("expected from ≤ to ≤ C·OC");
  float* wt = a.f32(0, (double)C * OC, "weightT");
  const float* w = a.f32(1, (double)C * OC, "weight");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->transpose_rows(wt, w, C, OC, from, to);
  }
  return nullptr;
}

// linearBackwardWeight(dweight, dbias, dout, inp, B, C, OC, o0, o1): rows o0..o1 of dweight (OC,C) and dbias (OC)
napi_value LinearBackwardWeight(napi_env env, napi_callback_info info) {
  Call a(env, info, "linearBackwardWeight");
  const int B = a.size(4, "B"), C = a.size(5, "C"), OC = a.size(6, "OC"), o0 = a.size(7, "o0"), o1 = a.size(8, "o1");
  if (!a.failed && (o0 > o1 || o1 > OC)) a.fail("expected o0 ≤ o1 ≤ OC");
  float* dw = a.f32(0, (double)OC * C, "dweight");
  float* db = a.f32(1, OC, "dbias");
  const float* dout = a.f32(2, (double)B * OC, "dout");
  const float* inp = a.f32(3, (double)B * C, "inp");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->linear_bwd_weight(dw, db, dout, inp, B, C, OC, o0, o1);
  }
  return nullptr;
}

// linearBackwardInput(dinp, dout, weight, B, C, OC)
napi_value LinearBackwardInput(napi_env env, napi_callback_info info) {
  Call a(env, info, "linearBackwardInput");
  const int B = a.size(3, "B"), C = a.size(4, "C"), OC = a.size(5, "OC");
  float* dinp = a.f32(0, (double)B * C, "dinp");
  const float* dout = a.f32(1, (double)B * OC, "dout");
  const float* w = a.f32(2, (double)OC * C, "weight");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->linear_bwd_input(dinp, dout, w, B, C, OC);
  }
  return nullptr;
}

// reluBackward(dinp, dout, out, n)
napi_value ReluBackward(napi_env env, napi_callback_info info) {
  Call a(env, info, "reluBackward");
  const int n = a.size(3, "n");
  float* dinp = a.f32(0, n, "dinp");
  const float* dout = a.f32(1, n, "dout");
  const float* out = a.f32(2, n, "out");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->relu_bwd(dinp, dout, out, n);
  }
  return nullptr;
}

// The range arguments shared by the optimizers: (start, end) at argv[i..i+1], start ≤ end.
struct Range { int start, end; };
static Range range_args(Call& a, size_t i) {
  Range r{a.size(i, "start"), a.size(i + 1, "end")};
  if (!a.failed && r.end < r.start) a.fail("expected start ≤ end");
  return r;
}

// sgd(param, grad, start, end, buf | null, lr, wd, mu, damp, first, nesterov): elements [start, end)
napi_value Sgd(napi_env env, napi_callback_info info) {
  Call a(env, info, "sgd");
  const Range r = range_args(a, 2);
  float* param = a.f32(0, r.end, "param");
  const float* grad = a.f32(1, r.end, "grad");
  float* buf = a.is_null(4) ? nullptr : a.f32(4, r.end, "momentum");
  // the constants rounded to float32 once, as optim.ts does
  avx512::SgdArgs g{(float)a.num(5, "lr"), (float)a.num(6, "wd"), (float)a.num(7, "mu"), (float)a.num(8, "damp"),
                    a.flag(9, "first"), a.flag(10, "nesterov")};
  if (a.failed) return nullptr;
  const long n = r.end - r.start;
  FlushDenormals ftz;
  if (buf == nullptr) a.ops->sgd_plain(param + r.start, grad + r.start, n, g);
  else a.ops->sgd_momentum(param + r.start, grad + r.start, buf + r.start, n, g);
  return nullptr;
}

// adam(param, grad, start, end, m, v, b1, c1, b2, c2, l2, keep, step, bc2, eps): elements [start, end)
napi_value Adam(napi_env env, napi_callback_info info) {
  Call a(env, info, "adam");
  const Range r = range_args(a, 2);
  float* param = a.f32(0, r.end, "param");
  const float* grad = a.f32(1, r.end, "grad");
  float* m = a.f32(4, r.end, "m");
  float* v = a.f32(5, r.end, "v");
  avx512::AdamArgs g{(float)a.num(6, "b1"), (float)a.num(7, "c1"), (float)a.num(8, "b2"), (float)a.num(9, "c2"),
                     (float)a.num(10, "l2"), (float)a.num(11, "keep"), (float)a.num(12, "step"), (float)a.num(13, "bc2"),
                     (float)a.num(14, "eps")};
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->adam(param + r.start, grad + r.start, m + r.start, v + r.start, r.end - r.start, g);
  }
  return nullptr;
}

// gather(x, y, images, labels, index | null, start, rows, pixels, table)
//   x (rows, pixels) float32  y (rows) int32  images (N, pixels) uint8  labels (N) uint8 or uint16  table (256) float32
// Row r copies image i = index[start + r] (or start + r when index is null): x[r][p] = table[images[i][p]],
// y[r] = labels[i]. A table lookup, so the result is the same bits as the TypeScript gather.
napi_value Gather(napi_env env, napi_callback_info info) {
  Call a(env, info, "gather");
  const int start = a.size(5, "start"), rows = a.size(6, "rows"), pixels = a.size(7, "pixels");
  float* x = a.f32(0, (double)rows * pixels, "x");
  int32_t* y = static_cast<int32_t*>(a.array(1, napi_int32_array, rows, "y"));
  const uint8_t* images = static_cast<const uint8_t*>(a.array(2, napi_uint8_array, 0, "images"));
  // labels: uint8 (the IDX files' own) or uint16 (the arena's, for up to 65,535 classes)
  napi_typedarray_type labelType = napi_uint8_array;
  if (a.argc > 3) napi_get_typedarray_info(env, a.argv[3], &labelType, nullptr, nullptr, nullptr, nullptr);
  const bool wide = labelType == napi_uint16_array;
  const void* labels = a.array(3, wide ? napi_uint16_array : napi_uint8_array, 0, "labels");
  const uint32_t* index = a.is_null(4) ? nullptr
                                       : static_cast<const uint32_t*>(a.array(4, napi_uint32_array, (double)start + rows, "index"));
  const float* table = a.f32(8, 256, "table");
  if (a.failed) return nullptr;
  // the image and label counts bound every index
  size_t nImages = 0, nLabels = 0;
  napi_typedarray_type t;
  napi_get_typedarray_info(env, a.argv[2], &t, &nImages, nullptr, nullptr, nullptr);
  napi_get_typedarray_info(env, a.argv[3], &t, &nLabels, nullptr, nullptr, nullptr);
  const size_t count = pixels > 0 ? nImages / (size_t)pixels : 0;
  for (int r = 0; r < rows; r++) {
    const size_t i = index ? index[start + r] : (size_t)start + r;
    if (i >= count || i >= nLabels) {
      a.fail("image index out of range");
      return nullptr;
    }
    const uint8_t* src = images + i * (size_t)pixels;
    float* dst = x + (size_t)r * pixels;
    for (int p = 0; p < pixels; p++) dst[p] = table[src[p]];
    y[r] = wide ? static_cast<const uint16_t*>(labels)[i] : static_cast<const uint8_t*>(labels)[i];
  }
  return nullptr;
}

// The sizes shared by the convolution calls, at argv[i..i+4]: B, C, OC, H, W (H, W ≥ 5: a 5×5 valid convolution)
struct ConvDims {
  int B, C, OC, H, W;
  double in() const { return (double)B * C * H * W; }
  double out() const { return (double)B * OC * (H - 4) * (W - 4); }
  double weight() const { return (double)OC * C * 25; }
  // the scratch: a group of 16 images' input, output (gradient) and input gradient in lanes (kernels.h)
  double cols() const { return conv_scratch_floats(C, OC, H, W); }
};
static ConvDims conv_dims(Call& a, size_t i) {
  ConvDims d{a.size(i, "B"), a.size(i + 1, "C"), a.size(i + 2, "OC"), a.size(i + 3, "H"), a.size(i + 4, "W")};
  if (!a.failed && (d.H < 5 || d.W < 5)) a.fail("expected H ≥ 5 and W ≥ 5 (a 5×5 valid convolution)");
  // every index is computed in 64 bits, but a view holds at most 2^31 − 1 floats here
  if (!a.failed && (d.in() >= 2147483648.0 || d.out() >= 2147483648.0 || d.cols() >= 2147483648.0)) a.fail("sizes too large");
  return d;
}

// conv2dForward(out, inp, weight, bias, cols, B, C, OC, H, W, relu, pooled = null): with pooled (B, OC, OH/2, OW/2),
// also the 2×2 max-pool of out into it (the same bits as maxPoolForward)
napi_value Conv2dForward(napi_env env, napi_callback_info info) {
  Call a(env, info, "conv2dForward");
  const ConvDims d = conv_dims(a, 5);
  const bool relu = a.flag(10, "relu");
  float* pooled = a.argc <= 11 || a.is_null(11) ? nullptr
                  : a.f32(11, (double)d.B * d.OC * ((d.H - 4) / 2) * ((d.W - 4) / 2), "pooled");
  float* out = a.f32(0, d.out(), "out");
  const float* inp = a.f32(1, d.in(), "inp");
  const float* w = a.f32(2, d.weight(), "weight");
  const float* bias = a.f32(3, d.OC, "bias");
  float* cols = a.f32(4, d.cols(), "cols");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->conv2d_fwd(out, pooled, inp, w, bias, cols, d.B, d.C, d.OC, d.H, d.W, relu);
  }
  return nullptr;
}

// conv2dForwardDirect(out, inp, weight, bias, B, C, OC, H, W, relu): the direct form, for the benchmark
napi_value Conv2dForwardDirect(napi_env env, napi_callback_info info) {
  Call a(env, info, "conv2dForwardDirect");
  const ConvDims d = conv_dims(a, 4);
  const bool relu = a.flag(9, "relu");
  float* out = a.f32(0, d.out(), "out");
  const float* inp = a.f32(1, d.in(), "inp");
  const float* w = a.f32(2, d.weight(), "weight");
  const float* bias = a.f32(3, d.OC, "bias");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->conv2d_fwd_direct(out, inp, w, bias, d.B, d.C, d.OC, d.H, d.W, relu);
  }
  return nullptr;
}

// The gradient of a convolution's output, at argv[i] and argv[j]: dout (B, OC, OH, OW), or, when argv[j] (out, the
// ReLU's output (B, OC, OH, OW)) is given, the pooled map's gradient (B, OC, OH/2, OW/2) of its max-pool, whose
// max-pool + ReLU backward is the output's gradient (maxPoolBackward with relu).
struct OutGrad { const float* dout; const float* dpool; const float* out; };
static OutGrad out_grad(Call& a, const ConvDims& d, size_t i, size_t j) {
  const bool pooled = a.argc > j && !a.is_null(j);
  const float* g = a.f32(i, pooled ? (double)d.B * d.OC * ((d.H - 4) / 2) * ((d.W - 4) / 2) : d.out(),
                         pooled ? "dpooled" : "dout");
  if (!pooled) return {g, nullptr, nullptr};
  return {nullptr, g, a.f32(j, d.out(), "out")};
}

// conv2dBackwardWeight(dweight, dbias, dout, inp, cols, B, C, OC, H, W, o0, o1, out = null): output channels
// o0..o1 of dweight (OC, C, 5, 5) and dbias (OC); with out, dout is the pooled map's gradient (see out_grad)
napi_value Conv2dBackwardWeight(napi_env env, napi_callback_info info) {
  Call a(env, info, "conv2dBackwardWeight");
  const ConvDims d = conv_dims(a, 5);
  const int o0 = a.size(10, "o0"), o1 = a.size(11, "o1");
  if (!a.failed && (o0 > o1 || o1 > d.OC)) a.fail("expected o0 ≤ o1 ≤ OC");
  float* dw = a.f32(0, d.weight(), "dweight");
  float* db = a.f32(1, d.OC, "dbias");
  const OutGrad g = out_grad(a, d, 2, 12);
  const float* inp = a.f32(3, d.in(), "inp");
  float* cols = a.f32(4, d.cols(), "cols");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->conv2d_bwd_weight(dw, db, g.dout, g.dpool, g.out, inp, cols, d.B, d.C, d.OC, d.H, d.W, o0, o1);
  }
  return nullptr;
}

// conv2dBackwardInput(dinp, dout, weight, cols, B, C, OC, H, W, out = null): with out, dout is the pooled map's
// gradient (see out_grad)
napi_value Conv2dBackwardInput(napi_env env, napi_callback_info info) {
  Call a(env, info, "conv2dBackwardInput");
  const ConvDims d = conv_dims(a, 4);
  float* dinp = a.f32(0, d.in(), "dinp");
  const OutGrad g = out_grad(a, d, 1, 9);
  const float* w = a.f32(2, d.weight(), "weight");
  float* cols = a.f32(3, d.cols(), "cols");
  if (!a.failed) {
    FlushDenormals ftz;
    a.ops->conv2d_bwd_input(dinp, g.dout, g.dpool, g.out, w, cols, d.B, d.C, d.OC, d.H, d.W);
  }
  return nullptr;
}

// maxPoolForward(out, inp, B, C, H, W)      out (B, C, ⌊H/2⌋, ⌊W/2⌋)
napi_value MaxPoolForward(napi_env env, napi_callback_info info) {
  Call a(env, info, "maxPoolForward");
  const int B = a.size(2, "B"), C = a.size(3, "C"), H = a.size(4, "H"), W = a.size(5, "W");
  float* out = a.f32(0, (double)B * C * (H / 2) * (W / 2), "out");
  const float* inp = a.f32(1, (double)B * C * H * W, "inp");
  if (!a.failed) a.ops->maxpool_fwd(out, inp, (long)B * C, H, W);
  return nullptr;
}

// maxPoolBackward(dinp, dout, inp, B, C, H, W, relu = 0): with relu, also the mask of the ReLU whose output inp is
napi_value MaxPoolBackward(napi_env env, napi_callback_info info) {
  Call a(env, info, "maxPoolBackward");
  const int B = a.size(3, "B"), C = a.size(4, "C"), H = a.size(5, "H"), W = a.size(6, "W");
  const bool relu = a.argc > 7 && !a.is_null(7) && a.flag(7, "relu");
  float* dinp = a.f32(0, (double)B * C * H * W, "dinp");
  const float* dout = a.f32(1, (double)B * C * (H / 2) * (W / 2), "dout");
  const float* inp = a.f32(2, (double)B * C * H * W, "inp");
  if (!a.failed) a.ops->maxpool_bwd(dinp, dout, inp, (long)B * C, H, W, relu);
  return nullptr;
}

bool has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"); }
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

// The functions of one path, bound to its table, plus `isa` naming it; null on failure (exception pending).
static napi_value make_path(napi_env env, const Ops* ops, napi_value target) {
  struct Fn { const char* name; napi_callback cb; };
  const Fn fns[] = {{"linearForward", Forward<false>}, {"linearForwardT", Forward<true>},
                    {"transposeRows", TransposeRows},
                    {"linearBackwardWeight", LinearBackwardWeight}, {"linearBackwardInput", LinearBackwardInput},
                    {"reluBackward", ReluBackward},
                    {"sgd", Sgd},                     {"adam", Adam},
                    {"gather", Gather},
                    {"conv2dForward", Conv2dForward}, {"conv2dForwardDirect", Conv2dForwardDirect},
                    {"conv2dBackwardWeight", Conv2dBackwardWeight}, {"conv2dBackwardInput", Conv2dBackwardInput},
                    {"maxPoolForward", MaxPoolForward}, {"maxPoolBackward", MaxPoolBackward}};
  for (const Fn& f : fns) {
    napi_value fn;
    if (napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, const_cast<Ops*>(ops), &fn) != napi_ok ||
        napi_set_named_property(env, target, f.name, fn) != napi_ok) {
      return nullptr;
    }
  }
  napi_value isa;
  if (napi_create_string_utf8(env, ops->name, NAPI_AUTO_LENGTH, &isa) != napi_ok ||
      napi_set_named_property(env, target, "isa", isa) != napi_ok) {
    return nullptr;
  }
  return target;
}

// Per thread (context-aware). The exports are the functions of the chosen path and `isa` naming it, plus
// `paths`: every path this CPU can run, each as its own set of functions (tests and benchmarks compare
// them in one process). The chosen path is the widest the CPU has; MNIST_PAR_NATIVE_ISA=avx2|avx512 asks
// for one, and a path the CPU lacks makes loading fail.
NAPI_MODULE_INIT() {
  napi_value paths;
  if (napi_create_object(env, &paths) != napi_ok) return nullptr;
  const Ops* avail[2] = {has_avx512() ? &OPS_AVX512 : nullptr, has_avx2() ? &OPS_AVX2 : nullptr};
  for (const Ops* ops : avail) {
    if (ops == nullptr) continue;
    napi_value obj;
    if (napi_create_object(env, &obj) != napi_ok || make_path(env, ops, obj) == nullptr ||
        napi_set_named_property(env, paths, ops->name, obj) != napi_ok) {
      return nullptr;
    }
  }
  const char* want = getenv("MNIST_PAR_NATIVE_ISA");
  const Ops* ops = avail[0] != nullptr ? avail[0] : avail[1];
  if (want && *want && strcmp(want, "auto") != 0) {
    ops = nullptr;
    for (const Ops* o : avail)
      if (o != nullptr && strcmp(o->name, want) == 0) ops = o;
    if (ops == nullptr) {
      char msg[200];
      snprintf(msg, sizeof msg, "MNIST_PAR_NATIVE_ISA=%s: this CPU has no such path (the paths are avx512 and avx2)", want);
      napi_throw_error(env, nullptr, msg);
      return nullptr;
    }
  }
  if (ops == nullptr) {
    napi_throw_error(env, nullptr, "this CPU has neither AVX-512 nor AVX2+FMA, the native kernels' two paths");
    return nullptr;
  }
  if (make_path(env, ops, exports) == nullptr || napi_set_named_property(env, exports, "paths", paths) != napi_ok) {
    return nullptr;
  }
  return exports;
}
