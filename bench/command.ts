// `mnist-par bench kernels|scaling|peers`: flags → validated benchmark options → run. The benchmarks
// themselves are loaded only when one is run, so the CLI starts as fast without them.
import type { Command } from 'commander';
import {
  DATASET_NAMES, INT_LIMITS, KERNEL_CHOICES, MODEL_KINDS, modelSpec, parseChoice, parseIntFlag, parseIntList, parseRealFlag,
  parseValue, validate,
} from '../src/config.js';
import { UsageError } from '../src/errors.js';
import { describeModel, type ModelSpec } from '../src/model.js';
import { BENCH_FAMILIES } from './families.js';
import type { DataBenchOptions } from './data.js';
import type { BenchOptions } from './kernels.js';
import type { PeerOptions } from './peers.js';
import type { ScalingOptions } from './scaling.js';

/** Flags as commander hands them over: every value is text until parsed here. */
export interface BenchFlags {
  threads?: string;
  batchSize?: string;
  repeats?: string;
  kernels?: string;
  dataDir?: string;
  dataset?: string;
  oversubscribe?: boolean;
  seconds?: string;
  peerScript?: string;
  peers?: string;
  out?: string;
  plots?: string;
  quick?: boolean;
  conv?: boolean;
  model?: string;
  channels?: string;
  hidden?: string;
}

/**
 * The network of --model (default mlp), --channels and --hidden (each left out: that model's default), with
 * training's own checks (--channels only with --model cnn). --conv is the older spelling of --model cnn.
 */
export function modelFlags(f: BenchFlags): ModelSpec {
  let model = f.model !== undefined ? parseChoice('--model', f.model, MODEL_KINDS) : undefined;
  if (f.conv === true) {
    if (model === 'mlp') throw new UsageError('--conv: the same as --model cnn, so it cannot go with --model mlp; give one of them');
    model = 'cnn';
  }
  return modelSpec(validate({
    model,
    ...(f.hidden !== undefined ? { hidden: parseValue('hidden', f.hidden) } : {}),
    ...(f.channels !== undefined ? { channels: parseValue('channels', f.channels) } : {}),
  }));
}

/** Bench's own limits; the others are training's (INT_LIMITS). */
const REPEATS: [number, number] = [1, 1000];
/** rows of a kernel call that bench kernels times */
const KERNEL_ROWS: [number, number] = [1, 4096];
const SECONDS = [Number.MIN_VALUE, 600, 'a number of seconds in (0, 600]'] as const;

/** The options shared by the two training benchmarks: the network, data, kernels, where results go. */
function runFlags(f: BenchFlags): Omit<ScalingOptions, 'threads' | 'batchSizes' | 'repeats'> {
  return {
    model: modelFlags(f),
    ...(f.dataset !== undefined ? { dataset: parseChoice('--dataset', f.dataset, DATASET_NAMES) } : {}),
    ...(f.dataDir !== undefined ? { dataDir: f.dataDir } : {}),
    ...(f.kernels !== undefined ? { kernels: parseChoice('--kernels', f.kernels, KERNEL_CHOICES) } : {}),
    ...(f.out !== undefined ? { outDir: f.out } : {}),
    ...(f.plots !== undefined ? { plotsDir: f.plots } : {}),
  };
}

export function scalingOptions(f: BenchFlags): ScalingOptions {
  const quick = f.quick === true;
  return {
    ...(f.oversubscribe === true ? { oversubscribe: true } : {}),
    threads: f.threads !== undefined ? parseIntList('--threads', f.threads, ...INT_LIMITS.threads, '1,2,4,8') : quick ? [1, 2] : undefined,
    batchSizes: f.batchSize !== undefined ? parseIntList('--batch-size', f.batchSize, ...INT_LIMITS.batchSize, '32,64,128') : quick ? [64] : undefined,
    repeats: f.repeats !== undefined ? parseIntFlag('--repeats', f.repeats, ...REPEATS) : quick ? 1 : undefined,
    ...(quick ? { window: { warmupSteps: 3, minSteps: 5, minMs: 0 } } : {}),
    ...runFlags(f),
  };
}

