// The library: what a Node program gets from `import { train, loadModel } from 'mnist-par'`. The same engine
// as the command line, with the same option names as the --config JSON, checked the same way (a bad value
// rejects with the CLI's one-line message), and silent unless asked to print.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { checkChoice, checkInt, configFields, flagName, parsePath, INT_LIMITS, KERNEL_CHOICES, validate, type Config } from './config.js';
import type { DatasetName } from './data/datasets.js';
import { DATASET_NAMES } from './data/datasets.js';
import { printable, UsageError } from './errors.js';
import { evalCommand } from './eval/command.js';
import type { EvalReport } from './eval/metrics.js';
import type { KernelFamily } from './kernels/index.js';
import type { EpochRecord, Snapshot, StopRequest } from './metrics.js';
import { describeModel, INPUT, type ModelKind } from './model.js';
import { argmaxRow, classifyImage, forwardProbs, loadModel as readModel, modelData, normalizeTable } from './predict.js';
import { datasetSizes, modelSummary, specFields, type ModelSummary } from './summary.js';
import { train as runTrain } from './train.js';
import { summaryLines } from './ui/format.js';
import { createReporter, type Reporter } from './ui/reporter.js';

export type { Config, EpochRecord, EvalReport, ModelSummary, Snapshot };

/**
 * An AbortSignal (Node's, which is the web's), described by what train() uses of it, so that these
 * declarations type-check without @types/node or the DOM library; train() checks that it is a real one.
 */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  throwIfAborted(): void;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/** A field as a --config file may give it: its value, or (for a number, a flag or a list) its flag's text. */
type AsGiven<T> = T extends string ? T : T | string;

/** The --config fields in camelCase, each with its value or its flag's text ("64,32"); --no-download as noDownload. */
export type ConfigFields = { [K in Exclude<keyof Config, 'dashboard' | 'json'>]?: AsGiven<Config[K]> } & {
  /** --no-download: the same as `download: false` */
  noDownload?: AsGiven<boolean>;
};

/** The configuration fields (as in a --config file), plus what only a program can pass. */
export interface TrainOptions extends ConfigFields {
  /** after every epoch, with its record (losses, accuracies, learning rate, seconds) */
  onEpoch?: (epoch: EpochRecord) => void;
  /** after every optimizer step; cheap calls only (it runs on the coordinator between steps) */
  onStep?: (snapshot: Snapshot) => void;
  /** stops after the current step and saves, as Ctrl-C does; the promise then resolves with stoppedBy 'abort' */
  signal?: AbortSignalLike;
  /** 'silent' (the default) prints nothing; 'plain' and 'json' print what the CLI prints in a pipe */
  reporter?: 'plain' | 'json' | 'silent';
}

export interface TrainResult {
  /** the trained model (model.safetensors of the run) */
  model: Model;
  /** one record per epoch, as in epoch_metrics.csv */
  metrics: EpochRecord[];
  /** every file written */
  files: string[];
  /** the run's folder (models/run-N unless `out` was given) */
  out: string;
  stoppedBy: 'completed' | 'early' | StopRequest;
  /** one sentence on why the run ended */
  reason: string;
  seconds: number;
}

/** Trains a model; rejects with a one-line error for a bad option, missing data or a failed worker. */
export async function train(options: TrainOptions = {}): Promise<TrainResult> {
  const { onEpoch, onStep, signal, reporter: mode = 'silent', ...fields } = options;
  if (!['plain', 'json', 'silent'].includes(mode)) {
    throw new UsageError(`reporter: expected one of plain, json, silent, got ${JSON.stringify(mode)}`);
  }
  for (const [name, f] of [['onEpoch', onEpoch], ['onStep', onStep]] as const) {
    if (f !== undefined && typeof f !== 'function') throw new UsageError(`${name}: expected a function, got ${typeof f}`);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new UsageError('signal: expected an AbortSignal');
  const given = configFields(Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)), false);
  const cfg = validate({ ...given, dashboard: false, json: mode === 'json' });
  signal?.throwIfAborted();
  const stop: { how: StopRequest | null } = { how: null };
  const onAbort = () => {
    stop.how ??= 'abort';
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const printer = mode === 'silent' ? null : createReporter({ mode, logEvery: cfg.logEvery, onInterrupt: (how) => { stop.how ??= how; } });
  const reporter: Reporter = {
    start: (s) => printer?.start(s),
    step: (s) => {
      printer?.step(s);
      onStep?.(s);
    },
    epoch: (s, e) => {
      printer?.epoch(s, e);
      onEpoch?.(e);
    },
    finish: (s, lines) => printer?.finish(s, lines),
    close: () => printer?.close(),
  };
  const quiet = () => {};
  const note = mode === 'silent' ? quiet : (line: string) => process.stderr.write(`mnist-par: note: ${line}\n`);
  const log = mode === 'silent' ? quiet : (line: string) => process.stderr.write(`${line}\n`);
  try {
    const run = await runTrain(cfg, reporter, stop, { note, log, signal });
    // what the command line prints at the end, and how to continue an aborted run
    if (printer) reporter.finish(run.snapshot, summaryLines(run));
    return {
      model: await loadModel(join(run.out, 'model.safetensors')), metrics: run.epochs, files: run.files, out: run.out,
      stoppedBy: run.stoppedBy, reason: run.reason, seconds: run.seconds,
    };
  } finally {
    signal?.removeEventListener('abort', onAbort);
    reporter.close();
  }
}

export interface Prediction {
  /** the index of the class with the highest probability (the digit, for MNIST) */
  digit: number;
  /** its name ("7", "Sneaker" on Fashion-MNIST, your data's class name) */
  label: string;
  /** softmax over the classes */
  probabilities: Float32Array;
}

