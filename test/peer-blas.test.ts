// The verdict on the PyTorch peer's BLAS (bench/blas.ts): a ratio counts only when PyTorch ran OpenBLAS (or
// MKL) on kernels as wide as the CPU's vectors. Each case is the JSON line a peer prints and a CPU's flags;
// no torch needed.
import { describe, expect, it } from 'vitest';
import { cpuVectorIsa, judgeBlas, parseCpuFlags, parsePeerLine, peerEnv } from '../bench/blas.js';

// /proc/cpuinfo flags, cut down: an AVX-512 CPU (with bf16, as Cooperlake kernels want) and an AVX2-only one
const AVX512 = ['fpu', 'sse', 'sse2', 'avx', 'fma', 'avx2', 'avx512f', 'avx512bw', 'avx512_bf16'];
const AVX2 = ['fpu', 'sse', 'sse2', 'avx', 'fma', 'avx2'];

/** The peer's line as pytorch_throughput.py prints it, with `blas` (left out when undefined, as old scripts did). */
const line = (blas?: string, extra: Record<string, unknown> = {}) => JSON.stringify({
  peer: 'pytorch-1.13.0a0', model: 'mlp', threads: 1, batch: 128, samples_per_s: 71999, ms_per_step: 1.778, gflops: 143,
  data: 'mnist', ...(blas !== undefined ? { blas } : {}), ...extra,
});

