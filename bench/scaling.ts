// Scaling benchmark: throughput of the real training loop on real MNIST for every threads × batch size.
//
// One measurement is one train() run (1 epoch, the data loaded once and passed in) watched by a Reporter:
// the first `warmupSteps` steps are not timed (pool spin-up, V8 tier-up, caches); the window then runs until
// it holds at least `minSteps` steps AND `minMs` milliseconds, and the run is stopped there. Repeats are
// interleaved (repeat r runs every configuration once before repeat r+1, alternating the order) so drift in
// the machine's load spreads over all configurations; we report medians. Speedup and efficiency are against
// the fewest threads measured (normally 1) at the same batch size, measured in the same sweep.
//
// `model` picks the network (the default mlp, or --model cnn); its results are scaling-cnn-*.json and
// scaling-cnn.png, apart from the mlp's scaling-*.json and scaling.png.
//
//   mnist-par bench scaling [--model mlp|cnn] [--threads 1,2,4,8] [--batch-size 32,64,128,256,512] [--repeats 5]
import { UserError } from '../src/errors.js';
import { collectGarbage } from '../src/gc.js';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DEFAULTS, validate, type Config } from '../src/config.js';
import { UsageError } from '../src/errors.js';
import { relaxedSimdSupported } from '../src/kernels/wasm.js';
import { DEFAULT_HIDDEN, describeModel, type ModelKind, type ModelSpec } from '../src/model.js';
import type { Snapshot, StepTiming } from '../src/metrics.js';
import { loadDatasets, train, type Datasets } from '../src/train.js';
import { writeScalingChart, type ScalingPeer, type ScalingReport, type ScalingRun } from '../src/ui/charts.js';
import type { Reporter } from '../src/ui/reporter.js';
import { machineInfo, median, resultsDir, saveJson, textTable } from './kernels.js';

export interface WindowOptions {
  /** steps run before the window opens (default 20) */
  warmupSteps: number;
  /** the window closes once it holds at least this many steps… (default 60) */
  minSteps: number;
  /** …and at least this many milliseconds (default 1500) */
  minMs: number;
}

export const DEFAULT_WINDOW: WindowOptions = { warmupSteps: 20, minSteps: 60, minMs: 1500 };

/** The shortest window, whatever minMs says: the coordinator reports finished steps every 20 ms, several at
 *  once when steps are short, so a window that opened and closed in one report would time nothing. */
const MIN_WINDOW_MS = 100;

/** The settings of a training run that a benchmark varies or fixes; the rest are the training defaults. */
export interface RunSettings {
  /** the network trained */
  model: ModelSpec;
  dataset: Config['dataset'];
  dataDir: string;
  kernels: Config['kernels'];
  /** give every thread work even when threads outnumber cores */
  oversubscribe: boolean;
  /** test images kept in the arena (validation itself is never reached: the run is stopped first) */
  limitTest: number;
}

/** One timed run. */
export interface Measurement {
  samplesPerSec: number;
  /** optimizer steps and wall seconds inside the window */
  steps: number;
  seconds: number;
  /** the loop's own step-time split over its recent (~2 s) window, read when ours closed */
  timing: StepTiming;
  /** per worker thread, 1 − busy share over the same recent window */
  idle: number[];
  /** per worker thread, the rows of the batch it ran per step over the same window */
  rows: number[];
  /** the process's peak resident set (worker threads included) during the run, MiB */
  peakRssMiB: number;
  /** kernel family the run resolved to */
  family: string;
}

/** Observes a run after every step (allocation-free until the window closes) and stops it then. */
class WindowProbe implements Reporter {
  family = '';
  t0 = 0;
  t1 = 0;
  steps = 0;
  timing: StepTiming = { stepMs: NaN, computeMs: NaN, reduceMs: NaN, waitMs: NaN, overheadMs: NaN };
  idle: number[] = [];
  rows: number[] = [];
  /** the last batch's loss when the window closed: a diverged run is not timed as if it had trained */
  loss = NaN;

  constructor(private warmup: number, private w: WindowOptions, private lastStep: number,
              private stop: { how: 'q' | 'SIGINT' | null }) {}

  start(s: Snapshot): void {
    this.family = s.kernelFamily;
  }

