// Bounded state: however long a run, its checkpoint holds only what continuing needs, its metrics files are
// appended to rather than rewritten, and the end-of-epoch work (validation, checkpoints, weights, metrics)
// costs the same in the last epoch as in the first. The run is many tiny steps (a 784→8→10 net, batches of
// one image), so that anything kept per step would show: 16,000 steps here.
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { validate } from '../src/config.js';
import type { EpochRecord, Snapshot } from '../src/metrics.js';
import { BatchHistory } from '../src/metrics.js';
import { readSafetensors } from '../src/safetensors.js';
import { loadDatasets, train, type StopRequest } from '../src/train.js';
import type { Reporter } from '../src/ui/reporter.js';
import { mnistDir } from './cli-run.js';

const EPOCHS = 40;
const STEPS_PER_EPOCH = 400;

/** Watches the end of every epoch: from the validation phase's start to the epoch's report, and the checkpoint then. */
class EpochWatch implements Reporter {
  endMs: number[] = [];
  checkpointBytes: number[] = [];
  headerBytes: number[] = [];
  private validating = 0;
  constructor(private readonly out: string) {}
  start(): void {}
  step(s: Snapshot): void {
    if (s.phase === 'validating' && this.validating === 0) this.validating = performance.now();
  }
  epoch(_s: Snapshot, _e: EpochRecord): void {
    this.endMs.push(performance.now() - this.validating);
    this.validating = 0;
    const file = join(this.out, 'checkpoint-last.safetensors');
    this.checkpointBytes.push(statSync(file).size);
    this.headerBytes.push(Number(readFileSync(file).readBigUInt64LE(0)));
  }
  finish(): void {}
  close(): void {}
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

describe('bounded state', () => {
  it(`over ${EPOCHS * STEPS_PER_EPOCH} steps the checkpoint keeps its size and an epoch's end its cost`, async () => {
    const out = mkdtempSync(join(tmpdir(), 'mnist-par-bounded-'));
    const cfg = validate({
      dataDir: mnistDir, download: false, hidden: [8], threads: 1, batchSize: 1, kernels: 'js',
      limitTrain: STEPS_PER_EPOCH, limitTest: 50, epochs: EPOCHS, schedule: 'none', lr: 1e-3, out, plots: join(out, 'plots'),
      dashboard: false,
    });
    const data = await loadDatasets(cfg);
    const watch = new EpochWatch(out);
    const stop: { how: StopRequest | null } = { how: null };
    const run = await train(cfg, watch, stop, { data });
    expect(run.epochs).toHaveLength(EPOCHS);

    // the checkpoint: the same size after the last epoch as after the first, up to the digits of a few numbers
    const [first, last] = [watch.checkpointBytes[0], watch.checkpointBytes[EPOCHS - 1]];
    expect(Math.abs(last - first), `checkpoint ${first} → ${last} bytes`).toBeLessThan(64);
    expect(watch.headerBytes[EPOCHS - 1]).toBeLessThan(4096);
    const { metadata } = await readSafetensors(join(out, 'checkpoint-last.safetensors'));
    const state = JSON.parse(metadata['mnist-par.state']);
    expect(Object.keys(state)).not.toContain('batches');
    expect(Object.keys(state)).not.toContain('epochs');
    expect(state.step).toBe(EPOCHS * STEPS_PER_EPOCH);

    // the metrics files hold every row all the same
    const rows = readFileSync(join(out, 'batch_metrics.csv'), 'utf8').trim().split('\n');
    expect(rows).toHaveLength(EPOCHS * STEPS_PER_EPOCH + 1);
    expect(rows.slice(1).map((l) => Number(l.split(',')[2]))).toEqual(Array.from({ length: EPOCHS * STEPS_PER_EPOCH }, (_, i) => i + 1));
    expect(readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(EPOCHS + 1);

    // The end of an epoch: medians over ten epochs near the start and ten near the end, leaving out the last
    // (which always draws the charts; a refresh every 10 s lands in one of the ten now and then). Keeping every
    // batch record in the checkpoint made the late ones 3-4× the early ones here (32 → 109 ms); now they are
    // alike.
    const early = median(watch.endMs.slice(1, 11));
    const late = median(watch.endMs.slice(-11, -1));
    expect(late, `end of epoch: first ${early.toFixed(1)} ms, last ${late.toFixed(1)} ms`).toBeLessThan(1.8 * early + 8);
  });
});

describe('BatchHistory', () => {
  it('keeps the newest records as they are and merges older ones in pairs, weighted', () => {
    const h = new BatchHistory();
    const n = BatchHistory.CAPACITY * 4;
    for (let i = 1; i <= n; i++) h.push({ epoch: 1, batch: i, step: i, loss: i, accuracy: 0.5, lr: 1, samplesPerSec: 0 });
    expect(h.records.length).toBeLessThanOrEqual(BatchHistory.CAPACITY);
    const tail = h.records.slice(-BatchHistory.RAW_TAIL);
    expect(tail.map((r) => r.step)).toEqual(Array.from({ length: BatchHistory.RAW_TAIL }, (_, i) => n - BatchHistory.RAW_TAIL + 1 + i));
    // every merged record's loss is the mean of the steps it covers: the steps since the previous record
    let prev = 0;
    for (const r of h.records) {
      expect(r.loss).toBeCloseTo((prev + 1 + r.step) / 2, 9);
      prev = r.step;
    }
    expect(h.records.at(-1)!.step).toBe(n);
  });
});
