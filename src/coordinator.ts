// The coordinator: owns the Piscina pool and the shared arena. It never runs a kernel; it hands the workers
// tasks that carry indices, waits for them, and reads the few scalars they leave in the arena.
//
// One training step, as every worker runs it (workers/trainer.ts, trainStep; who does what: partition.ts):
//   1. rows     worker k takes its blocks of 8 rows of the batch: gather, forward, loss, and the gradients of
//               their activations, left in the arena
//   2. outputs  worker k owns a share of every layer's outputs: their weight gradient over ALL the batch's rows
//               (the all-reduce, done as a reduce-scatter), the optimizer update of their parameters in place
//               (a sharded optimizer step; no thread copies the weights), and their transposed copy
// Because every row's pass and every output's sum over the rows run the same way whatever thread runs them,
// the weights are bit-identical for any --threads.
//
// An epoch is one long-lived task per worker: the workers step together, meeting at two barriers per step in
// the arena (src/control.ts describes the protocol); the coordinator writes the learning rates, starts the
// epoch and observes progress (steps done, per-step sums), with nothing of its own on the critical path.
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
import { arenaLayout, arenaViews, createArenaMemory, splitRange, type ArenaSpec, type ArenaViews } from './memory.js';
import { Control, isPeerAbort } from './control.js';
import type { OptimizerConfig } from './optim.js';
import { resolveKernels, type KernelFamily, type ResolvedKernels } from './kernels/wasm.js';
import { StuckStep, TaskError, WorkerDied } from './errors.js';
import { packageRoot } from './paths.js';
import {
  BARRIER_SPIN_MS, CLOSE_TIMEOUT_MS, LEAVE_MS, POLL_MS, POOL_IDLE_TIMEOUT_MS, STUCK_GRACE_MS, WORKER_HEAP_MB, WORKER_YOUNG_GEN_MB,
} from './tuning.js';
import type { EpochTask, EvalTask, WorkerInit } from '../workers/trainer.js';

/** The one pipeline (the per-step tasks pipeline was removed; see the README's "Pipeline overhead"). */
export type Pipeline = 'lockstep';

export interface CoordinatorOptions {
  spec: ArenaSpec;
  optimizer: OptimizerConfig;
  kernels: 'auto' | KernelFamily;
  /** accepted for the callers that pass the configured value; lockstep is the only pipeline */
  pipeline?: Pipeline;
  mean: number;
  std: number;
  labelSmoothing: number;
  /** augment training images with transforms seeded by (this seed, epoch, image index); null: no augmentation */
  augment?: number | null;
  /** give every thread rows and outputs even when threads outnumber cores (bench scaling, the tests); by default
   *  only as many threads as there are cores get work */
  oversubscribe?: boolean;
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

/** An epoch in flight: one task per worker, which of them have left, and what went wrong. */
class EpochInFlight {
  /** worker k's task has settled */
  readonly left: boolean[];
  /** every task has settled */
  finished = false;
  /** when the workers were told to leave (a task failed, a thread died, a step was given up); null while none */
  abortedAt: number | null = null;
  /** the first error of a worker that failed on its own (not one that left because a peer failed) */
  failure: unknown = null;
  /** every task settled: rejects with the first failure that tells the story */
  all: Promise<void> = Promise.resolve();
  /** `all`, never rejecting: something to wait on */
  quiet: Promise<void> = Promise.resolve();
  /** batches whose sums went to hooks.onStep */
  seen: number;
  /** barrier rounds before the epoch started: two per step tell which phase the threads are in */
  private readonly rounds0: number;

  constructor(private readonly control: Control, private readonly plan: EpochPlan, threads: number) {
    this.left = new Array<boolean>(threads).fill(false);
    this.seen = plan.from;
    this.rounds0 = control.rounds();
  }

  /** The tasks of the workers that have not left yet. */
  waiting(): number[] {
    return this.left.map((_, k) => k).filter((k) => !this.left[k]);
  }

