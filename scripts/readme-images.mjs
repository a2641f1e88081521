// Small copies of a real run's charts for the README: plots/*.png → docs/img/*.png, 900 px wide.
// Run after a training run, `mnist-par eval` and `mnist-par bench scaling` have written plots/:
//   node scripts/readme-images.mjs [plots-dir] [out-dir]
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';

const from = process.argv[2] ?? 'plots';
const to = process.argv[3] ?? 'docs/img';
const wanted = [/^batch_metrics\.png$/, /^epoch_metrics\.png$/, /^confusion_matrix\.png$/, /^errors\.png$/, /^scaling.*\.png$/];
mkdirSync(to, { recursive: true });
for (const name of readdirSync(from).filter((n) => wanted.some((w) => w.test(n))).sort()) {
  const out = join(to, name.replace(/^scaling.*\.png$/, 'scaling.png'));
  await sharp(join(from, name)).resize({ width: 900 }).png({ compressionLevel: 9, palette: true }).toFile(out);
  console.log(`${join(from, name)} → ${out}`);
}
