// `mnist-par eval`: a saved model on the whole test split. The pool computes the softmax of every test image
// data-parallel, exactly as validation does during training; the main thread turns those probabilities into
// the report: loss, accuracy, per-class precision / recall / F1, the confusion matrix (metrics.ts), and two
// PNGs (pictures.ts: the matrix as a heatmap, a grid of the most confident mistakes).
import { basename, join } from 'node:path';
import { Coordinator } from '../coordinator.js';
import { DATASETS, type DatasetName } from '../data/datasets.js';
import { ensureDataset } from '../data/download.js';
import { loadSplit } from '../data/idx.js';
import { UsageError, UserError } from '../errors.js';
import { ensureWritableDir, errorCode, removeEmptyDirs, sweepStaleTemps, writeFileAtomic } from '../fsutil.js';
import type { KernelFamily } from '../kernels/wasm.js';
import type { OptimizerConfig } from '../optim.js';
import { activationElements } from '../mlp.js';
import { EVAL_ACTIVATION_FLOATS } from '../tuning.js';
import { describeModel, type Layout } from '../model.js';
import { chooseDataset, loadModel, type LoadedModel } from '../predict.js';
import { fmtPct } from '../ui/format.js';
import { svgToPng } from '../ui/svg.js';
import { classStats, confidentMistakes, confusionMatrix, type EvalReport } from './metrics.js';
import { CONFUSION_PNG, confusionSvg, ERROR_GRID, ERRORS_PNG, errorsSvg } from './pictures.js';

export interface EvalOptions {
  model: string;
  /** default: the dataset named in the model's metadata, else mnist */
  dataset?: DatasetName;
  /** default: datasets/<dataset> */
  dataDir?: string;
  threads: number;
  kernels: 'auto' | KernelFamily;
  /** folder for confusion_matrix.png and errors.png; none: no pictures */
  plots?: string;
  json: boolean;
  download: boolean;
  /** print the report (tables, or JSON with `json`); the library API does not */
  print?: boolean;
  /** where progress lines (a download) and notes go; default stderr */
  log?: (line: string) => void;
}

/** Evaluates, prints the report (tables, or one JSON object with --json), writes the plots; returns the report. */
export async function evalCommand(opts: EvalOptions): Promise<EvalReport> {
  const model = await loadModel(opts.model);
  const dataset = chooseDataset(opts.dataset, model, opts.model, opts.log);
  // Refuse an unwritable --plots before spending any time on the evaluation; an evaluation that fails leaves
  // none of the folders made for it
  const made = opts.plots === undefined ? [] : await ensureWritableDir(opts.plots, '--plots');
  if (opts.plots !== undefined) await sweepStaleTemps(opts.plots);
  try {
    return await evaluate(opts, model, dataset);
  } finally {
    await removeEmptyDirs(made);
  }
}

async function evaluate(opts: EvalOptions, model: LoadedModel, dataset: DatasetName): Promise<EvalReport> {
  const info = DATASETS[dataset];
  const dataDir = opts.dataDir ?? `datasets/${dataset}`;
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  if (opts.download) await ensureDataset(dataset, dataDir, { log });
  const test = await loadSplit(dataDir, 'test', dataset);
  const pixels = test.height * test.width;
  const V = model.layers[model.layers.length - 1];

  // Built as a variable, not a literal in the call: the arena spec may grow fields that evaluation leaves at 0.
  const spec = {
    model: model.spec, threads: opts.threads, batchRows: 0, evalRows: evalRows(model.layout, opts.threads),
    optimizerStates: 0, stepsPerEpoch: 0, trainCount: 0, testCount: test.count, pixels,
  };
  const optimizer: OptimizerConfig = {
    optimizer: 'sgd', momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8,
  };
  let coord: Coordinator;
  try {
    coord = new Coordinator({ spec, optimizer, kernels: opts.kernels, mean: info.mean, std: info.std, labelSmoothing: 0 });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new UsageError(`--threads ${opts.threads}: evaluating ${describeModel(model.spec)} on that many threads needs more ` +
      `shared memory than fits (${e.message}); give fewer --threads`);
  }
  let loss: number;
  let probs: Float32Array;
  try {
    coord.views.testX.set(test.images.subarray(0, test.count * pixels));
    coord.views.testY.set(test.labels.subarray(0, test.count));
    coord.views.params.set(model.params);
    await coord.ready();
    loss = (await coord.evaluate()).loss;
    probs = coord.views.testProbs.slice();
  } finally {
    await coord.close();
  }

  const confusion = confusionMatrix(probs, test.labels, V);
  const { classes, macro } = classStats(confusion, info.classes);
  const correct = confusion.reduce((s, row, t) => s + row[t], 0);
  const report: EvalReport = {
    model: opts.model, network: describeModel(model.spec), dataset, layers: model.layers, count: test.count, loss,
    accuracy: correct / test.count, classes, macro, confusion, plots: [],
  };
  const title = `${info.title}, test set`;
  const caption = `${basename(opts.model)} (${describeModel(model.spec)}) · ${test.count.toLocaleString('en-US')} images · ` +
    `accuracy ${fmtPct(report.accuracy, 2)} · loss ${report.loss.toFixed(4)}`;
  const mistakes = confidentMistakes(probs, test.labels, V, ERROR_GRID.cols * ERROR_GRID.rows);
  const wrong = test.count - correct;
  if (opts.plots !== undefined) {
    report.plots = [
      await writePlot(opts.plots, CONFUSION_PNG, confusionSvg(confusion, info.classes, title, caption)),
      await writePlot(opts.plots, ERRORS_PNG, errorsSvg(mistakes, test.images, info.classes, wrong, title)),
    ];
  }
  if (opts.print !== false) process.stdout.write(opts.json ? JSON.stringify(report) + '\n' : formatReport(report, info.classes, dataDir));
  return report;
}

