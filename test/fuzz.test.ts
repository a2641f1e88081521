// Fuzzed parsers: thousands of mutated, truncated and extended copies of real files go through the functions
// the CLI itself calls: loadSplit (IDX, raw and gzipped), loadModel (safetensors weights, as predict and eval
// read them), loadCheckpoint (--resume), readConfigFile + validate (--config) and loadDigitImage (predict's
// image path). Each input must end in a sane result or in our one-line UserError naming the file; anything
// else (a TypeError, a RangeError, a zlib or sharp error leaking through, a hang) fails.
//
// fast-check is seeded, so every run tries the same inputs. MNIST_PAR_FUZZ_SEED=<n> tries others and
// MNIST_PAR_FUZZ_SCALE=<k> tries k times as many; a failure names the seed and saves the input to a file.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, saveCheckpoint, type TrainState } from '../src/checkpoint.js';
import { DEFAULTS, readConfigFile, validate } from '../src/config.js';
import { SPLIT_FILES } from '../src/data/datasets.js';
import { loadDigitImage } from '../src/data/image.js';
import { loadSplit } from '../src/data/idx.js';
import { UserError } from '../src/errors.js';
import { paramLayout, widths } from '../src/model.js';
import { optimizerStateCount } from '../src/optim.js';
import { forwardProbs, loadModel, normalizeTable } from '../src/predict.js';
import { decodeSafetensors, encodeSafetensors, weightTensors } from '../src/safetensors.js';
import { Rng } from '../src/rng.js';
import { mnistDir } from './cli-run.js';

const SEED = Number(process.env.MNIST_PAR_FUZZ_SEED ?? 20261201);
const SCALE = Number(process.env.MNIST_PAR_FUZZ_SCALE ?? 1);
/** One input may take this long before it counts as a hang (sharp on a large image is the slowest). */
const PER_INPUT_MS = 5_000;
/** Inputs per target: about 30 s for the whole file on one core; sharp's image path is the slowest per input. */
const RUNS = Object.fromEntries(Object.entries({ idxRaw: 6000, idxGz: 6000, model: 6000, checkpoint: 6000, config: 8000, image: 1200 })
  .map(([k, n]) => [k, Math.round(n * SCALE)])) as Record<'idxRaw' | 'idxGz' | 'model' | 'checkpoint' | 'config' | 'image', number>;

// Every input is written to a file, as the CLI reads files: in memory where Linux offers it (a write to disk
// costs ~3 ms here, more than most parses).
const tmp = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'mnist-par-fuzz-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
/** Failing inputs land in a folder of their own, outside `tmp`, so they survive the run. */
let failures = '';
let savedInputs = 0;

// ---------------------------------------------------------------------------------------------------------
// Mutations of a byte string. Offsets are drawn as naturals and taken modulo the current length, so one
// operation list applies to any base.

const EXTREME_U32 = [0, 1, 2, 3, 10, 28, 255, 256, 784, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0xffff_fffe];
const EXTREME_U64 = [0n, 1n, 7n, 8n, 0xffn, 0x7fff_ffffn, 0xffff_ffffn, 0x1_0000_0000n, 100n * 1024n * 1024n,
  (1n << 53n) + 1n, (1n << 63n) - 1n, (1n << 64n) - 1n];

type Op =
  | { k: 'flip'; at: number; mask: number }
  | { k: 'set'; at: number; v: number }
  | { k: 'truncate'; at: number }
  | { k: 'extend'; bytes: Uint8Array }
  | { k: 'insert'; at: number; bytes: Uint8Array }
  | { k: 'delete'; at: number; n: number }
  | { k: 'u32'; at: number; v: number; le: boolean }
  | { k: 'u64'; at: number; v: bigint };

/** Byte operations; `fields` are the offsets of the format's length and count fields, overwritten more often. */
function opArb(fields: number[]): fc.Arbitrary<Op> {
  const at = fc.nat(1 << 20);
  const field = fields.length > 0 ? fc.oneof(fc.constantFrom(...fields), at) : at;
  return fc.oneof(
    { weight: 4, arbitrary: fc.record({ k: fc.constant('flip' as const), at, mask: fc.integer({ min: 1, max: 255 }) }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('set' as const), at, v: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 0x1f, 0x8b) }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant('truncate' as const), at }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('insert' as const), at, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('delete' as const), at, n: fc.integer({ min: 1, max: 16 }) }) },
    { weight: 3, arbitrary: fc.record({ k: fc.constant('u32' as const), at: field, v: fc.oneof(fc.constantFrom(...EXTREME_U32), fc.nat()), le: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ k: fc.constant('u64' as const), at: field, v: fc.oneof(fc.constantFrom(...EXTREME_U64), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })) }) },
  );
}

