// Failure handling: a worker thread that dies (process.exit, an uncaught error, its heap limit) or hangs must
// end the run promptly with one line naming the worker, the step and the cause, a non-zero exit code, the
// terminal left alone and the last checkpoint as it was. Faults are injected with MNIST_PAR_INJECT_FAULT
// (workers/trainer.ts). Every run here has a hard deadline: on code that hangs, the test fails instead of
// waiting forever.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { loadCheckpoint } from '../src/checkpoint.js';
import { Coordinator } from '../src/coordinator.js';
import { WorkerDied } from '../src/errors.js';
import { cliPath, mnistDir, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-faults-'));
// 2048 images in batches of 64: 32 steps per epoch; step 40 is the 8th step of epoch 2
const small = ['--data-dir', mnistDir, '--limit-train', '2048', '--limit-test', '500', '--batch-size', '64',
  '--no-download', '--threads', '2'];
// generous for a loaded 2-vCPU machine, far below "forever"
const PROMPT_MS = 10_000;
const DEADLINE_MS = 60_000;

interface Timed {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** ms from the last batch line before the fault (or the signal sent) to the exit; NaN if none */
  afterMs: number;
  /** true when the run had to be killed at the deadline */
  hung: boolean;
  sentSignal: boolean;
}

/**
 * Runs the CLI with JSON lines and a line per batch. With `signal`, sends it `waitMs` after the batch line of
 * step `afterStep` (when the peers of a hanging thread wait at a barrier); `afterMs` counts from the signal.
 * Without it, `afterMs` counts from the last batch line seen. The run is killed at DEADLINE_MS.
 */
function runTimed(args: string[], env: Record<string, string>, signal?: { name: NodeJS.Signals; afterStep: number; waitMs: number }): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args, '--json', '--log-every', '1'], {
      cwd: tmp(), env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let mark = NaN;
    let sent = false;
    let hung = false;
    child.stdout.on('data', (d: Buffer) => {
      const before = stdout.length;
      stdout += d.toString();
      for (const line of stdout.slice(before).split('\n')) {
        if (!line.startsWith('{"type":"batch"')) continue;
        const step = (JSON.parse(line) as { step: number }).step;
        if (!signal) mark = performance.now();
        else if (!sent && step >= signal.afterStep) {
          sent = true;
          setTimeout(() => {
            mark = performance.now();
            child.kill(signal.name);
          }, signal.waitMs);
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const deadline = setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, DEADLINE_MS);
    child.on('error', reject);
    child.on('exit', (code, sig) => {
      clearTimeout(deadline);
      resolve({ code, signal: sig, stdout, stderr, afterMs: performance.now() - mark, hung, sentSignal: sent });
    });
  });
}

/** The one line a failed run prints, checked for a stack trace and escape codes. */
function oneLine(r: Timed): string {
  expect(r.hung, `the run hung: ${r.stderr}`).toBe(false);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stderr).not.toContain('\x1b');
  // Ctrl-C's own acknowledgement (log.ts) comes before the line, and is not it
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('stopping after this step'));
  expect(lines, r.stderr).toHaveLength(1);
  return lines[0];
}

