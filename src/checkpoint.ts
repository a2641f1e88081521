// Training checkpoints: the full state of a run in one safetensors file, so that a resumed run continues
// bit for bit. The weights keep their nn.Sequential names (model.ts tensorNames: an mlp's 0.weight, 0.bias,
// 2.weight, …, a cnn's 0.weight, 3.weight, 7.weight, 9.weight); which network it holds is in those shapes and in
// the configuration (--model, --channels, --hidden), which must agree. Beside the weights:
//   optimizer.state.K   (P)   the optimizer's moment arrays (Adam: K=0 first, K=1 second; SGD: K=0 momentum)
//   epoch.permutation   (N)   the permutation of the epoch in progress (only mid-epoch; exact in float32
//                             because indices stay below 2^24)
// and in the header's __metadata__, under "mnist-par.state", the JSON TrainState below: counters and the few
// values early stopping and best-model tracking need, so its size does not grow with the run (the metrics
// history is in the run's CSV files, metrics-files.ts), and for a run on your own data (--data) its class
// names and normalization (a built-in dataset's are constants, so older checkpoints, which lack them, are
// runs on one).
import { join } from 'node:path';
import { statSync } from 'node:fs';
import { modelSpec, validate, type Config } from './config.js';
import { MAX_CLASSES, MIN_CLASSES } from './data/datasets.js';
import { printable, UsageError, UserError } from './errors.js';
import { CLASSES, describeModel, sameModel, type Layout } from './model.js';
import { optimizerStateCount } from './optim.js';
import type { RngState } from './rng.js';
import { paramsFromTensors, readSafetensors, weightTensors, writeSafetensors, type Tensor } from './safetensors.js';

export const STATE_KEY = 'mnist-par.state';
export const LAST = 'checkpoint-last.safetensors';
export const BEST = 'checkpoint-best.safetensors';

/** Early-stopping bookkeeping: the best monitored value so far and the epochs since it improved. */
export interface EarlyStopState {
  best: number | null;
  bestEpoch: number;
  epochsWithoutImprovement: number;
}

export interface TrainState {
  version: 2;
  config: Config;
  /** the folder the run started in: relative paths in `config` are relative to it */
  cwd: string;
  /** the kernel family that computed this state (runs continue bit for bit only with the same one) */
  kernelFamily: string;
  /** the epoch in progress (batch > 0) or the next one to start (batch = 0), 1-based */
  epoch: number;
  /** next batch of `epoch` to run */
  batch: number;
  /** optimizer steps done */
  step: number;
  /** generator state after the permutation of `epoch` was drawn (batch > 0) or before (batch = 0) */
  rng: RngState;
  /** sums over the finished batches of the epoch in progress */
  partial: { lossSum: number; correct: number; seen: number; seconds: number };
  elapsedSec: number;
  /** best epoch by validation accuracy so far */
  best: { epoch: number; valAccuracy: number } | null;
  early: EarlyStopState;
  /** your own data's classes (the network's outputs, in order) and normalization; absent for a built-in dataset */
  data?: OwnDataState;
}

export interface OwnDataState {
  classes: string[];
  mean: number;
  std: number;
}

export interface Checkpoint {
  file: string;
  state: TrainState;
  params: Float32Array;
  optimizerState: Float32Array[];
  perm: Uint32Array | null;
}

export async function saveCheckpoint(path: string, layout: Layout, params: Float32Array, optimizerState: Float32Array[],
                                     perm: Uint32Array | null, state: TrainState): Promise<void> {
  const tensors: Tensor[] = weightTensors(layout, params);
  optimizerState.forEach((data, k) => tensors.push({ name: `optimizer.state.${k}`, shape: [data.length], data }));
  if (perm) tensors.push({ name: 'epoch.permutation', shape: [perm.length], data: Float32Array.from(perm) });
  await writeSafetensors(path, tensors, { format: 'pt', producer: 'mnist-par', [STATE_KEY]: JSON.stringify(state) });
}

/** A checkpoint file, or a folder holding checkpoint-last.safetensors. */
export function checkpointPath(fileOrDir: string): string {
  try {
    if (statSync(fileOrDir).isDirectory()) return join(fileOrDir, LAST);
  } catch {
    // not there: readSafetensors names it
  }
  return fileOrDir;
}

