// Assembles src/kernels/kernels.wat into dist/kernels/simd.wasm and dist/kernels/relaxed.wasm.
//
// The .wat is a template: `(madd a b c)` (= a·b + c on f32x4) becomes f32x4.relaxed_madd in the relaxed
// build and f32x4.add(f32x4.mul) in the plain one. Both are validated by wabt with relaxed SIMD enabled,
// whatever the running Node supports (the runtime check happens when the kernels are loaded).
//
//   node scripts/build-wasm.mjs          (run after tsc; `npm run build` does both)
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import wabtInit from 'wabt';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const WAT_PATH = join(ROOT, 'src', 'kernels', 'kernels.wat');
export const OUT_DIR = join(ROOT, 'dist', 'kernels');
const FEATURES = { simd: true, threads: true, relaxed_simd: true };

// Index just past the S-expression that starts at text[i] === '('.
function sexpEnd(text, i) {
  let depth = 0;
  for (let j = i; j < text.length; j++) {
    if (text[j] === ';' && text[j + 1] === ';') {
      const eol = text.indexOf('\n', j);
      if (eol < 0) break;
      j = eol;
    } else if (text[j] === '(') depth++;
    else if (text[j] === ')' && --depth === 0) return j + 1;
  }
  throw new Error(`${WAT_PATH}: unbalanced parentheses from offset ${i}`);
}

/** Replaces every (madd a b c) with the relaxed or the plain multiply-add; arguments may nest. */
export function expandMadd(text, relaxed) {
  let out = '';
  let i = 0;
  for (;;) {
    const at = text.indexOf('(madd ', i);
    if (at < 0) return out + text.slice(i);
    out += text.slice(i, at);
    const end = sexpEnd(text, at);
    const args = [];
    let j = at + '(madd '.length;
    while (j < end - 1) {
      if (/\s/.test(text[j])) { j++; continue; }
      const argEnd = text[j] === '(' ? sexpEnd(text, j) : text.slice(j).search(/[\s)]/) + j;
      args.push(expandMadd(text.slice(j, argEnd), relaxed));
      j = argEnd;
    }
    if (args.length !== 3) throw new Error(`${WAT_PATH}: (madd …) needs 3 arguments, found ${args.length} at offset ${at}`);
    const [a, b, c] = args;
    out += relaxed ? `(f32x4.relaxed_madd ${a} ${b} ${c})` : `(f32x4.add (f32x4.mul ${a} ${b}) ${c})`;
    i = end;
  }
}

/** Assembles the template into a validated binary: relaxed = true for relaxed.wasm, false for simd.wasm. */
export async function assembleKernels(relaxed, watText = readFileSync(WAT_PATH, 'utf8')) {
  const wabt = await wabtInit();
  const name = relaxed ? 'relaxed.wat' : 'simd.wat';
  const mod = wabt.parseWat(name, expandMadd(watText, relaxed), FEATURES);
  try {
    mod.validate(FEATURES);
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}

function writeAtomic(path, data) {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(tmp, 'w');
  try {
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Builds both families into outDir (default dist/kernels); returns the paths written. */
export async function buildWasm(outDir = OUT_DIR) {
  mkdirSync(outDir, { recursive: true });
  const written = [];
  for (const [file, relaxed] of [['simd.wasm', false], ['relaxed.wasm', true]]) {
    const path = join(outDir, file);
    writeAtomic(path, await assembleKernels(relaxed));
    written.push(path);
  }
  return written;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const written = await buildWasm();
    console.log(`build-wasm: wrote ${written.map((p) => p.slice(ROOT.length + 1)).join(', ')}`);
  } catch (e) {
    console.error(`build-wasm: ${e instanceof Error ? e.message : e}`);
    process.exit(1);
  }
}
