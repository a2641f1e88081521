// The coordinator: owns the Piscina pool and the shared arena. It never runs a kernel; it splits work into
// tasks that carry indices, waits for them, and reads the few scalars they leave in the arena.
//
// One training step, in either pipeline:
//   1. forward/backward × shards  micro-shard s takes rows [⌊s·n/S⌋, ⌊(s+1)·n/S⌋) of the batch and writes
//                                 its gradient into slot s (slots are indexed by shard, never by thread)
//   2. reduce + update × threads  worker k sums slice k of the parameter vector over slots 0..S−1 in order
//                                 and applies the optimizer to that slice in place (reduce-scatter + a
//                                 sharded optimizer step; no thread copies the weights)
// Because every sum runs in the same order whatever thread runs it, the weights are bit-identical for any
// --threads.
//
// Pipelines (--pipeline):
//   lockstep  one long-lived task per worker per epoch; the workers step together, meeting at two
//             Atomics.wait/notify barriers per step in the arena; the coordinator only dispatches the epoch
//             and observes progress (steps done, per-step sums) — nothing of its own on the critical path
//   tasks     every step dispatches S shard tasks, waits, then one reduce task per thread, waits
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import {
  arenaLayout, arenaViews, createArenaMemory, splitRange, CTRL_ABORT, CTRL_BAR_COUNT, CTRL_PARTICIPANT, CTRL_STEPS_DONE, CTRL_STOP,
  CTRL_STOP_AFTER,
  type ArenaSpec, type ArenaViews,
} from './memory.js';
import type { OptimizerConfig } from './optim.js';
import { resolveKernels, type KernelFamily, type ResolvedKernels } from './kernels/wasm.js';
import { TaskError } from './errors.js';
import { packageRoot } from './paths.js';
import type { EpochTask, EvalTask, ReduceTask, ShardTask, WorkerInit } from '../workers/trainer.js';

export type Pipeline = 'lockstep' | 'tasks';

export interface CoordinatorOptions {
  spec: ArenaSpec;
  optimizer: OptimizerConfig;
  kernels: 'auto' | KernelFamily;
  /** default lockstep */
  pipeline?: Pipeline;
  mean: number;
  std: number;
  labelSmoothing: number;
  /** augment training images with transforms seeded by (this seed, epoch, image index); null: no augmentation */
  augment?: number | null;
}

export interface StepResult {
  lossSum: number;
  correct: number;
}

/** The steps of one epoch to run: batch b covers perm[b·batchSize, min((b+1)·batchSize, trainCount)). */
export interface EpochPlan {
  from: number;
  to: number;
  batchSize: number;
  trainCount: number;
  /** 1-based global step number of batch `from` */
  firstT: number;
  /** learning rate of batch b, for b in [from, to) */
  lr: (b: number) => number;
  /** 1-based epoch number (seeds augmentation) */
  epoch: number;
}

export interface EpochHooks {
  /** called in order for every finished step b with the batch's loss sum and correct count */
  onStep(b: number, lossSum: number, correct: number): void;
  /** polled between steps; true stops the epoch after the step in progress */
  shouldStop(): boolean;
}

export class Coordinator {
  readonly views: ArenaViews;
  readonly memory: WebAssembly.Memory;
  readonly threads: number;
  readonly shards: number;
  /** the kernel family every thread runs, resolved once here so all threads do the same arithmetic */
  readonly family: KernelFamily;
  /** the family with its native path, and why `auto` fell back from native if it did */
  readonly kernels: ResolvedKernels;
  private pool: Piscina;

  constructor(readonly options: CoordinatorOptions) {
    const layout = arenaLayout(options.spec);
    this.memory = createArenaMemory(layout);
    this.views = arenaViews(this.memory, layout);
    this.threads = options.spec.threads;
    this.shards = options.spec.shards;
    this.kernels = resolveKernels(options.kernels, this.memory);
    this.family = this.kernels.family;
    // Slices of whole 16-float blocks so that SIMD kernels never straddle two owners' data.
    const P = this.views.model.size;
    const blocks = Math.ceil(P / 16);
    // With more threads than cores, only as many threads as there are cores get work in a step (the rest
    // pass the barriers asleep): time-slicing 8 busy threads on 2 cores only adds context switches. Which
    // threads do the work never changes the arithmetic, so the bytes stay the same.
    const active = Math.min(this.threads, availableParallelism());
    const slices = Array.from({ length: this.threads }, (_, k) => {
      if (k >= active) return [0, 0] as [number, number];
      const [a, b] = splitRange(blocks, active, k);
      return [Math.min(P, a * 16), Math.min(P, b * 16)] as [number, number];
    });
    const init: WorkerInit = {
      memory: this.memory, layout, optimizer: options.optimizer, kernels: this.family,
      mean: options.mean, std: options.std, labelSmoothing: options.labelSmoothing, slices, active,
      augment: options.augment ?? null,
      // spinning before sleeping at a barrier helps only when every thread has a core of its own; 2 ms
      // covers the usual skew between threads at the end of a phase
      spinMs: this.threads <= availableParallelism() ? 2 : 0,
    };
    const filename = join(packageRoot(), 'dist', 'workers', 'trainer.js');
    if (!existsSync(filename)) throw new Error(`worker script ${filename} is missing: run npm run build`);
    this.pool = new Piscina({
      filename,
      minThreads: this.threads,
      maxThreads: this.threads,
      idleTimeout: 60_000,
      concurrentTasksPerWorker: 1,
      // workers allocate almost nothing per step: a small young generation keeps each thread's heap small
      resourceLimits: { maxYoungGenerationSizeMb: 2 },
      workerData: init,
    });
  }

