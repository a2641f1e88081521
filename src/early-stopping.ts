// Early stopping (--patience, --min-delta, --monitor): after every epoch, did the monitored validation metric
// improve by more than min-delta? After `patience` epochs without, the run stops and says why. The
// bookkeeping (EarlyStopState) is part of the checkpoint, so a resumed run counts on where it left off.
import type { EarlyStopState, TrainState } from './checkpoint.js';
import type { Config } from './config.js';
import type { EpochRecord } from './metrics.js';
import { plural } from './ui/format.js';

export const NO_EARLY_STOP_YET: Readonly<EarlyStopState> = { best: null, bestEpoch: 0, epochsWithoutImprovement: 0 };

/** After an epoch: updates `e`; returns the reason to stop, or null. */
export function earlyStop(cfg: Config, e: EarlyStopState, rec: EpochRecord): string | null {
  const value = cfg.monitor === 'val_loss' ? rec.valLoss : rec.valAccuracy;
  const better = e.best === null || (cfg.monitor === 'val_loss' ? value < e.best - cfg.minDelta : value > e.best + cfg.minDelta);
  if (better) {
    e.best = value;
    e.bestEpoch = rec.epoch;
    e.epochsWithoutImprovement = 0;
    return null;
  }
  e.epochsWithoutImprovement++;
  if (cfg.patience === 0 || e.epochsWithoutImprovement < cfg.patience) return null;
  return stopReason(cfg, e);
}

function stopReason(cfg: Config, e: EarlyStopState): string {
  const what = cfg.monitor === 'val_loss' ? 'validation loss' : 'validation accuracy';
  return `stopped early: ${what} did not improve by more than ${cfg.minDelta} for ${plural(cfg.patience, 'epoch')} ` +
    `(best ${e.best === null ? '–' : e.best.toFixed(4)} at epoch ${e.bestEpoch})`;
}

/**
 * Why the run of a checkpoint has already ended by early stopping under `cfg`'s settings (a larger
 * --patience lets it go on), or null: such a checkpoint has nothing left to resume.
 */
export function finishedEarly(cfg: Config, st: TrainState): string | null {
  const e = st.early;
  if (st.batch > 0 || cfg.patience === 0 || cfg.monitor !== st.config.monitor || e.epochsWithoutImprovement < cfg.patience) return null;
  return stopReason(cfg, e);
}
