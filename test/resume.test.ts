// Model lifecycle: checkpoints continue a run bit for bit, whether it stopped at an epoch boundary or in the
// middle of an epoch; conflicting flags and damaged checkpoints are refused; early stopping says why;
// augmentation stays independent of the thread count.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors } from '../src/safetensors.js';
import { cliPath, mnistDir, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-resume-'));
const base = ['--data-dir', mnistDir, '--limit-test', '300', '--no-download'];
const same = (a: string, b: string) => readFileSync(join(a, 'model.safetensors')).equals(readFileSync(join(b, 'model.safetensors')));

/** Columns epoch..lr of batch_metrics.csv (samples/s is a timing, not a result). */
function batchRows(dir: string): string[] {
  return readFileSync(join(dir, 'batch_metrics.csv'), 'utf8').trim().split('\n').map((l) => l.split(',').slice(0, 6).join(','));
}

/** Rewrites a checkpoint's training state (the JSON in its header) through `edit`, as an older mnist-par wrote it. */
async function rewriteState(file: string, edit: (state: Record<string, any>) => Record<string, unknown>): Promise<void> {
  const { tensors, metadata } = await readSafetensors(file);
  await writeSafetensors(file, [...tensors.values()], { ...metadata, 'mnist-par.state': JSON.stringify(edit(JSON.parse(metadata['mnist-par.state']))) });
}

/** Starts a run and sends `signal` once it has reported batch `after` (JSON lines); resolves with the exit code. */
function interruptAt(args: string[], after: number, signal: NodeJS.Signals): Promise<{ code: number | null; batches: number[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args, '--json', '--log-every', '1'], { cwd: tmp(), stdio: ['ignore', 'pipe', 'pipe'] });
    const batches: number[] = [];
    let buf = '';
    let sent = false;
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const rec = JSON.parse(line);
        if (rec.type === 'batch') {
          batches.push(rec.step);
          if (!sent && rec.step >= after) {
            sent = true;
            child.kill(signal);
          }
        }
      }
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, batches }));
  });
}

