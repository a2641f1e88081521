import { describe, expect, it } from 'vitest';
import { augmentRow, DEFAULT_AUGMENT, sampleSeed, sampleTransform, type AugmentOptions } from '../src/data/augment.js';
import { Rng } from '../src/rng.js';

const MEAN = 0.1307, STD = 0.3081;
const CENTRE = 13.5;

function randomImages(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const img = new Uint8Array(n * 784);
  for (let i = 0; i < img.length; i++) img[i] = rng.int(256);
  return img;
}

/**
 * Recovers (rotation, scale, shear, shift) from an output → input matrix. The forward map is
 * A·(p − c) + c + t with A = s·R(θ)·[[1, tanφ], [0, 1]], so A's first column is s·(cosθ, sinθ), R(−θ) applied
 * to its second column is s·(tanφ, 1), and t = A·(c − m(c)).
 */
function decompose(m: Float32Array): { deg: number; scale: number; shearDeg: number; tx: number; ty: number } {
  const [a, b, c, d, e, f] = Array.from(m);
  const det = a * d - b * c;
  const A = [d / det, -b / det, -c / det, a / det]; // inverse of [[a, c], [b, d]], column-major like mat2d
  const s = Math.hypot(A[0], A[1]);
  const th = Math.atan2(A[1], A[0]);
  const col2x = Math.cos(th) * A[2] + Math.sin(th) * A[3];
  const col2y = -Math.sin(th) * A[2] + Math.cos(th) * A[3];
  const mcx = a * CENTRE + c * CENTRE + e, mcy = b * CENTRE + d * CENTRE + f;
  const dx = CENTRE - mcx, dy = CENTRE - mcy;
  return {
    deg: th * 180 / Math.PI, scale: s, shearDeg: Math.atan(col2x / col2y) * 180 / Math.PI,
    tx: A[0] * dx + A[2] * dy, ty: A[1] * dx + A[3] * dy,
  };
}

describe('augmentRow', () => {
  const images = randomImages(3, 7);

  it('the identity matrix reproduces plain normalization exactly', () => {
    const out = new Float32Array(2 * 784).fill(NaN);
    augmentRow(out, 784, images, 2 * 784, new Float32Array([1, 0, 0, 1, 0, 0]), MEAN, STD);
    for (let i = 0; i < 784; i++) {
      expect(Number.isNaN(out[i])).toBe(true); // outside the row: untouched
      expect(out[784 + i]).toBe(Math.fround((images[2 * 784 + i] / 255 - MEAN) / STD));
    }
  });

  it('zero-width options give the identity, hence plain normalization', () => {
    const zero: AugmentOptions = { rotateDeg: 0, scale: 0, shiftPx: 0, shearDeg: 0 };
    const m = sampleTransform(1, 2, 3, zero);
    expect(Array.from(m, (x) => x + 0)).toEqual([1, 0, 0, 1, 0, 0]); // + 0 turns −0 into 0
    const out = new Float32Array(784);
    augmentRow(out, 0, images, 0, m, MEAN, STD);
    for (let i = 0; i < 784; i++) expect(out[i]).toBe(Math.fround((images[i] / 255 - MEAN) / STD));
  });

  it('a pure integer shift moves pixels exactly, filling with background', () => {
    const out = new Float32Array(784);
    const [sx, sy] = [2, -3]; // output (u, v) shows input (u − 2, v + 3)
    augmentRow(out, 0, images, 784, new Float32Array([1, 0, 0, 1, -sx, -sy]), MEAN, STD);
    const bg = Math.fround((0 - MEAN) / STD);
    for (let v = 0; v < 28; v++) {
      for (let u = 0; u < 28; u++) {
        const x = u - sx, y = v - sy;
        const want = x >= 0 && x < 28 && y >= 0 && y < 28 ? Math.fround((images[784 + y * 28 + x] / 255 - MEAN) / STD) : bg;
        expect(out[v * 28 + u], `pixel (${u}, ${v})`).toBe(want);
      }
    }
  });

  it('a half-pixel shift averages neighbours', () => {
    const out = new Float32Array(784);
    augmentRow(out, 0, images, 0, new Float32Array([1, 0, 0, 1, 0.5, 0]), 0, 1);
    const want = (images[5 * 28 + 3] + images[5 * 28 + 4]) / 2 / 255;
    expect(Math.abs(out[5 * 28 + 3] - want)).toBeLessThan(1e-6);
    expect(out[5 * 28 + 27]).toBeCloseTo(images[5 * 28 + 27] / 2 / 255, 6); // right neighbour is outside: 0
  });

  it('stays finite and within the pixel range under random transforms', () => {
    const out = new Float32Array(784);
    const lo = Math.fround((0 - MEAN) / STD) - 1e-6, hi = Math.fround((1 - MEAN) / STD) + 1e-6;
    const big: AugmentOptions = { rotateDeg: 180, scale: 0.5, shiftPx: 30, shearDeg: 40 };
    for (let i = 0; i < 300; i++) {
      augmentRow(out, 0, images, (i % 3) * 784, sampleTransform(5, 0, i, i % 2 ? big : DEFAULT_AUGMENT), MEAN, STD);
      for (const x of out) {
        if (!(Number.isFinite(x) && x >= lo && x <= hi)) throw new Error(`sample ${i}: value ${x} outside [${lo}, ${hi}]`);
      }
    }
  });
});

