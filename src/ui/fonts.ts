// Fonts for the charts. sharp renders SVG text through librsvg → pango → its own bundled fontconfig, which
// reads the system font configuration; on a machine (or container) without fonts every label would come out
// as empty boxes. We ship DejaVu (npm `dejavu-fonts-ttf`) and point fontconfig at a config file that lists
// only that folder, so charts look the same everywhere.
//
// fontconfig reads FONTCONFIG_FILE once, when it first initializes, which is the first SVG text render (not
// `import 'sharp'`: setting the variable after the import but before the first render works, after the first
// render it is ignored). So ensureFonts() must run before sharp renders any text in this process; charts.ts
// calls it first thing and imports sharp lazily. Setting process.env in a worker thread does not reach the
// C library's environment, so charts are rendered on the main thread.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileAtomicSync } from '../fsutil.js';

/** The family every chart uses; it is in the shipped font folder. */
export const FONT_FAMILY = 'DejaVu Sans';

let done = false;

/** Folder holding the shipped DejaVu TTFs, or undefined when the package is missing. */
export function shippedFontDir(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve('dejavu-fonts-ttf/package.json');
    return join(dirname(pkg), 'ttf');
  } catch {
    return undefined;
  }
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A fontconfig file that knows only `fontDir`, caching its scan in `cacheDir`. */
export function fontConfigXml(fontDir: string, cacheDir: string): string {
  return [
    '<?xml version="1.0"?>',
    '<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">',
    '<fontconfig>',
    `  <dir>${xmlEscape(fontDir)}</dir>`,
    `  <cachedir>${xmlEscape(cacheDir)}</cachedir>`,
    '</fontconfig>',
    '',
  ].join('\n');
}

/**
 * Points fontconfig at the shipped DejaVu fonts (idempotent). The config lives in
 * <tmpdir>/mnist-par-fontconfig-<hash of the font folder>/, so installs in different places do not share one.
 * If the fonts or the temp folder are unavailable the environment is left alone and the system fonts are used.
 */
export function ensureFonts(): void {
  if (done) return;
  done = true;
  const fontDir = shippedFontDir();
  if (fontDir === undefined) return;
  const hash = createHash('sha256').update(fontDir).digest('hex').slice(0, 12);
  const confDir = join(tmpdir(), `mnist-par-fontconfig-${hash}`);
  const confFile = join(confDir, 'fonts.conf');
  const xml = fontConfigXml(fontDir, join(confDir, 'cache'));
  try {
    mkdirSync(join(confDir, 'cache'), { recursive: true });
    let current = '';
    try { current = readFileSync(confFile, 'utf8'); } catch { /* first run */ }
    // Several processes may get here at once; the atomic write means none reads half a file.
    if (current !== xml) writeFileAtomicSync(confFile, xml);
  } catch {
    return;
  }
  // An absolute FONTCONFIG_FILE is enough; FONTCONFIG_PATH only matters for relative names.
  process.env.FONTCONFIG_FILE = confFile;
}
