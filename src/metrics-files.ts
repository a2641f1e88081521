// The run's metrics CSVs on disk, batch_metrics.csv and epoch_metrics.csv (formats in metrics.ts).
//
// They grow with the run, so they are appended to, never rewritten: after each epoch its batch rows and its
// epoch row, and at an interruption the batch rows of the epoch so far; each append is flushed to disk
// before the checkpoint of the same moment is saved, so a checkpoint never runs ahead of its metrics. A
// resumed run first cuts the files back to its checkpoint (rows written after it, by a run that then crashed
// or was killed, are of steps that will run again) and reads them back for the charts.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from './errors.js';
import { appendFileSynced, writeFileAtomic } from './fsutil.js';
import { BATCH_CSV_HEADER, EPOCH_CSV_HEADER, batchCsvRows, epochCsvRows, type BatchRecord, type EpochRecord } from './metrics.js';
import { parseBatchCsv, parseEpochCsv } from './ui/csv.js';

export const BATCH_CSV = 'batch_metrics.csv';
export const EPOCH_CSV = 'epoch_metrics.csv';

/** Where a resumed run's metrics so far are: the folder of its checkpoint, and the checkpoint's position. */
export interface ResumePoint {
  dir: string;
  /** optimizer steps done: batch rows up to this step are kept */
  step: number;
  /** the epoch in progress or next: epoch rows before it are kept */
  epoch: number;
}

export class MetricsFiles {
  private constructor(readonly batchPath: string, readonly epochPath: string) {}

  /**
   * Starts the two files in `outDir`: empty (a header) for a new run; for a resumed one, the rows of the
   * checkpoint's folder up to its position, which are also returned. `note` hears about missing history.
   */
  static async open(outDir: string, from: ResumePoint | null, note: (line: string) => void):
      Promise<{ files: MetricsFiles; batches: BatchRecord[]; epochs: EpochRecord[] }> {
    const files = new MetricsFiles(join(outDir, BATCH_CSV), join(outDir, EPOCH_CSV));
    const batches = from ? await keptRows(join(from.dir, BATCH_CSV), parseBatchCsv, (r) => r.step <= from.step, note) : [];
    const epochs = from ? await keptRows(join(from.dir, EPOCH_CSV), parseEpochCsv, (r) => r.epoch < from.epoch, note) : [];
    await writeFileAtomic(files.batchPath, `${BATCH_CSV_HEADER}\n${batchCsvRows(batches)}`);
    await writeFileAtomic(files.epochPath, `${EPOCH_CSV_HEADER}\n${epochCsvRows(epochs)}`);
    return { files, batches, epochs };
  }

  async appendBatches(rows: readonly BatchRecord[]): Promise<void> {
    await append(this.batchPath, batchCsvRows(rows));
  }

  async appendEpoch(row: EpochRecord): Promise<void> {
    await append(this.epochPath, epochCsvRows([row]));
  }
}

async function append(path: string, text: string): Promise<void> {
  if (text !== '') await appendFileSynced(path, text);
}

/**
 * The rows of a metrics file that `keep` accepts. A row cut short at the end (the process died while
 * appending it) is dropped; any other damage is refused, naming the line, rather than silently losing the
 * rows after it. A missing file means the history starts at the checkpoint.
 */
async function keptRows<R>(path: string, parse: (text: string, file: string) => R[], keep: (r: R) => boolean,
                           note: (line: string) => void): Promise<R[]> {
  if (!existsSync(path)) {
    note(`${path} is missing: the metrics files and charts of this run start at its checkpoint`);
    return [];
  }
  let text = await readFile(path, 'utf8');
  // an append that was cut short leaves a last line without its newline
  if (!text.endsWith('\n')) text = text.slice(0, text.lastIndexOf('\n') + 1);
  let rows: R[];
  try {
    rows = parse(text, path);
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    throw new UserError(`${e.message.replace(/; (fix or delete the line|regenerate it.*)$/, '')}; fix or delete the line, or move the file away to resume without the metrics before the checkpoint`);
  }
  return rows.filter(keep);
}
