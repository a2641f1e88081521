// Training checkpoints: the full state of a run in one safetensors file, so that a resumed run continues
// bit for bit. The weights keep their nn.Sequential names (0.weight, 0.bias, 2.weight, …); beside them:
//   optimizer.state.K   (P)   the optimizer's moment arrays (Adam: K=0 first, K=1 second; SGD: K=0 momentum)
//   epoch.permutation   (N)   the permutation of the epoch in progress (only mid-epoch; exact in float32
//                             because indices stay below 2^24)
// and in the header's __metadata__, under "mnist-par.state", the JSON TrainState below: counters and the few
// values early stopping and best-model tracking need, so its size does not grow with the run (the metrics
// history is in the run's CSV files, metrics-files.ts).
import { join } from 'node:path';
import { statSync } from 'node:fs';
import type { Config } from './config.js';
import { UserError } from './errors.js';
import { paramLayout, widths, type Layout } from './model.js';
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
  const { layers, params } = paramsFromTensors(tensors, file);
  const expected = widths(state.config.hidden);
  if (layers.join(',') !== expected.join(',')) {
    throw new UserError(`${file}: weights have layer widths ${layers.join(',')} but its configuration says ${expected.join(',')}; the checkpoint is inconsistent`);
  }
  const P = paramLayout(layers).size;
  const optimizerState: Float32Array[] = [];
  for (let k = 0; tensors.has(`optimizer.state.${k}`); k++) {
    const t = tensors.get(`optimizer.state.${k}`)!;
    if (t.data.length !== P) {
      throw new UserError(`${file}: optimizer.state.${k} has ${t.data.length} values, expected ${P}; the checkpoint is inconsistent`);
    }
    optimizerState.push(t.data);
  }
  const p = tensors.get('epoch.permutation');
  const perm = p ? Uint32Array.from(p.data) : null;
  if (state.batch > 0 && perm === null) {
    throw new UserError(`${file}: saved in the middle of epoch ${state.epoch} but holds no epoch.permutation; the checkpoint is inconsistent`);
  }
  return { file, state, params, optimizerState, perm };
}
