// The benchmarks: a tiny real scaling sweep writes a result the chart accepts, with sane numbers; the bench
// flags fail with one line naming the flag; the PyTorch peer is skipped cleanly when it cannot be run.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { addBenchCommand, kernelOptions } from '../bench/command.js';
import { availableFamilies, benchKernels } from '../bench/kernels.js';
import { parseIntList } from '../src/config.js';
import { benchPeers, mergePeers, peerSettings, readPeers } from '../bench/peers.js';
import { benchScaling } from '../bench/scaling.js';
import { UsageError } from '../src/errors.js';
import { parseScalingJson } from '../src/plot.js';
import { mnistDir } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-bench-test-'));
const quiet = () => {};

describe('bench kernels --conv', () => {
  it('verifies, then times every conv and pool kernel of every family on both layers (and native\'s direct conv and fused kernels)', async () => {
    expect(kernelOptions({ conv: true, quick: true })).toMatchObject({ conv: true, batches: [16] });
    const results = await benchKernels({ conv: true, batches: [2], repeats: 1, minMs: 1, outDir: null, log: quiet });
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
      // the conv blocks as the net runs them, for the family with the fused kernels
      const fused = results.find((x) => x.family === family && x.kernel === 'conv blocks fused images/s');
      expect(fused?.unit).toBe(family.startsWith('native') ? 'k images/s' : undefined);
    }
    expect(results.some((r) => r.kernel.startsWith('linear'))).toBe(false); // the MLP's kernels are not timed
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
  }, 20_000);
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
    expect(await usage('scaling', '--shards', '-1')).toMatch(/^--shards: /);
    expect(await usage('scaling', '--dataset', 'cifar')).toMatch(/^--dataset: /);
    expect(await usage('peers', '--threads', '1,2')).toMatch(/^--threads: expected an integer/);
    expect(await usage('peers', '--seconds', 'NaN')).toMatch(/^--seconds: /);
    expect(await usage('peers', '--seconds', '0')).toMatch(/^--seconds: /);
    expect(await usage('kernels', '--kernels', 'js,gpu')).toMatch(/^--kernels: .*'gpu'$/);
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
    writeFileSync(join(dir, 'p.json'), JSON.stringify({ kind: 'peers', peers: merged.peers }));
    expect(await readPeers(join(dir, 'p.json'))).toEqual(merged.peers);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ kind: 'peers', peers: [{ name: 'x', batchSize: 64 }] }));
    await expect(readPeers(join(dir, 'bad.json'))).rejects.toThrow(/^--peers .*bad\.json: peers\[0\] needs/);
  });
});
