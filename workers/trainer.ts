// A worker thread of the pool, one of `threads` that train together. Views over the shared arena are built
// once when the module loads; a task carries only indices and a few scalars, and results go back through the
// arena (per-shard and per-step sums), so a message never carries image data or weights.
//
// Tasks (Piscina named exports):
//   runEpoch     the steps of an epoch, in lockstep with the other workers: trainStep, once per batch
//   evaluate     one evaluation shard of the test set: forward + loss in chunks
//   syncWeights  one slice of the transposed weights, after the parameters were set from outside
//
// Who this worker is: `thread`, its index for its busy-time counters, is claimed once when it loads. Which
// micro-shards and which parameter slice it works on is the epoch task's `participant`, given by the
// coordinator (so that when a thread dies the coordinator knows which one).
import { workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import {
  arenaViews, batchViews, splitRange, BUSY, BUSY_BACKWARD, BUSY_COMPUTE, BUSY_FORWARD, BUSY_GATHER, BUSY_REDUCE,
  BUSY_SYNC, type ArenaLayout,
} from '../src/memory.js';
import { Control, PeerAbort } from '../src/control.js';
import { layerViewsWithTransposed, syncTransposed, type RowRange } from '../src/mlp.js';
import { backward, backwardGroup, evaluate as evaluateRows, forward, probsOf } from '../src/network.js';
import type { OptimizerConfig } from '../src/optim.js';
import { loadKernels, type KernelFamily } from '../src/kernels/wasm.js';
import { BatchRows } from './batch.js';
import { injectFault, injectLoadFault, vanished, Vanish } from './faults.js';

export interface WorkerInit {
  memory: WebAssembly.Memory;
  layout: ArenaLayout;
  optimizer: OptimizerConfig;
  kernels: KernelFamily;
  /** dataset normalization: x ↦ (x/255 − mean) / std */
  mean: number;
  std: number;
  labelSmoothing: number;
  /** [start, end) of the parameter slice owned by participant k (one per thread; empty for k ≥ active) */
  slices: [number, number][];
  /** participants that get micro-shards and slices: min(threads, cores) */
  active: number;
  /** milliseconds to spin at a barrier before sleeping (0 when threads outnumber cores) */
  spinMs: number;
  /** seed of the augmentation transforms, or null for none */
  augment: number | null;
}

export interface EvalTask { shard: number; start: number; end: number }
/** Steps [from, to) of an epoch; batch b covers perm[b·batchSize, min((b+1)·batchSize, trainCount)).
 *  `participant` (0..threads-1) is given by the coordinator, so that when a thread dies it knows which one. */
export interface EpochTask {
  from: number; to: number; batchSize: number; trainCount: number; firstT: number; epoch: number; participant: number;
}

const init = workerData as WorkerInit;
const views = arenaViews(init.memory, init.layout);
const model = views.model;
const S = init.layout.spec.shards;
const T = init.layout.spec.threads;
const ROWS = init.layout.spec.shardRows;
const CLASSES = model.layers[model.layers.length - 1];
const buffers = batchViews(init.memory, views);
const kernels = await loadKernels(init.kernels, init.memory);
// the parameters, with the transposed weights the family's forward pass may read (unused otherwise)
const net = layerViewsWithTransposed(views.params, views.paramsT, model);
const batch = new BatchRows(kernels, buffers, model, init.layout.spec.pixels, init);
const control = new Control(views.control);

const thread = control.claimThread();
injectLoadFault(thread);
/** where this thread's busy-time counters start in views.busy */
const busy = BUSY * (thread % T);

/** The share of an epoch's work that participant k does. */
interface Participant {
  /** micro-shards [s0, s1): contiguous, so their rows lie together in every batch */
  s0: number;
  s1: number;
  /** the parameter slice it reduces and updates */
  slice: number;
}

function participant(k: number): Participant {
  // participants k ≥ active pass the barriers without work: more busy threads than cores only add switches
  const [s0, s1] = k < init.active ? splitRange(S, init.active, k) : [0, 0];
  return { s0, s1, slice: k };
}

/** Where this thread is in its epoch, for the message if it fails: "forwardBackward (step 5, shard 2)". */
interface Progress { phase: 'forwardBackward' | 'reduceStep'; step: number; what: 'shard' | 'slice'; index: number }

// the last training step this thread finished (0 before any): evaluation faults are placed by it
let lastStep = 0;

export function runEpoch(task: EpochTask): void | Promise<never> {
  const at: Progress = { phase: 'forwardBackward', step: 0, what: 'shard', index: 0 };
  try {
    const me = participant(task.participant);
    for (let b = task.from; b < task.to; b++) {
      trainStep(task, me, b, at);
      lastStep = at.step;
      if (control.stopsAfter(b)) return;
    }
  } catch (e) {
    if (e instanceof Vanish) return vanished();
    // release the peers waiting for this thread at a barrier
    control.abort();
    if (e instanceof PeerAbort) throw e;
    const why = e instanceof Error ? e.message : String(e);
    throw new Error(`${at.phase} (step ${at.step}, ${at.what} ${at.index}) failed: ${why}`);
  }
}

/**
 * One optimizer step on batch b of the epoch, as this worker runs it between the barriers it shares with
 * the others. The batch is perm[b·batchSize, +count); micro-shard s takes its rows [⌊s·count/S⌋, ⌊(s+1)·count/S⌋)
 * and writes its gradient into slot s, so the sums are the same whichever thread runs which shard.
 */
function trainStep(task: EpochTask, me: Participant, b: number, at: Progress): void {
  const t = task.firstT + (b - task.from);
  const start = b * task.batchSize;
  const count = Math.min(task.batchSize, task.trainCount - start);
  at.step = t;

  // 1. gather (+ augment), forward, loss and backward of my micro-shards, each gradient into its shard's slot
  at.phase = 'forwardBackward';
  at.what = 'shard';
  const t0 = performance.now();
  if (kernels.groupsRows) forwardBackward(me.s0, me.s1, start, count, t, task.epoch, at);
  else for (let s = me.s0; s < me.s1; s++) forwardBackward(s, s + 1, start, count, t, task.epoch, at);
  const t1 = performance.now();
  views.busy[busy + BUSY_COMPUTE] += t1 - t0;

  // 2. every slot is written; the last to arrive sums the step's loss and accuracy
  control.barrier(T, init.spinMs, sumStep, b);

  // 3. reduce-scatter + optimizer: my slice of the parameters, summed over the slots in shard order, updated
  at.phase = 'reduceStep';
  at.what = 'slice';
  at.index = me.slice;
  const t2 = performance.now();
  reduceAndUpdate(me.slice, views.lrs[b], t);
  views.busy[busy + BUSY_REDUCE] += performance.now() - t2;

  // 4. every slice is updated; the last to arrive records the step as done (and whether to stop after it)
  control.barrier(T, init.spinMs, finishStep, b);
}

/** Serial work of the first barrier: batch b's loss sum and correct count, summed over the shards in order. */
function sumStep(b: number): void {
  const stat = views.shardStat;
  let lossSum = 0;
  let correct = 0;
  for (let s = 0; s < S; s++) {
    lossSum += stat[2 * s];
    correct += stat[2 * s + 1];
  }
  views.stepStat[2 * b] = lossSum;
  views.stepStat[2 * b + 1] = correct;
}

function finishStep(b: number): void {
  control.finishStep(b);
}

/**
 * Micro-shards [s0, s1) of step t, whose batch is perm[start, start + count): their rows lie together at
 * [⌊s0·count/S⌋, ⌊s1·count/S⌋) of the batch. One gather, one forward pass, then the loss and the backward
 * pass, each shard's weight gradient into its own slot and its (loss sum, correct count) into shardStat.
 * Several shards at once only with kernels that can (groupsRows: the input gradients run once over all the
 * rows), which gives every shard the same bits as running it alone, in fewer, larger kernel calls.
 */
function forwardBackward(s0: number, s1: number, start: number, count: number, t: number, epoch: number,
                         at: Progress): void {
  if (s1 <= s0) return;
  for (let s = s0; s < s1; s++) {
    at.index = s;
    injectFault('forwardBackward', t, s);
  }
  at.index = s0;
  const first = splitRange(count, S, s0)[0];
  const n = splitRange(count, S, s1 - 1)[1] - first;
  if (n === 0) {
    for (let s = s0; s < s1; s++) emptyShard(s);
    return;
  }
  const g = batch.rows(first, n);
  const t0 = performance.now();
  batch.gather(g, views.trainX, views.trainY, views.perm, start + first, n, epoch);
  const t1 = performance.now();
  // a group of shards works in its first shard's convolution scratch (a cnn's; conv2dScratchLength)
  const cols = buffers.cols[s0];
  forward(kernels, net, g.acts, model, cols, n);
  const t2 = performance.now();
  if (kernels.groupsRows) {
    const ranges: RowRange[] = [];
    for (let s = s0; s < s1; s++) {
      const [a, z] = splitRange(count, S, s);
      ranges.push({ first: a - first, count: z - a });
    }
    const stats = backwardGroup(kernels, buffers.grad.slice(s0, s1), net, g.acts, model, cols, g.labels, ranges, n,
      init.labelSmoothing, 1 / count);
    countPhases(t0, t1, t2);
    stats.forEach((r, i) => {
      views.shardStat[2 * (s0 + i)] = r.lossSum;
      views.shardStat[2 * (s0 + i) + 1] = r.correct;
    });
  } else {
    const r = backward(kernels, buffers.grad[s0], net, g.acts, model, cols, g.labels, n, init.labelSmoothing, 1 / count);
    countPhases(t0, t1, t2);
    views.shardStat[2 * s0] = r.lossSum;
    views.shardStat[2 * s0 + 1] = r.correct;
  }
}

/** A micro-shard with no rows in this batch adds exact zeros (never a stale gradient of an earlier step). */
function emptyShard(shard: number): void {
  views.slot[shard].fill(0);
  views.shardStat[2 * shard] = 0;
  views.shardStat[2 * shard + 1] = 0;
}

/** Adds a gather that ran from t0 to t1, a forward pass to t2 and a backward pass to now to this thread's
 *  busy counters. */
function countPhases(t0: number, t1: number, t2: number): void {
  views.busy[busy + BUSY_GATHER] += t1 - t0;
  views.busy[busy + BUSY_FORWARD] += t2 - t1;
  views.busy[busy + BUSY_BACKWARD] += performance.now() - t2;
}

/** Slice k of the parameters at step t: sum the slots in shard order, then the optimizer update, then the
 *  slice's transposed weights for the next forward pass. */
function reduceAndUpdate(k: number, lr: number, t: number): void {
  const [start, end] = init.slices[k] ?? [0, 0];
  if (end <= start) return;
  injectFault('reduceStep', t, start);
  kernels.reduceAndUpdate(init.optimizer, lr, t, views.params, views.slotsAll, init.layout.slotStride, S,
    views.state, views.grad, start, end);
  const t0 = performance.now();
  syncTransposed(kernels, net, model, start, end);
  views.busy[busy + BUSY_SYNC] += performance.now() - t0;
}

/** After the parameters were written from outside (initialization, a checkpoint): refresh slice k's
 *  transposed weights. */
export function syncWeights(k: number): void {
  const [start, end] = init.slices[k] ?? [0, 0];
  syncTransposed(kernels, net, model, start, end);
}

export function evaluate(task: EvalTask): void | Promise<never> {
  const t0 = performance.now();
  try {
    injectFault('evaluate', lastStep, task.shard);
  } catch (e) {
    if (e instanceof Vanish) return vanished();
    throw e;
  }
  let lossSum = 0;
  let correct = 0;
  for (let a = task.start; a < task.end; a += ROWS) {
    const n = Math.min(ROWS, task.end - a);
    // evaluation shard s works in rows [s·ROWS, (s+1)·ROWS) of the buffers
    const r = batch.rows(task.shard * ROWS, n);
    batch.gather(r, views.testX, views.testY, null, a, n, 0);
    const stats = evaluateRows(kernels, net, r.acts, model, buffers.cols[task.shard], r.labels, n);
    views.testProbs.set(probsOf(r.acts).subarray(0, n * CLASSES), a * CLASSES);
    lossSum += stats.lossSum;
    correct += stats.correct;
  }
  views.evalStat[2 * task.shard] = lossSum;
  views.evalStat[2 * task.shard + 1] = correct;
  views.busy[busy + BUSY_COMPUTE] += performance.now() - t0;
}
