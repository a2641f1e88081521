// A worker thread of the pool, one of `threads` that train together. Views over the shared arena are built
// once when the module loads; a task carries only indices and a few scalars, and results go back through the
// arena (per-block and per-step sums), so a message never carries image data or weights.
//
// Tasks (Piscina named exports):
//   runEpoch     the steps of an epoch, in lockstep with the other workers: trainStep, once per batch
//   evaluate     one evaluation task's rows of the test set: forward + loss in chunks
//   syncWeights  one thread's part of the transposed weights, after the parameters were set from outside
//
// Who this worker is: `thread`, its index for its busy-time counters, is claimed once when it loads. Which rows
// and which outputs it works on is the epoch task's `participant`, given by the coordinator (so that when a
// thread dies the coordinator knows which one); partition.ts says which rows and outputs a participant has.
import { workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import {
  arenaViews, batchViews, BUSY, BUSY_BACKWARD, BUSY_COMPUTE, BUSY_FORWARD, BUSY_GATHER, BUSY_REDUCE, BUSY_ROWS,
  BUSY_STEPS, BUSY_SYNC, BUSY_UPDATE, BUSY_WGRAD, type ArenaLayout,
} from '../src/memory.js';
import { Control, PeerAbort } from '../src/control.js';
import { layerViewsWithTransposed, syncTransposed, type RowRange } from '../src/mlp.js';
import { backwardRows, evaluate as evaluateRows, forward, probsOf, weightGradient } from '../src/network.js';
import { ownedParts, partRanges, ROW_BLOCK, rowBlocks, threadRows, type Part } from '../src/partition.js';
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
  /** participants that get rows and outputs (partition.ts): min(threads, cores), or every thread when asked */
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
const T = init.layout.spec.threads;
const EVAL_ROWS = init.layout.spec.evalRows;
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

/** The outputs participant k owns: the parts of every layer, and their parameters as flat ranges. */
interface Owned {
  k: number;
  parts: Part[];
  /** each part's [start, end) ranges in the flat parameters (partRanges) */
  ranges: [number, number][][];
}

function owned(k: number): Owned {
  const parts = ownedParts(model, init.active, k);
  return { k, parts, ranges: parts.map((p) => partRanges(model, p)) };
}

/** Where this thread is in its epoch, for the message if it fails: "forwardBackward (step 5, rows 64..127)". */
interface Progress { phase: 'forwardBackward' | 'reduceStep'; step: number; where: string }

// the last training step this thread finished (0 before any): evaluation faults are placed by it
let lastStep = 0;
// the rows of the batch of the step in progress (the same in every thread)
let batchCount = 0;

export function runEpoch(task: EpochTask): void | Promise<never> {
  const at: Progress = { phase: 'forwardBackward', step: 0, where: '' };
  try {
    const me = owned(task.participant);
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
    throw new Error(`${at.phase} (step ${at.step}, ${at.where}) failed: ${why}`);
  }
}

/**
 * One optimizer step on batch b of the epoch, as this worker runs it between the barriers it shares with the
 * others: data-parallel over the rows, then a reduce-scatter over the outputs (partition.ts).
 */
function trainStep(task: EpochTask, me: Owned, b: number, at: Progress): void {
  const t = task.firstT + (b - task.from);
  const start = b * task.batchSize;
  const count = Math.min(task.batchSize, task.trainCount - start);
  batchCount = count;
  at.step = t;

  // 1. my rows of the batch: gather (+ augment), forward, loss, and the gradients of their activations
  at.phase = 'forwardBackward';
  const t0 = performance.now();
  rowsHalf(me.k, start, count, t, task.epoch, at);
  views.busy[busy + BUSY_COMPUTE] += performance.now() - t0;
  views.busy[busy + BUSY_STEPS] += 1;

  // 2. every row's activation gradients are in the arena; the last to arrive sums the step's loss and accuracy
  control.barrier(T, init.spinMs, sumStep, b);

  // 3. the all-reduce as a reduce-scatter: my outputs' gradients over all the batch's rows, then the optimizer
  at.phase = 'reduceStep';
  const t2 = performance.now();
  outputsHalf(me, count, views.lrs[b], t, at);
  views.busy[busy + BUSY_REDUCE] += performance.now() - t2;

  // 4. every output is updated; the last to arrive records the step as done (and whether to stop after it)
  control.barrier(T, init.spinMs, finishStep, b);
}

/** Serial work of the first barrier: batch b's loss sum and correct count, summed over its row blocks in order. */
function sumStep(b: number): void {
  const stat = views.blockStat;
  let lossSum = 0;
  let correct = 0;
  for (let i = 0; i < rowBlocks(batchCount); i++) {
    lossSum += stat[2 * i];
    correct += stat[2 * i + 1];
  }
  views.stepStat[2 * b] = lossSum;
  views.stepStat[2 * b + 1] = correct;
}

function finishStep(b: number): void {
  control.finishStep(b);
}

/**
 * Participant k's rows of step t, whose batch is perm[start, start + count): one gather, one forward pass, the
 * loss of each of its row blocks into blockStat, and the backward pass down to the gradients of every
 * activation (no weight gradient: the outputs' half computes those over all rows).
 */
function rowsHalf(k: number, start: number, count: number, t: number, epoch: number, at: Progress): void {
  const { first, count: n } = threadRows(count, init.active, k);
  if (n === 0) return;
  at.where = `rows ${first}..${first + n - 1}`;
  injectFault('forwardBackward', t, k);
  const g = batch.rows(first, n);
  const t0 = performance.now();
  batch.gather(g, views.trainX, views.trainY, views.perm, start + first, n, epoch);
  const t1 = performance.now();
  const cols = buffers.cols[k];
  forward(kernels, net, g.acts, model, cols, n);
  const t2 = performance.now();
  const blocks: RowRange[] = [];
  for (let r = 0; r < n; r += ROW_BLOCK) blocks.push({ first: r, count: Math.min(ROW_BLOCK, n - r) });
  const stats = backwardRows(kernels, net, g.acts, model, cols, g.labels, blocks, n, init.labelSmoothing, 1 / count);
  const block0 = first / ROW_BLOCK;
  stats.forEach((r, i) => {
    views.blockStat[2 * (block0 + i)] = r.lossSum;
    views.blockStat[2 * (block0 + i) + 1] = r.correct;
  });
  views.busy[busy + BUSY_GATHER] += t1 - t0;
  views.busy[busy + BUSY_FORWARD] += t2 - t1;
  views.busy[busy + BUSY_BACKWARD] += performance.now() - t2;
  views.busy[busy + BUSY_ROWS] += n;
}

/** Participant me.k's outputs of every layer at step t: their gradient over all `count` rows of the batch (the
 *  reduce), the optimizer update of their parameters, then their part of the transposed weights for the next
 *  forward pass. Layer by layer, so that a part's gradient is still in cache when the optimizer reads it. */
function outputsHalf(me: Owned, count: number, lr: number, t: number, at: Progress): void {
  if (me.parts.length === 0) return;
  at.where = `outputs of worker ${me.k}`;
  injectFault('reduceStep', t, me.k);
  const all = batch.rows(0, count);
  const cols = buffers.cols[me.k];
  let wgrad = 0;
  let update = 0;
  let sync = 0;
  me.parts.forEach((part, i) => {
    const t0 = performance.now();
    weightGradient(kernels, buffers.grad, all.acts, model, cols, part, count);
    const t1 = performance.now();
    for (const [a, z] of me.ranges[i]) kernels.optimizerStep(init.optimizer, lr, t, views.params, views.grad, views.state, a, z);
    const t2 = performance.now();
    for (const [a, z] of me.ranges[i]) syncTransposed(kernels, net, model, a, z);
    wgrad += t1 - t0;
    update += t2 - t1;
    sync += performance.now() - t2;
  });
  views.busy[busy + BUSY_WGRAD] += wgrad;
  views.busy[busy + BUSY_UPDATE] += update;
  views.busy[busy + BUSY_SYNC] += sync;
}

/** After the parameters were written from outside (initialization, a checkpoint): refresh participant k's part
 *  of the transposed weights. */
export function syncWeights(k: number): void {
  for (const ranges of owned(k).ranges) for (const [a, z] of ranges) syncTransposed(kernels, net, model, a, z);
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
  for (let a = task.start; a < task.end; a += EVAL_ROWS) {
    const n = Math.min(EVAL_ROWS, task.end - a);
    // evaluation task s works in rows [s·EVAL_ROWS, (s+1)·EVAL_ROWS) of the buffers
    const r = batch.rows(task.shard * EVAL_ROWS, n);
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
