// The benchmarks: a tiny real scaling sweep writes a result the chart accepts, with sane numbers, for the mlp
// and the cnn (--model cnn), each under its own name; the kernel benchmark verifies and times the cnn's kernels;
// the bench flags fail with one line naming the flag; the PyTorch peer is skipped cleanly when it cannot be run,
// gets no ratio anywhere when it is not at its best (a stand-in peer: no torch needed), and is compared on the
// cnn when /usr/bin/python3 has torch.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addBenchCommand, kernelOptions, peerOptions, scalingOptions } from '../bench/command.js';
import { availableFamilies, benchKernels } from '../bench/kernels.js';
import { parseIntList } from '../src/config.js';
import {
  benchPeers, mergePeers, newestResult, peerModel, peerSettings, readPeers, torchAvailable,
} from '../bench/peers.js';
import { benchScaling, scalingModel } from '../bench/scaling.js';
import { UsageError } from '../src/errors.js';
import { describeModel, type ModelSpec } from '../src/model.js';
import { parseScalingJson } from '../src/plot.js';
import { scalingChartSpec } from '../src/ui/charts.js';
import { mnistDir } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-bench-test-'));
const fakeDir = mkdtempSync(join(tmpdir(), 'mnist-par-fake-peer-'));

/**
 * A stand-in for /usr/bin/python3 with torch and the peer script, for bench peers without torch: its
 * `-c "import torch"` succeeds, and running the script prints the line pytorch_throughput.py would (the mlp at
 * 5,000 samples/s on `blas`) after noting the OpenBLAS variables it was given in <fakeDir>/env.
 */
function fakePeer(blas: string): { python: string; script: string } {
  const python = join(fakeDir, 'python3');
  const script = join(fakeDir, 'pytorch_throughput.py');
  writeFileSync(python, '#!/bin/sh\n[ "$1" = "-c" ] && exit 0\n' +
    'echo "${OPENBLAS_CORETYPE:-unset} ${OPENBLAS_L2_SIZE:-unset} $OPENBLAS_NUM_THREADS" >> "$(dirname "$1")/env"\nexec cat "$1"\n', { mode: 0o755 });
  writeFileSync(script, JSON.stringify({ peer: 'pytorch-fake', model: 'mlp', samples_per_s: 5000, data: 'mnist', blas }) + '\n');
  rmSync(join(fakeDir, 'env'), { force: true });
  return { python, script };
}
const quiet = () => {};
const CNN: ModelSpec = { kind: 'cnn', channels: [16, 32], hidden: [128] };
const MLP: ModelSpec = { kind: 'mlp', hidden: [128, 256, 512, 128] };

