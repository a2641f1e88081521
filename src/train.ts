// The training run: load data into the arena, then the loop — for each epoch a fresh permutation, for each
// batch one coordinator step, then validation, metrics and outputs. Like PyTorch's train()/test() pair.
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Config } from './config.js';
import { Coordinator } from './coordinator.js';
import { DATASETS } from './data/datasets.js';
import { ensureDataset } from './data/download.js';
import { loadSplit, type Split } from './data/idx.js';
import { UserError } from './errors.js';
import { writeFileAtomic } from './fsutil.js';
import { batchCsv, epochCsv, type BatchRecord, type EpochRecord, type Snapshot } from './metrics.js';
import { initParams, paramLayout, widths } from './model.js';
import { learningRate, optimizerStateCount, type OptimizerConfig, type ScheduleConfig } from './optim.js';
import { Rng } from './rng.js';
import { weightTensors, writeSafetensors } from './safetensors.js';
import { writeBatchChart, writeEpochChart } from './ui/charts.js';
import type { Reporter } from './ui/reporter.js';

export interface RunSummary {
  epochs: EpochRecord[];
  stoppedBy: 'completed' | 'q' | 'SIGINT';
  seconds: number;
  files: string[];
  snapshot: Snapshot;
}

export function optimizerConfig(cfg: Config): OptimizerConfig {
  return {
    optimizer: cfg.optimizer, momentum: cfg.momentum, dampening: 0, nesterov: cfg.nesterov,
    weightDecay: cfg.weightDecay, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps,
  };
}

export function scheduleConfig(cfg: Config, stepsPerEpoch: number): ScheduleConfig {
  return {
    schedule: cfg.schedule, lr: cfg.lr, totalSteps: stepsPerEpoch * cfg.epochs, stepsPerEpoch,
    stepSize: cfg.stepSize, gamma: cfg.gamma, warmupPct: cfg.warmup, minLr: cfg.minLr,
    divFactor: 25, finalDivFactor: 1e4,
  };
}

/** Creates the output directory and proves it is writable before any training time is spent. */
export async function prepareOutDir(dir: string, flag = '--out'): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    await writeFileAtomic(join(dir, '.write-test'), '');
    const { unlink } = await import('node:fs/promises');
    await unlink(join(dir, '.write-test'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new UserError(`${flag} ${dir}: cannot write there (${code}); choose a writable directory with ${flag}`);
  }
}

export interface Datasets {
  train: Split;
  test: Split;
}

/** Makes sure the dataset is present (downloading it unless --no-download) and parses both splits. */
export async function loadDatasets(cfg: Config): Promise<Datasets> {
  if (cfg.download) await ensureDataset(cfg.dataset, cfg.dataDir, { log: (line) => process.stderr.write(line + '\n') });
  return { train: await loadSplit(cfg.dataDir, 'train'), test: await loadSplit(cfg.dataDir, 'test') };
}

/**
 * Trains as configured. `data` may be passed in already loaded (benchmarks reuse it across runs).
 * Stops early, after the current step, once `requestStop.how` is set.
 */
