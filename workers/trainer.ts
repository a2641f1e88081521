// A worker thread of the pool. Views over the shared arena are built once when the module loads; every task
// carries only indices and a few scalars, and results go back through the arena (per-shard sums) so a
// message never carries image data or weights.
//
// Tasks (Piscina named exports):
//   forwardBackward  one micro-shard: gather + normalize its rows, forward, loss, backward into its own slot
//   reduceStep       one slice of the parameter vector: sum the slots in shard order, optimizer update
//   evaluate         one evaluation shard of the test set: forward + loss in chunks
import { workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { arenaViews, shardViews, CTRL_NEXT_THREAD, type ArenaLayout, type ShardViews } from '../src/memory.js';
import { layerViews, mlpBackward, mlpEvaluate, mlpForward } from '../src/mlp.js';
import { optimizerStep, type OptimizerConfig } from '../src/optim.js';
import { loadKernels, type KernelFamily } from '../src/kernels/wasm.js';

export interface WorkerInit {
  memory: WebAssembly.Memory;
  layout: ArenaLayout;
  optimizer: OptimizerConfig;
  kernels: KernelFamily;
  /** dataset normalization: x ↦ (x/255 − mean) / std */
  mean: number;
  std: number;
  labelSmoothing: number;
}

export interface ShardTask { shard: number; start: number; count: number; batch: number; step: number }
export interface ReduceTask { start: number; end: number; lr: number; t: number }
export interface EvalTask { shard: number; start: number; end: number }

const init = workerData as WorkerInit;
const memory = init.memory;
const views = arenaViews(memory, init.layout);
const model = views.model;
const net = layerViews(views.params, model);
const shards: ShardViews[] = Array.from({ length: init.layout.spec.shards }, (_, s) => shardViews(memory, views, s));
const kernels = await loadKernels(init.kernels, memory);
const PIXELS = init.layout.spec.pixels;
const L = model.slots.length;
const CLASSES = model.layers[L];
const ROWS = init.layout.spec.rows;
// Normalizing through a 256-entry table gives every thread the same float32 for the same pixel value.
const NORM = new Float32Array(256).map((_, v) => (v / 255 - init.mean) / init.std);
// This thread's index into the busy-time counters, claimed once; Piscina decides which thread runs a task.
const me = Atomics.add(views.control, CTRL_NEXT_THREAD, 1) % init.layout.spec.threads;
const fault = parseFault(process.env.MNIST_PAR_INJECT_FAULT);

function gather(x: Float32Array, y: Int32Array, images: Uint8Array, labels: Uint8Array,
                index: (r: number) => number, rows: number): void {
  for (let r = 0; r < rows; r++) {
    const i = index(r);
    const src = i * PIXELS;
    const dst = r * PIXELS;
    for (let p = 0; p < PIXELS; p++) x[dst + p] = NORM[images[src + p]];
    y[r] = labels[i];
  }
}

export function forwardBackward(t: ShardTask): void {
  const t0 = performance.now();
  checkFault('forwardBackward', t.step, t.shard);
  const sv = shards[t.shard];
  if (t.count === 0) {
    views.slot[t.shard].fill(0);
    views.shardStat[2 * t.shard] = 0;
    views.shardStat[2 * t.shard + 1] = 0;
  } else {
    const perm = views.perm;
    gather(sv.input, sv.labels, views.trainX, views.trainY, (r) => perm[t.start + r], t.count);
    mlpForward(kernels, net, sv.acts, model, t.count);
    const { lossSum, correct } = mlpBackward(kernels, sv.grad, net, sv.acts, model, sv.labels, t.count,
      init.labelSmoothing, 1 / t.batch);
    views.shardStat[2 * t.shard] = lossSum;
    views.shardStat[2 * t.shard + 1] = correct;
  }
  views.busy[2 * me] += performance.now() - t0;
}

export function reduceStep(t: ReduceTask): void {
  const t0 = performance.now();
  checkFault('reduceStep', t.t, t.start);
  const S = init.layout.spec.shards;
  kernels.reduceSlots(views.grad, views.slotsAll, init.layout.slotStride, S, t.start, t.end);
  kernels.optimizerStep(init.optimizer, t.lr, t.t, views.params, views.grad, views.state, t.start, t.end);
  views.busy[2 * me + 1] += performance.now() - t0;
}

export function evaluate(t: EvalTask): void {
  const t0 = performance.now();
  const sv = shards[t.shard];
  let lossSum = 0;
  let correct = 0;
  for (let a = t.start; a < t.end; a += ROWS) {
    const n = Math.min(ROWS, t.end - a);
    gather(sv.input, sv.labels, views.testX, views.testY, (r) => a + r, n);
    const r = mlpEvaluate(kernels, net, sv.acts, model, sv.labels, n);
    views.testProbs.set(sv.acts.dh[L].subarray(0, n * CLASSES), a * CLASSES);
    lossSum += r.lossSum;
    correct += r.correct;
  }
  views.evalStat[2 * t.shard] = lossSum;
  views.evalStat[2 * t.shard + 1] = correct;
  views.busy[2 * me] += performance.now() - t0;
}

// Fault injection for the tests of failure handling: MNIST_PAR_INJECT_FAULT="forwardBackward:STEP" makes
// that task throw at that step (every shard of it), "reduceStep:STEP" likewise.
function parseFault(spec: string | undefined): { task: string; step: number } | null {
  if (!spec) return null;
  const [task, step] = spec.split(':');
  return { task, step: Number(step) };
}

function checkFault(task: string, step: number, where: number): void {
  if (fault && fault.task === task && fault.step === step) {
    throw new Error(`injected fault in ${task} at step ${step} (${where}) by MNIST_PAR_INJECT_FAULT`);
  }
}