  step(s: Snapshot): void {
    if (s.phase !== 'training' || this.t1 > 0 || s.step < this.warmup) return;
    const now = performance.now();
    if (s.step === this.warmup) {
      this.t0 = now;
      return;
    }
    const n = s.step - this.warmup;
    if ((n >= this.w.minSteps && now - this.t0 >= Math.max(this.w.minMs, MIN_WINDOW_MS)) || s.step >= this.lastStep) {
      this.t1 = now;
      this.steps = n;
      this.timing = { ...s.timing };
      this.idle = s.workerBusy.map((b) => 1 - b);
      this.rows = [...s.workerRows];
      this.loss = s.batches[s.batches.length - 1]?.loss ?? NaN;
      this.stop.how = 'q';
    }
  }

  epoch(): void {}
  finish(): void {}
  close(): void {}
}

/**
 * Times one training run of `cfg` (threads, batch size, kernels…) on `data`. The training set is
 * cut to whole batches; if it ends before the window is full, the window is what the epoch had.
 */
export async function measureThroughput(cfg: Config, data: Datasets, w: WindowOptions = DEFAULT_WINDOW): Promise<Measurement> {
  const B = cfg.batchSize;
  const stepsAvailable = Math.floor(data.train.count / B);
  if (stepsAvailable < 2) {
    throw new UsageError(`--batch-size: ${B} leaves fewer than 2 steps in the ${data.train.count} training images; choose a smaller batch size`);
  }
  const warmup = Math.max(1, Math.min(w.warmupSteps, Math.floor(stepsAvailable / 4)));
  const stop: { how: 'q' | 'SIGINT' | null } = { how: null };
  const probe = new WindowProbe(warmup, w, stepsAvailable, stop);
  collectGarbage();
  let peak = process.memoryUsage.rss();
  // Sampled off the hot path: the main thread mostly waits on the pool, so a 20 ms timer costs nothing.
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  try {
    await train({ ...cfg, epochs: 1, limitTrain: stepsAvailable * B }, probe, stop, { data });
  } finally {
    clearInterval(timer);
  }
  peak = Math.max(peak, process.memoryUsage.rss());
  if (probe.t1 === 0) throw new Error(`bench: the run at batch ${B} ended before its measuring window closed`);
  if (!Number.isFinite(probe.loss)) {
    throw new Error(`bench: the run at ${cfg.threads} threads, batch ${B} has loss ${probe.loss}; not reporting its speed`);
  }
  const seconds = (probe.t1 - probe.t0) / 1000;
  return {
    samplesPerSec: (probe.steps * B) / seconds, steps: probe.steps, seconds, timing: probe.timing,
    idle: probe.idle, rows: probe.rows, peakRssMiB: peak / 2 ** 20, family: probe.family,
  };
}

/** A validated training configuration for one measurement; its output folder is `out` (a temp dir). */
export function runConfig(s: RunSettings, threads: number, batchSize: number, out: string): Config {
  return validate({
    model: s.model.kind, hidden: [...s.model.hidden], ...(s.model.kind === 'cnn' ? { channels: [...s.model.channels] } : {}),
    dataset: s.dataset, dataDir: s.dataDir, download: false, kernels: s.kernels, oversubscribe: s.oversubscribe,
    threads, batchSize, epochs: 1, limitTest: s.limitTest, out, overwrite: true, logEvery: 1e9,
  });
}

/** Loads the dataset named in the settings (downloading it if missing, as training would). */
export async function loadBenchData(s: Pick<RunSettings, 'dataset' | 'dataDir'>): Promise<Datasets> {
  return loadDatasets(validate({ dataset: s.dataset, dataDir: s.dataDir || undefined }));
}

export interface ScalingOptions extends Partial<RunSettings> {
  threads?: number[];
  batchSizes?: number[];
  repeats?: number;
  window?: Partial<WindowOptions>;
  /** already loaded data (default: load from dataDir once) */
  data?: Datasets;
  /** where the JSON goes (default <package>/bench/results); null: not saved */
  outDir?: string | null;
  /** where scaling.png goes (default plots); null: no chart */
  plotsDir?: string | null;
  /** peer levels to draw and store (from bench peers) */
  peers?: ScalingPeer[];
  log?: (line: string) => void;
}

/** One configuration's result: the chart's fields plus where the time goes. */
export interface ScalingResult extends ScalingRun {
  speedup: number;
  efficiency: number;
  /** threads of the run speedup is measured against (the fewest measured at this batch size) */
  baseThreads: number;
  minSamplesPerSec: number;
  maxSamplesPerSec: number;
  /** samples/s of every repeat, in repeat order */
  samples: number[];
  /** medians over repeats of the step-time split and of each worker's idle share */
  stepMs: number;
  computeMs: number;
  reduceMs: number;
  waitMs: number;
  overheadMs: number;
  /** parts of computeMs (gather, forward, backward: the input gradients) and of reduceMs (the weight gradients,
   *  the optimizer, the transposed copy's upkeep) */
  gatherMs: number;
  forwardMs: number;
  backwardMs: number;
  wgradMs: number;
  updateMs: number;
  syncMs: number;
  idle: number[];
  /** medians over repeats of each worker's rows per step */
  rows: number[];
  /** the largest peak over repeats, MiB */
  peakRssMiB: number;
  /** median steps in the window */
  steps: number;
}

