// The safetensors format: an 8-byte little-endian u64 header length N, then N bytes of JSON
//   { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ..., "__metadata__": {..} }
// (offsets relative to the start of the data section), then the raw little-endian tensor data. We pad the
// header with spaces to a multiple of 8 so the data section starts aligned. We write and read F32 only.
import { readFile, stat } from 'node:fs/promises';
import { printable, UserError } from './errors.js';
import { writeFileAtomic } from './fsutil.js';
import { KK, KS } from './kernels/reference.js';
import {
  CLASSES, flattenedWidth, INPUT, MAX_CONV_LAYERS, modelLayout, tensorNames, withClasses, type Layout, type ModelSpec,
} from './model.js';

export interface Tensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 1024 * 1024;
/** The largest file we read: 268M float32 values, some 900× the default network with its Adam state. */
export const MAX_FILE = 1 << 30;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
// a shape read from a file may have thousands of dimensions: a message shows the first few
const fmt = (shape: readonly unknown[]): string => `[${shape.slice(0, 8).join(', ')}${shape.length > 8 ? `, … (${shape.length} dimensions)` : ''}]`;

/** Tensors in the order given, packed back to back; `data` may be a view into a shared buffer. */
export function encodeSafetensors(tensors: Tensor[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) throw new Error(`safetensors: duplicate or reserved tensor name ${t.name}`);
    if (numel(t.shape) !== t.data.length) {
      throw new Error(`safetensors: ${t.name} has shape ${fmt(t.shape)} but ${t.data.length} values`);
    }
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [off, off + 4 * t.data.length] };
    off += 4 * t.data.length;
  }
  let json = JSON.stringify(header);
  const rawLen = Buffer.byteLength(json);
  json += ' '.repeat((8 - (rawLen % 8)) % 8);
  const headerBytes = Buffer.from(json);
  const out = new Uint8Array(8 + headerBytes.length + off);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const { data } of tensors) {
    if (LITTLE_ENDIAN) out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), pos);
    else for (let i = 0; i < data.length; i++) view.setFloat32(pos + 4 * i, data[i], true);
    pos += data.byteLength;
  }
  return out;
}

interface Entry { name: string; shape: number[]; begin: number; end: number }

/** Parses and validates a whole file; every error is a one-line UserError naming `file`. */
export function decodeSafetensors(bytes: Uint8Array, file: string): SafetensorsFile {
  const bad = (what: string): UserError =>
    new UserError(`${file}: ${what}; the file is damaged or not a safetensors file, re-create it`);
  if (bytes.length < 8) throw bad(`${bytes.length} bytes, too short for the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = view.getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER)) throw bad(`header length ${n64} is larger than the ${MAX_HEADER}-byte limit`);
  const n = Number(n64);
  if (8 + n > bytes.length) throw bad(`header length ${n} runs past the end of the ${bytes.length}-byte file`);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw bad(`header is not valid JSON (${printable((e as Error).message, 200)})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw bad('header is not a JSON object');

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  const dataLen = bytes.length - 8 - n;
  for (const [key, v] of Object.entries(header as Record<string, unknown>)) {
    const name = printable(key);
    if (key === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('__metadata__ is not an object');
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw bad(`__metadata__.${printable(k)} is not a string`);
        metadata[k] = s;
      }
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (typeof e !== 'object' || e === null) throw bad(`entry ${name} is not an object`);
    if (typeof e.dtype !== 'string') throw bad(`tensor ${name} has no dtype`);
    const isDims = (a: unknown, len?: number): a is number[] => Array.isArray(a) && (len === undefined || a.length === len)
      && a.every((x) => Number.isSafeInteger(x) && x >= 0);
    if (!isDims(e.shape)) throw bad(`tensor ${name} has no valid shape (expected an array of non-negative integers)`);
    if (!isDims(e.data_offsets, 2) || e.data_offsets[0] > e.data_offsets[1]) {
      throw bad(`tensor ${name} has no valid data_offsets (expected [begin, end] with begin <= end)`);
    }
    if (e.dtype !== 'F32') {
      throw new UserError(`${file}: tensor ${name} has dtype ${printable(e.dtype)}, only F32 is supported; convert the file to float32`);
    }
    const [begin, end] = e.data_offsets;
    if (numel(e.shape) * 4 !== end - begin) {
      throw bad(`tensor ${name} has shape ${fmt(e.shape)} (${numel(e.shape) * 4} bytes) but data_offsets [${begin}, ${end}] span ${end - begin} bytes`);
    }
    if (end > dataLen) throw bad(`tensor ${name} data_offsets [${begin}, ${end}] run past the ${dataLen}-byte data section`);
    entries.push({ name: key, shape: e.shape, begin, end });
  }

  // The tensors must tile the data section exactly: no overlaps, no gaps, nothing trailing.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const e of sorted) {
    if (e.begin < pos) throw bad(`tensor ${printable(e.name)} data_offsets [${e.begin}, ${e.end}] overlap the previous tensor (ending at ${pos})`);
    if (e.begin > pos) throw bad(`gap in the data section: bytes ${pos}..${e.begin} belong to no tensor`);
    pos = e.end;
  }
  if (pos !== dataLen) throw bad(`gap in the data section: bytes ${pos}..${dataLen} belong to no tensor`);

  const tensors = new Map<string, Tensor>();
  const dataStart = bytes.byteOffset + 8 + n;
  for (const e of entries) {
    // Copy out: the data may sit at any byte offset of the file buffer, a Float32Array needs 4-byte alignment.
    const data = new Float32Array((e.end - e.begin) / 4);
    if (LITTLE_ENDIAN) new Uint8Array(data.buffer).set(new Uint8Array(bytes.buffer, dataStart + e.begin, e.end - e.begin));
    else for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(8 + n + e.begin + 4 * i, true);
    tensors.set(e.name, { name: e.name, shape: e.shape, data });
  }
  return { tensors, metadata };
}