/** Images one evaluation chunk holds: 256, fewer where a wide network's activations for that many images on
 *  every thread would pass EVAL_ACTIVATION_FLOATS (a cnn with many channels), never fewer than 16. Each image
 *  is computed on its own, so the chunk size changes no prediction. */
function evalRows(layout: Layout, threads: number): number {
  const perImage = activationElements(layout, 1);
  return Math.max(16, Math.min(256, Math.floor(EVAL_ACTIVATION_FLOATS / (threads * perImage))));
}

// ---------------------------------------------------------------------------------------------------------
// Text

/** The report as aligned tables: summary, per-class metrics, confusion matrix (rows true, columns predicted). */
export function formatReport(r: EvalReport, names: readonly string[], dataDir: string): string {
  // MNIST's class names are the digits themselves; other datasets get "index name".
  const rowName = (c: number): string => (names[c] === String(c) ? names[c] : `${c} ${names[c]}`);
  const V = r.confusion.length;
  const lines: string[] = [
    `model    ${r.model} (${r.network})`,
    `dataset  ${r.dataset} test split, ${r.count} images from ${dataDir}`,
    `test loss ${r.loss.toFixed(4)}, accuracy ${fmtPct(r.accuracy, 2)} (${Math.round(r.accuracy * r.count)} of ${r.count})`,
    '',
  ];
  const w0 = Math.max(9, ...Array.from({ length: V }, (_, c) => rowName(c).length));
  const row = (cells: string[]): string => cells[0].padEnd(w0) + cells.slice(1).map((s) => s.padStart(11)).join('');
  lines.push(row(['class', 'precision', 'recall', 'F1', 'support']));
  r.classes.forEach((c, i) => lines.push(row([rowName(i), fmtPct(c.precision, 2), fmtPct(c.recall, 2), fmtPct(c.f1, 2), String(c.support)])));
  lines.push(row(['macro avg', fmtPct(r.macro.precision, 2), fmtPct(r.macro.recall, 2), fmtPct(r.macro.f1, 2), String(r.count)]), '');

  const w = Math.max(5, ...r.confusion.flat().map((x) => String(x).length + 1));
  lines.push('confusion matrix (rows: true class, columns: predicted class)');
  lines.push(' '.repeat(w0) + Array.from({ length: V }, (_, c) => String(c).padStart(w)).join(''));
  r.confusion.forEach((cells, t) => lines.push(rowName(t).padEnd(w0) + cells.map((x) => String(x).padStart(w)).join('')));
  lines.push('', `wrote ${r.plots.join(', ')}`, '');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// Files

async function writePlot(dir: string, file: string, svg: string): Promise<string> {
  const path = join(dir, file);
  const png = await svgToPng(svg);
  try {
    await writeFileAtomic(path, png);
  } catch (e) {
    if (e instanceof UserError) throw e; // a full disk says so itself
    throw new UserError(`--plots ${dir}: cannot write ${file} there (${errorCode(e)}); choose a writable folder with --plots <dir>`);
  }
  return path;
}
