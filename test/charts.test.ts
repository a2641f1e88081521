// Charts: scales, PNG output (format, size, the palette's colours actually drawn), text drawn with our
// shipped fonts where the system has none, the CSV readers and `plot` end to end.
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { batchCsv, epochCsv, type BatchRecord, type EpochRecord } from '../src/metrics.js';
import { plotCommand } from '../src/plot.js';
import {
  CHART_HEIGHT, CHART_WIDTH, PALETTE, batchChartSpec, chartSvg, ema, epochChartSpec, formatTick, renderMetricsChart,
  scaleFor, scalingChartSpec, writeBatchChart, writeEpochChart, writeScalingChart, type ScalingPeer, type ScalingReport,
} from '../src/ui/charts.js';
import { parseBatchCsv, parseEpochCsv } from '../src/ui/csv.js';

const ROOT = resolve(import.meta.dirname, '..');
const made: string[] = [];
const tmp = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'mnist-par-charts-'));
  made.push(dir);
  return dir;
};
afterAll(() => { for (const d of made) rmSync(d, { recursive: true, force: true }); });

// ---------------------------------------------------------------------------------------------------------
// Fixtures and pixel helpers

function fakeBatches(epochs: number, perEpoch: number): BatchRecord[] {
  const out: BatchRecord[] = [];
  let step = 0;
  for (let e = 1; e <= epochs; e++) {
    for (let b = 1; b <= perEpoch; b++) {
      step++;
      const wobble = Math.sin(step * 1.7) * 0.2;
      const loss = 2.3 * Math.exp(-step / 40) + 0.05 + 0.1 * wobble;
      out.push({ epoch: e, batch: b, step, loss, accuracy: Math.min(1, 1 - loss / 2.5 + 0.02 * wobble), lr: 1e-3, samplesPerSec: 1000 });
    }
  }
  return out;
}

function fakeEpochs(n: number): EpochRecord[] {
  return Array.from({ length: n }, (_, i) => {
    const e = i + 1;
    return { epoch: e, trainLoss: 0.4 / e, trainAccuracy: 1 - 0.1 / e, valLoss: 0.2 + 0.05 / e, valAccuracy: 0.95 - 0.05 / e, lr: 1e-3, seconds: 3 };
  });
}

// a peer level as bench peers records it (with the BLAS it found PyTorch at its best on), or from before it checked
const PEER = { name: 'pytorch-1.13', batchSize: 256, samplesPerSec: 14000, threads: 2, blasThreads: 1, blas: 'openblas Cooperlake' };
const scaling = (peers: boolean, peer: ScalingPeer = PEER): ScalingReport => ({
  kind: 'scaling',
  machine: { cpu: 'Test CPU', cores: 2, node: 'v20.20.2' },
  kernels: 'relaxed',
  runs: [64, 256].flatMap((bs) => [1, 2, 3].map((t) => ({
    threads: t, batchSize: bs, samplesPerSec: 10000 * Math.min(t, 2) * (bs / 64) ** 0.2, efficiency: Math.min(t, 2) / t, speedup: Math.min(t, 2),
  }))),
  ...(peers ? { peers: [peer] } : {}),
});

interface Decoded { width: number; height: number; format: string | undefined; data: Buffer; channels: number }

async function decode(png: Buffer): Promise<Decoded> {
  const meta = await sharp(png).metadata();
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, format: meta.format, data, channels: info.channels };
}

/** Pixels within `tol` (max channel difference) of the #rrggbb colour. */
function countNear(img: Decoded, hex: string, tol = 24): number {
  const r = parseInt(hex.slice(1, 3), 16);
  const g = parseInt(hex.slice(3, 5), 16);
  const b = parseInt(hex.slice(5, 7), 16);
  let n = 0;
  for (let i = 0; i < img.data.length; i += img.channels) {
    if (Math.abs(img.data[i] - r) <= tol && Math.abs(img.data[i + 1] - g) <= tol && Math.abs(img.data[i + 2] - b) <= tol) n++;
  }
  return n;
}

async function expectChartPng(png: Buffer): Promise<Decoded> {
  const img = await decode(png);
  expect(img.format).toBe('png');
  expect([img.width, img.height]).toEqual([CHART_WIDTH, CHART_HEIGHT]);
  return img;
}

