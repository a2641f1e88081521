// The native kernel family as a user meets it: the build never fails an install, `auto` says which path
// runs or why it fell back, `--kernels native` stops with a clear line when the addon is missing, and each
// family's weights are byte-identical for any --threads. (Kernel-level checks against the reference are in
// fast-kernels.test.ts.)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadNative } from '../src/kernels/native.js';
import { mnistDir, repoRoot, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-native-'));
const small = ['--limit-train', '2048', '--limit-test', '500', '--epochs', '1', '--batch-size', '64', '--no-download',
  '--no-dashboard'];
const native = loadNative();
const hidden = { MNIST_PAR_NATIVE: 'off' };

describe('building the addon', () => {
  it('without a compiler: one line saying why, exit 0, no addon, the reason recorded for the loader', () => {
    const out = tmp();
    const r = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build-native.mjs')], {
      encoding: 'utf8',
      env: { ...process.env, CXX: '/nonexistent/c++', MNIST_PAR_NATIVE_OUT_DIR: out },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('build-native: native kernels not built: no C++ compiler found; tried /nonexistent/c++; ' +
      'install g++ or set CXX; mnist-par will use its WebAssembly kernels');
    expect(existsSync(join(out, 'mnist_par.node'))).toBe(false);
    const report = JSON.parse(readFileSync(join(out, 'build.json'), 'utf8'));
    expect(report).toMatchObject({ ok: false, reason: expect.stringMatching(/^no C\+\+ compiler found/) });
  });

  it.runIf(native.ok)('with g++: an addon holding both instruction-set paths, chosen at load time', () => {
    const out = tmp();
    const r = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build-native.mjs')], {
      encoding: 'utf8',
      env: { ...process.env, MNIST_PAR_NATIVE_OUT_DIR: out },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^build-native: wrote .*mnist_par\.node/);
    const load = (isa: string) => spawnSync(process.execPath, ['-e',
      `const a = require(${JSON.stringify(join(out, 'mnist_par.node'))}); console.log(a.isa, Object.keys(a.paths).join(','))`],
    { encoding: 'utf8', env: { ...process.env, MNIST_PAR_NATIVE_ISA: isa } });
    const auto = load('auto');
    expect(auto.status, auto.stderr).toBe(0);
    // this CPU picks its widest path; every x86-64 with AVX-512 has AVX2 too
    expect(auto.stdout.trim()).toMatch(/^(avx512 avx512,avx2|avx2 avx2)$/);
    expect(load('avx2').stdout.trim()).toMatch(/^avx2 /);
    const bogus = load('sse2');
    expect(bogus.status).not.toBe(0);
    expect(bogus.stderr).toMatch(/MNIST_PAR_NATIVE_ISA=sse2: this CPU has no such path/);
  });
});

describe('choosing the kernels', () => {
  it.runIf(native.ok)('auto runs native and says which path at start', () => {
    const r = runCli(['--data-dir', mnistDir, '--out', join(tmp(), 'm'), '--threads', '1', ...small]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`· native ${native.ok ? native.addon.isa : ''} kernels ·`));
  });

  it('auto without the addon falls back to WebAssembly with one line saying why', () => {
    const r = runCli(['--data-dir', mnistDir, '--out', join(tmp(), 'm'), '--threads', '1', ...small], hidden);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.trim()).toMatch(/^mnist-par: note: using the (relaxed|simd) kernels: the native addon is hidden by MNIST_PAR_NATIVE=off$/);
    expect(r.stdout).toMatch(/· (relaxed|simd) kernels ·/);
  });

  it('--kernels native without the addon stops with one line and writes nothing', () => {
    const out = join(tmp(), 'm');
    const r = runCli(['--data-dir', mnistDir, '--out', out, '--kernels', 'native', ...small], hidden);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('mnist-par: --kernels native: the native addon is hidden by MNIST_PAR_NATIVE=off; ' +
      'use --kernels auto or relaxed');
    expect(existsSync(join(out, 'model.safetensors'))).toBe(false);
  });
});

describe('determinism within each family', () => {
  const runs: [string, string[], Record<string, string>][] = [
    ...(native.ok ? [['native', ['--kernels', 'native'], {}] as [string, string[], Record<string, string>]] : []),
    ...(native.ok && native.addon.paths.avx2 && native.addon.isa !== 'avx2'
      ? [['native avx2', ['--kernels', 'native'], { MNIST_PAR_NATIVE_ISA: 'avx2' }] as [string, string[], Record<string, string>]]
      : []),
    ['relaxed', ['--kernels', 'relaxed'], {}],
  ];
  it.each(runs)('%s: --threads 1 and 3 give byte-identical weights', (_name, flags, env) => {
    const dir = tmp();
    const bytes = [1, 3].map((t) => {
      const out = join(dir, `t${t}`);
      const r = runCli(['--data-dir', mnistDir, '--out', out, '--threads', String(t), '--seed', '9', ...flags, ...small], env);
      expect(r.code, r.stderr).toBe(0);
      return readFileSync(join(out, 'model.safetensors'));
    });
    expect(bytes[1].equals(bytes[0])).toBe(true);
  });

  it.runIf(native.ok && native.addon.paths.avx2 !== undefined && native.addon.paths.avx512 !== undefined)(
    'the AVX-512 and AVX2 paths train to the same bytes: every lane does the same multiply-adds in the same order',
    () => {
      const dir = tmp();
      const bytes = ['avx512', 'avx2'].map((isa) => {
        const out = join(dir, isa);
        const r = runCli(['--data-dir', mnistDir, '--out', out, '--threads', '2', '--seed', '9', ...small],
          { MNIST_PAR_NATIVE_ISA: isa });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain(`native ${isa} kernels`);
        return readFileSync(join(out, 'model.safetensors'));
      });
      expect(bytes[1].equals(bytes[0])).toBe(true);
    });

  it.runIf(native.ok)('native and relaxed round differently: the comparison above can fail', () => {
    const dir = tmp();
    const bytes = ['native', 'relaxed'].map((k) => {
      const out = join(dir, k);
      expect(runCli(['--data-dir', mnistDir, '--out', out, '--threads', '2', '--seed', '9', '--kernels', k, ...small]).code).toBe(0);
      return readFileSync(join(out, 'model.safetensors'));
    });
    expect(bytes[1].equals(bytes[0])).toBe(false);
  });
});
