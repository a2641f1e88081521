// What `serve` hands out from a folder (src/serve/static.ts): a file directly in it, by one name, and nothing
// else. Each way out of the folder is tried on a real folder holding real files and links: `..` plain,
// percent-encoded and double-encoded, slashes and backslashes encoded, absolute paths, NUL bytes, hidden
// files, links to outside and inside, sub-folders, a named pipe, extensions the folder does not serve.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CHART_TYPES, fileName, PAGE_TYPES, readStatic, type StaticRoot } from '../src/serve/static.js';

const base = mkdtempSync(join(tmpdir(), 'mnist-par-static-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const charts = join(base, 'plots', 'run-1');
mkdirSync(charts, { recursive: true });
mkdirSync(join(charts, 'sub.png'));
writeFileSync(join(charts, 'epoch_metrics.png'), 'PNG-BYTES');
writeFileSync(join(charts, 'sub.png', 'inner.png'), 'INNER');
writeFileSync(join(charts, '.hidden.png'), 'HIDDEN');
writeFileSync(join(charts, 'notes.txt'), 'TEXT');
const secret = join(base, 'secret.png');
writeFileSync(secret, 'SECRET');
writeFileSync(join(base, 'plots', 'outside.png'), 'OUTSIDE');
symlinkSync(secret, join(charts, 'leak.png'));
symlinkSync('../outside.png', join(charts, 'up.png'));
symlinkSync('epoch_metrics.png', join(charts, 'alias.png'));
symlinkSync(base, join(charts, 'dir-link.png'));
execFileSync('mkfifo', [join(charts, 'pipe.png')]);
// the folder itself reached through a link, as plots/latest is
symlinkSync('run-1', join(base, 'plots', 'latest'));
const root: StaticRoot = { dir: charts, types: CHART_TYPES };

describe('fileName decides on the name alone', () => {
  it('takes one plain name with an extension the folder serves, percent-decoded once', () => {
    expect(fileName(root, 'epoch_metrics.png')).toBe('epoch_metrics.png');
    expect(fileName(root, 'epoch%5Fmetrics.png')).toBe('epoch_metrics.png');
    expect(fileName({ dir: charts, types: PAGE_TYPES }, 'main.js')).toBe('main.js');
  });

  it.each([
    ['..', 'the parent'], ['.', 'the folder'], ['', 'nothing'], ['%2e%2e', 'encoded ..'], ['%2E%2E', 'encoded .. in capitals'],
    ['%252e%252e', 'double-encoded ..'], ['..%2fsecret.png', 'encoded slash'], ['..%5csecret.png', 'encoded backslash'],
    ['%2fetc%2fpasswd', 'encoded absolute path'], ['%2Ftmp%2Fsecret.png', 'absolute path'], ['C:%5Csecret.png', 'a drive'],
    ['epoch_metrics.png%00.txt', 'NUL byte'], ['.hidden.png', 'a hidden file'], ['%2ehidden.png', 'an encoded hidden file'],
    ['notes.txt', 'an extension the folder does not serve'], ['epoch_metrics', 'no extension'], ['%zz.png', 'a malformed escape'],
    ['%e0%80.png', 'a malformed UTF-8 escape'], ['a b.png', 'a blank'], [`${'a'.repeat(300)}.png`, 'a name longer than 255'],
    ['sub.png%2finner.png', 'a file in a sub-folder'],
  ])('refuses %j (%s)', (segment) => {
    expect(fileName(root, segment)).toBeNull();
  });
});

describe('readStatic reads only regular files directly in the folder', () => {
  it('reads a chart, also when the folder is reached through a link', async () => {
    expect(await readStatic(root, 'epoch_metrics.png')).toEqual({ body: Buffer.from('PNG-BYTES'), type: 'image/png' });
    const viaLink = await readStatic({ dir: join(base, 'plots', 'latest'), types: CHART_TYPES }, 'epoch_metrics.png');
    expect(viaLink?.body.toString()).toBe('PNG-BYTES');
  });

  it.each([
    ['leak.png', 'a link to a file outside'], ['up.png', 'a relative link out of the folder'], ['alias.png', 'a link to a file inside'],
    ['dir-link.png', 'a link to a folder'], ['sub.png', 'a folder'], ['pipe.png', 'a named pipe (must not hang)'], ['missing.png', 'no such file'],
    ['%2e%2e', 'encoded ..'], ['..%2foutside.png', 'encoded ../outside.png'], ['%2e%2e%2fsecret.png', 'encoded ../secret.png'],
  ])('gives nothing for %j (%s)', async (segment) => {
    expect(await readStatic(root, segment)).toBeNull();
  });

  it('gives nothing when the folder does not exist (no charts yet)', async () => {
    expect(await readStatic({ dir: join(base, 'plots', 'run-9'), types: CHART_TYPES }, 'epoch_metrics.png')).toBeNull();
  });
});
