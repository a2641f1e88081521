// Data of your own, made by the tests: synthetic classes a network can tell apart, and writers for the three
// layouts --data reads (IDX files, Kaggle-layout CSV, a folder of class folders of PNGs).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { Rng } from '../src/rng.js';

export const SIDE = 28;
export const PIXELS = SIDE * SIDE;

/**
 * `perClass` images of each of V classes: class c is a pattern of three thick strokes of its own (drawn once
 * from the seed), each image that pattern shifted by up to 2 pixels with noise added. An mlp tells 26 such
 * classes apart within a few epochs.
 */
export function syntheticSet(V: number, perClass: number, seed: number): { images: Uint8Array; labels: Uint8Array; count: number } {
  const rng = new Rng(seed);
  const templates = Array.from({ length: V }, () => {
    const t = new Float64Array(PIXELS);
    for (let s = 0; s < 3; s++) {
      const x0 = 4 + rng.int(20), y0 = 4 + rng.int(20), x1 = 4 + rng.int(20), y1 = 4 + rng.int(20);
      for (let k = 0; k <= 40; k++) {
        const x = x0 + ((x1 - x0) * k) / 40, y = y0 + ((y1 - y0) * k) / 40;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const px = Math.round(x + dx), py = Math.round(y + dy);
            if (px >= 0 && px < SIDE && py >= 0 && py < SIDE) t[py * SIDE + px] = 255;
          }
        }
      }
    }
    return t;
  });
  const count = V * perClass;
  const images = new Uint8Array(count * PIXELS);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    // classes interleaved, as a real file would have them
    const c = i % V;
    labels[i] = c;
    const sx = rng.int(5) - 2, sy = rng.int(5) - 2;
    for (let y = 0; y < SIDE; y++) {
      for (let x = 0; x < SIDE; x++) {
        const ty = y - sy, tx = x - sx;
        const v = ty >= 0 && ty < SIDE && tx >= 0 && tx < SIDE ? templates[c][ty * SIDE + tx] : 0;
        images[i * PIXELS + y * SIDE + x] = Math.max(0, Math.min(255, Math.round(v + rng.uniform(-40, 40))));
      }
    }
  }
  return { images, labels, count };
}

/** An IDX file: magic 0x0801 (labels, dims [n]) or 0x0803 (images, dims [n, 28, 28]), gzipped when `gz`. */
export function idxBytes(data: Uint8Array, dims: number[], gz = true): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head.writeUInt32BE(0x800 + dims.length, 0);
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  const raw = Buffer.concat([head, Buffer.from(data)]);
  return gz ? gzipSync(raw) : raw;
}

/** Writes <prefix>-images-idx3-ubyte.gz and <prefix>-labels-idx1-ubyte.gz into `dir`. */
export function writeIdxPair(dir: string, prefix: string, images: Uint8Array, labels: Uint8Array): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${prefix}-images-idx3-ubyte.gz`), idxBytes(images, [labels.length, SIDE, SIDE]));
  writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte.gz`), idxBytes(labels, [labels.length]));
}

/** The Kaggle layout: optionally the header label,pixel0,…,pixel783, then label,pixels per line (labels null: pixels only). */
export function csvText(images: Uint8Array, labels: ArrayLike<number> | null, count: number, header = true): string {
  const lines: string[] = [];
  if (header) lines.push([...(labels ? ['label'] : []), ...Array.from({ length: PIXELS }, (_, i) => `pixel${i}`)].join(','));
  for (let i = 0; i < count; i++) {
    const px = Array.from(images.subarray(i * PIXELS, (i + 1) * PIXELS)).join(',');
    lines.push(labels ? `${labels[i]},${px}` : px);
  }
  return lines.join('\n') + '\n';
}

/** PATH/<name>/<i>.png for image i of class labels[i], as 28×28 greyscale PNGs. */
export async function writeImageFolder(dir: string, names: readonly string[], images: Uint8Array, labels: ArrayLike<number>,
                                       count: number): Promise<void> {
  for (const n of names) mkdirSync(join(dir, n), { recursive: true });
  await Promise.all(Array.from({ length: count }, (_, i) =>
    sharp(Buffer.from(images.subarray(i * PIXELS, (i + 1) * PIXELS)), { raw: { width: SIDE, height: SIDE, channels: 1 } })
      .toColourspace('b-w').png().toFile(join(dir, names[labels[i]], `${String(i).padStart(5, '0')}.png`))));
}
