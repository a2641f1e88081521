// The shared arena: one shared WebAssembly.Memory (its buffer is a SharedArrayBuffer) holding everything the
// workers touch, at offsets computed once here and handed to every worker at start-up. WebAssembly kernels
// work in it directly; TypeScript kernels see it through typed-array views.
//
//   control   Int32  [CONTROL_INTS]        thread-index counter, barrier and epoch words (control.ts)
//   busy      Float64[threads × BUSY]      milliseconds each worker thread spent, by what (BUSY_*): its rows (the
//                                          first half of a step; evaluation counts here too) and its outputs (the
//                                          second half), and within those gathering, forward, backward, weight
//                                          gradients, optimizer, transposed-copy upkeep; and the rows it ran
//   blockStat Float64[2·blocks]            per row block of the batch (partition.ts): (loss sum, correct count)
//   evalStat  Float64[2·threads]           per evaluation task (loss sum, correct count)
//   lrs       Float64[stepsPerEpoch]       learning rate of each step of the current epoch
//   stepStat  Float64[2·stepsPerEpoch]     (loss sum, correct count) of each step of the epoch
//   params    Float32[P]                   the model, flat (model.ts layout)
//   paramsT   Float32[P]                   each linear layer's weight transposed, (C,OC), at the weight's offset, for
//                                          families that read it in the forward pass (native); kept current
//                                          by whoever writes params (the owner of an output, ready())
//   grad      Float32[P]                   the batch's gradient, each output's written by its owner just before
//                                          the optimizer reads it: the one gradient-sized buffer of a step
//   state     Float32[k × P]               optimizer moments (k = 0, 1 or 2)
//   acts      Float32[…]                   activations and their gradients for `rows` rows, stage by stage (model.ts
//                                          stages, mlp.ts activationViews): a training batch's row r is row r
//                                          (threads run contiguous blocks of them); evaluation task s uses
//                                          rows [s·evalRows, (s+1)·evalRows)
//   cols      Float32[threads × colsElements] a cnn's convolution scratch, one per thread (evaluation task s: the
//                                          s-th): none for an mlp
//   labels    Int32  [rows]                gathered labels, row for row
//   perm      Uint32 [trainCount]          the epoch's permutation of training indices
//   trainX    Uint8  [trainCount × 784]    training images, as stored in the IDX file
//   trainY    Uint16 [trainCount]          class indices (up to 65,535 classes; the data allow 1,000)
//   testX     Uint8  [testCount × 784]
//   testY     Uint16 [testCount]
//   testProbs Float32[testCount × classes] softmax output of the last evaluation, per test image
//
// Every region starts on a 64-byte boundary (a cache line; also keeps SIMD loads aligned).
import { activationElements, activationViews, layerViews, type Activations, type LayerViews } from './mlp.js';
import { modelLayout, type Layout, type ModelSpec } from './model.js';
import { colsElements } from './network.js';
import { CONTROL_INTS } from './control.js';
import { rowBlocks } from './partition.js';

/** Per-thread counters: thread k's counter X is busy[k·BUSY + X]. COMPUTE and REDUCE split a step in its two
 *  halves, in milliseconds (they sum everything a worker does): COMPUTE its rows (GATHER, FORWARD, and BACKWARD:
 *  the loss and input gradients), REDUCE its outputs (WGRAD: the weight gradients over all rows, the reduce
 *  itself; UPDATE: the optimizer; SYNC: the transposed copy). ROWS counts the rows it ran and STEPS its steps,
 *  not milliseconds. */
export const BUSY = 10;
export const BUSY_COMPUTE = 0;
export const BUSY_REDUCE = 1;
export const BUSY_GATHER = 2;
export const BUSY_FORWARD = 3;
export const BUSY_BACKWARD = 4;
export const BUSY_SYNC = 5;
export const BUSY_WGRAD = 6;
export const BUSY_UPDATE = 7;
export const BUSY_ROWS = 8;
export const BUSY_STEPS = 9;

export interface ArenaSpec {
  model: ModelSpec;
  threads: number;
  /** rows of a training batch, --batch-size (0 for an arena that only evaluates) */
  batchRows: number;
  /** rows one evaluation task processes at once */
  evalRows: number;
  optimizerStates: number;
  /** most optimizer steps in one epoch (sizes the per-step tables) */
  stepsPerEpoch: number;
  trainCount: number;
  testCount: number;
  pixels: number;
}

export interface ArenaLayout {
  spec: ArenaSpec;
  bytes: number;
  control: number;
  busy: number;
  blockStat: number;
  evalStat: number;
  lrs: number;
  stepStat: number;
  params: number;
  paramsT: number;
  grad: number;
  state: number;
  acts: number;
  cols: number;
  /** floats of one thread's convolution scratch */
  colsStride: number;
  /** rows the activation buffers hold: the batch's, and every evaluation task's */
  actRows: number;
  labels: number;
  perm: number;
  trainX: number;
  trainY: number;
  testX: number;
  testY: number;
  testProbs: number;
}

const ALIGN = 64;
const PAGE = 65536;

/** Rows of a training arena's evaluation tasks: the batch's rows shared among the threads (whole blocks of 8,
 *  16 to 256), so that evaluating needs no more activation rows than a training step. */
export function trainingEvalRows(batchRows: number, threads: number): number {
  return Math.max(16, Math.min(256, Math.floor(batchRows / threads / 8) * 8));
}

