// Everything a training run writes, and when: config.json when it starts; after every epoch the metrics rows,
// checkpoint-last, the weights, and — when the epoch is the best so far by validation accuracy —
// checkpoint-best and model-best; at an interruption the same with the epoch's permutation, so the run
// continues mid-epoch; the charts after the last epoch and otherwise at most every CHART_REFRESH_MS.
// The training loop calls three methods and knows none of the file names.
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { BEST, LAST, saveCheckpoint, type Checkpoint, type TrainState } from './checkpoint.js';
import type { Config } from './config.js';
import type { DataInfo } from './data/datasets.js';
import { writeFileAtomic } from './fsutil.js';
import { collectGarbage } from './gc.js';
import type { ArenaViews } from './memory.js';
import { BatchHistory, type BatchRecord, type EpochRecord } from './metrics.js';
import { MetricsFiles } from './metrics-files.js';
import { describeModel, type Layout } from './model.js';
import { MODELS_ROOT, PLOTS_ROOT, pointLatest, type RunDirs } from './runs.js';
import { CHART_REFRESH_MS } from './tuning.js';
import { weightTensors, writeSafetensors } from './safetensors.js';
import { writeBatchChart, writeEpochChart } from './ui/charts.js';


/**
 * What a model file says about its data (predict.ts modelData reads it back): a built-in dataset's name; or
 * your own data's class names (JSON), normalization, and where it came from (JSON: --data and --test as
 * absolute paths, --val-split and --seed), so that `eval` finds the same test set again.
 */
export function dataMetadata(cfg: Config, info: DataInfo): Record<string, string> {
  if (cfg.data === '') return { dataset: cfg.dataset };
  const source = { data: resolve(cfg.data), test: cfg.test === '' ? '' : resolve(cfg.test), valSplit: cfg.valSplit, seed: cfg.seed };
  return { classes: JSON.stringify(info.classes), mean: String(info.mean), std: String(info.std), source: JSON.stringify(source) };
}

/** config.json: the resolved configuration, without the fields of the data source not in use. */
function configFile(cfg: Config): Partial<Config> {
  const { dataset, dataDir, data, test, valSplit, ...rest } = cfg;
  return cfg.data === '' ? { dataset, dataDir, ...rest } : { data, test, ...(test === '' ? { valSplit } : {}), ...rest };
}

export class RunOutputs {
  /** every file written so far, in order */
  readonly files: string[] = [];
  /** the batch records the dashboard and the charts draw (bounded) */
  readonly history = new BatchHistory();
  /** batch records of the epoch in progress, appended to batch_metrics.csv at its end or at an interruption */
  private pending: BatchRecord[] = [];
  private chartsAt = performance.now();

  private constructor(private readonly dirs: RunDirs, private readonly cfg: Config, private readonly info: DataInfo, private readonly model: Layout,
                      private readonly views: ArenaViews, private readonly metrics: MetricsFiles,
                      /** the epoch records so far, this run's and (resumed) the earlier ones */
                      readonly epochs: EpochRecord[]) {}

  /**
   * Starts the run's files: the metrics files (a resumed run's cut back to its checkpoint and read back),
   * config.json, and for a new numbered run the models/latest and plots/latest links.
   */
  static async open(dirs: RunDirs, cfg: Config, info: DataInfo, model: Layout, views: ArenaViews, st: TrainState,
                    resume: Checkpoint | undefined, note: (line: string) => void): Promise<RunOutputs> {
    const { files: metrics, batches, epochs } = await MetricsFiles.open(resolve(dirs.out),
      resume ? { dir: dirname(resume.file), step: st.step, epoch: st.epoch } : null, note);
    const out = new RunOutputs(dirs, cfg, info, model, views, metrics, epochs);
    for (const r of batches) out.history.push(r);
    out.files.push(metrics.batchPath, metrics.epochPath);
    await out.write(join(dirs.out, 'config.json'), () => writeFileAtomic(join(resolve(dirs.out), 'config.json'), JSON.stringify(configFile(cfg), null, 2) + '\n'));
    if (dirs.created !== null) {
      // training starts in a new numbered folder: models/latest and plots/latest point at it from now on
      await pointLatest(MODELS_ROOT, dirs.created);
      if (dirs.createdPlots !== null) await pointLatest(PLOTS_ROOT, dirs.createdPlots);
    }
    return out;
  }

  /** After every step. */
  recordBatch(r: BatchRecord): void {
    this.pending.push(r);
    this.history.push(r);
  }

  /** Interrupted mid-epoch: everything so far, with the epoch's permutation so the run continues at the next step. */
  async interrupted(st: TrainState): Promise<void> {
    await this.flushBatches();
    await this.checkpoint(LAST, st, true);
    await this.weights('model.safetensors');
    await this.charts();
  }

  /** After an epoch and its validation (st already counts the epoch as done). */
  async epochEnd(st: TrainState, rec: EpochRecord, best: boolean, lastEpoch: boolean): Promise<void> {
    this.epochs.push(rec);
    await this.flushBatches();
    await this.metrics.appendEpoch(rec);
    await this.checkpoint(LAST, st, false);
    if (best) {
      await this.checkpoint(BEST, st, false);
      await this.weights('model-best.safetensors');
    }
    await this.weights('model.safetensors');
    // The files were encoded into buffers of several MB each: give them back now, between two epochs (a few ms
    // while the workers wait anyway) and before the charts load libvips, rather than let them pile up until V8
    // collects them (they made the run's peak resident memory).
    collectGarbage();
    // the charts: always after the last epoch, otherwise when the last refresh is CHART_REFRESH_MS old
    if (lastEpoch || performance.now() - this.chartsAt >= CHART_REFRESH_MS) await this.charts();
  }

  private async flushBatches(): Promise<void> {
    await this.metrics.appendBatches(this.pending);
    this.pending = [];
  }

  private async checkpoint(name: string, st: TrainState, withPermutation: boolean): Promise<void> {
    const v = this.views;
    await this.write(join(this.dirs.out, name), (path) =>
      saveCheckpoint(path, this.model, v.params, v.state, withPermutation ? v.perm : null, st));
  }

  private async weights(name: string): Promise<void> {
    const meta = { format: 'pt', producer: 'mnist-par', model: describeModel(this.model.spec), layers: this.model.layers.join(','),
      ...dataMetadata(this.cfg, this.info) };
    await this.write(join(this.dirs.out, name), (path) => writeSafetensors(path, weightTensors(this.model, this.views.params), meta));
  }

  private async charts(): Promise<void> {
    if (this.history.records.length > 0) {
      await this.write(join(this.dirs.plots, 'batch_metrics.png'), (path) => writeBatchChart(path, this.history.records));
    }
    if (this.epochs.length > 0) {
      await this.write(join(this.dirs.plots, 'epoch_metrics.png'), (path) => writeEpochChart(path, this.epochs));
    }
    this.chartsAt = performance.now();
  }

  private async write(path: string, how: (absolute: string) => Promise<void>): Promise<void> {
    await how(resolve(path));
    this.files.push(resolve(path));
  }
}
