// The dashboard's live figures: throughput, the split of a step's time, and each worker's busy share, over
// the last ~2 seconds of an epoch's steps. Read from the arena's per-thread busy counters (memory.ts), which the
// workers add to as they go; the UI only ever sees the numbers written into the snapshot here.
import {
  BUSY, BUSY_BACKWARD, BUSY_COMPUTE, BUSY_FORWARD, BUSY_GATHER, BUSY_REDUCE, BUSY_ROWS, BUSY_STEPS, BUSY_SYNC, BUSY_UPDATE,
  BUSY_WGRAD,
} from './memory.js';
import type { Snapshot } from './metrics.js';
import { THROUGHPUT_MIN_WINDOW_MS, THROUGHPUT_WINDOW_MS } from './tuning.js';

/**
 * Recent throughput, step-time split and per-worker busy share over the last THROUGHPUT_WINDOW_MS of an
 * epoch's training. No throughput is reported (NaN) until the window spans THROUGHPUT_MIN_WINDOW_MS: see
 * there. A new epoch starts a new window (restart), so the validation between
 * two epochs is not counted as training time.
 */
export class ThroughputWindow {
  private marks: { t: number; samples: number; overhead: number; busy: Float64Array }[] = [];
  private samples = 0;
  private overhead = 0;

  constructor(private threads: number) {}

  /** Forgets every step so far: the next one opens the window. */
  restart(): void {
    this.marks = [];
  }

  /** After each step: `overheadMs` is the coordinator's own time spent on the previous step. */
  add(now: number, samples: number, overheadMs: number, busy: Float64Array): void {
    this.samples += samples;
    this.overhead += overheadMs;
    this.marks.push({ t: now, samples: this.samples, overhead: this.overhead, busy: busy.slice() });
    while (this.marks.length > 2 && now - this.marks[1].t > THROUGHPUT_WINDOW_MS) this.marks.shift();
  }

  /** Whether the window holds enough of the epoch's training to be reported. */
  private get ready(): boolean {
    return this.marks.length >= 2 && this.marks[this.marks.length - 1].t - this.marks[0].t >= THROUGHPUT_MIN_WINDOW_MS;
  }

  /** Samples per second over the window (the samples of the steps after its first); NaN until it is ready. */
  samplesPerSec(): number {
    if (!this.ready) return NaN;
    const a = this.marks[0];
    const b = this.marks[this.marks.length - 1];
    return ((b.samples - a.samples) * 1000) / (b.t - a.t);
  }

  /** The step-time split and busy shares (read by the dashboard and bench scaling's short windows): from two steps on. */
  fill(snap: Snapshot): void {
    if (this.marks.length < 2) return;
    const a = this.marks[0];
    const b = this.marks[this.marks.length - 1];
    const steps = this.marks.length - 1;
    const dt = b.t - a.t;
    const T = this.threads;
    const share: number[] = [];
    const rows: number[] = [];
    // per thread and step: the mean over threads of counter x's growth over the window
    const per = (x: number) => {
      let sum = 0;
      for (let i = 0; i < T; i++) sum += b.busy[BUSY * i + x] - a.busy[BUSY * i + x];
      return sum / T / steps;
    };
    for (let i = 0; i < T; i++) {
      const c = b.busy[BUSY * i + BUSY_COMPUTE] - a.busy[BUSY * i + BUSY_COMPUTE];
      const r = b.busy[BUSY * i + BUSY_REDUCE] - a.busy[BUSY * i + BUSY_REDUCE];
      share.push(dt > 0 ? Math.min(1, (c + r) / dt) : 0);
      // per step of its own: the counters are read while the threads run, one of them maybe a step ahead
      const steps = b.busy[BUSY * i + BUSY_STEPS] - a.busy[BUSY * i + BUSY_STEPS];
      rows.push(steps > 0 ? (b.busy[BUSY * i + BUSY_ROWS] - a.busy[BUSY * i + BUSY_ROWS]) / steps : 0);
    }
    const stepMs = dt / steps;
    const computeMs = per(BUSY_COMPUTE);
    const reduceMs = per(BUSY_REDUCE);
    snap.timing = {
      stepMs, computeMs, reduceMs, waitMs: Math.max(0, stepMs - computeMs - reduceMs),
      overheadMs: (b.overhead - a.overhead) / steps,
      gatherMs: per(BUSY_GATHER), forwardMs: per(BUSY_FORWARD), backwardMs: per(BUSY_BACKWARD),
      wgradMs: per(BUSY_WGRAD), updateMs: per(BUSY_UPDATE), syncMs: per(BUSY_SYNC),
    };
    snap.workerBusy = share;
    snap.workerRows = rows;
  }
}