  /** Where the threads are: "in step 40 (forward/backward)". */
  where(): string {
    const done = this.control.stepsDone();
    const rounds = this.control.rounds() - this.rounds0;
    const phase = rounds > 2 * (done - this.plan.from) ? 'reduce + update' : 'forward/backward';
    return `in step ${this.plan.firstT + done - this.plan.from} (${phase})`;
  }

  /** Reports every step finished since the last call, in order. */
  drain(hooks: EpochHooks, stepStat: Float64Array): void {
    const done = this.control.stepsDone();
    for (; this.seen < done; this.seen++) hooks.onStep(this.seen, stepStat[2 * this.seen], stepStat[2 * this.seen + 1]);
  }
}

export class Coordinator {
  readonly views: ArenaViews;
  readonly memory: WebAssembly.Memory;
  readonly threads: number;
  /** the threads that get rows and outputs (partition.ts); the others only pass the barriers */
  readonly active: number;
  /** the kernel family every thread runs, resolved once here so all threads do the same arithmetic */
  readonly family: KernelFamily;
  /** the family with its native path, and why `auto` fell back from native if it did */
  readonly kernels: ResolvedKernels;
  /** the arena's control words: the barrier, the epoch's progress, stop and abort (control.ts) */
  private readonly control: Control;
  private pool: Piscina;
  /** the first worker thread that died; every later task is refused with it */
  private dead: WorkerDied | null = null;
  /** worker threads Piscina removed (they died) while the pool was not being closed */
  private lost = 0;
  private closing = false;
  /** close() in progress or done: a second call waits for the first */
  private closed: Promise<void> | null = null;
  /** the slowest step seen in this run, which scales how long a stop waits for a step */
  private slowestStepMs = 0;
  /** the longest evaluation so far: how long a stop waits for one in progress (3×, at least STUCK_GRACE_MS) */
  private slowestEvalMs = 0;
  /** the epoch in flight, if any */
  private epoch: EpochInFlight | null = null;

  constructor(readonly options: CoordinatorOptions) {
    const layout = arenaLayout(options.spec);
    this.memory = createArenaMemory(layout);
    this.views = arenaViews(this.memory, layout);
    this.control = new Control(this.views.control);
    this.threads = options.spec.threads;
    this.kernels = resolveKernels(options.kernels, this.memory);
    this.family = this.kernels.family;
    // With more threads than cores, only as many threads as there are cores get work in a step (the rest
    // pass the barriers asleep): time-slicing 8 busy threads on 2 cores only adds context switches. Which
    // threads do the work never changes the arithmetic, so the bytes stay the same.
    this.active = options.oversubscribe ? this.threads : Math.min(this.threads, availableParallelism());
    const init: WorkerInit = {
      memory: this.memory, layout, optimizer: options.optimizer, kernels: this.family,
      mean: options.mean, std: options.std, labelSmoothing: options.labelSmoothing, active: this.active,
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
      this.control.abort();
    });
  }

  /** The first worker thread that died, or null. */
  get failure(): WorkerDied | null {
    return this.dead;
  }

  /** Starts the worker threads and waits for one warm-up task per thread (the first tasks wait for the
   *  module, views and kernels of the thread they land on). Call it after setting the parameters: it also
   *  brings the copies the kernels keep of them (the transposed weights) up to date. */
  async ready(): Promise<void> {
    const warmUp = { shard: 0, start: 0, end: 0 };
    await settle(Array.from({ length: this.threads }, () => this.run<EvalTask>('evaluate', warmUp, 'warm-up')));
    await settle(Array.from({ length: this.threads }, (_, k) => this.run<number>('syncWeights', k, `worker ${k}'s outputs`)));
  }