describe('bench kernels --model cnn', () => {
  it('takes --model cnn (and --conv, its older spelling), --channels and --hidden', () => {
    expect(kernelOptions({ model: 'cnn', quick: true })).toMatchObject({ model: CNN, batches: [16] });
    expect(kernelOptions({ conv: true })).toMatchObject({ model: CNN });
    expect(kernelOptions({ conv: true, model: 'cnn' })).toMatchObject({ model: CNN });
    expect(kernelOptions({})).toMatchObject({ model: MLP });
    expect(kernelOptions({ model: 'cnn', channels: '8, 16', hidden: '64' })).toMatchObject({
      model: { kind: 'cnn', channels: [8, 16], hidden: [64] },
    });
    expect(kernelOptions({ model: 'mlp', hidden: '32,32' })).toMatchObject({ model: { kind: 'mlp', hidden: [32, 32] } });
  });

  it('verifies, then times every conv and pool kernel of every family on both layers (and native\'s direct conv and fused kernels), and the linear head', async () => {
    const dir = tmp();
    const results = await benchKernels({ model: CNN, batches: [2], repeats: 1, minMs: 1, outDir: dir, log: quiet });
    const families = availableFamilies();
    for (const family of families) {
      for (const layer of ['conv1 1→16 28×28', 'conv2 16→32 12×12']) {
        const nativeOnly = ['conv2dReluForward direct', 'conv2dReluPoolForward', 'conv2dReluPoolBackward'];
        for (const kernel of ['conv2dReluForward', 'conv2dBackward', ...(family.startsWith('native') ? nativeOnly : [])]) {
          const r = results.find((x) => x.family === family && x.shape === layer && x.kernel === kernel);
          expect(r, `${family} ${kernel} ${layer}`).toBeDefined();
          expect(r!.unit).toBe('GFLOP/s');
          expect(r!.rate > 0 && Number.isFinite(r!.rate)).toBe(true);
        }
      }
      for (const shape of ['16×24×24', '32×8×8']) {
        for (const kernel of ['maxPoolForward', 'maxPoolBackward']) {
          const r = results.find((x) => x.family === family && x.shape === shape && x.kernel === kernel);
          expect(r?.unit, `${family} ${kernel} ${shape}`).toBe('GB/s');
        }
      }
      const speed = results.find((x) => x.family === family && x.kernel === 'conv layers images/s');
      expect(speed?.unit).toBe('k images/s');
      // the head: 512→128 with ReLU, 128→10 without, each forward verified and timed, and its backward
      for (const [kernel, shape] of [['linearReluForward', '512→128'], ['linearBackward', '512→128'],
        ['linearForward', '128→10'], ['linearBackward', '128→10']]) {
        const r = results.find((x) => x.family === family && x.shape === shape && x.kernel === kernel);
        expect(r, `${family} ${kernel} ${shape}`).toBeDefined();
        expect(r!.unit).toBe('GFLOP/s');
        expect(r!.rate > 0 && Number.isFinite(r!.rate)).toBe(true);
      }
      for (const kernel of ['cnn head fwd+bwd', 'cnn fwd+bwd']) {
        const r = results.find((x) => x.family === family && x.kernel === kernel);
        expect(r?.unit, `${family} ${kernel}`).toBe('GFLOP/s');
        expect(r!.rate > 0 && Number.isFinite(r!.rate)).toBe(true);
      }
      // the whole net is slower per image than its convolutions alone
      const net = results.find((x) => x.family === family && x.kernel === 'cnn images/s')!;
      expect(net.unit).toBe('k images/s');
      expect(net.shape).toBe('conv1+conv2+512-128-10');
      expect(net.rate).toBeLessThan(speed!.rate);
      // 2·B·Σ(multiply-adds) over the summed time
      const mine = results.filter((x) => x.family === family && x.B === 2 &&
        /^(conv2dReluForward|conv2dBackward|linearReluForwardT?|linearForwardT?|linearBackward)$/.test(x.kernel));
      expect(mine.length).toBeGreaterThanOrEqual(8);
      // the conv blocks as the net runs them, for the family with the fused kernels
      const fused = results.find((x) => x.family === family && x.kernel === 'conv blocks fused images/s');
      expect(fused?.unit).toBe(family.startsWith('native') ? 'k images/s' : undefined);
    }
    // the mlp's layers and its step kernels are not timed
    expect(results.some((r) => r.shape.startsWith('784→'))).toBe(false);
    expect(results.some((r) => r.kernel.startsWith('optimizerStep'))).toBe(false);

    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^kernels-cnn-\d{4}-.*\.json$/);
    const saved = JSON.parse(readFileSync(join(dir, files[0]), 'utf8'));
    expect(saved.model).toBe('cnn 1→16→32 conv5 pool2 · 512→128→10');
    expect(saved.modelSpec).toEqual(CNN);
    expect(saved.results).toEqual(JSON.parse(JSON.stringify(results)));
  }, 120_000);

  it('times the mlp\'s kernels under their old name, with the model recorded', async () => {
    const dir = tmp();
    const results = await benchKernels({ model: { kind: 'mlp', hidden: [32] }, families: ['js'], batches: [2], repeats: 1,
      minMs: 1, outDir: dir, log: quiet });
    expect(results.find((r) => r.kernel === 'mlp fwd+bwd')?.shape).toBe('784-32-10');
    expect(results.some((r) => r.kernel.startsWith('conv'))).toBe(false);
    const files = readdirSync(dir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^kernels-\d{4}-.*\.json$/);
    expect(JSON.parse(readFileSync(join(dir, files[0]), 'utf8')).model).toBe('mlp 784→32→10');
  }, 60_000);
});