export async function loadCheckpoint(fileOrDir: string): Promise<Checkpoint> {
  const file = checkpointPath(fileOrDir);
  const { tensors, metadata } = await readSafetensors(file);
  const text = metadata[STATE_KEY];
  if (text === undefined) {
    throw new UserError(`${file}: holds weights but no training state (no ${STATE_KEY} metadata); resume from a ${LAST} or ${BEST} that mnist-par train wrote`);
  }
  let state: TrainState;
  try {
    state = JSON.parse(text) as TrainState;
  } catch {
    throw new UserError(`${file}: the training state in its header is not valid JSON; the checkpoint is damaged, resume from another one`);
  }
  if (((state?.version as number) !== 1 && state?.version !== 2) || typeof state.config !== 'object' || !Array.isArray(state.config?.hidden)) {
    throw new UserError(`${file}: training state of an unknown version; resume from a checkpoint this mnist-par wrote`);
  }
  // version 1 also carried every batch and epoch record (now only in the CSV files) and no start folder
  if ((state.version as number) === 1) {
    const { batches: _b, epochs: _e, ...rest } = state as TrainState & { batches?: unknown; epochs?: unknown };
    state = { ...rest, version: 2, cwd: '' };
  }
  // Everything below comes from the file: check what training relies on before trusting it.
  const damaged = (what: string): UserError =>
    new UserError(`${file}: ${what}; the checkpoint is damaged or inconsistent, resume from another one`);
  let config: Config;
  try {
    config = validate(state.config as unknown as Record<string, unknown>);
  } catch (e) {
    if (e instanceof UsageError) throw damaged(`the configuration in its training state is invalid (${e.message})`);
    throw e;
  }
  const problem = stateProblem(state);
  if (problem) throw damaged(`its training state has ${problem}`);
  if ((state.data !== undefined) !== (config.data !== '')) {
    throw damaged(config.data !== '' ? 'its configuration trains on --data but its state names no classes' : 'its state names classes but its configuration trains on a built-in dataset');
  }
  state = { ...state, config };
  const classes = state.data?.classes.length ?? CLASSES;
  const { spec, layout, params } = paramsFromTensors(tensors, file, classes);
  const expected = modelSpec(config, classes);
  if (!sameModel(spec, expected)) {
    const an = spec.kind === 'mlp' ? 'an' : 'a';
    throw new UserError(`${file}: its weights are ${an} ${describeModel(spec)} but its configuration says ${describeModel(expected)}; the checkpoint is inconsistent`);
  }
  const P = layout.size;
  // exactly the moment arrays the configured optimizer steps with: optimizer.state.0 .. need-1
  const need = optimizerStateCount({ ...config, dampening: 0 });
  const stateNames = [...tensors.keys()].filter((name) => name.startsWith('optimizer.state.'));
  const wanted = Array.from({ length: need }, (_, k) => `optimizer.state.${k}`);
  if (stateNames.length !== need || wanted.some((name) => !tensors.has(name))) {
    throw damaged(`its optimizer ${config.optimizer}${config.optimizer === 'sgd' ? ` with momentum ${config.momentum}` : ''} needs ` +
      `${need} state tensor${need === 1 ? '' : 's'} (${wanted.join(', ') || 'none'}), found ${stateNames.length}` +
      `${stateNames.length > 0 ? ` (${stateNames.slice(0, 4).map((n) => printable(n)).join(', ')}${stateNames.length > 4 ? ', …' : ''})` : ''}`);
  }
  const optimizerState: Float32Array[] = [];
  for (const name of wanted) {
    const t = tensors.get(name)!;
    if (t.data.length !== P) {
      throw new UserError(`${file}: ${name} has ${t.data.length} values, expected ${P}; the checkpoint is inconsistent`);
    }
    const bad = t.data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw damaged(`its ${name} holds ${t.data[bad]} at index ${bad}`);
    optimizerState.push(t.data);
  }
  const p = tensors.get('epoch.permutation');
  if (p && p.shape.length !== 1) throw damaged(`its epoch.permutation has shape [${p.shape.slice(0, 4).join(', ')}${p.shape.length > 4 ? ', …' : ''}], expected [N]`);
  const perm = p ? permutation(p.data) : null;
  if (perm === undefined) throw damaged(`its epoch.permutation is not a permutation of 0..${p!.data.length - 1} (${permutationProblem(p!.data)})`);
  if (state.batch > 0 && perm === null) {
    throw new UserError(`${file}: saved in the middle of epoch ${state.epoch} but holds no epoch.permutation; the checkpoint is inconsistent`);
  }
  if (state.batch > 0 && state.batch * config.batchSize >= perm!.length) {
    throw damaged(`it was saved before batch ${state.batch + 1} of epoch ${state.epoch}, past the end of its ${perm!.length}-image permutation in batches of ${config.batchSize}`);
  }
  return { file, state, params, optimizerState, perm };
}

