// The library API: `import { train, loadModel } from 'mnist-par'`. Options take the --config names and are
// checked the same way; nothing prints unless asked; an AbortSignal stops after the step and saves, as
// Ctrl-C does; the trained model predicts and evaluates. The last test installs the packed package into a
// folder of its own and uses it from there, as another project would.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadModel, train, UsageError } from '../src/index.js';
import { loadSplit } from '../src/data/idx.js';
import { DATASETS } from '../src/data/datasets.js';
import { cliPath, mnistDir, repoRoot, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-api-'));
const small = { dataDir: mnistDir, download: false, threads: 2, limitTrain: 2000, limitTest: 500, batchSize: 100 };

describe('train()', () => {
  let written: string[];
  beforeEach(() => {
    written = [];
    const keep = (chunk: unknown) => {
      written.push(String(chunk));
      return true;
    };
    vi.spyOn(process.stdout, 'write').mockImplementation(keep);
    vi.spyOn(process.stderr, 'write').mockImplementation(keep);
  });
  afterEach(() => vi.restoreAllMocks());

  it('trains silently, reports every epoch, and returns the model, the metrics and the files', async () => {
    const out = join(tmp(), 'api-run');
    const seen: number[] = [];
    const run = await train({ ...small, epochs: 2, out, onEpoch: (e) => seen.push(e.epoch) });
    expect(written, 'printed something').toEqual([]);
    expect(seen).toEqual([1, 2]);
    expect(run.stoppedBy).toBe('completed');
    expect(run.out).toBe(out);
    expect(run.metrics.map((e) => e.epoch)).toEqual([1, 2]);
    expect(run.metrics[1].valAccuracy).toBeGreaterThan(0.7);
    expect(run.files).toContain(join(out, 'model.safetensors'));
    expect(run.model.layers).toEqual([784, 128, 256, 512, 128, 10]);
    // the same run as the command line gives, byte for byte
    const cli = join(tmp(), 'cli-run');
    expect(runCli(['--data-dir', mnistDir, '--no-download', '--threads', '2', '--limit-train', '2000', '--limit-test', '500',
      '--batch-size', '100', '--epochs', '2', '--out', cli]).code).toBe(0);
    expect(readFileSync(join(out, 'model.safetensors')).equals(readFileSync(join(cli, 'model.safetensors')))).toBe(true);
  });

  it('refuses a bad option with the one line the CLI prints for it, before any work', async () => {
    for (const [options, message] of [
      [{ lr: -1 }, '--lr: expected a number > 0 and ≤ 10, got -1'],
      [{ hidden: [128, 'x'] }, '--hidden: expected a list of layer widths'],
      [{ epochz: 3 }, "unknown configuration field 'epochz'"],
      [{ out: '' }, '--out: expected a directory path, got an empty string'],
      [{ reporter: 'loud' }, 'reporter: expected one of plain, json, silent'],
      // the --config file's checks, through the same path
      [{ noDownload: 'maybe' }, "--no-download: expected true or false, got 'maybe'"],
      [{ epochs: 'three' }, "--epochs: expected an integer in 1..100000, got 'three'"],
      [{ download: true, noDownload: true }, 'download and noDownload contradict each other'],
    ] as [Record<string, unknown>, string][]) {
      const e = await train(options as never).then(() => null, (err: unknown) => err);
      expect(e, JSON.stringify(options)).toBeInstanceOf(UsageError);
      expect((e as Error).message).toContain(message);
      expect((e as Error).message).not.toContain('\n');
    }
    expect(written).toEqual([]);
  });

  it('takes the fields as a --config file does: a flag\'s text for its value, noDownload for --no-download', async () => {
    const run = await train({ dataDir: mnistDir, noDownload: true, threads: '2', limitTrain: '500', limitTest: '100', batchSize: '100',
      epochs: '1', hidden: '32,16', out: join(tmp(), 'as-flags') });
    expect(run.model.layers).toEqual([784, 32, 16, 10]);
    expect(JSON.parse(readFileSync(join(run.out, 'config.json'), 'utf8'))).toMatchObject({ download: false, hidden: [32, 16], epochs: 1 });
  });

  it("reporter 'plain' ends as the command line does: the test accuracy, the files written", async () => {
    const run = await train({ ...small, limitTrain: 500, limitTest: 100, epochs: 1, out: join(tmp(), 'plain'), reporter: 'plain' });
    const text = written.join('');
    expect(text).toMatch(/^mnist · mlp 784→128→256→512→128→10 · /);
    expect(text).toMatch(new RegExp(`\\nmnist-par: finished 1 epoch \\(\\d+\\.\\d s\\); epoch 1 test accuracy \\d+\\.\\d\\d%, test loss \\d\\.\\d{4}\\nwrote .*${join(run.out, 'model.safetensors')}`));
  });

  it('an AbortSignal stops after the step, saves, and the run resumes from there', async () => {
    const out = join(tmp(), 'aborted');
    const ac = new AbortController();
    const run = await train({ ...small, epochs: 2, out, signal: ac.signal, onStep: (s) => { if (s.step === 7) ac.abort(); } });
    expect(run.stoppedBy).toBe('abort');
    expect(run.reason).toMatch(/^stopped by abort in epoch 1 after batch \d+\/20$/);
    expect(existsSync(join(out, 'checkpoint-last.safetensors'))).toBe(true);
    vi.restoreAllMocks();
    const r = runCli(['--resume', out, '--json', '--log-every', '1']);
    expect(r.code, r.stderr).toBe(0);
    const first = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((x) => x.type === 'batch');
    expect(first.step).toBe(Number(/after batch (\d+)/.exec(run.reason)![1]) + 1);
  });

  it('prints nothing even when it has to download, and refuses callbacks that are not functions', async () => {
    const mnist = DATASETS.mnist as { mirrors: readonly string[] };
    const mirrors = mnist.mirrors;
    // a mirror that refuses at once: the download fails after logging each attempt, which a silent run must not show
    mnist.mirrors = ['http://127.0.0.1:1/'];
    const base = tmp();
    try {
      // the README's example without a network: no run folder and no dataset folder are left behind, empty
      const e = await train({ dataDir: join(base, 'datasets', 'mnist'), epochs: 1, out: join(base, 'models', 'api-run') })
        .then(() => null, (err: unknown) => err);
      expect((e as Error).message).toMatch(/could not download/);
    } finally {
      mnist.mirrors = mirrors;
    }
    expect(readdirSync(base)).toEqual([]);
    expect(written).toEqual([]);
    await expect(train({ ...small, onEpoch: 'log' as never })).rejects.toThrow('onEpoch: expected a function, got string');
    await expect(train({ ...small, signal: {} as never })).rejects.toThrow('signal: expected an AbortSignal');
  });

  it('an AbortSignal also abandons a download in progress', async () => {
    // a mirror that accepts the connection and never answers
    const server = createServer(() => {});
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    const mnist = DATASETS.mnist as { mirrors: readonly string[] };
    const mirrors = mnist.mirrors;
    mnist.mirrors = [`http://127.0.0.1:${(server.address() as AddressInfo).port}/`];
    const ac = new AbortController();
    const t0 = performance.now();
    setTimeout(() => ac.abort(new Error('enough')), 300);
    const base = tmp();
    try {
      const e = await train({ dataDir: join(base, 'empty'), epochs: 1, out: join(base, 'x'), signal: ac.signal })
        .then(() => null, (err: unknown) => err);
      expect((e as Error).message).toBe('enough');
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(readdirSync(base)).toEqual([]);
    } finally {
      mnist.mirrors = mirrors;
      server.closeAllConnections();
      server.close();
    }
    expect(written).toEqual([]);
  });

  it('a signal already aborted rejects at once with its reason', async () => {
    const e = await train({ ...small, signal: AbortSignal.abort(new Error('not now')) }).then(() => null, (err: unknown) => err);
    expect((e as Error).message).toBe('not now');
  });
});

describe('loadModel()', () => {
  it('predicts from a file, from bytes and from floats alike, and evaluates on the test split', async () => {
    const dir = tmp();
    const run = await train({ ...small, epochs: 2, out: join(dir, 'run') });
    const model = await loadModel(join(dir, 'run', 'model.safetensors'));
    expect(model.dataset).toBe('mnist');
    const test = await loadSplit(mnistDir, 'test', 'mnist');
    const image = test.images.slice(0, 784);
    const png = join(dir, 'digit.png');
    await sharp(Buffer.from(image), { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(png);
    const fromBytes = await model.predict(image);
    const fromFloats = await model.predict(Float32Array.from(image, (v) => v / 255));
    const fromFile = await model.predict(png);
    expect(fromFloats.probabilities).toEqual(fromBytes.probabilities);
    expect(fromFile.digit).toBe(fromBytes.digit);
    expect(fromBytes.label).toBe(String(fromBytes.digit));
    expect(fromBytes.probabilities.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    await expect(model.predict(new Uint8Array(100))).rejects.toThrow('predict: expected 784 pixels (28×28), got 100');

    for (const [options, message] of [
      // named by their flags, as train()'s options are
      [{ threads: 0 }, '--threads: expected an integer in 1..256, got 0'],
      [{ threads: 1.5 }, '--threads: expected an integer in 1..256, got 1.5'],
      [{ dataset: 'foo' }, "--dataset: expected one of mnist, fashion-mnist, got 'foo'"],
      [{ kernels: 'gpu' }, "--kernels: expected one of auto, native, relaxed, simd, js, got 'gpu'"],
      [{ dataDir: '' }, '--data-dir: expected a path, got an empty string'],
      [{ download: 'yes' }, '--download: expected true or false, got "yes"'],
    ] as [Record<string, unknown>, string][]) {
      const e = await model.evaluate(options as never).then(() => null, (err: unknown) => err);
      expect((e as Error).message, JSON.stringify(options)).toBe(message);
    }
    // a run's folder names its model
    expect((await (await loadModel(join(dir, 'run'))).predict(image)).probabilities).toEqual(fromBytes.probabilities);
    const report = await model.evaluate({ dataDir: mnistDir, download: false, threads: 2 });
    expect(report.count).toBe(10_000);
    expect(report.accuracy).toBeGreaterThan(0.7);
    expect(report.confusion.flat().reduce((a, b) => a + b, 0)).toBe(10_000);
    // the same figure as the CLI's eval
    const ev = runCli(['eval', '--model', join(dir, 'run'), '--data-dir', mnistDir, '--no-download', '--threads', '2', '--json',
      '--plots', join(dir, 'plots')]);
    expect(JSON.parse(ev.stdout).accuracy).toBe(report.accuracy);
    expect(run.model.path).toBe(join(dir, 'run', 'model.safetensors'));
  });
});

describe('the packed package, installed elsewhere', () => {
  it('is imported by name, typed, and trains, predicts and evaluates from another project', () => {
    const dir = tmp();
    // dist is built (npm test builds first): pack it as it is, without running prepare again
    const tgz = execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: repoRoot, encoding: 'utf8' }).trim();
    const proj = join(dir, 'project');
    mkdirSync(proj);
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'outside', version: '1.0.0', type: 'module', private: true }));
    // the dependencies come from npm's cache, which installing this repository filled
    const inst = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, tgz.split('\n').at(-1)!)],
      { cwd: proj, encoding: 'utf8' });
    expect(inst.status, inst.stderr).toBe(0);
    writeFileSync(join(proj, 'use.ts'), `
import { train, loadModel, type Model, type TrainResult } from 'mnist-par';
const run: TrainResult = await train({ dataDir: ${JSON.stringify(mnistDir)}, download: false, epochs: 1, threads: 2,
  limitTrain: 1000, limitTest: 200, out: 'models/api-run', onEpoch: (e) => console.log('epoch', e.epoch, e.valAccuracy),
  signal: new AbortController().signal });
const model: Model = await loadModel('models/api-run/model.safetensors');
const { digit, probabilities } = await model.predict(new Uint8Array(784));
const report = await model.evaluate({ dataDir: ${JSON.stringify(mnistDir)}, download: false });
console.log(JSON.stringify({ out: run.out, digit, classes: probabilities.length, count: report.count }));
`);
    // the types resolve through the package's "exports" as any TypeScript project would see them
    const tsc = spawnSync(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict',
      '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node',
      '--typeRoots', join(repoRoot, 'node_modules', '@types'), 'use.ts'], { cwd: proj, encoding: 'utf8' });
    expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
    // and without @types/node, or even the DOM's library: the declarations need nothing but ES2022
    writeFileSync(join(proj, 'typed.ts'), `
import { train, loadModel, UsageError, type EvalReport, type Model, type TrainOptions, type TrainResult } from 'mnist-par';
const options: TrainOptions = { epochs: '2', hidden: [64, 32], noDownload: true, reporter: 'plain', onEpoch: (e) => { void e.valAccuracy; } };
export async function use(): Promise<number> {
  const run: TrainResult = await train(options);
  const model: Model = await loadModel(run.out);
  const report: EvalReport = await model.evaluate({ threads: 2 });
  return report.accuracy + (run.stoppedBy === 'abort' ? 1 : 0) + new UsageError('x').exitCode;
}
`);
    writeFileSync(join(proj, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, module: 'nodenext',
      moduleResolution: 'nodenext', target: 'es2022', lib: ['es2022'], types: [], noEmit: true }, files: ['typed.ts'] }));
    const bare = spawnSync(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], { cwd: proj, encoding: 'utf8' });
    expect(bare.status, bare.stdout + bare.stderr).toBe(0);
    const js = readFileSync(join(proj, 'use.ts'), 'utf8').replace(/, type \w+/g, '').replace(/: (TrainResult|Model)/g, '');
    writeFileSync(join(proj, 'use.mjs'), js);
    const r = spawnSync(process.execPath, ['use.mjs'], { cwd: proj, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^epoch 1 0\.\d+\n/);
    expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toEqual({ out: 'models/api-run', digit: expect.any(Number), classes: 10, count: 10_000 });
    // and the command line comes with it
    const cli = spawnSync(join(proj, 'node_modules', '.bin', 'mnist-par'), ['--version'], { encoding: 'utf8' });
    expect(cli.stdout.trim()).toBe(JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).version);
    expect(cliPath).toContain('dist');
  });
});
