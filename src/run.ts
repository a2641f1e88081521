// `mnist-par train`: a training run with its console reporter, interruption handling and summary.
import type { Checkpoint } from './checkpoint.js';
import type { Config } from './config.js';
import { StuckStep } from './errors.js';
import { abandonRunFolders } from './runs.js';
import { train, type StopRequest } from './train.js';
import { summaryLines } from './ui/format.js';
import { terminalProgress } from './ui/progress.js';
import { createReporter, type Reporter } from './ui/reporter.js';

export async function runTraining(cfg: Config, resume?: Checkpoint): Promise<number> {
  const stop: { how: StopRequest | null } = { how: null };
  // SIGTERM (a scheduler, `kill`): once training runs, finish the step, save a checkpoint, exit 143;
  // before that (downloading, loading) there is nothing to save: leave at once
  let training = false;
  // stdout or stderr went away (SIGPIPE, see ui/outputs.ts): whatever else ends the run, its output was lost
  let outputLost = false;
  const request = (how: StopRequest) => {
    if (how === 'SIGPIPE') outputLost = true;
    if (!training) {
      reporter.close();
      abandonRunFolders();
      process.stderr.write(`mnist-par: stopped by ${how} before training started\n`);
      process.exit(exitCode(how));
    }
    stop.how ??= how;
  };
  const onTerm = () => request('SIGTERM');
  const reporter = createReporter({
    mode: cfg.json ? 'json' : cfg.dashboard ? 'auto' : 'plain',
    logEvery: cfg.logEvery,
    onInterrupt: request,
  });
  process.on('SIGTERM', onTerm);
  try {
    const tracked: Reporter = {
      start: (snap) => {
        training = true;
        reporter.start(snap);
      },
      step: (snap) => reporter.step(snap),
      epoch: (snap, e) => reporter.epoch(snap, e),
      finish: (snap, lines) => reporter.finish(snap, lines),
      close: () => reporter.close(),
    };
    const r = await train(cfg, tracked, stop, { resume, progress: cfg.json ? undefined : terminalProgress('reading images') });
    reporter.finish(r.snapshot, summaryLines(r));
    const code = exitCode(r.stoppedBy);
    return outputLost && code === 0 ? exitCode('SIGPIPE') : code;
  } catch (e) {
    // a stop that the step in progress could not honour: a thread hangs; it was terminated, nothing saved
    if (!(e instanceof StuckStep)) throw e;
    reporter.close();
    const why = `${e.message}; it was terminated and nothing was saved after the last checkpoint`;
    process.stderr.write(stop.how ? `mnist-par: stopped by ${stop.how}, but ${why}\n` : `mnist-par: training stopped: ${why}\n`);
    return stop.how ? exitCode(stop.how) : 1;
  } finally {
    process.off('SIGTERM', onTerm);
    reporter.close();
  }
}

function exitCode(stoppedBy: string): number {
  // 128 + the signal's number, as a shell reports a process the signal ended
  return stoppedBy === 'SIGINT' ? 130 : stoppedBy === 'SIGTERM' ? 143 : stoppedBy === 'SIGPIPE' ? 141 : 0;
}
