// Atomic file writes: write a temporary file beside the target, fsync it, then rename it over the target,
// so a reader (or a crash) sees either the old file or the new one, never half of one.
import { closeSync, existsSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, open, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { UserError } from './errors.js';
import { randomBytes } from 'node:crypto';

function tmpName(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = tmpName(path);
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

export function writeFileAtomicSync(path: string, data: string | Uint8Array): void {
  const tmp = tmpName(path);
  const fd = openSync(tmp, 'w');
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
}

/** The error code of a failed file operation (EACCES, ENOENT, …), for one-line messages. */
export function errorCode(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? String(e);
}

/**
 * Creates `dir` and proves it is writable with a probe file, before any time is spent on work whose results
 * would have nowhere to go. `flag` names the option that chose the folder.
 */
export async function ensureWritableDir(dir: string, flag: string): Promise<void> {
  const probe = join(dir, `.write-test-${process.pid}`);
  try {
    await makeDir(dir);
    await writeFileAtomic(probe, '');
    await unlink(probe);
  } catch (e) {
    throw new UserError(`${flag} ${dir}: cannot write there (${errorCode(e)}); choose a writable directory with ${flag}`);
  }
}

/**
 * `mkdir -p`, one level at a time. Node 20's own `mkdir(dir, { recursive: true })` never returns for a path
 * under /proc (mkdir answers ENOENT although the parent exists, and Node retries forever); here a level that
 * still cannot be made after its parent exists is an error.
 */
export async function makeDir(dir: string): Promise<void> {
  const path = resolve(dir);
  try {
    await mkdir(path);
    return;
  } catch (e) {
    const code = errorCode(e);
    if (code === 'EEXIST') {
      if ((await stat(path)).isDirectory()) return;
      throw e;
    }
    const parent = dirname(path);
    if (code !== 'ENOENT' || parent === path) throw e;
    await makeDir(parent);
  }
  try {
    await mkdir(path);
  } catch (e) {
    if (errorCode(e) !== 'EEXIST' || !(await stat(path)).isDirectory()) throw e;
  }
}

/**
 * The folders that making `dir` would create: `dir` and its missing parents, deepest first. A command that
 * fails before it has written anything removes them again (removeEmptyFolders), leaving no trace.
 */
export function missingFolders(dir: string): string[] {
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) {
    missing.push(d);
    if (dirname(d) === d) break;
  }
  return missing;
}

/** Removes each folder that is empty, in order (deepest first, as missingFolders lists them). */
export async function removeEmptyFolders(dirs: readonly string[]): Promise<void> {
  for (const d of dirs) await rmdir(d).catch(() => {});
}
