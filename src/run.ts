// `mnist-par train`: a training run with its console reporter, interruption handling and summary.
import type { Config } from './config.js';
import { train } from './train.js';
import { createReporter } from './ui/reporter.js';

export async function runTraining(cfg: Config): Promise<number> {
  const stop: { how: 'q' | 'SIGINT' | null } = { how: null };
  const reporter = createReporter({
    mode: cfg.json ? 'json' : cfg.dashboard ? 'auto' : 'plain',
    logEvery: cfg.logEvery,
    onInterrupt: (how) => {
      stop.how ??= how;
    },
  });
  try {
    const r = await train(cfg, reporter, stop);
    const last = r.epochs[r.epochs.length - 1];
    const why = r.stoppedBy === 'completed' ? `finished ${r.epochs.length} epochs` : `stopped by ${r.stoppedBy} after ${r.epochs.length} complete epochs`;
    const acc = last ? `, test accuracy ${(100 * last.valAccuracy).toFixed(2)}%, test loss ${last.valLoss.toFixed(4)}` : '';
    reporter.finish(r.snapshot, [`mnist-par: ${why} in ${r.seconds.toFixed(1)} s${acc}`, `wrote ${r.files.join(', ')}`],
    );
    return r.stoppedBy === 'SIGINT' ? 130 : 0;
  } finally {
    reporter.close();
  }
}
