// The training run: load data into the arena, then the loop — for each epoch a fresh permutation, for each
// batch one coordinator step, then validation, checkpoints, metrics and charts. Like PyTorch's train()/test()
// pair. Everything the loop carries from one step to the next lives in one TrainState, which is what a
// checkpoint saves, so a resumed run continues bit for bit.
import { dirname, join, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { BEST, LAST, saveCheckpoint, type Checkpoint, type TrainState } from './checkpoint.js';
import type { Config } from './config.js';
import { Coordinator } from './coordinator.js';
import { BUSY, BUSY_BACKWARD, BUSY_COMPUTE, BUSY_FORWARD, BUSY_GATHER, BUSY_REDUCE, BUSY_SYNC } from './memory.js';
import { collectGarbage } from './gc.js';
import { DATASETS } from './data/datasets.js';
import { ensureDataset } from './data/download.js';
import { loadSplit, type Split } from './data/idx.js';
import { UsageError, UserError } from './errors.js';
import { ensureWritableDir, writeFileAtomic } from './fsutil.js';
import { BatchHistory, type BatchRecord, type EpochRecord, type Snapshot } from './metrics.js';
import { MetricsFiles } from './metrics-files.js';
import { MODELS_ROOT, PLOTS_ROOT, pointLatest, prepareRunDirs, removeIfEmpty, type RunDirs } from './runs.js';
import { initParams, paramLayout, widths, type Layout } from './model.js';
import { learningRate, optimizerStateCount, type OptimizerConfig, type ScheduleConfig } from './optim.js';
import { Rng } from './rng.js';
import { weightTensors, writeSafetensors } from './safetensors.js';
import { writeBatchChart, writeEpochChart } from './ui/charts.js';
import type { Reporter } from './ui/reporter.js';

/** SIGPIPE: standard output was closed (`| head`) or failed; the run stops as for the signals */
export type StopRequest = 'q' | 'SIGINT' | 'SIGTERM' | 'SIGPIPE';

export interface RunSummary {
  epochs: EpochRecord[];
  stoppedBy: 'completed' | 'early' | StopRequest;
  /** one sentence on why the run ended */
  reason: string;
  /** how to continue, when the run was interrupted */
  resumeHint: string | null;
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

export interface Datasets {
  train: Split;
  test: Split;
}

/** Makes sure the dataset is present (downloading it unless --no-download) and parses both splits. */
export async function loadDatasets(cfg: Config): Promise<Datasets> {
  if (cfg.download) await ensureDataset(cfg.dataset, cfg.dataDir, { log: (line) => process.stderr.write(line + '\n') });
  // the four files are read and decompressed at once
  const [train, test] = await Promise.all([loadSplit(cfg.dataDir, 'train', cfg.dataset), loadSplit(cfg.dataDir, 'test', cfg.dataset)]);
  return { train, test };
}

function freshState(cfg: Config): TrainState {
  return {
    version: 2, config: cfg, cwd: process.cwd(), kernelFamily: '', epoch: 1, batch: 0, step: 0,
    // the permutation stream is separate from the initialization stream, both derived from --seed
    rng: new Rng((cfg.seed ^ 0x5eed5eed) >>> 0).state(),
    partial: { lossSum: 0, correct: 0, seen: 0, seconds: 0 },
    elapsedSec: 0, best: null,
    early: { best: null, bestEpoch: 0, epochsWithoutImprovement: 0 },
  };
}

/** Early stopping after an epoch: updates `early`; returns the reason to stop, or null. */
function earlyStop(cfg: Config, st: TrainState, rec: EpochRecord): string | null {
  const e = st.early;
  const value = cfg.monitor === 'val_loss' ? rec.valLoss : rec.valAccuracy;
  const better = e.best === null || (cfg.monitor === 'val_loss' ? value < e.best - cfg.minDelta : value > e.best + cfg.minDelta);
  if (better) {
    e.best = value;
    e.bestEpoch = rec.epoch;
    e.epochsWithoutImprovement = 0;
    return null;
  }
  e.epochsWithoutImprovement++;
  if (cfg.patience === 0 || e.epochsWithoutImprovement < cfg.patience) return null;
  return earlyReason(cfg, e);
}

function earlyReason(cfg: Config, e: TrainState['early']): string {
  const what = cfg.monitor === 'val_loss' ? 'validation loss' : 'validation accuracy';
  return `stopped early: ${what} did not improve by more than ${cfg.minDelta} for ${cfg.patience} epochs ` +
    `(best ${e.best === null ? '–' : e.best.toFixed(4)} at epoch ${e.bestEpoch})`;
}

/**
 * Why the run of a checkpoint has already ended by early stopping under `cfg`'s settings (a larger
 * --patience lets it go on), or null: such a checkpoint has nothing left to resume.
 */
export function finishedEarly(cfg: Config, st: TrainState): string | null {
  const e = st.early;
  if (st.batch > 0 || cfg.patience === 0 || cfg.monitor !== st.config.monitor || e.epochsWithoutImprovement < cfg.patience) return null;
  return earlyReason(cfg, e);
}

/**
 * Trains as configured, from scratch or from `resume`. `data` may be passed in already loaded (benchmarks
 * reuse it across runs). Stops after the current step once `requestStop.how` is set, saving a checkpoint.
 */
export async function train(cfg: Config, reporter: Reporter, requestStop: { how: StopRequest | null },
                            data?: Datasets, resume?: Checkpoint): Promise<RunSummary> {
  const dirs = await prepareRunDirs(cfg.out, cfg.plots, cfg.overwrite, resume ? dirname(resume.file) : null);
  try {
    return await trainIn(dirs, { ...cfg, out: dirs.out, plots: dirs.plots }, reporter, requestStop, data, resume);
  } finally {
    // a numbered run that ended before writing anything leaves no empty folders behind
    if (dirs.created !== null) await removeIfEmpty(dirs.created);
    if (dirs.createdPlots !== null) await removeIfEmpty(dirs.createdPlots);
  }
}

async function trainIn(dirs: RunDirs, cfg: Config, reporter: Reporter, requestStop: { how: StopRequest | null },
                       data?: Datasets, resume?: Checkpoint): Promise<RunSummary> {
  const outDir = resolve(dirs.out);
  const plotsDir = resolve(dirs.plots);
  await ensureWritableDir(outDir, '--out');
  await ensureWritableDir(plotsDir, '--plots');
  const { coord, trainCount, stepsPerEpoch } = await arenaWithData(cfg, data);
  // the parsed files (55 MB for MNIST) are garbage now: collect them before training instead of whenever
  if (data === undefined) collectGarbage();
  if (resume?.perm && resume.perm.length !== trainCount) {
    await coord.close();
    throw new UserError(`--resume ${resume.file}: its epoch permutation covers ${resume.perm.length} images but this run has ${trainCount}; keep --data-dir and --limit-train as they were`);
  }
  const layers = widths(cfg.hidden);
  const model = paramLayout(layers);
  const files: string[] = [];
  try {
    const v = coord.views;
    // the configuration's relative paths are now relative to this run's working directory
    const st: TrainState = resume ? { ...resume.state, config: cfg, cwd: process.cwd() } : freshState(cfg);
    if (resume && resume.state.config.monitor !== cfg.monitor) {
      // the best value so far was of the other metric: early stopping starts over
      st.early = { best: null, bestEpoch: 0, epochsWithoutImprovement: 0 };
    }
    // the checkpoint records the family and the native path ("native avx512"); the two native paths train to
    // the same bytes, so only the family decides whether a resumed run continues bit for bit
    const kernels = coord.kernels.label;
    if (coord.kernels.fallback) process.stderr.write(`mnist-par: note: ${coord.kernels.fallback}\n`);
    if (cfg.threads > cfg.shards && availableParallelism() > cfg.shards) {
      // a micro-shard is the unit of work of the forward and backward passes: more threads than shards wait
      process.stderr.write(`mnist-par: note: --threads ${cfg.threads} with --shards ${cfg.shards}: only ${cfg.shards} threads ` +
        `run the forward and backward passes; pass --shards ${Math.min(cfg.threads, availableParallelism())} (or more) to use more cores\n`);
    }
    if (resume && resume.state.kernelFamily && resume.state.kernelFamily.split(' ')[0] !== coord.family) {
      process.stderr.write(`mnist-par: note: ${resume.file} was trained with the ${resume.state.kernelFamily} kernels, this run uses ${kernels}: ` +
        `it continues correctly, but not bit for bit (the kernel families round differently)\n`);
    }
    st.kernelFamily = kernels;
    if (resume) {
      v.params.set(resume.params);
      resume.optimizerState.forEach((m, k) => v.state[k]?.set(m));
      if (resume.perm) v.perm.set(resume.perm);
    } else {
      initParams(v.params, model, cfg.seed);
    }
    await coord.ready();

    const schedule = scheduleConfig(cfg, stepsPerEpoch);
    const rng = new Rng(st.rng);
    // the metrics so far (for a resumed run, read back from its files) and the files the new ones go to
    const { files: metricsFiles, batches: earlier, epochs } = await MetricsFiles.open(outDir,
      resume ? { dir: dirname(resume.file), step: st.step, epoch: st.epoch } : null,
      (line) => process.stderr.write(`mnist-par: note: ${line}\n`));
    files.push(metricsFiles.batchPath, metricsFiles.epochPath);
    const history = new BatchHistory();
    for (const r of earlier) history.push(r);
    // batch records of the epoch in progress, appended to the file at its end or at an interruption
    let pending: BatchRecord[] = [];
    const flushBatches = async () => {
      await metricsFiles.appendBatches(pending);
      pending = [];
    };
    const snap: Snapshot = {
      config: cfg, layers, paramCount: model.size, kernelFamily: kernels, phase: 'training',
      epoch: st.epoch, batch: st.batch, batchesPerEpoch: stepsPerEpoch, step: st.step, totalSteps: stepsPerEpoch * cfg.epochs,
      elapsedSec: st.elapsedSec, epochElapsedSec: 0, samplesPerSec: 0, batches: history.records, epochs,
      workerBusy: new Array(cfg.threads).fill(0),
      timing: { stepMs: 0, computeMs: 0, reduceMs: 0, waitMs: 0, overheadMs: 0 },
    };
    await writeFileAtomic(join(outDir, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
    files.push(join(outDir, 'config.json'));
    if (dirs.created !== null) {
      // training starts in a new numbered folder: models/latest and plots/latest point at it from now on
      await pointLatest(MODELS_ROOT, dirs.created);
      if (dirs.createdPlots !== null) await pointLatest(PLOTS_ROOT, dirs.createdPlots);
    }
    reporter.start(snap);

    const tStart = performance.now() - st.elapsedSec * 1000;
    const window = new ThroughputWindow(cfg.threads);
    // the coordinator's own work per step (metrics, UI): in the lockstep pipeline it is off the critical path
    let coordinatorMs = 0;
    let stoppedBy: RunSummary['stoppedBy'] = 'completed';
    let reason = '';
    const save = async (name: string, withPerm: boolean) => {
      st.rng = rng.state();
      st.elapsedSec = (performance.now() - tStart) / 1000;
      await saveCheckpoint(join(outDir, name), model, v.params, v.state, withPerm ? v.perm : null, st);
      files.push(join(outDir, name));
    };

    let chartsAt = performance.now();
    while (st.epoch <= cfg.epochs && stoppedBy === 'completed') {
      const epoch = st.epoch;
      const tEpoch = performance.now() - st.partial.seconds * 1000;
      if (st.batch === 0) rng.permutation(v.perm);
      snap.epoch = epoch;
      const firstStep = st.step - st.batch; // global steps done when this epoch began
      const lrOf = (b: number) => learningRate(schedule, firstStep + b);
      let lr = st.batch > 0 ? lrOf(st.batch - 1) : 0;
      const next = await coord.runEpoch({
        from: st.batch, to: stepsPerEpoch, batchSize: cfg.batchSize, trainCount, firstT: st.step + 1, lr: lrOf,
        epoch,
      }, {
        onStep: (b, batchLoss, batchCorrect) => {
          const t0 = performance.now();
          const count = Math.min(cfg.batchSize, trainCount - b * cfg.batchSize);
          st.step = firstStep + b + 1;
          st.batch = b + 1;
          lr = lrOf(b);
          window.add(t0, count, coordinatorMs, v.busy);
          st.partial.lossSum += batchLoss;
          st.partial.correct += batchCorrect;
          st.partial.seen += count;
          const record: BatchRecord = {
            epoch, batch: b + 1, step: st.step, loss: batchLoss / count, accuracy: batchCorrect / count, lr,
            samplesPerSec: window.samplesPerSec(),
          };
          pending.push(record);
          history.push(record);
          snap.batch = b + 1;
          snap.step = st.step;
          snap.elapsedSec = (t0 - tStart) / 1000;
          snap.epochElapsedSec = (t0 - tEpoch) / 1000;
          snap.samplesPerSec = window.samplesPerSec();
          window.fill(snap);
          reporter.step(snap);
          coordinatorMs = performance.now() - t0;
        },
        shouldStop: () => requestStop.how !== null,
      });
      if (next < stepsPerEpoch) {
        // interrupted mid-epoch: save where we are, with the permutation, and leave
        stoppedBy = requestStop.how ?? 'SIGINT';
        st.partial.seconds = (performance.now() - tEpoch) / 1000;
        await flushBatches();
        await save(LAST, true);
        await writeWeights(outDir, cfg, model, v.params, files);
        await writeCharts(plotsDir, history.records, epochs, files);
        reason = `stopped by ${stoppedBy} in epoch ${epoch} after batch ${next}/${stepsPerEpoch}`;
        break;
      }
      snap.phase = 'validating';
      reporter.step(snap);
      const val = await coord.evaluate();
      snap.phase = 'training';
      const rec: EpochRecord = {
        epoch, trainLoss: st.partial.lossSum / st.partial.seen, trainAccuracy: st.partial.correct / st.partial.seen,
        valLoss: val.loss, valAccuracy: val.accuracy, lr, seconds: (performance.now() - tEpoch) / 1000,
      };
      epochs.push(rec);
      await flushBatches();
      await metricsFiles.appendEpoch(rec);
      st.epoch = epoch + 1;
      st.batch = 0;
      st.partial = { lossSum: 0, correct: 0, seen: 0, seconds: 0 };
      const improved = st.best === null || rec.valAccuracy > st.best.valAccuracy;
      if (improved) st.best = { epoch, valAccuracy: rec.valAccuracy };
      const early = earlyStop(cfg, st, rec);
      await save(LAST, false);
      if (improved) {
        await save(BEST, false);
        await writeSafetensors(join(outDir, 'model-best.safetensors'), weightTensors(model, v.params), weightsMetadata(cfg, model));
        files.push(join(outDir, 'model-best.safetensors'));
      }
      await writeWeights(outDir, cfg, model, v.params, files);
      // Rendering the two charts costs 0.1-0.2 s of CPU, as much as a tenth of a short epoch: refresh them
      // after an epoch only when the last refresh is CHART_REFRESH_MS old, and always after the last epoch.
      const lastEpoch = epoch >= cfg.epochs || early !== null || requestStop.how !== null;
      if (lastEpoch || performance.now() - chartsAt >= CHART_REFRESH_MS) {
        await writeCharts(plotsDir, history.records, epochs, files);
        chartsAt = performance.now();
      }
      reporter.epoch(snap, rec);
      if (early) {
        stoppedBy = 'early';
        reason = early;
      } else if (requestStop.how && st.epoch <= cfg.epochs) {
        stoppedBy = requestStop.how;
        reason = `stopped by ${stoppedBy} after epoch ${epoch}`;
      }
    }
    if (stoppedBy === 'completed') reason = `finished ${epochs.length} epochs`;
    snap.phase = 'done';
    return {
      epochs, stoppedBy, reason,
      resumeHint: stoppedBy === 'completed' || stoppedBy === 'early' ? null : `continue with: mnist-par train --resume ${cfg.out}`,
      seconds: (performance.now() - tStart) / 1000, files: [...new Set(files)],
      snapshot: snap,
    };
  } finally {
    await coord.close();
  }
}

/**
 * Creates the coordinator and its arena, and copies the (limited) dataset into it. The parsed files are
 * referenced only here, so unless the caller holds them they can be freed once they are in the arena.
 */
async function arenaWithData(cfg: Config, data?: Datasets): Promise<{ coord: Coordinator; trainCount: number; stepsPerEpoch: number }> {
  const info = DATASETS[cfg.dataset];
  const { train: trainSplit, test: testSplit } = data ?? await loadDatasets(cfg);
  const trainCount = cfg.limitTrain > 0 ? Math.min(cfg.limitTrain, trainSplit.count) : trainSplit.count;
  const testCount = cfg.limitTest > 0 ? Math.min(cfg.limitTest, testSplit.count) : testSplit.count;
  const pixels = trainSplit.rows * trainSplit.cols;
  const optimizer = optimizerConfig(cfg);
  const stepsPerEpoch = Math.ceil(trainCount / cfg.batchSize);
  let coord: Coordinator;
  try {
    coord = new Coordinator({
    spec: {
      layers: widths(cfg.hidden), threads: cfg.threads, shards: cfg.shards,
      rows: Math.max(Math.ceil(cfg.batchSize / cfg.shards), 64), optimizerStates: optimizerStateCount(optimizer),
      stepsPerEpoch, trainCount, testCount, pixels,
    },
    optimizer, kernels: cfg.kernels, pipeline: cfg.pipeline, mean: info.mean, std: info.std,
    labelSmoothing: cfg.labelSmoothing, augment: cfg.augment ? cfg.seed : null,
    });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    // the arena holds the model, one gradient slot per shard and the activations of every shard
    throw new UsageError(`--hidden ${cfg.hidden.join(',')} with --shards ${cfg.shards} and --batch-size ${cfg.batchSize}: ` +
      `the shared memory does not fit (${e.message}); choose smaller layers, fewer shards or a smaller batch`);
  }
  const v = coord.views;
  v.trainX.set(trainSplit.images.subarray(0, trainCount * pixels));
  v.trainY.set(trainSplit.labels.subarray(0, trainCount));
  v.testX.set(testSplit.images.subarray(0, testCount * pixels));
  v.testY.set(testSplit.labels.subarray(0, testCount));
  return { coord, trainCount, stepsPerEpoch };
}

function weightsMetadata(cfg: Config, model: Layout): Record<string, string> {
  return { format: 'pt', producer: 'mnist-par', layers: model.layers.join(','), dataset: cfg.dataset };
}

async function writeWeights(outDir: string, cfg: Config, model: Layout, params: Float32Array, files: string[]): Promise<void> {
  const weights = join(outDir, 'model.safetensors');
  await writeSafetensors(weights, weightTensors(model, params), weightsMetadata(cfg, model));
  files.push(weights);
}

/** The charts are refreshed after an epoch when the last refresh is this old (and after the last epoch). */
export const CHART_REFRESH_MS = 10_000;

async function writeCharts(dir: string, batches: readonly BatchRecord[], epochs: readonly EpochRecord[], files: string[]): Promise<void> {
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
    const share: number[] = [];
    // per thread and step: the mean over threads of counter x's growth over the window
    const per = (x: number) => {
      let sum = 0;
      for (let i = 0; i < T; i++) sum += b.busy[BUSY * i + x] - a.busy[BUSY * i + x];
      return sum / T / steps;
    };
    for (let i = 0; i < T; i++) {
      const c = b.busy[BUSY * i + BUSY_COMPUTE] - a.busy[BUSY * i + BUSY_COMPUTE];
      const r = b.busy[BUSY * i + BUSY_REDUCE] - a.busy[BUSY * i + BUSY_REDUCE];
      share.push(dt > 0 ? Math.min(1, (c + r) / dt) : 0);
    }
    const stepMs = dt / steps;
    const computeMs = per(BUSY_COMPUTE);
    const reduceMs = per(BUSY_REDUCE);
    snap.timing = {
      stepMs, computeMs, reduceMs, waitMs: Math.max(0, stepMs - computeMs - reduceMs),
      overheadMs: (b.overhead - a.overhead) / steps,
      gatherMs: per(BUSY_GATHER), forwardMs: per(BUSY_FORWARD), backwardMs: per(BUSY_BACKWARD), syncMs: per(BUSY_SYNC),
    };
    snap.workerBusy = share;
  }
}