export interface EvaluateOptions {
  /** default: the dataset the model was trained on */
  dataset?: DatasetName;
  /** default: datasets/<dataset> */
  dataDir?: string;
  /** your own test set instead of `dataset` (a folder of IDX files, a Kaggle-layout .csv file or a folder of
   *  class folders); default for a model trained on your own data: the test set it was validated on */
  data?: string;
  /** worker threads; default 1 */
  threads?: number;
  kernels?: 'auto' | KernelFamily;
  /** download missing dataset files (default true) */
  download?: boolean;
  /** also write confusion_matrix.png and errors.png into this folder */
  plots?: string;
}

export interface Model {
  /** the file it was read from */
  readonly path: string;
  /** which network: 'mlp' or 'cnn' */
  readonly kind: ModelKind;
  /** the network in one line, e.g. "mlp 784→128→256→512→128→10" or "cnn 1→16→32 conv5 pool2 · 512→128→10" */
  readonly network: string;
  /** the linear layers' widths, input to output: [784, 128, 256, 512, 128, 10] for the default mlp,
   *  [512, 128, 10] for the default cnn */
  readonly layers: readonly number[];
  /** the built-in dataset it was trained on (its normalization and class names are used), or null for a
   *  model trained on your own data (`data`), which brings its own */
  readonly dataset: DatasetName | null;
  /** the class names, in the order of the network's outputs (the probabilities) */
  readonly classes: readonly string[];
  /**
   * Classifies one image: a file (PNG, JPEG, … any size or polarity: preprocessed as `mnist-par predict`
   * does), or 784 pixels of a 28×28 MNIST-style image (white ink on black), as bytes 0..255 or floats 0..1.
   * The label is the class's name.
   */
  predict(image: string | Uint8Array | Float32Array): Promise<Prediction>;
  /** Loss, accuracy, per-class precision/recall/F1 and the confusion matrix on the test split (or `data`). */
  evaluate(options?: EvaluateOptions): Promise<EvalReport>;
  /**
   * The network layer by layer, as `mnist-par summary --json` prints it: output shapes, parameters, FLOPs per
   * sample, and the shared memory a training run of it takes with these settings (default: train's).
   */
  summary(options?: SummaryOptions): ModelSummary;
}

export interface SummaryOptions {
  batchSize?: number;
  threads?: number;
  optimizer?: Config['optimizer'];
}

/**
 * Reads a model.safetensors written by training (or a PyTorch state dict of the same net), or the one in a
 * run's folder.
 */
export async function loadModel(file: string): Promise<Model> {
  if (typeof file !== 'string' || file === '') throw new UsageError('loadModel: expected the path of a .safetensors file or of a run folder');
  const path = isDirectory(file) ? join(file, 'model.safetensors') : file;
  const loaded = await readModel(path);
  const { info, dataset } = modelData(undefined, loaded, path);
  const table = normalizeTable(info);
  const pixels = INPUT;
  return {
    path, kind: loaded.spec.kind, network: describeModel(loaded.spec), layers: loaded.layers, dataset, classes: info.classes,
    async predict(image) {
      if (typeof image === 'string') {
        const { digit, label, probabilities } = await classifyImage(loaded, info.classes, table, image);
        return { digit, label, probabilities };
      }
      let bytes: Uint8Array;
      if (image instanceof Uint8Array || image instanceof Float32Array) {
        if (image.length !== pixels) throw new UsageError(`predict: expected ${pixels} pixels (28×28), got ${image.length}`);
        bytes = image instanceof Uint8Array ? image
          : Uint8Array.from(image, (x) => Math.round(255 * Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0))));
      } else {
        throw new UsageError('predict: expected an image file path, or 784 pixels as a Uint8Array or Float32Array');
      }
      const probabilities = forwardProbs(loaded, table, bytes, 1);
      const digit = argmaxRow(probabilities, 0, probabilities.length);
      return { digit, label: info.classes[digit], probabilities };
    },
    summary(o = {}) {
      const given = Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined));
      for (const key of Object.keys(given)) {
        if (!['batchSize', 'threads', 'optimizer'].includes(key)) {
          throw new UsageError(`summary: unknown option '${printable(key)}' (known: batchSize, threads, optimizer)`);
        }
      }
      const cfg = validate({ ...configFields(given), ...specFields(loaded.spec), dataset: dataset ?? undefined });
      return modelSummary(cfg, { ...datasetSizes(cfg), classes: info.classes.length });
    },
    async evaluate(o = {}) {
      // checked as eval's flags are, and named as train()'s options are: by their flags
      const threads = o.threads === undefined ? 1 : checkInt('--threads', o.threads, INT_LIMITS.threads);
      const kernels = o.kernels === undefined ? 'auto' : checkChoice('--kernels', o.kernels, KERNEL_CHOICES);
      const ds = o.dataset === undefined ? undefined : checkChoice('--dataset', o.dataset, DATASET_NAMES);
      for (const [name, v] of [['dataDir', o.dataDir], ['plots', o.plots], ['data', o.data]] as const) {
        if (v === undefined) continue;
        if (typeof v !== 'string') throw new UsageError(`${flagName(name)}: expected a path, got ${JSON.stringify(v)}`);
        parsePath(flagName(name), v);
      }
      if (o.download !== undefined && typeof o.download !== 'boolean') {
        throw new UsageError(`--download: expected true or false, got ${JSON.stringify(o.download)}`);
      }
      return evalCommand({
        model: path, dataset: ds, dataDir: o.dataDir, data: o.data, threads, kernels, plots: o.plots, json: false, download: o.download ?? true,
        print: false, log: () => {},
      });
    },
  };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
