// `mnist-par summary`: the table of summary.ts for the network the flags describe, or for a model file's.
import { flagName, validate } from './config.js';
import { UsageError } from './errors.js';
import { loadModel } from './predict.js';
import { formatSummary, modelSummary, specFields, type ModelSummary } from './summary.js';

export interface SummaryOptions {
  /** a model file to read the network from; otherwise the network `given` names */
  file?: string;
  /** the configuration values given (model, hidden, channels, batchSize, threads, optimizer) */
  given: Record<string, unknown>;
  json: boolean;
}

/** `mnist-par summary`: prints the table (or one JSON object) of the configured network or a model file's. */
export async function summaryCommand(opts: SummaryOptions): Promise<ModelSummary> {
  const given = { ...opts.given };
  if (opts.file !== undefined) {
    for (const key of ['hidden', 'channels'] as const) {
      if (given[key] !== undefined) {
        throw new UsageError(`${flagName(key)}: the network comes from ${opts.file}; leave ${flagName(key)} out, ` +
          'or give --model mlp or --model cnn instead of a file');
      }
    }
    const model = await loadModel(opts.file);
    Object.assign(given, specFields(model.spec), model.dataset ? { dataset: model.dataset } : {});
  }
  const s = modelSummary(validate(given));
  const lines = opts.file === undefined ? formatSummary(s) : [`${opts.file}: ${s.network}`, ...formatSummary(s).slice(1)];
  process.stdout.write(opts.json ? JSON.stringify(s) + '\n' : lines.join('\n') + '\n');
  return s;
}
