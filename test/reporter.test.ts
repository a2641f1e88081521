import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  bar, fit, renderCompact, renderDashboard, smoothTail, stretch, stripAnsi, visibleWidth,
} from '../src/ui/dashboard.js';
import { DEFAULTS, type Config } from '../src/config.js';
import { NO_EARLY_STOP_YET, earlyStop } from '../src/early-stopping.js';
import { describeSchedule, fmtDuration, plural } from '../src/ui/format.js';
import { Interrupts } from '../src/ui/interrupts.js';
import { LineReporter } from '../src/ui/log.js';
import { createReporter, resolveMode, type Reporter, type ReporterOptions } from '../src/ui/reporter.js';
import type { BatchRecord } from '../src/metrics.js';
import { syntheticRun } from './fixtures/snapshots.js';

function fakeStream(isTTY = false): { stream: NodeJS.WriteStream; text: () => string } {
  let text = '';
  const stream = { isTTY, write(chunk: string) { text += chunk; return true; } } as unknown as NodeJS.WriteStream;
  return { stream, text: () => text };
}

/** Drives a reporter through a synthetic run like the training loop would. */
function drive(r: Reporter, epochs: number, batchesPerEpoch: number) {
  const run = syntheticRun({ epochs, batchesPerEpoch });
  r.start(run.snap);
  for (let i = 0; i < epochs * batchesPerEpoch; i++) {
    const e = run.advance();
    r.step(run.snap);
    if (e) r.epoch(run.snap, e);
  }
  r.finish(run.snap, ['done: 2 epochs', 'saved models/mnist.safetensors']);
  return run;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const noop = () => {};

afterEach(() => vi.restoreAllMocks());

describe('plain reporter', () => {
  it('prints a batch line every logEvery batches, an epoch line per epoch, then the summary; no escape codes', () => {
    const { stream, text } = fakeStream();
    const run = drive(createReporter({ mode: 'plain', logEvery: 100, onInterrupt: noop, out: stream }), 2, 250);
    const out = text();
    expect(out).not.toContain('\x1b');
    const lines = out.trimEnd().split('\n');
    const batchLines = lines.filter((l) => / batch \d+\/250 /.test(l));
    expect(batchLines.map((l) => l.split('  loss')[0])).toEqual(['epoch 1/2  batch 100/250', 'epoch 1/2  batch 200/250',
      'epoch 2/2  batch 100/250', 'epoch 2/2  batch 200/250']);
    expect(batchLines[0]).toMatch(/^epoch 1\/2 {2}batch 100\/250 {2}loss \d\.\d{4} {2}acc \d+\.\d% {2}lr \d\.\de-\d {2}\d{1,3}(,\d{3})* samples\/s$/);
    // the loss shown is the mean over the batches since the previous line: 101..200 for the second line
    const losses = run.batches.map((b) => b.loss);
    expect(batchLines[1]).toContain(`loss ${mean(losses.slice(100, 200)).toFixed(4)} `);
    expect(batchLines[2]).toContain(`loss ${mean(losses.slice(250, 350)).toFixed(4)} `);
    const epochLines = lines.filter((l) => l.includes('train loss'));
    expect(epochLines).toHaveLength(2);
    expect(epochLines[1]).toMatch(/^epoch 2\/2 {2}train loss \d\.\d{4} acc [\d.]+% {2}val loss \d\.\d{4} acc [\d.]+% {2}lr \S+ {2}[\d.]+s$/);
    expect(lines.slice(-2)).toEqual(['done: 2 epochs', 'saved models/mnist.safetensors']);
    expect(lines[0]).toContain('784→128→256→512→128→10');
  });

  it('prints nothing twice when step() repeats a snapshot', () => {
    const { stream, text } = fakeStream();
    const r = new LineReporter({ mode: 'plain', logEvery: 5, onInterrupt: noop, out: stream });
    const run = syntheticRun({ epochs: 1, batchesPerEpoch: 20 });
    r.start(run.snap);
    for (let i = 0; i < 5; i++) run.advance();
    r.step(run.snap);
    r.step(run.snap);
    r.close();
    expect(text().split('\n').filter((l) => l.includes('batch 5/20'))).toHaveLength(1);
  });
});

describe('json reporter', () => {
  it('writes one parseable JSON object per line, in order', () => {
    const { stream, text } = fakeStream();
    const run = drive(createReporter({ mode: 'json', logEvery: 100, onInterrupt: noop, out: stream }), 2, 250);
    const objs = text().trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(objs.map((o) => o.type)).toEqual(['start', 'batch', 'batch', 'epoch', 'batch', 'batch', 'epoch', 'summary']);
    expect(objs[3]).toEqual({ type: 'epoch', ...run.epochs[0] });
    expect(objs[1]).toMatchObject({ epoch: 1, batch: 100, step: 100 });
    expect(objs[1].loss).toBeCloseTo(mean(run.batches.slice(0, 100).map((b) => b.loss)), 12);
    expect(objs[7].lines).toEqual(['done: 2 epochs', 'saved models/mnist.safetensors']);
  });
});

describe('mode and interrupts', () => {
  const opts = (out: NodeJS.WriteStream): ReporterOptions => ({ mode: 'auto', logEvery: 10, onInterrupt: noop, out });

  it("'auto' is plain unless the output is a terminal and TERM is not dumb", () => {
    expect(resolveMode(opts(fakeStream(false).stream), { TERM: 'xterm-256color' })).toBe('plain');
    expect(resolveMode(opts(fakeStream(true).stream), { TERM: 'dumb' })).toBe('plain');
    expect(resolveMode(opts(fakeStream(true).stream), { TERM: 'xterm-256color' })).toBe('dashboard');
    expect(resolveMode({ ...opts(fakeStream(true).stream), mode: 'json' })).toBe('json');
    expect(createReporter(opts(fakeStream(false).stream))).toBeInstanceOf(LineReporter);
  });

  it('first Ctrl-C asks to stop once, a second one exits with 130; close() removes the handler', () => {
    const onInterrupt = vi.fn();
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const r = createReporter({ mode: 'plain', logEvery: 10, onInterrupt, out: fakeStream().stream });
    const before = process.listeners('SIGINT');
    r.start(syntheticRun().snap);
    const added = process.listeners('SIGINT').filter((l) => !before.includes(l));
    expect(added).toHaveLength(1);
    added[0]('SIGINT');
    expect(onInterrupt).toHaveBeenCalledTimes(1);
    expect(onInterrupt).toHaveBeenCalledWith('SIGINT');
    expect(exit).not.toHaveBeenCalled();
    added[0]('SIGINT');
    expect(onInterrupt).toHaveBeenCalledTimes(1);
    expect(exit).toHaveBeenCalledWith(130);
    r.close();
    r.close();
    expect(process.listeners('SIGINT')).toEqual(before);
  });

  it("a second 'q' does nothing; Ctrl-C after 'q' exits after restoring", () => {
    const onInterrupt = vi.fn();
    const restore = vi.fn();
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const it = new Interrupts(onInterrupt, restore);
    expect(it.press('q')).toBe(true);
    expect(it.press('q')).toBe(false);
    expect(onInterrupt.mock.calls).toEqual([['q']]);
    expect(exit).not.toHaveBeenCalled();
    it.press('SIGINT');
    expect(restore).toHaveBeenCalledTimes(1);
    expect(exit).toHaveBeenCalledWith(130);
  });
});

describe('dashboard layout', () => {
  function midRun(threads = 4) {
    const run = syntheticRun({ epochs: 6, batchesPerEpoch: 469, threads });
    for (let i = 0; i < 2 * 469 + 100; i++) run.advance();
    return run;
  }
  const plain = (lines: string[]) => lines.map(stripAnsi).join('\n');
  function expectFits(lines: string[], w: number, h: number) {
    expect(lines.length).toBeLessThanOrEqual(h);
    for (const l of lines) {
      expect(visibleWidth(l), JSON.stringify(stripAnsi(l))).toBeLessThanOrEqual(w);
      expect(l).not.toMatch(/[\n\r]/);
      expect(stripAnsi(l)).not.toContain('\x1b'); // no half escape sequence left behind
      expect(stripAnsi(l)).not.toMatch(/undefined|NaN|null/);
    }
  }

  it('shows every part at 120×40', () => {
    const lines = renderDashboard(midRun().snap, 120, 40);
    expect(lines).toHaveLength(40);
    expectFits(lines, 120, 40);
    const text = plain(lines);
    for (const part of ['mnist', '784→128→256→512→128→10', '269,322 params', '4 threads', 'simd kernels',
      'batch 128 ·', 'adamw wd 1e-4', 'lr 3.0e-3 onecycle warmup 25%', 'seed 42', 'out models/run-1',
      'epoch 3/6', 'batch 100/469', 'elapsed', 'ETA', 'samples/s', 'step 1,038/2,814',
      'batch loss', 'batch accuracy', 'epoch loss', 'epoch accuracy', 'throughput', 'parallelism',
      'w0', 'w3', 'compute 76%', 'reduce+update 16%', 'waiting 8%',
      'train loss', 'val acc', 'q / Ctrl-C']) {
      expect(text, part).toContain(part);
    }
    expect(text).not.toContain('w4');
    expect(lines.filter((l) => /^ +[12] +\d\.\d{4} /.test(stripAnsi(l)))).toHaveLength(2); // two table rows
    expect(text.match(/[┤┼]/g)!.length).toBeGreaterThan(20); // chart axes are drawn
    expect(plain(renderDashboard(midRun().snap, 200, 40))).toContain('compute 8.1 ms 76%  ■ reduce+update 1.7 ms 16%');
    expect(plain(renderDashboard(midRun().snap, 120, 40, 'stopping after this step…'))).toContain('stopping after this step…');
  });

  it('falls back to a compact view on a small terminal', () => {
    const s = midRun().snap;
    for (const [w, h] of [[60, 15], [79, 40], [120, 23]]) {
      const lines = renderDashboard(s, w, h);
      expect(lines).toEqual(renderCompact(s, w, h));
      expectFits(lines, w, h);
      const text = plain(lines);
      expect(text).toContain('epoch 3/6');
      expect(text).not.toContain('parallelism');
    }
    expect(renderDashboard(s, 80, 24)).toHaveLength(24);
  });

  it('never draws past the edges, at any size and any moment of the run', () => {
    const run = syntheticRun({ epochs: 3, batchesPerEpoch: 50, threads: 64 });
    const moments = [0, 1, 49, 50, 120, 150];
    for (let step = 0; step <= 150; step++) {
      if (moments.includes(step)) {
        for (const w of [0, 1, 10, 40, 79, 80, 81, 100, 120, 200, 301]) {
          for (const h of [0, 1, 5, 23, 24, 30, 40, 61]) expectFits(renderDashboard(run.snap, w, h), w, h);
        }
      }
      if (step < 150) run.advance();
    }
    expect(plain(renderDashboard(run.snap, 80, 24))).toMatch(/\+\d+ more/); // 64 workers do not fit
  });

  it('survives a diverged run (NaN and Infinity losses)', () => {
    const run = midRun();
    run.batches.push({ ...run.batches.at(-1)!, loss: NaN }, { ...run.batches.at(-1)!, loss: Infinity });
    const lines = renderDashboard(run.snap, 120, 40);
    expect(lines).toHaveLength(40);
    for (const l of lines) expect(visibleWidth(l)).toBeLessThanOrEqual(120);
    expect(plain(lines)).toContain('batch loss Infinity'); // the headline shows the divergence, not an old mean
    expect(plain(renderCompact(run.snap, 60, 15))).toContain('loss Infinity');
  });
});

describe('layout helpers', () => {
  it('fit cuts by visible columns, keeps escape codes whole and closes a cut style', () => {
    const red = '\x1b[31mabcdef\x1b[0m';
    expect(fit(red, 3)).toBe('\x1b[31mab…\x1b[0m');
    expect(fit(red, 6)).toBe(red);
    expect(fit(red, 10, true)).toBe(red + '    ');
    expect(fit('ab', 4, true)).toBe('ab  ');
    expect(fit('█▏→', 2)).toBe('█…');
    expect(fit('abc', 0)).toBe('');
    expect(visibleWidth(red)).toBe(6);
  });

  it('bar fills exactly its width, in eighths', () => {
    for (const f of [0, 0.01, 0.5, 0.99, 1, 2, -1, NaN]) expect(visibleWidth(bar(f, 17))).toBe(17);
    expect(stripAnsi(bar(0.5, 4))).toBe('██░░');
    expect(stripAnsi(bar(1 / 32, 4))).toBe('▏░░░'); // 1/32 of 4 cells = one eighth of a cell
  });

  it('smoothTail is a trailing mean over 10 batches of the last n finite values', () => {
    const rec = (loss: number): BatchRecord => ({ epoch: 1, batch: 1, step: 1, loss, accuracy: 0, lr: 0, samplesPerSec: 0 });
    const bs = Array.from({ length: 12 }, (_, k) => rec(k + 1));
    expect(smoothTail(bs, (b) => b.loss, 3)).toEqual([5.5, 6.5, 7.5]);
    expect(smoothTail(bs.slice(0, 2), (b) => b.loss, 3)).toEqual([1, 1.5]);
    expect(smoothTail([rec(1), rec(NaN), rec(3)], (b) => b.loss, 5)).toEqual([1, 2]);
    expect(smoothTail([], (b) => b.loss, 5)).toEqual([]);
  });

  it('stretch interpolates a short series across the chart and keeps the tail of a long one', () => {
    expect(stretch([1, 3], 5)).toEqual([1, 1.5, 2, 2.5, 3]);
    expect(stretch([4], 3)).toEqual([4, 4, 4]);
    expect(stretch([1, 2, 3, 4], 2)).toEqual([3, 4]);
    expect(stretch([], 4)).toEqual([]);
  });

  it('formats durations', () => {
    expect(fmtDuration(75)).toBe('1:15');
    expect(fmtDuration(3725)).toBe('1:02:05');
    expect(fmtDuration(NaN)).toBe('–:–');
  });

  it('says "1 epoch", not "1 epochs": the run\'s end, the step schedule and early stopping', () => {
    expect(plural(1, 'epoch')).toBe('1 epoch');
    expect([0, 2].map((n) => plural(n, 'epoch'))).toEqual(['0 epochs', '2 epochs']);
    const cfg = { ...DEFAULTS, schedule: 'step', stepSize: 1, gamma: 0.5 } as Config;
    expect(describeSchedule(cfg)).toBe('step ×0.5 every 1 epoch');
    const early = { ...NO_EARLY_STOP_YET };
    const rec = { epoch: 1, trainLoss: 1, trainAccuracy: 0.5, valLoss: 1, valAccuracy: 0.9, lr: 1e-3, seconds: 1 };
    const patient = { ...cfg, patience: 1, monitor: 'val_accuracy', minDelta: 0 } as Config;
    expect(earlyStop(patient, early, rec)).toBeNull();
    expect(earlyStop(patient, early, { ...rec, epoch: 2 })).toMatch(/^stopped early: validation accuracy did not improve by more than 0 for 1 epoch \(best/);
  });
});

describe('plain lines, many runs in one process (the library)', () => {
  it('one error listener per output stream however many reporters, and a failed output stops the live runs only', () => {
    const stream = new Writable({ write: (_chunk, _enc, done) => done() }) as unknown as NodeJS.WriteStream;
    const stops: string[] = [];
    const closed = new LineReporter({ mode: 'plain', logEvery: 10, onInterrupt: () => stops.push('closed'), out: stream });
    closed.close();
    for (let i = 0; i < 20; i++) new LineReporter({ mode: 'plain', logEvery: 10, onInterrupt: (how) => stops.push(how), out: stream }).close();
    const live = new LineReporter({ mode: 'plain', logEvery: 10, onInterrupt: (how) => stops.push(how), out: stream });
    expect(stream.listenerCount('error')).toBe(1);
    const silence = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    stream.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    silence.mockRestore();
    expect(stops).toEqual(['SIGPIPE']);
    live.close();
  });
});


describe('an output that goes away (ui/outputs.ts)', () => {
  const epipe = () => Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });

  it('a closed stderr stops the run as a closed stdout does; the summary still reaches stdout', () => {
    const out = fakeStream();
    const errText: string[] = [];
    const err = new Writable({ write: (chunk, _enc, done) => { errText.push(String(chunk)); done(); } }) as unknown as NodeJS.WriteStream;
    const stops: string[] = [];
    const r = new LineReporter({ mode: 'plain', logEvery: 10, onInterrupt: (how) => stops.push(how), out: out.stream, err });
    const run = syntheticRun({ epochs: 1, batchesPerEpoch: 20 });
    r.start(run.snap);
    err.emit('error', epipe());
    err.emit('error', epipe()); // every later write fails again: one request
    expect(stops).toEqual(['SIGPIPE']);
    r.finish(run.snap, ['mnist-par: stopped by SIGPIPE in epoch 1 after batch 1/20']);
    expect(errText).toEqual([]);
    expect(out.text()).toMatch(/\nmnist-par: stopped by SIGPIPE in epoch 1 after batch 1\/20\n$/);
  });

  it('a closed stdout: the stop is announced and the summary printed on stderr, nothing more on stdout', () => {
    let outText = '';
    const out = new Writable({ write: (chunk, _enc, done) => { outText += String(chunk); done(); } }) as unknown as NodeJS.WriteStream;
    const err = fakeStream();
    const stops: string[] = [];
    const r = new LineReporter({ mode: 'json', logEvery: 1, onInterrupt: (how) => stops.push(how), out, err: err.stream });
    const run = syntheticRun({ epochs: 1, batchesPerEpoch: 20 });
    r.start(run.snap);
    out.emit('error', epipe());
    run.advance();
    r.step(run.snap);
    r.finish(run.snap, ['the summary']);
    expect(stops).toEqual(['SIGPIPE']);
    expect(outText.trim().split('\n').map((l) => JSON.parse(l).type)).toEqual(['start']);
    expect(err.text()).toBe('mnist-par: the output was closed: stopping after this step\nthe summary\n');
  });
});

