// The page of `mnist-par serve` into dist/page/: the script is compiled there by `tsc -p page/tsconfig.json`;
// this copies the HTML and the style beside it, so that one folder holds everything the server hands out.
//
//   node scripts/build-page.mjs          (run after both tsc builds; `npm run build` does all three)
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
// tsc runs first in `npm run build`, so the compiled atomic writer is there
import { writeFileAtomicSync } from '../dist/src/fsutil.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const FILES = ['index.html', 'style.css'];

for (const f of FILES) writeFileAtomicSync(join(ROOT, 'dist', 'page', f), readFileSync(join(ROOT, 'page', f)));
console.log(`build-page: wrote ${FILES.map((f) => `dist/page/${f}`).join(', ')} beside dist/page/main.js`);