describe('bench scaling', () => {
  it('measures threads 1 and 2 at batch 64 and writes a scaling JSON and chart', async () => {
    const dir = tmp();
    const report = await benchScaling({
      threads: [1, 2], batchSizes: [64], repeats: 1, window: { warmupSteps: 3, minSteps: 8, minMs: 0 },
      dataDir: mnistDir, outDir: join(dir, 'results'), plotsDir: join(dir, 'plots'), log: quiet,
    });
    const files = readdirSync(join(dir, 'results'));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^scaling-.*\.json$/);
    const text = readFileSync(join(dir, 'results', files[0]), 'utf8');
    expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(report)));
    expect(readdirSync(join(dir, 'plots'))).toEqual(['scaling.png']);

    const parsed = parseScalingJson(text, files[0]); // the chart's own checker
    expect(parsed.runs.map((r) => [r.threads, r.batchSize])).toEqual([[1, 64], [2, 64]]);
    expect(report.kind).toBe('scaling');
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.machine.node).toBe(process.version);
    expect(report.kernels).toMatch(/^(native avx512|native avx2|relaxed|simd|js)$/);
    const [one, two] = report.runs;
    for (const r of report.runs) {
      expect(r.samplesPerSec).toBeGreaterThan(0);
      expect(r.samplesPerSec).toBeLessThan(1e7);
      expect(r.samples).toHaveLength(1);
      expect(r.steps).toBeGreaterThanOrEqual(8);
      expect(r.stepMs).toBeGreaterThan(0);
      expect(r.computeMs).toBeGreaterThan(0);
      // waiting is what is left of the step; the busy counters are read while later steps run, so busy time can
      // overshoot the step by a little, and then waiting is 0 (never negative)
      expect(r.waitMs).toBeGreaterThanOrEqual(0);
      expect(r.computeMs + r.reduceMs + r.waitMs).toBeCloseTo(Math.max(r.stepMs, r.computeMs + r.reduceMs), 6);
      expect(r.idle).toHaveLength(r.threads);
      for (const idle of r.idle) expect(idle >= 0 && idle <= 1).toBe(true);
      expect(r.peakRssMiB).toBeGreaterThan(50);
    }
    expect(one.speedup).toBe(1);
    expect(one.efficiency).toBe(1);
    expect(two.speedup).toBeCloseTo(two.samplesPerSec / one.samplesPerSec, 12);
    expect(two.efficiency).toBeCloseTo(two.speedup / 2, 12);
    expect(report.model).toBe(describeModel(MLP));
    expect(parsed.model).toBe(describeModel(MLP));
    // each worker's rows per step: the whole batch on one thread, 32 rows each on two
    expect(one.rows.map(Math.round)).toEqual([64]);
    expect(two.rows.map(Math.round)).toEqual([32, 32]);
    // the model's predictions at 4, 8 and 16 cores, from these two runs
    expect(report.prediction.map((m) => m.threads)).toEqual([4, 8, 16]);
    expect(report.prediction[0]).toEqual(scalingModel(one, two, 4));
  }, 20_000);

  it('--oversubscribe: every thread gets its rows even beyond the cores, and the table shows each worker\'s share', async () => {
    const lines: string[] = [];
    const report = await benchScaling({
      threads: [4], batchSizes: [64], repeats: 1, window: { warmupSteps: 3, minSteps: 8, minMs: 0 }, oversubscribe: true,
      dataDir: mnistDir, outDir: null, plotsDir: null, log: (l) => lines.push(l),
    });
    expect(report.oversubscribe).toBe(true);
    expect(report.runs[0].rows.map(Math.round)).toEqual([16, 16, 16, 16]);
    expect(lines.join('\n')).toMatch(/batch 64, 4 threads: w0 16 \d+% · w1 16 \d+% · w2 16 \d+% · w3 16 \d+%/);
    expect(report.prediction).toEqual([]);
    expect(scalingOptions({ oversubscribe: true }).oversubscribe).toBe(true);
    expect(scalingOptions({}).oversubscribe).toBeUndefined();
  }, 30_000);

  it('the model: each half shrinks by 1/T but for what did not shrink from 1 to 2 threads; the wait grows with log2 T', () => {
    const run = (threads: number, computeMs: number, reduceMs: number, waitMs: number) => ({
      threads, batchSize: 100, computeMs, reduceMs, waitMs, stepMs: computeMs + reduceMs + waitMs,
    }) as unknown as Parameters<typeof scalingModel>[0];
    // rows 4 ms → 2 ms at 2 threads: no serial part; outputs 2 ms → 1.2 ms: e = 0.2; wait 0 → 0.1 ms
    const m = scalingModel(run(1, 4, 2, 0), run(2, 2, 1.2, 0.1), 8);
    expect(m.rowsMs).toBeCloseTo(0.5, 12);
    expect(m.outputsMs).toBeCloseTo(2 * (0.2 + 0.8 / 8), 12);
    expect(m.waitMs).toBeCloseTo(0.3, 12);
    expect(m.stepMs).toBeCloseTo(0.5 + 0.6 + 0.3, 12);
    expect(m.efficiency).toBeCloseTo(6 / (8 * 1.4), 12);
    expect(m.samplesPerSec).toBeCloseTo(100_000 / 1.4, 6);
    // at 2 cores the model gives back the measurement
    expect(scalingModel(run(1, 4, 2, 0), run(2, 2, 1.2, 0.1), 2).stepMs).toBeCloseTo(3.3, 12);
  });

  it('--model cnn: trains the cnn, records it, and writes scaling-cnn-*.json and scaling-cnn.png apart from the mlp\'s', async () => {
    expect(scalingOptions({ model: 'cnn', quick: true })).toMatchObject({ model: CNN, threads: [1, 2], batchSizes: [64] });
    expect(scalingOptions({ model: 'cnn', channels: '8', hidden: '32,16' }).model).toEqual({ kind: 'cnn', channels: [8], hidden: [32, 16] });
    const dir = tmp();
    const report = await benchScaling({
      model: CNN, threads: [1, 2], batchSizes: [32], repeats: 1, window: { warmupSteps: 3, minSteps: 6, minMs: 0 },
      dataDir: mnistDir, outDir: join(dir, 'results'), plotsDir: join(dir, 'plots'), log: quiet,
    });
    const files = readdirSync(join(dir, 'results'));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^scaling-cnn-\d{4}-.*\.json$/);
    expect(readdirSync(join(dir, 'plots'))).toEqual(['scaling-cnn.png']);
    const text = readFileSync(join(dir, 'results', files[0]), 'utf8');
    expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(report)));
    expect(report.model).toBe('cnn 1→16→32 conv5 pool2 · 512→128→10');
    expect(report.modelSpec).toEqual(CNN);
    const parsed = parseScalingJson(text, files[0]);
    expect(parsed.model).toBe(report.model);
    expect(scalingChartSpec(parsed).title).toBe(`Data-parallel scaling: ${report.model}`);
    expect(parsed.runs.map((r) => [r.threads, r.batchSize])).toEqual([[1, 32], [2, 32]]);
    for (const r of report.runs) {
      expect(r.samplesPerSec).toBeGreaterThan(0);
      expect(r.samplesPerSec).toBeLessThan(1e6);
      expect(r.steps).toBeGreaterThanOrEqual(6);
      expect(r.forwardMs).toBeGreaterThan(0);
      expect(r.backwardMs).toBeGreaterThan(0);
      expect(r.idle).toHaveLength(r.threads);
    }
    expect(report.runs[1].speedup).toBeCloseTo(report.runs[1].samplesPerSec / report.runs[0].samplesPerSec, 12);
    // the mlp's newest scaling result is not the cnn's
    expect(await newestResult(join(dir, 'results'), 'scaling')).toBeNull();
    expect(await newestResult(join(dir, 'results'), 'scaling-cnn')).toBe(join(dir, 'results', files[0]));
  }, 30_000);
});