function applyOps(base: Uint8Array, ops: Op[]): Uint8Array {
  let b = new Uint8Array(base);
  for (const op of ops) {
    const n = b.length;
    const pos = (at: number) => (n === 0 ? 0 : at % n);
    switch (op.k) {
      case 'flip': if (n > 0) b[pos(op.at)] ^= op.mask; break;
      case 'set': if (n > 0) b[pos(op.at)] = op.v; break;
      case 'truncate': b = b.slice(0, pos(op.at)); break;
      case 'extend': b = concat(b, op.bytes); break;
      case 'insert': b = concat(b.subarray(0, pos(op.at)), op.bytes, b.subarray(pos(op.at))); break;
      case 'delete': b = concat(b.subarray(0, pos(op.at)), b.subarray(pos(op.at) + op.n)); break;
      case 'u32': if (n >= 4) new DataView(b.buffer).setUint32(pos(op.at) % (n - 3), op.v, op.le); break;
      case 'u64': if (n >= 8) new DataView(b.buffer).setBigUint64(pos(op.at) % (n - 7), op.v, true); break;
    }
  }
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Mutated copies of `base` (one to six operations), plus now and then wholly random bytes. */
function mutated(base: Uint8Array, fields: number[] = []): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { weight: 12, arbitrary: fc.array(opArb(fields), { minLength: 1, maxLength: 6 }).map((ops) => applyOps(base, ops)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 4096 }) },
  );
}

// ---------------------------------------------------------------------------------------------------------
// Mutations of a JSON value: replace, delete or duplicate what sits at some path, with values at the edges.
// Tokens that JSON.stringify cannot write (NaN, 1e999, deep nesting) go in as markers replaced in the text.

/** Raw JSON text for the marker string `\u0000<name>` (as JSON.stringify writes it). */
const RAW_TEXT: Record<string, string> = {
  NaN: 'NaN', Inf: '1e999', Neg0: '-0', Deep: '['.repeat(20_000) + ']'.repeat(20_000), Long: `[${'8192,'.repeat(99_999)}8192]`,
};
const unmark = (text: string): string => text.replace(/"\\u0000(\w+)"/g, (m, name: string) => RAW_TEXT[name] ?? m);

const EDGE_VALUES: unknown[] = [0, 1, -1, 2, 1.5, 0.5, 1e-300, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, -(2 ** 53),
  1e308, -1e308, 1e21, '', '0', '-1', 'NaN', 'Infinity', 'a\nb', 'x'.repeat(5000), null, true, false, [], {}, [0], [-1], [1e9],
  [2 ** 32, 2 ** 32], '\u0000Long', '\u0000NaN', '\u0000Inf', '\u0000Deep', '\u0000Neg0'];

type JsonOp = { path: number; how: 'replace' | 'delete' | 'dup' | 'key'; value: unknown };

const jsonOpArb: fc.Arbitrary<JsonOp> = fc.record({
  path: fc.nat(),
  how: fc.constantFrom('replace', 'replace', 'replace', 'delete', 'dup', 'key'),
  value: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...EDGE_VALUES) }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) }),
});

/** Every container path of `v` (arrays and objects), root first. */
function containers(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (v !== null && typeof v === 'object') {
    out.push(at);
    for (const [k, c] of Object.entries(v)) containers(c, [...at, Array.isArray(v) ? Number(k) : k], out);
  }
  return out;
}

