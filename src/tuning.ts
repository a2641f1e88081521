// The timing and memory knobs of the pool and its barriers, in one place: none changes what is computed,
// only how fast and how patiently. Each says why it has the value it has.

// ── the barrier (src/control.ts) ───────────────────────────────────────────────────────────────────────
/** Milliseconds a thread spins at a barrier before it sleeps, when every thread has a core of its own (with
 *  more threads than cores it sleeps at once): 2 ms covers the usual skew between threads at the end of a
 *  phase, and waking from Atomics.wait (a futex) costs 50-100 µs in a VM. */
export const BARRIER_SPIN_MS = 2;
/** Milliseconds of one Atomics.wait at a barrier: between slices a sleeping thread checks the abort word,
 *  so a thread that died is noticed within this time even if no one notifies. */
export const BARRIER_WAIT_SLICE_MS = 200;

// ── the coordinator (src/coordinator.ts) ────────────────────────────────────────────────────────────────
/** Milliseconds between two looks of the coordinator at the arena during an epoch (off the workers'
 *  critical path; plenty for metrics and the UI). */
export const POLL_MS = 20;
/** A stop request that no step finishes for this long (and 3× the slowest step seen) gives up on the step. */
export const STUCK_GRACE_MS = 500;
/** After the abort word is set, how long the threads get to leave before they are abandoned (and terminated). */
export const LEAVE_MS = 250;
/** How long close() waits for the pool to terminate before giving up on a thread that cannot be (a native loop). */
export const CLOSE_TIMEOUT_MS = 5000;
/** An idle pool thread is kept this long (the pool is sized once per run, so this only matters between runs). */
export const POOL_IDLE_TIMEOUT_MS = 60_000;

// ── the live figures (src/throughput.ts) ───────────────────────────────────────────────────────────────
/** The throughput is reported only once its window spans this many milliseconds
 *  of the epoch's training: the coordinator sees steps every POLL_MS, in bursts, so each step's time is late
 *  by up to POLL_MS, and over a shorter window the figure measures the polling (the first ones read 0, then
 *  several hundred thousand samples/s). Over 250 ms that error stays under 8%. */
export const THROUGHPUT_MIN_WINDOW_MS = 250;
/** How far back the live figures look: long enough to smooth out single steps, short enough to follow changes. */
export const THROUGHPUT_WINDOW_MS = 2000;

// ── a worker thread's heap (Piscina resourceLimits) ─────────────────────────────────────────────────────
/** The young generation of a worker thread, in MB: workers allocate almost nothing per step, so a small one
 *  keeps each thread's heap small. */
export const WORKER_YOUNG_GEN_MB = 2;
/** The old-generation heap of a worker thread, in MB: it keeps only views and small caches (a few MB); a
 *  runaway thread is stopped with ERR_WORKER_OUT_OF_MEMORY instead of taking the machine's memory. */
export const WORKER_HEAP_MB = 256;

// ── the run's outputs (src/run-outputs.ts) ──────────────────────────────────────────────────────────────
/** Milliseconds between two refreshes of the PNG charts after an epoch (they are always drawn after the last
 *  one): drawing both costs 0.1-0.2 s of CPU, as much as a tenth of a short epoch. */
export const CHART_REFRESH_MS = 10_000;

// ── the command line (src/cli.ts) ───────────────────────────────────────────────────────────────────────
/** Milliseconds after a command is done before the process is ended if something still holds it open (a
 *  crashed worker thread can leave the pool with an open message port). */
export const EXIT_GRACE_MS = 1000;

/** Activations evaluation may hold across all its threads (floats; 256 MB): a cnn with many channels gets fewer
 *  images per chunk (eval/command.ts evalRows) instead of a shared memory that does not fit. */
export const EVAL_ACTIVATION_FLOATS = 64 << 20;
