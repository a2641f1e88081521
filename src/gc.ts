// A full garbage collection on demand: after the dataset is copied into the arena (so the parsed files do not
// linger in the resident set during training) and between benchmark runs (so one run's arena does not count
// in the next one's memory).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc = (globalThis as { gc?: () => void }).gc;

export function collectGarbage(): void {
  if (gc === undefined) {
    // --expose-gc set at run time reaches only contexts created afterwards, hence the fresh one.
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}
