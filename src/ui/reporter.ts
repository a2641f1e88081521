// What the training loop talks to: start, a cheap step() after every optimizer step, epoch, finish. The
// mode picks the dashboard (a terminal), plain lines (a log or a pipe) or JSON lines (other programs).
import type { EpochRecord, Snapshot } from '../metrics.js';
import { Dashboard } from './dashboard.js';
import { LineReporter } from './log.js';

export interface Reporter {
  /** once, when training starts (after the data is loaded) */
  start(s: Snapshot): void;
  /** after every optimizer step; cheap, throttles itself */
  step(s: Snapshot): void;
  epoch(s: Snapshot, e: EpochRecord): void;
  /** restores the terminal, then prints the summary lines */
  finish(s: Snapshot, summary: string[]): void;
  /** restores the terminal now (error paths); idempotent */
  close(): void;
}

export interface ReporterOptions {
  mode: 'auto' | 'dashboard' | 'plain' | 'json';
  logEvery: number;
  /** the loop finishes the current step, saves, then calls finish() */
  onInterrupt: (how: 'q' | 'SIGINT' | 'SIGPIPE') => void;
  out?: NodeJS.WriteStream;
}

/** 'auto' means the dashboard on an interactive terminal (TERM not dumb), plain lines otherwise. */
export function resolveMode(o: ReporterOptions, env: NodeJS.ProcessEnv = process.env): 'dashboard' | 'plain' | 'json' {
  if (o.mode !== 'auto') return o.mode;
  const out = o.out ?? process.stdout;
  return out.isTTY === true && env.TERM !== 'dumb' ? 'dashboard' : 'plain';
}

export function createReporter(o: ReporterOptions): Reporter {
  const mode = resolveMode(o);
  return mode === 'dashboard' ? new Dashboard(o) : new LineReporter({ ...o, mode });
}