/** checkpoint-last was written at the end of epoch 1 and not since: it resumes at epoch 2, batch 0. */
async function checkpointFromEpoch1(out: string): Promise<void> {
  const ck = await loadCheckpoint(out);
  expect(ck.state.epoch).toBe(2);
  expect(ck.state.batch).toBe(0);
  // the metrics files end where the checkpoint does: one epoch row
  expect(readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(2);
  expect(ck.perm).toBeNull();
}

describe('a worker thread that dies', () => {
  it('by process.exit mid-epoch: the run ends at once, naming worker, step and exit code; checkpoint-last intact and resumable', async () => {
    const dir = tmp();
    const out = join(dir, 'models');
    const args = [...small, '--epochs', '2', '--out', out, '--plots', join(dir, 'plots')];
    // the rows' half of worker 1 of 2
    const r = await runTimed(args, { MNIST_PAR_INJECT_FAULT: 'forwardBackward:40:1:exit' });
    const line = oneLine(r);
    expect(line).toBe('mnist-par: training stopped: worker 1 died in step 40 (forward/backward): it exited with code 7; ' +
      'nothing was saved after the last checkpoint');
    expect(r.code).toBe(1);
    expect(r.afterMs).toBeLessThan(PROMPT_MS);
    await checkpointFromEpoch1(out);
    // and it still continues the run
    const resumed = runCli(['--resume', out, '--no-download', '--data-dir', mnistDir, '--plots', join(dir, 'plots')]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect((await loadCheckpoint(out)).state.epoch).toBe(3);
  });

  it('in its reduce phase: the line says so', async () => {
    const out = join(tmp(), 'models');
    const r = await runTimed([...small, '--epochs', '1', '--out', out], { MNIST_PAR_INJECT_FAULT: 'reduceStep:9:exit' });
    expect(oneLine(r)).toMatch(/^mnist-par: training stopped: worker [01] died in step 9 \(reduce \+ update\): it exited with code 7; /);
    expect(r.code).toBe(1);
    expect(r.afterMs).toBeLessThan(PROMPT_MS);
  });

  it('by an uncaught error outside its task (a crash): the line carries the error', async () => {
    const dir = tmp();
    const out = join(dir, 'models');
    const r = await runTimed([...small, '--epochs', '2', '--out', out, '--plots', join(dir, 'plots')],
      { MNIST_PAR_INJECT_FAULT: 'forwardBackward:40:0:crash' });
    expect(oneLine(r)).toMatch(/^mnist-par: training stopped: worker 0 died in step 40 \(forward\/backward\): it crashed: injected crash in forwardBackward at step 40 \(0\)/);
    expect(r.code).toBe(1);
    expect(r.afterMs).toBeLessThan(PROMPT_MS);
    await checkpointFromEpoch1(out);
  });

  it('at its heap limit (resourceLimits): the line names the limit', async () => {
    const out = join(tmp(), 'models');
    const r = await runTimed([...small, '--epochs', '1', '--out', out], { MNIST_PAR_INJECT_FAULT: 'forwardBackward:6:1:oom' });
    expect(oneLine(r)).toMatch(/^mnist-par: training stopped: worker 1 died in step 6 \(forward\/backward\): it reached its heap limit of 256 MB/);
    expect(r.code).toBe(1);
    expect(r.afterMs).toBeLessThan(PROMPT_MS);
  });

  it('in a task outside the epoch (an evaluation): the line names the task and its test rows', async () => {
    // the evaluation after step 64, the last of epoch 2: its task 1 of 2 (one per thread) holds test rows 250..500
    const dir = tmp();
    const out = join(dir, 'models');
    const r = await runTimed([...small, '--epochs', '2', '--out', out, '--plots', join(dir, 'plots')],
      { MNIST_PAR_INJECT_FAULT: 'evaluate:64:1:exit' });
    expect(oneLine(r)).toBe('mnist-par: training stopped: the worker running evaluate (test rows 250..500) died: it exited with code 7; ' +
      'nothing was saved after the last checkpoint');
    expect(r.code).toBe(1);
    expect(r.afterMs).toBeLessThan(PROMPT_MS);
    await checkpointFromEpoch1(out);
  });

  it('by a crash in an evaluation: the line names the task and carries the error', async () => {
    const out = join(tmp(), 'models');
    const r = await runTimed([...small, '--epochs', '2', '--out', out], { MNIST_PAR_INJECT_FAULT: 'evaluate:32:1:crash' });
    expect(oneLine(r)).toBe('mnist-par: training stopped: the worker running evaluate (test rows 250..500) died: it crashed: ' +
      'injected crash in evaluate at step 32 (1) by MNIST_PAR_INJECT_FAULT; nothing was saved after the last checkpoint');
    expect(r.code).toBe(1);
    expect(r.afterMs).toBeLessThan(PROMPT_MS);
  });
});

describe('a thread that dies with no task (the pool\'s error event)', () => {
  afterEach(() => {
    delete process.env.MNIST_PAR_INJECT_FAULT;
  });

  it('is recorded, not thrown: later tasks are refused with the cause instead of waiting for a thread that never comes', async () => {
    // every worker thread fails while loading: the first one with its warm-up task, its replacement (started by
    // Piscina) with none, which Piscina reports as the pool's 'error' event
    process.env.MNIST_PAR_INJECT_FAULT = 'load:0';
    const coord = new Coordinator({
      spec: { model: { kind: 'mlp', hidden: [16] }, threads: 1, batchRows: 64, evalRows: 64, optimizerStates: 0, stepsPerEpoch: 1,
        trainCount: 64, testCount: 64, pixels: 784 },
      optimizer: { optimizer: 'sgd', momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
      kernels: 'js', mean: 0.1307, std: 0.3081, labelSmoothing: 0,
    });
    try {
      const first = await coord.ready().then(() => null, (e: unknown) => e);
      expect(first).toBeInstanceOf(WorkerDied);
      expect((first as Error).message).toMatch(/died: it crashed: injected fault: worker thread 0 fails while loading/);
      // the replacement fails within a moment; an unhandled 'error' event would fail this test file
      await new Promise((r) => setTimeout(r, 1500));
      const t0 = performance.now();
      const later = await Promise.race([
        coord.evaluate().then(() => 'resolved', (e: unknown) => e),
        new Promise((r) => setTimeout(() => r('still waiting'), 5000)),
      ]);
      expect(later).toBe(first);
      expect(performance.now() - t0).toBeLessThan(1000);
    } finally {
      await coord.close();
    }
  });
});

describe('a signal while the peers of a hanging thread wait at a barrier', () => {
  for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130]] as const) {
    it(`${signal}: the run ends within seconds with exit ${code}, naming the stuck worker; checkpoint-last intact`, async () => {
      const dir = tmp();
      const out = join(dir, 'models');
      const r = await runTimed([...small, '--epochs', '2', '--out', out, '--plots', join(dir, 'plots')],
        { MNIST_PAR_INJECT_FAULT: 'forwardBackward:40:1:hang' }, { name: signal, afterStep: 39, waitMs: 500 });
      expect(r.sentSignal).toBe(true);
      const line = oneLine(r);
      expect(line).toMatch(new RegExp(`^mnist-par: stopped by ${signal}, but the step in progress did not finish within \\d+\\.\\d s: ` +
        'worker 1 never reached the barrier in step 40 \\(forward/backward\\); it was terminated and nothing was saved after the last checkpoint$'));
      expect(r.code).toBe(code);
      expect(r.afterMs).toBeLessThan(PROMPT_MS);
      await checkpointFromEpoch1(out);
    });
  }

  it('SIGTERM while a thread hangs in the evaluation after an epoch: the same, naming the evaluation', async () => {
    const dir = tmp();
    const out = join(dir, 'models');
    // epoch 2 ends at step 64; its evaluation hangs (epoch 1's checkpoint is the last one)
    const r = await runTimed([...small, '--epochs', '3', '--out', out, '--plots', join(dir, 'plots')],
      { MNIST_PAR_INJECT_FAULT: 'evaluate:64:1:hang' }, { name: 'SIGTERM', afterStep: 64, waitMs: 500 });
    expect(r.sentSignal).toBe(true);
    expect(oneLine(r)).toMatch(/^mnist-par: stopped by SIGTERM, but the evaluation in progress did not finish within 0\.\d s: the worker evaluating test rows \d+\.\.\d+ never returned; it was terminated and nothing was saved after the last checkpoint$/);
    expect(r.code).toBe(143);
    expect(r.afterMs).toBeLessThan(PROMPT_MS);
    expect((await loadCheckpoint(out)).state.epoch).toBe(2);
  });
});