  /** Runs one task. `who` names the worker and `where` says where it was, should its thread die. */
  private async run<T>(name: string, task: T, detail: string, who = `the worker running ${name} (${detail})`,
                       where: () => string = () => ''): Promise<void> {
    if (this.dead) throw this.dead;
    const lost = this.lost;
    try {
      await this.pool.run(task, { name });
    } catch (e) {
      // Piscina removes a thread that died before it rejects that thread's task
      if (this.lost > lost && !isPeerAbort(e)) {
        const died = new WorkerDied(who, where(), causeOf(e));
        this.dead ??= died;
        this.control.abort();
        throw died;
      }
      throw new TaskError(name, detail, e);
    }
  }

  /**
   * Runs the steps of `plan` on every worker; returns the number of the batch after the last one run (plan.to,
   * or earlier when hooks.shouldStop() asked for a stop).
   */
  async runEpoch(plan: EpochPlan, hooks: EpochHooks): Promise<number> {
    // the learning rate of every step, where the workers read it
    for (let b = plan.from; b < plan.to; b++) this.views.lrs[b] = plan.lr(b);
    this.control.startEpoch(plan.from);
    if (this.dead) throw this.dead;
    const epoch = this.startEpoch(plan);
    const stuck = await this.observe(epoch, plan, hooks);
    // the faults, each with the error that tells its story
    if (stuck) throw stuck;
    // a dead thread is the story, whatever its peers said when they left
    if (this.dead) {
      await Promise.race([epoch.quiet, sleep(LEAVE_MS)]);
      throw this.dead;
    }
    if (!epoch.finished) {
      // a thread that does not leave after the abort (it hangs) is abandoned; close() terminates it
      throw this.dead ?? epoch.failure ?? new StuckStep(`a worker did not leave its epoch task ${epoch.where()} after the abort`);
    }
    await epoch.all;
    epoch.drain(hooks, this.views.stepStat);
    return epoch.seen;
  }

  /** Dispatches the epoch's task to every worker: task k makes its worker participant k. */
  private startEpoch(plan: EpochPlan): EpochInFlight {
    const epoch = new EpochInFlight(this.control, plan, this.threads);
    const steps = `steps ${plan.firstT}..${plan.firstT + plan.to - plan.from - 1}`;
    const where = () => epoch.where();
    const tasks = Array.from({ length: this.threads }, (_, k) => {
      const task: EpochTask = {
        from: plan.from, to: plan.to, batchSize: plan.batchSize, trainCount: plan.trainCount, firstT: plan.firstT,
        epoch: plan.epoch, participant: k,
      };
      return this.run('runEpoch', task, steps, `worker ${k}`, where).catch((e: unknown) => {
        // a failed thread may leave its peers waiting for it: wake them all
        epoch.abortedAt ??= performance.now();
        if (!isPeerAbort(e)) epoch.failure ??= e;
        this.control.abort();
        throw e;
      }).finally(() => {
        epoch.left[k] = true;
      });
    });
    this.epoch = epoch;
    epoch.all = settle(tasks).finally(() => {
      epoch.finished = true;
      this.epoch = null;
    });
    epoch.quiet = epoch.all.catch(() => undefined);
    return epoch;
  }

  /**
   * Watches the epoch, off the workers' critical path (a look every 20 ms is plenty for metrics and the UI),
   * until its tasks have settled or it is given up: reports the finished steps, passes a stop request on, and
   * gives up on a step that the stop waits for in vain (then returns the StuckStep to throw).
   */
  private async observe(epoch: EpochInFlight, plan: EpochPlan, hooks: EpochHooks): Promise<StuckStep | null> {
    let stopAt: number | null = null;
    let stuck: StuckStep | null = null;
    let progressAt = performance.now();
    let doneBefore = plan.from;
    while (!epoch.finished) {
      await Promise.race([epoch.quiet, sleep(POLL_MS)]);
      const now = performance.now();
      const done = this.control.stepsDone();
      if (done > doneBefore) {
        if (doneBefore > plan.from) this.slowestStepMs = Math.max(this.slowestStepMs, (now - progressAt) / (done - doneBefore));
        doneBefore = done;
        progressAt = now;
      }
      epoch.drain(hooks, this.views.stepStat);
      if (this.dead && epoch.abortedAt === null) epoch.abortedAt = now; // a thread died after its reply (the pool's 'error')
      if (hooks.shouldStop() && epoch.abortedAt === null) {
        this.control.requestStop();
        stopAt ??= now;
        // the stop is honoured at the end of the step in progress; a step that does not end has a stuck thread
        const grace = Math.max(STUCK_GRACE_MS, 3 * this.slowestStepMs);
        if (now - stopAt > grace && now - progressAt > grace) stuck = await this.giveUp(epoch, grace, now);
      }
      if (epoch.abortedAt !== null && !epoch.finished && now - epoch.abortedAt >= LEAVE_MS) break;
    }
    return stuck;
  }

