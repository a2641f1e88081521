// Plain and JSON-lines reporters for logs, pipes and CI: one line every `logEvery` batches, one per epoch,
// never an escape code.
import type { BatchRecord, EpochRecord, Snapshot } from '../metrics.js';
import { describeRun, epochLine, fmtInt, fmtLoss, fmtLr, fmtPct } from './format.js';
import { Interrupts } from './interrupts.js';
import type { Reporter, ReporterOptions } from './types.js';

/** Mean loss and accuracy of the batches of the current epoch after step `afterStep`. */
function windowMean(batches: readonly BatchRecord[], epoch: number, afterStep: number): { loss: number; accuracy: number } {
  let loss = 0;
  let acc = 0;
  let n = 0;
  for (let i = batches.length - 1; i >= 0 && batches[i].step > afterStep && batches[i].epoch === epoch; i--) {
    loss += batches[i].loss;
    acc += batches[i].accuracy;
    n++;
  }
  return n > 0 ? { loss: loss / n, accuracy: acc / n } : { loss: NaN, accuracy: NaN };
}

/**
 * Plain text or JSON lines. A batch line every `logEvery` batches of an epoch carries the mean loss and
 * accuracy of the batches since the previous line (less noisy than the last batch alone).
 */
/** The line reporters of runs in progress (a program may run several, one after another or at once). */
const reporters = new Set<LineReporter>();
const watched = new WeakSet<NodeJS.WritableStream>();

/**
 * One 'error' listener per output stream, for the life of the process (not one per run, which would pile up
 * in a program that trains many times). A reader that went away (`| head`) or an output that fails (a full
 * disk) ends the runs writing there as a signal would: stop writing, finish the step, save a checkpoint,
 * print the summary on stderr. Never a throw here: it would escape as an uncaught exception, with a stack
 * trace and no checkpoint; an error after every run has closed is ignored the same way.
 */
function watchOutput(out: NodeJS.WritableStream): void {
  if (watched.has(out) || typeof out.on !== 'function') return;
  watched.add(out);
  out.on('error', (err: NodeJS.ErrnoException) => {
    for (const r of reporters) if (r.writesTo(out)) r.outputFailed(err);
  });
}

export class LineReporter implements Reporter {
  private readonly out: NodeJS.WritableStream;
  private readonly json: boolean;
  private readonly interrupts: Interrupts;
  private lastLogged = 0; // global step of the last batch line
  private listening = false;
  private closedPipe = false;

  constructor(private readonly o: ReporterOptions & { mode: 'plain' | 'json' }) {
    this.out = o.out ?? process.stdout;
    watchOutput(this.out);
    reporters.add(this);
    this.json = o.mode === 'json';
    this.interrupts = new Interrupts(o.onInterrupt);
  }

  writesTo(out: NodeJS.WritableStream): boolean {
    return this.out === out;
  }

  /** The output failed: see watchOutput. */
  outputFailed(err: NodeJS.ErrnoException): void {
    if (this.closedPipe) return;
    this.closedPipe = true;
    const what = err.code === 'EPIPE' ? 'was closed' : `failed (${err.code ?? err.message})`;
    process.stderr.write(`mnist-par: standard output ${what}: stopping after this step\n`);
    this.o.onInterrupt('SIGPIPE');
  }

  private readonly onSigint = (): void => {
    if (this.interrupts.press('SIGINT')) {
      process.stderr.write('stopping after this step… (Ctrl-C again to quit now)\n');
    }
  };

  private line(text: string, obj: Record<string, unknown>): void {
    if (!this.closedPipe) this.out.write((this.json ? JSON.stringify(obj) : text) + '\n');
  }

  start(s: Snapshot): void {
    if (!this.listening) {
      process.on('SIGINT', this.onSigint);
      this.listening = true;
    }
    this.lastLogged = s.step;
    const d = describeRun(s);
    this.line(`${d.model}\n${d.setup}`, {
      type: 'start', dataset: s.config.data !== '' && s.config.data !== undefined ? s.config.data : s.config.dataset,
      ...(s.classes ? { classes: s.classes.length } : {}), model: s.model, layers: s.layers, paramCount: s.paramCount, kernelFamily: s.kernelFamily,
      threads: s.config.threads, shards: s.config.shards, batchSize: s.config.batchSize, optimizer: s.config.optimizer,
      lr: s.config.lr, schedule: s.config.schedule, seed: s.config.seed, epochs: s.config.epochs,
      batchesPerEpoch: s.batchesPerEpoch, totalSteps: s.totalSteps,
    });
  }

  step(s: Snapshot): void {
    if (s.batch === 0 || s.batch % this.o.logEvery !== 0 || s.step <= this.lastLogged) return;
    const m = windowMean(s.batches, s.epoch, this.lastLogged);
    this.lastLogged = s.step;
    const lr = s.batches.length > 0 ? s.batches[s.batches.length - 1].lr : NaN;
    this.line(
      `epoch ${s.epoch}/${s.config.epochs}  batch ${s.batch}/${s.batchesPerEpoch}  loss ${fmtLoss(m.loss)}  ` +
        `acc ${fmtPct(m.accuracy)}  lr ${fmtLr(lr)}  ${fmtInt(s.samplesPerSec)} samples/s`,
      { type: 'batch', epoch: s.epoch, batch: s.batch, step: s.step, loss: m.loss, accuracy: m.accuracy, lr,
        samplesPerSec: s.samplesPerSec, elapsedSec: s.elapsedSec },
    );
  }

  epoch(s: Snapshot, e: EpochRecord): void {
    this.lastLogged = s.step;
    this.line(epochLine(e, s.config.epochs), { type: 'epoch', ...e });
  }

  finish(s: Snapshot, summary: string[]): void {
    this.close();
    if (this.closedPipe) {
      if (summary.length > 0) process.stderr.write(summary.join('\n') + '\n');
      return;
    }
    if (!this.json && summary.length === 0) return;
    this.line(summary.join('\n'), { type: 'summary', step: s.step, epochs: s.epochs.length, elapsedSec: s.elapsedSec,
      lines: summary });
  }

  close(): void {
    reporters.delete(this);
    if (this.listening) process.removeListener('SIGINT', this.onSigint);
    this.listening = false;
  }
}