function mutateJson(value: unknown, ops: JsonOp[]): string {
  const root = structuredClone(value);
  for (const op of ops) {
    const paths = containers(root);
    const path = paths[op.path % paths.length];
    const parent = path.reduce((o: any, k) => o[k], root) as Record<string, unknown> | unknown[];
    const keys = Object.keys(parent);
    if (op.how === 'key') {
      // a new member: an unknown key, or a numeric-looking or odd one
      const key = ['__proto__', 'extra', '0', 'a\nb', ''][op.path % 5];
      // defineProperty: assigning to __proto__ would set the prototype, not add a member
      if (Array.isArray(parent)) parent.push(structuredClone(op.value));
      else Object.defineProperty(parent, key, { value: structuredClone(op.value), enumerable: true, writable: true, configurable: true });
      continue;
    }
    if (keys.length === 0) continue;
    const key = keys[Math.floor(op.path / paths.length) % keys.length];
    if (Array.isArray(parent)) {
      const i = Number(key);
      if (op.how === 'delete') parent.splice(i, 1);
      else if (op.how === 'dup') parent.splice(i, 0, structuredClone(parent[i]));
      else parent[i] = structuredClone(op.value);
    } else {
      if (op.how === 'delete') delete parent[key];
      else if (op.how === 'dup') parent[key] = [parent[key], structuredClone(parent[key])];
      else parent[key] = structuredClone(op.value);
    }
  }
  return unmark(JSON.stringify(root));
}

const textBytes = (s: string): Uint8Array => new TextEncoder().encode(s);

// ---------------------------------------------------------------------------------------------------------
// The property: a sane result, or a UserError of one line naming the file; counted, and timed per input.

interface Tally { runs: number; ok: number; refused: number; slowestMs: number }
const tallies: Record<string, Tally> = {};

/**
 * Runs one input through `run`: a result must pass `sane`, an error must be a UserError of one line (at most
 * 1000 characters) that `names` accepts, by default one that names `file`. Anything else throws.
 */
async function expectSaneOrUserError<T>(target: string, file: string, run: () => Promise<T>, sane: (r: T) => void,
                                        names = (msg: string) => msg.includes(file)): Promise<void> {
  const t = (tallies[target] ??= { runs: 0, ok: 0, refused: 0, slowestMs: 0 });
  t.runs++;
  const t0 = performance.now();
  let result: T;
  try {
    result = await run();
  } catch (e) {
    t.slowestMs = Math.max(t.slowestMs, performance.now() - t0);
    if (!(e instanceof UserError)) throw new Error(`${target}: not a UserError but ${(e as Error)?.name}: ${(e as Error)?.message}`, { cause: e });
    if (/[\r\n]/.test(e.message)) throw new Error(`${target}: a message of more than one line: ${JSON.stringify(e.message)}`);
    if (!names(e.message)) throw new Error(`${target}: the message does not name ${file}: ${e.message}`);
    if (e.message.length > 1000) throw new Error(`${target}: a message of ${e.message.length} characters: ${e.message.slice(0, 200)}…`);
    t.refused++;
    return;
  }
  t.slowestMs = Math.max(t.slowestMs, performance.now() - t0);
  sane(result);
  t.ok++;
}

/**
 * Runs `prop` on `numRuns` inputs from `arb`, each within `timeoutMs` (an async hang fails the run; a
 * synchronous one is left to vitest's test timeout). A failing input is saved to a file that the report names.
 */
async function check<T>(arb: fc.Arbitrary<T>, numRuns: number, prop: (v: T) => Promise<void>, timeoutMs = PER_INPUT_MS): Promise<void> {
  const shown = arb.map((v) => Object.assign(Object.create(null) as object, {
    v,
    [fc.toStringMethod]: () => {
      failures ||= mkdtempSync(join(tmpdir(), 'mnist-par-fuzz-failures-'));
      const f = join(failures, `input-${savedInputs++}.json`);
      writeFileSync(f, JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? Buffer.from(x).toString('base64') : x)));
      return `an input saved to ${f} (Uint8Arrays as base64)`;
    },
  }) as { v: T });
  // endOnFailure: no shrinking, which can take minutes on these inputs; drop it to get a minimal input
  await fc.assert(fc.asyncProperty(shown, ({ v }) => prop(v)), { seed: SEED, numRuns, timeout: timeoutMs, endOnFailure: true });
}

function report(target: string, numRuns: number): void {
  const t = tallies[target];
  // a property that returned early would tally fewer runs than fast-check made
  expect(t.runs).toBe(numRuns);
  expect(t.slowestMs).toBeLessThan(PER_INPUT_MS);
  console.log(`fuzz ${target}: ${t.runs} inputs, ${t.ok} accepted, ${t.refused} refused with a UserError, slowest ${t.slowestMs.toFixed(0)} ms`);
}