export function peerOptions(f: BenchFlags): PeerOptions {
  const quick = f.quick === true;
  const seconds = f.seconds === undefined ? (quick ? 0.5 : undefined) : parseRealFlag('--seconds', f.seconds, SECONDS);
  return {
    threads: f.threads !== undefined ? parseIntFlag('--threads', f.threads, ...INT_LIMITS.threads) : undefined,
    batchSizes: f.batchSize !== undefined ? parseIntList('--batch-size', f.batchSize, ...INT_LIMITS.batchSize, '64,128,256') : quick ? [64] : undefined,
    repeats: f.repeats !== undefined ? parseIntFlag('--repeats', f.repeats, ...REPEATS) : quick ? 1 : undefined,
    seconds,
    ...(quick ? { settings: [[1, 1]] as [number, number][], window: { warmupSteps: 3, minSteps: 5 } } : {}),
    ...(f.peerScript !== undefined ? { script: f.peerScript } : {}),
    ...runFlags(f),
  };
}

export function kernelOptions(f: BenchFlags): BenchOptions {
  const quick = f.quick === true;
  return {
    batches: f.batchSize !== undefined ? parseIntList('--batch-size', f.batchSize, ...KERNEL_ROWS, '8,16,32,64') : quick ? [16] : undefined,
    repeats: f.repeats !== undefined ? parseIntFlag('--repeats', f.repeats, ...REPEATS) : quick ? 3 : undefined,
    ...(quick ? { minMs: 5 } : {}),
    ...(f.kernels !== undefined ? { families: f.kernels.split(',').map((k) => parseChoice('--kernels', k.trim(), BENCH_FAMILIES)) } : {}),
    ...(f.out !== undefined ? { outDir: f.out } : {}),
    model: modelFlags(f),
  };
}

/** The options of bench data: rows of the CSV, images of the folder, repeats, where the JSON goes. */
export function dataOptions(f: BenchFlags & { rows?: string; images?: string }): DataBenchOptions {
  return {
    ...(f.rows !== undefined ? { rows: parseIntFlag('--rows', f.rows, 0, 1_000_000) } : f.quick ? { rows: 500 } : {}),
    ...(f.images !== undefined ? { images: parseIntFlag('--images', f.images, 0, 200_000) } : f.quick ? { images: 200 } : {}),
    ...(f.repeats !== undefined ? { repeats: parseIntFlag('--repeats', f.repeats, ...REPEATS) } : f.quick ? { repeats: 1 } : {}),
    ...(f.out !== undefined ? { outDir: f.out } : {}),
  };
}

