// Is the PyTorch peer at its best? Its matrix products run on whatever BLAS torch loaded, and OpenBLAS runs
// the kernel of one CPU family: the one it detects, or the one OPENBLAS_CORETYPE names. A ratio against a
// PyTorch on the reference BLAS (about a tenth of OpenBLAS's speed) or on OpenBLAS kernels narrower than the
// CPU's vectors (Haswell's AVX2 on an AVX-512 CPU: about half) measures the setup, not the frameworks, so such
// a peer gets no ratio at all. Everything here is pure: the peer's JSON line and the CPU's flags in, a verdict
// out.
import { readFileSync } from 'node:fs';
import type { ModelKind } from '../src/model.js';

/** x86 vector instruction sets, narrowest first; a CPU or kernel is as wide as the last one it uses. */
export const VECTOR_ISAS = ['SSE', 'AVX', 'AVX2', 'AVX-512'] as const;
export type VectorIsa = typeof VECTOR_ISAS[number];

/**
 * OpenBLAS's x86-64 kernel families (openblas_get_corename, compared without case) by the widest vectors
 * their matrix products use. Cooperlake and SapphireRapids add bf16 (and AMX) to SkylakeX's AVX-512 float32
 * kernels; Zen and Excavator run AVX2; Bulldozer to Steamroller and Sandybridge run AVX.
 */
export const OPENBLAS_KERNELS: Record<string, VectorIsa> = Object.fromEntries([
  ...['SkylakeX', 'Cooperlake', 'SapphireRapids'].map((k) => [k.toLowerCase(), 'AVX-512']),
  ...['Haswell', 'Zen', 'Excavator'].map((k) => [k.toLowerCase(), 'AVX2']),
  ...['Sandybridge', 'Bulldozer', 'Piledriver', 'Steamroller'].map((k) => [k.toLowerCase(), 'AVX']),
  ...['Katmai', 'Coppermine', 'Northwood', 'Prescott', 'Banias', 'Atom', 'Core2', 'Penryn', 'Dunnington', 'Nehalem',
    'Athlon', 'Opteron', 'Opteron_SSE3', 'Barcelona', 'Nano', 'Bobcat'].map((k) => [k.toLowerCase(), 'SSE']),
]) as Record<string, VectorIsa>;

/** The flags of the first processor in /proc/cpuinfo's text ("flags : fpu … avx2 … avx512f …"); [] if none. */
export function parseCpuFlags(cpuinfo: string): string[] {
  const line = cpuinfo.split('\n').find((l) => /^flags\s*:/.test(l));
  return line === undefined ? [] : line.slice(line.indexOf(':') + 1).trim().split(/\s+/).filter((f) => f !== '');
}

