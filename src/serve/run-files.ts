// What `serve` tells the page about the model: its summary, and what its run's files say. Read again for
// every request, since a run still training keeps rewriting them; a file that is missing or damaged leaves
// its part out and says why, and never stops the page.
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { validate, type Config } from '../config.js';
import type { DataInfo, DatasetName } from '../data/datasets.js';
import { CONFUSION_PNG, ERRORS_PNG } from '../eval/pictures.js';
import { UserError } from '../errors.js';
import { EPOCH_CSV } from '../metrics-files.js';
import type { LoadedModel } from '../predict.js';
import { describeModel } from '../model.js';
import { RUN_CHARTS } from '../runs.js';
import { datasetSizes, modelSummary, specFields } from '../summary.js';
import { parseEpochCsv } from '../ui/csv.js';
import type { InfoResponse } from './protocol.js';

const [BATCH_PNG, EPOCH_PNG] = RUN_CHARTS;
/** The charts the page shows, in its order, where the plot folder holds them. */
const CHARTS: readonly { file: string; title: string }[] = [
  { file: EPOCH_PNG, title: 'loss and accuracy per epoch' },
  { file: BATCH_PNG, title: 'loss and accuracy per batch' },
  { file: CONFUSION_PNG, title: 'confusion matrix on the test set (mnist-par eval)' },
  { file: ERRORS_PNG, title: 'the most confident mistakes (mnist-par eval)' },
];

export interface ServedModel {
  /** the model file, as given or found */
  path: string;
  model: LoadedModel;
  /** the built-in dataset it was trained on, or null for your own data */
  dataset: DatasetName | null;
  /** its classes and normalization */
  info: DataInfo;
  /** the folder of the run's charts */
  plots: string;
}

export async function runInfo(m: ServedModel): Promise<InfoResponse> {
  const runDir = dirname(m.path);
  const cfg = await runConfig(join(runDir, 'config.json'), m);
  const { epochs, note } = await epochRows(join(runDir, EPOCH_CSV));
  const charts = [];
  for (const c of CHARTS) if (await isFile(join(m.plots, c.file))) charts.push(c);
  return {
    model: m.path, network: describeModel(m.model.spec), dataset: m.dataset ?? 'your own data', classes: [...m.info.classes],
    summary: modelSummary(cfg, { ...datasetSizes(cfg), classes: m.info.classes.length }), epochs, epochsNote: note, charts,
  };
}

/**
 * The model's network with the batch size, threads, optimizer and limits its run's config.json records, so
 * the summary's arena is the one that run built; train's defaults for what the file does not say.
 */
async function runConfig(file: string, m: ServedModel): Promise<Config> {
  const network = { ...specFields(m.model.spec), dataset: m.dataset ?? undefined };
  let saved: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(await readFile(file, 'utf8'));
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) saved = parsed as Record<string, unknown>;
  } catch { /* no config.json (a model copied elsewhere): the defaults */ }
  const kept: Record<string, unknown> = {};
  for (const key of ['batchSize', 'threads', 'optimizer', 'momentum', 'limitTrain', 'limitTest'] as const) {
    if (saved[key] !== undefined) kept[key] = saved[key];
  }
  try {
    return validate({ ...kept, ...network });
  } catch {
    return validate(network); // values this version does not accept: the defaults
  }
}

async function epochRows(file: string): Promise<{ epochs: InfoResponse['epochs']; note: string | null }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return { epochs: [], note: `no ${EPOCH_CSV} beside the model` };
  }
  try {
    return { epochs: parseEpochCsv(text, file), note: null };
  } catch (e) {
    if (e instanceof UserError) return { epochs: [], note: e.message };
    throw e;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
