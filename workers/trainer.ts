// A worker thread of the pool. Views over the shared arena are built once when the module loads; every task
// carries only indices and a few scalars, and results go back through the arena (per-shard sums) so a
// message never carries image data or weights.
//
// Tasks (Piscina named exports):
//   runEpoch         lockstep pipeline: every worker runs all steps of an epoch, meeting the others at two
//                    barriers per step (after the shards, after the update); one task per worker per epoch
//   forwardBackward  tasks pipeline: one micro-shard
//   reduceStep       tasks pipeline: one slice of the parameter vector
//   evaluate         one evaluation shard of the test set: forward + loss in chunks
//   syncWeights      one slice of the transposed weights, after the parameters were set from outside
import { workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import {
  arenaViews, batchViews, splitRange, BUSY, BUSY_BACKWARD, BUSY_COMPUTE, BUSY_FORWARD, BUSY_GATHER, BUSY_REDUCE,
  BUSY_SYNC, CTRL_ABORT, CTRL_BAR_COUNT, CTRL_BAR_GEN, CTRL_NEXT_THREAD,
  CTRL_STEPS_DONE, CTRL_STOP, CTRL_STOP_AFTER, type ArenaLayout,
} from '../src/memory.js';
import {
  layerViewsWithTransposed, mlpBackward, mlpBackwardGroup, mlpEvaluate, mlpForward, rowsOf, syncTransposed,
  type Activations, type RowRange,
} from '../src/mlp.js';
import type { OptimizerConfig } from '../src/optim.js';
import { loadKernels, type KernelFamily } from '../src/kernels/wasm.js';
import { augmentRow, DEFAULT_AUGMENT, sampleTransform } from '../src/data/augment.js';
import { normalizationTable } from '../src/data/datasets.js';
import { BARRIER_WAIT_SLICE_MS } from '../src/tuning.js';

export interface WorkerInit {
  memory: WebAssembly.Memory;
  layout: ArenaLayout;
  optimizer: OptimizerConfig;
  kernels: KernelFamily;
  /** dataset normalization: x ↦ (x/255 − mean) / std */
  mean: number;
  std: number;
  labelSmoothing: number;
  /** [start, end) of the parameter slice owned by reducer k (one per thread; empty for k ≥ active) */
  slices: [number, number][];
  /** lockstep participants that get micro-shards and slices: min(threads, cores) */
  active: number;
  /** milliseconds to spin at a barrier before sleeping (0 when threads outnumber cores) */
  spinMs: number;
  /** seed of the augmentation transforms, or null for none */
  augment: number | null;
}

export interface ShardTask { shard: number; start: number; count: number; batch: number; step: number; epoch: number }
export interface ReduceTask { slice: number; lr: number; t: number }
export interface EvalTask { shard: number; start: number; end: number }
/** Steps [from, to) of an epoch; batch b covers perm[b·batchSize, min((b+1)·batchSize, trainCount)).
 *  `participant` (0..threads-1) is given by the coordinator, so that when a thread dies it knows which one. */
export interface EpochTask {
  from: number; to: number; batchSize: number; trainCount: number; firstT: number; epoch: number; participant: number;
}

const init = workerData as WorkerInit;
const memory = init.memory;
const views = arenaViews(memory, init.layout);
const model = views.model;
const S = init.layout.spec.shards;
const T = init.layout.spec.threads;
const batchBuffers = batchViews(memory, views);
const kernels = await loadKernels(init.kernels, memory);
// the parameters, with the transposed weights the family's forward pass may read (unused otherwise)
const net = layerViewsWithTransposed(views.params, views.paramsT, model);
const PIXELS = init.layout.spec.pixels;
const ROWS = init.layout.spec.rows;
const L = model.slots.length;
const CLASSES = model.layers[L];
const ctrl = views.control;
const NORM = normalizationTable(init.mean, init.std);
// This thread's index for its busy-time counters, claimed once (Piscina starts exactly `threads` workers).
// The lockstep pipeline does not rely on it: each epoch's tasks claim distinct participant indices.
const started = Atomics.add(ctrl, CTRL_NEXT_THREAD, 1);
let me = started % T;
const fault = parseFault(process.env.MNIST_PAR_INJECT_FAULT);
if (fault?.task === 'load' && started >= fault.step) {
  throw new Error(`injected fault: worker thread ${started} fails while loading, by MNIST_PAR_INJECT_FAULT`);
}

const affine = new Float32Array(6);

/** Copies images index[start + r] (start + r when index is null) of a uint8 set into rows r < rows of x,
 *  normalized, and their labels into y; augmented when `epoch` > 0 and augmentation is on. */
function gather(x: Float32Array, y: Int32Array, images: Uint8Array, labels: Uint8Array, index: Uint32Array | null,
                start: number, rows: number, epoch: number): void {
  if (init.augment === null || epoch === 0) {
    kernels.gather(x, y, images, labels, index, start, rows, PIXELS, NORM);
    return;
  }
  for (let r = 0; r < rows; r++) {
    const i = index ? index[start + r] : start + r;
    // the transform depends only on (seed, epoch, image index): the same whichever thread gathers it
    sampleTransform(init.augment, epoch, i, DEFAULT_AUGMENT, affine);
    augmentRow(x, r * PIXELS, images, i * PIXELS, affine, init.mean, init.std);
    y[r] = labels[i];
  }
}

// Views of rows [first, first + count) of the activation buffers and labels, built once per distinct range
// (a run has a handful: the micro-shards and groups of a full batch and of the last one, evaluation chunks).
const rowViewCache = new Map<number, { acts: Activations; labels: Int32Array }>();
function rows(first: number, count: number): { acts: Activations; labels: Int32Array } {
  const key = first * 0x20000 + count; // count ≤ 65536 (the largest --batch-size)
  let v = rowViewCache.get(key);
  if (!v) {
    if (rowViewCache.size > 1024) rowViewCache.clear();
    v = { acts: rowsOf(batchBuffers.acts, model, first, count), labels: batchBuffers.labels.subarray(first, first + count) };
    rowViewCache.set(key, v);
  }
  return v;
}

function emptyShard(shard: number): void {
  views.slot[shard].fill(0);
  views.shardStat[2 * shard] = 0;
  views.shardStat[2 * shard + 1] = 0;
}

/** Micro-shard `shard` of step t: rows perm[start, start+count) of a batch of `batch` rows → slot `shard`.
 *  Its rows sit at their place in the batch: [⌊shard·batch/S⌋, +count). */
function shardWork(shard: number, start: number, count: number, batch: number, t: number, epoch: number): void {
  checkFault('forwardBackward', t, shard);
  if (count === 0) return emptyShard(shard);
  const sv = rows(splitRange(batch, S, shard)[0], count);
  const t0 = performance.now();
  gather(sv.acts.h[0] as Float32Array, sv.labels, views.trainX, views.trainY, views.perm, start, count, epoch);
  const t1 = performance.now();
  mlpForward(kernels, net, sv.acts, model, count);
  const t2 = performance.now();
  const { lossSum, correct } = mlpBackward(kernels, batchBuffers.grad[shard], net, sv.acts, model, sv.labels, count,
    init.labelSmoothing, 1 / batch);
  countPhases(t0, t1, t2);
  views.shardStat[2 * shard] = lossSum;
  views.shardStat[2 * shard + 1] = correct;
}

/** Adds a gather that ran from t0 to t1, a forward pass to t2 and a backward pass to now to this thread's
 *  busy counters. */
function countPhases(t0: number, t1: number, t2: number): void {
  const busy = views.busy;
  busy[BUSY * me + BUSY_GATHER] += t1 - t0;
  busy[BUSY * me + BUSY_FORWARD] += t2 - t1;
  busy[BUSY * me + BUSY_BACKWARD] += performance.now() - t2;
}

/**
 * Micro-shards [s0, s1) of step t, whose rows are contiguous in the batch perm[start, start+batch): one
 * gather, one forward pass and one input-gradient pass over all their rows, each shard's weight gradient to
 * its own slot (mlpBackwardGroup). The same bits as shardWork on each shard, in fewer, larger kernel calls.
 */
function groupWork(s0: number, s1: number, start: number, batch: number, t: number, epoch: number): void {
  for (let s = s0; s < s1; s++) {
    doing.index = s;
    checkFault('forwardBackward', t, s);
  }
  doing.index = s0;
  const first = splitRange(batch, S, s0)[0];
  const n = splitRange(batch, S, s1 - 1)[1] - first;
  if (n === 0) {
    for (let s = s0; s < s1; s++) emptyShard(s);
    return;
  }
  const g = rows(first, n);
  const t0 = performance.now();
  gather(g.acts.h[0] as Float32Array, g.labels, views.trainX, views.trainY, views.perm, start + first, n, epoch);
  const t1 = performance.now();
  mlpForward(kernels, net, g.acts, model, n);
  const t2 = performance.now();
  const ranges: RowRange[] = [];
  for (let s = s0; s < s1; s++) {
    const [a, z] = splitRange(batch, S, s);
    ranges.push({ first: a - first, count: z - a });
  }
  const stats = mlpBackwardGroup(kernels, batchBuffers.grad.slice(s0, s1), net, g.acts, model, g.labels, ranges, n,
    init.labelSmoothing, 1 / batch);
  countPhases(t0, t1, t2);
  stats.forEach((r, i) => {
    views.shardStat[2 * (s0 + i)] = r.lossSum;
    views.shardStat[2 * (s0 + i) + 1] = r.correct;
  });
}

/** Slice k of the parameters at step t: sum the slots in shard order, then the optimizer update. */
function reduceWork(k: number, lr: number, t: number): void {
  const [start, end] = init.slices[k] ?? [0, 0];
  if (end <= start) return;
  checkFault('reduceStep', t, start);
  kernels.reduceAndUpdate(init.optimizer, lr, t, views.params, views.slotsAll, init.layout.slotStride, S,
    views.state, views.grad, start, end);
  const t0 = performance.now();
  syncTransposed(kernels, net, model, start, end);
  views.busy[BUSY * me + BUSY_SYNC] += performance.now() - t0;
}

/** After the parameters were written from outside (initialization, a checkpoint): refresh slice k's
 *  transposed weights. */
export function syncWeights(k: number): void {
  const [start, end] = init.slices[k] ?? [0, 0];
  syncTransposed(kernels, net, model, start, end);
}

export function forwardBackward(t: ShardTask): void {
  const t0 = performance.now();
  try {
    shardWork(t.shard, t.start, t.count, t.batch, t.step, t.epoch);
  } catch (e) {
    if (e instanceof Vanish) return;
    throw e;
  }
  views.busy[BUSY * me + BUSY_COMPUTE] += performance.now() - t0;
}

export function reduceStep(t: ReduceTask): void {
  const t0 = performance.now();
  try {
    reduceWork(t.slice, t.lr, t.t);
  } catch (e) {
    if (e instanceof Vanish) return;
    throw e;
  }
  views.busy[BUSY * me + BUSY_REDUCE] += performance.now() - t0;
}

/**
 * Waits until all `threads` workers have arrived. The last to arrive runs `serial` (alone, while the others
 * wait) and then releases the round. Sleeps in Atomics.wait after a short spin, so oversubscribed threads
 * never burn the cores the working ones need. A failed peer (CTRL_ABORT) releases everyone with an error.
 */
function barrier(serial: (() => void) | null): void {
  // the coordinator sets the abort word when a thread died or a stop could not wait for a stuck one
  if (Atomics.load(ctrl, CTRL_ABORT) !== 0) throw new PeerAbort();
  const gen = Atomics.load(ctrl, CTRL_BAR_GEN);
  if (Atomics.add(ctrl, CTRL_BAR_COUNT, 1) === T - 1) {
    Atomics.store(ctrl, CTRL_BAR_COUNT, 0);
    if (serial) serial();
    Atomics.add(ctrl, CTRL_BAR_GEN, 1);
    Atomics.notify(ctrl, CTRL_BAR_GEN);
    return;
  }
  // Spin first: waking from Atomics.wait (a futex) takes 50-100 µs in a VM, a few percent of a step.
  const spinUntil = performance.now() + init.spinMs;
  let spinning = init.spinMs > 0;
  let polls = 0;
  while (Atomics.load(ctrl, CTRL_BAR_GEN) === gen) {
    if (spinning) {
      // the clock is read every 256 polls
      if ((++polls & 255) === 0 && performance.now() >= spinUntil) spinning = false;
      continue;
    }
    Atomics.wait(ctrl, CTRL_BAR_GEN, gen, BARRIER_WAIT_SLICE_MS);
    // a worker that arrives after a peer failed is never released: it notices the abort word instead
    if (Atomics.load(ctrl, CTRL_ABORT) !== 0) throw new PeerAbort();
  }
  // a failing worker also bumps the generation to wake everyone: then leave instead of going on
  if (Atomics.load(ctrl, CTRL_ABORT) !== 0) throw new PeerAbort();
}

/** Thrown in the workers that did not fail, so the coordinator can report the one that did. */
class PeerAbort extends Error {
  constructor() {
    super('aborted: another worker failed');
  }
}

/** Thrown by the "crash" fault: the thread leaves its task at once, without a word to its peers, and dies. */
class Vanish extends Error {}

// What this thread is doing in the lockstep loop, for the error message if it fails.
const doing = { task: '', t: 0, what: '', index: 0 };

export function runEpoch(task: EpochTask): void {
  try {
    lockstep(task);
  } catch (e) {
    if (e instanceof Vanish) return;
    Atomics.store(ctrl, CTRL_ABORT, 1);
    Atomics.add(ctrl, CTRL_BAR_GEN, 1); // release whoever sleeps at a barrier
    Atomics.notify(ctrl, CTRL_BAR_GEN);
    if (e instanceof PeerAbort) throw e;
    const why = e instanceof Error ? e.message : String(e);
    throw new Error(`${doing.task} (step ${doing.t}, ${doing.what} ${doing.index}) failed: ${why}`);
  }
}

function lockstep(task: EpochTask): void {
  const { batchSize, trainCount, firstT } = task;
  // participant k owns parameter slice k
  me = task.participant;
  const stat = views.shardStat;
  for (let b = task.from; b < task.to; b++) {
    const t = firstT + (b - task.from);
    const start = b * batchSize;
    const count = Math.min(batchSize, trainCount - start);
    const t0 = performance.now();
    doing.task = 'forwardBackward';
    doing.t = t;
    doing.what = 'shard';
    // participant k < active runs the contiguous micro-shards [⌊k·S/A⌋, ⌊(k+1)·S/A⌋): their rows lie together
    const [s0, s1] = me < init.active ? splitRange(S, init.active, me) : [0, 0];
    if (kernels.groupsRows && s1 > s0) {
      groupWork(s0, s1, start, count, t, task.epoch);
    } else {
      for (let s = s0; s < s1; s++) {
        const [a, z] = splitRange(count, S, s);
        doing.index = s;
        shardWork(s, start + a, z - a, count, t, task.epoch);
      }
    }
    const t1 = performance.now();
    views.busy[BUSY * me + BUSY_COMPUTE] += t1 - t0;
    barrier(() => {
      let lossSum = 0;
      let correct = 0;
      for (let s = 0; s < S; s++) {
        lossSum += stat[2 * s];
        correct += stat[2 * s + 1];
      }
      views.stepStat[2 * b] = lossSum;
      views.stepStat[2 * b + 1] = correct;
    });
    const t2 = performance.now();
    doing.task = 'reduceStep';
    doing.what = 'slice';
    doing.index = me;
    reduceWork(me, views.lrs[b], t);
    views.busy[BUSY * me + BUSY_REDUCE] += performance.now() - t2;
    barrier(() => {
      Atomics.store(ctrl, CTRL_STEPS_DONE, b + 1);
      if (Atomics.load(ctrl, CTRL_STOP) !== 0) Atomics.store(ctrl, CTRL_STOP_AFTER, b);
    });
    if (Atomics.load(ctrl, CTRL_STOP_AFTER) === b) return;
  }
}

export function evaluate(t: EvalTask): void {
  const t0 = performance.now();
  let lossSum = 0;
  let correct = 0;
  for (let a = t.start; a < t.end; a += ROWS) {
    const n = Math.min(ROWS, t.end - a);
    // evaluation shard s works in rows [s·ROWS, (s+1)·ROWS) of the buffers
    const sv = rows(t.shard * ROWS, n);
    gather(sv.acts.h[0] as Float32Array, sv.labels, views.testX, views.testY, null, a, n, 0);
    const r = mlpEvaluate(kernels, net, sv.acts, model, sv.labels, n);
    views.testProbs.set(sv.acts.dh[L].subarray(0, n * CLASSES), a * CLASSES);
    lossSum += r.lossSum;
    correct += r.correct;
  }
  views.evalStat[2 * t.shard] = lossSum;
  views.evalStat[2 * t.shard + 1] = correct;
  views.busy[BUSY * me + BUSY_COMPUTE] += performance.now() - t0;
}

// Fault injection for the tests of failure handling. MNIST_PAR_INJECT_FAULT="TASK:STEP[:WHERE][:MODE]":
//   TASK   forwardBackward (WHERE: the shard) or reduceStep (WHERE: the first parameter of the slice); without
//          WHERE every shard or slice of that step is hit
//   MODE   throw  (default) the task throws an Error: the ordinary failure, reported by the worker itself
//          exit   process.exit(7) in the worker thread: it dies mid-step, telling nobody
//          crash  an uncaught error outside the task (a queued microtask), the thread dies before it replies
//          hang   the thread blocks forever (Atomics.wait on a private word), alive but never arriving
//          oom    the thread allocates until it hits its heap limit (resourceLimits) and is terminated
// "load:N": the N-th worker thread to start (0-based, counting replacements) and every later one fail while
// loading this module, before any task.
type FaultMode = 'throw' | 'exit' | 'crash' | 'hang' | 'oom';
interface Fault { task: string; step: number; where: number | null; mode: FaultMode }

function parseFault(spec: string | undefined): Fault | null {
  if (!spec) return null;
  const parts = spec.split(':');
  const modes: readonly string[] = ['throw', 'exit', 'crash', 'hang', 'oom'];
  const mode = (parts.length > 2 && modes.includes(parts[parts.length - 1]) ? parts.pop() : 'throw') as FaultMode;
  const [task, step, where] = parts;
  return { task, step: Number(step), where: where === undefined ? null : Number(where), mode };
}

function checkFault(task: string, step: number, where: number): void {
  if (!fault || fault.task !== task || fault.step !== step || (fault.where !== null && fault.where !== where)) return;
  const what = `injected ${fault.mode} in ${task} at step ${step} (${where}) by MNIST_PAR_INJECT_FAULT`;
  switch (fault.mode) {
    case 'throw':
      throw new Error(`injected fault in ${task} at step ${step} (${where}) by MNIST_PAR_INJECT_FAULT`);
    case 'exit':
      process.exit(7);
      break;
    case 'crash':
      // the thread dies as soon as its task returns: before or just after Piscina's reply, so the coordinator
      // sees either the task rejected or the pool's 'error' for a thread with no task
      queueMicrotask(() => {
        throw new Error(what);
      });
      throw new Vanish();
    case 'hang':
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      break;
    case 'oom': {
      // plain JS arrays live on the worker's heap (typed arrays would not count against its limit)
      const hog: number[][] = [];
      for (;;) hog.push(new Array<number>(1 << 16).fill(0.5));
    }
  }
}
