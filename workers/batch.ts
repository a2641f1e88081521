// Where a worker's rows come from: views of rows of the arena's activation buffers and labels (one per
// distinct range, built once), filled by gathering images from a uint8 set, normalized, and augmented in
// training epochs when augmentation is on.
import type { BatchViews } from '../src/memory.js';
import { rowsOf, type Activations } from '../src/mlp.js';
import type { Layout } from '../src/model.js';
import type { Kernels } from '../src/kernels/index.js';
import { augmentRow, DEFAULT_AUGMENT, sampleTransform } from '../src/data/augment.js';
import { normalizationTable } from '../src/data/datasets.js';

/** Rows [first, first + count) of the activation buffers (h[0] is the input) and of the labels. */
export interface Rows {
  acts: Activations;
  labels: Int32Array;
}

export interface Normalization {
  /** x ↦ (x/255 − mean) / std */
  mean: number;
  std: number;
  /** seed of the augmentation transforms, or null for none */
  augment: number | null;
}

export class BatchRows {
  private readonly cache = new Map<number, Rows>();
  private readonly norm: Float32Array;
  private readonly affine = new Float32Array(6);

  constructor(private readonly kernels: Kernels, private readonly buffers: BatchViews, private readonly model: Layout,
              private readonly pixels: number, private readonly n: Normalization) {
    this.norm = normalizationTable(n.mean, n.std);
  }

  /** Views of rows [first, first + count): a run has a handful of distinct ranges (a worker's rows of a full batch
   *  and of the last one, the whole batch, evaluation chunks), so they are built once and kept. */
  rows(first: number, count: number): Rows {
    const key = first * 0x20000 + count; // count ≤ 65536 (the largest --batch-size)
    let v = this.cache.get(key);
    if (!v) {
      if (this.cache.size > 1024) this.cache.clear();
      v = { acts: rowsOf(this.buffers.acts, this.model, first, count), labels: this.buffers.labels.subarray(first, first + count) };
      this.cache.set(key, v);
    }
    return v;
  }

  /** Copies images index[start + r] (start + r when index is null) of a uint8 set into the first `count`
   *  rows of `into`, normalized, and their labels; augmented when `epoch` > 0 and augmentation is on. */
  gather(into: Rows, images: Uint8Array, labels: Uint8Array | Uint16Array, index: Uint32Array | null, start: number, count: number,
         epoch: number): void {
    const x = into.acts.h[0] as Float32Array;
    const seed = this.n.augment;
    if (seed === null || epoch === 0) {
      this.kernels.gather(x, into.labels, images, labels, index, start, count, this.pixels, this.norm);
      return;
    }
    const P = this.pixels;
    for (let r = 0; r < count; r++) {
      const i = index ? index[start + r] : start + r;
      // the transform depends only on (seed, epoch, image index): the same whichever thread gathers it
      sampleTransform(seed, epoch, i, DEFAULT_AUGMENT, this.affine);
      augmentRow(x, r * P, images, i * P, this.affine, this.n.mean, this.n.std);
      into.labels[r] = labels[i];
    }
  }
}
