// `mnist-par predict`: classifies image files with a saved model. Each image goes through the MNIST-style
// preprocessing of data/image.ts, the data's normalization, and one forward pass on the main thread with
// the reference kernels (a handful of images needs no pool). Also where a model file is read and what it says
// about its data: a built-in dataset, or your own data's classes and normalization (run-outputs.ts
// dataMetadata writes them).
import { basename } from 'node:path';
import { ownDataProblem } from './checkpoint.js';
import { datasetInfo, isDatasetName, normalizationTable, type DataInfo, type DatasetName } from './data/datasets.js';
import { loadDigitImage, type ImageBytes } from './data/image.js';
import { isDataSource, type DataSource } from './data/own.js';
import { printable, UsageError, UserError } from './errors.js';
import { jsKernels } from './kernels/wasm.js';
import { activationElements, activationViews, layerViews } from './mlp.js';
import { CLASSES, INPUT, type Layout, type ModelSpec } from './model.js';
import { colsElements, forward } from './network.js';
import { paramsFromTensors, readSafetensors } from './safetensors.js';
import { fmtPct } from './ui/format.js';

export interface PredictOptions {
  model: string;
  images: string[];
  json: boolean;
  /** normalization and class names of a model of a built-in dataset; default: the dataset named in the
   *  model's metadata, else mnist (refused for a model trained on your own data) */
  dataset?: DatasetName;
}

export interface Prediction {
  file: string;
  /** the predicted class index (a digit for MNIST) */
  digit: number;
  /** its name: the digit, a Fashion-MNIST article, your data's class */
  label: string;
  probabilities: number[];
}

export interface LoadedModel {
  spec: ModelSpec;
  /** the linear layers' widths (layout.layers) */
  layers: readonly number[];
  layout: Layout;
  params: Float32Array;
  /** the dataset the training run recorded in the file's metadata, if any */
  dataset?: DatasetName;
  /** a model trained on your own data (--data): its classes and normalization, and where the data came from
   *  (null for a file that does not say) */
  own?: { info: DataInfo; source: DataSource | null };
}

/** Reads a safetensors model; every problem (missing, truncated, wrong shapes) is a one-line UserError. */
export async function loadModel(path: string): Promise<LoadedModel> {
  const file = await readSafetensors(path);
  const own = ownData(file.metadata, path);
  const { spec, layout, layers, params } = paramsFromTensors(file.tensors, path, own?.info.classes.length ?? CLASSES);
  const recorded = file.metadata.dataset;
  return { spec, layers, layout, params, dataset: recorded && isDatasetName(recorded) ? recorded : undefined, ...(own ? { own } : {}) };
}

/** The classes, normalization and data source a model file's metadata records, if it names classes. */
function ownData(meta: Record<string, string>, path: string): LoadedModel['own'] | undefined {
  if (meta.classes === undefined) return undefined;
  const damaged = (what: string) => new UserError(`${path}: its metadata has ${what}; the file is damaged, use another one`);
  const parse = (key: string): unknown => {
    try {
      return JSON.parse(meta[key]);
    } catch {
      throw damaged(`a '${key}' that is not JSON`);
    }
  };
  const data = { classes: parse('classes'), mean: Number(meta.mean), std: Number(meta.std) };
  const problem = ownDataProblem(data);
  if (problem) throw damaged(problem);
  const source = meta.source === undefined ? null : parse('source');
  if (source !== null && !isDataSource(source)) throw damaged('a data source that is not --data, --test, --val-split and --seed');
  const title = source ? (basename(source.data.replace(/[/\\]+$/, '')) || source.data) : 'your data';
  return { info: { title, ...(data as { classes: string[]; mean: number; std: number }) }, source };
}

/**
 * The classes and normalization to use a model with: its own data's (a model trained with --data, which
 * --dataset cannot change), else the flag's dataset, else the one the file names, else mnist (with a note when
 * the flag differs from the file). `dataset` is the built-in dataset in use, null for your own data.
 */
export function modelData(flag: DatasetName | undefined, model: LoadedModel, modelPath: string,
                          log: (line: string) => void = (line) => process.stderr.write(line + '\n')): { info: DataInfo; dataset: DatasetName | null } {
  if (model.own) {
    if (flag !== undefined) {
      throw new UsageError(`--dataset ${flag}: ${modelPath} was trained on its own data (${model.own.info.classes.length} classes: ` +
        `${model.own.info.classes.slice(0, 5).map((c) => printable(c, 20)).join(', ')}${model.own.info.classes.length > 5 ? ', …' : ''}), not on a built-in dataset; leave out --dataset`);
    }
    return { info: model.own.info, dataset: null };
  }
  if (flag && model.dataset && flag !== model.dataset) {
    log(`mnist-par: note: ${modelPath} was trained on ${model.dataset}, using it with --dataset ${flag}`);
  }
  const dataset = flag ?? model.dataset ?? 'mnist';
  return { info: datasetInfo(dataset), dataset };
}