export interface ScalingBenchReport extends ScalingReport {
  machine: ReturnType<typeof machineInfo> & { loadavgBefore: number[]; loadavgAfter: number[] };
  /** the network, as describeModel writes it */
  model: string;
  /** the same, as a ModelSpec */
  modelSpec: ModelSpec;
  /** the step predicted at more cores from the 1- and 2-thread runs (scalingModel): a model, not a measurement */
  prediction: ScalingModel[];
  runs: ScalingResult[];
  dataset: string;
  /** every thread got work, also beyond the core count */
  oversubscribe: boolean;
  repeats: number;
  window: WindowOptions;
  seconds: number;
}

export async function benchScaling(opts: ScalingOptions = {}): Promise<ScalingBenchReport> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const threads = opts.threads ?? [1, 2, 4, 8];
  const batchSizes = opts.batchSizes ?? [32, 64, 128, 256, 512];
  const repeats = opts.repeats ?? 5;
  const window = { ...DEFAULT_WINDOW, ...opts.window };
  const settings: RunSettings = {
    model: opts.model ?? DEFAULT_MODEL, dataset: opts.dataset ?? 'mnist', dataDir: opts.dataDir ?? '',
    kernels: opts.kernels ?? 'auto', oversubscribe: opts.oversubscribe ?? false, limitTest: opts.limitTest ?? 256,
  };
  // Validate every configuration before spending any time.
  for (const t of threads) for (const b of batchSizes) runConfig(settings, t, b, 'unused');
  const loadavgBefore = loadavg();
  const data = opts.data ?? await loadBenchData(settings);
  const configs = batchSizes.flatMap((batchSize) => threads.map((t) => ({ threads: t, batchSize })));
  const measured = configs.map(() => [] as Measurement[]);
  const tmp = await mkdtemp(join(tmpdir(), 'mnist-par-bench-'));
  const tStart = performance.now();
  let family = '';
  try {
    for (let r = 0; r < repeats; r++) {
      const t0 = performance.now();
      const order = configs.map((_, i) => i);
      if (r % 2 === 1) order.reverse();
      for (const i of order) {
        const c = configs[i];
        const m = await measureThroughput(runConfig(settings, c.threads, c.batchSize, join(tmp, 'run')), data, window);
        measured[i].push(m);
        family = m.family;
      }
      log(`repeat ${r + 1}/${repeats}: ${configs.length} runs in ${((performance.now() - t0) / 1000).toFixed(1)} s` +
          ` (load average ${loadavg()[0].toFixed(2)})`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }

  const runs = configs.map((c, i) => summarize(c.threads, c.batchSize, measured[i]));
  for (const bs of batchSizes) {
    const same = runs.filter((r) => r.batchSize === bs);
    const base = same.reduce((a, b) => (b.threads < a.threads ? b : a));
    for (const r of same) {
      r.baseThreads = base.threads;
      r.speedup = r.samplesPerSec / base.samplesPerSec;
      r.efficiency = (r.speedup * base.threads) / r.threads;
    }
  }
  const report: ScalingBenchReport = {
    kind: 'scaling', prediction: scalingModels(runs),
    machine: { ...machineInfo(relaxedSimdSupported()), loadavgBefore, loadavgAfter: loadavg() },
    kernels: family, model: describeModel(settings.model), modelSpec: settings.model, dataset: settings.dataset,
    oversubscribe: settings.oversubscribe, repeats, window,
    seconds: (performance.now() - tStart) / 1000, runs, ...(opts.peers?.length ? { peers: opts.peers } : {}),
  };
  log(formatScalingTable(report));
  const m = report.machine;
  log(`${report.model} · ${m.cpu} · ${m.cores} cores · Node ${m.node} · ${family} kernels · ` +
      `${settings.oversubscribe ? 'every thread working · ' : ''}` +
      `median of ${repeats} · load average ${m.loadavgBefore[0].toFixed(2)} before, ${m.loadavgAfter[0].toFixed(2)} after`);
  await saveScaling(report, settings.model.kind, opts.outDir, opts.plotsDir, log);
  return report;
}

/** The default network of the training benchmarks: the default mlp. */
export const DEFAULT_MODEL: ModelSpec = { kind: 'mlp', hidden: DEFAULT_HIDDEN };

/** The name of a scaling result of a `kind` network: scaling(-<timestamp>.json, .png) for the mlp, as before
 *  the cnn, scaling-cnn(…) for the cnn. */
export function scalingPrefix(kind: ModelKind): string {
  return kind === 'mlp' ? 'scaling' : `scaling-${kind}`;
}

/** Writes the JSON (unless outDir is null) and the chart (unless plotsDir is null), named for the `kind` of
 *  network (scalingPrefix); returns the JSON path. */
export async function saveScaling(report: ScalingReport, kind: ModelKind, outDir: string | null | undefined,
                                  plotsDir: string | null | undefined, log: (line: string) => void): Promise<string | null> {
  let path: string | null = null;
  const prefix = scalingPrefix(kind);
  if (outDir !== null) {
    path = await saveJson(outDir ?? resultsDir(), prefix, report);
    log(`saved ${path}`);
  }
  if (plotsDir !== null) {
    const dir = plotsDir ?? 'plots';
    try {
      await mkdir(dir, { recursive: true });
    } catch (e) {
      throw new UserError(`--plots ${dir}: cannot create the folder (${(e as NodeJS.ErrnoException).code}); pass a writable --plots`);
    }
    await writeScalingChart(join(dir, `${prefix}.png`), report);
    log(`saved ${join(dir, `${prefix}.png`)}`);
  }
  return path;
}

function summarize(threads: number, batchSize: number, ms: Measurement[]): ScalingResult {
  const sps = ms.map((m) => m.samplesPerSec);
  const med = (f: (m: Measurement) => number) => median(ms.map(f));
  return {
    threads, batchSize, samplesPerSec: median(sps), speedup: NaN, efficiency: NaN, baseThreads: NaN,
    minSamplesPerSec: Math.min(...sps), maxSamplesPerSec: Math.max(...sps), samples: sps,
    stepMs: med((m) => m.timing.stepMs), computeMs: med((m) => m.timing.computeMs),
    reduceMs: med((m) => m.timing.reduceMs), waitMs: med((m) => m.timing.waitMs),
    overheadMs: med((m) => m.timing.overheadMs),
    gatherMs: med((m) => m.timing.gatherMs ?? NaN), forwardMs: med((m) => m.timing.forwardMs ?? NaN),
    backwardMs: med((m) => m.timing.backwardMs ?? NaN), wgradMs: med((m) => m.timing.wgradMs ?? NaN),
    updateMs: med((m) => m.timing.updateMs ?? NaN), syncMs: med((m) => m.timing.syncMs ?? NaN),
    idle: Array.from({ length: threads }, (_, k) => med((m) => m.idle[k] ?? NaN)),
    rows: Array.from({ length: threads }, (_, k) => med((m) => m.rows[k] ?? NaN)),
    peakRssMiB: Math.max(...ms.map((m) => m.peakRssMiB)), steps: med((m) => m.steps),
  };
}

/** A line per configuration: throughput, its spread, scaling, the step split, worker idle share and memory; then
 *  each worker's rows per step and busy share; then the model's predictions for more cores, when it has them. */
export function formatScalingTable(report: { runs: ScalingResult[]; prediction?: ScalingModel[] }): string {
  const f = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : '–');
  const pct = (x: number) => (Number.isFinite(x) ? `${Math.round(100 * x)}%` : '–');
  const header = ['batch', 'threads', 'samples/s', 'min–max', 'speedup', 'eff', 'step ms', 'rows', '(gather',
    'fwd', 'bwd)', 'outputs', '(wgrad', 'update', 'sync)', 'wait', 'coord', 'idle avg', 'idle max', 'RSS MiB'];
  const rows = report.runs.map((r) => {
    const idle = r.idle.filter(Number.isFinite);
    return [String(r.batchSize), String(r.threads), Math.round(r.samplesPerSec).toLocaleString('en-US'),
      `${Math.round(r.minSamplesPerSec)}–${Math.round(r.maxSamplesPerSec)}`, `×${f(r.speedup, 2)}`, pct(r.efficiency),
      f(r.stepMs, 2), f(r.computeMs, 2), f(r.gatherMs, 2), f(r.forwardMs, 2), f(r.backwardMs, 2), f(r.reduceMs, 2),
      f(r.wgradMs, 2), f(r.updateMs, 2), f(r.syncMs, 2), f(r.waitMs, 2), f(r.overheadMs, 2),
      idle.length ? pct(idle.reduce((a, b) => a + b, 0) / idle.length) : '–', idle.length ? pct(Math.max(...idle)) : '–',
      f(r.peakRssMiB, 0)];
  });
  const lines = [textTable(header, rows, 0),
    'step ms = wall time per step; rows/outputs/wait split an average worker\'s step (wait includes coord, the ' +
    'coordinator\'s serial work): rows = its rows\' half (gather, forward, bwd: the loss and input gradients), outputs = ' +
    'its outputs\' half (wgrad: their weight gradients over all the batch\'s rows, the reduce; update: the optimizer; ' +
    'sync: the transposed weights), all in ms; idle = 1 − busy share per worker',
    '',
    'each worker\'s rows of the batch per step and busy share (worker: rows busy%):'];
  for (const r of report.runs) {
    const cells = r.rows.map((n, k) => `w${k} ${Number.isFinite(n) ? Math.round(n) : '–'} ${pct(1 - r.idle[k])}`);
    lines.push(`  batch ${r.batchSize}, ${r.threads} thread${r.threads === 1 ? '' : 's'}: ${cells.join(' · ')}`);
  }
  if (report.prediction && report.prediction.length > 0) {
    lines.push('', 'MODEL, not a measurement: the step predicted at more cores from the 1- and 2-thread rows above ' +
      '(formula in the README, "Scaling")');
    lines.push(textTable(['batch', 'cores', 'step ms', 'samples/s', 'eff', 'rows', 'outputs', 'wait'],
      report.prediction.map((m) => [String(m.batchSize), String(m.threads), f(m.stepMs, 2),
        Math.round(m.samplesPerSec).toLocaleString('en-US'), pct(m.efficiency), f(m.rowsMs, 2), f(m.outputsMs, 2),
        f(m.waitMs, 2)]), 0));
  }
  return lines.join('\n');
}