describe('the peer\'s BLAS', () => {
  it('the reference BLAS is not comparable, and the fix installs OpenBLAS', () => {
    const r = parsePeerLine(line('reference or unknown BLAS'), 'mlp', AVX512);
    expect(r.blas).toMatchObject({ blas: 'reference or unknown BLAS', comparable: false });
    expect(r.blas.notComparable).toMatch(/^PyTorch ran the reference BLAS, about a tenth of OpenBLAS's speed; give it OpenBLAS: apt-get install -y libopenblas0-pthread$/);
    expect(judgeBlas('blis', AVX512).notComparable).toMatch(/^PyTorch ran a BLAS bench peers does not know \(blis\); .*libopenblas0-pthread$/);
  });

  it('OpenBLAS\'s Haswell kernel (AVX2) on an AVX-512 CPU is not comparable, naming both and the fix', () => {
    const v = parsePeerLine(line('openblas Haswell'), 'mlp', AVX512).blas;
    expect(v).toMatchObject({ blas: 'openblas Haswell', kernelIsa: 'AVX2', cpuIsa: 'AVX-512', comparable: false });
    expect(v.notComparable).toMatch(/^PyTorch ran OpenBLAS's Haswell kernel \(AVX2\) on a CPU with AVX-512, .*; run it without OPENBLAS_CORETYPE .*libopenblas0-pthread\)$/);
    expect(v.notComparable).not.toContain('\n');
    // the same narrowing one step down, and a kernel name in capitals (a build for one target reports it so)
    expect(judgeBlas('openblas Sandybridge', AVX2)).toMatchObject({ kernelIsa: 'AVX', cpuIsa: 'AVX2', comparable: false });
    expect(judgeBlas('openblas HASWELL', AVX512)).toMatchObject({ kernelIsa: 'AVX2', comparable: false });
  });

  it('Cooperlake and SkylakeX on an AVX-512 CPU, and Haswell on an AVX2-only CPU, are at their best', () => {
    for (const [blas, flags, isa] of [['openblas Cooperlake', AVX512, 'AVX-512'], ['openblas SkylakeX', AVX512, 'AVX-512'],
      ['openblas SapphireRapids', AVX512, 'AVX-512'], ['openblas Haswell', AVX2, 'AVX2'], ['openblas Zen', AVX2, 'AVX2']] as const) {
      const v = parsePeerLine(line(blas), 'mlp', flags).blas;
      expect(v, blas).toEqual({ blas, kernelIsa: isa, cpuIsa: isa, comparable: true });
    }
    expect(judgeBlas('mkl', AVX512)).toMatchObject({ comparable: true });
  });

  it('a line without "blas" (a script from before it) is not comparable, and says to pass the current script', () => {
    const v = parsePeerLine(line(), 'mlp', AVX512).blas;
    expect(v).toMatchObject({ blas: 'not reported', comparable: false });
    expect(v.notComparable).toMatch(/^the peer script does not say which BLAS PyTorch ran .*; pass the current \.\.\/shared\/peers\/pytorch_throughput\.py with --peer-script$/);
    expect(judgeBlas('', AVX512).comparable).toBe(false);
    expect(judgeBlas(42, AVX512).comparable).toBe(false);
  });

  it('a kernel it does not know, or a CPU whose flags it cannot read, is not comparable rather than guessed', () => {
    expect(judgeBlas('openblas Unknown', AVX512)).toMatchObject({ comparable: false, kernelIsa: null });
    expect(judgeBlas('openblas NEOVERSEN1', AVX512).notComparable).toMatch(/does not know the vectors of OpenBLAS's NEOVERSEN1 kernel/);
    expect(judgeBlas('openblas Cooperlake', []).notComparable).toMatch(/^cannot read this CPU's flags/);
  });

  it('reads the CPU\'s widest vectors from /proc/cpuinfo\'s flags line', () => {
    const cpuinfo = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16\nbugs\t\t: sysret_ss_attrs\n' +
      'processor\t: 1\nflags\t\t: fpu sse2\n';
    expect(parseCpuFlags(cpuinfo)).toEqual(['fpu', 'sse2', 'avx', 'fma', 'avx2', 'avx512f', 'avx512_bf16']);
    expect(parseCpuFlags('processor : 0\nFeatures : fp asimd\n')).toEqual([]);
    expect(cpuVectorIsa(AVX512)).toBe('AVX-512');
    expect(cpuVectorIsa(AVX2)).toBe('AVX2');
    expect(cpuVectorIsa(['sse2', 'avx', 'avx2'])).toBe('AVX'); // AVX2 without FMA: Haswell's kernels would not run
    expect(cpuVectorIsa(['sse2'])).toBe('SSE');
    expect(cpuVectorIsa(['fp', 'asimd'])).toBeNull();
  });
});

describe('the peer\'s line', () => {
  it('gives the name, samples/s and data, and refuses a line without a positive samples_per_s or of another model', () => {
    expect(parsePeerLine(`warming up\n${line('openblas Cooperlake')}\n`, 'mlp', AVX512))
      .toMatchObject({ name: 'pytorch-1.13.0a0', samplesPerSec: 71999, data: 'mnist' });
    expect(() => parsePeerLine('Traceback (most recent call last):', 'mlp', AVX512)).toThrow(/^printed "Traceback .*", expected a JSON line with samples_per_s > 0$/);
    expect(() => parsePeerLine(line('openblas Cooperlake', { samples_per_s: 0 }), 'mlp', AVX512)).toThrow(/samples_per_s > 0/);
    expect(() => parsePeerLine('[1]', 'mlp', AVX512)).toThrow(/samples_per_s > 0/);
    expect(() => parsePeerLine(line('openblas Cooperlake'), 'cnn', AVX512)).toThrow(/^timed model "mlp", not cnn; /);
    // a script from before --model names none: it timed the mlp
    expect(() => parsePeerLine(line('openblas Cooperlake', { model: undefined }), 'cnn', AVX512)).toThrow(/^timed model "mlp \(it names none\)"/);
  });

  it('runs the peer with its OpenBLAS pool set and without the variables that pin OpenBLAS\'s kernel', () => {
    const base = { PATH: '/usr/bin', OPENBLAS_CORETYPE: 'Haswell', OPENBLAS_L2_SIZE: '512', OPENBLAS_NUM_THREADS: '8' };
    expect(peerEnv(base, 2)).toEqual({ PATH: '/usr/bin', OPENBLAS_NUM_THREADS: '2' });
    expect(base.OPENBLAS_CORETYPE).toBe('Haswell'); // ours is left as it is
  });
});
