// The same bytes for any --threads: 1, 2, 3, 5, 8, 16 and 32, in every kernel family, for the mlp and the cnn,
// with a ragged last batch, and through a resume. --oversubscribe gives every thread rows and outputs even where
// threads outnumber this machine's cores, so the split itself (partition.ts) is what is exercised here, not
// only the few threads that would otherwise work. (Full-size batches at the default sizes: e2e.test.ts and
// native.test.ts.)
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadNative } from '../src/kernels/native.js';
import { decodeSafetensors } from '../src/safetensors.js';
import { mnistDir, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-determinism-'));
const families = ['js', 'simd', 'relaxed', ...(loadNative().ok ? ['native'] : [])];
const THREADS = [1, 2, 3, 5, 8, 16, 32];

interface Trained {
  weights: Buffer;
  /** batch_metrics.csv without its timing column: epoch, batch, step, loss, accuracy, lr */
  batches: string[];
  /** what the run printed on stderr (its notes) */
  stderr: string;
}

function train(out: string, args: string[]): Trained {
  const r = runCli(['--data-dir', mnistDir, '--out', out, '--plots', join(out, 'plots'), '--no-download', '--no-dashboard',
    '--seed', '3', '--oversubscribe', ...args]);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  const batches = readFileSync(join(out, 'batch_metrics.csv'), 'utf8').trim().split('\n')
    .map((l) => l.split(',').slice(0, 6).join(','));
  return { weights: readFileSync(join(out, 'model.safetensors')), batches, stderr: r.stderr };
}

/** Every weight and bias is finite. */
function expectFinite(weights: Buffer): void {
  for (const t of decodeSafetensors(weights, 'model.safetensors').tensors.values()) {
    const bad = t.data.findIndex((x) => !Number.isFinite(x));
    expect(bad, `${t.name}[${bad}] = ${t.data[bad]}`).toBe(-1);
  }
}

function expectSame(names: string[], results: Trained[]): void {
  for (let i = 1; i < results.length; i++) {
    const what = `${names[i]} against ${names[0]}`;
    expect(results[i].batches, what).toEqual(results[0].batches);
    expect(results[i].weights.equals(results[0].weights), what).toBe(true);
  }
}

// Batch 256 is 32 blocks of 8 rows: at --threads 32 every thread runs one block of a full batch. 300 images
// leave a ragged last batch of 44 rows (5 full blocks and one of 4), which most threads sit out. Two epochs: a
// full step follows the ragged one.
const ragged = ['--limit-train', '300', '--batch-size', '256', '--limit-test', '64', '--epochs', '2'];

describe('the mlp', () => {
  // hidden widths below 16 per thread: outputs are split one by one at 32 threads, and the 10-wide last layer
  // leaves most threads none
  const mlp = ['--hidden', '64,32'];
  it.each(families)('%s kernels: --threads 1, 2, 3, 5, 8, 16, 32 give the same bytes', (family) => {
    const dir = tmp();
    const results = THREADS.map((t) => train(join(dir, `t${t}`), [...mlp, ...ragged, '--kernels', family, '--threads', String(t)]));
    expect(results[0].batches).toHaveLength(1 + 2 * 2);
    expectFinite(results[0].weights);
    expectSame(THREADS.map((t) => `--threads ${t}`), results);
  });

  it('the comparison can fail: another seed gives other bytes', () => {
    const dir = tmp();
    const a = train(join(dir, 'a'), [...mlp, ...ragged, '--threads', '2']);
    const b = train(join(dir, 'b'), [...mlp, ...ragged, '--threads', '2', '--seed', '4']);
    expect(b.weights.equals(a.weights)).toBe(false);
  });
});

describe('the cnn (--model cnn)', () => {
  // small channels and hidden layer so that a run takes about a second; channels 6 and 12 are split in units of
  // 4 up to 3 threads and one by one beyond
  const cnn = ['--model', 'cnn', '--channels', '6,12', '--hidden', '16'];
  it.each(families)('%s kernels: --threads 1, 2, 3, 5, 8, 16, 32 give the same bytes', (family) => {
    const dir = tmp();
    const results = THREADS.map((t) => train(join(dir, `t${t}`), [...cnn, ...ragged, '--kernels', family, '--threads', String(t)]));
    expect(results[0].batches).toHaveLength(1 + 2 * 2);
    expectFinite(results[0].weights);
    // a cnn's file: its first tensor is the 6-channel 5×5 convolution
    expect(decodeSafetensors(results[0].weights, 'model.safetensors').tensors.get('0.weight')?.shape).toEqual([6, 1, 5, 5]);
    expectSame(THREADS.map((t) => `--threads ${t}`), results);
  });
});

describe('through a resume', () => {
  // three epochs straight on one thread, against one epoch on 3 threads resumed on 32 (and on 5): the same
  // bytes, and the same batch losses
  it.each([['the mlp', ['--hidden', '64,32']], ['the cnn', ['--model', 'cnn', '--channels', '6,12', '--hidden', '16']]])(
    '%s: --threads 3 then --resume --threads 32, and 5, = --threads 1 straight', (_name, net) => {
      const dir = tmp();
      const args = [...net, '--limit-train', '300', '--batch-size', '256', '--limit-test', '64', '--schedule', 'none'];
      const straight = train(join(dir, 'straight'), [...args, '--epochs', '3', '--threads', '1']);
      const split = join(dir, 'split');
      train(split, [...args, '--epochs', '1', '--threads', '3']);
      for (const [epochs, threads] of [['2', '32'], ['3', '5']]) {
        const r = runCli(['--resume', split, '--epochs', epochs, '--threads', threads, '--oversubscribe', '--no-dashboard']);
        expect(r.code, r.stderr).toBe(0);
      }
      const resumed: Trained = {
        weights: readFileSync(join(split, 'model.safetensors')),
        batches: readFileSync(join(split, 'batch_metrics.csv'), 'utf8').trim().split('\n').map((l) => l.split(',').slice(0, 6).join(',')),
        stderr: '',
      };
      expect(resumed.batches).toHaveLength(1 + 3 * 2);
      expectSame(['straight', 'resumed'], [straight, resumed]);
    });
});

describe('more threads than blocks of rows', () => {
  it('says how many threads a batch keeps busy, and gives the same bytes', () => {
    const dir = tmp();
    const args = ['--hidden', '32', '--limit-train', '100', '--batch-size', '16', '--limit-test', '32', '--epochs', '1'];
    const two = train(join(dir, 'two'), [...args, '--threads', '2']);
    const eight = train(join(dir, 'eight'), [...args, '--threads', '8']);
    expect(two.stderr).not.toContain('note');
    expect(eight.stderr).toContain('mnist-par: note: --threads 8 with --batch-size 16: the batch has 2 blocks of 8 rows, so ' +
      'only 2 threads run the forward and backward passes; a batch of 64 or more keeps all 8 busy');
    expectSame(['--threads 2', '--threads 8'], [two, eight]);
  });
});
