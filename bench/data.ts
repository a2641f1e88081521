// `mnist-par bench data`: how fast your own data loads. It makes its own data in a temporary folder: a CSV
// file in Kaggle's layout (default 42,000 rows, as Kaggle's train.csv: a header, then label,pixel0..pixel783)
// and an image folder (default 10,000 28×28 greyscale PNGs in 10 class folders), from the same digit-like
// images: thick strokes on black, about a fifth of the pixels lit, so the CSV has Kaggle's size (about 73 MB).
//
// Each loader is checked first (every parsed pixel and label against what was written; a sample of decoded
// images against loadDigitImage run one at a time), then timed: the median of --repeats runs, each beside a
// baseline of the same run:
//   csv     readOwnData on the file (read, parse, class indices), against reading its bytes alone
//   images  readOwnData on the folder (IN_FLIGHT images decoded at once), against the first 1,000 images
//           decoded one at a time (per image), which is what the concurrency buys
// In a terminal the image load draws its progress line, as training does.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { IMAGE_PIXELS, IMAGE_SIDE } from '../src/data/datasets.js';
import { loadDigitImage } from '../src/data/image.js';
import { readOwnData } from '../src/data/own.js';
import { Rng } from '../src/rng.js';
import { terminalProgress } from '../src/ui/progress.js';
import { median, resultsDir, saveJson } from './kernels.js';

export interface DataBenchOptions {
  /** rows of the CSV file (0: no CSV benchmark) */
  rows?: number;
  /** images of the image folder (0: no image benchmark) */
  images?: number;
  repeats?: number;
  /** where the JSON goes (default <package>/bench/results); null: not saved */
  outDir?: string | null;
  log?: (line: string) => void;
}

export interface DataBenchResult {
  what: 'csv' | 'images';
  count: number;
  bytes: number;
  /** median seconds of the load */
  seconds: number;
  /** every run's seconds */
  runs: number[];
  /** median CPU seconds of the process during a load (all its threads): less sensitive than the wall time to
   *  what else the machine runs; on 2 cores the load cannot take less than half this */
  cpuSeconds: number;
  /** csv: median seconds to read the file's bytes; images: seconds per image one at a time × count */
  baselineSeconds: number;
  /** images (or rows) per second */
  perSecond: number;
}

const CLASSES = 10;
/** Images decoded one at a time for the images' baseline. */
const SEQUENTIAL_SAMPLE = 1000;
/** Images compared with loadDigitImage run on its own. */
const CHECKED = 200;

/** `count` digit-like 28×28 images and labels 0..9: two to four thick strokes on black, pixel values 1..255. */
export function strokeImages(count: number, seed: number): { images: Uint8Array; labels: Uint8Array } {
  const rng = new Rng(seed);
  const images = new Uint8Array(count * IMAGE_PIXELS);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    labels[i] = rng.int(CLASSES);
    const img = images.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS);
    for (let s = 2 + rng.int(3); s > 0; s--) {
      const x0 = 5 + rng.int(18), y0 = 4 + rng.int(20), x1 = 5 + rng.int(18), y1 = 4 + rng.int(20);
      const ink = 120 + rng.int(136);
      for (let k = 0; k <= 30; k++) {
        const x = x0 + ((x1 - x0) * k) / 30, y = y0 + ((y1 - y0) * k) / 30;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const px = Math.round(x + dx), py = Math.round(y + dy);
            if (px < 0 || px >= IMAGE_SIDE || py < 0 || py >= IMAGE_SIDE) continue;
            const v = Math.round(ink * (dx === 0 && dy === 0 ? 1 : 0.55 + 0.45 * rng.next()));
            img[py * IMAGE_SIDE + px] = Math.max(img[py * IMAGE_SIDE + px], v);
          }
        }
      }
    }
  }
  return { images, labels };
}

function csvOf(images: Uint8Array, labels: Uint8Array, count: number): Buffer {
  const head = ['label', ...Array.from({ length: IMAGE_PIXELS }, (_, p) => `pixel${p}`)].join(',');
  const lines = [head];
  for (let i = 0; i < count; i++) lines.push(`${labels[i]},${images.subarray(i * IMAGE_PIXELS, (i + 1) * IMAGE_PIXELS).join(',')}`);
  return Buffer.from(lines.join('\n') + '\n');
}

async function writeFolder(dir: string, images: Uint8Array, labels: Uint8Array, count: number): Promise<string[]> {
  for (let c = 0; c < CLASSES; c++) mkdirSync(join(dir, `class-${c}`), { recursive: true });
  const files = Array.from({ length: count }, (_, i) => join(dir, `class-${labels[i]}`, `${String(i).padStart(6, '0')}.png`));
  for (let at = 0; at < count; at += 256) {
    await Promise.all(files.slice(at, at + 256).map((f, k) =>
      sharp(Buffer.from(images.subarray((at + k) * IMAGE_PIXELS, (at + k + 1) * IMAGE_PIXELS)),
        { raw: { width: IMAGE_SIDE, height: IMAGE_SIDE, channels: 1 } }).toColourspace('b-w').png().toFile(f)));
  }
  return files;
}

