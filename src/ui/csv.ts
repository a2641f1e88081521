// Reading back the metrics CSVs that training writes (formats in metrics.ts), for `mnist-par plot`.
// Every complaint names the file and the 1-based line, says what was expected and what was found.
import { UserError } from '../errors.js';
import { BATCH_CSV_HEADER, EPOCH_CSV_HEADER, type BatchRecord, type EpochRecord } from '../metrics.js';

// What metrics.ts writes for a float: a JS number, or NaN / ±Infinity when training diverged.
const FLOAT = /^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|NaN|-?Infinity)$/;

/** `rate`: a float, or empty where there was no figure yet (read as NaN) */
type Kind = 'int' | 'float' | 'rate';

/** Splits `text` into data rows of numbers after checking the header; blank trailing lines are ignored. */
function parseRows(text: string, file: string, header: string, kinds: readonly Kind[]): number[][] {
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  const fix = 'regenerate it by training again (it is written by `mnist-par train`)';
  if (lines.length === 0) throw new UserError(`${file}: empty file, expected the header "${header}"; ${fix}`);
  const got = lines[0].replace(/^\uFEFF/, '').trim();
  if (got !== header) {
    throw new UserError(`${file}:1: expected the header "${header}", found "${clip(got)}"; ${fix}`);
  }
  const names = header.split(',');
  const rows: number[][] = [];
  for (let i = 1; i < lines.length; i++) {
    const where = `${file}:${i + 1}`;
    const fields = lines[i].split(',');
    if (fields.length !== kinds.length) {
      throw new UserError(`${where}: expected ${kinds.length} comma-separated fields (${header}), found ${fields.length} in "${clip(lines[i])}"; fix or delete the line`);
    }
    const row = fields.map((f, j) => {
      const s = f.trim();
      if (kinds[j] === 'rate' && s === '') return NaN;
      const ok = kinds[j] === 'int' ? /^\d+$/.test(s) : FLOAT.test(s);
      if (!ok) {
        const want = kinds[j] === 'int' ? 'a whole number' : kinds[j] === 'rate' ? 'a number or empty' : 'a number';
        throw new UserError(`${where}: column ${names[j]} should be ${want}, found "${clip(s)}"; fix or delete the line`);
      }
      return Number(s);
    });
    rows.push(row);
  }
  return rows;
}

function clip(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Parses batch_metrics.csv (header BATCH_CSV_HEADER). `file` is only used in messages. */
export function parseBatchCsv(text: string, file: string): BatchRecord[] {
  const kinds: Kind[] = ['int', 'int', 'int', 'float', 'float', 'float', 'rate'];
  return parseRows(text, file, BATCH_CSV_HEADER, kinds).map(([epoch, batch, step, loss, accuracy, lr, samplesPerSec]) =>
    ({ epoch, batch, step, loss, accuracy, lr, samplesPerSec }));
}

/** Parses epoch_metrics.csv (header EPOCH_CSV_HEADER). `file` is only used in messages. */
export function parseEpochCsv(text: string, file: string): EpochRecord[] {
  const kinds: Kind[] = ['int', 'float', 'float', 'float', 'float', 'float', 'float'];
  return parseRows(text, file, EPOCH_CSV_HEADER, kinds).map(([epoch, trainLoss, trainAccuracy, valLoss, valAccuracy, lr, seconds]) =>
    ({ epoch, trainLoss, trainAccuracy, valLoss, valAccuracy, lr, seconds }));
}
