// The families the kernel benchmark can time: the native family once per instruction-set path. A file of
// its own so that the CLI can validate --kernels without loading the benchmarks.
export const BENCH_FAMILIES = ['js', 'simd', 'relaxed', 'native-avx2', 'native-avx512'] as const;
export type BenchFamily = (typeof BENCH_FAMILIES)[number];
