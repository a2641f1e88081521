// The live throughput (src/throughput.ts) and its column samples_per_s in batch_metrics.csv: nothing is
// reported until the window holds real steps. The coordinator sees steps every 20 ms, in bursts, and a rate
// over a burst is absurd (0, then 734,832 samples/s, were the first figures before this).
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { batchCsv, type BatchRecord, type Snapshot } from '../src/metrics.js';
import { ThroughputWindow } from '../src/throughput.js';
import { THROUGHPUT_MIN_WINDOW_MS } from '../src/tuning.js';
import { parseBatchCsv } from '../src/ui/csv.js';
import { mnistDir, runCli } from './cli-run.js';

const busy = new Float64Array(64);

describe('ThroughputWindow', () => {
  it('reports nothing until its window spans real training, then samples over time; a restart starts over', () => {
    const w = new ThroughputWindow(2);
    expect(w.samplesPerSec()).toBeNaN();
    // a burst: five steps of 100 samples seen within 0.1 ms of each other
    for (let i = 0; i < 5; i++) w.add(1000 + i * 0.02, 100, 0, busy);
    expect(w.samplesPerSec()).toBeNaN();
    // steps every 20 ms: still nothing before the window spans THROUGHPUT_MIN_WINDOW_MS
    let t = 1000;
    while (t + 20 - 1000 < THROUGHPUT_MIN_WINDOW_MS) {
      t += 20;
      w.add(t, 100, 0, busy);
      expect(w.samplesPerSec(), `at ${t - 1000} ms`).toBeNaN();
    }
    t += 20;
    w.add(t, 100, 0, busy);
    const steps = (t - 1000) / 20 + 4; // the steps after the window's first mark
    expect(w.samplesPerSec()).toBeCloseTo((steps * 100 * 1000) / (t - 1000), 6);
    const snap = { timing: { stepMs: 0, computeMs: 0, reduceMs: 0, waitMs: 0, overheadMs: 0 }, workerBusy: [] } as unknown as Snapshot;
    w.fill(snap);
    expect(snap.timing.stepMs).toBeCloseTo((t - 1000) / (steps), 6);
    w.restart();
    w.add(t + 500, 100, 0, busy);
    w.add(t + 520, 100, 0, busy);
    expect(w.samplesPerSec()).toBeNaN();
  });
});

describe('samples_per_s in batch_metrics.csv', () => {
  it('is empty where there is no figure, and reads back as none', () => {
    const rec = (step: number, samplesPerSec: number): BatchRecord => ({ epoch: 1, batch: step, step, loss: 2, accuracy: 0.1, lr: 0.001, samplesPerSec });
    const text = batchCsv([rec(1, NaN), rec(2, 12345.6)]);
    expect(text.split('\n').slice(1, 3)).toEqual(['1,1,1,2,0.1,0.001,', '1,2,2,2,0.1,0.001,12346']);
    const back = parseBatchCsv(text, 'batch_metrics.csv');
    expect(back[0].samplesPerSec).toBeNaN();
    expect(back[1].samplesPerSec).toBe(12346);
    expect(() => parseBatchCsv(text.replace(',12346', ',fast'), 'b.csv')).toThrow('b.csv:3: column samples_per_s should be a number or empty, found "fast"');
  });

  it('a real run: each epoch starts with empty figures, and none is far from the epoch\'s own rate', () => {
    const out = join(mkdtempSync(join(tmpdir(), 'mnist-par-throughput-')), 'run');
    const r = runCli(['--data-dir', mnistDir, '--no-download', '--threads', '2', '--limit-train', '12000', '--limit-test', '200',
      '--batch-size', '100', '--epochs', '2', '--out', out, '--json', '--log-every', '1']);
    expect(r.code, r.stderr).toBe(0);
    const rows = readFileSync(join(out, 'batch_metrics.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
    const epochs = readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(',').map(Number));
    for (const [e, , , , , , seconds] of epochs) {
      const mine = rows.filter((row) => Number(row[0]) === e).map((row) => row[6]);
      expect(mine).toHaveLength(120);
      expect(mine[0], `epoch ${e}`).toBe('');
      // the epoch's mean rate (its seconds include the validation, so the training rate is above it)
      const mean = 12000 / seconds;
      for (const v of mine.filter((x) => x !== '')) {
        expect(Number(v)).toBeGreaterThan(0);
        expect(Number(v), `epoch ${e}: ${v} samples/s against a mean of ${mean.toFixed(0)}`).toBeLessThan(4 * mean);
      }
    }
    // the JSON lines say null, never 0 or an absurd figure
    const batches = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((o) => o.type === 'batch');
    expect(batches[0].samplesPerSec).toBeNull();
  });
});
