// Standard output and standard error that go away: a reader that left (`| head -1`) or an output that fails
// (a full disk). Writing there makes Node emit an 'error' event on the stream (EPIPE, ENOSPC), again at every
// later write, and an 'error' event that nobody listens to is an uncaught exception: a stack trace, exit 1,
// and for a training run no checkpoint. So each stream gets one listener for the life of the process
// (watchOutputs), which remembers that the stream failed and tells whoever watches it (onOutputFailure): a
// training run's reporter stops the run after its step, saves, and exits 141 (log.ts, dashboard.ts, run.ts).
// What happens when nobody watches is the program's choice (whenUnwatched): the command line ends at once
// with 141, as a shell reports a process that SIGPIPE ended; the library ignores it.

import type { OutputStream as Stream } from './types.js';

type Failure = (stream: Stream, err: WriteError) => void;
/** How a write failed: EPIPE (the reader left), ENOSPC (a full disk), … */
type WriteError = Error & { code?: string };

const failed = new WeakMap<Stream, WriteError>();
const watched = new WeakSet<Stream>();
const watchers = new Set<{ streams: readonly Stream[]; onFailure: Failure }>();
let unwatched: Failure = () => {};

/** Installs the 'error' listener on each stream (once per stream; never a throw from it). */
export function watchOutputs(streams: readonly Stream[]): void {
  for (const stream of streams) {
    if (watched.has(stream) || typeof stream.on !== 'function') continue;
    watched.add(stream);
    stream.on('error', (err) => {
      if (failed.has(stream)) return; // every later write fails again: told once
      failed.set(stream, err);
      const told = [...watchers].filter((w) => w.streams.includes(stream));
      if (told.length === 0) unwatched(stream, err);
      for (const w of told) w.onFailure(stream, err);
    });
  }
}

/** Calls `onFailure` when one of `streams` fails, until the returned function is called. */
export function onOutputFailure(streams: readonly Stream[], onFailure: Failure): () => void {
  watchOutputs(streams);
  const w = { streams, onFailure };
  watchers.add(w);
  return () => {
    watchers.delete(w);
  };
}

/** What happens when a stream fails that nobody watches (the command line: exit 141). */
export function whenUnwatched(onFailure: Failure): void {
  unwatched = onFailure;
}

/** The stream has failed: nothing written to it arrives any more. */
export function outputFailed(stream: Stream): boolean {
  return failed.has(stream);
}

/** The stream's name for a message: "standard output", "standard error", or "the output". */
export function outputName(stream: Stream): string {
  return stream === process.stdout ? 'standard output' : stream === process.stderr ? 'standard error' : 'the output';
}

/** How it failed, for a message: "was closed" (EPIPE) or "failed (ENOSPC)". */
export function howItFailed(err: WriteError): string {
  return err.code === 'EPIPE' ? 'was closed' : `failed (${err.code ?? err.message})`;
}