export function arenaLayout(spec: ArenaSpec): ArenaLayout {
  const model = modelLayout(spec.model);
  const P = model.size;
  let off = 0;
  const take = (bytes: number): number => {
    const at = off;
    off = Math.ceil((off + bytes) / ALIGN) * ALIGN;
    return at;
  };
  const actRows = Math.max(spec.batchRows, spec.threads * spec.evalRows);
  const control = take(CONTROL_INTS * 4);
  const busy = take(spec.threads * BUSY * 8);
  const blockStat = take(rowBlocks(spec.batchRows) * 16);
  const evalStat = take(spec.threads * 16);
  const lrs = take(spec.stepsPerEpoch * 8);
  const stepStat = take(spec.stepsPerEpoch * 16);
  const params = take(P * 4);
  const paramsT = take(P * 4);
  const grad = take(P * 4);
  const state = take(spec.optimizerStates * P * 4);
  const acts = take(activationElements(model, actRows) * 4);
  const colsStride = Math.ceil(colsElements(model) / 16) * 16;
  const cols = take(spec.threads * colsStride * 4);
  const labels = take(actRows * 4);
  const perm = take(spec.trainCount * 4);
  const trainX = take(spec.trainCount * spec.pixels);
  const trainY = take(spec.trainCount * 2);
  const testX = take(spec.testCount * spec.pixels);
  const testY = take(spec.testCount * 2);
  const classes = model.layers[model.layers.length - 1];
  const testProbs = take(spec.testCount * classes * 4);
  return {
    spec, bytes: off, control, busy, blockStat, evalStat, lrs, stepStat, params, paramsT, grad, state, acts,
    cols, colsStride, actRows, labels, perm, trainX, trainY, testX, testY, testProbs,
  };
}

/** Allocates the shared memory for a layout (fixed size: initial = maximum). */
export function createArenaMemory(layout: ArenaLayout): WebAssembly.Memory {
  const pages = Math.ceil(layout.bytes / PAGE);
  if (pages > 65536) throw new RangeError(`arena of ${layout.bytes} bytes exceeds 4 GiB`);
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
}

/** Typed views of every region; built once per thread (coordinator and each worker). */
export interface ArenaViews {
  layout: ArenaLayout;
  model: Layout;
  control: Int32Array;
  busy: Float64Array;
  blockStat: Float64Array;
  evalStat: Float64Array;
  lrs: Float64Array;
  stepStat: Float64Array;
  params: Float32Array;
  paramsT: Float32Array;
  grad: Float32Array;
  state: Float32Array[];
  perm: Uint32Array;
  trainX: Uint8Array;
  trainY: Uint16Array;
  testX: Uint8Array;
  testY: Uint16Array;
  /** (testCount, classes) probabilities written by the last evaluation */
  testProbs: Float32Array;
}

export function arenaViews(memory: WebAssembly.Memory, layout: ArenaLayout): ArenaViews {
  const buf = memory.buffer;
  const s = layout.spec;
  const model = modelLayout(s.model);
  const P = model.size;
  const f32 = (at: number, n: number) => new Float32Array(buf, at, n);
  return {
    layout,
    model,
    control: new Int32Array(buf, layout.control, CONTROL_INTS),
    busy: new Float64Array(buf, layout.busy, BUSY * s.threads),
    blockStat: new Float64Array(buf, layout.blockStat, 2 * rowBlocks(s.batchRows)),
    evalStat: new Float64Array(buf, layout.evalStat, 2 * s.threads),
    lrs: new Float64Array(buf, layout.lrs, s.stepsPerEpoch),
    stepStat: new Float64Array(buf, layout.stepStat, 2 * s.stepsPerEpoch),
    params: f32(layout.params, P),
    paramsT: f32(layout.paramsT, P),
    grad: f32(layout.grad, P),
    state: Array.from({ length: s.optimizerStates }, (_, i) => f32(layout.state + i * P * 4, P)),
    perm: new Uint32Array(buf, layout.perm, s.trainCount),
    trainX: new Uint8Array(buf, layout.trainX, s.trainCount * s.pixels),
    trainY: new Uint16Array(buf, layout.trainY, s.trainCount),
    testX: new Uint8Array(buf, layout.testX, s.testCount * s.pixels),
    testY: new Uint16Array(buf, layout.testY, s.testCount),
    testProbs: f32(layout.testProbs, s.testCount * model.layers[model.layers.length - 1]),
  };
}

/** The activation buffers and labels of all the arena's rows, the threads' convolution scratch, and the
 *  gradient as layers. */
export interface BatchViews {
  acts: Activations;
  /** thread k's convolution scratch (evaluation task s: the s-th) */
  cols: Float32Array[];
  labels: Int32Array;
  grad: LayerViews;
}

export function batchViews(memory: WebAssembly.Memory, views: ArenaViews): BatchViews {
  const { layout, model } = views;
  const n = layout.actRows;
  const buf = new Float32Array(memory.buffer, layout.acts, activationElements(model, n));
  return {
    acts: activationViews(buf, model, n),
    cols: Array.from({ length: layout.spec.threads }, (_, k) =>
      new Float32Array(memory.buffer, layout.cols + k * layout.colsStride * 4, layout.colsStride)),
    labels: new Int32Array(memory.buffer, layout.labels, n),
    grad: layerViews(views.grad, model),
  };
}

/** Splits n items into `parts` contiguous ranges in a fixed way: part i is [⌊i·n/parts⌋, ⌊(i+1)·n/parts⌋). */
export function splitRange(n: number, parts: number, i: number): [number, number] {
  return [Math.floor((i * n) / parts), Math.floor(((i + 1) * n) / parts)];
}
