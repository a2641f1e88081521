// The full-screen terminal dashboard. Rendering is a pure function renderDashboard(snapshot, width, height)
// → lines (tested without a terminal); the Dashboard class only owns terminal state: alternate screen,
// hidden cursor, raw input for `q` and Ctrl-C, and their restoration on every way out.
import asciichart from 'asciichart';
import termkit from 'terminal-kit';
import type { BatchRecord, EpochRecord, Snapshot } from '../metrics.js';
import { describeRun, epochLine, etaSec, fmtDuration, fmtInt, fmtLoss, fmtLr, fmtPct, fmtRate, plural } from './format.js';
import { Interrupts } from './interrupts.js';
import { onOutputFailure, outputFailed } from './outputs.js';
import type { OutputStream, Reporter, ReporterOptions } from './types.js';

// ── styled text: SGR sequences only, each span closed by a reset so a cut line cannot bleed ──────────────
const RESET = '\x1b[0m';
const sgr = (code: string) => (t: string): string => `\x1b[${code}m${t}${RESET}`;
const bold = sgr('1');
const dim = sgr('2');
const inverse = sgr('7');
const green = sgr('32');
const yellow = sgr('33');
const cyan = sgr('36');
const magenta = sgr('35');

const CSI = /\x1b\[[0-9;?]*[A-Za-z]/g;
const CSI_AT = /\x1b\[[0-9;?]*[A-Za-z]/y;

export function stripAnsi(t: string): string {
  return t.replace(CSI, '');
}

/** Length of the escape sequence at t[i], 0 if there is none. */
function escapeAt(t: string, i: number): number {
  if (t.charCodeAt(i) !== 0x1b) return 0;
  CSI_AT.lastIndex = i;
  return CSI_AT.exec(t)?.[0].length ?? 0;
}

/** Columns a line takes on screen (every character we draw is one column wide). */
export function visibleWidth(t: string): number {
  let n = 0;
  for (let i = 0; i < t.length;) {
    const e = escapeAt(t, i);
    if (e > 0) {
      i += e;
      continue;
    }
    const c = t.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff ? 2 : 1; // a surrogate pair is one character
    n++;
  }
  return n;
}

/**
 * Cuts `t` to at most `w` columns, keeping escape sequences whole and ending a cut line with '…'; with `pad`,
 * fills up to exactly `w`.
 */
export function fit(t: string, w: number, pad = false): string {
  if (w <= 0) return '';
  const width = visibleWidth(t);
  if (width <= w) return pad && width < w ? t + ' '.repeat(w - width) : t;
  let n = 0;
  let styled = false;
  let i = 0;
  while (i < t.length) {
    const e = escapeAt(t, i);
    if (e > 0) {
      styled = true;
      i += e;
      continue;
    }
    if (n === w - 1) break;
    const c = t.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff ? 2 : 1;
    n++;
  }
  return t.slice(0, i) + '…' + (styled ? RESET : '');
}

const EIGHTHS = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/** A `w`-column progress bar for a fraction 0..1, in eighths of a cell. */
export function bar(frac: number, w: number): string {
  const f = Number.isFinite(frac) ? Math.min(1, Math.max(0, frac)) : 0;
  const full = Math.floor(f * w);
  const part = full < w ? EIGHTHS[Math.floor((f * w - full) * 8)] : '';
  return '█'.repeat(full) + part + dim('░'.repeat(w - full - (part ? 1 : 0)));
}

// ── series: only the last few points are ever touched, so a frame costs the same at step 10 and 100,000 ─
const SMOOTH = 10; // batches averaged per chart point

/** Trailing means over SMOOTH batches of the last n finite values of `pick`; at most n points. */
export function smoothTail(batches: readonly BatchRecord[], pick: (b: BatchRecord) => number, n: number): number[] {
  const vals: number[] = [];
  for (let i = batches.length - 1; i >= 0 && vals.length < n + SMOOTH - 1; i--) {
    const v = pick(batches[i]);
    if (Number.isFinite(v)) vals.push(v);
  }
  vals.reverse();
  const out: number[] = [];
  let sum = 0;
  for (let i = 0; i < vals.length; i++) {
    sum += vals[i];
    if (i >= SMOOTH) sum -= vals[i - SMOOTH];
    if (i >= vals.length - n) out.push(sum / Math.min(i + 1, SMOOTH));
  }
  return out;
}

/** Stretches a short series (one point per epoch) over n columns by linear interpolation; long ones keep their tail. */
export function stretch(values: readonly number[], n: number): number[] {
  const v = values.filter(Number.isFinite);
  if (v.length >= n) return v.slice(-n);
  if (v.length < 2) return v.length === 1 ? new Array<number>(n).fill(v[0]) : [];
  const out: number[] = [];
  for (let x = 0; x < n; x++) {
    const t = (x * (v.length - 1)) / (n - 1);
    const i = Math.min(Math.floor(t), v.length - 2);
    out.push(v[i] + (v[i + 1] - v[i]) * (t - i));
  }
  return out;
}

const LABEL = 7; // y-axis label columns

/** Data columns of a chart `w` wide: asciichart draws label, space, axis, then one column per point. */
export const chartPoints = (w: number): number => Math.max(0, w - LABEL - 2);

/** Exactly h lines of a line chart of up to chartPoints(w) points per series, or a placeholder. */
function chart(series: number[][], w: number, h: number, label: (x: number) => string, colors: string[], empty: string): string[] {
  const data = series.map((v) => v.slice(-chartPoints(w))).filter((v) => v.length > 0);
  let lines: string[];
  if (data.length === 0 || h < 2 || chartPoints(w) < 2) {
    lines = [dim(empty)];
  } else {
    let min = Infinity;
    let max = -Infinity;
    for (const v of data) for (const x of v) (min = Math.min(min, x)), (max = Math.max(max, x));
    if (max - min < 1e-9) { // a flat series still gets a full-height axis
      const d = Math.max(Math.abs(max) * 0.01, 1e-3);
      min -= d;
      max += d;
    }
    const fmt = (x: number): string => label(x).padStart(LABEL).slice(-LABEL);
    lines = asciichart.plot(data, { height: h - 1, min, max, format: fmt, colors: colors.slice(0, data.length) }).split('\n');
  }
  while (lines.length < h) lines.push('');
  return lines.slice(0, h).map((l) => fit(l, w));
}

const lossLabel = (x: number): string => (Math.abs(x) < 10 ? x.toFixed(3) : x.toPrecision(3));
const accLabel = (x: number): string => `${(x * 100).toFixed(1)}%`;
const rateLabel = (x: number): string => (x >= 1e5 ? `${(x / 1000).toFixed(0)}k` : x >= 1e3 ? `${(x / 1000).toFixed(2)}k` : x.toFixed(0));

/** A section of exactly h lines: its title, then the body cut or padded to h - 1 lines. */
function section(title: string, body: string[], w: number, h: number): string[] {
  const lines = [title, ...body.slice(0, Math.max(0, h - 1))];
  while (lines.length < h) lines.push('');
  return lines.slice(0, h).map((l) => fit(l, w));
}

function beside(left: string[], right: string[], wl: number, wr: number): string[] {
  return left.map((l, i) => fit(l, wl, true) + dim(' │ ') + fit(right[i] ?? '', wr));
}

/** The headline value: the smoothed one, unless the last batch is not finite (a diverged run must show it). */
function current(batches: readonly BatchRecord[], pick: (b: BatchRecord) => number): number {
  const last = batches.at(-1);
  if (!last) return NaN;
  return Number.isFinite(pick(last)) ? smoothTail(batches, pick, 1)[0] : pick(last);
}

const ACC = (b: BatchRecord): number => b.accuracy;
const LOSS = (b: BatchRecord): number => b.loss;
const RATE = (b: BatchRecord): number => b.samplesPerSec;

function progress(s: Snapshot, w: number): string[] {
  const E = s.config.epochs;
  const labels = [`epoch ${s.epoch}/${E}`, `batch ${s.batch}/${s.batchesPerEpoch}`];
  const lw = Math.max(labels[0].length, labels[1].length);
  const bw = Math.min(60, Math.max(10, w - lw - 48));
  const overall = s.totalSteps > 0 ? s.step / s.totalSteps : 0;
  const inEpoch = s.batchesPerEpoch > 0 ? s.batch / s.batchesPerEpoch : 0;
  return [
    `${bold(labels[0].padEnd(lw))} ${bar(overall, bw)} ${fmtPct(overall, 0).padStart(4)}  ` +
      `elapsed ${fmtDuration(s.elapsedSec)}  ETA ${fmtDuration(etaSec(s))}`,
    `${bold(labels[1].padEnd(lw))} ${bar(inEpoch, bw)} ${fmtPct(inEpoch, 0).padStart(4)}  ` +
      `${fmtRate(s.samplesPerSec)} samples/s  step ${fmtInt(s.step)}/${fmtInt(s.totalSteps)}`,
  ];
}

/** Worker busy bars and the step-time split, in exactly h lines (title included). */
function parallelism(s: Snapshot, w: number, h: number): string[] {
  const t = s.timing;
  const busy = s.workerBusy;
  const mean = busy.length > 0 ? busy.reduce((a, b) => a + b, 0) / busy.length : NaN;
  const facts = `${plural(busy.length, 'thread')} · step ${t.stepMs.toFixed(1)} ms · busy ${fmtPct(mean, 0)}`;
  const title = visibleWidth(facts) + 12 <= w ? `${bold('parallelism')} ${facts}` : facts;
  const total = t.computeMs + t.reduceMs + t.waitMs;
  const body: string[] = [];
  if (total > 0) {
    const c = Math.round((w * t.computeMs) / total);
    const r = Math.round((w * (t.computeMs + t.reduceMs)) / total) - c;
    body.push(cyan('█'.repeat(c)) + magenta('█'.repeat(r)) + yellow('█'.repeat(Math.max(0, w - c - r))));
    // the longest legend that fits the panel
    const ms = [t.computeMs, t.reduceMs, t.waitMs];
    const pct = ms.map((x) => fmtPct(x / total, 0));
    const legends = [
      ['compute', 'reduce+update', 'waiting'].map((n, i) => `${n} ${ms[i].toFixed(1)} ms ${pct[i]}`),
      ['compute', 'reduce+update', 'waiting'].map((n, i) => `${n} ${pct[i]}`),
      ['compute', 'reduce', 'wait'].map((n, i) => `${n} ${pct[i]}`),
    ].map(([a, b, c]) => `${cyan('■')} ${a}  ${magenta('■')} ${b}  ${yellow('■')} ${c}`);
    body.push(legends.find((l) => visibleWidth(l) <= w) ?? legends[2]);
  } else {
    body.push(dim('no step timed yet'), '');
  }
  const room = h - 1 - body.length;
  const shown = busy.length <= room ? busy.length : Math.max(0, room - 1);
  const bw = Math.max(4, w - 11);
  for (let i = 0; i < shown; i++) {
    body.push(`${`w${i}`.padEnd(4)} ${bar(busy[i], bw)} ${fmtPct(busy[i], 0).padStart(4)}`);
  }
  if (shown < busy.length && room > 0) {
    body.push(dim(`${shown > 0 ? `+${busy.length - shown} more` : plural(busy.length, 'worker')} · min ${fmtPct(Math.min(...busy), 0)} · max ${fmtPct(Math.max(...busy), 0)}`));
  }
  return section(title, body, w, h);
}

const TABLE_HEAD = `${'epoch'.padStart(5)}  ${'train loss'.padStart(10)}  ${'train acc'.padStart(9)}  ` +
  `${'val loss'.padStart(9)}  ${'val acc'.padStart(8)}  ${'lr'.padStart(8)}  ${'time'.padStart(7)}`;

function tableRow(e: EpochRecord, best: boolean): string {
  const row = `${String(e.epoch).padStart(5)}  ${fmtLoss(e.trainLoss).padStart(10)}  ${fmtPct(e.trainAccuracy, 2).padStart(9)}  ` +
    `${fmtLoss(e.valLoss).padStart(9)}  ${fmtPct(e.valAccuracy, 2).padStart(8)}  ${fmtLr(e.lr).padStart(8)}  ` +
    `${(e.seconds.toFixed(1) + 's').padStart(7)}`;
  return best ? green(row) : row;
}

/** The last `rows` finished epochs under a header; the best validation accuracy so far in green. */
function table(epochs: readonly EpochRecord[], rows: number): string[] {
  if (epochs.length === 0) return [bold(TABLE_HEAD), dim('no finished epoch yet')];
  let best = 0;
  for (let i = 1; i < epochs.length; i++) if (epochs[i].valAccuracy > epochs[best].valAccuracy) best = i;
  const from = Math.max(0, epochs.length - rows);
  return [bold(TABLE_HEAD), ...epochs.slice(from).map((e, i) => tableRow(e, from + i === best))];
}

export const MIN_WIDTH = 80;
export const MIN_HEIGHT = 24;

/** A few lines of text for a terminal too small for the dashboard. */
export function renderCompact(s: Snapshot, w: number, h: number, notice = ''): string[] {
  const b = s.batches.at(-1);
  const last = s.epochs.at(-1);
  const lines = [
    bold(`mnist-par · ${s.data ?? s.config.dataset} · ${s.phase}`),
    `epoch ${s.epoch}/${s.config.epochs} · batch ${s.batch}/${s.batchesPerEpoch} · ` +
      `${fmtPct(s.totalSteps > 0 ? s.step / s.totalSteps : 0, 0)}`,
    b ? `loss ${fmtLoss(current(s.batches, LOSS))} · acc ${fmtPct(current(s.batches, ACC))} · lr ${fmtLr(b.lr)}` : 'waiting for the first step…',
    `${fmtRate(s.samplesPerSec)} samples/s · ${fmtDuration(s.elapsedSec)} · ETA ${fmtDuration(etaSec(s))}`,
    last ? `epoch ${last.epoch}: val loss ${fmtLoss(last.valLoss)} · acc ${fmtPct(last.valAccuracy, 2)}` : 'no finished epoch yet',
    notice ? yellow(notice) : dim('q: stop after this step'),
    dim(`${w}×${h}: ${MIN_WIDTH}×${MIN_HEIGHT} or more shows the dashboard`),
  ];
  return lines.slice(0, Math.max(0, h)).map((l) => fit(l, Math.max(0, w)));
}

/**
 * The dashboard as at most `height` lines of at most `width` columns (escape codes aside):
 * header (2), progress (2), three rows of two panels, the epoch table, a footer line.
 */
export function renderDashboard(s: Snapshot, width: number, height: number, notice = ''): string[] {
  if (width < MIN_WIDTH || height < MIN_HEIGHT) return renderCompact(s, width, height, notice);
  const W = width;
  const d = describeRun(s);
  const phase = s.phase === 'training' ? '' : ` · ${s.phase}`;
  const lines = [inverse(fit(` mnist-par · ${d.model}${phase}`, W, true)), fit(dim(d.setup), W), ...progress(s, W).map((l) => fit(l, W))];

  // Height: 5 fixed lines; the table gets up to 8 epochs but leaves each panel 4 lines of chart or more,
  // the three panel rows share the rest equally.
  const avail = height - 5;
  const tableRows = Math.min(Math.max(1, s.epochs.length), Math.max(1, Math.min(8, avail - 16)));
  const panels = avail - 1 - tableRows;
  const ph = [0, 1, 2].map((i) => Math.floor(panels / 3) + (i < panels % 3 ? 1 : 0));
  const wl = Math.floor((W - 3) / 2);
  const wr = W - 3 - wl;
  const nl = chartPoints(wl);
  const nr = chartPoints(wr);

  const started = s.batches.length > 0;
  const lossNow = started ? fmtLoss(current(s.batches, LOSS)) : '–';
  const accNow = started ? fmtPct(current(s.batches, ACC)) : '–';
  const wait = 'waiting for the first steps…';
  lines.push(...beside(
    section(`${bold('batch loss')} ${lossNow} ${dim(`(mean of ${SMOOTH})`)}`,
      chart([smoothTail(s.batches, LOSS, nl)], wl, ph[0] - 1, lossLabel, [asciichart.cyan], wait), wl, ph[0]),
    section(`${bold('batch accuracy')} ${accNow} ${dim(`(mean of ${SMOOTH})`)}`,
      chart([smoothTail(s.batches, ACC, nr)], wr, ph[0] - 1, accLabel, [asciichart.green], wait), wr, ph[0]),
    wl, wr));

  const ep = s.epochs;
  const legend = `${cyan('━ train')} ${magenta('━ val')}`;
  const noEpoch = 'after the first epoch';
  lines.push(...beside(
    section(`${bold('epoch loss')} ${legend}`, chart([stretch(ep.map((e) => e.trainLoss), nl), stretch(ep.map((e) => e.valLoss), nl)],
      wl, ph[1] - 1, lossLabel, [asciichart.cyan, asciichart.magenta], noEpoch), wl, ph[1]),
    section(`${bold('epoch accuracy')} ${legend}`, chart([stretch(ep.map((e) => e.trainAccuracy), nr), stretch(ep.map((e) => e.valAccuracy), nr)],
      wr, ph[1] - 1, accLabel, [asciichart.cyan, asciichart.magenta], noEpoch), wr, ph[1]),
    wl, wr));

  lines.push(...beside(
    section(`${bold('throughput')} ${fmtRate(s.samplesPerSec)} samples/s`,
      chart([smoothTail(s.batches, RATE, nl)], wl, ph[2] - 1, rateLabel, [asciichart.yellow], wait), wl, ph[2]),
    parallelism(s, wr, ph[2]),
    wl, wr));

  const [head, ...rows] = table(ep, tableRows);
  lines.push(...section(head, rows, W, 1 + tableRows));
  lines.push(fit(notice ? bold(yellow(notice)) : dim('q / Ctrl-C: stop after this step'), W));
  return lines;
}

const STOPPING = 'stopping after this step…';
const FRAME_MS = 100; // at most 10 frames a second

/** Draws on process.stdout through terminal-kit; restores the terminal on finish, close, exit and crash. */
export class Dashboard implements Reporter {
  private readonly term = termkit.terminal;
  private readonly interrupts: Interrupts;
  private active = false;
  private snap: Snapshot | undefined;
  private drawn: string[] = [];
  private lastDraw = 0;
  private pending: NodeJS.Timeout | undefined;
  private unwatch = (): void => {};

  constructor(private readonly o: ReporterOptions) {
    this.interrupts = new Interrupts(o.onInterrupt, () => this.restore());
  }

  private get out(): OutputStream {
    return this.o.out ?? process.stdout;
  }

  private get err(): OutputStream {
    return this.o.err ?? process.stderr;
  }

  start(s: Snapshot): void {
    this.snap = s;
    if (!this.active) {
      this.active = true;
      const t = this.term;
      t.fullscreen(true);
      t.hideCursor();
      t.grabInput(true);
      t.on('key', this.onKey);
      t.on('resize', this.onResize);
      process.on('exit', this.restore);
      process.on('uncaughtExceptionMonitor', this.restore); // before Node prints the error, so it stays visible
      process.on('SIGINT', this.onSigint);
      process.on('SIGTERM', this.onSigterm);
      // the terminal or standard error went away (outputs.ts): stop after the step, as a closed pipe stops a log
      let asked = false;
      this.unwatch = onOutputFailure([this.out, this.err], () => {
        if (!asked) this.o.onInterrupt('SIGPIPE');
        asked = true;
      });
    }
    this.draw();
  }

  step(s: Snapshot): void {
    this.snap = s;
    const wait = this.lastDraw + FRAME_MS - performance.now();
    if (wait <= 0) this.draw();
    else if (!this.pending) {
      // the last state before a pause (validation, the end) still gets drawn
      this.pending = setTimeout(() => this.draw(), wait);
      this.pending.unref();
    }
  }

  epoch(s: Snapshot, _e: EpochRecord): void {
    this.snap = s;
    this.draw();
  }

  finish(s: Snapshot, summary: string[]): void {
    this.snap = s;
    this.restore();
    // the alternate screen is gone: leave the epochs and the summary in the scrollback
    const lines = [...s.epochs.map((e) => epochLine(e, s.config.epochs)), ...summary];
    const to = outputFailed(this.out) ? (outputFailed(this.err) ? null : this.err) : this.out;
    if (lines.length > 0) to?.write(lines.join('\n') + '\n');
  }

  close(): void {
    this.restore();
  }

  private draw(): void {
    clearTimeout(this.pending);
    this.pending = undefined;
    if (!this.active || !this.snap || outputFailed(this.out)) return;
    this.lastDraw = performance.now();
    const t = this.term;
    const lines = renderDashboard(this.snap, t.width, t.height, this.interrupts.stopping ? STOPPING : '');
    // rewrite only the lines that changed, each in one go: no clear, no flicker
    for (let i = 0; i < Math.max(lines.length, this.drawn.length); i++) {
      const line = lines[i] ?? '';
      if (line === this.drawn[i]) continue;
      t.moveTo(1, i + 1);
      t.noFormat(line);
      t.eraseLineAfter();
    }
    this.drawn = lines;
  }

  private readonly onKey = (name: string): void => {
    if (name === 'q' || name === 'Q') this.interrupts.press('q');
    else if (name === 'CTRL_C') this.interrupts.press('SIGINT');
    else return;
    this.draw();
  };

  private readonly onSigint = (): void => {
    this.interrupts.press('SIGINT');
    this.draw();
  };

  private readonly onSigterm = (): void => {
    this.restore();
    if (process.listenerCount('SIGTERM') === 0) process.kill(process.pid, 'SIGTERM'); // die as SIGTERM would have
  };

  private readonly onResize = (): void => {
    this.drawn = [];
    this.term.clear();
    this.draw();
  };

  /** Synchronous and idempotent: it also runs from process 'exit'. */
  private readonly restore = (): void => {
    if (!this.active) return;
    this.active = false;
    clearTimeout(this.pending);
    this.pending = undefined;
    const t = this.term;
    t.removeListener('key', this.onKey);
    t.removeListener('resize', this.onResize);
    process.removeListener('exit', this.restore);
    process.removeListener('uncaughtExceptionMonitor', this.restore);
    process.removeListener('SIGINT', this.onSigint);
    process.removeListener('SIGTERM', this.onSigterm);
    this.unwatch();
    t.grabInput(false);
    t.styleReset();
    t.hideCursor(false);
    t.fullscreen(false);
  };
}
