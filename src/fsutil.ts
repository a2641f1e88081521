// Atomic file writes: write a temporary file beside the target, fsync it, then rename it over the target,
// so a reader (or a crash) sees either the old file or the new one, never half of one. A write that finds the
// disk full fails with DiskFull, which says how much the file needed and how much was free.
import { closeSync, fsyncSync, openSync, renameSync, rmdirSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, open, readdir, rename, rmdir, stat, statfs, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { DiskFull, UserError } from './errors.js';
import { fmtBytes } from './ui/format.js';
import { randomBytes } from 'node:crypto';

/** The temporary file beside `path`: it names the process writing it, so that a later run can tell a stale one. */
export function tmpName(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

const TMP_NAME = /\.tmp-(\d+)-[0-9a-f]{8}$/;

/**
 * Removes the temporary files (tmpName) in `dir` whose process is gone: what a write cut short by a second
 * Ctrl-C, a SIGKILL or a power cut left behind. A live process's are its own and stay. Returns the names
 * removed; a folder that cannot be read is left alone.
 */
export async function sweepStaleTemps(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const pid = Number(TMP_NAME.exec(name)?.[1] ?? NaN);
    if (!Number.isInteger(pid) || pid <= 0 || processAlive(pid)) continue;
    try {
      await unlink(join(dir, name));
      removed.push(name);
    } catch { /* gone already, or not ours to remove */ }
  }
  return removed;
}

/** Whether a process with this id exists (one we may not signal exists too). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errorCode(e) === 'EPERM';
  }
}

export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = tmpName(path);
  try {
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
  } catch (e) {
    throw await diskFullOr(e, path, byteLength(data));
  }
}

export function writeFileAtomicSync(path: string, data: string | Uint8Array): void {
  const tmp = tmpName(path);
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  try {
    const fd = openSync(tmp, 'w');
    try {
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
  } catch (e) {
    if (errorCode(e) !== 'ENOSPC') throw e;
    let free: number | null = null;
    try {
      const fs = statfsSync(dirname(resolve(path)));
      free = fs.bavail * fs.bsize;
    } catch { /* the message leaves it out */ }
    throw new DiskFull(path, buf.length, free);
  }
}

/** Appends `text` to the file at `path` and flushes it to disk; a full disk is a DiskFull. */
export async function appendFileSynced(path: string, text: string): Promise<void> {
  try {
    const fh = await open(path, 'a');
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw await diskFullOr(e, path, byteLength(text), true);
  }
}

/** `e` as it is, or, when it is ENOSPC, a DiskFull naming `path`, the `bytes` it needed and the space free there. */
export async function diskFullOr(e: unknown, path: string, bytes: number, appending = false): Promise<unknown> {
  if (errorCode(e) !== 'ENOSPC') return e;
  const fs = await statfs(dirname(resolve(path))).catch(() => null);
  return new DiskFull(path, bytes, fs === null ? null : fs.bavail * fs.bsize, appending);
}

function byteLength(data: string | Uint8Array): number {
  return typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
}

/** The error code of a failed file operation (EACCES, ENOENT, …), for one-line messages. */
export function errorCode(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? String(e);
}

/**
 * Creates `dir` and proves it is writable with a probe file, before any time is spent on work whose results
 * would have nowhere to go. `flag` names the option that chose the folder. Returns the folders it made,
 * parents first (none when `dir` existed); when it fails, it leaves none of them behind.
 */
export async function ensureWritableDir(dir: string, flag: string): Promise<string[]> {
  const probe = join(dir, `.write-test-${process.pid}`);
  let made: string[] = [];
  try {
    made = await makeDir(dir);
    await writeFileAtomic(probe, '');
    await unlink(probe);
    return made;
  } catch (e) {
    await removeEmptyDirs(made);
    if (e instanceof DiskFull) {
      const free = e.free === null ? '' : `, ${fmtBytes(e.free)} free`;
      throw new UserError(`${flag} ${dir}: cannot write there: the disk is full (ENOSPC${free}); free some space on it or choose a folder on another disk with ${flag}`);
    }
    throw new UserError(`${flag} ${dir}: cannot write there (${errorCode(e)}); choose a writable directory with ${flag}`);
  }
}

/**
 * `mkdir -p`, one level at a time; returns the folders it made, absolute, parents first (none when `dir`
 * existed). Node 20's own `mkdir(dir, { recursive: true })` never returns for a path under /proc (mkdir
 * answers ENOENT although the parent exists, and Node retries forever); here a level that still cannot be
 * made after its parent exists is an error, and the parents made for it are removed again.
 */
export async function makeDir(dir: string): Promise<string[]> {
  const path = resolve(dir);
  let made: string[];
  try {
    await mkdir(path);
    return [path];
  } catch (e) {
    const code = errorCode(e);
    if (code === 'EEXIST') {
      if ((await stat(path)).isDirectory()) return [];
      throw e;
    }
    const parent = dirname(path);
    if (code !== 'ENOENT' || parent === path) throw e;
    made = await makeDir(parent);
  }
  try {
    await mkdir(path);
    made.push(path);
  } catch (e) {
    if (errorCode(e) !== 'EEXIST' || !(await stat(path)).isDirectory()) {
      await removeEmptyDirs(made);
      throw e;
    }
  }
  return made;
}

// Folders made for work that may still fail before writing anything into them (a run's folders, a dataset
// folder being downloaded into). The work removes them again, when still empty, as it ends (removeEmptyDirs);
// a process that must exit at once (a signal before training started) removes every one still tracked
// (removeTrackedDirsSync). Never a folder that existed before: only what makeDir reported as made.
const tracked = new Set<string>();

/** Tracks folders made for work in progress (see above). */
export function trackDirs(made: readonly string[]): void {
  for (const d of made) tracked.add(d);
}

/** Removes those of `made` (as makeDir returned them) that are empty, deepest first, and stops tracking them. */
export async function removeEmptyDirs(made: readonly string[]): Promise<void> {
  for (const d of [...made].reverse()) {
    tracked.delete(d);
    await rmdir(d).catch(() => {}); // not empty (or gone): kept
  }
}

/** The work succeeded: its folders stay, whatever they hold. */
export function untrackDirs(made: readonly string[]): void {
  for (const d of made) tracked.delete(d);
}

/** Synchronously removes every tracked folder that is empty, deepest first (right before process.exit). */
export function removeTrackedDirsSync(): void {
  // parents are always tracked before their children, so the reverse order removes children first
  for (const d of [...tracked].reverse()) {
    try {
      rmdirSync(d);
    } catch { /* not empty, or gone */ }
  }
  tracked.clear();
}