/** This machine's CPU flags, or [] where /proc/cpuinfo cannot be read (not Linux). */
export function readCpuFlags(): string[] {
  try {
    return parseCpuFlags(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return [];
  }
}

/** The widest vectors a CPU with these flags runs, or null when it has none of them (not x86, or unknown). */
export function cpuVectorIsa(flags: readonly string[]): VectorIsa | null {
  const has = new Set(flags);
  if (has.has('avx512f')) return 'AVX-512';
  if (has.has('avx2') && has.has('fma')) return 'AVX2';
  if (has.has('avx')) return 'AVX';
  if (has.has('sse2')) return 'SSE';
  return null;
}

export interface BlasVerdict {
  /** the BLAS as the peer named it ("openblas Cooperlake", "mkl", "reference or unknown BLAS"), or "not reported" */
  blas: string;
  /** the kernel's vectors where it is a known OpenBLAS kernel */
  kernelIsa: VectorIsa | null;
  /** the CPU's widest vectors */
  cpuIsa: VectorIsa | null;
  comparable: boolean;
  /** when not comparable: why, and what to do, in one line */
  notComparable?: string;
}

/** the package that gives Debian's PyTorch OpenBLAS (it then runs the reference BLAS no more) */
const OPENBLAS_PACKAGE = 'apt-get install -y libopenblas0-pthread';

/** Judges the BLAS a peer reported (its JSON line's "blas"; undefined when the line has none) on this CPU. */
export function judgeBlas(reported: unknown, cpuFlags: readonly string[]): BlasVerdict {
  const cpuIsa = cpuVectorIsa(cpuFlags);
  const verdict = (blas: string, kernelIsa: VectorIsa | null, why?: string): BlasVerdict =>
    ({ blas, kernelIsa, cpuIsa, comparable: why === undefined, ...(why !== undefined ? { notComparable: why } : {}) });
  if (typeof reported !== 'string' || reported.trim() === '') {
    return verdict('not reported', null, 'the peer script does not say which BLAS PyTorch ran (a pytorch_throughput.py from ' +
      'before its "blas" field); pass the current ../shared/peers/pytorch_throughput.py with --peer-script');
  }
  const blas = reported.trim();
  if (blas === 'mkl') return verdict(blas, null);
  const openblas = /^openblas\s+(\S+)$/i.exec(blas);
  if (openblas === null) {
    const which = /reference/i.test(blas) ? 'the reference BLAS, about a tenth of OpenBLAS\'s speed' : `a BLAS bench peers does not know (${blas})`;
    return verdict(blas, null, `PyTorch ran ${which}; give it OpenBLAS: ${OPENBLAS_PACKAGE}`);
  }
  const kernel = openblas[1];
  const kernelIsa = OPENBLAS_KERNELS[kernel.toLowerCase()] ?? null;
  if (kernelIsa === null) {
    return verdict(blas, null, `bench peers does not know the vectors of OpenBLAS's ${kernel} kernel, so it cannot tell whether ` +
      `it is the widest this CPU runs; if it is, add it to OPENBLAS_KERNELS in bench/blas.ts`);
  }
  if (cpuIsa === null) {
    return verdict(blas, kernelIsa, `cannot read this CPU's flags (/proc/cpuinfo) to check that OpenBLAS's ${kernel} kernel ` +
      `(${kernelIsa}) is the widest it runs; run bench peers on Linux`);
  }
  if (VECTOR_ISAS.indexOf(kernelIsa) < VECTOR_ISAS.indexOf(cpuIsa)) {
    return verdict(blas, kernelIsa, `PyTorch ran OpenBLAS's ${kernel} kernel (${kernelIsa}) on a CPU with ${cpuIsa}, ` +
      `its matrix products at a fraction of their speed; run it without OPENBLAS_CORETYPE (the current ` +
      `pytorch_throughput.py unsets it) on an OpenBLAS with ${cpuIsa} kernels (${OPENBLAS_PACKAGE})`);
  }
  return verdict(blas, kernelIsa);
}

/** One run of the peer script, as its JSON line says, with the verdict on its BLAS. */
export interface PeerRun {
  /** e.g. pytorch-1.13.0a0 */
  name: string;
  samplesPerSec: number;
  /** what it trained on: 'mnist' (the real images), 'randn', or 'unknown' */
  data: string;
  blas: BlasVerdict;
}

/**
 * Reads the peer's output (its last line is the JSON) for a run that should have trained `model`. Throws an
 * Error saying what the line lacks; runPeer names the command.
 */
export function parsePeerLine(stdout: string, model: ModelKind, cpuFlags: readonly string[]): PeerRun {
  const last = stdout.trim().split('\n').pop() ?? '';
  let out: Record<string, unknown> | null = null;
  try {
    const v: unknown = JSON.parse(last);
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) out = v as Record<string, unknown>;
  } catch { /* reported below */ }
  if (out === null || typeof out.samples_per_s !== 'number' || !(out.samples_per_s > 0) || !Number.isFinite(out.samples_per_s)) {
    throw new Error(`printed ${JSON.stringify(last.slice(0, 200))}, expected a JSON line with samples_per_s > 0`);
  }
  // a script that ignores --model would time another network; one from before --model says no model
  if ((out.model ?? 'mlp') !== model) {
    throw new Error(`timed model ${JSON.stringify(out.model ?? 'mlp (it names none)')}, not ${model}; ` +
      'pass a pytorch_throughput.py that knows --model with --peer-script');
  }
  return {
    name: typeof out.peer === 'string' ? out.peer : 'pytorch',
    samplesPerSec: out.samples_per_s,
    data: typeof out.data === 'string' ? out.data : 'unknown',
    blas: judgeBlas(out.blas, cpuFlags),
  };
}

/**
 * The environment a peer run gets: ours, with OpenBLAS's pool at `blasThreads` and without the variables
 * that pin its kernel (OPENBLAS_CORETYPE, and OPENBLAS_L2_SIZE that goes with it), so OpenBLAS picks the
 * kernel of this CPU as it does for a user who sets neither.
 */
export function peerEnv(base: NodeJS.ProcessEnv, blasThreads: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, OPENBLAS_NUM_THREADS: String(blasThreads) };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  return env;
}