describe('bench flags', () => {
  const program = () => {
    const p = new Command('mnist-par').exitOverride();
    addBenchCommand(p);
    return p;
  };
  const usage = async (...args: string[]) => {
    const e = await program().parseAsync(['bench', ...args], { from: 'user' }).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(UsageError);
    const message = (e as Error).message;
    expect(message).not.toContain('\n');
    return message;
  };

  it('names the flag and the value it refused', async () => {
    expect(await usage('scaling', '--threads', '0,2')).toMatch(/^--threads: .*1\.\.256.*'0,2'$/);
    expect(await usage('scaling', '--threads', '2,2')).toMatch(/^--threads: expected distinct/);
    expect(await usage('scaling', '--batch-size', '64,x')).toMatch(/^--batch-size: .*'64,x'$/);
    expect(await usage('scaling', '--batch-size', '')).toMatch(/^--batch-size: /);
    expect(await usage('scaling', '--repeats', '0')).toMatch(/^--repeats: /);
    expect(await usage('scaling', '--kernels', 'fast')).toMatch(/^--kernels: expected one of auto, native, relaxed, simd, js, got 'fast'$/);
    expect(await usage('scaling', '--dataset', 'cifar')).toMatch(/^--dataset: /);
    expect(await usage('peers', '--threads', '1,2')).toMatch(/^--threads: expected an integer/);
    expect(await usage('peers', '--seconds', 'NaN')).toMatch(/^--seconds: /);
    expect(await usage('peers', '--seconds', '0')).toMatch(/^--seconds: /);
    expect(await usage('kernels', '--kernels', 'js,gpu')).toMatch(/^--kernels: .*'gpu'$/);
    for (const cmd of ['kernels', 'scaling', 'peers']) {
      expect(await usage(cmd, '--model', 'rnn')).toBe("--model: expected one of mlp, cnn, got 'rnn'");
    }
    expect(await usage('kernels', '--conv', '--model', 'mlp')).toMatch(/^--conv: the same as --model cnn/);
    expect(await usage('kernels', '--channels', '8,16')).toMatch(/^--channels: only the cnn has convolution channels/);
    expect(await usage('scaling', '--channels', '8,16')).toMatch(/^--channels: only the cnn has convolution channels/);
    expect(await usage('scaling', '--model', 'cnn', '--channels', '8,16,32')).toMatch(/^--channels: .*'8,16,32'$/);
    expect(await usage('scaling', '--model', 'cnn', '--channels', '0')).toMatch(/^--channels: /);
    expect(await usage('scaling', '--model', 'cnn', '--hidden', '128,x')).toMatch(/^--hidden: .*'128,x'$/);
  });

  it('gives peers the network by --model alone: the PyTorch script has only the default of each', () => {
    expect(peerOptions({ model: 'cnn' }).model).toEqual(CNN);
    expect(peerOptions({}).model).toEqual(MLP);
    expect(peerModel('cnn')).toEqual(CNN);
    expect(peerModel('mlp')).toEqual(MLP);
  });

  it('parses good lists', () => {
    expect(parseIntList('--threads', '1, 2,4', 1, 8, '1,2')).toEqual([1, 2, 4]);
    expect(() => parseIntList('--threads', '1.5', 1, 8, '1,2')).toThrow(/^--threads: /);
  });
});

