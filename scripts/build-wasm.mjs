// Assembles src/kernels/kernels.wat into dist/kernels/simd.wasm and dist/kernels/relaxed.wasm.
//
// The .wat is a template with two macros, expanded inline before assembly:
//   (madd a b c)       a·b + c on f32x4: f32x4.relaxed_madd in the relaxed build, f32x4.add(f32x4.mul) in
//                      the plain one (the only difference between the two files)
//   (hsum4 a b c d)    [Σa, Σb, Σc, Σd] of four f32x4 (6 shuffles, 3 adds); arguments must be local.get,
//                      since each is written twice
// They are macros, not functions, because V8 (Node 20) does not inline wasm calls, and every vector
// register is caller-saved: a call in a kernel spills and reloads all the live accumulators.
// Both files are validated by wabt with relaxed SIMD enabled, whatever the running Node supports (the
// runtime check happens when the kernels are loaded).
//
//   node scripts/build-wasm.mjs          (run after tsc; `npm run build` does both)
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import wabtInit from 'wabt';
// tsc runs first in `npm run build`, so the compiled atomic writer is there
import { writeFileAtomicSync } from '../dist/src/fsutil.js';

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

// The arguments of the S-expression (name …) that starts at text[at], each already expanded.
function macroArgs(text, at, end, name, relaxed) {
  const args = [];
  let j = at + name.length + 2;
  while (j < end - 1) {
    if (/\s/.test(text[j])) { j++; continue; }
    const argEnd = text[j] === '(' ? sexpEnd(text, j) : text.slice(j).search(/[\s)]/) + j;
    args.push(expandMacros(text.slice(j, argEnd), relaxed));
    j = argEnd;
  }
  return args;
}

const LO = '0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23'; // [a0, b0, a1, b1]
const HI = '8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31'; // [a2, b2, a3, b3]
const MACROS = {
  madd: (relaxed, [a, b, c]) => (relaxed ? `(f32x4.relaxed_madd ${a} ${b} ${c})` : `(f32x4.add (f32x4.mul ${a} ${b}) ${c})`),
  // ab = [a0+a2, b0+b2, a1+a3, b1+b3], cd likewise; then [ab0+ab2, ab1+ab3, cd0+cd2, cd1+cd3]
  hsum4: (_relaxed, [a, b, c, d]) => {
    const ab = `(f32x4.add (i8x16.shuffle ${LO} ${a} ${b}) (i8x16.shuffle ${HI} ${a} ${b}))`;
    const cd = `(f32x4.add (i8x16.shuffle ${LO} ${c} ${d}) (i8x16.shuffle ${HI} ${c} ${d}))`;
    return `(f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 ${ab} ${cd}) ` +
           `(i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 ${ab} ${cd}))`;
  },
};
const ARITY = { madd: 3, hsum4: 4 };

/** Expands every (madd …) and (hsum4 …) of the template outside ;; comments; arguments may nest. */
export function expandMacros(text, relaxed) {
  const find = /\((madd|hsum4)\s/g;
  let out = '';
  let i = 0;
  for (let m = find.exec(text); m; m = find.exec(text)) {
    const name = m[1];
    const at = m.index;
    if (text.slice(text.lastIndexOf('\n', at) + 1, at).includes(';;')) continue; // inside a comment
    const end = sexpEnd(text, at);
    const args = macroArgs(text, at, end, name, relaxed);
    if (args.length !== ARITY[name]) {
      throw new Error(`${WAT_PATH}: (${name} …) needs ${ARITY[name]} arguments, found ${args.length} at offset ${at}`);
    }
    if (name === 'hsum4' && !args.every((x) => /^\(local\.get \$[\w.]+\)$/.test(x))) {
      throw new Error(`${WAT_PATH}: (hsum4 …) takes only (local.get $x) arguments, at offset ${at}`);
    }
    out += text.slice(i, at) + MACROS[name](relaxed, args);
    i = end;
    find.lastIndex = end;
  }
  return out + text.slice(i);
}

/** Assembles the template into a validated binary: relaxed = true for relaxed.wasm, false for simd.wasm. */
export async function assembleKernels(relaxed, watText = readFileSync(WAT_PATH, 'utf8')) {
  const wabt = await wabtInit();
  const name = relaxed ? 'relaxed.wat' : 'simd.wat';
  const mod = wabt.parseWat(name, expandMacros(watText, relaxed), FEATURES);
  try {
    mod.validate(FEATURES);
    return mod.toBinary({}).buffer;
  } finally {
    mod.destroy();
  }
}

/** Builds both families into outDir (default dist/kernels); returns the paths written. */
export async function buildWasm(outDir = OUT_DIR) {
  mkdirSync(outDir, { recursive: true });
  const written = [];
  for (const [file, relaxed] of [['simd.wasm', false], ['relaxed.wasm', true]]) {
    const path = join(outDir, file);
    writeFileAtomicSync(path, await assembleKernels(relaxed));
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
