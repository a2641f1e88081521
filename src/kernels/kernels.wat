;; mnist-par's fast kernels: WebAssembly SIMD working directly in the shared arena.
;;
;; This file is a template. scripts/build-wasm.mjs expands two macros inline:
;;   (madd a b c) (= a·b + c, f32x4) becomes
;;     dist/kernels/relaxed.wasm:  f32x4.relaxed_madd   (one fused multiply-add on CPUs with FMA)
;;     dist/kernels/simd.wasm:     f32x4.add(f32x4.mul) (plain SIMD, rounded twice)
;;   (hsum4 a b c d) = [Σa, Σb, Σc, Σd], four horizontal sums folded into one vector (6 shuffles, 3 adds)
;; and nothing else differs between the two files. Only the linear kernels use madd, so the families agree
;; bit for bit on everything else (ReLU, optimizers).
;;
;; Every pointer is a byte offset into the imported shared memory (a Float32Array's byteOffset); every size
;; counts floats. Legend: B rows in the shard, C in-features, OC out-features; matrices are row-major.
;; Outputs are OVERWRITTEN (never accumulated into). Nothing allocates and nothing needs scratch.
;; Vector loads need no alignment (the arena aligns its regions, but views into them need not be).
;; Leftovers (sizes that are not multiples of 4) are done with partial loads that never touch a byte
;; past the end of a view, so a view may end at the very end of the memory.
;;
;; What V8 (Node 20, x64) does with this code decides the blocking below, measured with bench/kernels.ts:
;; - it has 15 vector registers, and every one is caller-saved: a call inside a kernel's block spills the
;;   live accumulators, so the linear kernels' blocks make no calls (hence hsum4 is a macro;
;;   $load_part/$store_part only run in leftovers; the optimizers call $grad_quads once per 16 floats);
;; - its scheduler hoists the loads of a loop body above the arithmetic, so a hand-unrolled inner loop
;;   keeps every loaded vector live at once and spills (unrolling ×2 or ×4 was 20-30% slower);
;; - one f32x4 multiply-add has a latency of 4 cycles and two issue per cycle, so 8 independent
;;   accumulators are what keeps both units busy; 10-12 would help a little but do not fit next to
;;   the hoisted loads (4×3, 6×2, 2×6 blocks all spilled and lost).
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; The first n floats at p (n ≥ 4: a whole vector; 1..3: the rest of the lanes are 0).
  (func $load_part (param $p i32) (param $n i32) (result v128)
    (if (result v128) (i32.ge_u (local.get $n) (i32.const 4))
      (then (v128.load (local.get $p)))
      (else
        (if (result v128) (i32.eq (local.get $n) (i32.const 1))
          (then (v128.load32_zero (local.get $p)))
          (else
            (if (result v128) (i32.eq (local.get $n) (i32.const 2))
              (then (v128.load64_zero (local.get $p)))
              (else (v128.load32_lane offset=8 2 (local.get $p) (v128.load64_zero (local.get $p))))))))))

  ;; Stores the first n lanes of v at p (n ≥ 4: the whole vector); nothing past p + 4n is written.
  (func $store_part (param $p i32) (param $v v128) (param $n i32)
    (if (i32.ge_u (local.get $n) (i32.const 4))
      (then (v128.store (local.get $p) (local.get $v)) (return)))
    (if (i32.and (local.get $n) (i32.const 2))
      (then
        (v128.store64_lane 0 (local.get $p) (local.get $v))
        (if (i32.eq (local.get $n) (i32.const 3))
          (then (v128.store32_lane offset=8 2 (local.get $p) (local.get $v)))))
      (else (v128.store32_lane 0 (local.get $p) (local.get $v)))))

  ;; One output of the forward: dst = (Σ_{c<C} a[c]·b[c]) + bias[0], then ReLU when relu ≠ 0.
  ;; a (C) one input row, b (C) one weight row, bias → dst (1). For the leftover rows (B mod 4) and an
  ;; odd last output; the 4×2 blocks below do everything else.
  (func $fwd_one (param $dst i32) (param $a i32) (param $b i32) (param $bias i32) (param $C i32) (param $relu i32)
    (local $acc v128) (local $end i32) (local $s f32)
    (local.set $end (i32.add (local.get $a) (i32.shl (i32.and (local.get $C) (i32.const -4)) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
      (local.set $acc (madd (v128.load (local.get $a)) (v128.load (local.get $b)) (local.get $acc)))
      (local.set $a (i32.add (local.get $a) (i32.const 16)))
      (local.set $b (i32.add (local.get $b) (i32.const 16)))
      (br $next)))
    (if (i32.and (local.get $C) (i32.const 3))
      (then (local.set $acc (madd (call $load_part (local.get $a) (i32.and (local.get $C) (i32.const 3)))
                                  (call $load_part (local.get $b) (i32.and (local.get $C) (i32.const 3)))
                                  (local.get $acc)))))
    (local.set $s (f32.add
      (f32x4.extract_lane 0 (hsum4 (local.get $acc) (local.get $acc) (local.get $acc) (local.get $acc)))
      (f32.load (local.get $bias))))
    ;; select, not max: NaN → 0 and −0 → 0 exactly as the reference's `x > 0 ? x : 0`
    (if (local.get $relu)
      (then (local.set $s (select (local.get $s) (f32.const 0) (f32.gt (local.get $s) (f32.const 0))))))
    (f32.store (local.get $dst) (local.get $s)))

  ;; linear_fwd: out = inp · wᵀ + bias, then ReLU when relu ≠ 0
  ;; inp (B,C)  w (OC,C)  bias (OC)  →  out (B,OC)
  ;; Input rows and weight rows are both contiguous along C, so every output is a dot product along C.
  ;; Blocking: 4 rows × 2 outputs = 8 accumulators of 4 partial sums each. Per 4 floats of C that is 4 + 2
  ;; vector loads for 8 multiply-adds, and 8 acc + 2 weights + 1 input = 11 live vectors, inside the 15 xmm
  ;; registers V8 allocates on x64 (4 × 3 = 12 acc + 3 + 1 would spill). The horizontal sums happen once per
  ;; block, two hsum4 folds whose lanes [r,o] [r,o+1] [r+1,o] [r+1,o+1] are stored as two 64-bit halves
  ;; (inline: as calls they cost 5-15% at C = 128, where a block is only 32 steps long).
  ;; C mod 4 is one zero-padded extra step. Loop order: rows outer, outputs inner, so the 4 input rows
  ;; (16·C bytes) stay in L1 while the weight matrix streams through once per row block.
  (func (export "linear_fwd") (param $out i32) (param $inp i32) (param $w i32) (param $bias i32)
        (param $B i32) (param $C i32) (param $OC i32) (param $relu i32)
    (local $ld i32) (local $ldo i32) (local $cv i32) (local $rem i32) (local $r i32) (local $o i32) (local $c i32)
    (local $p0 i32) (local $p1 i32) (local $p2 i32) (local $p3 i32) (local $q0 i32) (local $q1 i32) (local $dst i32)
    (local $a00 v128) (local $a01 v128) (local $a10 v128) (local $a11 v128)
    (local $a20 v128) (local $a21 v128) (local $a30 v128) (local $a31 v128)
    (local $x v128) (local $y0 v128) (local $y1 v128) (local $bv v128) (local $v v128)
    (local.set $ld (i32.shl (local.get $C) (i32.const 2)))
    (local.set $ldo (i32.shl (local.get $OC) (i32.const 2)))
    (local.set $cv (i32.shl (i32.and (local.get $C) (i32.const -4)) (i32.const 2)))
    (local.set $rem (i32.and (local.get $C) (i32.const 3)))
    (block $rows_done (loop $rows
      (br_if $rows_done (i32.gt_u (i32.add (local.get $r) (i32.const 4)) (local.get $B)))
      (local.set $p0 (i32.add (local.get $inp) (i32.mul (local.get $r) (local.get $ld))))
      (local.set $p1 (i32.add (local.get $p0) (local.get $ld)))
      (local.set $p2 (i32.add (local.get $p1) (local.get $ld)))
      (local.set $p3 (i32.add (local.get $p2) (local.get $ld)))
      (local.set $o (i32.const 0))
      (block $outs_done (loop $outs
        (br_if $outs_done (i32.gt_u (i32.add (local.get $o) (i32.const 2)) (local.get $OC)))
        (local.set $q0 (i32.add (local.get $w) (i32.mul (local.get $o) (local.get $ld))))
        (local.set $q1 (i32.add (local.get $q0) (local.get $ld)))
        (local.set $a00 (v128.const i32x4 0 0 0 0)) (local.set $a01 (v128.const i32x4 0 0 0 0))
        (local.set $a10 (v128.const i32x4 0 0 0 0)) (local.set $a11 (v128.const i32x4 0 0 0 0))
        (local.set $a20 (v128.const i32x4 0 0 0 0)) (local.set $a21 (v128.const i32x4 0 0 0 0))
        (local.set $a30 (v128.const i32x4 0 0 0 0)) (local.set $a31 (v128.const i32x4 0 0 0 0))
        (local.set $c (i32.const 0))
        (block $k_done (loop $k
          (br_if $k_done (i32.ge_u (local.get $c) (local.get $cv)))
          (local.set $y0 (v128.load (i32.add (local.get $q0) (local.get $c))))
          (local.set $y1 (v128.load (i32.add (local.get $q1) (local.get $c))))
          (local.set $x (v128.load (i32.add (local.get $p0) (local.get $c))))
          (local.set $a00 (madd (local.get $x) (local.get $y0) (local.get $a00)))
          (local.set $a01 (madd (local.get $x) (local.get $y1) (local.get $a01)))
          (local.set $x (v128.load (i32.add (local.get $p1) (local.get $c))))
          (local.set $a10 (madd (local.get $x) (local.get $y0) (local.get $a10)))
          (local.set $a11 (madd (local.get $x) (local.get $y1) (local.get $a11)))
          (local.set $x (v128.load (i32.add (local.get $p2) (local.get $c))))
          (local.set $a20 (madd (local.get $x) (local.get $y0) (local.get $a20)))
          (local.set $a21 (madd (local.get $x) (local.get $y1) (local.get $a21)))
          (local.set $x (v128.load (i32.add (local.get $p3) (local.get $c))))
          (local.set $a30 (madd (local.get $x) (local.get $y0) (local.get $a30)))
          (local.set $a31 (madd (local.get $x) (local.get $y1) (local.get $a31)))
          (local.set $c (i32.add (local.get $c) (i32.const 16)))
          (br $k)))
        (if (local.get $rem) (then
          (local.set $y0 (call $load_part (i32.add (local.get $q0) (local.get $c)) (local.get $rem)))
          (local.set $y1 (call $load_part (i32.add (local.get $q1) (local.get $c)) (local.get $rem)))
          (local.set $x (call $load_part (i32.add (local.get $p0) (local.get $c)) (local.get $rem)))
          (local.set $a00 (madd (local.get $x) (local.get $y0) (local.get $a00)))
          (local.set $a01 (madd (local.get $x) (local.get $y1) (local.get $a01)))
          (local.set $x (call $load_part (i32.add (local.get $p1) (local.get $c)) (local.get $rem)))
          (local.set $a10 (madd (local.get $x) (local.get $y0) (local.get $a10)))
          (local.set $a11 (madd (local.get $x) (local.get $y1) (local.get $a11)))
          (local.set $x (call $load_part (i32.add (local.get $p2) (local.get $c)) (local.get $rem)))
          (local.set $a20 (madd (local.get $x) (local.get $y0) (local.get $a20)))
          (local.set $a21 (madd (local.get $x) (local.get $y1) (local.get $a21)))
          (local.set $x (call $load_part (i32.add (local.get $p3) (local.get $c)) (local.get $rem)))
          (local.set $a30 (madd (local.get $x) (local.get $y0) (local.get $a30)))
          (local.set $a31 (madd (local.get $x) (local.get $y1) (local.get $a31)))))
        ;; bv = [bias[o], bias[o+1], bias[o], bias[o+1]] matches the hsum4 lane order
        (local.set $bv (v128.load64_splat (i32.add (local.get $bias) (i32.shl (local.get $o) (i32.const 2)))))
        (local.set $dst (i32.add (local.get $out)
          (i32.shl (i32.add (i32.mul (local.get $r) (local.get $OC)) (local.get $o)) (i32.const 2))))
        (local.set $v (f32x4.add (hsum4 (local.get $a00) (local.get $a01) (local.get $a10) (local.get $a11))
                                 (local.get $bv)))
        (if (local.get $relu) (then (local.set $v
          (v128.and (local.get $v) (f32x4.gt (local.get $v) (v128.const i32x4 0 0 0 0))))))
        (v128.store64_lane 0 (local.get $dst) (local.get $v))
        (v128.store64_lane 1 (i32.add (local.get $dst) (local.get $ldo)) (local.get $v))
        (local.set $dst (i32.add (local.get $dst) (i32.shl (local.get $ldo) (i32.const 1))))
        (local.set $v (f32x4.add (hsum4 (local.get $a20) (local.get $a21) (local.get $a30) (local.get $a31))
                                 (local.get $bv)))
        (if (local.get $relu) (then (local.set $v
          (v128.and (local.get $v) (f32x4.gt (local.get $v) (v128.const i32x4 0 0 0 0))))))
        (v128.store64_lane 0 (local.get $dst) (local.get $v))
        (v128.store64_lane 1 (i32.add (local.get $dst) (local.get $ldo)) (local.get $v))
        (local.set $o (i32.add (local.get $o) (i32.const 2)))
        (br $outs)))
      ;; odd OC: the last output of these 4 rows
      (if (i32.lt_u (local.get $o) (local.get $OC)) (then
        (local.set $q0 (i32.add (local.get $w) (i32.mul (local.get $o) (local.get $ld))))
        (local.set $dst (i32.add (local.get $out)
          (i32.shl (i32.add (i32.mul (local.get $r) (local.get $OC)) (local.get $o)) (i32.const 2))))
        (call $fwd_one (local.get $dst) (local.get $p0) (local.get $q0)
          (i32.add (local.get $bias) (i32.shl (local.get $o) (i32.const 2))) (local.get $C) (local.get $relu))
        (call $fwd_one (i32.add (local.get $dst) (local.get $ldo)) (local.get $p1) (local.get $q0)
          (i32.add (local.get $bias) (i32.shl (local.get $o) (i32.const 2))) (local.get $C) (local.get $relu))
        (call $fwd_one (i32.add (local.get $dst) (i32.mul (local.get $ldo) (i32.const 2))) (local.get $p2) (local.get $q0)
          (i32.add (local.get $bias) (i32.shl (local.get $o) (i32.const 2))) (local.get $C) (local.get $relu))
        (call $fwd_one (i32.add (local.get $dst) (i32.mul (local.get $ldo) (i32.const 3))) (local.get $p3) (local.get $q0)
          (i32.add (local.get $bias) (i32.shl (local.get $o) (i32.const 2))) (local.get $C) (local.get $relu))))
      (local.set $r (i32.add (local.get $r) (i32.const 4)))
      (br $rows)))
    ;; leftover rows (B mod 4): one dot product per output
    (block $tail_done (loop $tail
      (br_if $tail_done (i32.ge_u (local.get $r) (local.get $B)))
      (local.set $o (i32.const 0))
      (block $o_done (loop $o_next
        (br_if $o_done (i32.ge_u (local.get $o) (local.get $OC)))
        (call $fwd_one
          (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $OC)) (local.get $o)) (i32.const 2)))
          (i32.add (local.get $inp) (i32.mul (local.get $r) (local.get $ld)))
          (i32.add (local.get $w) (i32.mul (local.get $o) (local.get $ld)))
          (i32.add (local.get $bias) (i32.shl (local.get $o) (i32.const 2)))
          (local.get $C) (local.get $relu))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (br $o_next)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $tail))))

  ;; D = Σ_{k<K} (column m of A at k) ⊗ (row k of Bm): a sum of K rank-1 updates, OVERWRITING D (acc = 0) or
  ;; added to D's values (acc ≠ 0: the convolution's bias rows and its weight gradient summed over images).
  ;;   D[m,n] = Σ_k A[k·ak + m·am] · Bm[k·ldb + n]      D (M,N) with row stride ldd;  ak, am, ldb, ldd in bytes
  ;; Both halves of the linear backward are this shape, vectorized along n (C, contiguous in D and Bm):
  ;;   dweight (OC,C) = doutᵀ · inp:  M = OC, K = B,  A = dout read down a column (ak = 4·OC, am = 4)
  ;;   dinp    (B,C)  = dout · w:     M = B,  K = OC, A = dout read along a row  (ak = 4, am = 4·OC)
  ;; Blocking: 2 values of m × 16 of n = 8 accumulators; per k, 4 vector loads of Bm and 2 broadcast loads
  ;; of A feed 8 multiply-adds (8 acc + 4 + 1 broadcast = 13 live vectors). Loop order: n outer, m inner.
  ;; 16 floats of n are one whole cache line of Bm per k: the strip of Bm (K rows, stride ldb) is read in
  ;; whole lines, which matters because ldb = 4·C is a multiple of 512 bytes on the model's shapes, so the
  ;; K rows of a strip fall into a few L1 sets and do not stay cached between strips. A 4 × 8 block (half
  ;; lines) was 0-25% slower on the model's shapes (worst at C = 512, B = 32) and needs single-row leftovers
  ;; for OC = 10; a 2 × 16 block leaves at most one row over. Leftover columns (N mod 16) run one row ×
  ;; (up to) 4 columns at a time with partial loads and stores.
  (func $rank_update (param $D i32) (param $ldd i32) (param $A i32) (param $ak i32) (param $am i32)
                     (param $Bm i32) (param $ldb i32) (param $M i32) (param $N i32) (param $K i32) (param $acc i32)
    (local $n i32) (local $m i32) (local $k i32) (local $pa i32) (local $pb i32) (local $dst i32) (local $wd i32)
    (local $a00 v128) (local $a01 v128) (local $a02 v128) (local $a03 v128)
    (local $a10 v128) (local $a11 v128) (local $a12 v128) (local $a13 v128)
    (local $s v128) (local $y0 v128) (local $y1 v128) (local $y2 v128) (local $y3 v128)
    (block $nb_done (loop $nb
      (br_if $nb_done (i32.gt_u (i32.add (local.get $n) (i32.const 16)) (local.get $N)))
      (local.set $m (i32.const 0))
      (block $mb_done (loop $mb
        (br_if $mb_done (i32.gt_u (i32.add (local.get $m) (i32.const 2)) (local.get $M)))
        (local.set $dst (i32.add (i32.add (local.get $D) (i32.mul (local.get $m) (local.get $ldd)))
                                 (i32.shl (local.get $n) (i32.const 2))))
        (if (local.get $acc)
          (then
            (local.set $a00 (v128.load (local.get $dst))) (local.set $a01 (v128.load offset=16 (local.get $dst)))
            (local.set $a02 (v128.load offset=32 (local.get $dst))) (local.set $a03 (v128.load offset=48 (local.get $dst)))
            (local.set $a10 (v128.load (i32.add (local.get $dst) (local.get $ldd))))
            (local.set $a11 (v128.load offset=16 (i32.add (local.get $dst) (local.get $ldd))))
            (local.set $a12 (v128.load offset=32 (i32.add (local.get $dst) (local.get $ldd))))
            (local.set $a13 (v128.load offset=48 (i32.add (local.get $dst) (local.get $ldd)))))
          (else
            (local.set $a00 (v128.const i32x4 0 0 0 0)) (local.set $a01 (v128.const i32x4 0 0 0 0))
            (local.set $a02 (v128.const i32x4 0 0 0 0)) (local.set $a03 (v128.const i32x4 0 0 0 0))
            (local.set $a10 (v128.const i32x4 0 0 0 0)) (local.set $a11 (v128.const i32x4 0 0 0 0))
            (local.set $a12 (v128.const i32x4 0 0 0 0)) (local.set $a13 (v128.const i32x4 0 0 0 0))))
        (local.set $pa (i32.add (local.get $A) (i32.mul (local.get $m) (local.get $am))))
        (local.set $pb (i32.add (local.get $Bm) (i32.shl (local.get $n) (i32.const 2))))
        (local.set $k (local.get $K))
        (block $k_done (loop $kl
          (br_if $k_done (i32.eqz (local.get $k)))
          (local.set $y0 (v128.load (local.get $pb)))
          (local.set $y1 (v128.load offset=16 (local.get $pb)))
          (local.set $y2 (v128.load offset=32 (local.get $pb)))
          (local.set $y3 (v128.load offset=48 (local.get $pb)))
          (local.set $s (v128.load32_splat (local.get $pa)))
          (local.set $a00 (madd (local.get $s) (local.get $y0) (local.get $a00)))
          (local.set $a01 (madd (local.get $s) (local.get $y1) (local.get $a01)))
          (local.set $a02 (madd (local.get $s) (local.get $y2) (local.get $a02)))
          (local.set $a03 (madd (local.get $s) (local.get $y3) (local.get $a03)))
          (local.set $s (v128.load32_splat (i32.add (local.get $pa) (local.get $am))))
          (local.set $a10 (madd (local.get $s) (local.get $y0) (local.get $a10)))
          (local.set $a11 (madd (local.get $s) (local.get $y1) (local.get $a11)))
          (local.set $a12 (madd (local.get $s) (local.get $y2) (local.get $a12)))
          (local.set $a13 (madd (local.get $s) (local.get $y3) (local.get $a13)))
          (local.set $pa (i32.add (local.get $pa) (local.get $ak)))
          (local.set $pb (i32.add (local.get $pb) (local.get $ldb)))
          (local.set $k (i32.sub (local.get $k) (i32.const 1)))
          (br $kl)))
        (local.set $dst (i32.add (i32.add (local.get $D) (i32.mul (local.get $m) (local.get $ldd)))
                                 (i32.shl (local.get $n) (i32.const 2))))
        (v128.store (local.get $dst) (local.get $a00))
        (v128.store offset=16 (local.get $dst) (local.get $a01))
        (v128.store offset=32 (local.get $dst) (local.get $a02))
        (v128.store offset=48 (local.get $dst) (local.get $a03))
        (local.set $dst (i32.add (local.get $dst) (local.get $ldd)))
        (v128.store (local.get $dst) (local.get $a10))
        (v128.store offset=16 (local.get $dst) (local.get $a11))
        (v128.store offset=32 (local.get $dst) (local.get $a12))
        (v128.store offset=48 (local.get $dst) (local.get $a13))
        (local.set $m (i32.add (local.get $m) (i32.const 2)))
        (br $mb)))
      ;; odd M: the last row of these 16 columns
      (if (i32.lt_u (local.get $m) (local.get $M)) (then
        (local.set $dst (i32.add (i32.add (local.get $D) (i32.mul (local.get $m) (local.get $ldd)))
                                 (i32.shl (local.get $n) (i32.const 2))))
        (if (local.get $acc)
          (then
            (local.set $a00 (v128.load (local.get $dst))) (local.set $a01 (v128.load offset=16 (local.get $dst)))
            (local.set $a02 (v128.load offset=32 (local.get $dst))) (local.set $a03 (v128.load offset=48 (local.get $dst))))
          (else
            (local.set $a00 (v128.const i32x4 0 0 0 0)) (local.set $a01 (v128.const i32x4 0 0 0 0))
            (local.set $a02 (v128.const i32x4 0 0 0 0)) (local.set $a03 (v128.const i32x4 0 0 0 0))))
        (local.set $pa (i32.add (local.get $A) (i32.mul (local.get $m) (local.get $am))))
        (local.set $pb (i32.add (local.get $Bm) (i32.shl (local.get $n) (i32.const 2))))
        (local.set $k (local.get $K))
        (block $k1_done (loop $k1
          (br_if $k1_done (i32.eqz (local.get $k)))
          (local.set $s (v128.load32_splat (local.get $pa)))
          (local.set $a00 (madd (local.get $s) (v128.load (local.get $pb)) (local.get $a00)))
          (local.set $a01 (madd (local.get $s) (v128.load offset=16 (local.get $pb)) (local.get $a01)))
          (local.set $a02 (madd (local.get $s) (v128.load offset=32 (local.get $pb)) (local.get $a02)))
          (local.set $a03 (madd (local.get $s) (v128.load offset=48 (local.get $pb)) (local.get $a03)))
          (local.set $pa (i32.add (local.get $pa) (local.get $ak)))
          (local.set $pb (i32.add (local.get $pb) (local.get $ldb)))
          (local.set $k (i32.sub (local.get $k) (i32.const 1)))
          (br $k1)))
        (local.set $dst (i32.add (i32.add (local.get $D) (i32.mul (local.get $m) (local.get $ldd)))
                                 (i32.shl (local.get $n) (i32.const 2))))
        (v128.store (local.get $dst) (local.get $a00))
        (v128.store offset=16 (local.get $dst) (local.get $a01))
        (v128.store offset=32 (local.get $dst) (local.get $a02))
        (v128.store offset=48 (local.get $dst) (local.get $a03))))
      (local.set $n (i32.add (local.get $n) (i32.const 16)))
      (br $nb)))
    ;; leftover columns (N mod 16): up to 4 at a time, one row at a time
    (block $nt_done (loop $nt
      (br_if $nt_done (i32.ge_u (local.get $n) (local.get $N)))
      (local.set $wd (i32.sub (local.get $N) (local.get $n)))
      (if (i32.gt_u (local.get $wd) (i32.const 4)) (then (local.set $wd (i32.const 4))))
      (local.set $m (i32.const 0))
      (block $mt_done (loop $mt
        (br_if $mt_done (i32.ge_u (local.get $m) (local.get $M)))
        (local.set $a00 (if (result v128) (local.get $acc)
          (then (call $load_part
            (i32.add (i32.add (local.get $D) (i32.mul (local.get $m) (local.get $ldd))) (i32.shl (local.get $n) (i32.const 2)))
            (local.get $wd)))
          (else (v128.const i32x4 0 0 0 0))))
        (local.set $pa (i32.add (local.get $A) (i32.mul (local.get $m) (local.get $am))))
        (local.set $pb (i32.add (local.get $Bm) (i32.shl (local.get $n) (i32.const 2))))
        (local.set $k (local.get $K))
        (block $kt_done (loop $kt
          (br_if $kt_done (i32.eqz (local.get $k)))
          ;; whole quads load inline: a call per step is costly where the leftover is most of the work (the
          ;; conv1 weight gradient: 9 of its 25 columns)
          (local.set $a00 (madd (v128.load32_splat (local.get $pa))
                                (if (result v128) (i32.eq (local.get $wd) (i32.const 4))
                                  (then (v128.load (local.get $pb)))
                                  (else (call $load_part (local.get $pb) (local.get $wd))))
                                (local.get $a00)))
          (local.set $pa (i32.add (local.get $pa) (local.get $ak)))
          (local.set $pb (i32.add (local.get $pb) (local.get $ldb)))
          (local.set $k (i32.sub (local.get $k) (i32.const 1)))
          (br $kt)))
        (call $store_part
          (i32.add (i32.add (local.get $D) (i32.mul (local.get $m) (local.get $ldd))) (i32.shl (local.get $n) (i32.const 2)))
          (local.get $a00) (local.get $wd))
        (local.set $m (i32.add (local.get $m) (i32.const 1)))
        (br $mt)))
      (local.set $n (i32.add (local.get $n) (local.get $wd)))
      (br $nt))))

  ;; linear_bwd_weight: rows [o0, o1) of the weight and bias gradients of out = inp · wᵀ + bias
  ;; dout (B,OC)  inp (B,C)  →  dweight[o] (C) = Σ_r dout[r][o]·inp[r],  dbias[o] = Σ_r dout[r][o]   for o0 ≤ o < o1
  ;; Every element sums the rows in order r = 0, 1, … in its own lane ($rank_update with K = B; dbias vectorized
  ;; along OC in float32), so its bits do not depend on which outputs share the call.
  (func (export "linear_bwd_weight") (param $dweight i32) (param $dbias i32) (param $dout i32) (param $inp i32)
        (param $B i32) (param $C i32) (param $OC i32) (param $o0 i32) (param $o1 i32)
    (local $o i32) (local $r i32) (local $wd i32) (local $p i32) (local $acc v128)
    (call $rank_update (i32.add (local.get $dweight) (i32.shl (i32.mul (local.get $o0) (local.get $C)) (i32.const 2)))
      (i32.shl (local.get $C) (i32.const 2))
      (i32.add (local.get $dout) (i32.shl (local.get $o0) (i32.const 2))) (i32.shl (local.get $OC) (i32.const 2)) (i32.const 4)
      (local.get $inp) (i32.shl (local.get $C) (i32.const 2))
      (i32.sub (local.get $o1) (local.get $o0)) (local.get $C) (local.get $B) (i32.const 0))
    (local.set $o (local.get $o0))
    (block $o_done (loop $o_next
      (br_if $o_done (i32.ge_u (local.get $o) (local.get $o1)))
      (local.set $wd (i32.sub (local.get $o1) (local.get $o)))
      (if (i32.gt_u (local.get $wd) (i32.const 4)) (then (local.set $wd (i32.const 4))))
      (local.set $acc (v128.const i32x4 0 0 0 0))
      (local.set $p (i32.add (local.get $dout) (i32.shl (local.get $o) (i32.const 2))))
      (local.set $r (i32.const 0))
      (block $r_done (loop $r_next
        (br_if $r_done (i32.ge_u (local.get $r) (local.get $B)))
        (local.set $acc (f32x4.add (local.get $acc)
          (if (result v128) (i32.eq (local.get $wd) (i32.const 4))
            (then (v128.load (local.get $p)))
            (else (call $load_part (local.get $p) (local.get $wd))))))
        (local.set $p (i32.add (local.get $p) (i32.shl (local.get $OC) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $r_next)))
      (call $store_part (i32.add (local.get $dbias) (i32.shl (local.get $o) (i32.const 2))) (local.get $acc) (local.get $wd))
      (local.set $o (i32.add (local.get $o) (local.get $wd)))
      (br $o_next))))

  ;; linear_bwd_input: dinp (B,C) = dout (B,OC) · w (OC,C); each row sums over o in order in its own lanes
  (func (export "linear_bwd_input") (param $dinp i32) (param $dout i32) (param $w i32) (param $B i32) (param $C i32)
        (param $OC i32)
    (call $rank_update (local.get $dinp) (i32.shl (local.get $C) (i32.const 2))
      (local.get $dout) (i32.const 4) (i32.shl (local.get $OC) (i32.const 2))
      (local.get $w) (i32.shl (local.get $C) (i32.const 2)) (local.get $B) (local.get $C) (local.get $OC) (i32.const 0)))

  ;; ---------------------------------------------------------------------------------------------------
  ;; Convolution (5×5, stride 1, no padding) and 2×2 max-pool. Activations per image (C, H, W) as PyTorch;
  ;; OH = H − 4, OW = W − 4, P = OH·OW, KC = C·25; weights (OC, C, 5, 5) = (OC, KC). As in the native family
  ;; (native/kernels.h), a convolution is im2col + $rank_update products, one image at a time, so each image's
  ;; outputs are the same bits whatever images share the call:
  ;;   forward   cols (KC, P) = im2col(img);   out_img (OC, P) = bias rows + w · cols     ($rank_update, acc)
  ;;   backward  cols (P, KC) = im2row(img);   dw (OC, KC) += dout_img · cols  (images in order: acc from the 2nd)
  ;;             dcols (KC, P) = wᵀ · dout_img (in cols);  dinp_img = col2im(dcols)
  ;; $rank_update keeps its vectors along its output's rows (P or KC, contiguous) and broadcasts the other side.
  ;; cols is the caller's scratch of C·25·OH·OW floats.

  ;; dst[0 .. n) = src[0 .. n)   (n floats; nothing past dst + 4n written, nothing past src + 4n read)
  (func $copy (param $dst i32) (param $src i32) (param $n i32)
    (block $done (loop $next
      (br_if $done (i32.lt_u (local.get $n) (i32.const 4)))
      (v128.store (local.get $dst) (v128.load (local.get $src)))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 4)))
      (br $next)))
    (if (local.get $n) (then (call $store_part (local.get $dst) (call $load_part (local.get $src) (local.get $n)) (local.get $n)))))

  ;; dst[0 .. n) += src[0 .. n)
  (func $add_to (param $dst i32) (param $src i32) (param $n i32)
    (block $done (loop $next
      (br_if $done (i32.lt_u (local.get $n) (i32.const 4)))
      (v128.store (local.get $dst) (f32x4.add (v128.load (local.get $dst)) (v128.load (local.get $src))))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 4)))
      (br $next)))
    (if (local.get $n) (then (call $store_part (local.get $dst)
      (f32x4.add (call $load_part (local.get $dst) (local.get $n)) (call $load_part (local.get $src) (local.get $n)))
      (local.get $n)))))

  ;; dst[0 .. n) = v (every lane of v the same value)
  (func $fill (param $dst i32) (param $v v128) (param $n i32)
    (block $done (loop $next
      (br_if $done (i32.lt_u (local.get $n) (i32.const 4)))
      (v128.store (local.get $dst) (local.get $v))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 4)))
      (br $next)))
    (if (local.get $n) (then (call $store_part (local.get $dst) (local.get $v) (local.get $n)))))

  ;; cols (C·25, OH·OW): cols[c·25 + i·5 + j][y·OW + x] = img[c][y+i][x+j]   img (C, H, W); one row copy per (c,i,j,y)
  (func $im2col (param $cols i32) (param $img i32) (param $C i32) (param $H i32) (param $W i32)
    (local $OH i32) (local $OW i32) (local $c i32) (local $i i32) (local $j i32) (local $y i32)
    (if (i32.eqz (local.get $C)) (then (return))) ;; the loops below run their body at least once
    (local.set $OH (i32.sub (local.get $H) (i32.const 4)))
    (local.set $OW (i32.sub (local.get $W) (i32.const 4)))
    (loop $cl
      (local.set $i (i32.const 0))
      (loop $il
        (local.set $j (i32.const 0))
        (loop $jl
          (local.set $y (i32.const 0))
          (loop $yl
            (call $copy (local.get $cols)
              (i32.add (local.get $img) (i32.shl (i32.add (i32.mul (i32.add (i32.mul (local.get $c) (local.get $H))
                (i32.add (local.get $y) (local.get $i))) (local.get $W)) (local.get $j)) (i32.const 2)))
              (local.get $OW))
            (local.set $cols (i32.add (local.get $cols) (i32.shl (local.get $OW) (i32.const 2))))
            (local.set $y (i32.add (local.get $y) (i32.const 1)))
            (br_if $yl (i32.lt_u (local.get $y) (local.get $OH))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $jl (i32.lt_u (local.get $j) (i32.const 5))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $il (i32.lt_u (local.get $i) (i32.const 5))))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br_if $cl (i32.lt_u (local.get $c) (local.get $C)))))

  ;; cols (OH·OW, KCp): cols[y·OW + x][c·25 + i·5 + j] = img[c][y+i][x+j]; one 5-float copy per (y,x,c,i)
  ;; (4 + 1 floats, all inside the image row and the cols row); each row of C·25 floats is followed by $pad bytes
  ;; left as they are (KCp = C·25 + pad/4: rows padded to whole blocks of 16 columns, see conv2d_bwd)
  (func $im2row (param $cols i32) (param $img i32) (param $C i32) (param $H i32) (param $W i32) (param $pad i32)
    (local $OH i32) (local $OW i32) (local $c i32) (local $i i32) (local $x i32) (local $y i32) (local $src i32)
    (if (i32.eqz (local.get $C)) (then (return))) ;; the loops below run their body at least once
    (local.set $OH (i32.sub (local.get $H) (i32.const 4)))
    (local.set $OW (i32.sub (local.get $W) (i32.const 4)))
    (loop $yl
      (local.set $x (i32.const 0))
      (loop $xl
        (local.set $c (i32.const 0))
        (loop $cl
          (local.set $src (i32.add (local.get $img) (i32.shl (i32.add (i32.mul (i32.add (i32.mul (local.get $c)
            (local.get $H)) (local.get $y)) (local.get $W)) (local.get $x)) (i32.const 2))))
          (local.set $i (i32.const 0))
          (loop $il
            (v128.store (local.get $cols) (v128.load (local.get $src)))
            (f32.store offset=16 (local.get $cols) (f32.load offset=16 (local.get $src)))
            (local.set $cols (i32.add (local.get $cols) (i32.const 20)))
            (local.set $src (i32.add (local.get $src) (i32.shl (local.get $W) (i32.const 2))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $il (i32.lt_u (local.get $i) (i32.const 5))))
          (local.set $c (i32.add (local.get $c) (i32.const 1)))
          (br_if $cl (i32.lt_u (local.get $c) (local.get $C))))
        (local.set $cols (i32.add (local.get $cols) (local.get $pad)))
        (local.set $x (i32.add (local.get $x) (i32.const 1)))
        (br_if $xl (i32.lt_u (local.get $x) (local.get $OW))))
      (local.set $y (i32.add (local.get $y) (i32.const 1)))
      (br_if $yl (i32.lt_u (local.get $y) (local.get $OH)))))

  ;; img (C, H, W) = Σ over (c,i,j,y,x) of dcols[c·25 + i·5 + j][y·OW + x] placed at img[c][y+i][x+j]; overwrites img
  (func $col2im (param $img i32) (param $dcols i32) (param $C i32) (param $H i32) (param $W i32)
    (local $OH i32) (local $OW i32) (local $c i32) (local $i i32) (local $j i32) (local $y i32)
    (local.set $OH (i32.sub (local.get $H) (i32.const 4)))
    (local.set $OW (i32.sub (local.get $W) (i32.const 4)))
    (call $fill (local.get $img) (v128.const i32x4 0 0 0 0) (i32.mul (i32.mul (local.get $C) (local.get $H)) (local.get $W)))
    (if (i32.eqz (local.get $C)) (then (return)))
    (loop $cl
      (local.set $i (i32.const 0))
      (loop $il
        (local.set $j (i32.const 0))
        (loop $jl
          (local.set $y (i32.const 0))
          (loop $yl
            (call $add_to
              (i32.add (local.get $img) (i32.shl (i32.add (i32.mul (i32.add (i32.mul (local.get $c) (local.get $H))
                (i32.add (local.get $y) (local.get $i))) (local.get $W)) (local.get $j)) (i32.const 2)))
              (local.get $dcols) (local.get $OW))
            (local.set $dcols (i32.add (local.get $dcols) (i32.shl (local.get $OW) (i32.const 2))))
            (local.set $y (i32.add (local.get $y) (i32.const 1)))
            (br_if $yl (i32.lt_u (local.get $y) (local.get $OH))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $jl (i32.lt_u (local.get $j) (i32.const 5))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $il (i32.lt_u (local.get $i) (i32.const 5))))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br_if $cl (i32.lt_u (local.get $c) (local.get $C)))))

  ;; conv2d_fwd: out = conv(inp, w) + bias, then ReLU when relu ≠ 0
  ;; inp (B, C, H, W)  w (OC, C, 5, 5)  bias (OC)  cols: scratch (C·25·OH·OW)  →  out (B, OC, OH, OW)
  ;; Each output row (o) starts as bias[o] and the product is added onto it; C ≥ 1, H ≥ 5, W ≥ 5.
  (func (export "conv2d_fwd") (param $out i32) (param $inp i32) (param $w i32) (param $bias i32) (param $cols i32)
        (param $B i32) (param $C i32) (param $OC i32) (param $H i32) (param $W i32) (param $relu i32)
    (local $P i32) (local $KC i32) (local $b i32) (local $o i32) (local $dst i32)
    (local.set $P (i32.mul (i32.sub (local.get $H) (i32.const 4)) (i32.sub (local.get $W) (i32.const 4))))
    (local.set $KC (i32.mul (local.get $C) (i32.const 25)))
    (block $done (loop $bl
      (br_if $done (i32.ge_u (local.get $b) (local.get $B)))
      (call $im2col (local.get $cols)
        (i32.add (local.get $inp) (i32.shl (i32.mul (local.get $b) (i32.mul (i32.mul (local.get $C) (local.get $H)) (local.get $W)))
                                           (i32.const 2)))
        (local.get $C) (local.get $H) (local.get $W))
      (local.set $dst (i32.add (local.get $out) (i32.shl (i32.mul (i32.mul (local.get $b) (local.get $OC)) (local.get $P))
                                                        (i32.const 2))))
      (local.set $o (i32.const 0))
      (block $o_done (loop $ol
        (br_if $o_done (i32.ge_u (local.get $o) (local.get $OC)))
        (call $fill (i32.add (local.get $dst) (i32.shl (i32.mul (local.get $o) (local.get $P)) (i32.const 2)))
          (v128.load32_splat (i32.add (local.get $bias) (i32.shl (local.get $o) (i32.const 2)))) (local.get $P))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (br $ol)))
      (call $rank_update (local.get $dst) (i32.shl (local.get $P) (i32.const 2))
        (local.get $w) (i32.const 4) (i32.shl (local.get $KC) (i32.const 2))
        (local.get $cols) (i32.shl (local.get $P) (i32.const 2))
        (local.get $OC) (local.get $P) (local.get $KC) (i32.const 1))
      (if (local.get $relu) (then
        (call $relu_in_place (local.get $dst) (i32.mul (local.get $OC) (local.get $P)))))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $bl))))

  ;; x[0 .. n) = x > 0 ? x : 0   (NaN → 0, −0 → 0, as the reference)
  (func $relu_in_place (param $x i32) (param $n i32)
    (local $v v128)
    (block $done (loop $next
      (br_if $done (i32.lt_u (local.get $n) (i32.const 4)))
      (local.set $v (v128.load (local.get $x)))
      (v128.store (local.get $x) (v128.and (local.get $v) (f32x4.gt (local.get $v) (v128.const i32x4 0 0 0 0))))
      (local.set $x (i32.add (local.get $x) (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 4)))
      (br $next)))
    (if (local.get $n) (then
      (local.set $v (call $load_part (local.get $x) (local.get $n)))
      (call $store_part (local.get $x) (v128.and (local.get $v) (f32x4.gt (local.get $v) (v128.const i32x4 0 0 0 0)))
        (local.get $n)))))

  ;; conv2d_bwd_weight: output channels [o0, o1) of the weight and bias gradients of out = conv(inp, w) + bias
  ;; dout (B, OC, OH, OW)  inp (B, C, H, W)  cols: scratch ((OH·OW + OC)·KCp floats, KCp = C·25 rounded up to a
  ;; multiple of 16; reference.ts conv2dScratchLength)  →  dw (OC, C, 5, 5), db (OC): rows o0..o1, summed over the
  ;; images in order. The product runs on im2row rows padded to KCp columns, so that $rank_update works in whole
  ;; 2 × 16 blocks: its leftover columns go one row and 4 columns at a time, which for conv1 (KC = 25, 9 of them
  ;; over 16) was most of the time. With KCp ≠ KC the product goes to a padded copy dwp (o1 − o0, KCp) after the
  ;; im2row rows, whose first KC columns are copied into dw at the end (the padding columns are never read). An
  ;; element's sums (images, then pixels, in order, in its own lane) do not depend on which channels share the call.
  (func (export "conv2d_bwd_weight") (param $dw i32) (param $db i32) (param $dout i32) (param $inp i32) (param $cols i32)
        (param $B i32) (param $C i32) (param $OC i32) (param $H i32) (param $W i32) (param $o0 i32) (param $o1 i32)
    (local $P i32) (local $KC i32) (local $b i32) (local $o i32) (local $n i32) (local $p i32) (local $g i32)
    (local $acc v128) (local $KCp i32) (local $dwp i32) (local $M i32) (local $dw0 i32)
    (local.set $P (i32.mul (i32.sub (local.get $H) (i32.const 4)) (i32.sub (local.get $W) (i32.const 4))))
    (local.set $KC (i32.mul (local.get $C) (i32.const 25)))
    (local.set $KCp (i32.and (i32.add (local.get $KC) (i32.const 15)) (i32.const -16)))
    (local.set $M (i32.sub (local.get $o1) (local.get $o0)))
    (local.set $dw0 (i32.add (local.get $dw) (i32.shl (i32.mul (local.get $o0) (local.get $KC)) (i32.const 2))))
    (local.set $dwp (if (result i32) (i32.eq (local.get $KCp) (local.get $KC))
      (then (local.get $dw0))
      (else (i32.add (local.get $cols) (i32.shl (i32.mul (local.get $P) (local.get $KCp)) (i32.const 2))))))
    ;; db[o] = Σ_b Σ_p dout[b][o][p]: 4 partial sums along p, folded at the end
    (local.set $o (local.get $o0))
    (block $o_done (loop $ol
      (br_if $o_done (i32.ge_u (local.get $o) (local.get $o1)))
      (local.set $acc (v128.const i32x4 0 0 0 0))
      (local.set $b (i32.const 0))
      (block $b_done (loop $bl
        (br_if $b_done (i32.ge_u (local.get $b) (local.get $B)))
        (local.set $p (i32.add (local.get $dout)
          (i32.shl (i32.mul (i32.add (i32.mul (local.get $b) (local.get $OC)) (local.get $o)) (local.get $P)) (i32.const 2))))
        (local.set $n (local.get $P))
        (block $p_done (loop $pl
          (br_if $p_done (i32.lt_u (local.get $n) (i32.const 4)))
          (local.set $acc (f32x4.add (local.get $acc) (v128.load (local.get $p))))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (local.set $n (i32.sub (local.get $n) (i32.const 4)))
          (br $pl)))
        (if (local.get $n) (then (local.set $acc (f32x4.add (local.get $acc) (call $load_part (local.get $p) (local.get $n))))))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $bl)))
      (f32.store (i32.add (local.get $db) (i32.shl (local.get $o) (i32.const 2)))
        (f32x4.extract_lane 0 (hsum4 (local.get $acc) (local.get $acc) (local.get $acc) (local.get $acc))))
      (local.set $o (i32.add (local.get $o) (i32.const 1)))
      (br $ol)))
    (if (i32.eqz (local.get $B)) (then
      (call $fill (local.get $dw0) (v128.const i32x4 0 0 0 0) (i32.mul (local.get $M) (local.get $KC)))))
    (local.set $b (i32.const 0))
    (block $done (loop $bl2
      (br_if $done (i32.ge_u (local.get $b) (local.get $B)))
      (local.set $g (i32.add (local.get $dout) (i32.shl (i32.mul (i32.add (i32.mul (local.get $b) (local.get $OC))
                                                                          (local.get $o0)) (local.get $P)) (i32.const 2))))
      (call $im2row (local.get $cols)
        (i32.add (local.get $inp) (i32.shl (i32.mul (local.get $b) (i32.mul (i32.mul (local.get $C) (local.get $H)) (local.get $W)))
                                           (i32.const 2)))
        (local.get $C) (local.get $H) (local.get $W) (i32.shl (i32.sub (local.get $KCp) (local.get $KC)) (i32.const 2)))
      ;; dwp[o][k] (+)= Σ_p dout_img[o0 + o][p] · cols[p][k]
      (call $rank_update (local.get $dwp) (i32.shl (local.get $KCp) (i32.const 2))
        (local.get $g) (i32.const 4) (i32.shl (local.get $P) (i32.const 2))
        (local.get $cols) (i32.shl (local.get $KCp) (i32.const 2))
        (local.get $M) (local.get $KCp) (local.get $P) (i32.ne (local.get $b) (i32.const 0)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $bl2)))
    ;; the padded product's first KC columns into dw
    (if (i32.and (i32.ne (local.get $dwp) (local.get $dw0)) (i32.ne (local.get $B) (i32.const 0))) (then
      (local.set $o (i32.const 0))
      (block $c_done (loop $cl
        (br_if $c_done (i32.ge_u (local.get $o) (local.get $M)))
        (call $copy (i32.add (local.get $dw0) (i32.shl (i32.mul (local.get $o) (local.get $KC)) (i32.const 2)))
          (i32.add (local.get $dwp) (i32.shl (i32.mul (local.get $o) (local.get $KCp)) (i32.const 2))) (local.get $KC))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (br $cl))))))

  ;; conv2d_bwd_input: dinp (B, C, H, W), the input gradient of out = conv(inp, w) + bias, from dout (B, OC, OH, OW)
  ;; and w (OC, C, 5, 5); per image: dcols (KC, P) = wᵀ · dout_img in the scratch (C·25·OH·OW floats), then
  ;; dinp_img = col2im(dcols). Each image's gradient is the same bits whatever images share the call.
  (func (export "conv2d_bwd_input") (param $dinp i32) (param $dout i32) (param $w i32) (param $cols i32) (param $B i32)
        (param $C i32) (param $OC i32) (param $H i32) (param $W i32)
    (local $P i32) (local $KC i32) (local $b i32)
    (local.set $P (i32.mul (i32.sub (local.get $H) (i32.const 4)) (i32.sub (local.get $W) (i32.const 4))))
    (local.set $KC (i32.mul (local.get $C) (i32.const 25)))
    (block $done (loop $bl
      (br_if $done (i32.ge_u (local.get $b) (local.get $B)))
      (call $rank_update (local.get $cols) (i32.shl (local.get $P) (i32.const 2))
        (local.get $w) (i32.shl (local.get $KC) (i32.const 2)) (i32.const 4)
        (i32.add (local.get $dout) (i32.shl (i32.mul (i32.mul (local.get $b) (local.get $OC)) (local.get $P)) (i32.const 2)))
        (i32.shl (local.get $P) (i32.const 2))
        (local.get $KC) (local.get $P) (local.get $OC) (i32.const 0))
      (call $col2im
        (i32.add (local.get $dinp) (i32.shl (i32.mul (local.get $b) (i32.mul (i32.mul (local.get $C) (local.get $H)) (local.get $W)))
                                            (i32.const 2)))
        (local.get $cols) (local.get $C) (local.get $H) (local.get $W))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $bl))))

  ;; maxpool_fwd: out (maps, H/2, W/2) = the 2×2 max of inp (maps, H, W) in the order (0,0), (0,1), (1,0), (1,1),
  ;; replaced only by a strictly greater value (reference.ts): a selection, bit-identical in every family. An odd
  ;; last row or column is dropped. Scalar: it moves a tenth of the bytes the convolutions around it compute on.
  (func (export "maxpool_fwd") (param $out i32) (param $inp i32) (param $maps i32) (param $H i32) (param $W i32)
    (local $PH i32) (local $PW i32) (local $m i32) (local $y i32) (local $x i32) (local $r0 i32) (local $r1 i32)
    (local $gt i32) (local $best f32) (local $v f32)
    (local.set $PH (i32.shr_u (local.get $H) (i32.const 1)))
    (local.set $PW (i32.shr_u (local.get $W) (i32.const 1)))
    (block $m_done (loop $ml
      (br_if $m_done (i32.ge_u (local.get $m) (local.get $maps)))
      (local.set $y (i32.const 0))
      (block $y_done (loop $yl
        (br_if $y_done (i32.ge_u (local.get $y) (local.get $PH)))
        (local.set $r0 (i32.add (local.get $inp) (i32.shl (i32.mul (i32.add (i32.mul (local.get $m) (local.get $H))
          (i32.shl (local.get $y) (i32.const 1))) (local.get $W)) (i32.const 2))))
        (local.set $r1 (i32.add (local.get $r0) (i32.shl (local.get $W) (i32.const 2))))
        (local.set $x (i32.const 0))
        (block $x_done (loop $xl
          (br_if $x_done (i32.ge_u (local.get $x) (local.get $PW)))
          ;; best = v > best ? v : best by masks on the bits: V8 compiles an f32 select to a jump, and which
          ;; element wins is data, and random (mispredicted jumps made this several times slower)
          (local.set $best (f32.load (local.get $r0)))
          (local.set $v (f32.load offset=4 (local.get $r0)))
          (local.set $gt (f32.gt (local.get $v) (local.get $best)))
          (local.set $best (f32.reinterpret_i32 (i32.or
            (i32.and (i32.reinterpret_f32 (local.get $v)) (i32.sub (i32.const 0) (local.get $gt)))
            (i32.and (i32.reinterpret_f32 (local.get $best)) (i32.sub (local.get $gt) (i32.const 1))))))
          (local.set $v (f32.load (local.get $r1)))
          (local.set $gt (f32.gt (local.get $v) (local.get $best)))
          (local.set $best (f32.reinterpret_i32 (i32.or
            (i32.and (i32.reinterpret_f32 (local.get $v)) (i32.sub (i32.const 0) (local.get $gt)))
            (i32.and (i32.reinterpret_f32 (local.get $best)) (i32.sub (local.get $gt) (i32.const 1))))))
          (local.set $v (f32.load offset=4 (local.get $r1)))
          (local.set $gt (f32.gt (local.get $v) (local.get $best)))
          (local.set $best (f32.reinterpret_i32 (i32.or
            (i32.and (i32.reinterpret_f32 (local.get $v)) (i32.sub (i32.const 0) (local.get $gt)))
            (i32.and (i32.reinterpret_f32 (local.get $best)) (i32.sub (local.get $gt) (i32.const 1))))))
          (f32.store (local.get $out) (local.get $best))
          (local.set $out (i32.add (local.get $out) (i32.const 4)))
          (local.set $r0 (i32.add (local.get $r0) (i32.const 8)))
          (local.set $r1 (i32.add (local.get $r1) (i32.const 8)))
          (local.set $x (i32.add (local.get $x) (i32.const 1)))
          (br $xl)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $yl)))
      (local.set $m (i32.add (local.get $m) (i32.const 1)))
      (br $ml))))

  ;; maxpool_bwd: dinp (maps, H, W) = dout (maps, H/2, W/2) routed to the element maxpool_fwd chose (recomputed
  ;; from inp with the same rule), 0 everywhere else; overwrites dinp
  (func (export "maxpool_bwd") (param $dinp i32) (param $dout i32) (param $inp i32) (param $maps i32) (param $H i32)
        (param $W i32)
    (local $PH i32) (local $PW i32) (local $m i32) (local $y i32) (local $x i32) (local $r0 i32) (local $r1 i32)
    (local $at i32) (local $gt i32) (local $best f32) (local $v f32)
    (call $fill (local.get $dinp) (v128.const i32x4 0 0 0 0)
      (i32.mul (i32.mul (local.get $maps) (local.get $H)) (local.get $W)))
    (local.set $PH (i32.shr_u (local.get $H) (i32.const 1)))
    (local.set $PW (i32.shr_u (local.get $W) (i32.const 1)))
    (block $m_done (loop $ml
      (br_if $m_done (i32.ge_u (local.get $m) (local.get $maps)))
      (local.set $y (i32.const 0))
      (block $y_done (loop $yl
        (br_if $y_done (i32.ge_u (local.get $y) (local.get $PH)))
        ;; byte offsets of the window's top row and bottom row, from the start of the map set
        (local.set $r0 (i32.shl (i32.mul (i32.add (i32.mul (local.get $m) (local.get $H))
          (i32.shl (local.get $y) (i32.const 1))) (local.get $W)) (i32.const 2)))
        (local.set $r1 (i32.add (local.get $r0) (i32.shl (local.get $W) (i32.const 2))))
        (local.set $x (i32.const 0))
        (block $x_done (loop $xl
          (br_if $x_done (i32.ge_u (local.get $x) (local.get $PW)))
          (local.set $at (local.get $r0))
          (local.set $best (f32.load (i32.add (local.get $inp) (local.get $r0))))
          (local.set $v (f32.load offset=4 (i32.add (local.get $inp) (local.get $r0))))
          ;; no jumps, as in maxpool_fwd: the offset moves by an integer multiply, best by masks
          (local.set $gt (f32.gt (local.get $v) (local.get $best)))
          (local.set $at (i32.add (local.get $at) (i32.mul (local.get $gt)
            (i32.sub (i32.add (local.get $r0) (i32.const 4)) (local.get $at)))))
          (local.set $best (f32.reinterpret_i32 (i32.or
            (i32.and (i32.reinterpret_f32 (local.get $v)) (i32.sub (i32.const 0) (local.get $gt)))
            (i32.and (i32.reinterpret_f32 (local.get $best)) (i32.sub (local.get $gt) (i32.const 1))))))
          (local.set $v (f32.load (i32.add (local.get $inp) (local.get $r1))))
          (local.set $gt (f32.gt (local.get $v) (local.get $best)))
          (local.set $at (i32.add (local.get $at) (i32.mul (local.get $gt) (i32.sub (local.get $r1) (local.get $at)))))
          (local.set $best (f32.reinterpret_i32 (i32.or
            (i32.and (i32.reinterpret_f32 (local.get $v)) (i32.sub (i32.const 0) (local.get $gt)))
            (i32.and (i32.reinterpret_f32 (local.get $best)) (i32.sub (local.get $gt) (i32.const 1))))))
          (local.set $v (f32.load offset=4 (i32.add (local.get $inp) (local.get $r1))))
          (local.set $at (i32.add (local.get $at) (i32.mul (f32.gt (local.get $v) (local.get $best))
            (i32.sub (i32.add (local.get $r1) (i32.const 4)) (local.get $at)))))
          (f32.store (i32.add (local.get $dinp) (local.get $at)) (f32.load (local.get $dout)))
          (local.set $dout (i32.add (local.get $dout) (i32.const 4)))
          (local.set $r0 (i32.add (local.get $r0) (i32.const 8)))
          (local.set $r1 (i32.add (local.get $r1) (i32.const 8)))
          (local.set $x (i32.add (local.get $x) (i32.const 1)))
          (br $xl)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $yl)))
      (local.set $m (i32.add (local.get $m) (i32.const 1)))
      (br $ml))))

  ;; relu_bwd: dinp = dout where out > 0, else 0 (NaN in out → 0, as the reference)
  ;; dout (n)  out (n)  →  dinp (n); dinp may alias dout (each element is read before it is written)
  (func (export "relu_bwd") (param $dinp i32) (param $dout i32) (param $out i32) (param $n i32)
    (local $i i32) (local $end i32) (local $wd i32)
    (local.set $end (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (v128.store (i32.add (local.get $dinp) (local.get $i))
        (v128.and (v128.load (i32.add (local.get $dout) (local.get $i)))
                  (f32x4.gt (v128.load (i32.add (local.get $out) (local.get $i))) (v128.const i32x4 0 0 0 0))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $next)))
    (local.set $wd (i32.and (local.get $n) (i32.const 3)))
    (if (local.get $wd) (then
      (call $store_part (i32.add (local.get $dinp) (local.get $i))
        (v128.and (call $load_part (i32.add (local.get $dout) (local.get $i)) (local.get $wd))
                  (f32x4.gt (call $load_part (i32.add (local.get $out) (local.get $i)) (local.get $wd))
                            (v128.const i32x4 0 0 0 0)))
        (local.get $wd)))))

  ;; The optimizers handle n4 QUADS of floats; the caller does the last (n mod 4) elements with optim.ts.
  ;; Blocks of 4 quads (1 in the last n4 mod 4): $grad_quads loads the block's gradient, then the loop updates it.

  ;; The gradient's nq = 4 quads at q (nq = 1: only the first)
  (func $grad_quads (param $q i32) (param $nq i32) (result v128 v128 v128 v128)
    (if (i32.eq (local.get $nq) (i32.const 4)) (then
      (return (v128.load (local.get $q)) (v128.load offset=16 (local.get $q)) (v128.load offset=32 (local.get $q))
              (v128.load offset=48 (local.get $q)))))
    (v128.load (local.get $q)) (v128.const i32x4 0 0 0 0) (v128.const i32x4 0 0 0 0) (v128.const i32x4 0 0 0 0))

  ;; The optimizers below are float32 arithmetic, one rounding per operation, in exactly the order of
  ;; src/optim.ts (whose Math.fround after every operation gives the same bits). Their loops shift the
  ;; gradient's quads through g0 (g0 ← g1 ← g2 ← g3) so that one body serves all of them.

  ;; sgd_plain: p = p − lr·(g + wd·p)            param (4·n4) updated in place
  (func (export "sgd_plain") (param $param i32) (param $grad i32) (param $n4 i32)
        (param $lr f32) (param $wd f32)
    (local $i i32) (local $j i32) (local $jend i32) (local $end i32) (local $g0 v128) (local $g1 v128) (local $g2 v128) (local $g3 v128) (local $p v128) (local $lrv v128) (local $wdv v128)
    (local.set $lrv (f32x4.splat (local.get $lr)))
    (local.set $wdv (f32x4.splat (local.get $wd)))
    (local.set $end (i32.shl (local.get $n4) (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $jend (i32.add (local.get $i)
        (select (i32.const 64) (i32.const 16) (i32.ge_u (i32.sub (local.get $end) (local.get $i)) (i32.const 64)))))
      (call $grad_quads (i32.add (local.get $grad) (local.get $i))
                        (i32.shr_u (i32.sub (local.get $jend) (local.get $i)) (i32.const 4)))
      (local.set $g3) (local.set $g2) (local.set $g1) (local.set $g0)
      (local.set $j (local.get $i))
      (loop $quad
        (local.set $p (v128.load (i32.add (local.get $param) (local.get $j))))
        (v128.store (i32.add (local.get $param) (local.get $j)) (f32x4.sub (local.get $p) (f32x4.mul (local.get $lrv)
          (f32x4.add (local.get $g0) (f32x4.mul (local.get $wdv) (local.get $p))))))
        (local.set $g0 (local.get $g1)) (local.set $g1 (local.get $g2)) (local.set $g2 (local.get $g3))
        (local.set $j (i32.add (local.get $j) (i32.const 16)))
        (br_if $quad (i32.lt_u (local.get $j) (local.get $jend))))
      (local.set $i (local.get $jend))
      (br $next))))

  ;; sgd_momentum: g = grad + wd·p;  b = first ? g : mu·b + damp·g;  p = p − lr·(nesterov ? g + mu·b : b)
  ;; param, buf (4·n4) updated in place; damp = 1 − dampening
  (func (export "sgd_momentum") (param $param i32) (param $grad i32) (param $buf i32) (param $n4 i32)
        (param $lr f32) (param $wd f32) (param $mu f32) (param $damp f32) (param $first i32) (param $nesterov i32)
    (local $i i32) (local $j i32) (local $jend i32) (local $end i32) (local $g0 v128) (local $g1 v128) (local $g2 v128) (local $g3 v128) (local $p v128) (local $g v128) (local $b v128)
    (local $lrv v128) (local $wdv v128) (local $muv v128) (local $dampv v128)
    (local.set $lrv (f32x4.splat (local.get $lr)))
    (local.set $wdv (f32x4.splat (local.get $wd)))
    (local.set $muv (f32x4.splat (local.get $mu)))
    (local.set $dampv (f32x4.splat (local.get $damp)))
    (local.set $end (i32.shl (local.get $n4) (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $jend (i32.add (local.get $i)
        (select (i32.const 64) (i32.const 16) (i32.ge_u (i32.sub (local.get $end) (local.get $i)) (i32.const 64)))))
      (call $grad_quads (i32.add (local.get $grad) (local.get $i))
                        (i32.shr_u (i32.sub (local.get $jend) (local.get $i)) (i32.const 4)))
      (local.set $g3) (local.set $g2) (local.set $g1) (local.set $g0)
      (local.set $j (local.get $i))
      (loop $quad
        (local.set $p (v128.load (i32.add (local.get $param) (local.get $j))))
        (local.set $g (f32x4.add (local.get $g0) (f32x4.mul (local.get $wdv) (local.get $p))))
        (local.set $b
          (if (result v128) (local.get $first)
            (then (local.get $g))
            (else (f32x4.add
              (f32x4.mul (local.get $muv) (v128.load (i32.add (local.get $buf) (local.get $j))))
              (f32x4.mul (local.get $dampv) (local.get $g))))))
        (v128.store (i32.add (local.get $buf) (local.get $j)) (local.get $b))
        (v128.store (i32.add (local.get $param) (local.get $j)) (f32x4.sub (local.get $p) (f32x4.mul (local.get $lrv)
          (if (result v128) (local.get $nesterov)
            (then (f32x4.add (local.get $g) (f32x4.mul (local.get $muv) (local.get $b))))
            (else (local.get $b))))))
        (local.set $g0 (local.get $g1)) (local.set $g1 (local.get $g2)) (local.set $g2 (local.get $g3))
        (local.set $j (i32.add (local.get $j) (i32.const 16)))
        (br_if $quad (i32.lt_u (local.get $j) (local.get $jend))))
      (local.set $i (local.get $jend))
      (br $next))))

  ;; adam: g = grad + l2·p;  m = b1·m + c1·g;  v = b2·v + c2·g·g;  p = p·keep − step·m / (sqrt(v) / bc2 + eps)
  ;; with c1 = 1 − b1, c2 = 1 − b2, step = lr / (1 − b1^t), bc2 = sqrt(1 − b2^t); Adam: l2 = wd, keep = 1;
  ;; AdamW: l2 = 0, keep = 1 − lr·wd.  param, m, v (4·n4) updated in place.
  (func (export "adam") (param $param i32) (param $grad i32) (param $m i32) (param $v i32) (param $n4 i32)
        (param $b1 f32) (param $c1 f32) (param $b2 f32) (param $c2 f32) (param $l2 f32) (param $keep f32)
        (param $step f32) (param $bc2 f32) (param $eps f32)
    (local $i i32) (local $j i32) (local $jend i32) (local $end i32) (local $g0 v128) (local $g1 v128) (local $g2 v128) (local $g3 v128) (local $p v128) (local $g v128) (local $mi v128) (local $vi v128)
    (local $b1v v128) (local $c1v v128) (local $b2v v128) (local $c2v v128) (local $l2v v128) (local $keepv v128)
    (local $stepv v128) (local $bc2v v128) (local $epsv v128)
    (local.set $b1v (f32x4.splat (local.get $b1)))
    (local.set $c1v (f32x4.splat (local.get $c1)))
    (local.set $b2v (f32x4.splat (local.get $b2)))
    (local.set $c2v (f32x4.splat (local.get $c2)))
    (local.set $l2v (f32x4.splat (local.get $l2)))
    (local.set $keepv (f32x4.splat (local.get $keep)))
    (local.set $stepv (f32x4.splat (local.get $step)))
    (local.set $bc2v (f32x4.splat (local.get $bc2)))
    (local.set $epsv (f32x4.splat (local.get $eps)))
    (local.set $end (i32.shl (local.get $n4) (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $jend (i32.add (local.get $i)
        (select (i32.const 64) (i32.const 16) (i32.ge_u (i32.sub (local.get $end) (local.get $i)) (i32.const 64)))))
      (call $grad_quads (i32.add (local.get $grad) (local.get $i))
                        (i32.shr_u (i32.sub (local.get $jend) (local.get $i)) (i32.const 4)))
      (local.set $g3) (local.set $g2) (local.set $g1) (local.set $g0)
      (local.set $j (local.get $i))
      (loop $quad
        (local.set $p (v128.load (i32.add (local.get $param) (local.get $j))))
        (local.set $g (f32x4.add (local.get $g0) (f32x4.mul (local.get $l2v) (local.get $p))))
        (local.set $mi (f32x4.add (f32x4.mul (local.get $b1v) (v128.load (i32.add (local.get $m) (local.get $j))))
                                  (f32x4.mul (local.get $c1v) (local.get $g))))
        (local.set $vi (f32x4.add (f32x4.mul (local.get $b2v) (v128.load (i32.add (local.get $v) (local.get $j))))
                                  (f32x4.mul (f32x4.mul (local.get $c2v) (local.get $g)) (local.get $g))))
        (v128.store (i32.add (local.get $m) (local.get $j)) (local.get $mi))
        (v128.store (i32.add (local.get $v) (local.get $j)) (local.get $vi))
        (v128.store (i32.add (local.get $param) (local.get $j)) (f32x4.sub (f32x4.mul (local.get $p) (local.get $keepv))
          (f32x4.div (f32x4.mul (local.get $stepv) (local.get $mi))
                     (f32x4.add (f32x4.div (f32x4.sqrt (local.get $vi)) (local.get $bc2v)) (local.get $epsv)))))
        (local.set $g0 (local.get $g1)) (local.set $g1 (local.get $g2)) (local.set $g2 (local.get $g3))
        (local.set $j (i32.add (local.get $j) (i32.const 16)))
        (br_if $quad (i32.lt_u (local.get $j) (local.get $jend))))
      (local.set $i (local.get $jend))
      (br $next))))
)
