// Random affine augmentation of 28×28 digits, applied where a worker gathers a batch row.
//
// A sample's transform depends only on (seed, epoch, sample index) through a stateless hash, so it is the
// same whichever thread gathers the row and in whatever order. The forward transform (input → output) is
//   p ↦ T(centre + shift) · R(rotate) · Shear(shear) · S(scale) · T(−centre) · p
// and we store its inverse (output → input), because the row is filled by inverse mapping: each output
// pixel samples the source bilinearly, and anything outside the source is background (pixel value 0).
import { mat2d } from 'gl-matrix';
import { Rng } from '../rng.js';
import { IMAGE_SIDE as SIDE } from './datasets.js';

export interface AugmentOptions {
  /** rotation drawn from ±rotateDeg degrees */
  rotateDeg: number;
  /** isotropic scale drawn from 1 ± scale */
  scale: number;
  /** shift in x and y, each drawn from ±shiftPx pixels */
  shiftPx: number;
  /** horizontal shear angle drawn from ±shearDeg degrees */
  shearDeg: number;
}

export const DEFAULT_AUGMENT: AugmentOptions = { rotateDeg: 10, scale: 0.1, shiftPx: 2, shearDeg: 8 };

/** Pixel centres are at 0..27, so the image centre is 13.5. */
const CENTRE = (SIDE - 1) / 2;
const DEG = Math.PI / 180;

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A 32-bit seed for (seed, epoch, index); seeds beyond 32 bits keep their high bits. */
export function sampleSeed(seed: number, epoch: number, index: number): number {
  let h = mix32((seed >>> 0) ^ 0x243f6a88);
  h = mix32(h ^ (Math.floor(seed / 0x100000000) >>> 0));
  h = mix32(h ^ (epoch >>> 0) ^ 0x85a308d3);
  return mix32(h ^ (index >>> 0) ^ 0x13198a2e);
}

// Scratch, reused so that sampleTransform allocates nothing when given `out` (it runs per sample per step).
const tmp = mat2d.create();
const shear = mat2d.create();
const v2 = new Float32Array(2);
const rng = new Rng(0);

/** The output → input mapping for one sample as a gl-matrix mat2d [a, b, c, d, tx, ty]: x = a·u + c·v + tx. */
export function sampleTransform(seed: number, epoch: number, index: number, opts: AugmentOptions,
                                out: Float32Array = new Float32Array(6)): Float32Array {
  rng.reseed(sampleSeed(seed, epoch, index));
  const angle = rng.uniform(-opts.rotateDeg, opts.rotateDeg) * DEG;
  const s = 1 + rng.uniform(-opts.scale, opts.scale);
  const sh = Math.tan(rng.uniform(-opts.shearDeg, opts.shearDeg) * DEG);
  const tx = rng.uniform(-opts.shiftPx, opts.shiftPx);
  const ty = rng.uniform(-opts.shiftPx, opts.shiftPx);
  // Built right to left onto `tmp`: each call post-multiplies, i.e. applies its step before the previous ones.
  v2[0] = CENTRE + tx;
  v2[1] = CENTRE + ty;
  mat2d.fromTranslation(tmp, v2);
  mat2d.rotate(tmp, tmp, angle);
  mat2d.set(shear, 1, 0, sh, 1, 0, 0);
  mat2d.multiply(tmp, tmp, shear);
  v2[0] = s;
  v2[1] = s;
  mat2d.scale(tmp, tmp, v2);
  v2[0] = -CENTRE;
  v2[1] = -CENTRE;
  mat2d.translate(tmp, tmp, v2);
  mat2d.invert(out, tmp);
  return out;
}

/**
 * Writes one augmented, normalized 28×28 row: out[outOff + v·28 + u] = (I(m·(u,v)) / 255 − mean) / std, where
 * I samples images[imgOff ..] (28×28 uint8, row-major) bilinearly and is 0 outside. With the identity matrix
 * this is exactly the plain normalization. Allocation-free: it runs per sample per step.
 */
export function augmentRow(out: Float32Array, outOff: number, images: Uint8Array, imgOff: number,
                           m: Float32Array, mean: number, std: number): void {
  const a = m[0], b = m[1], c = m[2], d = m[3], tx = m[4], ty = m[5];
  const bg = (0 / 255 - mean) / std;
  // Between pixels a multiply-add (two divisions per pixel cost a quarter of the time); on a pixel the exact
  // plain formula, so that the identity and whole-pixel shifts reproduce plain normalization bit for bit.
  const k1 = 1 / (255 * std), k0 = -mean / std;
  for (let v = 0; v < SIDE; v++) {
    let x = c * v + tx;
    let y = d * v + ty;
    const row = outOff + v * SIDE;
    for (let u = 0; u < SIDE; u++, x += a, y += b) {
      // x, y accumulate in float64; for the integer entries of an identity or a pure shift they stay exact.
      if (!(x > -1 && x < SIDE && y > -1 && y < SIDE)) { out[row + u] = bg; continue; }
      const x0 = Math.floor(x), y0 = Math.floor(y);
      const fx = x - x0, fy = y - y0;
      const p = imgOff + y0 * SIDE + x0;
      let val: number;
      if (x0 >= 0 && x0 < SIDE - 1 && y0 >= 0 && y0 < SIDE - 1) {
        val = (images[p] * (1 - fx) + images[p + 1] * fx) * (1 - fy)
            + (images[p + SIDE] * (1 - fx) + images[p + SIDE + 1] * fx) * fy;
      } else {
        // On the border: taps outside the image contribute 0.
        const inX0 = x0 >= 0, inX1 = x0 + 1 < SIDE, inY0 = y0 >= 0, inY1 = y0 + 1 < SIDE;
        val = ((inY0 && inX0 ? images[p] : 0) * (1 - fx) + (inY0 && inX1 ? images[p + 1] : 0) * fx) * (1 - fy)
            + ((inY1 && inX0 ? images[p + SIDE] : 0) * (1 - fx) + (inY1 && inX1 ? images[p + SIDE + 1] : 0) * fx) * fy;
      }
      out[row + u] = fx === 0 && fy === 0 ? (val / 255 - mean) / std : val * k1 + k0;
    }
  }
}
