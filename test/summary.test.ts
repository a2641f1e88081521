// `mnist-par summary` and model.summary(): the table's parameters are the tensors of a real model.safetensors,
// name for name and shape for shape; the FLOPs are the multiply-adds counted by hand; the arena is the one
// memory.ts lays out for the run's spec; a plain run prints the same table at start and --json gives the
// same object. Build first (npm run build): the CLI tests run dist/.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { trainingArenaSpec } from '../src/arena-spec.js';
import { modelSpec, validate } from '../src/config.js';
import { loadModel, UsageError } from '../src/index.js';
import { arenaLayout } from '../src/memory.js';
import { modelLayout, tensorNames } from '../src/model.js';
import { readSafetensors, weightTensors } from '../src/safetensors.js';
import { datasetSizes, formatSummary, modelSummary, type ModelSummary } from '../src/summary.js';
import { mnistDir, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-summary-'));
const small = ['--data-dir', mnistDir, '--no-download', '--threads', '2', '--limit-train', '512', '--limit-test', '256',
  '--batch-size', '128', '--epochs', '1'];

/** Every tensor the summary lists is in the file with that shape, and the file holds no other. */
async function expectMatchesFile(s: ModelSummary, file: string): Promise<void> {
  const { tensors } = await readSafetensors(file);
  const listed = s.layers.flatMap((l) => l.tensors);
  expect(listed.map((t) => t.name).sort()).toEqual([...tensors.keys()].sort());
  for (const t of listed) expect(t.shape, t.name).toEqual(tensors.get(t.name)!.shape);
  for (const l of s.layers) {
    const own = l.tensors.reduce((n, t) => n + tensors.get(t.name)!.data.length, 0);
    expect(l.params, `layer ${l.name}`).toBe(own);
  }
  const floats = [...tensors.values()].reduce((n, t) => n + t.data.length, 0);
  expect(s.params).toBe(floats);
  expect(s.weightBytes).toBe(4 * floats);
}

describe('the summary of a network, counted by hand', () => {
  it('the default mlp: 332,042 parameters, 2 FLOPs per multiply-add, no input gradient for the first layer', () => {
    const s = modelSummary(validate({ threads: 2 }));
    expect(s.network).toBe('mlp 784→128→256→512→128→10');
    expect(s.layers.map((l) => `${l.name} ${l.type} ${l.output.join('×')} ${l.params}`)).toEqual([
      '0 Linear 128 100480', '1 ReLU 128 0', '2 Linear 256 33024', '3 ReLU 256 0', '4 Linear 512 131584', '5 ReLU 512 0',
      '6 Linear 128 65664', '7 ReLU 128 0', '8 Linear 10 1290',
    ]);
    const macs = 784 * 128 + 128 * 256 + 256 * 512 + 512 * 128 + 128 * 10;
    expect(s.forwardFlops).toBe(2 * macs);
    // forward + weight gradients + input gradients of every layer but the first
    expect(s.trainFlops).toBe(3 * 2 * macs - 2 * 784 * 128);
    expect(s.params).toBe(332_042);
  });

  it('the default cnn: the convolutions\' multiply-adds per output pixel, the shapes torch-summary would print', () => {
    const s = modelSummary(validate({ model: 'cnn', threads: 2 }));
    expect(s.input).toEqual([1, 28, 28]);
    expect(s.layers.map((l) => `${l.name} ${l.type} ${l.output.join('×')}`)).toEqual([
      '0 Conv2d 16×24×24', '1 ReLU 16×24×24', '2 MaxPool2d 16×12×12', '3 Conv2d 32×8×8', '4 ReLU 32×8×8', '5 MaxPool2d 32×4×4',
      '6 Flatten 512', '7 Linear 128', '8 ReLU 128', '9 Linear 10',
    ]);
    const conv1 = 16 * 1 * 25 * 24 * 24, conv2 = 32 * 16 * 25 * 8 * 8, head = 512 * 128 + 128 * 10;
    expect(s.layers[0].forwardFlops).toBe(2 * conv1);
    expect(s.layers[3].forwardFlops).toBe(2 * conv2);
    expect(s.forwardFlops).toBe(2 * (conv1 + conv2 + head));
    expect(s.trainFlops).toBe(3 * 2 * (conv1 + conv2 + head) - 2 * conv1);
    expect(s.params).toBe(80_202);
  });

  it('names layers as the tensors are named, for every shape of network', () => {
    const configs = [{ hidden: [7] }, { hidden: [5, 6, 7, 8] }, { model: 'cnn', channels: [3], hidden: [9, 4] },
      { model: 'cnn', channels: [2, 5], hidden: [6] }];
    for (const cfg of configs) {
      const c = validate(cfg);
      const s = modelSummary(c);
      const layout = modelLayout(modelSpec(c));
      const names = tensorNames(layout);
      const want = weightTensors(layout, new Float32Array(layout.size)).map((t) => ({ name: t.name, shape: t.shape }));
      expect(s.layers.flatMap((l) => l.tensors), JSON.stringify(cfg)).toEqual(want);
      expect([...names.conv, ...names.linear].map((n) => n.weight.split('.')[0]))
        .toEqual(s.layers.filter((l) => l.params > 0).map((l) => l.name));
      expect(s.params).toBe(layout.size);
    }
  });

  it('sizes the arena memory.ts lays out for the run\'s spec, growing with the batch, the threads and the optimizer', () => {
    const cfg = validate({ threads: 3, batchSize: 512 });
    const s = modelSummary(cfg);
    expect(s.arena.bytes).toBe(arenaLayout(trainingArenaSpec(cfg, { train: 60_000, test: 10_000, pixels: 784 })).bytes);
    expect(s.arena).toMatchObject({ batchSize: 512, threads: 3, optimizer: 'adamw', trainCount: 60_000, testCount: 10_000 });
    const bytes = (o: Record<string, unknown>) => modelSummary(validate(o)).arena.bytes;
    expect(bytes({ batchSize: 1024 })).toBeGreaterThan(bytes({ batchSize: 256 }));
    expect(bytes({ threads: 16 })).toBeGreaterThan(bytes({ threads: 1 }));
    // Adam's two moments against none for plain SGD: 2 × 4 bytes per parameter
    expect(bytes({ optimizer: 'adamw' }) - bytes({ optimizer: 'sgd', momentum: 0 })).toBeGreaterThanOrEqual(8 * 332_042);
    // 59,000 fewer training images of 784 pixels and a label each
    expect(bytes({ limitTrain: 1000 })).toBeLessThan(bytes({}) - 59_000 * 785);
    expect(datasetSizes({ dataset: 'fashion-mnist' })).toEqual({ train: 60_000, test: 10_000, pixels: 784 });
  });
});

describe('mnist-par summary', () => {
  it('matches the tensors of model.safetensors of a real run, mlp and cnn, and its run prints the same table', async () => {
    const nets: [string[], Record<string, unknown>][] = [
      [['--hidden', '48,24'], { hidden: [48, 24] }],
      [['--model', 'cnn', '--channels', '4,8', '--hidden', '16'], { model: 'cnn', channels: [4, 8], hidden: [16] }],
    ];
    for (const [net, fields] of nets) {
      const cwd = tmp();
      const run = runCli([...small, ...net, '--no-dashboard'], {}, 120_000, cwd);
      expect(run.code, run.stderr).toBe(0);
      const file = join(cwd, 'models', 'run-1', 'model.safetensors');
      const r = runCli(['summary', '--model', 'models/run-1', '--json'], {}, 60_000, cwd);
      expect(r.code, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout) as ModelSummary;
      await expectMatchesFile(s, file);
      // the run printed this table at its start, with the arena of its own batch size, threads and limits
      const ran = modelSummary(validate({ ...fields, threads: 2, batchSize: 128, limitTrain: 512, limitTest: 256 }));
      expect(run.stdout).toContain(formatSummary(ran).join('\n'));
      // and the text table of the file says the same as its JSON
      const text = runCli(['summary', '--model', file], {}, 60_000, cwd);
      expect(text.stdout.split('\n')[0]).toBe(`${file}: ${s.network}`);
      for (const l of s.layers.filter((x) => x.params > 0)) {
        expect(text.stdout).toMatch(new RegExp(`\\n${l.name} +${l.type} .* ${l.params.toLocaleString('en-US')}  ${l.tensors[0].name} \\[`));
      }
    }
  });

  it('--json of the flags\' network is the library\'s object; a JSON run gives it in its start line', async () => {
    const r = runCli(['summary', '--model', 'cnn', '--channels', '8', '--hidden', '32', '--batch-size', '64', '--threads', '3',
      '--optimizer', 'sgd', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const flags = { model: 'cnn', channels: [8], hidden: [32], batchSize: 64, threads: 3, optimizer: 'sgd' };
    expect(JSON.parse(r.stdout)).toEqual(modelSummary(validate(flags)));
    const cwd = tmp();
    const run = runCli([...small, '--json'], {}, 120_000, cwd);
    expect(run.code, run.stderr).toBe(0);
    const start = JSON.parse(run.stdout.split('\n')[0]);
    expect(start.type).toBe('start');
    expect(start.summary).toEqual(modelSummary(validate({ threads: 2, batchSize: 128, limitTrain: 512, limitTest: 256 })));
    // the library's model.summary() of that run's file, at the same settings
    const model = await loadModel(join(cwd, 'models', 'run-1'));
    const lib = model.summary({ threads: 2, batchSize: 128 });
    expect(lib.layers).toEqual(start.summary.layers);
    expect(lib.arena.trainCount).toBe(60_000);
    expect(() => model.summary({ threads: 0 })).toThrow(new UsageError('--threads: expected an integer in 1..256, got 0'));
    expect(() => model.summary({ hidden: [3] } as never)).toThrow(/^summary: unknown option 'hidden' \(known: batchSize, threads, optimizer\)$/);
  });

  it('refuses bad flags in one line naming the flag', () => {
    const cwd = tmp();
    for (const [args, line] of [
      [['--model', 'models/run-7'], 'mnist-par: models/run-7: cannot read (no such file); check the path'],
      [['--hidden', '0'], "mnist-par: --hidden: expected comma-separated layer widths, each an integer in 1..8192 (e.g. 128,256,512,128), got '0'"],
      [['--channels', '4,8'], 'mnist-par: --channels: only the cnn has convolution channels; add --model cnn, or leave --channels out'],
      [['--batch-size', '0'], "mnist-par: --batch-size: expected an integer in 1..65536, got '0'"],
      [['--optimizer', 'lion'], "mnist-par: --optimizer: expected one of sgd, adam, adamw, got 'lion'"],
    ] as const) {
      const r = runCli(['summary', ...args], {}, 60_000, cwd);
      expect(r.stderr, args.join(' ')).toBe(line + '\n');
      expect(r.code).not.toBe(0);
    }
  });

  it('refuses --hidden or --channels with a model file, whose network is fixed', () => {
    const cwd = tmp();
    expect(runCli([...small, '--hidden', '8'], {}, 120_000, cwd).code).toBe(0);
    const r = runCli(['summary', '--model', 'models/run-1', '--hidden', '16'], {}, 60_000, cwd);
    expect([r.code, r.stderr]).toEqual([2, 'mnist-par: --hidden: the network comes from models/run-1/model.safetensors; leave --hidden out, ' +
      'or give --model mlp or --model cnn instead of a file\n']);
  });
});
