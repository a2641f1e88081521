// The training run, as PyTorch's MNIST example writes it: for each epoch a fresh permutation, for each batch
// one data-parallel step (forward, loss and backward of each worker's rows, the all-reduce as a reduce-scatter,
// the optimizer step:
// coordinator.ts and the workers), then validation, then the epoch's outputs. Everything the loop carries
// from one step to the next lives in one TrainState, which is what a checkpoint saves, so a resumed run
// continues bit for bit. What is written when is run-outputs.ts; early stopping is early-stopping.ts; the
// dashboard's live figures are throughput.ts.
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Checkpoint, TrainState } from './checkpoint.js';
import { trainingArenaSpec } from './arena-spec.js';
import type { SplitSizes } from './data/datasets.js';
import { modelSpec, optimizerConfig, type Config } from './config.js';
import { Coordinator } from './coordinator.js';
import { collectGarbage } from './gc.js';
import { datasetInfo, type DataInfo } from './data/datasets.js';
import { ensureDataset } from './data/download.js';
import type { Progress } from './data/folder.js';
import { loadSplit, type Split } from './data/idx.js';
import { loadOwnSplits } from './data/own.js';
import { NO_EARLY_STOP_YET, earlyStop } from './early-stopping.js';
import { UsageError, UserError } from './errors.js';
import { removeEmptyDirs } from './fsutil.js';
import type { EpochRecord, Snapshot, StopRequest } from './metrics.js';
import { describeModel, initParams, modelLayout } from './model.js';
import { ROW_BLOCK, rowBlocks } from './partition.js';
import { learningRate, type ScheduleConfig } from './optim.js';
import { Rng } from './rng.js';
import { RunOutputs } from './run-outputs.js';
import { prepareRunDirs, type RunDirs } from './runs.js';
import { modelSummary } from './summary.js';
import { ThroughputWindow } from './throughput.js';
import { plural } from './ui/format.js';
import type { Reporter } from './ui/reporter.js';

export { finishedEarly } from './early-stopping.js';
export { optimizerConfig } from './config.js';

export type { StopRequest } from './metrics.js';

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
  /** the run's folder */
  out: string;
  /** what the validation ran on: 'test' (a test set), 'held-out' (a share of --data held out) */
  validation: 'test' | 'held-out';
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
  /** the class names (the network's outputs) and the normalization */
  info: DataInfo;
  /** the test split is a held-out share of the training data (your own data without a test set) */
  heldOut?: boolean;
}

export interface LoadOptions {
  /** what a user should know (where your data's test set comes from); default: stderr */
  note?: (line: string) => void;
  /** progress of reading an image folder */
  progress?: Progress;
  /** a resumed run's normalization (your own data's is computed from its training images otherwise) */
  normalization?: { mean: number; std: number };
}

/**
 * The run's data: a built-in dataset (downloaded unless --no-download; its two splits parsed), or your own
 * (--data, data/own.ts: its training set, a test set, the classes and the normalization computed).
 */
export async function loadDatasets(cfg: Config, log: (line: string) => void = (line) => process.stderr.write(line + '\n'),
                                   signal?: AbortSignal, o: LoadOptions = {}): Promise<Datasets> {
  if (cfg.data !== '') {
    const own = await loadOwnSplits({ data: cfg.data, test: cfg.test, valSplit: cfg.valSplit, seed: cfg.seed }, cfg.limitTrain,
      o.progress, o.normalization);
    const note = o.note ?? ((line: string) => process.stderr.write(`mnist-par: note: ${line}\n`));
    for (const line of own.notes) note(line);
    return own;
  }
  if (cfg.download) await ensureDataset(cfg.dataset, cfg.dataDir, { log, signal });
  // the four files are read and decompressed at once
  const [train, test] = await Promise.all([loadSplit(cfg.dataDir, 'train', cfg.dataset), loadSplit(cfg.dataDir, 'test', cfg.dataset)]);
  return { train, test, info: datasetInfo(cfg.dataset) };
}

function freshState(cfg: Config, info: DataInfo): TrainState {
  return {
    version: 2, config: cfg, cwd: process.cwd(), kernelFamily: '', epoch: 1, batch: 0, step: 0,
    // your own data's classes and normalization, which the checkpoint must carry (a built-in dataset's are constants)
    ...(cfg.data !== '' ? { data: { classes: [...info.classes], mean: info.mean, std: info.std } } : {}),
    // the permutation stream is separate from the initialization stream, both derived from --seed
    rng: new Rng((cfg.seed ^ 0x5eed5eed) >>> 0).state(),
    partial: { lossSum: 0, correct: 0, seen: 0, seconds: 0 },
    elapsedSec: 0, best: null, early: { ...NO_EARLY_STOP_YET },
  };
}