// A bold 3 px line across a fair part of a 1800 px chart leaves thousands of exact-colour pixels; a colour
// that is not drawn leaves none (tab10 colours are far from the greys and from each other).
const DRAWN = 1500;
const ABSENT = 20;

// ---------------------------------------------------------------------------------------------------------

describe('scales', () => {
  it('ticks are 1, 2 or 5 × 10^k apart and cover the data', () => {
    for (const [lo, hi] of [[0, 2.31], [0.013, 0.0171], [1, 37], [-3, 120000], [0.9, 0.995]]) {
      const s = scaleFor([lo, hi], { title: '' });
      const mant = s.step / 10 ** Math.floor(Math.log10(s.step));
      expect([1, 2, 5].some((m) => Math.abs(mant - m) < 1e-9)).toBe(true);
      expect(s.min).toBeLessThanOrEqual(lo);
      expect(s.max).toBeGreaterThanOrEqual(hi);
      expect(s.ticks.length).toBeGreaterThanOrEqual(3);
      expect(s.ticks.length).toBeLessThanOrEqual(12);
      for (let i = 1; i < s.ticks.length; i++) expect(s.ticks[i] - s.ticks[i - 1]).toBeCloseTo(s.step, 9);
    }
  });

  it('survives a constant, a single point, NaN and no data at all', () => {
    const c = scaleFor([0.5, 0.5, 0.5], { title: '' });
    expect(c.min).toBeLessThan(0.5);
    expect(c.max).toBeGreaterThan(0.5);
    const nan = scaleFor([NaN, 2, Infinity, 4], { title: '' });
    expect(nan.min).toBeLessThanOrEqual(2);
    expect(nan.max).toBeGreaterThanOrEqual(4);
    expect(nan.max).toBeLessThan(10);
    const none = scaleFor([NaN], { title: '' });
    expect([none.min, none.max]).toEqual([0, 1]);
    const one = scaleFor([3], { title: '', integer: true }, 6, true);
    expect(one.ticks).toContain(3);
    expect(one.ticks.every(Number.isInteger)).toBe(true);
  });

  it('respects floor and ceil but never hides data beyond them', () => {
    const acc = scaleFor([0.1, 0.999], { title: '', floor: 0, ceil: 1 });
    expect([acc.min, acc.max]).toEqual([0, 1]);
    const loss = scaleFor([-0.5, 2], { title: '', floor: 0 });
    expect(loss.min).toBeLessThanOrEqual(-0.5);
  });

  it('formats ticks with the decimals the step needs', () => {
    expect(formatTick(0.15, 0.05)).toBe('0.15');
    expect(formatTick(2, 1)).toBe('2');
    expect(formatTick(25000, 5000)).toBe('25,000');
    expect(formatTick(0.98, 0.02, 'percent')).toBe('98%');
    expect(formatTick(0.925, 0.005, 'percent')).toBe('92.5%');
  });

  it('EMA is bias-corrected and skips non-finite values', () => {
    expect(ema([3, 3, 3], 0.9)).toEqual([3, 3, 3].map(() => expect.closeTo(3, 12)));
    const s = ema([1, NaN, 1], 0.5);
    expect(Number.isNaN(s[1])).toBe(true);
    expect(s[2]).toBeCloseTo(1, 12);
    expect(ema([0, 10], 0.5)[1]).toBeCloseTo((0.5 * 0 * 0.5 + 0.5 * 10) / 0.75, 12);
  });
});

