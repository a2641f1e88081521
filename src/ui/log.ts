// Plain and JSON-lines reporters for logs, pipes and CI: one line every `logEvery` batches, one per epoch,
// never an escape code.
import type { BatchRecord, EpochRecord, Snapshot } from '../metrics.js';
import { describeRun, epochLine, fmtLoss, fmtLr, fmtPct, fmtRate } from './format.js';
import { Interrupts } from './interrupts.js';
import { howItFailed, onOutputFailure, outputFailed, outputName } from './outputs.js';
import type { OutputStream, Reporter, ReporterOptions } from './types.js';
import { formatSummary } from '../summary.js';

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
 * accuracy of the batches since the previous line (less noisy than the last batch alone). When its output or
 * standard error goes away (outputs.ts), the run stops as a signal would stop it: no more lines there, the
 * step finished, a checkpoint saved, and the summary on whichever of the two still works.
 */
export class LineReporter implements Reporter {
  private readonly out: OutputStream;
  private readonly err: OutputStream;
  private readonly json: boolean;
  private readonly interrupts: Interrupts;
  private readonly unwatch: () => void;
  private lastLogged = 0; // global step of the last batch line
  private listening = false;
  /** an output failed: the run was asked to stop */
  private lost = false;

  constructor(private readonly o: ReporterOptions & { mode: 'plain' | 'json' }) {
    this.out = o.out ?? process.stdout;
    this.err = o.err ?? process.stderr;
    this.json = o.mode === 'json';
    this.interrupts = new Interrupts(o.onInterrupt);
    this.unwatch = onOutputFailure([this.out, this.err], (stream, err) => this.outputFailed(stream, err));
  }

  /** One of the outputs failed: stop after this step (once), saying so where it can still be read. */
  private outputFailed(stream: OutputStream, err: Error & { code?: string }): void {
    if (this.lost) return;
    this.lost = true;
    if (!outputFailed(this.err)) this.err.write(`mnist-par: ${outputName(stream)} ${howItFailed(err)}: stopping after this step\n`);
    this.o.onInterrupt('SIGPIPE');
  }

  private readonly onSigint = (): void => {
    if (this.interrupts.press('SIGINT') && !outputFailed(this.err)) {
      this.err.write('stopping after this step… (Ctrl-C again to quit now)\n');
    }
  };

  private line(text: string, obj: Record<string, unknown>): void {
    if (!outputFailed(this.out)) this.out.write((this.json ? JSON.stringify(obj) : text) + '\n');
  }

  start(s: Snapshot): void {
    if (!this.listening) {
      process.on('SIGINT', this.onSigint);
      this.listening = true;
    }
    this.lastLogged = s.step;
    const d = describeRun(s);
    const table = s.summary ? ['', ...formatSummary(s.summary), ''] : [];
    this.line([d.model, d.setup, ...table].join('\n'), {
      type: 'start', dataset: s.config.data !== '' && s.config.data !== undefined ? s.config.data : s.config.dataset,
      ...(s.classes ? { classes: s.classes.length } : {}), model: s.model, layers: s.layers, paramCount: s.paramCount, kernelFamily: s.kernelFamily,
      threads: s.config.threads, batchSize: s.config.batchSize, optimizer: s.config.optimizer,
      lr: s.config.lr, schedule: s.config.schedule, seed: s.config.seed, epochs: s.config.epochs,
      batchesPerEpoch: s.batchesPerEpoch, totalSteps: s.totalSteps, summary: s.summary,
    });
  }

  step(s: Snapshot): void {
    if (s.batch === 0 || s.batch % this.o.logEvery !== 0 || s.step <= this.lastLogged) return;
    const m = windowMean(s.batches, s.epoch, this.lastLogged);
    this.lastLogged = s.step;
    const lr = s.batches.length > 0 ? s.batches[s.batches.length - 1].lr : NaN;
    this.line(
      `epoch ${s.epoch}/${s.config.epochs}  batch ${s.batch}/${s.batchesPerEpoch}  loss ${fmtLoss(m.loss)}  ` +
        `acc ${fmtPct(m.accuracy)}  lr ${fmtLr(lr)}  ${fmtRate(s.samplesPerSec)} samples/s`,
      { type: 'batch', epoch: s.epoch, batch: s.batch, step: s.step, loss: m.loss, accuracy: m.accuracy, lr,
        samplesPerSec: Number.isFinite(s.samplesPerSec) ? s.samplesPerSec : null, elapsedSec: s.elapsedSec },
    );
  }

  epoch(s: Snapshot, e: EpochRecord): void {
    this.lastLogged = s.step;
    this.line(epochLine(e, s.config.epochs), { type: 'epoch', ...e });
  }

  finish(s: Snapshot, summary: string[]): void {
    this.close();
    if (outputFailed(this.out)) {
      if (summary.length > 0 && !outputFailed(this.err)) this.err.write(summary.join('\n') + '\n');
      return;
    }
    if (!this.json && summary.length === 0) return;
    this.line(summary.join('\n'), { type: 'summary', step: s.step, epochs: s.epochs.length, elapsedSec: s.elapsedSec,
      lines: summary });
  }

  close(): void {
    this.unwatch();
    if (this.listening) process.removeListener('SIGINT', this.onSigint);
    this.listening = false;
  }
}