export interface TrainExtras {
  /** the datasets, already loaded (benchmarks reuse them across runs) */
  data?: Datasets;
  /** the checkpoint to continue */
  resume?: Checkpoint;
  /** what a user should know about how the run will go; default: stderr, as "mnist-par: note: …" */
  note?: (line: string) => void;
  /** progress lines of a download; default: stderr */
  log?: (line: string) => void;
  /** progress of reading an image folder (--data); default: none */
  progress?: Progress;
  /** abandons a download in progress (a stop request is honoured only once training has started) */
  signal?: AbortSignal;
}

/**
 * Trains as configured, from scratch or from `resume`. Stops after the current step once `requestStop.how`
 * is set, saving a checkpoint.
 */
export async function train(cfg: Config, reporter: Reporter, requestStop: { how: StopRequest | null },
                            extras: TrainExtras = {}): Promise<RunSummary> {
  const resume = extras.resume;
  const note = extras.note ?? ((line: string) => process.stderr.write(`mnist-par: note: ${line}\n`));
  const log = extras.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const dirs = await prepareRunDirs(cfg.out, cfg.plots, cfg.overwrite, resume ? dirname(resume.file) : null);
  try {
    return await trainIn(dirs, { ...cfg, out: dirs.out, plots: dirs.plots }, reporter, requestStop, { ...extras, note, log });
  } finally {
    await dirs.release();
    // a run that ended before writing anything leaves none of the folders it made behind
    await removeEmptyDirs(dirs.made);
  }
}