describe('chart PNGs', () => {
  it('batch chart: PNG of the right size with loss and accuracy colours, no validation colour', async () => {
    const img = await expectChartPng(await renderMetricsChart(batchChartSpec(fakeBatches(3, 60))));
    expect(countNear(img, PALETTE.loss)).toBeGreaterThan(DRAWN);
    expect(countNear(img, PALETTE.accuracy)).toBeGreaterThan(DRAWN);
    expect(countNear(img, PALETTE.val)).toBeLessThan(ABSENT);
  });

  it('epoch chart: train and validation colours both drawn; validation absent when it is NaN', async () => {
    const epochs = fakeEpochs(8);
    const img = await expectChartPng(await renderMetricsChart(epochChartSpec(epochs)));
    expect(countNear(img, PALETTE.train)).toBeGreaterThan(DRAWN);
    expect(countNear(img, PALETTE.val)).toBeGreaterThan(DRAWN);
    const noVal = epochs.map((e) => ({ ...e, valLoss: NaN, valAccuracy: NaN }));
    const img2 = await expectChartPng(await renderMetricsChart(epochChartSpec(noVal)));
    expect(countNear(img2, PALETTE.train)).toBeGreaterThan(DRAWN);
    expect(countNear(img2, PALETTE.val)).toBeLessThan(ABSENT);
  });

  it('scaling chart: a colour per batch size, and the peer adds a dashed line in its batch size colour', async () => {
    const dir = tmp();
    await writeScalingChart(join(dir, 'with.png'), scaling(true));
    await writeScalingChart(join(dir, 'without.png'), scaling(false));
    const withPeer = await expectChartPng(readFileSync(join(dir, 'with.png')));
    const without = await expectChartPng(readFileSync(join(dir, 'without.png')));
    expect(countNear(without, PALETTE.batchSizes[0])).toBeGreaterThan(DRAWN);
    expect(countNear(without, PALETTE.batchSizes[1])).toBeGreaterThan(DRAWN);
    expect(countNear(without, PALETTE.batchSizes[2])).toBeLessThan(ABSENT);
    // batch 256 is the second batch size; its peer line runs across the whole throughput panel
    expect(countNear(withPeer, PALETTE.batchSizes[1]) - countNear(without, PALETTE.batchSizes[1])).toBeGreaterThan(400);
    expect(scalingChartSpec(scaling(true)).panels[0].hlines!.map((h) => h.label))
      .toEqual(['pytorch-1.13 (openblas Cooperlake), batch 256, 2 threads']);
    // a level that does not say which BLAS PyTorch ran may be an unfair one: it is not drawn
    const { blas: _, ...unjudged } = PEER;
    expect(scalingChartSpec(scaling(true, unjudged)).panels[0].hlines).toEqual([]);
    await writeScalingChart(join(dir, 'unjudged.png'), scaling(true, unjudged));
    expect(readFileSync(join(dir, 'unjudged.png')).equals(readFileSync(join(dir, 'without.png')))).toBe(true);
    expect(chartSvg({ title: 't', panels: [] })).toContain('font-family="DejaVu Sans"');
  });

  it('degenerate data still gives a valid PNG: no rows, one point, constants, NaN', async () => {
    const dir = tmp();
    const one = fakeEpochs(1);
    const constant = fakeEpochs(4).map((e) => ({ ...e, trainLoss: 0.3, valLoss: 0.3, trainAccuracy: 0.9, valAccuracy: 0.9 }));
    const nan = fakeBatches(1, 50).map((b, i) => (i > 30 ? { ...b, loss: NaN, accuracy: NaN } : b));
    await writeEpochChart(join(dir, 'one.png'), one);
    await writeEpochChart(join(dir, 'const.png'), constant);
    await writeBatchChart(join(dir, 'nan.png'), nan);
    await writeBatchChart(join(dir, 'empty.png'), []);
    await writeBatchChart(join(dir, 'single.png'), fakeBatches(1, 1));
    for (const f of ['one', 'const', 'nan', 'empty', 'single']) await expectChartPng(readFileSync(join(dir, `${f}.png`)));
    // a lone point is drawn as a marker, so its colour shows
    expect(countNear(await decode(readFileSync(join(dir, 'one.png'))), PALETTE.val)).toBeGreaterThan(100);
    // atomic writes leave no temporaries behind
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Fonts: render in a child process whose fontconfig sees no system fonts (FONTCONFIG_FILE names a config with
// no <dir>, HOME and XDG folders point at an empty place). Without ensureFonts() every glyph is the same
// missing-glyph box, so "IIIIII" and "WWWWWW" come out equally wide; with it, the glyphs are real.

/** Transpiles the few sources the child needs into a plain-JS tree beside a link to our node_modules. */
function childTree(): string {
  const dir = tmp();
  for (const rel of ['src/errors.ts', 'src/fsutil.ts', 'src/ui/format.ts', 'src/ui/fonts.ts', 'src/ui/svg.ts', 'src/ui/charts.ts']) {
    const js = ts.transpileModule(readFileSync(join(ROOT, rel), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const out = join(dir, rel.replace(/\.ts$/, '.js'));
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, js);
  }
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  writeFileSync(join(dir, 'child.mjs'), `
    import sharp from 'sharp';
    const ours = process.argv[2] === 'ours';
    const charts = await import('./src/ui/charts.js');
    const render = (svg) => ours ? charts.svgToPng(svg) : sharp(Buffer.from(svg)).png().toBuffer();
    const label = (s) => '<svg xmlns="http://www.w3.org/2000/svg" width="900" height="160"><rect width="900" height="160" fill="white"/>' +
      '<text x="20" y="115" font-family="DejaVu Sans" font-size="96">' + s + '</text></svg>';
    // ink: dark pixels; width: columns between the first and last dark pixel
    async function measure(svg) {
      const { data, info } = await sharp(await render(svg)).greyscale().raw().toBuffer({ resolveWithObject: true });
      let ink = 0, lo = Infinity, hi = -1;
      for (let i = 0; i < data.length; i++) if (data[i] < 128) { ink++; const x = i % info.width; lo = Math.min(lo, x); hi = Math.max(hi, x); }
      return { ink, width: hi - lo + 1 };
    }
    const epochs = [1, 2, 3].map((e) => ({ epoch: e, trainLoss: 1 / e, trainAccuracy: 1 - 0.1 / e, valLoss: 1.2 / e, valAccuracy: 0.9, lr: 0, seconds: 1 }));
    const chart = await render(charts.chartSvg(charts.epochChartSpec(epochs)));
    process.stdout.write(JSON.stringify({ I: await measure(label('IIIIII')), W: await measure(label('WWWWWW')), chart: chart.toString('base64') }));
  `);
  return dir;
}

interface ChildResult { I: { ink: number; width: number }; W: { ink: number; width: number }; chart: string }

async function runChild(dir: string, mode: 'bare' | 'ours'): Promise<ChildResult> {
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  const empty = join(dir, 'empty-fonts.conf');
  writeFileSync(empty, `<?xml version="1.0"?>\n<fontconfig><cachedir>${join(dir, 'fc-cache')}</cachedir></fontconfig>\n`);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH, TMPDIR: join(dir, 'tmp'), FONTCONFIG_FILE: empty,
    HOME: home, XDG_CONFIG_HOME: home, XDG_DATA_HOME: home, XDG_CACHE_HOME: home, XDG_DATA_DIRS: home,
  };
  mkdirSync(env.TMPDIR!, { recursive: true });
  const { stdout } = await promisify(execFile)(process.execPath, [join(dir, 'child.mjs'), mode], { env, cwd: dir, maxBuffer: 64 << 20 });
  return JSON.parse(stdout) as ChildResult;
}

describe('fonts', () => {
  it('text is drawn with the shipped DejaVu where no system font is visible', async () => {
    const dir = childTree();
    const bare = await runChild(dir, 'bare');
    const ours = await runChild(dir, 'ours');
    // The premise: with the system fonts hidden and nothing of ours, I and W are the same missing-glyph box.
    expect(bare.I.width).toBe(bare.W.width);
    expect(bare.I.ink).toBe(bare.W.ink);
    // With ensureFonts(): real glyphs, W far wider and inkier than I.
    expect(ours.I.ink).toBeGreaterThan(0);
    expect(ours.W.width).toBeGreaterThan(2 * ours.I.width);
    expect(ours.W.ink).toBeGreaterThan(1.5 * ours.I.ink);
    // And a whole chart renders differently (its labels are real text, not boxes).
    const a = await decode(Buffer.from(bare.chart, 'base64'));
    const b = await decode(Buffer.from(ours.chart, 'base64'));
    expect([b.width, b.height]).toEqual([CHART_WIDTH, CHART_HEIGHT]);
    let differ = 0;
    for (let i = 0; i < a.data.length; i++) if (Math.abs(a.data[i] - b.data[i]) > 64) differ++;
    expect(differ).toBeGreaterThan(2000);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------------------

describe('CSV readers', () => {
  it('read back what training writes, NaN included', () => {
    const batches = fakeBatches(2, 3);
    batches[4] = { ...batches[4], loss: NaN };
    const back = parseBatchCsv(batchCsv(batches), 'b.csv');
    expect(back).toHaveLength(6);
    expect(back[0].step).toBe(1);
    expect(back[5].epoch).toBe(2);
    expect(back[1].loss).toBeCloseTo(batches[1].loss, 5);
    expect(Number.isNaN(back[4].loss)).toBe(true);
    const epochs = fakeEpochs(3);
    const eb = parseEpochCsv(epochCsv(epochs).replace(/\n/g, '\r\n'), 'e.csv');
    expect(eb.map((e) => e.epoch)).toEqual([1, 2, 3]);
    expect(eb[2].valAccuracy).toBeCloseTo(epochs[2].valAccuracy, 6);
  });

  it('a wrong header or a bad row is a UserError naming the file and line', () => {
    const good = batchCsv(fakeBatches(1, 3)).split('\n');
    const err = (f: () => unknown): UserError => {
      try { f(); } catch (e) { return e as UserError; }
      throw new Error('expected a throw');
    };
    const h = err(() => parseBatchCsv(['epoch,loss', ...good.slice(1)].join('\n'), 'm/batch.csv'));
    expect(h).toBeInstanceOf(UserError);
    expect(h.message).toMatch(/^m\/batch\.csv:1: expected the header/);
    const rows = [...good];
    rows[2] = rows[2].replace(/,[^,]+,/, ',x7,');
    const r = err(() => parseBatchCsv(rows.join('\n'), 'm/batch.csv'));
    expect(r).toBeInstanceOf(UserError);
    expect(r.message).toMatch(/^m\/batch\.csv:3: column batch should be a whole number, found "x7"/);
    const short = err(() => parseEpochCsv(epochCsv(fakeEpochs(2)).replace(/\n2,.*\n/, '\n2,0.1\n'), 'e.csv'));
    expect(short.message).toMatch(/^e\.csv:3: expected 7 comma-separated fields/);
    expect(err(() => parseEpochCsv('', 'e.csv')).message).toMatch(/^e\.csv: empty file/);
    expect(h.message).not.toContain('\n');
  });
});

describe('plotCommand', () => {
  it('renders both metric charts and a scaling chart from saved files', async () => {
    const dir = tmp();
    const models = join(dir, 'models');
    mkdirSync(models);
    writeFileSync(join(models, 'batch_metrics.csv'), batchCsv(fakeBatches(2, 40)));
    writeFileSync(join(models, 'epoch_metrics.csv'), epochCsv(fakeEpochs(2)));
    const bench = join(dir, 'scaling-test.json');
    writeFileSync(bench, JSON.stringify(scaling(true)));
    const out = join(dir, 'plots', 'nested');
    const paths = await plotCommand({ metrics: models, bench, plots: out });
    expect(paths).toEqual([join(out, 'batch_metrics.png'), join(out, 'epoch_metrics.png'), join(out, 'scaling-test.png')]);
    for (const p of paths) await expectChartPng(readFileSync(p));
    // only the bench given: metrics are not looked for
    expect(await plotCommand({ bench, plots: out })).toEqual([join(out, 'scaling-test.png')]);
  }, 30_000);

  it('missing or bad inputs and an unwritable output folder are UserErrors that name the path', async () => {
    const dir = tmp();
    const nowhere = join(dir, 'no-such-dir');
    await expect(plotCommand({ metrics: nowhere, plots: join(dir, 'p') })).rejects.toThrow(
      new UserError(`${nowhere}: found neither batch_metrics.csv nor epoch_metrics.csv; train first, or pass --metrics <dir> naming the folder a run wrote them to`));
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"kind":"scaling","machine":{},"runs":[{"threads":0}]}');
    await expect(plotCommand({ bench: bad, plots: join(dir, 'p') })).rejects.toThrow(/bad\.json: runs\[0\] needs numbers threads/);
    writeFileSync(bad, '{not json');
    await expect(plotCommand({ bench: bad, plots: join(dir, 'p') })).rejects.toThrow(/bad\.json: not valid JSON/);
    await expect(plotCommand({ bench: join(dir, 'gone.json'), plots: join(dir, 'p') })).rejects.toThrow(/gone\.json: cannot read it \(no such file\)/);
    const models = join(dir, 'models');
    mkdirSync(models);
    writeFileSync(join(models, 'epoch_metrics.csv'), 'epoch,oops\n');
    await expect(plotCommand({ metrics: models, plots: join(dir, 'p') })).rejects.toThrow(/epoch_metrics\.csv:1: expected the header/);
    writeFileSync(join(models, 'epoch_metrics.csv'), epochCsv(fakeEpochs(1)));
    // a file where the output folder should be: cannot be created, whoever we run as
    const blocker = join(dir, 'file');
    writeFileSync(blocker, 'x');
    const outDir = join(blocker, 'plots');
    const e = await plotCommand({ metrics: models, plots: outDir }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).toMatch(new RegExp(`^${outDir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: cannot create the output folder`));
  }, 30_000);
});
