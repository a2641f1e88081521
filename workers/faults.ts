// Fault injection for the tests of failure handling, read once from the environment when a worker loads.
// MNIST_PAR_INJECT_FAULT="TASK:STEP[:WHERE][:MODE]":
//   TASK   forwardBackward  the rows' half of step STEP (forward/backward); WHERE: the worker (participant) k
//          reduceStep       the outputs' half of step STEP (reduce + update); WHERE: the worker k
//          evaluate         an evaluation after training step STEP (0: before any, the warm-up tasks of
//                           task 0 included); WHERE: the evaluation task
//          without WHERE every worker (with rows, or outputs) or evaluation task of that step is hit
//   MODE   throw  (default) the task throws an Error: the ordinary failure, reported by the worker itself
//          exit   process.exit(7) in the worker thread: it dies mid-step, telling nobody
//          crash  an uncaught error outside the task (a queued microtask): the thread dies before it replies
//          hang   the thread blocks forever (Atomics.wait on a private word), alive but never arriving
//          oom    the thread allocates until it hits its heap limit (resourceLimits) and is terminated
// "load:N": the N-th worker thread to start (0-based, counting replacements) and every later one fail while
// loading the worker module, before any task.
type FaultMode = 'throw' | 'exit' | 'crash' | 'hang' | 'oom';
interface Fault { task: string; step: number; where: number | null; mode: FaultMode }

const MODES: readonly string[] = ['throw', 'exit', 'crash', 'hang', 'oom'];

function parseFault(spec: string | undefined): Fault | null {
  if (!spec) return null;
  const parts = spec.split(':');
  const mode = (parts.length > 2 && MODES.includes(parts[parts.length - 1]) ? parts.pop() : 'throw') as FaultMode;
  const [task, step, where] = parts;
  return { task, step: Number(step), where: where === undefined ? null : Number(where), mode };
}

const fault = parseFault(process.env.MNIST_PAR_INJECT_FAULT);

/** Thrown by the "crash" fault: the thread leaves its task at once, without a word to its peers, and dies.
 *  The task's entry point, catching one, returns vanished(). */
export class Vanish extends Error {}

/**
 * What a task returns when its thread vanishes: a promise that never settles, so the task never replies.
 * Were it to reply, Piscina would go on to wait for the next task in Atomics.wait, and a thread whose
 * termination (for the queued error) lands just before that wait sleeps there for ever, keeping the process
 * alive after the pool is destroyed.
 */
export function vanished(): Promise<never> {
  return new Promise<never>(() => undefined);
}

/** Fails the `thread`-th worker thread to start while it loads, if so asked ("load:N"). */
export function injectLoadFault(thread: number): void {
  if (fault?.task === 'load' && thread >= fault.step) {
    throw new Error(`injected fault: worker thread ${thread} fails while loading, by MNIST_PAR_INJECT_FAULT`);
  }
}

/** Injects the configured fault if it names this task, step and place; otherwise returns at once. */
export function injectFault(task: string, step: number, where: number): void {
  if (!fault || fault.task !== task || fault.step !== step || (fault.where !== null && fault.where !== where)) return;
  const what = `injected ${fault.mode} in ${task} at step ${step} (${where}) by MNIST_PAR_INJECT_FAULT`;
  switch (fault.mode) {
    case 'throw':
      throw new Error(`injected fault in ${task} at step ${step} (${where}) by MNIST_PAR_INJECT_FAULT`);
    case 'exit':
      process.exit(7);
      break;
    case 'crash':
      // the thread dies as soon as its task has left: its task never replies (vanished()), so the coordinator
      // sees the task rejected when the thread exits
      queueMicrotask(() => {
        throw new Error(what);
      });
      throw new Vanish();
    case 'hang':
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      break;
    case 'oom': {
      // plain JS arrays live on the worker's heap (typed arrays would not count against its limit)
      const hog: number[][] = [];
      for (;;) hog.push(new Array<number>(1 << 16).fill(0.5));
    }
  }
}