  /** Starts the worker threads and waits for one warm-up task per thread (the first tasks wait for the
   *  module, views and kernels of the thread they land on). Call it after setting the parameters: it also
   *  brings the copies the kernels keep of them (the transposed weights) up to date. */
  async ready(): Promise<void> {
    const t = { shard: 0, start: 0, end: 0 };
    await settle(Array.from({ length: this.threads }, () => this.run<EvalTask>('evaluate', t, 'warm-up')));
    await settle(Array.from({ length: this.threads }, (_, k) => this.run<number>('syncWeights', k, `slice ${k}`)));
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
  async step(start: number, count: number, lr: number, t: number, epoch: number): Promise<StepResult> {
    const shards: Promise<void>[] = [];
    for (let s = 0; s < this.shards; s++) {
      const [a, b] = splitRange(count, this.shards, s);
      const task: ShardTask = { shard: s, start: start + a, count: b - a, batch: count, step: t, epoch };
      shards.push(this.run('forwardBackward', task, `step ${t}, shard ${s}`));
    }
    await settle(shards);
    await settle(Array.from({ length: this.threads }, (_, k) =>
      this.run<ReduceTask>('reduceStep', { slice: k, lr, t }, `step ${t}, slice ${k}`)));
    const stat = this.views.shardStat;
    let lossSum = 0;
    let correct = 0;
    for (let s = 0; s < this.shards; s++) {
      lossSum += stat[2 * s];
      correct += stat[2 * s + 1];
    }
    return { lossSum, correct };
  }

  /** Runs the steps of `plan`; returns the number of the batch after the last one run. */
  async runEpoch(plan: EpochPlan, hooks: EpochHooks): Promise<number> {
    if (this.options.pipeline === 'tasks') {
      for (let b = plan.from; b < plan.to; b++) {
        const start = b * plan.batchSize;
        const count = Math.min(plan.batchSize, plan.trainCount - start);
        const r = await this.step(start, count, plan.lr(b), plan.firstT + b - plan.from, plan.epoch);
        hooks.onStep(b, r.lossSum, r.correct);
        if (hooks.shouldStop()) return b + 1;
      }
      return plan.to;
    }
    const v = this.views;
    for (let b = plan.from; b < plan.to; b++) v.lrs[b] = plan.lr(b);
    const ctrl = v.control;
    Atomics.store(ctrl, CTRL_STEPS_DONE, plan.from);
    Atomics.store(ctrl, CTRL_STOP, 0);
    Atomics.store(ctrl, CTRL_STOP_AFTER, -1);
    Atomics.store(ctrl, CTRL_ABORT, 0);
    Atomics.store(ctrl, CTRL_PARTICIPANT, 0);
    Atomics.store(ctrl, CTRL_BAR_COUNT, 0);
    const task: EpochTask = {
      from: plan.from, to: plan.to, batchSize: plan.batchSize, trainCount: plan.trainCount, firstT: plan.firstT,
      epoch: plan.epoch,
    };
    let finished = false;
    const all = settle(Array.from({ length: this.threads }, () =>
      this.run('runEpoch', task, `steps ${plan.firstT}..${plan.firstT + plan.to - plan.from - 1}`)),
    ).finally(() => {
      finished = true;
    });
    const quiet = all.catch(() => undefined);
    let seen = plan.from;
    const drain = () => {
      const done = Atomics.load(ctrl, CTRL_STEPS_DONE);
      for (; seen < done; seen++) hooks.onStep(seen, v.stepStat[2 * seen], v.stepStat[2 * seen + 1]);
    };
    // Observe, off the workers' critical path: a look every 20 ms is plenty for metrics and the UI.
    while (!finished) {
      await Promise.race([quiet, sleep(20)]);
      drain();
      if (hooks.shouldStop()) Atomics.store(ctrl, CTRL_STOP, 1);
    }
    await all;
    drain();
    return seen;
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Waits for every task of a phase, then throws the first failure (in task order). Waiting for all of them
 * matters: destroying the pool while a sibling task is still running makes Piscina fail on its late reply.
 */
async function settle(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason);
  // a lockstep worker that stopped only because a peer failed is not the story: report the peer's error
  const cause = failed.find((e) => !/aborted: another worker failed/.test(String(e?.message))) ?? failed[0];
  if (cause !== undefined) throw cause;
}