/** The model's prediction of one configuration (see scalingModel). */
export interface ScalingModel {
  batchSize: number;
  threads: number;
  stepMs: number;
  samplesPerSec: number;
  efficiency: number;
  /** the step's parts: each half's time per thread, and the wait */
  rowsMs: number;
  outputsMs: number;
  waitMs: number;
}

/** Cores the model predicts. */
export const MODEL_CORES = [4, 8, 16];

/**
 * A model of the step on T cores, from the runs at 1 and 2 threads of one batch size. Each half h of the step
 * (rows, outputs) takes, per thread, t_h(T) = t_h(1) · (e_h + (1 − e_h) / T), where e_h = 2·t_h(2)/t_h(1) − 1
 * (clamped to [0, 1]) is the share of the half that did not shrink from 1 to 2 threads (a Karp–Flatt serial
 * fraction: work every thread repeats, such as reading all the batch's activations in the outputs' half, and
 * the slowdown of sharing memory bandwidth). The wait (barriers, skew) grows with the rounds of a tree:
 * w(T) = w(1) + (w(2) − w(1)) · log2 T. step(T) = t_rows(T) + t_outputs(T) + w(T); efficiency = step(1) / (T·step(T)).
 */
export function scalingModel(one: ScalingResult, two: ScalingResult, T: number): ScalingModel {
  const serial = (t1: number, t2: number) => Math.min(1, Math.max(0, (2 * t2) / t1 - 1));
  const half = (t1: number, t2: number) => t1 * (serial(t1, t2) + (1 - serial(t1, t2)) / T);
  const rowsMs = half(one.computeMs, two.computeMs);
  const outputsMs = half(one.reduceMs, two.reduceMs);
  const waitMs = one.waitMs + Math.max(0, two.waitMs - one.waitMs) * Math.log2(T);
  const stepMs = rowsMs + outputsMs + waitMs;
  return {
    batchSize: one.batchSize, threads: T, stepMs, samplesPerSec: (one.batchSize * 1000) / stepMs,
    efficiency: one.stepMs / (T * stepMs), rowsMs, outputsMs, waitMs,
  };
}

/** The model for every batch size measured at both 1 and 2 threads, at MODEL_CORES. */
export function scalingModels(runs: ScalingResult[]): ScalingModel[] {
  const out: ScalingModel[] = [];
  for (const bs of [...new Set(runs.map((r) => r.batchSize))]) {
    const one = runs.find((r) => r.batchSize === bs && r.threads === 1);
    const two = runs.find((r) => r.batchSize === bs && r.threads === 2);
    if (one && two) for (const T of MODEL_CORES) out.push(scalingModel(one, two, T));
  }
  return out;
}
