// What a training run asks of the shared arena (memory.ts lays it out): the one place that turns a
// configuration and the dataset's sizes into an ArenaSpec, so that `train` builds and `summary` reports the
// same arena.
import { modelSpec, optimizerConfig, type Config } from './config.js';
import type { SplitSizes } from './data/datasets.js';
import { trainingEvalRows, type ArenaSpec } from './memory.js';
import { optimizerStateCount } from './optim.js';


/**
 * The arena of a training run of `cfg` on splits of these sizes: --limit-train and --limit-test applied,
 * activations for a whole batch (evaluation shares them among the threads in chunks, trainingEvalRows).
 */
export function trainingArenaSpec(cfg: Config, sizes: SplitSizes): ArenaSpec {
  const trainCount = cfg.limitTrain > 0 ? Math.min(cfg.limitTrain, sizes.train) : sizes.train;
  const testCount = cfg.limitTest > 0 ? Math.min(cfg.limitTest, sizes.test) : sizes.test;
  return {
    model: modelSpec(cfg, sizes.classes), threads: cfg.threads, batchRows: cfg.batchSize,
    evalRows: trainingEvalRows(cfg.batchSize, cfg.threads),
    optimizerStates: optimizerStateCount(optimizerConfig(cfg)),
    stepsPerEpoch: Math.ceil(trainCount / cfg.batchSize), trainCount, testCount, pixels: sizes.pixels,
  };
}
