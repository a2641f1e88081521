// The arena's control words and the barrier the workers step through: the whole protocol between the
// coordinator and the worker threads, in one place. Every word is an Int32 read and written only with
// Atomics (sequentially consistent), so a plain value written before an Atomics store is visible to whoever
// reads that word with Atomics.load afterwards.
//
//   NEXT_THREAD  each worker thread claims its index once, when it loads (Atomics.add); Piscina starts
//                exactly `threads` of them, so the first `threads` indices are 0..threads−1
//   BAR_COUNT    threads arrived at the barrier in the current round
//   BAR_GEN      the round's generation; only ever incremented
//   STEPS_DONE   batches of the current epoch finished: the index of the next batch
//   STOP         1: the coordinator asks the workers to stop after the step in progress
//   STOP_AFTER   the batch after which every worker stops, agreed at a barrier (−1: none)
//   ABORT        1: a worker failed, or the coordinator gave up on one; everybody leaves
//
// One epoch, per worker (`threads` of them, one long-lived task each), batch b after batch b:
//   its rows: forward/backward → barrier (the last to arrive sums the step's loss and accuracy)
//   → its outputs: weight gradients over all rows (the reduce) + update → barrier (the last to arrive sets STEPS_DONE = b + 1 and, if
//   STOP is set, STOP_AFTER = b) → all leave when STOP_AFTER = b, so they stop after the same step.
//
// The barrier: a thread adds 1 to BAR_COUNT; the one that makes it `threads` resets it to 0, runs the
// round's serial work alone (the others are still waiting), then increments BAR_GEN and wakes the sleepers.
// The others wait for BAR_GEN to change: spinning for up to spinMs first (waking from Atomics.wait costs
// 50-100 µs in a VM), then sleeping in Atomics.wait in slices of BARRIER_WAIT_SLICE_MS (tuning.ts).
//
// Failure: ABORT is set together with an increment of BAR_GEN and a notify, which releases every thread
// waiting at the barrier; a thread that finds ABORT set (arriving, or released) leaves with PeerAbort. A
// worker that fails sets it before it reports; the coordinator sets it when a thread died (it tells no one)
// or when a stop cannot wait for a thread that never arrives.
//
// The coordinator owns the epoch's start: before it dispatches the workers' tasks it resets every word
// except NEXT_THREAD and BAR_GEN (startEpoch). It then only reads STEPS_DONE (progress; the step sums of
// batches below it are final) and BAR_GEN (two rounds per step: which phase the threads are in).
import { BARRIER_WAIT_SLICE_MS } from './tuning.js';
export const CONTROL_INTS = 16;

const NEXT_THREAD = 0;
const BAR_COUNT = 1;
const BAR_GEN = 2;
const STEPS_DONE = 3;
const STOP = 4;
const ABORT = 5;
const STOP_AFTER = 6;

const PEER_ABORT = 'aborted: another worker failed';

/** Thrown in the workers that did not fail, so the coordinator can report the one that did. */
export class PeerAbort extends Error {
  constructor() {
    super(PEER_ABORT);
  }
}

/** Whether a task's error (also as it arrives from a worker thread, where only its message survives) is a
 *  PeerAbort: a worker that left only because a peer failed, which is never the story. */
export function isPeerAbort(e: unknown): boolean {
  return String((e as Error)?.message).includes(PEER_ABORT);
}

/** The control words of one arena, as the coordinator and every worker see them. */
export class Control {
  constructor(private readonly words: Int32Array) {
    if (words.length < CONTROL_INTS) throw new RangeError(`the control region holds ${words.length} words, not ${CONTROL_INTS}`);
  }

  // ---- coordinator ----

  /** Resets the words for an epoch whose first batch is `from`; call before dispatching its tasks. */
  startEpoch(from: number): void {
    const w = this.words;
    Atomics.store(w, STEPS_DONE, from);
    Atomics.store(w, STOP, 0);
    Atomics.store(w, STOP_AFTER, -1);
    Atomics.store(w, ABORT, 0);
    Atomics.store(w, BAR_COUNT, 0);
  }

  /** Asks the workers to stop after the step in progress. */
  requestStop(): void {
    Atomics.store(this.words, STOP, 1);
  }

  /** Batches of the epoch finished (the next batch's index). */
  stepsDone(): number {
    return Atomics.load(this.words, STEPS_DONE);
  }

  /** Barrier rounds completed since the words were created (two per step; an abort adds one). */
  rounds(): number {
    return Atomics.load(this.words, BAR_GEN);
  }

  /** Sets ABORT and releases every thread waiting at the barrier: they leave their epoch with PeerAbort. */
  abort(): void {
    Atomics.store(this.words, ABORT, 1);
    Atomics.add(this.words, BAR_GEN, 1);
    Atomics.notify(this.words, BAR_GEN);
  }

  // ---- workers ----

  /** This thread's index, claimed once when the worker loads (0..threads−1; replacements count on). */
  claimThread(): number {
    return Atomics.add(this.words, NEXT_THREAD, 1);
  }

  /** Serial work of the second barrier of batch b: the step is done; a pending stop request becomes
   *  "stop after b" for every worker. */
  finishStep(b: number): void {
    Atomics.store(this.words, STEPS_DONE, b + 1);
    if (Atomics.load(this.words, STOP) !== 0) Atomics.store(this.words, STOP_AFTER, b);
  }

  /** After the second barrier of batch b: whether the workers agreed to stop here. */
  stopsAfter(b: number): boolean {
    return Atomics.load(this.words, STOP_AFTER) === b;
  }

  /** Throws PeerAbort when ABORT is set. */
  checkAbort(): void {
    if (Atomics.load(this.words, ABORT) !== 0) throw new PeerAbort();
  }

  /**
   * Waits until all `parties` threads have arrived. The last to arrive runs `serial(arg)` alone while the
   * others wait, then releases the round. Spins for up to `spinMs` before sleeping, so oversubscribed threads
   * (spinMs 0) never burn the cores the working ones need. Throws PeerAbort when ABORT is set.
   */
  barrier(parties: number, spinMs: number, serial: ((arg: number) => void) | null, arg: number): void {
    const w = this.words;
    this.checkAbort();
    const gen = Atomics.load(w, BAR_GEN);
    if (Atomics.add(w, BAR_COUNT, 1) === parties - 1) {
      Atomics.store(w, BAR_COUNT, 0);
      if (serial) serial(arg);
      Atomics.add(w, BAR_GEN, 1);
      Atomics.notify(w, BAR_GEN);
      return;
    }
    const spinUntil = performance.now() + spinMs;
    let spinning = spinMs > 0;
    let polls = 0;
    while (Atomics.load(w, BAR_GEN) === gen) {
      if (spinning) {
        // the clock is read every 256 polls
        if ((++polls & 255) === 0 && performance.now() >= spinUntil) spinning = false;
        continue;
      }
      Atomics.wait(w, BAR_GEN, gen, BARRIER_WAIT_SLICE_MS);
      // a worker that arrives after a peer failed is never released: it notices the abort word instead
      this.checkAbort();
    }
    // an abort also bumps the generation to wake everyone: then leave instead of going on
    this.checkAbort();
  }
}
