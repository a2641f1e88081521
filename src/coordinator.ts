// The coordinator: owns the Piscina pool and the shared arena. It never runs a kernel; it splits work into
// tasks that carry indices, waits for them, and reads the few scalars they leave in the arena.
//
// One training step, as the pool sees it:
//   1. forwardBackward × shards   micro-shard s takes rows [⌊s·n/S⌋, ⌊(s+1)·n/S⌋) of the batch and writes
//                                 its gradient into slot s (slots are indexed by shard, never by thread)
//   2. reduceStep × threads       worker k sums slice k of the parameter vector over slots 0..S−1 in order
//                                 and applies the optimizer to that slice in place (reduce-scatter + a
//                                 sharded optimizer step; no thread copies the weights)
// Because every sum runs in the same order whatever thread runs it, the weights are bit-identical for any
// --threads.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { arenaLayout, arenaViews, createArenaMemory, splitRange, type ArenaSpec, type ArenaViews } from './memory.js';
import type { OptimizerConfig } from './optim.js';
import { resolveFamily, type KernelFamily } from './kernels/wasm.js';
import { packageRoot } from './paths.js';
import type { EvalTask, ReduceTask, ShardTask, WorkerInit } from '../workers/trainer.js';

export interface CoordinatorOptions {
  spec: ArenaSpec;
  optimizer: OptimizerConfig;
  kernels: 'auto' | KernelFamily;
  mean: number;
  std: number;
  labelSmoothing: number;
}

export interface StepResult {
  lossSum: number;
  correct: number;
}

/** A worker task failed: the message names the task and its indices. */
export class TaskError extends Error {
  constructor(readonly task: string, readonly detail: string, cause: unknown) {
    super(`worker task ${task} (${detail}) failed: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'TaskError';
  }
}

export class Coordinator {
  readonly views: ArenaViews;
  readonly memory: WebAssembly.Memory;
  readonly threads: number;
  readonly shards: number;
  /** the kernel family every thread runs, resolved once here so all threads do the same arithmetic */
  readonly family: KernelFamily;
  private pool: Piscina;
  /** [start, end) of the parameter slice each reduce task owns */
  private slices: [number, number][];

  constructor(readonly options: CoordinatorOptions) {
    const layout = arenaLayout(options.spec);
    this.memory = createArenaMemory(layout);
    this.views = arenaViews(this.memory, layout);
    this.threads = options.spec.threads;
    this.shards = options.spec.shards;
    this.family = resolveFamily(options.kernels, this.memory);
    const init: WorkerInit = {
      memory: this.memory, layout, optimizer: options.optimizer, kernels: this.family,
      mean: options.mean, std: options.std, labelSmoothing: options.labelSmoothing,
    };
    const filename = join(packageRoot(), 'dist', 'workers', 'trainer.js');
    if (!existsSync(filename)) throw new Error(`worker script ${filename} is missing: run npm run build`);
    this.pool = new Piscina({
      filename,
      minThreads: this.threads,
      maxThreads: this.threads,
      idleTimeout: 60_000,
      concurrentTasksPerWorker: 1,
      workerData: init,
    });
    // Slices of whole 16-float blocks so that SIMD kernels never straddle two owners' data.
    const P = this.views.model.size;
    const blocks = Math.ceil(P / 16);
    this.slices = Array.from({ length: this.threads }, (_, k) => {
      const [a, b] = splitRange(blocks, this.threads, k);
      return [Math.min(P, a * 16), Math.min(P, b * 16)] as [number, number];
    }).filter(([a, b]) => b > a);
  }

  /** Starts every worker thread and waits until each has built its views and kernels. */
  async ready(): Promise<void> {
    const t = { shard: 0, start: 0, end: 0 };
    await settle(Array.from({ length: this.threads }, () => this.run<EvalTask>('evaluate', t, 'warm-up')));
  }

  private async run<T>(name: string, task: T, detail: string): Promise<void> {
    try {
      await this.pool.run(task, { name });
    } catch (e) {
      throw new TaskError(name, detail, e);
    }
  }

  /**
   * One optimizer step on the batch perm[start, start+count): shards → reduce + update → metrics.
   * `t` is the 1-based step number, `lr` this step's learning rate.
   */
  async step(start: number, count: number, lr: number, t: number): Promise<StepResult> {
    const shards: Promise<void>[] = [];
    for (let s = 0; s < this.shards; s++) {
      const [a, b] = splitRange(count, this.shards, s);
      const task: ShardTask = { shard: s, start: start + a, count: b - a, batch: count, step: t };
      shards.push(this.run('forwardBackward', task, `step ${t}, shard ${s}`));
    }
    await settle(shards);
    await settle(this.slices.map(([a, b]) =>
      this.run<ReduceTask>('reduceStep', { start: a, end: b, lr, t }, `step ${t}, parameters ${a}..${b}`)));
    const stat = this.views.shardStat;
    let lossSum = 0;
    let correct = 0;
    for (let s = 0; s < this.shards; s++) {
      lossSum += stat[2 * s];
      correct += stat[2 * s + 1];
    }
    return { lossSum, correct };
  }

  /** Loss and accuracy on the test set held in the arena, data-parallel over the shards. */
  async evaluate(): Promise<{ loss: number; accuracy: number }> {
    const n = this.options.spec.testCount;
    await settle(Array.from({ length: this.shards }, (_, s) => {
      const [a, b] = splitRange(n, this.shards, s);
      return this.run<EvalTask>('evaluate', { shard: s, start: a, end: b }, `test rows ${a}..${b}`);
    }));
    let lossSum = 0;
    let correct = 0;
    for (let s = 0; s < this.shards; s++) {
      lossSum += this.views.evalStat[2 * s];
      correct += this.views.evalStat[2 * s + 1];
    }
    return { loss: lossSum / n, accuracy: correct / n };
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}

/**
 * Waits for every task of a phase, then throws the first failure (in task order). Waiting for all of them
 * matters: destroying the pool while a sibling task is still running makes Piscina fail on its late reply.
 */
async function settle(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
