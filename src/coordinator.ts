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
//
// A worker thread that dies (process.exit, an uncaught error, its heap limit) tells its peers nothing: the
// coordinator notices (Piscina rejects the dead thread's task, or emits 'error' for an idle one), sets the
// arena's abort word and wakes every barrier, so the peers leave at once; the run then stops with a
// WorkerDied error and nothing is saved from the torn step. A stop request that the step in progress cannot
// honour (a thread that never arrives at the barrier) is given up after STUCK_GRACE_MS: the same abort, then a
// StuckStep error. A thread that does not leave within LEAVE_MS is abandoned: close() terminates it.
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import {
  arenaLayout, arenaViews, createArenaMemory, splitRange, CTRL_ABORT, CTRL_BAR_COUNT, CTRL_BAR_GEN, CTRL_PARTICIPANT,
  CTRL_STEPS_DONE, CTRL_STOP, CTRL_STOP_AFTER,
  type ArenaSpec, type ArenaViews,
} from './memory.js';
import type { OptimizerConfig } from './optim.js';
import { resolveKernels, type KernelFamily, type ResolvedKernels } from './kernels/wasm.js';
import { StuckStep, TaskError, WorkerDied } from './errors.js';
import { packageRoot } from './paths.js';
import {
  BARRIER_SPIN_MS, CLOSE_TIMEOUT_MS, LEAVE_MS, POLL_MS, POOL_IDLE_TIMEOUT_MS, STUCK_GRACE_MS, WORKER_HEAP_MB, WORKER_YOUNG_GEN_MB,
} from './tuning.js';
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
  /** the first worker thread that died; every later task is refused with it */
  private dead: WorkerDied | null = null;
  /** worker threads Piscina removed (they died) while the pool was not being closed */
  private lost = 0;
  private closing = false;
  /** the slowest step seen in this run (lockstep), which scales how long a stop waits for a step */
  private slowestStepMs = 0;
  /** during a lockstep epoch: where the threads are, and which ones left their task */
  private epoch: { where: () => string; left: boolean[] } | null = null;
  /** the tasks dispatched and not finished, by name and detail */
  private readonly inFlight = new Set<string>();

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
      spinMs: this.threads <= availableParallelism() ? BARRIER_SPIN_MS : 0,
    };
    const filename = join(packageRoot(), 'dist', 'workers', 'trainer.js');
    if (!existsSync(filename)) throw new Error(`worker script ${filename} is missing: run npm run build`);
    this.pool = new Piscina({
      filename,
      minThreads: this.threads,
      maxThreads: this.threads,
      idleTimeout: POOL_IDLE_TIMEOUT_MS,
      concurrentTasksPerWorker: 1,
      // workers allocate almost nothing per step: a small young generation keeps each thread's heap small
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GEN_MB, maxOldGenerationSizeMb: WORKER_HEAP_MB },
      workerData: init,
    });
    this.pool.on('workerDestroy', () => {
      if (!this.closing) this.lost++;
    });
    // Piscina emits 'error' for a thread that dies with no task (a replacement that fails to start); without
    // a listener that would end the process with a stack trace
    this.pool.on('error', (e: unknown) => {
      if (this.closing || this.dead) return;
      // during an epoch, the thread that already left its task is the one that died after its reply
      const gone = this.epoch?.left.map((_, k) => k).filter((k) => this.epoch!.left[k]) ?? [];
      this.dead = gone.length === 1
        ? new WorkerDied(`worker ${gone[0]}`, this.epoch!.where(), causeOf(e))
        : new WorkerDied('a worker thread with no task', 'while idle', causeOf(e));
      this.abortWorkers();
    });
  }

  /** The first worker thread that died, or null. */
  get failure(): WorkerDied | null {
    return this.dead;
  }

  /** Sets the abort word and wakes every barrier: the lockstep threads leave their epoch task. */
  private abortWorkers(): void {
    const ctrl = this.views.control;
    Atomics.store(ctrl, CTRL_ABORT, 1);
    Atomics.add(ctrl, CTRL_BAR_GEN, 1);
    Atomics.notify(ctrl, CTRL_BAR_GEN);
  }

  /** Starts the worker threads and waits for one warm-up task per thread (the first tasks wait for the
   *  module, views and kernels of the thread they land on). Call it after setting the parameters: it also
   *  brings the copies the kernels keep of them (the transposed weights) up to date. */
  async ready(): Promise<void> {
    const t = { shard: 0, start: 0, end: 0 };
    await settle(Array.from({ length: this.threads }, () => this.run<EvalTask>('evaluate', t, 'warm-up')));
    await settle(Array.from({ length: this.threads }, (_, k) => this.run<number>('syncWeights', k, `slice ${k}`)));
  }

  /** Runs one task. `who` names the worker and `where` says where it was, should its thread die. */
  private async run<T>(name: string, task: T, detail: string, who = `the worker running ${name} (${detail})`,
                       where: () => string = () => ''): Promise<void> {
    if (this.dead) throw this.dead;
    const lost = this.lost;
    const label = `${name} (${detail})`;
    this.inFlight.add(label);
    try {
      await this.pool.run(task, { name });
    } catch (e) {
      // Piscina removes a thread that died before it rejects that thread's task
      if (this.lost > lost && !/aborted: another worker failed/.test(String((e as Error)?.message))) {
        const died = new WorkerDied(who, where(), causeOf(e));
        this.dead ??= died;
        this.abortWorkers();
        throw died;
      }
      throw new TaskError(name, detail, e);
    } finally {
      this.inFlight.delete(label);
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
      // a stop request is honoured between steps; a step that never ends (a task hangs) is given up
      let progressAt = performance.now();
      let stopAt: number | null = null;
      let giveUp!: (e: StuckStep) => void;
      const stuck = new Promise<never>((_, reject) => {
        giveUp = reject;
      });
      stuck.catch(() => undefined);
      const watch = setInterval(() => {
        if (!hooks.shouldStop()) return;
        const now = performance.now();
        stopAt ??= now;
        const grace = Math.max(STUCK_GRACE_MS, 3 * this.slowestStepMs);
        if (now - stopAt > grace && now - progressAt > grace) {
          giveUp(new StuckStep(`the step in progress did not finish within ${(grace / 1000).toFixed(1)} s: ` +
            `${[...this.inFlight].join(', ')} never finished`));
        }
      }, POLL_MS);
      try {
        for (let b = plan.from; b < plan.to; b++) {
          const start = b * plan.batchSize;
          const count = Math.min(plan.batchSize, plan.trainCount - start);
          const r = await Promise.race([this.step(start, count, plan.lr(b), plan.firstT + b - plan.from, plan.epoch), stuck]);
          const now = performance.now();
          this.slowestStepMs = Math.max(this.slowestStepMs, now - progressAt);
          progressAt = now;
          hooks.onStep(b, r.lossSum, r.correct);
          if (hooks.shouldStop()) return b + 1;
        }
      } finally {
        clearInterval(watch);
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
    if (this.dead) throw this.dead;
    const gen0 = Atomics.load(ctrl, CTRL_BAR_GEN);
    const steps = `steps ${plan.firstT}..${plan.firstT + plan.to - plan.from - 1}`;
    // where the threads are: step firstT + done - from; two barrier rounds per step tell the phase
    const where = (): string => {
      const done = Atomics.load(ctrl, CTRL_STEPS_DONE);
      const rounds = Atomics.load(ctrl, CTRL_BAR_GEN) - gen0;
      const phase = rounds > 2 * (done - plan.from) ? 'reduce + update' : 'forward/backward';
      return `in step ${plan.firstT + done - plan.from} (${phase})`;
    };
    const left = new Array<boolean>(this.threads).fill(false);
    let abortedAt: number | null = null;
    let failure: unknown = null;
    const tasks = Array.from({ length: this.threads }, (_, k) => {
      const task: EpochTask = {
        from: plan.from, to: plan.to, batchSize: plan.batchSize, trainCount: plan.trainCount, firstT: plan.firstT,
        epoch: plan.epoch, participant: k,
      };
      return this.run('runEpoch', task, steps, `worker ${k}`, where).catch((e: unknown) => {
        // a failed thread may leave its peers waiting for it: wake them all
        abortedAt ??= performance.now();
        if (!/aborted: another worker failed/.test(String((e as Error)?.message))) failure ??= e;
        this.abortWorkers();
        throw e;
      }).finally(() => {
        left[k] = true;
      });
    });
    let finished = false;
    this.epoch = { where, left };
    const all = settle(tasks).finally(() => {
      finished = true;
      this.epoch = null;
    });
    const quiet = all.catch(() => undefined);
    let seen = plan.from;
    const drain = () => {
      const done = Atomics.load(ctrl, CTRL_STEPS_DONE);
      for (; seen < done; seen++) hooks.onStep(seen, v.stepStat[2 * seen], v.stepStat[2 * seen + 1]);
    };
    let stopAt: number | null = null;
    let stuck: StuckStep | null = null;
    let progressAt = performance.now();
    let doneBefore = plan.from;
    // Observe, off the workers' critical path: a look every 20 ms is plenty for metrics and the UI.
    while (!finished) {
      await Promise.race([quiet, sleep(POLL_MS)]);
      const now = performance.now();
      const done = Atomics.load(ctrl, CTRL_STEPS_DONE);
      if (done > doneBefore) {
        if (doneBefore > plan.from) this.slowestStepMs = Math.max(this.slowestStepMs, (now - progressAt) / (done - doneBefore));
        doneBefore = done;
        progressAt = now;
      }
      drain();
      if (this.dead && abortedAt === null) abortedAt = now; // a thread died after its reply (the pool's 'error')
      if (hooks.shouldStop() && abortedAt === null) {
        Atomics.store(ctrl, CTRL_STOP, 1);
        stopAt ??= now;
        // the stop is honoured at the end of the step in progress; a step that does not end has a stuck thread
        const grace = Math.max(STUCK_GRACE_MS, 3 * this.slowestStepMs);
        if (now - stopAt > grace && now - progressAt > grace) {
          const at = where();
          const waiting = left.map((_, k) => k).filter((k) => !left[k]);
          abortedAt = now;
          this.abortWorkers();
          await Promise.race([quiet, sleep(LEAVE_MS)]);
          const missing = waiting.filter((k) => !left[k]);
          stuck = new StuckStep(`the step in progress did not finish within ${(grace / 1000).toFixed(1)} s: ` +
            `${missing.length > 0 ? missing.map((k) => `worker ${k}`).join(', ') : 'a worker'} never reached the barrier ${at}`);
        }
      }
      if (abortedAt !== null && !finished && now - abortedAt >= LEAVE_MS) break;
    }
    if (stuck) throw stuck;
    // a dead thread is the story, whatever its peers said when they left
    if (this.dead) {
      await Promise.race([quiet, sleep(LEAVE_MS)]);
      throw this.dead;
    }
    if (!finished) {
      // a thread that does not leave after the abort (it hangs) is abandoned; close() terminates it
      throw this.dead ?? failure ?? new StuckStep(`a worker did not leave its epoch task ${where()} after the abort`);
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

  /** Terminates the worker threads; gives up after 5 s on one that cannot be terminated (a native loop). */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.race([this.pool.destroy(), sleep(CLOSE_TIMEOUT_MS, false)]);
  }
}

function sleep(ms: number, ref = true): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (!ref) t.unref();
  });
}

/** Why a thread died, from what Piscina rejected its task with (or emitted as 'error'). */
function causeOf(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const exited = /^worker exited with code: (-?\d+)/.exec(String(err?.message));
  if (exited) return `it exited with code ${exited[1]}`;
  if (err?.code === 'ERR_WORKER_OUT_OF_MEMORY') return `it reached its heap limit of ${WORKER_HEAP_MB} MB and was terminated`;
  return `it crashed: ${err instanceof Error ? err.message : String(e)}`;
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
