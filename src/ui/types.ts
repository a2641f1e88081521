// What the training loop talks to, on its own so that the reporters (dashboard.ts, log.ts) and the factory
// that picks one (reporter.ts) all depend on it and never on each other. The loop calls start, a cheap step() after every optimizer step, epoch, finish.
import type { EpochRecord, Snapshot } from '../metrics.js';

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
  /** where lines go (default process.stdout) */
  out?: OutputStream;
  /** where notes and, when `out` fails, the summary go (default process.stderr) */
  err?: OutputStream;
}

/**
 * What a reporter writes to: process.stdout or process.stderr, or a stand-in with the same methods (a test's).
 * Described by shape so that the library's type declarations need no @types/node.
 */
export interface OutputStream {
  write(text: string): boolean;
  /** a terminal: the dashboard may draw there */
  readonly isTTY?: boolean;
  /** where a write's failure (EPIPE, ENOSPC) is reported; see outputs.ts */
  on?(event: 'error', listener: (err: Error & { code?: string }) => void): unknown;
}