/** The same float32 for the same pixel as the workers compute: (v/255 − mean) / std through a 256-entry table,
 *  with a built-in dataset's constants or your data's (DataInfo). */
export function normalizeTable(data: DatasetName | Pick<DataInfo, 'mean' | 'std'>): Float32Array {
  const { mean, std } = typeof data === 'string' ? datasetInfo(data) : data;
  return normalizationTable(mean, std);
}

/**
 * Softmax of the model's logits for B images on the main thread, by the reference kernels' cross-entropy
 * (its loss is not used), so the probabilities are the ones eval's workers compute, bit for bit.
 * pixels (B, IMAGE_PIXELS) uint8 → probabilities (B, classes) float32
 */
export function forwardProbs(model: LoadedModel, table: Float32Array, pixels: Uint8Array, B: number): Float32Array {
  const { layout } = model;
  const V = layout.layers[layout.layers.length - 1];
  const acts = activationViews(new Float32Array(activationElements(layout, B)), layout, B);
  for (let i = 0; i < B * INPUT; i++) acts.h[0][i] = table[pixels[i]];
  const logits = forward(jsKernels, layerViews(model.params, layout), acts, layout, new Float32Array(colsElements(layout)), B);
  const probs = new Float32Array(B * V);
  // the targets weigh only the loss, which is dropped
  jsKernels.crossEntropyForward(probs, logits, new Uint8Array(B), B, V, 0);
  return probs;
}

/** Index of the largest value in row r of a (·, V) matrix; the first one on ties, like countCorrect. */
export function argmaxRow(m: ArrayLike<number>, r: number, V: number): number {
  let best = 0;
  for (let v = 1; v < V; v++) if (m[r * V + v] > m[r * V + best]) best = v;
  return best;
}

/** What the model says of one image, and the 28×28 input it saw. */
export interface Classified {
  /** the image after MNIST-style preprocessing: 784 bytes, ink bright on black */
  pixels: Uint8Array;
  /** the most probable class's index */
  digit: number;
  /** its name */
  label: string;
  probabilities: Float32Array;
}

/**
 * One image (a file, or a file's bytes) through predict's path: preprocessing (data/image.ts), the data's
 * normalization, the forward pass and the softmax; `classes` names the outputs. A bad image is a UserError
 * naming the file.
 */
export async function classifyImage(model: LoadedModel, classes: readonly string[], table: Float32Array,
                                    image: string | ImageBytes): Promise<Classified> {
  const pixels = await loadDigitImage(image);
  const probabilities = forwardProbs(model, table, pixels, 1);
  const digit = argmaxRow(probabilities, 0, probabilities.length);
  return { pixels, digit, label: classes[digit], probabilities };
}

/** How predict names class k: "digit 7" (MNIST), "class 7 Sneaker" (Fashion-MNIST), "class cat" (your data). */
export function className(dataset: DatasetName | null, names: readonly string[], k: number): string {
  if (dataset === 'mnist') return `digit ${k}`;
  return dataset === null ? `class ${printable(names[k], 60)}` : `class ${k} ${names[k]}`;
}

/** Up to 10 classes: every probability ("0: 1.20%  1: …", your data's by name); more: the 5 most probable. */
export function probabilityLine(dataset: DatasetName | null, names: readonly string[], probs: Float32Array): string {
  const name = (v: number) => (dataset === null ? printable(names[v], 30) : String(v));
  if (probs.length <= 10) return Array.from(probs, (x, v) => `${name(v)}: ${fmtPct(x, 2)}`).join('  ');
  const top = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b).slice(0, 5);
  return `top 5 of ${probs.length}: ` + top.map((v) => `${name(v)}: ${fmtPct(probs[v], 2)}`).join('  ');
}

/** Classifies every image, printing as it goes; returns the exit code (1 if any image failed). */
export async function predictCommand(opts: PredictOptions): Promise<number> {
  const model = await loadModel(opts.model);
  const { info, dataset } = modelData(opts.dataset, model, opts.model);
  const names = info.classes;
  const table = normalizeTable(info);
  let failed = 0;
  for (const file of opts.images) {
    let c: Classified;
    try {
      c = await classifyImage(model, names, table, file);
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      failed++;
      process.stderr.write(`mnist-par: ${e.message}\n`);
      if (opts.json) process.stdout.write(JSON.stringify({ file, error: e.message }) + '\n');
      continue;
    }
    const { digit, probabilities: probs } = c;
    const p: Prediction = { file, digit, label: c.label, probabilities: Array.from(probs, (x) => Number(x.toPrecision(6))) };
    if (opts.json) {
      process.stdout.write(JSON.stringify(p) + '\n');
    } else {
      process.stdout.write(`${file}: ${className(dataset, names, digit)} (${fmtPct(probs[digit], 2)})\n`);
      process.stdout.write(`  ${probabilityLine(dataset, names, probs)}\n`);
    }
  }
  return failed > 0 ? 1 : 0;
}