describe('bench peers', () => {
  it('skips with the install command when python cannot import torch', async () => {
    const dir = tmp();
    const script = join(dir, 'peer.py');
    writeFileSync(script, '');
    const lines: string[] = [];
    const r = await benchPeers({ python: join(dir, 'no-such-python'), script, outDir: dir, log: (l) => lines.push(l) });
    expect(r).toBeNull();
    expect(lines.join('\n')).toContain('apt-get install -y python3-torch');
    expect(readdirSync(dir)).toEqual(['peer.py']);
  });

  it('refuses a missing peer script, naming the flag', async () => {
    await expect(benchPeers({ script: '/no/such/peer.py', log: quiet })).rejects.toThrow(/^--peer-script \/no\/such\/peer\.py: no such file/);
  });

  it('refuses a network the PyTorch script does not have', async () => {
    await expect(benchPeers({ model: { kind: 'cnn', channels: [8], hidden: [128] }, python: '/no/such/python', log: quiet }))
      .rejects.toThrow(/^bench peers: the PyTorch script trains only the default cnn \(cnn 1→16→32 conv5 pool2 · 512→128→10\), not cnn 1→8 /);
  });

  it('a PyTorch on OpenBLAS kernels narrower than the CPU gets no ratio: not in the table, the JSON, nor the chart', async () => {
    const dir = tmp();
    const scalingFile = join(dir, 'scaling-2026-01-01T00-00-00-000Z.json');
    const scaling = JSON.stringify({
      kind: 'scaling', machine: { cpu: 'x', cores: 2, node: 'v20' }, kernels: 'simd', model: describeModel(MLP),
      runs: [{ threads: 1, batchSize: 64, samplesPerSec: 100 }],
    });
    writeFileSync(scalingFile, scaling);
    const avx512 = ['sse2', 'avx', 'fma', 'avx2', 'avx512f'];
    const run = async (blas: string) => {
      const lines: string[] = [];
      const report = await benchPeers({
        ...fakePeer(blas), cpuFlags: avx512, threads: 1, batchSizes: [64], repeats: 1, seconds: 0.2, settings: [[1, 1], [1, 2]],
        window: { warmupSteps: 3, minSteps: 5 }, dataDir: mnistDir, outDir: dir, plotsDir: join(dir, 'plots'),
        log: (l) => lines.push(l),
      });
      const saved = readdirSync(dir).filter((f) => f.startsWith('peers-')).sort().pop()!;
      return { report: report!, text: lines.join('\n'), file: join(dir, saved), json: JSON.parse(readFileSync(join(dir, saved), 'utf8')) };
    };

    const haswell = await run('openblas Haswell');
    expect(haswell.report.comparable).toBe(false);
    expect(haswell.text).toMatch(/^ +64 +\S+ +\S+ +\(1,1\) +not comparable +5,000 +5,000$/m);
    expect(haswell.text).not.toMatch(/×\d/);
    expect(haswell.text).toContain('PyTorch\'s BLAS: openblas Haswell (AVX2 kernels, this CPU runs AVX-512)');
    expect(haswell.text).toMatch(/^not comparable: PyTorch ran OpenBLAS's Haswell kernel \(AVX2\) on a CPU with AVX-512, .*libopenblas0-pthread\)$/m);
    // said before the measurements go on, so that the run can be stopped
    expect(haswell.text.indexOf('warning: its ratios will be printed as not comparable')).toBeLessThan(haswell.text.indexOf('repeat 1/1'));
    expect(haswell.json).toMatchObject({ blas: 'openblas Haswell', blasVectors: 'AVX2', cpuVectors: 'AVX-512', comparable: false });
    expect(haswell.json.comparisons.map((c: { ratio: unknown }) => c.ratio)).toEqual([null]);
    expect(haswell.text).toContain(`the PyTorch levels were not added to ${scalingFile}`);
    expect(readFileSync(scalingFile, 'utf8')).toBe(scaling);
    expect(existsSync(join(dir, 'plots'))).toBe(false);
    await expect(readPeers(haswell.file)).rejects.toThrow(/^--peers .*: its PyTorch levels are not comparable: PyTorch was not at its best \(PyTorch ran OpenBLAS's Haswell/);
    // the peer ran without the variables that pin OpenBLAS's kernel, with its BLAS threads set
    expect(readFileSync(join(fakeDir, 'env'), 'utf8').trim().split('\n')).toEqual(['unset unset 1', 'unset unset 2']);

    // the same run with PyTorch at its best: the ratio is there, and the levels go into the scaling result and its chart
    const cooperlake = await run('openblas Cooperlake');
    expect(cooperlake.report.comparable).toBe(true);
    expect(cooperlake.text).toMatch(/^ +64 +\S+ +5,000 +\(1,1\) +×\d+\.\d\d +5,000 +5,000$/m);
    expect(cooperlake.text).toContain('PyTorch\'s BLAS: openblas Cooperlake (AVX-512 kernels, the widest this CPU runs)');
    expect(cooperlake.text).not.toContain('not comparable');
    expect(cooperlake.json.comparisons[0].ratio).toBeCloseTo(cooperlake.report.comparisons[0].ours / 5000, 9);
    expect(parseScalingJson(readFileSync(scalingFile, 'utf8'), scalingFile).peers).toEqual(cooperlake.report.peers);
    expect(cooperlake.report.peers[0]).toMatchObject({ samplesPerSec: 5000, blas: 'openblas Cooperlake' });
    expect(readdirSync(join(dir, 'plots'))).toEqual(['scaling.png']);
    expect(await readPeers(cooperlake.file, describeModel(MLP))).toEqual(cooperlake.report.peers);
  }, 120_000);

  it('reads a scaling result\'s newest file per network, and refuses peers of another network', async () => {
    const dir = tmp();
    for (const f of ['scaling-2026-01-01T00-00-00-000Z.json', 'scaling-cnn-2026-01-02T00-00-00-000Z.json', 'scaling-notes.json']) {
      writeFileSync(join(dir, f), '{}');
    }
    expect(await newestResult(dir, 'scaling')).toBe(join(dir, 'scaling-2026-01-01T00-00-00-000Z.json'));
    expect(await newestResult(dir, 'scaling-cnn')).toBe(join(dir, 'scaling-cnn-2026-01-02T00-00-00-000Z.json'));
    const peers = [{ name: 'pytorch', batchSize: 64, samplesPerSec: 1, blas: 'openblas Cooperlake' }];
    writeFileSync(join(dir, 'cnn.json'), JSON.stringify({ kind: 'peers', model: describeModel(CNN), comparable: true, peers }));
    writeFileSync(join(dir, 'mlp.json'), JSON.stringify({ kind: 'peers', model: describeModel(MLP), comparable: true, peers }));
    expect(await readPeers(join(dir, 'cnn.json'), describeModel(CNN))).toEqual(peers);
    expect(await readPeers(join(dir, 'mlp.json'), describeModel(MLP))).toEqual(peers);
    await expect(readPeers(join(dir, 'mlp.json'), describeModel(CNN)))
      .rejects.toThrow(/^--peers .*mlp\.json: its PyTorch levels were measured on mlp 784→128→256→512→128→10, this sweep trains cnn /);
    await expect(readPeers(join(dir, 'cnn.json'), describeModel(MLP))).rejects.toThrow(/^--peers .*cnn\.json: its PyTorch levels were measured on cnn /);
  });

  it.skipIf(!torchAvailable())('--model cnn: PyTorch trains the same cnn beside ours; the levels go into the newest scaling-cnn result only', async () => {
    const dir = tmp();
    const scaling = (model: string) => JSON.stringify({
      kind: 'scaling', machine: { cpu: 'x', cores: 2, node: 'v20' }, kernels: 'simd', model,
      runs: [{ threads: 1, batchSize: 64, samplesPerSec: 100 }],
    });
    const cnnFile = join(dir, 'scaling-cnn-2026-01-01T00-00-00-000Z.json');
    const mlpFile = join(dir, 'scaling-2026-01-02T00-00-00-000Z.json');
    writeFileSync(cnnFile, scaling(describeModel(CNN)));
    writeFileSync(mlpFile, scaling(describeModel(MLP)));
    const lines: string[] = [];
    const report = await benchPeers({
      model: CNN, threads: 1, batchSizes: [64], repeats: 1, seconds: 0.3, settings: [[1, 1]],
      window: { warmupSteps: 3, minSteps: 5 }, dataDir: mnistDir, outDir: dir, plotsDir: join(dir, 'plots'),
      log: (l) => lines.push(l),
    });
    expect(report).not.toBeNull();
    expect(report!.model).toBe(describeModel(CNN));
    expect(report!.modelSpec).toEqual(CNN);
    expect(report!.peer).toMatch(/^pytorch-/);
    expect(report!.peerData).toBe('mnist');
    const [c] = report!.comparisons;
    expect(c.batchSize).toBe(64);
    expect(c.ours).toBeGreaterThan(0);
    expect(c.pytorch.samplesPerSec).toBeGreaterThan(0);
    const saved = readdirSync(dir).filter((f) => f.startsWith('peers'));
    expect(saved).toHaveLength(1);
    expect(saved[0]).toMatch(/^peers-cnn-\d{4}-.*\.json$/);
    expect(JSON.parse(readFileSync(join(dir, saved[0]), 'utf8'))).toEqual(JSON.parse(JSON.stringify(report)));
    // the BLAS this machine's PyTorch ran, judged as the fake peers' are below; a ratio only when it is at its best
    expect(report!.blas).not.toBe('not reported');
    expect(lines.join('\n')).toContain(`PyTorch's BLAS: ${report!.blas}`);
    expect(readFileSync(mlpFile, 'utf8')).toBe(scaling(describeModel(MLP)));
    if (report!.comparable) {
      expect(c.ratio).toBeCloseTo(c.ours / c.pytorch.samplesPerSec, 12);
      // the cnn's scaling result has PyTorch's level now, and its chart is redrawn; the mlp's is as it was
      expect(parseScalingJson(readFileSync(cnnFile, 'utf8'), cnnFile).peers).toEqual(report!.peers);
      expect(readdirSync(join(dir, 'plots'))).toEqual(['scaling-cnn.png']);
      expect(lines.join('\n')).toContain(`added the PyTorch levels to ${cnnFile}`);
    } else {
      expect(c.ratio).toBeNull();
      expect(lines.join('\n')).toContain(`not comparable: ${report!.notComparable}`);
      expect(lines.join('\n')).toContain(`the PyTorch levels were not added to ${cnnFile}`);
    }
  }, 120_000);

  it('tries every torch × BLAS thread pair up to 2, and the whole machine when it has more cores', () => {
    expect(peerSettings(2)).toEqual([[1, 1], [1, 2], [2, 1], [2, 2]]);
    expect(peerSettings(8)).toEqual([[1, 1], [1, 2], [2, 1], [2, 2], [8, 1], [8, 8]]);
  });

  it('merges peer levels into a scaling report, replacing the same peer and batch size', async () => {
    const report = {
      kind: 'scaling' as const, machine: { cpu: 'x', cores: 2, node: 'v20' }, kernels: 'simd',
      runs: [{ threads: 1, batchSize: 64, samplesPerSec: 100 }],
      peers: [{ name: 'pytorch', batchSize: 64, samplesPerSec: 1 }, { name: 'pytorch', batchSize: 128, samplesPerSec: 2 }],
    };
    const merged = mergePeers(report, [{ name: 'pytorch', batchSize: 64, samplesPerSec: 3, threads: 2 }]);
    expect(merged.peers).toEqual([{ name: 'pytorch', batchSize: 128, samplesPerSec: 2 },
      { name: 'pytorch', batchSize: 64, samplesPerSec: 3, threads: 2 }]);
    expect(merged.runs).toBe(report.runs);

    const dir = tmp();
    writeFileSync(join(dir, 'p.json'), JSON.stringify({ kind: 'peers', comparable: true, peers: merged.peers }));
    expect(await readPeers(join(dir, 'p.json'))).toEqual(merged.peers);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ kind: 'peers', comparable: true, peers: [{ name: 'x', batchSize: 64 }] }));
    await expect(readPeers(join(dir, 'bad.json'))).rejects.toThrow(/^--peers .*bad\.json: peers\[0\] needs/);
  });
});