describe('counts in words', () => {
  it('one thread, one shard, one epoch: singular, wherever a count is printed', async () => {
    const { describeRun } = await import('../src/ui/format.js');
    const { earlyStop, NO_EARLY_STOP_YET } = await import('../src/early-stopping.js');
    const run = syntheticRun({ epochs: 1, batchesPerEpoch: 10 });
    const config = { ...run.snap.config, threads: 1, schedule: 'step' as const, stepSize: 1 };
    const d = describeRun({ ...run.snap, config });
    expect(d.setup).toMatch(/^1 thread · .* every 1 epoch$/);
    expect(describeRun({ ...run.snap, config: { ...config, threads: 2, stepSize: 2 } }).setup).toMatch(/^2 threads · .* every 2 epochs$/);
    const early = { ...NO_EARLY_STOP_YET };
    const cfg = { ...config, patience: 1, minDelta: 0, monitor: 'val_loss' as const };
    const rec = (epoch: number) => ({ epoch, trainLoss: 1, trainAccuracy: 0.5, valLoss: 1, valAccuracy: 0.5, lr: 0.001, seconds: 1 });
    expect(earlyStop(cfg, early, rec(1))).toBeNull();
    expect(earlyStop(cfg, early, rec(2))).toMatch(/ for 1 epoch \(best 1\.0000 at epoch 1\)$/);
    const one = renderDashboard({ ...run.snap, config, workerBusy: [0.5] }, 120, 40).map(stripAnsi).join('\n');
    expect(one).toContain('parallelism 1 thread ·');
  });
});
