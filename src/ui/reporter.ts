// The reporter for a run: the mode picks the dashboard (a terminal), plain lines (a log or a pipe) or JSON
// lines (other programs). The interface they all implement is in types.ts.
import { Dashboard } from './dashboard.js';
import { LineReporter } from './log.js';
import type { Reporter, ReporterOptions } from './types.js';

export type { Reporter, ReporterOptions };

/** 'auto' means the dashboard on an interactive terminal (TERM not dumb), plain lines otherwise. */
export function resolveMode(o: ReporterOptions, env: Readonly<Record<string, string | undefined>> = process.env): 'dashboard' | 'plain' | 'json' {
  if (o.mode !== 'auto') return o.mode;
  const out = o.out ?? process.stdout;
  return out.isTTY === true && env.TERM !== 'dumb' ? 'dashboard' : 'plain';
}

export function createReporter(o: ReporterOptions): Reporter {
  const mode = resolveMode(o);
  return mode === 'dashboard' ? new Dashboard(o) : new LineReporter({ ...o, mode });
}