describe('sampleTransform', () => {
  it('depends only on (seed, epoch, index)', () => {
    const a = sampleTransform(42, 3, 1234, DEFAULT_AUGMENT);
    sampleTransform(42, 0, 99, DEFAULT_AUGMENT); // other calls in between change nothing
    expect(sampleTransform(42, 3, 1234, DEFAULT_AUGMENT)).toEqual(a);
    expect(sampleTransform(42, 4, 1234, DEFAULT_AUGMENT)).not.toEqual(a);
    expect(sampleTransform(43, 3, 1234, DEFAULT_AUGMENT)).not.toEqual(a);
    expect(sampleTransform(42, 3, 1235, DEFAULT_AUGMENT)).not.toEqual(a);
    expect(sampleTransform(42 + 2 ** 32, 3, 1234, DEFAULT_AUGMENT)).not.toEqual(a);
  });

  it('decomposes back into parameters within the bounds, and uses the whole range', () => {
    const o = { rotateDeg: 10, scale: 0.1, shiftPx: 2, shearDeg: 8 };
    const max = { deg: 0, scale: 0, shearDeg: 0, tx: 0, ty: 0 };
    const eps = 1e-3; // float32 matrix entries, inverted twice
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const m = sampleTransform(7, i % 5, i, o);
      seen.add(Array.from(m).join());
      const p = decompose(m);
      expect(Math.abs(p.deg)).toBeLessThanOrEqual(o.rotateDeg + eps);
      expect(Math.abs(p.scale - 1)).toBeLessThanOrEqual(o.scale + eps);
      expect(Math.abs(p.shearDeg)).toBeLessThanOrEqual(o.shearDeg + eps);
      expect(Math.abs(p.tx)).toBeLessThanOrEqual(o.shiftPx + eps);
      expect(Math.abs(p.ty)).toBeLessThanOrEqual(o.shiftPx + eps);
      max.deg = Math.max(max.deg, Math.abs(p.deg));
      max.scale = Math.max(max.scale, Math.abs(p.scale - 1));
      max.shearDeg = Math.max(max.shearDeg, Math.abs(p.shearDeg));
      max.tx = Math.max(max.tx, Math.abs(p.tx));
      max.ty = Math.max(max.ty, Math.abs(p.ty));
    }
    expect(seen.size).toBe(2000);
    expect(max.deg).toBeGreaterThan(0.98 * o.rotateDeg);
    expect(max.scale).toBeGreaterThan(0.98 * o.scale);
    expect(max.shearDeg).toBeGreaterThan(0.98 * o.shearDeg);
    expect(max.tx).toBeGreaterThan(0.98 * o.shiftPx);
    expect(max.ty).toBeGreaterThan(0.98 * o.shiftPx);
  });

  it('decompose recovers the drawn parameters (so the bounds test can fail)', () => {
    // Replays the draws in sampleTransform's order: rotation, scale, shear, shift x, shift y.
    const o = DEFAULT_AUGMENT;
    for (let i = 0; i < 20; i++) {
      const rng = new Rng(sampleSeed(9, 1, i));
      const want = [rng.uniform(-o.rotateDeg, o.rotateDeg), 1 + rng.uniform(-o.scale, o.scale),
        rng.uniform(-o.shearDeg, o.shearDeg), rng.uniform(-o.shiftPx, o.shiftPx), rng.uniform(-o.shiftPx, o.shiftPx)];
      const p = decompose(sampleTransform(9, 1, i, o));
      const got = [p.deg, p.scale, p.shearDeg, p.tx, p.ty];
      for (let k = 0; k < 5; k++) expect(Math.abs(got[k] - want[k]), `sample ${i} parameter ${k}`).toBeLessThan(1e-3);
    }
  });
});
