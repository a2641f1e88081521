// A progress line for slow loads (an image folder given to --data): "reading images 4,000/10,000 (40%)",
// rewritten in place on a terminal's standard error at most every 100 ms, and nothing at all when standard
// error is not a terminal (a pipe, a CI log), where the run's own lines say what was read.
import type { Progress } from '../data/folder.js';
import { fmtInt } from './format.js';

const REFRESH_MS = 100;

/** A Progress that draws `label done/total (p%)` on stderr when it is a terminal; undefined otherwise. */
export function terminalProgress(label: string, stream: NodeJS.WriteStream = process.stderr): Progress | undefined {
  if (!stream.isTTY) return undefined;
  let last = 0;
  return (done, total) => {
    const now = Date.now();
    const end = done >= total;
    if (!end && now - last < REFRESH_MS) return;
    last = now;
    const pct = total > 0 ? Math.floor((100 * done) / total) : 100;
    // the line is cleared when the load ends: what comes next starts on a clean line
    stream.write(end ? '\r\x1b[K' : `\r${label} ${fmtInt(done)}/${fmtInt(total)} (${pct}%)\x1b[K`);
  };
}
