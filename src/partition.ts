// How a training step's work is divided among the threads that compute it (the `active` ones), the same way in
// every thread. A step has two halves, and each has its own kind of ownership:
//
//   rows     the batch in fixed blocks of ROW_BLOCK rows; thread k runs blocks [⌊k·NB/A⌋, ⌊(k+1)·NB/A⌋) of the
//            NB blocks: the gather, the forward pass, the loss and the input gradients of those rows
//   outputs  the output units (neurons, channels) of every layer; thread k owns [⌊k·U/A⌋, ⌊(k+1)·U/A⌋) of each
//            layer's U units: the weight gradient of those outputs over ALL rows of the batch, the optimizer
//            step on their parameters and (native) their part of the transposed copy
//
// Between the two halves sits the gradient all-reduce, done as a reduce-scatter: the owner of an output sums
// its gradient over the rows of every thread, straight from the activations and output gradients in the arena,
// so no thread writes a gradient of its own rows anywhere. Neither division changes a bit of the result: a
// row's forward pass and input gradients do not depend on the rows that share its call (calls start at a block
// boundary, see kernels/index.ts), an output's weight gradient is one sum over the batch's rows in order
// whoever computes it, and the optimizer works element by element.
import type { Layout } from './model.js';
import { KK } from './kernels/reference.js';

/**
 * Rows per block. 8 because: the WebAssembly linear kernels work in blocks of 4 and 2 rows, so a call that
 * starts at a multiple of 8 runs every row through the same code whichever thread makes it; the native forward
 * pass's register block is 8 rows (AVX-512; 4 on AVX2); and batch 64 still feeds 8 threads, 128 feeds 16 and
 * 256 feeds 32. (The cnn's lanes hold 16 images: a thread's images fill whole groups but for at most one half group.)
 */
export const ROW_BLOCK = 8;

/** Output units: a linear layer's outputs go in units of 16 (a 64-byte line of each row of the transposed
 *  weights, which two owners then never share), a convolution's in units of 4 (the native weight-gradient
 *  block); single outputs when a layer has fewer units than threads. */
const LINEAR_UNIT = 16;
const CONV_UNIT = 4;

/** The number of row blocks of a batch of `count` rows. */
export function rowBlocks(count: number): number {
  return Math.ceil(count / ROW_BLOCK);
}

/** Rows [first, first + count) of a batch of `rows` rows that thread k of `active` runs (count 0: none). */
export function threadRows(rows: number, active: number, k: number): { first: number; count: number } {
  if (k >= active) return { first: 0, count: 0 };
  const blocks = rowBlocks(rows);
  const first = Math.min(rows, Math.floor((k * blocks) / active) * ROW_BLOCK);
  const end = Math.min(rows, Math.floor(((k + 1) * blocks) / active) * ROW_BLOCK);
  return { first, count: end - first };
}

/** Outputs [o0, o1) of one layer: convolution `index` or linear layer `index`. */
export interface Part {
  kind: 'conv' | 'linear';
  index: number;
  o0: number;
  o1: number;
}

/** Outputs [o0, o1) of a layer of OC outputs that thread k of `active` owns. */
function ownedOutputs(OC: number, unit: number, active: number, k: number): [number, number] {
  const units = Math.ceil(OC / unit);
  if (units < active) return [Math.floor((k * OC) / active), Math.floor(((k + 1) * OC) / active)];
  return [Math.min(OC, Math.floor((k * units) / active) * unit), Math.min(OC, Math.floor(((k + 1) * units) / active) * unit)];
}

/** The non-empty parts of every layer that thread k of `active` owns (none for k ≥ active), input to output. */
export function ownedParts(layout: Layout, active: number, k: number): Part[] {
  if (k >= active) return [];
  const parts: Part[] = [];
  layout.conv.forEach(({ OC }, index) => {
    const [o0, o1] = ownedOutputs(OC, CONV_UNIT, active, k);
    if (o1 > o0) parts.push({ kind: 'conv', index, o0, o1 });
  });
  layout.linear.forEach(({ OC }, index) => {
    const [o0, o1] = ownedOutputs(OC, LINEAR_UNIT, active, k);
    if (o1 > o0) parts.push({ kind: 'linear', index, o0, o1 });
  });
  return parts;
}

/** A part's parameters in the flat buffer: its rows of the weight, then its biases, as [start, end) ranges. */
export function partRanges(layout: Layout, part: Part): [number, number][] {
  const layer = part.kind === 'conv' ? layout.conv[part.index] : layout.linear[part.index];
  const row = part.kind === 'conv' ? layer.C * KK : layer.C;
  return [[layer.w + part.o0 * row, layer.w + part.o1 * row], [layer.b + part.o0, layer.b + part.o1]];
}
