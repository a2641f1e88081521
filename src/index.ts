// mnist-par as a library: `import { train, loadModel } from 'mnist-par'`. See api.ts and the README's
// "Library" section.
export { loadModel, train } from './api.js';
export type {
  AbortSignalLike, Config, ConfigFields, EpochRecord, EvalReport, EvaluateOptions, Model, ModelSummary, Prediction, Snapshot,
  SummaryOptions, TrainOptions, TrainResult,
} from './api.js';
export { UsageError, UserError } from './errors.js';