describe('resume', () => {
  it('k epochs, stop, resume to N gives the same bytes as N epochs straight', () => {
    const dir = tmp();
    const args = [...base, '--limit-train', '3000', '--batch-size', '100', '--schedule', 'step', '--step-size', '1'];
    expect(runCli([...args, '--epochs', '3', '--out', join(dir, 'straight'), '--plots', join(dir, 'p1')]).code).toBe(0);
    expect(runCli([...args, '--epochs', '1', '--out', join(dir, 'split'), '--plots', join(dir, 'p2')]).code).toBe(0);
    expect(same(join(dir, 'straight'), join(dir, 'split'))).toBe(false);
    const r = runCli(['--resume', join(dir, 'split'), '--epochs', '3', '--threads', '3', '--json', '--log-every', '1']);
    expect(r.code, r.stderr).toBe(0);
    // the resumed process ran epochs 2 and 3 only (steps 31..90), not the whole run again
    const steps = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'batch').map((x) => x.step);
    expect(steps[0]).toBe(31);
    expect(steps[steps.length - 1]).toBe(90);
    expect(same(join(dir, 'straight'), join(dir, 'split'))).toBe(true);
    expect(batchRows(join(dir, 'split'))).toEqual(batchRows(join(dir, 'straight')));
  });

  it('an interruption in the middle of an epoch (SIGTERM) followed by resume gives the same bytes', async () => {
    const dir = tmp();
    const args = [...base, '--limit-train', '12800', '--batch-size', '64', '--epochs', '2', '--threads', '2'];
    expect(runCli([...args, '--out', join(dir, 'straight'), '--plots', join(dir, 'p1')]).code).toBe(0);
    const cut = await interruptAt([...args, '--out', join(dir, 'cut'), '--plots', join(dir, 'p2')], 40, 'SIGTERM');
    expect(cut.code).toBe(143);
    const stoppedAt = cut.batches[cut.batches.length - 1];
    expect(stoppedAt).toBeLessThan(200); // stopped inside epoch 1 (200 steps per epoch)
    const { metadata } = await readSafetensors(join(dir, 'cut', 'checkpoint-last.safetensors'));
    const state = JSON.parse(metadata['mnist-par.state']);
    expect(state.batch).toBe(stoppedAt); // mid-epoch: epoch 1 has 200 batches
    expect(state.step).toBe(stoppedAt);
    const r = runCli(['--resume', join(dir, 'cut', 'checkpoint-last.safetensors'), '--json', '--log-every', '1']);
    expect(r.code, r.stderr).toBe(0);
    const first = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((x) => x.type === 'batch');
    expect(first.step).toBe(stoppedAt + 1);
    expect(same(join(dir, 'straight'), join(dir, 'cut'))).toBe(true);
    expect(batchRows(join(dir, 'cut'))).toEqual(batchRows(join(dir, 'straight')));
  });

  it('resumes a checkpoint of the earlier format, which carried every batch record in its header', async () => {
    const dir = tmp();
    const args = [...base, '--limit-train', '1000', '--batch-size', '100', '--schedule', 'none'];
    expect(runCli([...args, '--epochs', '2', '--out', join(dir, 'straight')]).code).toBe(0);
    expect(runCli([...args, '--epochs', '1', '--out', join(dir, 'old')]).code).toBe(0);
    await rewriteState(join(dir, 'old', 'checkpoint-last.safetensors'), ({ cwd: _cwd, ...rest }) => ({
      ...rest, version: 1, batches: [{ epoch: 1, batch: 1, step: 1, loss: 2, accuracy: 0.1, lr: 0.005, samplesPerSec: 1 }], epochs: [],
    }));
    const r = runCli(['--resume', join(dir, 'old'), '--epochs', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(same(join(dir, 'straight'), join(dir, 'old'))).toBe(true);
    expect(batchRows(join(dir, 'old'))).toEqual(batchRows(join(dir, 'straight')));
  });

  it('resumes a checkpoint saved with the removed tasks pipeline: lockstep continues it, bit for bit', async () => {
    const dir = tmp();
    const args = [...base, '--limit-train', '1000', '--batch-size', '100', '--schedule', 'none'];
    expect(runCli([...args, '--epochs', '2', '--out', join(dir, 'straight')]).code).toBe(0);
    expect(runCli([...args, '--epochs', '1', '--out', join(dir, 'old')]).code).toBe(0);
    await rewriteState(join(dir, 'old', 'checkpoint-last.safetensors'), (state) => ({ ...state, config: { ...state.config, pipeline: 'tasks' } }));
    const r = runCli(['--resume', join(dir, 'old'), '--epochs', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(same(join(dir, 'straight'), join(dir, 'old'))).toBe(true);
    expect(batchRows(join(dir, 'old'))).toEqual(batchRows(join(dir, 'straight')));
  });

  it('resumes a checkpoint whose configuration carries the removed --shards', async () => {
    const dir = tmp();
    const args = [...base, '--limit-train', '1000', '--batch-size', '100', '--schedule', 'none'];
    expect(runCli([...args, '--epochs', '2', '--out', join(dir, 'straight')]).code).toBe(0);
    expect(runCli([...args, '--epochs', '1', '--out', join(dir, 'old')]).code).toBe(0);
    await rewriteState(join(dir, 'old', 'checkpoint-last.safetensors'), (state) => ({ ...state, config: { ...state.config, shards: 4 } }));
    const r = runCli(['--resume', join(dir, 'old'), '--epochs', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(same(join(dir, 'straight'), join(dir, 'old'))).toBe(true);
  });

  it('keeps last and best checkpoints and PyTorch-style weight files', () => {
    const out = join(tmp(), 'm');
    expect(runCli([...base, '--limit-train', '2000', '--epochs', '2', '--out', out, '--plots', join(out, 'p')]).code).toBe(0);
    for (const f of ['checkpoint-last.safetensors', 'checkpoint-best.safetensors', 'model.safetensors', 'model-best.safetensors']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
  });

  it('refuses flags that conflict with the checkpoint, naming the fields', () => {
    const out = join(tmp(), 'm');
    expect(runCli([...base, '--limit-train', '1000', '--epochs', '1', '--out', out, '--plots', join(out, 'p')]).code).toBe(0);
    const r = runCli(['--resume', out, '--lr', '0.1', '--hidden', '64,32']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--lr');
    expect(r.stderr).toContain('--hidden');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    // one-cycle depends on the total length: more epochs would not continue the same run
    expect(runCli(['--resume', out, '--epochs', '3']).stderr).toContain('--epochs');
  });

  it('damaged or missing checkpoints get one clear line and damage nothing', () => {
    const dir = tmp();
    const out = join(dir, 'm');
    expect(runCli([...base, '--limit-train', '1000', '--epochs', '1', '--out', out, '--plots', join(dir, 'p')]).code).toBe(0);
    const good = readFileSync(join(out, 'checkpoint-last.safetensors'));
    const truncated = join(dir, 'truncated.safetensors');
    writeFileSync(truncated, good.subarray(0, good.length - 1000));
    const headerless = join(dir, 'header.safetensors');
    const bad = Buffer.from(good);
    bad.writeBigUInt64LE(BigInt(1) << BigInt(40), 0);
    writeFileSync(headerless, bad);
    for (const [file, words] of [
      [join(dir, 'nope.safetensors'), /nope\.safetensors/],
      [truncated, /truncated\.safetensors/],
      [headerless, /header\.safetensors/],
      [join(out, 'model.safetensors'), /no training state/],
      [dir, /checkpoint-last\.safetensors/],
    ] as [string, RegExp][]) {
      const r = runCli(['--resume', file]);
      expect(r.code, file).not.toBe(0);
      expect(r.stderr).toMatch(words);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    }
    expect(readFileSync(join(out, 'checkpoint-last.safetensors')).equals(good)).toBe(true);
  });
});

describe('resume a cnn', () => {
  const cnn = ['--model', 'cnn', '--channels', '4,8', '--hidden', '16'];

  it('an interruption in the middle of an epoch (SIGTERM) followed by resume gives the same bytes', async () => {
    const dir = tmp();
    // 200 steps an epoch, as the mlp's test: the signal lands well inside the first epoch
    const args = [...base, ...cnn, '--limit-train', '6400', '--batch-size', '32', '--epochs', '2', '--threads', '2'];
    expect(runCli([...args, '--out', join(dir, 'straight'), '--plots', join(dir, 'p1')]).code).toBe(0);
    const cut = await interruptAt([...args, '--out', join(dir, 'cut'), '--plots', join(dir, 'p2')], 40, 'SIGTERM');
    expect(cut.code).toBe(143);
    const stoppedAt = cut.batches[cut.batches.length - 1];
    expect(stoppedAt).toBeLessThan(200);
    const { tensors, metadata } = await readSafetensors(join(dir, 'cut', 'checkpoint-last.safetensors'));
    const state = JSON.parse(metadata['mnist-par.state']);
    expect(state.batch).toBe(stoppedAt);
    expect(state.config).toMatchObject({ model: 'cnn', channels: [4, 8], hidden: [16] });
    expect(tensors.get('3.weight')?.shape).toEqual([8, 4, 5, 5]);
    expect(same(join(dir, 'straight'), join(dir, 'cut'))).toBe(false);
    // resumed on one thread: the thread count is free, the bytes are not
    const r = runCli(['--resume', join(dir, 'cut'), '--threads', '1', '--json', '--log-every', '1']);
    expect(r.code, r.stderr).toBe(0);
    const first = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((x) => x.type === 'batch');
    expect(first.step).toBe(stoppedAt + 1);
    expect(same(join(dir, 'straight'), join(dir, 'cut'))).toBe(true);
    expect(batchRows(join(dir, 'cut'))).toEqual(batchRows(join(dir, 'straight')));
  });

  it('refuses --model mlp, other --channels or another --hidden, one line naming each flag, and changes nothing', () => {
    const out = join(tmp(), 'm');
    expect(runCli([...base, ...cnn, '--limit-train', '500', '--epochs', '1', '--out', out, '--plots', join(out, 'p')]).code).toBe(0);
    const last = readFileSync(join(out, 'checkpoint-last.safetensors'));
    for (const [flags, words] of [
      [['--model', 'mlp'], /--model "mlp" \(checkpoint: "cnn"\)/],
      [['--channels', '4,4'], /--channels \[4,4\] \(checkpoint: \[4,8\]\)/],
      [['--hidden', '32'], /--hidden \[32\] \(checkpoint: \[16\]\)/],
      [['--model', 'mlp', '--hidden', '16'], /--model "mlp"/],
    ] as [string[], RegExp][]) {
      const r = runCli(['--resume', out, ...flags]);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(words);
      expect(r.stderr).toContain('the checkpoint was trained with other values for');
    }
    expect(readFileSync(join(out, 'checkpoint-last.safetensors')).equals(last)).toBe(true);
    // the flags the checkpoint agrees with are accepted: it continues (here: has nothing left to do)
    const ok = runCli(['--resume', out, '--model', 'cnn', '--channels', '4,8', '--hidden', '16']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('already finished its 1 epoch;');
  });

  it('a checkpoint whose configuration was tampered to say mlp is one line naming the file', async () => {
    const out = join(tmp(), 'm');
    expect(runCli([...base, ...cnn, '--limit-train', '500', '--epochs', '1', '--out', out, '--plots', join(out, 'p')]).code).toBe(0);
    const file = join(out, 'checkpoint-last.safetensors');
    await rewriteState(file, (state) => ({ ...state, config: { ...state.config, model: 'mlp', channels: [16, 32] } }));
    const r = runCli(['--resume', out]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toMatch(/its weights are a cnn 1→4→8 conv5 pool2 · 128→16→10 but its configuration says mlp 784→16→10; the checkpoint is inconsistent/);
  });
});

describe('early stopping', () => {
  it('stops when the monitored metric stops improving and says why', () => {
    const out = join(tmp(), 'm');
    // an improvement must exceed 0.5 of accuracy: after the first epoch none can
    const r = runCli([...base, '--limit-train', '1000', '--epochs', '10', '--patience', '2', '--monitor', 'val_accuracy',
      '--min-delta', '0.5', '--out', out, '--plots', join(out, 'p')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/stopped early: validation accuracy did not improve by more than 0\.5 for 2 epochs \(best .* at epoch 1\)/);
    const epochs = readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n').length - 1;
    expect(epochs).toBe(3);

    // resuming it has nothing to do, and says so without training another epoch or touching its files
    const last = readFileSync(join(out, 'checkpoint-last.safetensors'));
    const again = runCli(['--resume', out]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/already stopped early: validation accuracy did not improve .*nothing to resume \(give a larger --patience/);
    expect(readFileSync(join(out, 'checkpoint-last.safetensors')).equals(last)).toBe(true);
    // a larger patience lets it go on: one more epoch, appended to its metrics
    const more = runCli(['--resume', out, '--patience', '3']);
    expect(more.code, more.stderr).toBe(0);
    expect(more.stdout).toMatch(/stopped early: .* for 3 epochs/);
    expect(readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n').map((l) => l.split(',')[0]).slice(1)).toEqual(['1', '2', '3', '4']);
  });
});

describe('early stopping on the last epoch', () => {
  it('is no early stop: the run says it finished its epochs', () => {
    const out = join(tmp(), 'm');
    // as above, patience runs out after epoch 3, which is also the last
    const r = runCli([...base, '--limit-train', '1000', '--epochs', '3', '--patience', '2', '--monitor', 'val_accuracy',
      '--min-delta', '0.5', '--out', out, '--plots', join(out, 'p')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('stopped early');
    expect(r.stdout).toMatch(/^mnist-par: finished 3 epochs \(/m);
    expect(readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(4);
  });
});

describe('augmentation', () => {
  it('is seeded per image and epoch: the same bytes for any --threads, different from no augmentation', () => {
    const dir = tmp();
    const args = [...base, '--limit-train', '1500', '--epochs', '1', '--batch-size', '50'];
    for (const t of [1, 3]) {
      expect(runCli([...args, '--augment', '--threads', String(t), '--out', join(dir, `a${t}`), '--plots', join(dir, 'p')]).code).toBe(0);
    }
    expect(runCli([...args, '--threads', '2', '--out', join(dir, 'plain'), '--plots', join(dir, 'p')]).code).toBe(0);
    expect(same(join(dir, 'a1'), join(dir, 'a3'))).toBe(true);
    expect(same(join(dir, 'a1'), join(dir, 'plain'))).toBe(false);
  });
});
