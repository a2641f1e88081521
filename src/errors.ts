// Errors the user can act on. The CLI prints `mnist-par: <message>` on one line and exits with `exitCode`;
// anything else that escapes is a bug and is reported as such.
import { fmtBytes } from './ui/format.js';

export class UserError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'UserError';
  }
}

/** A flag or configuration value that is not accepted: exit code 2, as for any usage error. */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}

/**
 * A write that found its disk full (ENOSPC): names the file, the space it needed and the space left there
 * (null: unknown). `appending`: the bytes were to be added to an existing file.
 */
export class DiskFull extends UserError {
  readonly code = 'ENOSPC';
  constructor(readonly path: string, readonly bytes: number, readonly free: number | null, appending = false) {
    super(`${path}: cannot write it: the disk is full (ENOSPC); ${appending ? 'appending to it needed' : 'the file needs'} ` +
      `${fmtBytes(bytes)}${free !== null ? ` and the disk has ${fmtBytes(free)} free` : ''}; ` +
      'free some space on that disk or write to a folder on another one');
    this.name = 'DiskFull';
  }
}

/** A worker task failed: the message names the task and its indices. */
export class TaskError extends Error {
  constructor(readonly task: string, readonly detail: string, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    // the lockstep worker names the failing shard or slice itself: "forwardBackward (step 5, shard 2) failed: …"
    super(task === 'runEpoch' && /^\w+ \(.*\) failed: /.test(why) ? `worker task ${why}` : `worker task ${task} (${detail}) failed: ${why}`);
    this.name = 'TaskError';
  }
}

/**
 * Text read from a file (a tensor name, a JSON parser's complaint quoting the file), fit for a one-line
 * message: returned as is when it is short and printable, otherwise escaped as a JSON string and cut to `max`
 * characters, so no newline or terminal control sequence from the file reaches stderr.
 */
export function printable(text: string, max = 80): string {
  if (text.length <= max && /^[\x20-\x7e]*$/.test(text)) return text;
  const escaped = JSON.stringify(text).slice(1, -1).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return escaped.length <= max ? `"${escaped}"` : `"${escaped.slice(0, max)}"…`;
}

/** A worker thread died (it exited, crashed or hit its heap limit): `who` (worker 1), `where` (in step 5
 *  (forward/backward)), `why` (it exited with code 7). The weights may be torn: nothing is saved after it. */
export class WorkerDied extends Error {
  constructor(readonly who: string, readonly where: string, readonly why: string) {
    super(`${who} died${where ? ' ' + where : ''}: ${why}`);
    this.name = 'WorkerDied';
  }
}

/** A stop was requested but the step in progress never finished (a thread hangs): given up, nothing saved. */
export class StuckStep extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StuckStep';
  }
}