describe('standard output or standard error that goes away', () => {
  it('a closed pipe (| head -1) stops the run after the step: checkpoint saved, summary on stderr, exit 141, no stack', async () => {
    const dir = tmp();
    const out = join(dir, 'models');
    const child = spawn(process.execPath, [cliPath, ...small, '--epochs', '3', '--log-every', '1', '--out', out,
      '--plots', join(dir, 'plots')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    // read the first line, then close our end, as `head -1` does
    child.stdout.once('data', () => child.stdout.destroy());
    const deadline = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    const [code] = await new Promise<[number | null]>((resolve) => child.on('exit', (c) => resolve([c])));
    clearTimeout(deadline);
    expect(stderr).not.toMatch(/\n\s+at /);
    expect(stderr).toMatch(/^mnist-par: standard output was closed: stopping after this step\nmnist-par: stopped by SIGPIPE in epoch 1 after batch \d+\/32/);
    expect(stderr).toContain('continue with: mnist-par train --resume');
    expect(code).toBe(141);
    const ck = await loadCheckpoint(out);
    expect(ck.state.epoch).toBe(1);
    expect(ck.state.batch).toBeGreaterThan(0);
  });

  it('a failing one (/dev/full: ENOSPC) does the same instead of an uncaught exception', async () => {
    const dir = tmp();
    const out = join(dir, 'models');
    const { openSync, closeSync } = await import('node:fs');
    const full = openSync('/dev/full', 'w');
    const child = spawn(process.execPath, [cliPath, ...small, '--epochs', '3', '--out', out, '--plots', join(dir, 'plots')],
      { cwd: dir, stdio: ['ignore', full, 'pipe'] });
    closeSync(full);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const deadline = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(deadline);
    expect(stderr).not.toMatch(/\n\s+at /);
    expect(stderr).toMatch(/^mnist-par: standard output failed \(ENOSPC\): stopping after this step\n/);
    expect(code).toBe(141);
    expect(readFileSync(join(out, 'checkpoint-last.safetensors')).length).toBeGreaterThan(0);
  });

  /** `bash -c 'CLI ARGS | head -1'` (with `2>&1` when `merged`): the exit status of the CLI, and what head passed on. */
  function throughHead(args: string[], merged: boolean, cwd: string): { code: number; shown: string } {
    const quoted = [process.execPath, cliPath, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
    const r = spawnSync('bash', ['-c', `${quoted}${merged ? ' 2>&1' : ' 2>/dev/null'} | head -1; exit \${PIPESTATUS[0]}`],
      { cwd, encoding: 'utf8', timeout: DEADLINE_MS });
    return { code: r.status ?? -1, shown: r.stdout };
  }

  it('stdout and stderr in the same closed pipe (2>&1 | head -1): exit 141, checkpoint saved, no lock left, resumable', async () => {
    const dir = tmp();
    const out = join(dir, 'models');
    const r = throughHead([...small, '--epochs', '2', '--log-every', '1', '--out', out, '--plots', join(dir, 'plots')], true, dir);
    expect(r.shown).toMatch(/^mnist · mlp /);
    expect(r.code).toBe(141);
    const ck = await loadCheckpoint(out);
    expect(ck.state.epoch).toBe(1);
    expect(ck.state.batch).toBeGreaterThan(0);
    expect(existsSync(join(out, '.mnist-par.lock'))).toBe(false);
    const resumed = runCli(['--resume', out, '--no-download', '--data-dir', mnistDir]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect((await loadCheckpoint(out)).state.epoch).toBe(3);
  });

  it('a run that ends on the step where stdout closes exits 141 too: its output was lost', () => {
    const dir = tmp();
    const out = join(dir, 'models');
    // one JSON line at the start, then none until the last epoch's line, which finds the pipe closed
    const r = throughHead([...small, '--epochs', '1', '--json', '--log-every', '1000', '--out', out, '--plots', join(dir, 'plots')], false, dir);
    expect(JSON.parse(r.shown).type).toBe('start');
    expect(r.code).toBe(141);
    expect(existsSync(join(out, 'checkpoint-last.safetensors'))).toBe(true);
  });

  it('a closed stderr before training started (a note finds it closed): leaves at once with 141, nothing left behind', async () => {
    const dir = tmp();
    const out = join(dir, 'run');
    // the native addon hidden: auto says, on stderr, which kernels it takes instead
    const child = spawn(process.execPath, [cliPath, ...small, '--epochs', '1', '--json', '--out', out, '--plots', join(dir, 'plots')],
      { cwd: dir, env: { ...process.env, MNIST_PAR_NATIVE: 'off' }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr.destroy();
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    const deadline = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(deadline);
    expect(code).toBe(141);
    expect(stdout).toBe('');
    expect(readdirSync(dir)).toEqual([]);
  });
});
