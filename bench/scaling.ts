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
    if ((n >= this.w.minSteps && now - this.t0 >= this.w.minMs) || s.step >= this.lastStep) {
      this.t1 = now;
      this.steps = n;
      this.timing = { ...s.timing };
      this.idle = s.workerBusy.map((b) => 1 - b);
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
    idle: probe.idle, peakRssMiB: peak / 2 ** 20, family: probe.family,
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
  /** parts of computeMs (gather, forward, backward) and of reduceMs (the transposed copy's upkeep) */
  gatherMs: number;
  forwardMs: number;
  backwardMs: number;
  syncMs: number;
  idle: number[];
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
    kind: 'scaling',
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
    backwardMs: med((m) => m.timing.backwardMs ?? NaN), syncMs: med((m) => m.timing.syncMs ?? NaN),
    idle: Array.from({ length: threads }, (_, k) => med((m) => m.idle[k] ?? NaN)),
    peakRssMiB: Math.max(...ms.map((m) => m.peakRssMiB)), steps: med((m) => m.steps),
  };
}

/** A line per configuration: throughput, its spread, scaling, the step split, worker idle share and memory. */
export function formatScalingTable(report: { runs: ScalingResult[] }): string {
  const f = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : '–');
  const pct = (x: number) => (Number.isFinite(x) ? `${Math.round(100 * x)}%` : '–');
  const header = ['batch', 'threads', 'samples/s', 'min–max', 'speedup', 'eff', 'step ms', 'compute', '(gather',
    'fwd', 'bwd)', 'reduce', '(sync)', 'wait', 'coord', 'idle avg', 'idle max', 'RSS MiB'];
  const rows = report.runs.map((r) => {
    const idle = r.idle.filter(Number.isFinite);
    return [String(r.batchSize), String(r.threads), Math.round(r.samplesPerSec).toLocaleString('en-US'),
      `${Math.round(r.minSamplesPerSec)}–${Math.round(r.maxSamplesPerSec)}`, `×${f(r.speedup, 2)}`, pct(r.efficiency),
      f(r.stepMs, 2), f(r.computeMs, 2), f(r.gatherMs, 2), f(r.forwardMs, 2), f(r.backwardMs, 2), f(r.reduceMs, 2),
      f(r.syncMs, 2), f(r.waitMs, 2), f(r.overheadMs, 2),
      idle.length ? pct(idle.reduce((a, b) => a + b, 0) / idle.length) : '–', idle.length ? pct(Math.max(...idle)) : '–',
      f(r.peakRssMiB, 0)];
  });
  return textTable(header, rows, 0) + '\n' +
    'step ms = wall time per step; compute/reduce/wait split an average worker\'s step (wait includes coord, the ' +
    'coordinator\'s serial work); gather/fwd/bwd are parts of compute, sync (the transposed weights\' upkeep) of ' +
    'reduce, all in ms; idle = 1 − busy share per worker';
}
