// The number formats and the run description that the dashboard and the plain lines share, so both say the
// same thing the same way.
import type { Config } from '../config.js';
import type { EpochRecord, Snapshot } from '../metrics.js';
import type { RunSummary } from '../train.js';

export const fmtLoss = (x: number): string => x.toFixed(4);
export const fmtPct = (x: number, digits = 1): string => `${(x * 100).toFixed(digits)}%`;
export const fmtLr = (x: number): string => x.toExponential(1);
/** "1 thread", "2 threads": a count and its noun, plural unless the count is 1. */
export const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

export const fmtInt = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : String(x));
/** 512 → "512 bytes", 65536 → "64.0 KiB", 6e6 → "5.7 MiB": binary units, as df -h counts */
export function fmtBytes(n: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  if (!(Math.abs(n) >= 1024)) return `${n} byte${n === 1 ? '' : 's'}`;
  let x = n / 1024;
  let u = 0;
  while (Math.abs(x) >= 1024 && u < units.length - 1) {
    x /= 1024;
    u++;
  }
  return `${x.toFixed(1)} ${units[u]}`;
}
/** A throughput: '–' until there is one (throughput.ts reports NaN until its window holds real steps). */
export const fmtRate = (x: number): string => (Number.isFinite(x) ? fmtInt(x) : '–');

/** 75 → 1:15, 3725 → 1:02:05; anything not finite or negative → –:– */
export function fmtDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '–:–';
  const t = Math.round(sec);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const ss = String(t % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** Seconds left, from the mean time per step so far; NaN before the first step. */
export function etaSec(s: Snapshot): number {
  return s.step > 0 ? (s.elapsedSec / s.step) * Math.max(0, s.totalSteps - s.step) : NaN;
}

/** 0.0001 → 1e-4, 0.5 → 0.5 */
const fmtSmall = (x: number): string => (x !== 0 && Math.abs(x) < 0.01 ? x.toExponential() : String(x));

export function describeOptimizer(c: Config): string {
  if (c.optimizer === 'sgd') {
    return c.momentum > 0 ? `sgd momentum ${c.momentum}${c.nesterov ? ' nesterov' : ''}` : 'sgd';
  }
  return c.weightDecay > 0 ? `${c.optimizer} wd ${fmtSmall(c.weightDecay)}` : c.optimizer;
}

export function describeSchedule(c: Config): string {
  switch (c.schedule) {
    case 'none': return 'constant';
    case 'step': return `step ×${c.gamma} every ${plural(c.stepSize, 'epoch')}`;
    case 'cosine': return `cosine to ${fmtSmall(c.minLr)}`;
    case 'onecycle': return `onecycle warmup ${Math.round(c.warmup * 100)}%`;
  }
}

/** The run in a few phrases, for the plain start line and the dashboard header. */
export function describeRun(s: Snapshot): { model: string; setup: string } {
  const c = s.config;
  return {
    model: `${s.data ?? c.dataset} · ${s.model} · ${fmtInt(s.paramCount)} params · seed ${c.seed} · out ${c.out}`,
    setup: `${plural(c.threads, 'thread')} · ${s.kernelFamily} kernels · batch ${c.batchSize} · ` +
      `${describeOptimizer(c)} · lr ${fmtLr(c.lr)} ${describeSchedule(c)}`,
  };
}

/**
 * What a run prints when it ends, on the command line and from the library's 'plain' and 'json' reporters
 * alike: why and after how long, the last epoch's test accuracy and loss, the files written, how to continue.
 */
export function summaryLines(r: Pick<RunSummary, 'reason' | 'seconds' | 'epochs' | 'files' | 'resumeHint' | 'validation'>): string[] {
  const last = r.epochs[r.epochs.length - 1];
  // the test split, or a part of your own training data held out (--val-split)
  const on = r.validation === 'test' ? 'test' : 'held-out validation';
  const acc = last ? `; epoch ${last.epoch} ${on} accuracy ${fmtPct(last.valAccuracy, 2)}, ${on} loss ${last.valLoss.toFixed(4)}` : '';
  const lines = [`mnist-par: ${r.reason} (${r.seconds.toFixed(1)} s)${acc}`, `wrote ${r.files.join(', ')}`];
  if (r.resumeHint) lines.push(r.resumeHint);
  return lines;
}

export function epochLine(e: EpochRecord, epochs: number): string {
  return `epoch ${e.epoch}/${epochs}  train loss ${fmtLoss(e.trainLoss)} acc ${fmtPct(e.trainAccuracy, 2)}  ` +
    `val loss ${fmtLoss(e.valLoss)} acc ${fmtPct(e.valAccuracy, 2)}  lr ${fmtLr(e.lr)}  ${e.seconds.toFixed(1)}s`;
}
