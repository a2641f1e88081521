// Builds the native kernel family, native/kernels.cc, into dist/native/mnist_par.node.
//
// Runs in `npm run build` (so in `npm install` through `prepare`). It calls the C++ compiler directly:
// one source file, Node-API headers, no gyp file and no network. It never fails the install: when there is
// no compiler, no headers or the compile fails, it prints one line saying why, leaves no addon behind and
// records the reason in dist/native/build.json, which the loader quotes when `auto` falls back to the
// WebAssembly kernels (and `--kernels native` stops with it).
//
// No -march=native: the binary carries an AVX-512 and an AVX2+FMA path (function target attributes) and
// picks one when it loads, so the folder keeps working when it moves to another x86-64 machine.
// -ffp-contract=off keeps the optimizers' float64 arithmetic rounded after every operation, bit-identical
// to src/optim.ts.
//
//   node scripts/build-native.mjs          CXX=clang++ to pick the compiler; MNIST_PAR_SKIP_NATIVE=1 to skip
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomicSync } from '../dist/src/fsutil.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = join(ROOT, 'native', 'kernels.cc');
// MNIST_PAR_NATIVE_OUT_DIR: build somewhere else (the tests of a failing build use it)
const OUT_DIR = process.env.MNIST_PAR_NATIVE_OUT_DIR || join(ROOT, 'dist', 'native');
const ADDON = join(OUT_DIR, 'mnist_par.node');
const REPORT = join(OUT_DIR, 'build.json');
export const FLAGS = ['-O3', '-std=c++17', '-shared', '-fPIC', '-ffp-contract=off', '-fno-exceptions', '-fno-rtti',
  '-fvisibility=hidden', '-Wall', '-Wno-uninitialized', '-Wno-maybe-uninitialized'];

/** A folder holding node_api.h: npm's nodedir, the running Node's own include folder, or node-api-headers. */
function findHeaders() {
  const candidates = [];
  if (process.env.npm_config_nodedir) candidates.push(join(process.env.npm_config_nodedir, 'include', 'node'));
  candidates.push(join(dirname(process.execPath), '..', 'include', 'node'));
  try {
    candidates.push(dirname(createRequire(import.meta.url).resolve('node-api-headers/include/node_api.h')));
  } catch {
    // not installed
  }
  return candidates.find((d) => existsSync(join(d, 'node_api.h'))) ?? null;
}

function compilerVersion(cxx) {
  const r = spawnSync(cxx, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  return r.stdout.split('\n')[0].trim();
}

function build() {
  if (process.env.MNIST_PAR_SKIP_NATIVE === '1') return { ok: false, reason: 'skipped: MNIST_PAR_SKIP_NATIVE=1' };
  if (process.arch !== 'x64') return { ok: false, reason: `the native kernels are x86-64 code, this is ${process.arch}` };
  const wanted = process.env.CXX ? [process.env.CXX] : ['g++', 'c++', 'clang++'];
  let cxx = null;
  let version = null;
  for (const c of wanted) {
    version = compilerVersion(c);
    if (version) {
      cxx = c;
      break;
    }
  }
  if (!cxx) return { ok: false, reason: `no C++ compiler found; tried ${wanted.join(', ')}; install g++ or set CXX` };
  const headers = findHeaders();
  if (!headers) return { ok: false, reason: 'no Node-API headers (node_api.h) found; set npm\'s nodedir or install node-api-headers' };
  const tmp = `${ADDON}.${process.pid}.tmp`;
  const args = [...FLAGS, '-I', headers, SOURCE, '-o', tmp];
  const r = spawnSync(cxx, args, { encoding: 'utf8', timeout: 300_000 });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    const detail = (r.error?.message ?? r.stderr.split('\n').find((l) => /error/.test(l)) ?? `exit ${r.status}`).trim();
    return { ok: false, reason: `${cxx} failed: ${detail}` };
  }
  renameSync(tmp, ADDON);
  return { ok: true, compiler: version, headers, flags: FLAGS };
}

mkdirSync(OUT_DIR, { recursive: true });
// a failed build must not leave an addon from older sources behind
rmSync(ADDON, { force: true });
const t0 = Date.now();
const report = build();
writeFileAtomicSync(REPORT, `${JSON.stringify({ ...report, date: new Date().toISOString() }, null, 2)}\n`);
if (report.ok) {
  console.log(`build-native: wrote ${ADDON} (${report.compiler}, ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
} else {
  console.log(`build-native: native kernels not built: ${report.reason}; mnist-par will use its WebAssembly kernels`);
}