const seconds = async (f: () => unknown): Promise<number> => {
  const t = performance.now();
  await f();
  return (performance.now() - t) / 1000;
};

/** Wall and CPU seconds (every thread of the process) of one call. */
const timed = async (f: () => unknown): Promise<{ wall: number; cpu: number }> => {
  const c = process.cpuUsage();
  const wall = await seconds(f);
  const { user, system } = process.cpuUsage(c);
  return { wall, cpu: (user + system) / 1e6 };
};

export async function benchData(o: DataBenchOptions = {}): Promise<DataBenchResult[]> {
  const rows = o.rows ?? 42_000;
  const count = o.images ?? 10_000;
  const repeats = o.repeats ?? 3;
  const log = o.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const dir = mkdtempSync(join(tmpdir(), 'mnist-par-bench-data-'));
  const results: DataBenchResult[] = [];
  try {
    if (rows > 0) {
      const { images, labels } = strokeImages(rows, 1);
      const file = join(dir, 'train.csv');
      const bytes = csvOf(images, labels, rows);
      writeFileSync(file, bytes);
      // verified: every pixel and every label (the classes are 0..9 in order, so a label is its index)
      const own = await readOwnData(file, '--data');
      if (own.train.count !== rows || Buffer.compare(Buffer.from(own.train.images), Buffer.from(images)) !== 0
        || own.train.labels.some((l, i) => l !== labels[i])) {
        throw new Error('bench data: the CSV parser did not give back the images and labels written');
      }
      const runs: number[] = [], cpus: number[] = [], base: number[] = [];
      for (let r = 0; r < repeats; r++) {
        base.push(await seconds(() => readFileSync(file)));
        const t = await timed(() => readOwnData(file, '--data'));
        runs.push(t.wall);
        cpus.push(t.cpu);
      }
      const s = median(runs);
      results.push({ what: 'csv', count: rows, bytes: bytes.length, seconds: s, runs, cpuSeconds: median(cpus), baselineSeconds: median(base), perSecond: rows / s });
      log(`csv     ${rows.toLocaleString('en-US')} rows, ${(bytes.length / 1e6).toFixed(1)} MB: ${s.toFixed(3)} s ` +
        `(median of ${repeats}: ${runs.map((x) => x.toFixed(3)).join(', ')}; ${median(cpus).toFixed(3)} s of CPU), ${(bytes.length / 1e6 / s).toFixed(0)} MB/s; ` +
        `reading the bytes alone ${median(base).toFixed(3)} s (×${(s / median(base)).toFixed(1)})`);
    }
    if (count > 0) {
      const { images, labels } = strokeImages(count, 2);
      const folder = join(dir, 'images');
      log(`writing ${count.toLocaleString('en-US')} PNGs …`);
      const files = await writeFolder(folder, images, labels, count);
      const own = await readOwnData(folder, '--data');
      // the folder lists class by class: find each file's row by its position in that order
      const order = [...files.keys()].sort((a, b) => labels[a] - labels[b] || a - b);
      for (let k = 0; k < Math.min(CHECKED, count); k++) {
        const i = order[Math.floor((k * count) / Math.min(CHECKED, count))];
        const row = order.indexOf(i);
        const alone = await loadDigitImage(files[i]);
        if (Buffer.compare(Buffer.from(own.train.images.subarray(row * IMAGE_PIXELS, (row + 1) * IMAGE_PIXELS)), Buffer.from(alone)) !== 0
          || own.train.labels[row] !== labels[i]) {
          throw new Error(`bench data: image ${files[i]} loaded in the folder differs from loadDigitImage on its own`);
        }
      }
      const runs: number[] = [], cpus: number[] = [], base: number[] = [];
      const sample = files.slice(0, Math.min(SEQUENTIAL_SAMPLE, count));
      for (let r = 0; r < repeats; r++) {
        base.push((await seconds(async () => { for (const f of sample) await loadDigitImage(f); })) / sample.length * count);
        const t = await timed(() => readOwnData(folder, '--data', terminalProgress(`reading images (run ${r + 1}/${repeats})`)));
        runs.push(t.wall);
        cpus.push(t.cpu);
      }
      const s = median(runs);
      const bytes = files.reduce((n, f) => n + readFileSync(f).length, 0);
      results.push({ what: 'images', count, bytes, seconds: s, runs, cpuSeconds: median(cpus), baselineSeconds: median(base), perSecond: count / s });
      log(`images  ${count.toLocaleString('en-US')} PNGs, ${(bytes / 1e6).toFixed(1)} MB: ${s.toFixed(2)} s ` +
        `(median of ${repeats}: ${runs.map((x) => x.toFixed(2)).join(', ')}; ${median(cpus).toFixed(2)} s of CPU), ` +
        `${Math.round(count / s).toLocaleString('en-US')} images/s; one at a time ${median(base).toFixed(2)} s ` +
        `(×${(median(base) / s).toFixed(2)} faster concurrently)`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (o.outDir !== null) {
    const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version, date: new Date().toISOString() };
    const path = await saveJson(o.outDir ?? resultsDir(), 'data', { machine, repeats, results });
    log(`saved ${path}`);
  }
  return results;
}