async function trainIn(dirs: RunDirs, cfg: Config, reporter: Reporter, requestStop: { how: StopRequest | null },
                       { data, resume, note, log, signal, progress }: TrainExtras & Required<Pick<TrainExtras, 'note' | 'log'>>): Promise<RunSummary> {
  // (the run's folder and its charts' folder were made, or checked, and the run's claimed by prepareRunDirs)
  const datasets = data ?? await loadDatasets(cfg, log, signal, { note, progress, normalization: resume?.state.data });
  const info = resumedInfo(datasets.info, resume);
  const { coord, trainCount, stepsPerEpoch, sizes } = await arenaWithData(cfg, datasets, info);
  // the parsed files (55 MB for MNIST) are garbage now: collect them before training instead of whenever
  if (data === undefined) collectGarbage();
  try {
    const v = coord.views;
    const model = modelLayout(modelSpec(cfg, info.classes.length));
    const st = startState(cfg, info, coord, trainCount, resume, note);
    if (resume) {
      v.params.set(resume.params);
      resume.optimizerState.forEach((m, k) => v.state[k]?.set(m));
      if (resume.perm) v.perm.set(resume.perm);
    } else {
      initParams(v.params, model, cfg.seed);
    }
    await coord.ready();
    // --overwrite: the earlier run's files go only now, with the data loaded and the pool's threads started
    for (const f of dirs.replaced) await rm(f, { force: true });
    const outputs = await RunOutputs.open(dirs, cfg, info, model, v, st, resume, note);
    const schedule = scheduleConfig(cfg, stepsPerEpoch);
    const rng = new Rng(st.rng);
    const snap: Snapshot = {
      config: cfg, data: dataName(cfg, info), classes: info.classes, model: describeModel(model.spec), layers: model.layers, paramCount: model.size,
      summary: modelSummary(cfg, sizes),
      kernelFamily: st.kernelFamily, phase: 'training',
      epoch: st.epoch, batch: st.batch, batchesPerEpoch: stepsPerEpoch, step: st.step, totalSteps: stepsPerEpoch * cfg.epochs,
      elapsedSec: st.elapsedSec, epochElapsedSec: 0, samplesPerSec: NaN, batches: outputs.history.records, epochs: outputs.epochs,
      workerBusy: new Array(cfg.threads).fill(0),
      workerRows: new Array(cfg.threads).fill(0),
      timing: { stepMs: 0, computeMs: 0, reduceMs: 0, waitMs: 0, overheadMs: 0 },
    };
    reporter.start(snap);

    const tStart = performance.now() - st.elapsedSec * 1000;
    const window = new ThroughputWindow(cfg.threads);
    // the coordinator's own work per step (metrics, UI): off the workers' critical path
    let coordinatorMs = 0;
    const finish = (stoppedBy: RunSummary['stoppedBy'], reason: string): RunSummary => {
      snap.phase = 'done';
      return {
        epochs: outputs.epochs, stoppedBy, reason, out: cfg.out, validation: datasets.heldOut ? 'held-out' : 'test',
        resumeHint: stoppedBy === 'completed' || stoppedBy === 'early' ? null : `continue with: mnist-par train --resume ${cfg.out}`,
        seconds: (performance.now() - tStart) / 1000, files: [...new Set(outputs.files)], snapshot: snap,
      };
    };
    const keep = () => {
      st.rng = rng.state();
      st.elapsedSec = (performance.now() - tStart) / 1000;
    };

    while (st.epoch <= cfg.epochs) {
      const epoch = st.epoch;
      const tEpoch = performance.now() - st.partial.seconds * 1000;
      if (st.batch === 0) rng.permutation(v.perm);
      snap.epoch = epoch;
      // the validation since the last step was no training: the live figures start over
      window.restart();
      snap.samplesPerSec = NaN;
      const firstStep = st.step - st.batch; // global steps done when this epoch began
      const lrOf = (b: number) => learningRate(schedule, firstStep + b);

      // the epoch's steps, on the workers; after each, its loss and accuracy come back here
      const next = await coord.runEpoch({
        from: st.batch, to: stepsPerEpoch, batchSize: cfg.batchSize, trainCount, firstT: st.step + 1, lr: lrOf, epoch,
      }, {
        onStep: (b, lossSum, correct) => {
          const t0 = performance.now();
          const count = Math.min(cfg.batchSize, trainCount - b * cfg.batchSize);
          st.step = firstStep + b + 1;
          st.batch = b + 1;
          st.partial.lossSum += lossSum;
          st.partial.correct += correct;
          st.partial.seen += count;
          window.add(t0, count, coordinatorMs, v.busy);
          outputs.recordBatch({ epoch, batch: b + 1, step: st.step, loss: lossSum / count, accuracy: correct / count, lr: lrOf(b),
            samplesPerSec: window.samplesPerSec() });
          Object.assign(snap, { batch: b + 1, step: st.step, elapsedSec: (t0 - tStart) / 1000, epochElapsedSec: (t0 - tEpoch) / 1000,
            samplesPerSec: window.samplesPerSec() });
          window.fill(snap);
          reporter.step(snap);
          coordinatorMs = performance.now() - t0;
        },
        shouldStop: () => requestStop.how !== null,
      });
      if (next < stepsPerEpoch) {
        // interrupted mid-epoch: save where we are, with the permutation, and leave
        const by = requestStop.how ?? 'SIGINT';
        st.partial.seconds = (performance.now() - tEpoch) / 1000;
        keep();
        await outputs.interrupted(st);
        return finish(by, `stopped by ${by} in epoch ${epoch} after batch ${next}/${stepsPerEpoch}`);
      }

      // validation on the test split, then the epoch's outputs
      snap.phase = 'validating';
      reporter.step(snap);
      const val = await coord.evaluate(() => requestStop.how !== null);
      snap.phase = 'training';
      const rec: EpochRecord = {
        epoch, trainLoss: st.partial.lossSum / st.partial.seen, trainAccuracy: st.partial.correct / st.partial.seen,
        valLoss: val.loss, valAccuracy: val.accuracy, lr: lrOf(stepsPerEpoch - 1), seconds: (performance.now() - tEpoch) / 1000,
      };
      Object.assign(st, { epoch: epoch + 1, batch: 0, partial: { lossSum: 0, correct: 0, seen: 0, seconds: 0 } });
      const best = st.best === null || rec.valAccuracy > st.best.valAccuracy;
      if (best) st.best = { epoch, valAccuracy: rec.valAccuracy };
      const early = earlyStop(cfg, st.early, rec);
      keep();
      const last = epoch >= cfg.epochs || early !== null || requestStop.how !== null;
      // the worker threads are done: their memory goes back before the final charts take theirs (the arena's
      // weights stay readable here)
      if (last) await coord.close();
      await outputs.epochEnd(st, rec, best, last);
      reporter.epoch(snap, rec);
      // on the last epoch it ended no earlier than planned: every epoch ran
      if (early && epoch < cfg.epochs) return finish('early', early);
      if (requestStop.how && st.epoch <= cfg.epochs) return finish(requestStop.how, `stopped by ${requestStop.how} after epoch ${epoch}`);
    }
    return finish('completed', `finished ${plural(outputs.epochs.length, 'epoch')}`);
  } finally {
    await coord.close();
  }
}

/**
 * The state the loop starts from: a fresh one, or the checkpoint's with this run's configuration. Says what
 * a user should know about how the run will go (notes), and refuses a checkpoint that does not fit the data.
 */