export async function writeSafetensors(path: string, tensors: Tensor[], metadata?: Record<string, string>): Promise<void> {
  const bytes = encodeSafetensors(tensors, metadata);
  try {
    await writeFileAtomic(path, bytes);
  } catch (e) {
    if (e instanceof UserError) throw e; // a full disk says so itself
    throw new UserError(`${path}: cannot write (${(e as Error).message}); check that the directory exists and is writable`);
  }
}

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let bytes: Uint8Array;
  try {
    // the size is checked before the file is read into memory
    const { size } = await stat(path);
    if (size > MAX_FILE) {
      throw new UserError(`${path}: ${size} bytes, larger than the ${MAX_FILE}-byte limit for a model or checkpoint; check the path`);
    }
    bytes = await readFile(path);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file' : err.message;
    throw new UserError(`${path}: cannot read (${why}); check the path`);
  }
  return decodeSafetensors(bytes, path);
}

/**
 * The weights as named tensors of PyTorch's nn.Sequential for the model (model.ts tensorNames): an mlp's
 * `0.weight` (OC,C), `0.bias` (OC), `2.weight`, …; a cnn's `0.weight` (OC,C,5,5), `3.weight`, then `7.weight`,
 * `9.weight`. The data are views into `params`, not copies.
 */
export function weightTensors(layout: Layout, params: Float32Array): Tensor[] {
  const names = tensorNames(layout);
  return [
    ...layout.conv.flatMap(({ C, OC, w, b }, i) => [
      { name: names.conv[i].weight, shape: [OC, C, KS, KS], data: params.subarray(w, w + OC * C * KK) },
      { name: names.conv[i].bias, shape: [OC], data: params.subarray(b, b + OC) },
    ]),
    ...layout.linear.flatMap(({ C, OC, w, b }, l) => [
      { name: names.linear[l].weight, shape: [OC, C], data: params.subarray(w, w + OC * C) },
      { name: names.linear[l].bias, shape: [OC], data: params.subarray(b, b + OC) },
    ]),
  ];
}

/** What paramsFromTensors found: the network and its parameters in the flat layout. */
export interface LoadedWeights {
  spec: ModelSpec;
  layout: Layout;
  /** the linear layers' widths (layout.layers) */
  layers: readonly number[];
  params: Float32Array;
}

/**
 * The inverse of weightTensors: infers the network from the names and shapes and checks that they chain from
 * a 1×28×28 image to `classes` outputs (the built-in datasets' 10 unless the file names its own classes in
 * its metadata, see predict.ts modelData). A 4-dimensional `0.weight` makes it a cnn (convolutions at 0 and 3, linear
 * layers from 3n+1 on), a 2-dimensional one an mlp (linear layers at 0, 2, 4, …). Tensors whose names are not
 * `<int>.weight` / `<int>.bias` are ignored (room for optimizer state); any such name outside the chain is an
 * error.
 */