afterAll(() => {
  const total = Object.entries(tallies).reduce((a, [k, t]) => a + (k === 'self-test' ? 0 : t.runs), 0);
  console.log(`fuzz: ${total} inputs in all`);
});

describe('the fuzz checker itself', () => {
  const F = '/data/f.bin';
  const fails = (run: () => Promise<unknown>, sane: (r: unknown) => void = () => {}) =>
    expect(expectSaneOrUserError('self-test', F, run, sane)).rejects.toThrow();

  it('passes a sane result and a one-line UserError naming the file', async () => {
    await expectSaneOrUserError('self-test', F, async () => 1, (r) => expect(r).toBe(1));
    await expectSaneOrUserError('self-test', F, async () => { throw new UserError(`${F}: damaged`); }, () => {});
  });

  it('fails on any other error, a second line, an unnamed file, a long message, an insane result', async () => {
    await fails(async () => { throw new TypeError(`${F}: x is undefined`); });
    await fails(async () => { throw new RangeError('Invalid typed array length: -1'); });
    await fails(async () => { throw new UserError(`${F}: line one\nline two`); });
    await fails(async () => { throw new UserError('damaged, but which file?'); });
    await fails(async () => { throw new UserError(`${F}: ${'x'.repeat(1000)}`); });
    await fails(async () => 2, (r) => expect(r).toBe(1));
  });

  it('fails an input that hangs', async () => {
    const hang = () => new Promise<never>(() => {});
    const err = await check(fc.constant(0), 1, () => expectSaneOrUserError('self-test', F, hang, () => {}), 200).then(() => null, (e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err!.cause as Error | undefined)?.message).toMatch(/^Property timeout: exceeded limit of 200 milliseconds/);
    // the input it saved is of no interest
    rmSync(failures, { recursive: true, force: true });
    failures = '';
  });
});

// ---------------------------------------------------------------------------------------------------------
// IDX: the first images and labels of the MNIST test set, raw and gzipped, loaded by loadSplit as train does.

const N_IMAGES = 3;
const t10kImages = gunzipSync(readFileSync(join(mnistDir, SPLIT_FILES.test.images)));
const t10kLabels = gunzipSync(readFileSync(join(mnistDir, SPLIT_FILES.test.labels)));
/** A valid IDX file of the first n entries: the header with the count rewritten, then the data. */
function idxHead(file: Buffer, header: number, per: number, n: number): Uint8Array {
  const out = new Uint8Array(file.subarray(0, header + per * n));
  new DataView(out.buffer).setUint32(4, n);
  return out;
}
const IMAGES = idxHead(t10kImages, 16, 784, N_IMAGES);
const LABELS = idxHead(t10kLabels, 8, 1, N_IMAGES);
const IDX_FIELDS = [0, 4, 8, 12];

function idxSane(s: Awaited<ReturnType<typeof loadSplit>>): void {
  expect(s.count).toBeGreaterThan(0);
  expect([s.height, s.width]).toEqual([28, 28]);
  expect(s.images.length).toBe(s.count * 784);
  expect(s.labels.length).toBe(s.count);
  for (const l of s.labels) expect(l).toBeLessThan(10);
}

let dirs = 0;
/** A fresh folder holding the test split's two files. */
function splitDir(images: Uint8Array, labels: Uint8Array): string {
  const dir = join(tmp, `split-${dirs++}`);
  mkdirSync(dir);
  writeFileSync(join(dir, SPLIT_FILES.test.images), images);
  writeFileSync(join(dir, SPLIT_FILES.test.labels), labels);
  return dir;
}

/** A copy of an IDX file with its count (the first dimension) set to `n`. */
function withCount(file: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(file);
  new DataView(out.buffer).setUint32(4, n);
  return out;
}

/** Which of the two files gets the mutation, and the two files (`post` gzips them, or not). */
const splitArb = (images: Uint8Array, labels: Uint8Array, post: (b: Uint8Array) => Uint8Array = (b) => b) => fc.oneof(
  { weight: 8, arbitrary: mutated(images, IDX_FIELDS).map((b) => ({ which: 'images' as const, images: post(b), labels: post(labels) })) },
  { weight: 8, arbitrary: mutated(labels, IDX_FIELDS.slice(0, 2)).map((b) => ({ which: 'labels' as const, images: post(images), labels: post(b) })) },
  // both counts changed alike, so that the two files still agree: shorter splits (none at all, too) are
  // consistent files, longer ones promise data that is not there
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 2).map((n) => ({ which: 'either' as const, images: post(idxHead(t10kImages, 16, 784, n)), labels: post(idxHead(t10kLabels, 8, 1, n)) })) },
  { weight: 1, arbitrary: fc.constantFrom(4, 0x7fff_ffff, 0xffff_ffff).map((n) => ({ which: 'either' as const, images: post(withCount(images, n)), labels: post(withCount(labels, n)) })) },
);

