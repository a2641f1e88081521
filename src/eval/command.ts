// `mnist-par eval`: a saved model on the whole test split. The pool computes the softmax of every test image
// data-parallel, exactly as validation does during training; the main thread turns those probabilities into
// the report: loss, accuracy, per-class precision / recall / F1, the confusion matrix (metrics.ts), and two
// PNGs (pictures.ts: the matrix as a heatmap, a grid of the most confident mistakes).
//
// The test set: `--data PATH` (your own, in any layout of data/own.ts, its classes matched to the model's by
// name); else, for a model trained on your own data, the test set it was validated on (its file records where
// that came from); else the built-in dataset's test split.
import { basename, join } from 'node:path';
import { checkDataSources } from '../config.js';
import { Coordinator } from '../coordinator.js';
import type { DataInfo, DatasetName } from '../data/datasets.js';
import { ensureDataset } from '../data/download.js';
import type { Progress } from '../data/folder.js';
import { loadSplit, type Split } from '../data/idx.js';
import { matchClasses, readTestSet, recordedTestSet } from '../data/own.js';
import { printable, UsageError, UserError } from '../errors.js';
import { ensureWritableDir, errorCode, removeEmptyDirs, sweepStaleTemps, writeFileAtomic } from '../fsutil.js';
import type { KernelFamily } from '../kernels/wasm.js';
import type { OptimizerConfig } from '../optim.js';
import { activationElements } from '../mlp.js';
import { EVAL_ACTIVATION_FLOATS } from '../tuning.js';
import { describeModel, type Layout } from '../model.js';
import { loadModel, modelData, type LoadedModel } from '../predict.js';
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
  /** your own test set (a folder of IDX files, a .csv file, a folder of class folders), instead of --dataset */
  data?: string;
  /** progress of reading an image folder */
  progress?: Progress;
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
  checkDataSources({ data: opts.data, dataset: opts.dataset, dataDir: opts.dataDir });
  const model = await loadModel(opts.model);
  const { info, dataset } = modelData(opts.dataset, model, opts.model, opts.log);
  if (dataset === null && opts.dataDir !== undefined) {
    throw new UsageError(`--data-dir ${opts.dataDir}: ${opts.model} was trained on its own data, not on a built-in dataset; ` +
      'leave --data-dir out (its test set is found again), or give another test set with --data PATH');
  }
  // Refuse an unwritable --plots before spending any time on the evaluation; an evaluation that fails leaves
  // none of the folders made for it
  const made = opts.plots === undefined ? [] : await ensureWritableDir(opts.plots, '--plots');
  if (opts.plots !== undefined) await sweepStaleTemps(opts.plots);
  try {
    return await evaluateOn(opts, model, info, dataset);
  } finally {
    await removeEmptyDirs(made);
  }
}

async function evaluateOn(opts: EvalOptions, model: LoadedModel, info: DataInfo, dataset: DatasetName | null): Promise<EvalReport> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const { test, name, line, heldOut } = await testSet(opts, model, info, dataset, log);
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
    model: opts.model, network: describeModel(model.spec), dataset: dataset ?? name, layers: model.layers, count: test.count, loss,
    accuracy: correct / test.count, classes, macro, confusion, plots: [],
  };
  const title = opts.data !== undefined ? basename(opts.data.replace(/[/\\]+$/, '')) || opts.data
    : `${info.title}, ${heldOut ? 'held-out validation set' : 'test set'}`;
  const caption = `${basename(opts.model)} (${describeModel(model.spec)}) · ${test.count.toLocaleString('en-US')} images · ` +
    `accuracy ${fmtPct(report.accuracy, 2)} · loss ${report.loss.toFixed(4)}`;
  const mistakes = confidentMistakes(probs, test.labels, V, ERROR_GRID.cols * ERROR_GRID.rows);
  const wrong = test.count - correct;
  if (opts.plots !== undefined) {
    report.plots = [
      await writePlot(opts.plots, CONFUSION_PNG, await confusionSvg(confusion, info.classes, title, caption)),
      await writePlot(opts.plots, ERRORS_PNG, errorsSvg(mistakes, test.images, info.classes, wrong, title)),
    ];
  }
  if (opts.print !== false) process.stdout.write(opts.json ? JSON.stringify(report) + '\n' : formatReport(report, info.classes, line));
  return report;
}

/**
 * The images to evaluate on, with their labels as the model's class indices: `name` says which set (a built-in
 * dataset's name, or a path), `line` where they were read, for the report.
 */
