// eval's numbers, from the test split's softmax probabilities: the confusion matrix, per-class precision /
// recall / F1 and their means, and the mistakes the model was surest about. Pure functions of arrays.
import type { Labels } from '../data/datasets.js';
import { argmaxRow } from '../predict.js';

export interface ClassStats {
  name: string;
  precision: number;
  recall: number;
  f1: number;
  /** test images of this class */
  support: number;
}

export interface Mistake {
  /** index in the test split */
  index: number;
  label: number;
  predicted: number;
  /** probability the model gave its (wrong) prediction */
  p: number;
}

export interface EvalReport {
  model: string;
  /** the network in one line (model.ts describeModel) */
  network: string;
  /** the built-in dataset's name, or the path of your own test set */
  dataset: string;
  /** its linear layers' widths */
  layers: readonly number[];
  count: number;
  loss: number;
  accuracy: number;
  classes: ClassStats[];
  macro: { precision: number; recall: number; f1: number };
  /** confusion[true][predicted] */
  confusion: number[][];
  plots: string[];
}

/** confusion[t][p]: test images of true class t whose most probable class is p. probs (N, V), labels (N). */
export function confusionMatrix(probs: Float32Array, labels: Labels, V: number): number[][] {
  const m = Array.from({ length: V }, () => new Array<number>(V).fill(0));
  const n = probs.length / V;
  for (let i = 0; i < n; i++) m[labels[i]][argmaxRow(probs, i, V)]++;
  return m;
}

/**
 * Per-class precision (of the images predicted as the class, the share that are), recall (of the images of
 * the class, the share found) and F1, and their unweighted means. A ratio with nothing to divide by is 0,
 * as scikit-learn reports it.
 */
export function classStats(confusion: number[][], names: readonly string[]): { classes: ClassStats[]; macro: EvalReport['macro'] } {
  const V = confusion.length;
  const ratio = (a: number, b: number): number => (b > 0 ? a / b : 0);
  const classes = confusion.map((row, c) => {
    const tp = row[c];
    const support = row.reduce((s, x) => s + x, 0);
    const predicted = confusion.reduce((s, r) => s + r[c], 0);
    const precision = ratio(tp, predicted);
    const recall = ratio(tp, support);
    return { name: names[c] ?? String(c), precision, recall, f1: ratio(2 * precision * recall, precision + recall), support };
  });
  const mean = (k: 'precision' | 'recall' | 'f1'): number => classes.reduce((s, c) => s + c[k], 0) / V;
  return { classes, macro: { precision: mean('precision'), recall: mean('recall'), f1: mean('f1') } };
}

/** The k misclassified images the model was surest about, surest first (ties: lower index first). */
export function confidentMistakes(probs: Float32Array, labels: Labels, V: number, k: number): Mistake[] {
  const out: Mistake[] = [];
  const n = probs.length / V;
  for (let i = 0; i < n; i++) {
    const predicted = argmaxRow(probs, i, V);
    if (predicted !== labels[i]) out.push({ index: i, label: labels[i], predicted, p: probs[i * V + predicted] });
  }
  return out.sort((a, b) => b.p - a.p || a.index - b.index).slice(0, k);
}