  /** Gives up on the step in progress after `grace` ms: aborts, lets the threads leave, names the missing. */
  private async giveUp(epoch: EpochInFlight, grace: number, now: number): Promise<StuckStep> {
    const at = epoch.where();
    const waiting = epoch.waiting();
    epoch.abortedAt = now;
    this.control.abort();
    await Promise.race([epoch.quiet, sleep(LEAVE_MS)]);
    const missing = waiting.filter((k) => !epoch.left[k]);
    return new StuckStep(`the step in progress did not finish within ${(grace / 1000).toFixed(1)} s: ` +
      `${missing.length > 0 ? missing.map((k) => `worker ${k}`).join(', ') : 'a worker'} never reached the barrier ${at}`);
  }

  /** Loss and accuracy on the test set held in the arena, data-parallel: one task of test rows per thread. */
  async evaluate(shouldStop: () => boolean = () => false): Promise<{ loss: number; accuracy: number }> {
    const n = this.options.spec.testCount;
    const t0 = performance.now();
    const pending = new Set<string>();
    let finished = false;
    const all = settle(Array.from({ length: this.threads }, (_, s) => {
      const [a, b] = splitRange(n, this.threads, s);
      const label = `test rows ${a}..${b}`;
      pending.add(label);
      return this.run<EvalTask>('evaluate', { shard: s, start: a, end: b }, label).finally(() => pending.delete(label));
    })).finally(() => {
      finished = true;
    });
    const quiet = all.catch(() => undefined);
    // A stop request is honoured after the evaluation, as after a step; an evaluation that then does not end
    // (a thread hangs) is given up as a stuck step is: the threads are terminated by close().
    let stopAt: number | null = null;
    while (!finished) {
      await Promise.race([quiet, sleep(POLL_MS)]);
      if (finished || !shouldStop()) continue;
      const now = performance.now();
      stopAt ??= now;
      const grace = Math.max(STUCK_GRACE_MS, 3 * this.slowestEvalMs);
      if (now - stopAt > grace) {
        throw new StuckStep(`the evaluation in progress did not finish within ${(grace / 1000).toFixed(1)} s: ` +
          `the worker${pending.size === 1 ? '' : 's'} evaluating ${[...pending].join(', ')} never returned`);
      }
    }
    await all;
    this.slowestEvalMs = Math.max(this.slowestEvalMs, performance.now() - t0);
    let lossSum = 0;
    let correct = 0;
    for (let s = 0; s < this.threads; s++) {
      lossSum += this.views.evalStat[2 * s];
      correct += this.views.evalStat[2 * s + 1];
    }
    return { loss: lossSum / n, accuracy: correct / n };
  }

  /** Terminates the worker threads; gives up after 5 s on one that cannot be terminated (a native loop). */
  async close(): Promise<void> {
    this.closed ??= (async () => {
      this.closing = true;
      await Promise.race([this.pool.destroy(), sleep(CLOSE_TIMEOUT_MS, false)]);
    })();
    await this.closed;
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
  // a worker that stopped only because a peer failed is not the story: report the peer's error
  const cause = failed.find((e) => !isPeerAbort(e)) ?? failed[0];
  if (cause !== undefined) throw cause;
}
