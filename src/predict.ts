// `mnist-par predict`: classifies image files with a saved model. Each image goes through the MNIST-style
// preprocessing of data/image.ts, the dataset's normalization, and one forward pass on the main thread with
// the reference kernels (a handful of images needs no pool).
import { DATASETS, isDatasetName, normalizationTable, type DatasetName } from './data/datasets.js';
import { loadDigitImage, type ImageBytes } from './data/image.js';
import { UserError } from './errors.js';
import { jsKernels } from './kernels/wasm.js';
import { activationElements, activationViews, layerViews } from './mlp.js';
import { INPUT, type Layout, type ModelSpec } from './model.js';
import { colsElements, forward } from './network.js';
import { paramsFromTensors, readSafetensors } from './safetensors.js';
import { fmtPct } from './ui/format.js';

export interface PredictOptions {
  model: string;
  images: string[];
  json: boolean;
  /** normalization and class names; default: the dataset named in the model's metadata, else mnist */
  dataset?: DatasetName;
}

export interface Prediction {
  file: string;
  /** the predicted class index (a digit for MNIST) */
  digit: number;
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
}

/** Reads a safetensors model; every problem (missing, truncated, wrong shapes) is a one-line UserError. */
export async function loadModel(path: string): Promise<LoadedModel> {
  const file = await readSafetensors(path);
  const { spec, layout, layers, params } = paramsFromTensors(file.tensors, path);
  const recorded = file.metadata.dataset;
  return { spec, layers, layout, params, dataset: recorded && isDatasetName(recorded) ? recorded : undefined };
}

/** The dataset to use: the flag if given, else the model's own, else mnist; warns (stderr) when they differ. */
export function chooseDataset(flag: DatasetName | undefined, model: LoadedModel, modelPath: string,
                              log: (line: string) => void = (line) => process.stderr.write(line + '\n')): DatasetName {
  if (flag && model.dataset && flag !== model.dataset) {
    log(`mnist-par: note: ${modelPath} was trained on ${model.dataset}, using it with --dataset ${flag}`);
  }
  return flag ?? model.dataset ?? 'mnist';
}

/** The same float32 for the same pixel as the workers compute: (v/255 − mean) / std through a 256-entry table. */
export function normalizeTable(dataset: DatasetName): Float32Array {
  const { mean, std } = DATASETS[dataset];
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
  digit: number;
  label: string;
  probabilities: Float32Array;
}

/**
 * One image (a file, or a file's bytes) through predict's path: preprocessing (data/image.ts), the dataset's
 * normalization, the forward pass and the softmax. A bad image is a UserError naming the file.
 */
export async function classifyImage(model: LoadedModel, dataset: DatasetName, table: Float32Array,
                                    image: string | ImageBytes): Promise<Classified> {
  const pixels = await loadDigitImage(image);
  const probabilities = forwardProbs(model, table, pixels, 1);
  const digit = argmaxRow(probabilities, 0, probabilities.length);
  return { pixels, digit, label: DATASETS[dataset].classes[digit], probabilities };
}

/** Classifies every image, printing as it goes; returns the exit code (1 if any image failed). */
export async function predictCommand(opts: PredictOptions): Promise<number> {
  const model = await loadModel(opts.model);
  const dataset = chooseDataset(opts.dataset, model, opts.model);
  const names = DATASETS[dataset].classes;
  const table = normalizeTable(dataset);
  let failed = 0;
  for (const file of opts.images) {
    let c: Classified;
    try {
      c = await classifyImage(model, dataset, table, file);
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
      const what = dataset === 'mnist' ? `digit ${digit}` : `class ${digit} ${names[digit]}`;
      process.stdout.write(`${file}: ${what} (${fmtPct(probs[digit], 2)})\n`);
      process.stdout.write('  ' + Array.from(probs, (x, v) => `${v}: ${fmtPct(x, 2)}`).join('  ') + '\n');
    }
  }
  return failed > 0 ? 1 : 0;
}
