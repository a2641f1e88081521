// Metrics of a run: per-batch and per-epoch records, the snapshot the UI reads, and the CSV files.
// The dashboard, the plain log and the charts read only these records, never the shared arena.
import type { Config } from './config.js';
import type { ModelSummary } from './summary.js';

/** What asked a run to stop: `q`, a signal, SIGPIPE (stdout or stderr closed or failed, ui/outputs.ts), or
 *  abort (the library caller's AbortSignal). */
export type StopRequest = 'q' | 'SIGINT' | 'SIGTERM' | 'SIGPIPE' | 'abort';

export interface BatchRecord {
  epoch: number;       // 1-based
  batch: number;       // 1-based within the epoch
  step: number;        // 1-based global optimizer step
  loss: number;        // mean loss of the batch
  accuracy: number;    // fraction correct in the batch, 0..1
  lr: number;          // learning rate used by this step
  samplesPerSec: number; // recent throughput; NaN (an empty field in the CSV) until there is one
}

export interface EpochRecord {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  valLoss: number;
  valAccuracy: number;
  lr: number;          // learning rate of the epoch's last step
  seconds: number;     // wall time of the epoch including validation
}

/**
 * Average milliseconds per step over the recent window. computeMs, reduceMs and waitMs split one step of an
 * average worker thread: computeMs + reduceMs + waitMs = stepMs.
 */
export interface StepTiming {
  stepMs: number;      // wall time per step
  computeMs: number;   // per thread: its rows' half of the step (busy-time counters)
  reduceMs: number;    // per thread: its outputs' half: the reduce-scatter + optimizer update (busy-time counters)
  waitMs: number;      // per thread: not working — dispatch latency, barrier waits, imbalance
  overheadMs: number;  // the coordinator's own serial work per step (schedule, metrics, UI), part of waitMs
  // parts of computeMs and reduceMs, per thread (0 until measured)
  gatherMs?: number;   // copying and normalizing the batch's images
  forwardMs?: number;  // the forward pass
  backwardMs?: number; // the loss and the input gradients of every activation
  wgradMs?: number;    // the weight gradients of its outputs over all the batch's rows (the reduce)
  updateMs?: number;   // the optimizer step of its outputs' parameters
  syncMs?: number;     // keeping the transposed copy of the weights current (native)
}

export type Phase = 'loading' | 'training' | 'validating' | 'done' | 'stopping' | 'failed';

export interface Snapshot {
  config: Config;
  /** the data in a few words: "mnist", or your own data's name and class count (train.ts dataName); left
   *  out: config.dataset */
  data?: string;
  /** the class names, the network's outputs in order */
  classes?: readonly string[];
  /** the network in one line (model.ts describeModel) */
  model: string;
  /** its linear layers' widths, input to output */
  layers: readonly number[];
  paramCount: number;
  /** the network layer by layer and the run's shared memory (summary.ts); printed at the start of a plain run */
  summary?: ModelSummary;
  kernelFamily: string;
  phase: Phase;
  epoch: number;              // current epoch, 1-based
  batch: number;              // batches done in the current epoch
  batchesPerEpoch: number;
  step: number;               // global steps done
  totalSteps: number;
  elapsedSec: number;         // since training started
  epochElapsedSec: number;
  samplesPerSec: number;      // recent throughput; NaN until there is a figure (throughput.ts)
  /** every batch record so far (the UI smooths and windows them itself) */
  batches: readonly BatchRecord[];
  epochs: readonly EpochRecord[];
  /** busy share 0..1 of each worker thread over the recent window, from the shared busy-time counters */
  workerBusy: readonly number[];
  /** the rows of the batch each worker thread ran per step over the same window */
  workerRows: readonly number[];
  timing: StepTiming;
}

export const BATCH_CSV_HEADER = 'epoch,batch,step,loss,accuracy,lr,samples_per_s';
export const EPOCH_CSV_HEADER = 'epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds';

export function batchCsv(rows: readonly BatchRecord[]): string {
  const lines = [BATCH_CSV_HEADER];
  for (const r of rows) {
    // no throughput yet (throughput.ts): an empty field
    const rate = Number.isFinite(r.samplesPerSec) ? String(Math.round(r.samplesPerSec)) : '';
    lines.push(`${r.epoch},${r.batch},${r.step},${num(r.loss)},${num(r.accuracy)},${num(r.lr)},${rate}`);
  }
  return lines.join('\n') + '\n';
}

export function epochCsv(rows: readonly EpochRecord[]): string {
  const lines = [EPOCH_CSV_HEADER];
  for (const r of rows) {
    lines.push(`${r.epoch},${num(r.trainLoss)},${num(r.trainAccuracy)},${num(r.valLoss)},${num(r.valAccuracy)},${num(r.lr)},${r.seconds.toFixed(3)}`);
  }
  return lines.join('\n') + '\n';
}

function num(x: number): string {
  return Number.isFinite(x) ? String(Number(x.toPrecision(7))) : String(x);
}

/** CSV data rows (no header) for appending to batch_metrics.csv / epoch_metrics.csv. */
export function batchCsvRows(rows: readonly BatchRecord[]): string {
  return rows.length === 0 ? '' : batchCsv(rows).slice(BATCH_CSV_HEADER.length + 1);
}

export function epochCsvRows(rows: readonly EpochRecord[]): string {
  return rows.length === 0 ? '' : epochCsv(rows).slice(EPOCH_CSV_HEADER.length + 1);
}

/**
 * The batch records the dashboard and the charts draw, in bounded memory however long the run. The newest
 * RAW_TAIL records are kept as they are; once there are more than CAPACITY, the older ones are merged in
 * adjacent pairs (loss and accuracy averaged, weighted by how many batches each stands for; step, lr and
 * throughput those of the later one), so the far past is drawn coarser. The complete per-batch record is
 * batch_metrics.csv.
 */
export class BatchHistory {
  static readonly CAPACITY = 8192;
  static readonly RAW_TAIL = 2048;
  readonly records: BatchRecord[] = [];
  /** how many batches each record stands for */
  private weights: number[] = [];

  push(r: BatchRecord): void {
    this.records.push(r);
    this.weights.push(1);
    if (this.records.length > BatchHistory.CAPACITY) this.compact();
  }

  private compact(): void {
    const old = this.records.length - BatchHistory.RAW_TAIL;
    const recs: BatchRecord[] = [];
    const ws: number[] = [];
    let i = 0;
    for (; i + 1 < old; i += 2) {
      const [a, b] = [this.records[i], this.records[i + 1]];
      const [wa, wb] = [this.weights[i], this.weights[i + 1]];
      const mean = (x: number, y: number) => (x * wa + y * wb) / (wa + wb);
      recs.push({ ...b, loss: mean(a.loss, b.loss), accuracy: mean(a.accuracy, b.accuracy) });
      ws.push(wa + wb);
    }
    for (; i < this.records.length; i++) {
      recs.push(this.records[i]);
      ws.push(this.weights[i]);
    }
    this.records.splice(0, this.records.length, ...recs);
    this.weights = ws;
  }
}