function startState(cfg: Config, info: DataInfo, coord: Coordinator, trainCount: number, resume: Checkpoint | undefined,
                    note: (line: string) => void): TrainState {
  if (resume?.perm && resume.perm.length !== trainCount) {
    throw new UserError(`--resume ${resume.file}: its epoch permutation covers ${resume.perm.length} images but this run has ${trainCount}; keep --data-dir and --limit-train as they were`);
  }
  // the configuration's relative paths are now relative to this run's working directory
  const st: TrainState = resume ? { ...resume.state, config: cfg, cwd: process.cwd() } : freshState(cfg, info);
  // the best value so far was of the other metric: early stopping starts over
  if (resume && resume.state.config.monitor !== cfg.monitor) st.early = { ...NO_EARLY_STOP_YET };
  // the checkpoint records the family and the native path ("native avx512"); the two native paths train to
  // the same bytes, so only the family decides whether a resumed run continues bit for bit
  const kernels = coord.kernels.label;
  if (coord.kernels.fallback) note(coord.kernels.fallback);
  if (rowBlocks(cfg.batchSize) < coord.active) {
    // a block of rows is the unit of work of the forward and backward passes
    note(`--threads ${cfg.threads} with --batch-size ${cfg.batchSize}: the batch has ${rowBlocks(cfg.batchSize)} blocks of ` +
      `${ROW_BLOCK} rows, so only ${rowBlocks(cfg.batchSize)} threads run the forward and backward passes; a batch of ` +
      `${coord.active * ROW_BLOCK} or more keeps all ${coord.active} busy`);
  }
  if (resume && resume.state.kernelFamily && resume.state.kernelFamily.split(' ')[0] !== coord.family) {
    note(`${resume.file} was trained with the ${resume.state.kernelFamily} kernels, this run uses ${kernels}: ` +
      `it continues correctly, but not bit for bit (the kernel families round differently)`);
  }
  st.kernelFamily = kernels;
  return st;
}

/**
 * The classes and normalization the run trains with: the data's, or for a resumed run on your own data the
 * checkpoint's, whose classes the data must still have (its normalization is kept as it was).
 */
function resumedInfo(info: DataInfo, resume: Checkpoint | undefined): DataInfo {
  const saved = resume?.state.data;
  if (!saved) return info;
  if (saved.classes.length !== info.classes.length || saved.classes.some((c, i) => c !== info.classes[i])) {
    const show = (cs: readonly string[]) => (cs.length > 6 ? `${cs.slice(0, 6).join(', ')}, … (${cs.length})` : cs.join(', '));
    throw new UserError(`--resume ${resume!.file}: the checkpoint was trained on the classes ${show(saved.classes)}, but --data now holds ` +
      `${show(info.classes)}; resume with the data it was trained on`);
  }
  return { ...info, mean: saved.mean, std: saved.std };
}

/** The data in a few words, for the dashboard and the start line: "mnist", or "letters.csv (26 classes)". */
export function dataName(cfg: Config, info: DataInfo): string {
  return cfg.data === '' ? cfg.dataset : `${info.title} (${info.classes.length} classes)`;
}

/**
 * Creates the coordinator and its arena, and copies the (limited) dataset into it. The parsed files are
 * referenced only here, so unless the caller holds them they can be freed once they are in the arena.
 */
async function arenaWithData(cfg: Config, data: Datasets, info: DataInfo): Promise<{ coord: Coordinator; trainCount: number;
                                                                                     stepsPerEpoch: number; sizes: SplitSizes }> {
  const { train: trainSplit, test: testSplit } = data;
  const pixels = trainSplit.height * trainSplit.width;
  const sizes: SplitSizes = { train: trainSplit.count, test: testSplit.count, pixels, classes: info.classes.length };
  const spec = trainingArenaSpec(cfg, sizes);
  const { trainCount, testCount, stepsPerEpoch } = spec;
  let coord: Coordinator;
  try {
    coord = new Coordinator({
      spec, optimizer: optimizerConfig(cfg), kernels: cfg.kernels, pipeline: cfg.pipeline, mean: info.mean, std: info.std,
      labelSmoothing: cfg.labelSmoothing, augment: cfg.augment ? cfg.seed : null, oversubscribe: cfg.oversubscribe,
    });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    // the arena holds the model, its gradient and moments, and the activations of a whole batch
    const sizes = `--hidden ${cfg.hidden.join(',')}${cfg.model === 'cnn' ? ` --channels ${cfg.channels.join(',')}` : ''}`;
    throw new UsageError(`${sizes} with --batch-size ${cfg.batchSize}: ` +
      `the shared memory does not fit (${e.message}); choose smaller layers or a smaller batch`);
  }
  const v = coord.views;
  v.trainX.set(trainSplit.images.subarray(0, trainCount * pixels));
  v.trainY.set(trainSplit.labels.subarray(0, trainCount));
  v.testX.set(testSplit.images.subarray(0, testCount * pixels));
  v.testY.set(testSplit.labels.subarray(0, testCount));
  return { coord, trainCount, stepsPerEpoch, sizes };
}
