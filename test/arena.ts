// The fast-kernel tests' arena: views of a shared WebAssembly.Memory with guard bands (used by
// fast-kernels.test.ts and conv-kernels.test.ts), and the fast families those tests run.
import { execFileSync } from 'node:child_process';
import { loadNative, nativeKernels, type NativeIsa } from '../src/kernels/native.js';
import { enableRelaxedSimd, loadKernels, type Kernels } from '../src/kernels/wasm.js';
import { packageRoot } from '../src/paths.js';
import { Rng } from '../src/rng.js';

// Hands out Float32Array views of the shared memory at offsets that are 4-byte but deliberately not 16-byte
// aligned, each surrounded by a guard band of NaN that must survive every kernel call (an out-of-bounds
// write, e.g. a partial vector store that is too wide, breaks it). Every view starts filled with NaN, so a
// kernel that forgets to overwrite an output fails.
export class Arena {
  private off = 64;
  private used = Infinity; // the first reset clears everything
  private guards: [number, number][] = [];
  constructor(private memory: WebAssembly.Memory, private rng: Rng) {}
  reset(): void {
    // Only what the previous round handed out needs refilling; the rest is still NaN.
    new Float32Array(this.memory.buffer, 0, Math.min(this.used, this.memory.buffer.byteLength) / 4).fill(NaN);
    this.off = 64 + 4 * this.rng.int(4);
    this.used = 0;
    this.guards = [];
  }
  take(n: number): Float32Array {
    const GUARD = 32;
    const start = this.off + 4 * GUARD + 4 * this.rng.int(4);
    this.guards.push([this.off, start], [start + 4 * n, start + 4 * n + 4 * GUARD]);
    this.off = start + 4 * n + 4 * GUARD;
    this.used = this.off;
    if (this.off > this.memory.buffer.byteLength) throw new Error('test arena too small');
    return new Float32Array(this.memory.buffer, start, n);
  }
  random(n: number, lo = -1, hi = 1): Float32Array {
    const v = this.take(n);
    for (let i = 0; i < n; i++) v[i] = this.rng.uniform(lo, hi);
    return v;
  }
  checkGuards(what: string): void {
    const all = new Float32Array(this.memory.buffer);
    for (const [a, b] of this.guards) {
      for (let i = a / 4; i < b / 4; i++) {
        if (!Number.isNaN(all[i])) throw new Error(`${what}: wrote ${all[i]} outside its outputs at byte ${4 * i}`);
      }
    }
  }
}


/** A fast kernel family as the kernel tests run it: skipped, with the reason, where it cannot run here. */
export interface FamilyUnderTest {
  title: string;
  /** why it is skipped here, or null when it runs */
  skip: string | null;
  load(): Promise<Kernels>;
  seed: number;
}

/**
 * simd, relaxed (where this Node has relaxed SIMD) and both native paths (where the addon loaded and the CPU
 * has the path), on `memory`; titles end in `suffix`, seeds count up from `seed0`.
 */
export function fastFamilies(memory: WebAssembly.Memory, seed0: number, suffix = ''): FamilyUnderTest[] {
  const native = loadNative();
  const nativePath = (isa: NativeIsa, seed: number): FamilyUnderTest => ({
    title: `native ${isa}${suffix}`,
    skip: !native.ok ? `the addon did not load: ${native.reason}` : native.addon.paths[isa] ? null : `this CPU has no ${isa}`,
    load: async () => {
      if (!native.ok) throw new Error('unreachable: the family is skipped');
      return nativeKernels(native.addon, isa);
    },
    seed,
  });
  return [
    { title: `simd${suffix}`, skip: null, load: () => loadKernels('simd', memory), seed: seed0 },
    { title: `relaxed${suffix}`, skip: enableRelaxedSimd() ? null : `this Node ${process.version} has no relaxed SIMD`,
      load: () => loadKernels('relaxed', memory), seed: seed0 + 1 },
    nativePath('avx512', seed0 + 2),
    nativePath('avx2', seed0 + 3),
  ];
}

/** Assembles the .wat anew, so that the tests never run a stale module. */
export function rebuildWasm(): void {
  execFileSync(process.execPath, [`${packageRoot()}/scripts/build-wasm.mjs`], { stdio: 'pipe' });
}
