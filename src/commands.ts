// `mnist-par eval` and `mnist-par predict`: flags → validated options → evalCommand / predictCommand.
import { availableParallelism } from 'node:os';
import type { Command } from 'commander';
import { DATASET_NAMES, isDatasetName, type DatasetName } from './data/datasets.js';
import { UsageError } from './errors.js';
import type { KernelFamily } from './kernels/wasm.js';

const KERNELS = ['auto', 'native', 'relaxed', 'simd', 'js'] as const;

function datasetFlag(v: unknown): DatasetName | undefined {
  if (v === undefined) return undefined;
  const s = String(v);
  if (!isDatasetName(s)) throw new UsageError(`--dataset: expected one of ${DATASET_NAMES.join(', ')}, got '${s}'`);
  return s;
}

function pathFlag(flag: string, v: unknown): string {
  const s = String(v);
  if (s.trim() === '') throw new UsageError(`${flag}: expected a path, got an empty string`);
  return s;
}

function threadsFlag(v: unknown): number {
  const s = String(v).trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new UsageError(`--threads: expected an integer in 1..256, got '${String(v)}'`);
  return n;
}

function kernelsFlag(v: unknown): 'auto' | KernelFamily {
  const s = String(v);
  if (!(KERNELS as readonly string[]).includes(s)) throw new UsageError(`--kernels: expected one of ${KERNELS.join(', ')}, got '${s}'`);
  return s as 'auto' | KernelFamily;
}

export function addModelCommands(program: Command): void {
  program.command('eval')
    .description('evaluate a saved model on the test set: loss, accuracy, per-class precision/recall/F1, confusion matrix and plots')
    .requiredOption('--model <file>', 'model.safetensors written by train')
    .option('--dataset <name>', 'mnist or fashion-mnist (default: the dataset the model was trained on)')
    .option('--data-dir <dir>', 'folder with the four IDX .gz files (default: datasets/<dataset>)')
    .option('--threads <n>', `worker threads in the pool (default: ${availableParallelism()}, this machine's core count)`)
    .option('--kernels <family>', 'compute kernels: auto, native, relaxed, simd, js (default: auto)')
    .option('--plots <dir>', 'folder for confusion_matrix.png and errors.png (default: plots)')
    .option('--json', 'print one JSON object instead of tables')
    .option('--no-download', 'never download: fail if dataset files are missing')
    .exitOverride()
    .action(async (o: Record<string, unknown>) => {
      const dataset = datasetFlag(o.dataset);
      const opts = {
        model: pathFlag('--model', o.model),
        dataset,
        dataDir: o.dataDir === undefined ? undefined : pathFlag('--data-dir', o.dataDir),
        threads: o.threads === undefined ? availableParallelism() : threadsFlag(o.threads),
        kernels: kernelsFlag(o.kernels ?? 'auto'),
        plots: pathFlag('--plots', o.plots ?? 'plots'),
        json: o.json === true,
        download: o.download !== false,
      };
      const { evalCommand } = await import('./evaluate.js');
      await evalCommand(opts);
      process.exitCode = 0;
    });

  program.command('predict')
    .description('classify image files of single digits (PNG, JPEG, WebP, GIF, TIFF) with a saved model')
    .requiredOption('--model <file>', 'model.safetensors written by train')
    .option('--dataset <name>', 'mnist or fashion-mnist: normalization and class names (default: the model\'s)')
    .option('--json', 'print one JSON line per image')
    .argument('<images...>', 'image files')
    .exitOverride()
    .action(async (images: string[], o: Record<string, unknown>) => {
      const opts = { model: pathFlag('--model', o.model), dataset: datasetFlag(o.dataset), json: o.json === true, images };
      const { predictCommand } = await import('./predict.js');
      process.exitCode = await predictCommand(opts);
    });
}
