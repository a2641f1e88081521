// `mnist-par eval` and `mnist-par predict`: flags → validated options → evalCommand / predictCommand.
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { DATASET_NAMES, INT_LIMITS, KERNEL_CHOICES, parseChoice, parseIntFlag, parsePath } from './config.js';
import type { DatasetName } from './data/datasets.js';
import { terminalProgress } from './ui/progress.js';

const datasetFlag = (v: unknown): DatasetName | undefined =>
  v === undefined ? undefined : parseChoice('--dataset', String(v), DATASET_NAMES);

const pathFlag = (flag: string, v: unknown): string => parsePath(flag, String(v));

/** --model: a weights file, or a run folder holding model.safetensors; left out, the newest run's. */
async function modelFlag(v: unknown): Promise<string> {
  const { newestRunFile } = await import('./runs.js');
  if (v === undefined) return newestRunFile(MODEL_FILE, '--model');
  const path = pathFlag('--model', v);
  return isDirectory(path) ? join(path, MODEL_FILE) : path;
}

/** eval's pictures of a model in models/run-N go beside that run's charts, plots/run-N. */
async function defaultPlots(model: string): Promise<string> {
  const { PLOTS_ROOT, realFolder } = await import('./runs.js');
  // through models/latest too: the folder the link names now
  const run = basename(realFolder(dirname(resolve(model))));
  return /^run-\d+$/.test(run) ? join(PLOTS_ROOT, run) : PLOTS_ROOT;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

const MODEL_FILE = 'model.safetensors';

export function addModelCommands(program: Command): void {
  program.command('eval')
    .description('evaluate a saved model on the test set: loss, accuracy, per-class precision/recall/F1, confusion matrix and plots')
    .option('--model <file>', 'model.safetensors written by train, or its run folder (default: the newest run in models/)')
    .option('--dataset <name>', 'mnist or fashion-mnist (default: the dataset the model was trained on)')
    .option('--data-dir <dir>', 'folder with the four IDX .gz files (default: datasets/<dataset>)')
    .option('--data <path>', 'your own test set instead of --dataset: a folder of IDX files (its test split), a Kaggle-layout .csv file or a folder of class folders of images (default for a model trained on your data: the test set it was validated on)')
    .option('--threads <n>', `worker threads in the pool (default: ${availableParallelism()}, this machine's core count)`)
    .option('--kernels <family>', `compute kernels: ${KERNEL_CHOICES.join(', ')} (default: auto)`)
    .option('--plots <dir>', 'folder for confusion_matrix.png and errors.png (default: plots/run-N for a model in models/run-N, else plots)')
    .option('--json', 'print one JSON object instead of tables')
    .option('--no-download', 'never download: fail if dataset files are missing')
    .exitOverride()
    .action(async (o: Record<string, unknown>) => {
      const dataset = datasetFlag(o.dataset);
      const model = await modelFlag(o.model);
      const opts = {
        model,
        dataset,
        dataDir: o.dataDir === undefined ? undefined : pathFlag('--data-dir', o.dataDir),
        data: o.data === undefined ? undefined : pathFlag('--data', o.data),
        progress: o.json === true ? undefined : terminalProgress('reading images'),
        threads: o.threads === undefined ? availableParallelism() : parseIntFlag('--threads', String(o.threads), ...INT_LIMITS.threads),
        kernels: parseChoice('--kernels', String(o.kernels ?? 'auto'), KERNEL_CHOICES),
        plots: o.plots === undefined ? await defaultPlots(model) : pathFlag('--plots', o.plots),
        json: o.json === true,
        download: o.download !== false,
      };
      const { evalCommand } = await import('./eval/command.js');
      await evalCommand(opts);
      process.exitCode = 0;
    });

  program.command('predict')
    .description('classify image files of single digits (PNG, JPEG, WebP, GIF, TIFF) with a saved model')
    .option('--model <file>', 'model.safetensors written by train, or its run folder (default: the newest run in models/)')
    .option('--dataset <name>', 'mnist or fashion-mnist: normalization and class names of a model of a built-in dataset (default: the model\'s)')
    .option('--json', 'print one JSON line per image')
    .argument('<images...>', 'image files')
    .exitOverride()
    .action(async (images: string[], o: Record<string, unknown>) => {
      const opts = { model: await modelFlag(o.model), dataset: datasetFlag(o.dataset), json: o.json === true, images };
      const { predictCommand } = await import('./predict.js');
      process.exitCode = await predictCommand(opts);
    });
}