export function paramsFromTensors(tensors: Map<string, Tensor>, file: string, classes: number = CLASSES): LoadedWeights {
  const wrong = (name: string, shape: number[], expected: string, why = ''): UserError =>
    new UserError(`${file}: ${name} has shape ${fmt(shape)}, expected ${expected}${why}; the file does not hold weights for this network`);
  const first = tensors.get('0.weight');
  if (!first) throw new UserError(`${file}: no tensor named 0.weight; the file does not hold weights for this network`);
  const chain: Tensor[] = [];
  const bias = (w: Tensor, index: number, OC: number): Tensor => {
    const b = tensors.get(`${index}.bias`);
    if (!b) throw new UserError(`${file}: ${w.name} has no matching ${index}.bias; the file does not hold weights for this network`);
    if (b.shape.length !== 1 || b.shape[0] !== OC) throw wrong(b.name, b.shape, fmt([OC]));
    return b;
  };
  // the convolutions of a cnn: (OC, C, 5, 5) at 0 and 3, each C the previous OC (1 for the image)
  const channels: number[] = [];
  if (first.shape.length === 4) {
    for (let i = 0; i < MAX_CONV_LAYERS && tensors.get(`${3 * i}.weight`)?.shape.length === 4; i++) {
      const w = tensors.get(`${3 * i}.weight`)!;
      const C = i === 0 ? 1 : channels[i - 1];
      const OC = w.shape[0];
      if (OC < 1 || w.shape[1] !== C || w.shape[2] !== KS || w.shape[3] !== KS) {
        throw wrong(w.name, w.shape, `[OC, ${C}, ${KS}, ${KS}]`, OC < 1 ? ' with OC >= 1' : '');
      }
      chain.push(w, bias(w, 3 * i, OC));
      channels.push(OC);
    }
  }
  const n = channels.length;
  const head = n === 0 ? INPUT : flattenedWidth(channels);
  const linearIndex = (l: number) => (n === 0 ? 2 * l : 3 * n + 1 + 2 * l);
  const layers = [head];
  for (let l = 0; tensors.has(`${linearIndex(l)}.weight`); l++) {
    const w = tensors.get(`${linearIndex(l)}.weight`)!;
    const C = layers[l];
    const OC = w.shape.length === 2 ? w.shape[0] : 0;
    if (w.shape.length !== 2 || w.shape[1] !== C || OC < 1) {
      throw wrong(w.name, w.shape, `[OC, ${C}]`, OC < 1 && w.shape.length === 2 ? ' with OC >= 1' : '');
    }
    chain.push(w, bias(w, linearIndex(l), OC));
    layers.push(OC);
  }
  if (layers.length === 1) {
    throw new UserError(`${file}: no tensor named ${linearIndex(0)}.weight after the convolutions; the file does not hold weights for this network`);
  }
  for (const t of chain) {
    const i = t.data.findIndex((v) => !Number.isFinite(v));
    if (i >= 0) {
      throw new UserError(`${file}: ${t.name} holds ${t.data[i]} at index ${i}; the weights are damaged or come from a run that diverged, use another file`);
    }
  }
  const last = chain[chain.length - 2];
  if (layers[layers.length - 1] !== classes) {
    const why = classes === CLASSES && layers[layers.length - 1] !== CLASSES
      ? ` (the last layer has one output per class: ${CLASSES}, as the file's metadata names no classes of its own)`
      : ` (the last layer has one output per class: ${classes})`;
    throw wrong(last.name, last.shape, fmt([classes, layers[layers.length - 2]]), why);
  }
  for (const name of tensors.keys()) {
    if (/^\d+\.(weight|bias)$/.test(name) && !chain.some((t) => t.name === name)) {
      throw new UserError(`${file}: unexpected tensor ${name} outside the chain ${chain.map((t) => t.name).join(', ')}; the file does not hold weights for this network`);
    }
  }
  const hidden = layers.slice(1, -1);
  const spec: ModelSpec = withClasses(n === 0 ? { kind: 'mlp', hidden } : { kind: 'cnn', channels, hidden }, classes);
  const layout = modelLayout(spec);
  const params = new Float32Array(layout.size);
  [...layout.conv, ...layout.linear].forEach(({ w, b }, i) => {
    params.set(chain[2 * i].data, w);
    params.set(chain[2 * i + 1].data, b);
  });
  return { spec, layout, layers: layout.layers, params };
}