export async function train(cfg: Config, reporter: Reporter, requestStop: { how: 'q' | 'SIGINT' | null },
                            data?: Datasets): Promise<RunSummary> {
  const outDir = resolve(cfg.out);
  const plotsDir = resolve(cfg.plots);
  await prepareOutDir(outDir);
  await prepareOutDir(plotsDir, '--plots');
  const info = DATASETS[cfg.dataset];
  const { train: trainSplit, test: testSplit } = data ?? await loadDatasets(cfg);
  const trainCount = cfg.limitTrain > 0 ? Math.min(cfg.limitTrain, trainSplit.count) : trainSplit.count;
  const testCount = cfg.limitTest > 0 ? Math.min(cfg.limitTest, testSplit.count) : testSplit.count;
  const pixels = trainSplit.rows * trainSplit.cols;

  const layers = widths(cfg.hidden);
  const model = paramLayout(layers);
  const optimizer = optimizerConfig(cfg);
  const stepsPerEpoch = Math.ceil(trainCount / cfg.batchSize);
  const coord = new Coordinator({
    spec: {
      layers, threads: cfg.threads, shards: cfg.shards, rows: Math.max(Math.ceil(cfg.batchSize / cfg.shards), 64),
      optimizerStates: optimizerStateCount(optimizer), stepsPerEpoch, trainCount, testCount, pixels,
    },
    optimizer, kernels: cfg.kernels, pipeline: cfg.pipeline, mean: info.mean, std: info.std, labelSmoothing: cfg.labelSmoothing,
  });
  const files: string[] = [];
  try {
    const v = coord.views;
    v.trainX.set(trainSplit.images.subarray(0, trainCount * pixels));
    v.trainY.set(trainSplit.labels.subarray(0, trainCount));
    v.testX.set(testSplit.images.subarray(0, testCount * pixels));
    v.testY.set(testSplit.labels.subarray(0, testCount));
    initParams(v.params, model, cfg.seed);
    await coord.ready();

    const schedule = scheduleConfig(cfg, stepsPerEpoch);
    // The permutation stream is separate from the initialization stream, both derived from --seed.
    const rng = new Rng((cfg.seed ^ 0x5eed5eed) >>> 0);
    const batches: BatchRecord[] = [];
    const epochs: EpochRecord[] = [];
    const snap: Snapshot = {
      config: cfg, layers, paramCount: model.size, kernelFamily: coord.family, phase: 'training',
      epoch: 1, batch: 0, batchesPerEpoch: stepsPerEpoch, step: 0, totalSteps: stepsPerEpoch * cfg.epochs,
      elapsedSec: 0, epochElapsedSec: 0, samplesPerSec: 0, batches, epochs,
      workerBusy: new Array(cfg.threads).fill(0),
      timing: { stepMs: 0, computeMs: 0, reduceMs: 0, waitMs: 0, overheadMs: 0 },
    };
    await writeFileAtomic(join(outDir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
    files.push(join(outDir, 'config.json'));
    reporter.start(snap);

    const tStart = performance.now();
    const window = new ThroughputWindow(cfg.threads);
    let step = 0;
    // the coordinator's own work per step (metrics, UI): in the lockstep pipeline it is off the critical path
    let coordinatorMs = 0;
    let stoppedBy: RunSummary['stoppedBy'] = 'completed';
    for (let epoch = 1; epoch <= cfg.epochs && stoppedBy === 'completed'; epoch++) {
      const tEpoch = performance.now();
      rng.permutation(v.perm);
      let lossSum = 0;
      let correct = 0;
      let seen = 0;
      let lr = 0;
      snap.epoch = epoch;
      const firstStep = step;
      const lrOf = (b: number) => learningRate(schedule, firstStep + b);
      await coord.runEpoch({ from: 0, to: stepsPerEpoch, batchSize: cfg.batchSize, trainCount, firstT: firstStep + 1, lr: lrOf }, {
        onStep: (b, batchLoss, batchCorrect) => {
          const t0 = performance.now();
          const count = Math.min(cfg.batchSize, trainCount - b * cfg.batchSize);
          step = firstStep + b + 1;
          lr = lrOf(b);
          window.add(t0, count, coordinatorMs, v.busy);
          lossSum += batchLoss;
          correct += batchCorrect;
          seen += count;
          batches.push({
            epoch, batch: b + 1, step, loss: batchLoss / count, accuracy: batchCorrect / count, lr,
            samplesPerSec: window.samplesPerSec(),
          });
          snap.batch = b + 1;
          snap.step = step;
          snap.elapsedSec = (t0 - tStart) / 1000;
          snap.epochElapsedSec = (t0 - tEpoch) / 1000;
          snap.samplesPerSec = window.samplesPerSec();
          window.fill(snap);
          reporter.step(snap);
          coordinatorMs = performance.now() - t0;
        },
        shouldStop: () => requestStop.how !== null,
      });
      if (requestStop.how) stoppedBy = requestStop.how;
      if (stoppedBy !== 'completed') break;
      snap.phase = 'validating';
      reporter.step(snap);
      const val = await coord.evaluate();
      snap.phase = 'training';
      const rec: EpochRecord = {
        epoch, trainLoss: lossSum / seen, trainAccuracy: correct / seen, valLoss: val.loss,
        valAccuracy: val.accuracy, lr, seconds: (performance.now() - tEpoch) / 1000,
      };
      epochs.push(rec);
      await writeOutputs(outDir, cfg, model, v.params, batches, epochs, files);
      await writeCharts(plotsDir, batches, epochs, files);
      reporter.epoch(snap, rec);
    }
    if (stoppedBy !== 'completed') {
      await writeOutputs(outDir, cfg, model, v.params, batches, epochs, files);
      await writeCharts(plotsDir, batches, epochs, files);
    }
    snap.phase = 'done';
    return { epochs, stoppedBy, seconds: (performance.now() - tStart) / 1000, files: [...new Set(files)], snapshot: snap };
  } finally {
    await coord.close();
  }
}

async function writeOutputs(outDir: string, cfg: Config, model: ReturnType<typeof paramLayout>, params: Float32Array,
                            batches: BatchRecord[], epochs: EpochRecord[], files: string[]): Promise<void> {
  const weights = join(outDir, 'model.safetensors');
  await writeSafetensors(weights, weightTensors(model, params), {
    format: 'pt', producer: 'mnist-par', layers: model.layers.join(','), dataset: cfg.dataset,
  });
  await writeFileAtomic(join(outDir, 'batch_metrics.csv'), batchCsv(batches));
  await writeFileAtomic(join(outDir, 'epoch_metrics.csv'), epochCsv(epochs));
  files.push(weights, join(outDir, 'batch_metrics.csv'), join(outDir, 'epoch_metrics.csv'));
}

async function writeCharts(dir: string, batches: BatchRecord[], epochs: EpochRecord[], files: string[]): Promise<void> {
  if (batches.length > 0) {
    await writeBatchChart(join(dir, 'batch_metrics.png'), batches);
    files.push(join(dir, 'batch_metrics.png'));
  }
  if (epochs.length > 0) {
    await writeEpochChart(join(dir, 'epoch_metrics.png'), epochs);
    files.push(join(dir, 'epoch_metrics.png'));
  }
}

/** Recent throughput, step-time split and per-worker busy share over the last ~2 seconds. */
class ThroughputWindow {
  private marks: { t: number; samples: number; overhead: number; busy: Float64Array }[] = [];
  private samples = 0;
  private overhead = 0;

  constructor(private threads: number) {}

  /** After each step: `overheadMs` is the coordinator's own time spent on the previous step. */
  add(now: number, samples: number, overheadMs: number, busy: Float64Array): void {
    this.samples += samples;
    this.overhead += overheadMs;
    this.marks.push({ t: now, samples: this.samples, overhead: this.overhead, busy: busy.slice() });
    while (this.marks.length > 2 && now - this.marks[1].t > 2000) this.marks.shift();
  }

  samplesPerSec(): number {
    if (this.marks.length < 2) return 0;
    const a = this.marks[0];
    const b = this.marks[this.marks.length - 1];
    return b.t > a.t ? ((b.samples - a.samples) * 1000) / (b.t - a.t) : 0;
  }

  fill(snap: Snapshot): void {
    if (this.marks.length < 2) return;
    const a = this.marks[0];
    const b = this.marks[this.marks.length - 1];
    const steps = this.marks.length - 1;
    const dt = b.t - a.t;
    const T = this.threads;
    let compute = 0;
    let reduce = 0;
    const share: number[] = [];
    for (let i = 0; i < T; i++) {
      const c = b.busy[2 * i] - a.busy[2 * i];
      const r = b.busy[2 * i + 1] - a.busy[2 * i + 1];
      compute += c;
      reduce += r;
      share.push(dt > 0 ? Math.min(1, (c + r) / dt) : 0);
    }
    const stepMs = dt / steps;
    const computeMs = compute / T / steps;
    const reduceMs = reduce / T / steps;
    snap.timing = {
      stepMs, computeMs, reduceMs, waitMs: Math.max(0, stepMs - computeMs - reduceMs),
      overheadMs: (b.overhead - a.overhead) / steps,
    };
    snap.workerBusy = share;
  }
}