export function addBenchCommand(program: Command): void {
  const bench = program.command('bench').description('benchmarks: kernels, scaling over threads, PyTorch peer, loading your own data');

  bench.command('data')
    .description('loading your own data: a Kaggle-layout CSV file and a folder of PNGs that it makes itself, each checked, then timed')
    .option('--rows <n>', 'rows of the CSV file, 0 for none (default: 42000, as Kaggle\'s train.csv)')
    .option('--images <n>', 'PNGs in the image folder, 0 for none (default: 10000)')
    .option('--repeats <n>', 'timed loads of each; the median is reported (default: 3)')
    .option('--out <dir>', 'folder for the JSON result (default: bench/results)')
    .option('--quick', 'a tiny smoke run')
    .action(async (f: BenchFlags & { rows?: string; images?: string }) => {
      const opts = dataOptions(f);
      const { benchData } = await import('./data.js');
      await benchData(opts);
      process.exitCode = 0;
    });

  bench.command('kernels')
    .description('time every kernel of every family on the model\'s shapes, each checked against the reference first')
    .option('--model <kind>', 'the network whose kernels to time: mlp (its linear layers, ReLU backward, ' +
      'optimizer steps) or cnn (its conv2d, max-pool and linear head kernels) (default: mlp)')
    .option('--channels <list>', 'with --model cnn: its convolution channels c1,c2 (default: 16,32)')
    .option('--hidden <list>', 'hidden widths: the mlp\'s (default: 128,256,512,128) or the cnn head\'s (default: 128)')
    .option('--batch-size <list>', 'rows of a kernel call to try (default: 8,16,32,64; cnn 16,32,64)')
    .option('--kernels <list>', `families to time: ${BENCH_FAMILIES.join(', ')} (default: all this machine runs)`)
    .option('--repeats <n>', 'timed runs per variant; the median is reported (default: 7)')
    .option('--out <dir>', 'folder for the JSON result (default: bench/results)')
    .option('--conv', 'the same as --model cnn (its older spelling)')
    .option('--quick', 'a tiny smoke run')
    .action(async (f: BenchFlags) => {
      const opts = kernelOptions(f);
      const { benchKernels } = await import('./kernels.js');
      await benchKernels(opts);
      process.exitCode = 0;
    });

  withRunFlags(bench.command('scaling')
    .description('training throughput on real data for threads × batch size: speedup, efficiency, where the step time goes')
    .option('--model <kind>', 'the network to train: mlp or cnn (default: mlp); the cnn\'s results are ' +
      'scaling-cnn-*.json and scaling-cnn.png, apart from the mlp\'s scaling-*.json and scaling.png')
    .option('--threads <list>', 'worker threads to try (default: 1,2,4,8)')
    .option('--oversubscribe', 'give every thread work even when threads outnumber cores, and show each thread\'s ' +
      'rows and busy share: proves the split, not the speed')
    .option('--batch-size <list>', 'batch sizes to try (default: 32,64,128,256,512)')
    .option('--repeats <n>', 'interleaved rounds over all configurations; medians are reported (default: 5)')
    .option('--peers <file>', 'a peers-*.json from bench peers (peers-cnn-*.json for --model cnn): draw its PyTorch levels too')
    .option('--channels <list>', 'with --model cnn: its convolution channels c1,c2 (default: 16,32)')
    .option('--hidden <list>', 'hidden widths: the mlp\'s (default: 128,256,512,128) or the cnn head\'s (default: 128)'))
    .action(async (f: BenchFlags) => {
      const opts = scalingOptions(f);
      const { benchScaling } = await import('./scaling.js');
      if (f.peers !== undefined) {
        const { readPeers } = await import('./peers.js');
        opts.peers = await readPeers(f.peers, describeModel(opts.model!));
      }
      await benchScaling(opts);
      process.exitCode = 0;
    });

  withRunFlags(bench.command('peers')
    .description('our throughput against PyTorch\'s best thread setting on the same network (the default mlp or cnn), interleaved, ' +
      'per batch size; the ratio is "not comparable" unless PyTorch ran OpenBLAS (or MKL) on kernels as wide as this CPU\'s vectors')
    .option('--model <kind>', 'the network both train: mlp or cnn, each at its default sizes, the only ones the ' +
      'PyTorch script has (default: mlp); the cnn\'s result is peers-cnn-*.json, its PyTorch levels go into the ' +
      'newest scaling-cnn-*.json')
    .option('--threads <n>', 'our worker threads (default: 2)')
    .option('--batch-size <list>', 'batch sizes to compare (default: 64,128,256)')
    .option('--repeats <n>', 'interleaved rounds; medians are reported (default: 5)')
    .option('--seconds <s>', 'timed seconds of each PyTorch run and of our window (default: 1.5)')
    .option('--peer-script <file>', 'the PyTorch script (default: <package>/../shared/peers/pytorch_throughput.py)'))
    .action(async (f: BenchFlags) => {
      const opts = peerOptions(f);
      const { benchPeers } = await import('./peers.js');
      await benchPeers(opts);
      process.exitCode = 0;
    });
}

function withRunFlags(cmd: Command): Command {
  return cmd
    .option('--kernels <family>', `compute kernels: ${KERNEL_CHOICES.join(', ')} (default: auto)`)
    .option('--dataset <name>', 'mnist or fashion-mnist (default: mnist)')
    .option('--data-dir <dir>', 'folder with the four IDX .gz files (default: datasets/<dataset>)')
    .option('--out <dir>', 'folder for the JSON result (default: bench/results)')
    .option('--plots <dir>', 'folder for scaling.png, scaling-cnn.png for --model cnn (default: plots)')
    .option('--quick', 'a tiny smoke sweep');
}