/** The permutation as indices, or undefined unless `values` holds each of 0..N-1 exactly once. */
function permutation(values: Float32Array): Uint32Array | undefined {
  const perm = new Uint32Array(values.length);
  const seen = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < 0 || v >= values.length || seen[v]) return undefined;
    seen[v] = 1;
    perm[i] = v;
  }
  return perm;
}

/** What is wrong with a permutation that permutation() refused, for the message. */
function permutationProblem(values: Float32Array): string {
  const seen = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v)) return `entry ${i} is ${v}, not an integer`;
    if (v < 0 || v >= values.length) return `entry ${i} is ${v}, out of range`;
    if (seen[v]) return `entry ${i} repeats ${v}`;
    seen[v] = 1;
  }
  return 'no problem';
}

/** A value from the file for a message; arrays and objects are named, not printed (they may nest deep). */
const shown = (v: unknown): string => (typeof v === 'object' ? (v === null ? 'null' : Array.isArray(v) ? 'an array' : 'an object') : printable(String(v)));
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isSeconds = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** The first field of a training state that training could not continue from, or null. */
function stateProblem(st: TrainState): string | null {
  if (!isCount(st.epoch) || st.epoch < 1) return `epoch ${shown(st.epoch)} (expected an integer ≥ 1)`;
  if (!isCount(st.batch)) return `batch ${shown(st.batch)} (expected an integer ≥ 0)`;
  if (!isCount(st.step) || st.step < st.batch) return `step ${shown(st.step)} (expected an integer ≥ batch ${st.batch})`;
  if (!Array.isArray(st.rng) || st.rng.length !== 4 || !st.rng.every((w) => isCount(w) && w <= 0xffffffff)) {
    return 'a random generator state that is not four uint32 values';
  }
  const part = st.partial as Partial<TrainState['partial']> | null;
  if (typeof part !== 'object' || part === null || !isSeconds(part.lossSum) || !isCount(part.correct) || !isCount(part.seen)
    || !isSeconds(part.seconds)) {
    return 'epoch sums (partial) that are not finite non-negative numbers';
  }
  if (!isSeconds(st.elapsedSec)) return `elapsedSec ${shown(st.elapsedSec)} (expected seconds ≥ 0)`;
  if (typeof st.cwd !== 'string') return `a start folder (cwd) ${shown(st.cwd)} that is not a path`;
  if (st.best !== null && (typeof st.best !== 'object' || !isCount(st.best.epoch) || typeof st.best.valAccuracy !== 'number')) {
    return 'a best epoch that is neither null nor an epoch and an accuracy';
  }
  const early = st.early as Partial<EarlyStopState> | null;
  if (typeof early !== 'object' || early === null || !(early.best === null || typeof early.best === 'number')
    || !isCount(early.bestEpoch) || !isCount(early.epochsWithoutImprovement)) {
    return 'early-stopping bookkeeping that is not a best value and two counts';
  }
  if (st.data !== undefined) return ownDataProblem(st.data);
  return null;
}

/** What is wrong with the classes and normalization a file records, or null. */
export function ownDataProblem(d: unknown): string | null {
  const o = d as Partial<OwnDataState> | null;
  if (typeof o !== 'object' || o === null) return 'data that is not an object of classes, mean and std';
  const c = o.classes;
  if (!Array.isArray(c) || c.length < MIN_CLASSES || c.length > MAX_CLASSES || !c.every((n) => typeof n === 'string')
    || new Set(c).size !== c.length) {
    return `classes that are not ${MIN_CLASSES} to ${MAX_CLASSES} distinct names`;
  }
  if (typeof o.mean !== 'number' || !Number.isFinite(o.mean) || typeof o.std !== 'number' || !Number.isFinite(o.std) || o.std <= 0) {
    return 'a normalization that is not a finite mean and a std > 0';
  }
  return null;
}