/** The mutated file, for messages; when both changed alike, the error may name either. */
const fileOf = (dir: string, which: 'images' | 'labels' | 'either') => join(dir, SPLIT_FILES.test[which === 'either' ? 'images' : which]);
const namesFile = (dir: string, which: 'images' | 'labels' | 'either') => (msg: string) =>
  which === 'either' ? msg.includes(fileOf(dir, 'images')) || msg.includes(fileOf(dir, 'labels')) : msg.includes(fileOf(dir, which));

describe('fuzzed IDX files through loadSplit', () => {
  it('gzip bombs: valid content, then up to 4 GiB of zeros in a 4 MB file, stop at once with a UserError', async () => {
    const zeros16M = gzipSync(new Uint8Array(16 << 20), { level: 9 });
    for (const members of [1, 16, 256]) {
      const bomb = Buffer.concat([gzipSync(IMAGES), ...new Array(members).fill(zeros16M)]);
      const dir = splitDir(bomb, gzipSync(LABELS));
      const rss0 = process.memoryUsage.rss();
      const t0 = performance.now();
      await expectSaneOrUserError('gzip bomb', join(dir, SPLIT_FILES.test.images), () => loadSplit(dir, 'test'), () => {
        throw new Error(`a bomb of ${members} × 16 MiB was accepted`);
      });
      // inflating stops 64 KiB past the 2368 bytes the header promises: no time, no memory to speak of
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(process.memoryUsage.rss() - rss0).toBeLessThan(128 << 20);
    }
    report('gzip bomb', 3);
  });

  it(`raw: ${RUNS.idxRaw} mutations of a 3-image split`, async () => {
    await check(splitArb(IMAGES, LABELS), RUNS.idxRaw, async ({ which, images, labels }) => {
      const dir = splitDir(images, labels);
      await expectSaneOrUserError('idx raw', fileOf(dir, which), () => loadSplit(dir, 'test'), idxSane, namesFile(dir, which));
      rmSync(dir, { recursive: true, force: true });
    });
    report('idx raw', RUNS.idxRaw);
  });

  it(`gzipped: ${RUNS.idxGz} mutations of the compressed bytes or of the content behind a valid gzip`, async () => {
    const gzImages = gzipSync(IMAGES);
    const gzLabels = gzipSync(LABELS);
    const arb = fc.oneof(splitArb(gzImages, gzLabels), splitArb(IMAGES, LABELS, (b) => gzipSync(b)));
    await check(arb, RUNS.idxGz, async ({ which, images, labels }) => {
      const dir = splitDir(images, labels);
      await expectSaneOrUserError('idx gz', fileOf(dir, which), () => loadSplit(dir, 'test'), idxSane, namesFile(dir, which));
      rmSync(dir, { recursive: true, force: true });
    });
    report('idx gz', RUNS.idxGz);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Safetensors: a small model (784 → 4 → 10) as train writes model.safetensors, read by loadModel as predict
// and eval read it. Mutations hit the bytes, the 8-byte header length, and the header's JSON (shapes, offsets,
// dtypes, names) behind a correct length.

const MODEL_LAYERS = widths([4]);
const MODEL_LAYOUT = paramLayout(MODEL_LAYERS);
const modelParams = new Float32Array(MODEL_LAYOUT.size).map((_, i) => Math.sin(i) / 8);
const MODEL = encodeSafetensors(weightTensors(MODEL_LAYOUT, modelParams), { format: 'pt', producer: 'mnist-par', dataset: 'mnist' });

/** Splits a safetensors file into its header JSON and its data section. */
function splitSafetensors(bytes: Uint8Array): { header: unknown; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return { header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))), data: bytes.subarray(8 + n) };
}
/** A file of `headerText` with its correct length, then `data`. */
function joinSafetensors(headerText: string, data: Uint8Array): Uint8Array {
  const h = textBytes(headerText);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Byte mutations, or JSON mutations of the header behind a correct length (then perhaps byte mutations too). */
function safetensorsArb(base: Uint8Array): fc.Arbitrary<Uint8Array> {
  const { header, data } = splitSafetensors(base);
  const viaJson = fc.tuple(fc.array(jsonOpArb, { minLength: 1, maxLength: 4 }), fc.array(opArb([0]), { maxLength: 2 }))
    .map(([jops, bops]) => applyOps(joinSafetensors(mutateJson(header, jops), data), bops));
  return fc.oneof({ weight: 1, arbitrary: mutated(base, [0, 4]) }, { weight: 2, arbitrary: viaJson });
}

describe('fuzzed safetensors files through loadModel', () => {
  it(`${RUNS.model} mutations of a 784-4-10 model`, async () => {
    const file = join(tmp, 'model.safetensors');
    await check(safetensorsArb(MODEL), RUNS.model, async (bytes) => {
      writeFileSync(file, bytes);
      await expectSaneOrUserError('safetensors model', file, () => loadModel(file), (m) => {
        expect(m.layers[0]).toBe(784);
        expect(m.layers.at(-1)).toBe(10);
        expect(m.layers.every((w) => Number.isInteger(w) && w >= 1)).toBe(true);
        expect(m.params.length).toBe(paramLayout(m.layers).size);
        expect(m.layout.size).toBe(m.params.length);
        expect(m.params.every(Number.isFinite)).toBe(true);
      });
    });
    report('safetensors model', RUNS.model);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Checkpoints: a mid-epoch Adam checkpoint (weights, two moment arrays, a permutation of 12 images, the
// training state as JSON in the metadata), read by loadCheckpoint as --resume reads it. Mutations add those of
// the state JSON and of the permutation's values.

const PERM_N = 12;
const CK_CONFIG = validate({ hidden: [4], optimizer: 'adam', batchSize: 4, limitTrain: PERM_N, epochs: 2, threads: 2 });
const CK_STATE = {
  version: 2, config: CK_CONFIG, cwd: '/tmp', kernelFamily: 'js', epoch: 1, batch: 1, step: 1,
  rng: new Rng(7).state(), partial: { lossSum: 9.2, correct: 1, seen: 4, seconds: 0.01 },
  elapsedSec: 0.02, best: null, early: { best: null, bestEpoch: 0, epochsWithoutImprovement: 0 },
} as unknown as TrainState;
const ckPerm = Uint32Array.from({ length: PERM_N }, (_, i) => (i * 5) % PERM_N);
const ckState = [0, 1].map((k) => new Float32Array(MODEL_LAYOUT.size).map((_, i) => Math.cos(i + k) / 16));

function checkpointSane(ck: Awaited<ReturnType<typeof loadCheckpoint>>): void {
  const cfg = validate(ck.state.config as unknown as Record<string, unknown>);
  const layers = widths(cfg.hidden);
  expect(ck.params.length).toBe(paramLayout(layers).size);
  expect(ck.optimizerState.length).toBe(optimizerStateCount({ ...cfg, dampening: 0 }));
  for (const s of ck.optimizerState) expect(s.length).toBe(ck.params.length);
  for (const a of [ck.params, ...ck.optimizerState]) expect(a.every(Number.isFinite)).toBe(true);
  if (ck.state.batch > 0) expect(ck.perm).not.toBeNull();
  if (ck.perm) {
    const seen = new Uint8Array(ck.perm.length);
    for (const i of ck.perm) {
      expect(i).toBeLessThan(ck.perm.length);
      expect(seen[i]).toBe(0);
      seen[i] = 1;
    }
  }
}

describe('fuzzed checkpoints through loadCheckpoint', () => {
  it(`${RUNS.checkpoint} mutations of a mid-epoch Adam checkpoint`, async () => {
    const good = join(tmp, 'good.safetensors');
    await saveCheckpoint(good, MODEL_LAYOUT, modelParams, ckState, ckPerm, CK_STATE);
    const base = new Uint8Array(readFileSync(good));
    checkpointSane(await loadCheckpoint(good));
    const { header } = splitSafetensors(base);
    const meta = (header as { __metadata__: Record<string, string> }).__metadata__;
    const stateJson = JSON.parse(meta['mnist-par.state']) as unknown;
    // the state JSON mutated inside a correctly re-encoded file
    const viaState = fc.array(jsonOpArb, { minLength: 1, maxLength: 3 }).map((ops) => {
      const { tensors } = decodeSafetensors(base, good);
      return encodeSafetensors([...tensors.values()], { ...meta, 'mnist-par.state': mutateJson(stateJson, ops) });
    });
    // the permutation's values or the optimizer state tensors changed, the rest intact
    const PERM_VALUES = [NaN, Infinity, -1, -0.5, 0.5, 1.5, PERM_N, PERM_N - 1, 0, 2 ** 24, 2 ** 32, 1e30];
    const viaTensors = fc.record({
      perm: fc.array(fc.tuple(fc.nat(PERM_N - 1), fc.constantFrom(...PERM_VALUES)), { maxLength: 3 }),
      permLength: fc.constantFrom(PERM_N, PERM_N, PERM_N, 0, 1, PERM_N - 1, PERM_N + 1),
      states: fc.constantFrom(2, 2, 0, 1, 3),
      skipState0: fc.boolean(),
    }).map(({ perm, permLength, states, skipState0 }) => {
      const p = Float32Array.from({ length: permLength }, (_, i) => (i < PERM_N ? ckPerm[i] : i));
      for (const [i, v] of perm) if (i < p.length) p[i] = v;
      const tensors = weightTensors(MODEL_LAYOUT, modelParams);
      for (let k = 0; k < states; k++) {
        if (k === 0 && skipState0 && states > 1) continue;
        tensors.push({ name: `optimizer.state.${k}`, shape: [MODEL_LAYOUT.size], data: ckState[k % 2] });
      }
      tensors.push({ name: 'epoch.permutation', shape: [p.length], data: p });
      return encodeSafetensors(tensors, meta);
    });
    const arb = fc.oneof({ weight: 2, arbitrary: safetensorsArb(base) }, { weight: 2, arbitrary: viaState }, { weight: 1, arbitrary: viaTensors });
    const file = join(tmp, 'checkpoint.safetensors');
    await check(arb, RUNS.checkpoint, async (bytes) => {
      writeFileSync(file, bytes);
      await expectSaneOrUserError('checkpoint', file, () => loadCheckpoint(file), checkpointSane);
    });
    report('checkpoint', RUNS.checkpoint);
  });
});

// ---------------------------------------------------------------------------------------------------------
// --config: a valid JSON file, then what the CLI does with it when no flag overrides it: readConfigFile, then
// validate. Errors of a single field name the file; errors between fields (validate's last checks) name the
// flags, as they would for flags.

/** validate()'s checks between fields name the flags involved, not the file, as they would for flags. */
const crossField = (msg: string): boolean => /^--nesterov: needs --optimizer sgd|^--min-lr: expected a value ≤ --lr/.test(msg);

const CONFIG = { epochs: 3, batchSize: 128, hidden: [128, 64], optimizer: 'sgd', momentum: 0.9, nesterov: true, lr: 0.05,
  schedule: 'cosine', minLr: 0.001, seed: 7, dataset: 'fashion-mnist', augment: true, out: 'runs/a' };

describe('fuzzed --config files through readConfigFile and validate', () => {
  it(`${RUNS.config} mutations of a valid configuration`, async () => {
    const file = join(tmp, 'config.json');
    const text = textBytes(JSON.stringify(CONFIG, null, 2));
    const arb = fc.oneof(
      { weight: 3, arbitrary: fc.array(jsonOpArb, { minLength: 1, maxLength: 3 }).map((ops) => textBytes(mutateJson(CONFIG, ops))) },
      { weight: 2, arbitrary: mutated(text) },
      { weight: 1, arbitrary: fc.json().map(textBytes) },
    );
    await check(arb, RUNS.config, async (bytes) => {
      writeFileSync(file, bytes);
      await expectSaneOrUserError('config', file, async () => validate(readConfigFile(file)), (cfg) => {
        expect(validate(cfg as unknown as Record<string, unknown>)).toEqual(cfg);
        expect(Object.keys(cfg).sort()).toEqual(Object.keys(DEFAULTS).sort());
      }, (msg) => msg.includes(file) || crossField(msg));
    });
    report('config', RUNS.config);
  });
});

// ---------------------------------------------------------------------------------------------------------
// predict's image path: a PNG of a real digit, mutated (with the header's checksum made right again after a
// width or height was overwritten, so the decoder believes it), then loadDigitImage and the forward pass.

/** The CRC-32 of PNG chunks (the zlib polynomial). */
function crc32(bytes: Uint8Array): number {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
/** Rewrites the IHDR chunk's CRC (IHDR is the first chunk: bytes 12..28 typed and data, CRC at 29). */
function fixIhdr(png: Uint8Array): Uint8Array {
  if (png.length >= 33) new DataView(png.buffer, png.byteOffset).setUint32(29, crc32(png.subarray(12, 29)));
  return png;
}

interface ImageSpec { width: number; height: number; channels: number; format: 'png' | 'jpeg' | 'webp' | 'gif' | 'tiff'; fill: string; seed: number }

/** A well-formed image file of the given size, channels, format and content. */
async function encode(spec: ImageSpec, digit: Uint8Array): Promise<Buffer> {
  const { width, height, channels, format, fill } = spec;
  const rng = new Rng(spec.seed);
  const px = new Uint8Array(width * height * channels);
  if (fill === 'flat') px.fill(spec.seed % 256);
  if (fill === 'noise') for (let i = 0; i < px.length; i++) px[i] = rng.nextU32() & 255;
  if (fill === 'line') for (let x = 0; x < width; x++) px.fill(255, (Math.floor(height / 2) * width + x) * channels, (Math.floor(height / 2) * width + x + 1) * channels);
  if (fill === 'digit') {
    for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
      const v = digit[Math.floor((y * 28) / height) * 28 + Math.floor((x * 28) / width)];
      for (let c = 0; c < channels; c++) px[(y * width + x) * channels + c] = c === 3 || (c === 1 && channels === 2) ? 255 : v;
    }
  }
  return sharp(px, { raw: { width, height, channels: channels as 1 | 2 | 3 | 4 } }).toFormat(format).toBuffer();
}

describe('fuzzed images through predict\'s image path', () => {
  it(`${RUNS.image} images: mutated PNGs of a digit, and well-formed images of odd content in five formats`, async () => {
    const pixels = t10kImages.subarray(16, 16 + 784);
    const png = new Uint8Array(await sharp(Buffer.from(pixels), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer());
    const modelFile = join(tmp, 'predict-model.safetensors');
    writeFileSync(modelFile, MODEL);
    const model = await loadModel(modelFile);
    const table = normalizeTable('mnist');
    // well-formed images of odd content (blank, flat, noise, a digit stretched, a line one pixel thick), in
    // every format sharp reads, reach the preprocessing; mutated bytes mostly test the decoder's refusals
    const FORMATS = ['png', 'jpeg', 'webp', 'gif', 'tiff'] as const;
    const wellFormed = fc.record({
      width: fc.integer({ min: 1, max: 64 }), height: fc.integer({ min: 1, max: 64 }), channels: fc.constantFrom(1, 2, 3, 4),
      format: fc.constantFrom(...FORMATS), fill: fc.constantFrom('zero', 'flat', 'noise', 'digit', 'line'), seed: fc.nat(),
    });
    const arb = fc.oneof(
      { weight: 2, arbitrary: mutated(png).map((bytes) => ({ bytes })) },
      // width and height (bytes 16 and 20) overwritten, bit depth and colour type (24, 25) too
      { weight: 1, arbitrary: fc.array(opArb([16, 20, 24]), { minLength: 1, maxLength: 3 }).map((ops) => ({ bytes: fixIhdr(applyOps(png, ops)) })) },
      { weight: 2, arbitrary: wellFormed.map((image) => ({ image })) },
    );
    const file = join(tmp, 'digit.img');
    await check(arb, RUNS.image, async (input) => {
      writeFileSync(file, 'bytes' in input ? input.bytes : await encode(input.image, pixels));
      await expectSaneOrUserError('image', file, () => loadDigitImage(file), (px) => {
        expect(px.length).toBe(784);
        expect(px.some((v) => v > 0)).toBe(true);
        const probs = forwardProbs(model, table, px, 1);
        const sum = probs.reduce((a, b) => a + b, 0);
        expect(Math.abs(sum - 1)).toBeLessThan(1e-5);
      });
    });
    report('image', RUNS.image);
  });
});
