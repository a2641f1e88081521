// `mnist-par eval`, `predict`, `summary` and `serve`: flags → validated options → the command's function.
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { DATASET_NAMES, DEFAULTS, INT_LIMITS, KERNEL_CHOICES, MODEL_KINDS, parseChoice, parseIntFlag, parsePath, parseValue,
  type Config } from './config.js';
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

  program.command('summary')
    .description('print the network layer by layer: output shapes, parameters, FLOPs, and the shared memory a run of it takes')
    .option('--model <file|kind>', `mlp or cnn (with --hidden, --channels), or a model.safetensors or run folder (default: ${DEFAULTS.model})`)
    .option('--hidden <widths>', 'hidden linear layer widths, comma-separated (default: 128,256,512,128 for the mlp, 128 for the cnn)')
    .option('--channels <c1,c2>', `the cnn's convolution output channels (default: ${DEFAULTS.channels.join(',')})`)
    .option('--batch-size <n>', `samples per optimizer step, for the shared memory (default: ${DEFAULTS.batchSize})`)
    .option('--threads <n>', `worker threads, for the shared memory (default: ${DEFAULTS.threads}, this machine's core count)`)
    .option('--optimizer <name>', `sgd, adam or adamw: its moments live in the shared memory (default: ${DEFAULTS.optimizer})`)
    .option('--json', 'print one JSON object instead of the table')
    .exitOverride()
    .action(async (o: Record<string, unknown>) => {
      const given: Record<string, unknown> = {};
      for (const key of ['hidden', 'channels', 'batchSize', 'threads', 'optimizer'] as const satisfies (keyof Config)[]) {
        if (o[key] !== undefined) given[key] = parseValue(key, String(o[key]));
      }
      const model = o.model === undefined ? DEFAULTS.model : String(o.model);
      let file: string | undefined;
      if ((MODEL_KINDS as readonly string[]).includes(model)) given.model = model;
      else file = await modelFlag(model);
      const { summaryCommand } = await import('./summary-command.js');
      await summaryCommand({ file, given, json: o.json === true });
      process.exitCode = 0;
    });

  program.command('serve')
    .description('serve a local web page to draw digits on and see what the model says, with its summary, metrics and charts')
    .option('--model <file>', 'model.safetensors written by train, or its run folder (default: the newest run in models/)')
    .option('--port <n>', 'the port to listen on (default: a free one, printed at start)')
    .option('--host <address>', 'the address to listen on; another than 127.0.0.1, localhost or ::1 makes the page reachable by others (default: 127.0.0.1)')
    .option('--plots <dir>', 'the charts to show (default: plots/run-N for a model in models/run-N, else the model\'s own folder)')
    .exitOverride()
    .action(async (o: Record<string, unknown>) => {
      const model = await modelFlag(o.model);
      const opts = {
        model,
        plots: o.plots === undefined ? await runPlots(model) : pathFlag('--plots', o.plots),
        port: o.port === undefined ? 0 : parseIntFlag('--port', String(o.port), 0, 65535),
        // a bracketed IPv6 address, as a URL writes it, is the address
        host: o.host === undefined ? '127.0.0.1' : parsePath('--host', String(o.host), 'an address').replace(/^\[(.*)\]$/, '$1'),
      };
      const { serveCommand } = await import('./serve/command.js');
      process.exitCode = await serveCommand(opts);
    });
}

/**
 * The charts of a model's run: for models/run-N, plots/run-N beside that models/ folder (a run puts them
 * there); else the model's own folder, where a run given --out puts them.
 */
async function runPlots(model: string): Promise<string> {
  const { PLOTS_ROOT, realFolder } = await import('./runs.js');
  const dir = realFolder(dirname(resolve(model)));
  return /^run-\d+$/.test(basename(dir)) ? join(dirname(dirname(dir)), PLOTS_ROOT, basename(dir)) : dirname(model);
}