async function testSet(opts: EvalOptions, model: LoadedModel, info: DataInfo, dataset: DatasetName | null,
                       log: (line: string) => void): Promise<{ test: Split; name: string; line: string; heldOut: boolean }> {
  const own = (from: string, count: number) => `data     ${from}, ${count} images`;
  if (opts.data !== undefined) {
    const set = await readTestSet(opts.data, '--data', opts.progress);
    const labels = matchClasses(set, info.classes, `--data ${opts.data}`);
    return { test: { images: set.images, labels, count: set.count, height: 28, width: 28 }, name: opts.data, line: own(set.name, set.count), heldOut: false };
  }
  if (dataset === null) {
    const source = model.own!.source;
    if (source === null) throw new UsageError(`${opts.model}: the file does not say which data it was trained on; give the test set with --data PATH`);
    try {
      const { split, name, heldOut } = await recordedTestSet(source, info.classes, opts.progress);
      return { test: split, name: source.test !== '' ? source.test : source.data, line: own(name, split.count), heldOut };
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      throw new UserError(`${opts.model} was trained on ${source.data}${source.test ? ` with --test ${source.test}` : ''}, whose test set ` +
        `cannot be read now (${e.message}); give a test set with --data PATH`);
    }
  }
  const dataDir = opts.dataDir ?? `datasets/${dataset}`;
  if (opts.download) await ensureDataset(dataset, dataDir, { log });
  const test = await loadSplit(dataDir, 'test', dataset);
  return { test, name: dataset, line: `dataset  ${dataset} test split, ${test.count} images from ${dataDir}`, heldOut: false };
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

/** Classes beyond which the text report lists the largest confusions instead of the whole matrix. */
const TEXT_MATRIX_CLASSES = 20;

/**
 * The report as aligned tables: summary, per-class metrics, and the confusion matrix (rows true, columns
 * predicted), or for more than TEXT_MATRIX_CLASSES classes its ten largest off-diagonal cells. `source` is
 * the line that says where the images came from.
 */
export function formatReport(r: EvalReport, names: readonly string[], source: string): string {
  // Classes named by numbers (MNIST's digits, your data's label values) go by their names; others by
  // "index name", the index heading the matrix's columns.
  const numbered = names.every((n) => /^\d+$/.test(n));
  const rowName = (c: number): string => (numbered || names[c] === String(c) ? names[c] : `${c} ${printable(names[c], 40)}`);
  const V = r.confusion.length;
  const lines: string[] = [
    `model    ${r.model} (${r.network})`,
    source,
    `test loss ${r.loss.toFixed(4)}, accuracy ${fmtPct(r.accuracy, 2)} (${Math.round(r.accuracy * r.count)} of ${r.count})`,
    '',
  ];
  const w0 = Math.max(9, ...Array.from({ length: V }, (_, c) => rowName(c).length));
  const row = (cells: string[]): string => cells[0].padEnd(w0) + cells.slice(1).map((s) => s.padStart(11)).join('');
  lines.push(row(['class', 'precision', 'recall', 'F1', 'support']));
  r.classes.forEach((c, i) => lines.push(row([rowName(i), fmtPct(c.precision, 2), fmtPct(c.recall, 2), fmtPct(c.f1, 2), String(c.support)])));
  lines.push(row(['macro avg', fmtPct(r.macro.precision, 2), fmtPct(r.macro.recall, 2), fmtPct(r.macro.f1, 2), String(r.count)]), '');

  if (V <= TEXT_MATRIX_CLASSES) {
    const w = Math.max(5, ...r.confusion.flat().map((x) => String(x).length + 1));
    lines.push('confusion matrix (rows: true class, columns: predicted class)');
    lines.push(' '.repeat(w0) + Array.from({ length: V }, (_, c) => (numbered ? names[c] : String(c)).padStart(w)).join(''));
    r.confusion.forEach((cells, t) => lines.push(rowName(t).padEnd(w0) + cells.map((x) => String(x).padStart(w)).join('')));
  } else {
    const cells = r.confusion.flatMap((cells, t) => cells.map((n, p) => ({ t, p, n }))).filter((c) => c.t !== c.p && c.n > 0)
      .sort((a, b) => b.n - a.n || a.t - b.t || a.p - b.p).slice(0, 10);
    lines.push(`the ${V}×${V} confusion matrix is in ${CONFUSION_PNG} and --json; its largest mistakes (true → predicted: images):`);
    if (cells.length === 0) lines.push('  none: every image is classified correctly');
    for (const c of cells) lines.push(`  ${rowName(c.t)} → ${rowName(c.p)}: ${c.n}`);
  }
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
