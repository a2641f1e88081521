// `mnist-par plot`: re-renders the PNG charts from files a run or a benchmark left behind.
import { readFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { UserError } from './errors.js';
import { errorCode, makeDir } from './fsutil.js';
import { BATCH_CSV, EPOCH_CSV } from './metrics-files.js';
import { MODELS_ROOT, PLOTS_ROOT, newestRunFile, realFolder } from './runs.js';
import { writeBatchChart, writeEpochChart, writeScalingChart, type ScalingReport } from './ui/charts.js';
import { parseBatchCsv, parseEpochCsv } from './ui/csv.js';

export interface PlotOptions {
  /** folder holding batch_metrics.csv / epoch_metrics.csv; default the newest run's (skipped when only bench is given) */
  metrics?: string;
  /** a bench/results/scaling-*.json file */
  bench?: string;
  /** output folder; default plots/run-N for a numbered run's metrics, else `plots` */
  plots?: string;
}


/** The newest run's folder with metrics, else models/ (whose message then says that nothing is there). */
function newestMetrics(): string {
  try {
    return dirname(newestRunFile(EPOCH_CSV, '--metrics'));
  } catch {
    return MODELS_ROOT;
  }
}

/** Renders every chart it has data for and returns the PNG paths written. */
export async function plotCommand(opts: PlotOptions): Promise<string[]> {
  let outDir = opts.plots || PLOTS_ROOT;
  const jobs: { file: string; write: (path: string) => Promise<void> }[] = [];

  if (opts.metrics !== undefined || opts.bench === undefined) {
    const dir = opts.metrics ?? newestMetrics();
    // a numbered run's charts go beside the ones training drew for it
    const run = basename(realFolder(dir));
    if (!opts.plots && /^run-\d+$/.test(run)) outDir = join(PLOTS_ROOT, run);
    const batches = await readOptional(join(dir, BATCH_CSV), parseBatchCsv);
    const epochs = await readOptional(join(dir, EPOCH_CSV), parseEpochCsv);
    if (batches === undefined && epochs === undefined) {
      throw new UserError(`${dir}: found neither ${BATCH_CSV} nor ${EPOCH_CSV}; train first, or pass --metrics <dir> naming the folder a run wrote them to`);
    }
    if ((batches?.length ?? 0) === 0 && (epochs?.length ?? 0) === 0) {
      throw new UserError(`${dir}: the metrics files hold a header but no rows; let a run finish at least one batch, then plot again`);
    }
    if (batches !== undefined && batches.length > 0) {
      jobs.push({ file: 'batch_metrics.png', write: (p) => writeBatchChart(p, batches) });
    }
    if (epochs !== undefined && epochs.length > 0) {
      jobs.push({ file: 'epoch_metrics.png', write: (p) => writeEpochChart(p, epochs) });
    }
  }

  if (opts.bench !== undefined) {
    const report = parseScalingJson(await readText(opts.bench), opts.bench);
    jobs.push({ file: `${basename(opts.bench, extname(opts.bench))}.png`, write: (p) => writeScalingChart(p, report) });
  }

  try {
    await makeDir(outDir);
  } catch (e) {
    throw new UserError(`${outDir}: cannot create the output folder for the charts (${errorCode(e)}); choose another with --plots <dir>`);
  }
  const written: string[] = [];
  for (const job of jobs) {
    const path = join(outDir, job.file);
    try {
      await job.write(path);
    } catch (e) {
      if (e instanceof UserError) throw e; // a full disk says so itself
      const code = errorCode(e);
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOSPC' || code === 'ENOENT' || code === 'ENOTDIR') {
        throw new UserError(`${outDir}: cannot write ${job.file} there (${code}); make the folder writable or choose another with --plots <dir>`);
      }
      throw e;
    }
    written.push(path);
  }
  return written;
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    const code = errorCode(e);
    const what = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, expected a file' : code;
    throw new UserError(`${file}: cannot read it (${what}); check the path`);
  }
}

/** The parsed file, or undefined when it does not exist (a run may have stopped before writing it). */
async function readOptional<T>(file: string, parse: (text: string, file: string) => T[]): Promise<T[] | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (errorCode(e) === 'ENOENT') return undefined;
    throw new UserError(`${file}: cannot read it (${errorCode(e)}); check the path and its permissions`);
  }
  return parse(text, file);
}

/** Checks a scaling benchmark result (schema: ScalingReport in ui/charts.ts); `file` names it in messages. */
export function parseScalingJson(text: string, file: string): ScalingReport {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message}); expected a scaling result written by the scaling benchmark`);
  }
  const bad = (what: string): never => {
    throw new UserError(`${file}: ${what}; expected a scaling result written by the scaling benchmark (bench/results/scaling-*.json)`);
  };
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return bad('the top level is not an object');
  const o = data as Record<string, unknown>;
  if (o.kind !== 'scaling') bad(`"kind" is ${JSON.stringify(o.kind)}, not "scaling"`);
  const m = o.machine as Record<string, unknown> | undefined;
  if (typeof m !== 'object' || m === null) bad('"machine" is missing');
  const machine = {
    cpu: typeof m!.cpu === 'string' ? m!.cpu : 'unknown CPU',
    cores: typeof m!.cores === 'number' ? m!.cores : NaN,
    node: typeof m!.node === 'string' ? m!.node : 'unknown',
  };
  if (!Array.isArray(o.runs) || o.runs.length === 0) bad('"runs" is missing or empty');
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  const runs = (o.runs as unknown[]).map((r, i) => {
    const x = r as Record<string, unknown>;
    if (typeof x !== 'object' || x === null || !num(x.threads) || x.threads < 1 || !num(x.batchSize) || !num(x.samplesPerSec)) {
      return bad(`runs[${i}] needs numbers threads ≥ 1, batchSize and samplesPerSec, found ${JSON.stringify(r)}`);
    }
    return {
      threads: x.threads, batchSize: x.batchSize, samplesPerSec: x.samplesPerSec,
      ...(num(x.efficiency) ? { efficiency: x.efficiency } : {}),
      ...(num(x.speedup) ? { speedup: x.speedup } : {}),
    };
  });
  if (o.peers !== undefined && !Array.isArray(o.peers)) bad('"peers" is not a list');
  const peers = ((o.peers ?? []) as unknown[]).map((p, i) => {
    const x = p as Record<string, unknown>;
    if (typeof x !== 'object' || x === null || typeof x.name !== 'string' || !num(x.batchSize) || !num(x.samplesPerSec)) {
      return bad(`peers[${i}] needs name, batchSize and samplesPerSec, found ${JSON.stringify(p)}`);
    }
    return {
      name: x.name, batchSize: x.batchSize, samplesPerSec: x.samplesPerSec,
      ...(num(x.threads) ? { threads: x.threads } : {}),
      ...(num(x.blasThreads) ? { blasThreads: x.blasThreads } : {}),
      ...(typeof x.blas === 'string' ? { blas: x.blas } : {}),
    };
  });
  return {
    kind: 'scaling', machine, kernels: typeof o.kernels === 'string' ? o.kernels : 'unknown',
    ...(typeof o.model === 'string' ? { model: o.model } : {}), runs, peers,
  };
}
