// End-to-end runs of the built CLI on small subsets of the real data: learning happens, outputs are
// complete, weights are byte-identical for any --threads, a failing worker stops the run cleanly.
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fashionDir, mnistDir, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-e2e-'));
const small = ['--limit-train', '2048', '--limit-test', '500', '--epochs', '1', '--batch-size', '64', '--no-download'];

function lastEpoch(out: string): Record<string, number> {
  const [header, ...rows] = readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n');
  const keys = header.split(',');
  const values = rows[rows.length - 1].split(',').map(Number);
  return Object.fromEntries(keys.map((k, i) => [k, values[i]]));
}

describe('training end to end', () => {
  it('learns MNIST from a subset and writes every output file', () => {
    const out = join(tmp(), 'models');
    // batch 128 with little label smoothing: enough steps on 6000 images for the loss bound below
    const r = runCli(['--data-dir', mnistDir, '--out', out, '--threads', '2', '--limit-train', '6000',
      '--limit-test', '2000', '--epochs', '2', '--batch-size', '128', '--lr', '3e-3', '--label-smoothing', '0.05',
      '--no-download', '--log-every', '20']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const f of ['model.safetensors', 'batch_metrics.csv', 'epoch_metrics.csv', 'config.json']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const e = lastEpoch(out);
    expect(e.epoch).toBe(2);
    expect(e.val_accuracy).toBeGreaterThan(0.85); // 6000 images, 2 epochs: about 0.89 here
    expect(e.train_loss).toBeLessThan(0.6);
    const batches = readFileSync(join(out, 'batch_metrics.csv'), 'utf8').trim().split('\n');
    expect(batches[0]).toBe('epoch,batch,step,loss,accuracy,lr,samples_per_s');
    expect(batches).toHaveLength(1 + 2 * Math.ceil(6000 / 128));
    expect(r.stdout).toMatch(/test accuracy \d+\.\d+%/);
    expect(r.stdout).toMatch(/^mnist-par: finished 2 epochs \(/m);
  });

  it('gives byte-identical weights for --threads 1, 2, 3, 4 and 8', () => {
    const dir = tmp();
    const digests = [1, 2, 3, 4, 8].map((t) => {
      const out = join(dir, `t${t}`);
      const r = runCli(['--data-dir', mnistDir, '--out', out, '--threads', String(t), '--seed', '5', ...small]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^mnist-par: finished 1 epoch \(/m); // not "1 epochs"
      return readFileSync(join(out, 'model.safetensors'));
    });
    for (let i = 1; i < digests.length; i++) expect(digests[i].equals(digests[0]), `run ${i}`).toBe(true);
    // --pipeline lockstep, still accepted (it is the only pipeline), changes nothing
    const lockstep = join(dir, 'lockstep');
    expect(runCli(['--data-dir', mnistDir, '--out', lockstep, '--threads', '3', '--seed', '5', '--pipeline', 'lockstep', ...small]).code).toBe(0);
    expect(readFileSync(join(lockstep, 'model.safetensors')).equals(digests[0])).toBe(true);
    // and a different seed gives different weights (the comparison above can fail)
    const out = join(dir, 'other-seed');
    expect(runCli(['--data-dir', mnistDir, '--out', out, '--threads', '2', '--seed', '6', ...small]).code).toBe(0);
    expect(readFileSync(join(out, 'model.safetensors')).equals(digests[0])).toBe(false);
  });

  it('trains on Fashion-MNIST too', () => {
    const out = join(tmp(), 'models');
    const r = runCli(['--dataset', 'fashion-mnist', '--data-dir', fashionDir, '--out', out, '--threads', '2', ...small]);
    expect(r.code, r.stderr).toBe(0);
    expect(lastEpoch(out).val_accuracy).toBeGreaterThan(0.6);
  });

  it('a worker that throws stops the run with one line naming the task; the saved model survives', () => {
    const out = join(tmp(), 'models');
    // epoch 1 of 2 (32 steps each; schedule none, so a resumed run may ask for more epochs) …
    const r1 = runCli(['--data-dir', mnistDir, '--out', out, '--threads', '2', ...small, '--schedule', 'none']);
    expect(r1.code).toBe(0);
    const before = readFileSync(join(out, 'model.safetensors'));
    // … then epoch 2 fails at its fifth step
    const r = runCli(['--resume', out, '--epochs', '2'], { MNIST_PAR_INJECT_FAULT: 'forwardBackward:37' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/worker task forwardBackward \(step 37, rows \d+\.\.\d+\) failed: injected fault/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(readFileSync(join(out, 'model.safetensors')).equals(before)).toBe(true);
  });

  it('one failing worker stops its peers at their barriers; the error names its rows, not a peer\'s', () => {
    // batch 64 (small) in 8 blocks of 8 rows: worker 1 of 3 runs blocks 2..4, of 8 (every one working) block 1
    for (const [threads, rows] of [['3', 'rows 16..39'], ['8', 'rows 8..15']]) {
      const out = join(tmp(), 'models');
      const r = runCli(['--data-dir', mnistDir, '--out', out, '--threads', threads, '--oversubscribe', ...small],
        { MNIST_PAR_INJECT_FAULT: 'forwardBackward:6:1' }, 60_000);
      expect(r.code, `threads ${threads}`).toBe(1);
      expect(r.stderr).toContain(`worker task forwardBackward (step 6, ${rows}) failed: injected fault`);
    }
  });

  it('a failing reduce in an oversubscribed lockstep pool releases every barrier and names the worker', () => {
    const out = join(tmp(), 'models');
    const r = runCli(['--data-dir', mnistDir, '--out', out, '--threads', '8', '--oversubscribe', ...small],
      { MNIST_PAR_INJECT_FAULT: 'reduceStep:7:5' }); // only worker 5's outputs
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/worker task reduceStep \(step 7, outputs of worker 5\) failed: injected fault/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('outputs are standard', () => {
  it('model.safetensors has the documented tensor names and shapes', () => {
    const out = join(tmp(), 'models');
    expect(runCli(['--data-dir', mnistDir, '--out', out, '--threads', '1', '--hidden', '32,16', ...small]).code).toBe(0);
    const bytes = readFileSync(join(out, 'model.safetensors'));
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
    expect(header['0.weight']).toMatchObject({ dtype: 'F32', shape: [32, 784] });
    expect(header['0.bias']).toMatchObject({ dtype: 'F32', shape: [32] });
    expect(header['2.weight']).toMatchObject({ dtype: 'F32', shape: [16, 32] });
    expect(header['4.weight']).toMatchObject({ dtype: 'F32', shape: [10, 16] });
    expect(bytes.length).toBe(8 + n + 4 * (32 * 784 + 32 + 16 * 32 + 16 + 10 * 16 + 10));
  });
});
