// Run folders: where a training run's files go, and how a later command finds them again.
//
// A run started without --out gets the next numbered folder, models/run-1, models/run-2, … (its charts go to
// plots/run-N), and models/latest is re-pointed at it: running the main command twice keeps both runs. A run
// given --out uses exactly that folder, but refuses one that already holds a run unless told --overwrite
// (or --resume, which continues the run in its own folder). `eval`, `predict` and `--resume` without a path
// take the newest run: the highest N whose folder holds the file they need.
import { existsSync, readFileSync, readdirSync, realpathSync, statSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, symlink, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, isAbsolute } from 'node:path';
import { LAST, loadCheckpoint } from './checkpoint.js';
import { UsageError, UserError } from './errors.js';
import { ensureWritableDir, errorCode, makeDir, processAlive, removeEmptyDirs, removeTrackedDirsSync, sweepStaleTemps, tmpName, trackDirs } from './fsutil.js';

/** Parent folder of the numbered runs, and of their charts (both relative to the working directory). */
export const MODELS_ROOT = 'models';
export const PLOTS_ROOT = 'plots';
/** The link in MODELS_ROOT and PLOTS_ROOT to the newest run's folder (a convenience for people: `ls models/latest`). */
export const LATEST = 'latest';
const RUN_NAME = /^run-(\d+)$/;

/** Every file a training run writes into its --out folder; a folder holding any of them holds a run. */
export const RUN_FILES = ['config.json', 'model.safetensors', 'model-best.safetensors', 'checkpoint-last.safetensors',
  'checkpoint-best.safetensors', 'batch_metrics.csv', 'epoch_metrics.csv'] as const;
/** The charts a run writes into its --plots folder. */
export const RUN_CHARTS = ['batch_metrics.png', 'epoch_metrics.png'] as const;

/** The numbered run folders under `root`, newest (highest number) first. */
export function runFolders(root: string = MODELS_ROOT): string[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  return names
    .map((n) => ({ n, m: RUN_NAME.exec(n) }))
    .filter((e) => e.m !== null && isDir(join(root, e.n)))
    .sort((a, b) => Number(b.m![1]) - Number(a.m![1]))
    .map((e) => join(root, e.n));
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The newest run's `file` (model.safetensors for eval and predict, checkpoint-last.safetensors for --resume):
 * the highest-numbered run folder holding it; runs from before numbered folders (the file directly in
 * models/) count as the oldest. `flag` names the option that would have given the path.
 */
export function newestRunFile(file: string, flag: string, root: string = MODELS_ROOT): string {
  for (const dir of runFolders(root)) {
    if (existsSync(join(dir, file))) return join(dir, file);
  }
  if (existsSync(join(root, file))) return join(root, file);
  throw new UserError(`${flag}: no run in ${root}/ holds ${file}; train one first (npx mnist-par), or give ${flag} <path>`);
}

/**
 * The checkpoint `--resume PATH` continues: PATH itself, or a folder's checkpoint-last. A folder without one
 * is refused with one line: it holds a run that stopped before saving a checkpoint, or no run at all.
 */
export function checkpointToResume(path: string): string {
  if (!isDir(path)) return path; // a file: its reader names any problem with it
  if (existsSync(join(path, LAST))) return join(path, LAST);
  const files = runFilesIn(path);
  throw new UsageError(files.length > 0
    ? `--resume ${path}: holds no ${LAST} (only ${files.join(', ')}): the run there stopped before saving a checkpoint, ` +
      `so there is nothing to resume; start it again with --out ${path} --overwrite`
    : `--resume ${path}: holds no run (no ${LAST}); give the folder of a run or a checkpoint file`);
}

/** The run files present in `dir` (none when it does not exist). */
export function runFilesIn(dir: string): string[] {
  return RUN_FILES.filter((f) => existsSync(join(dir, f)));
}

export interface RunDirs {
  /** the folder for the model, checkpoints, metrics and config.json */
  out: string;
  /** the folder for the PNG charts */
  plots: string;
  /** the numbered folder made for this run, if any (models/latest points at it once the run starts) */
  created: string | null;
  /** its charts' folder plots/run-N, when that was chosen here */
  createdPlots: string | null;
  /** every folder made for this run so far, parents first: those still empty when it ends are removed (fsutil.ts) */
  made: string[];
  /** an earlier run's files that --overwrite replaces: removed once the new run is ready to write */
  replaced: string[];
  /** gives the folder back to other runs (the run's claim on it, see claimFolder) */
  release(): Promise<void>;
}

/**
 * Decides where a run writes, before it does any work. `out` and `plots` are the configuration's values:
 * '' means "a new numbered run folder" and "beside the run" (plots/run-N for a numbered run, the --out folder
 * otherwise). `resumeDir` is the folder of the checkpoint being resumed, whose run may continue in place.
 * The folders it makes are tracked (fsutil.ts) until the run ends, and removed again if still empty.
 */
export async function prepareRunDirs(out: string, plots: string, overwrite: boolean, resumeDir: string | null): Promise<RunDirs> {
  if (out === '') {
    const { dir, made } = await createRunFolder(MODELS_ROOT);
    trackDirs(made);
    const ownPlots = plots === '' ? join(PLOTS_ROOT, basename(dir)) : null;
    const release = await claimFolder(dir);
    await withPlots(ownPlots ?? plots, made, release);
    // the models/latest and plots/latest links are replaced through temporary links too
    await sweepStaleTemps(MODELS_ROOT);
    if (ownPlots) await sweepStaleTemps(PLOTS_ROOT);
    return { out: dir, plots: ownPlots ?? plots, created: dir, createdPlots: ownPlots, made, replaced: [], release };
  }
  const made = await ensureWritableDir(resolve(out), '--out');
  trackDirs(made);
  const continuing = resumeDir !== null && realFolder(resumeDir) === realFolder(out);
  // claimed first: a second run given the same --out (or resuming the same run) at the same moment is refused
  // here, not mixed in
  let release: () => Promise<void>;
  try {
    release = await claimFolder(out, continuing ? '--resume' : '--out');
  } catch (e) {
    await removeEmptyDirs(made);
    throw e;
  }
  // ours now: what an earlier run's cut-short writes left here goes
  await sweepStaleTemps(out);
  const previous = continuing ? [] : runFilesIn(out);
  if (previous.length > 0 && !overwrite) {
    await release();
    await removeEmptyDirs(made);
    const named = previous.length > 3 ? `${previous.slice(0, 3).join(', ')}, …` : previous.join(', ');
    // only a checkpoint makes a run resumable (a run killed before its first one leaves config.json and the CSVs)
    const what = previous.includes(LAST) ? `a run (${named}); continue it with --resume ${out}, replace it with --overwrite`
      : `the files of a run that saved no checkpoint (${named}), so there is nothing to resume; replace them with --overwrite`;
    throw new UsageError(`--out ${out}: already holds ${what}, or leave out --out to start a new numbered run in ${MODELS_ROOT}/`);
  }
  // replacing: nothing of the old run may stay behind to be mistaken for the new one's
  const replaced = previous.length > 0 ? [...previous, ...RUN_CHARTS].map((f) => join(out, f)) : [];
  await withPlots(plots === '' ? out : plots, made, release);
  return { out, plots: plots === '' ? out : plots, created: null, createdPlots: null, made, replaced, release };
}

/**
 * Makes the charts' folder and proves it writable (adding what it made to `made`); if it cannot be, gives
 * the run's folder up again and removes the folders made so far.
 */
async function withPlots(plots: string, made: string[], release: () => Promise<void>): Promise<void> {
  try {
    const more = await ensureWritableDir(resolve(plots), '--plots');
    trackDirs(more);
    made.push(...more);
    await sweepStaleTemps(plots);
  } catch (e) {
    await release();
    await removeEmptyDirs(made);
    throw e;
  }
}

/** The locks this process holds on run folders. */
const heldLocks = new Map<string, string>();

/**
 * For a process that must exit at once (a signal before training started): gives up its locks and removes
 * the folders it made for the run (and a dataset folder being downloaded into), if still empty. Synchronous,
 * so it can run right before process.exit.
 */
export function abandonRunFolders(): void {
  for (const [lock, token] of heldLocks) {
    try {
      if (readFileSync(lock, 'utf8') === token) unlinkSync(lock);
    } catch { /* gone already */ }
  }
  heldLocks.clear();
  removeTrackedDirsSync();
}

/** The file by which a run holds its folder while it trains; it names the process. */
export const LOCK_FILE = '.mnist-par.lock';

/**
 * Claims `dir` for this run: creates LOCK_FILE exclusively. A lock whose process is gone (a run killed with
 * SIGKILL, a power cut) is taken over; one whose process is alive is refused with one line, naming `flag`,
 * the option that chose the folder (--out, or --resume for a run continued in its own folder). Returns the
 * release, which removes the lock.
 */
async function claimFolder(dir: string, flag: '--out' | '--resume' = '--out'): Promise<() => Promise<void>> {
  const lock = join(dir, LOCK_FILE);
  const token = `${process.pid} ${randomBytes(6).toString('hex')}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(lock, token, { flag: 'wx' });
      heldLocks.set(lock, token);
      break;
    } catch (e) {
      const elsewhere = flag === '--out' ? 'choose another --out' : 'continue it in another folder with --out <dir>';
      if (errorCode(e) !== 'EEXIST' || attempt > 0) {
        throw new UserError(`${flag} ${dir}: cannot claim the folder for this run (${errorCode(e)}); ${elsewhere}`);
      }
      const holder = Number((await readFile(lock, 'utf8').catch(() => '')).split(' ')[0]);
      if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) {
        throw new UsageError(`${flag} ${dir}: in use by another mnist-par run (process ${holder}); wait for it to end, or ${elsewhere}`);
      }
      await unlink(lock).catch(() => {});
    }
  }
  return async () => {
    heldLocks.delete(lock);
    // only our own lock: never one a later run took over
    if ((await readFile(lock, 'utf8').catch(() => '')) === token) await unlink(lock).catch(() => {});
  };
}

/** Makes `root`/run-N for the next free N (safe against a second run starting at the same moment); `made`
 *  lists the folders made, `root` too when it was missing. */
async function createRunFolder(root: string): Promise<{ dir: string; made: string[] }> {
  let made: string[];
  try {
    made = await makeDir(root);
  } catch (e) {
    throw new UserError(`${root}: cannot create the folder for the runs (${errorCode(e)}); run from a writable directory or pass --out <dir>`);
  }
  for (let n = Number(RUN_NAME.exec(basename(runFolders(root)[0] ?? 'run-0'))![1]) + 1; ; n++) {
    const dir = join(root, `run-${n}`);
    try {
      await mkdir(dir);
      return { dir, made: [...made, resolve(dir)] };
    } catch (e) {
      // a run that failed at this moment removed `root` (it made it, and it was empty): make it again
      if (errorCode(e) === 'ENOENT' && made.length === 0 && (made = await makeDir(root).catch(() => [])).length > 0) {
        n--;
        continue;
      }
      if (errorCode(e) !== 'EEXIST') {
        await removeEmptyDirs(made);
        throw new UserError(`${dir}: cannot create the run folder (${errorCode(e)}); run from a writable directory or pass --out <dir>`);
      }
    }
  }
}

/**
 * Points `root`/latest at the run folder `dir` (one of its children), replacing the link atomically. A
 * `latest` that is not a link (someone's own folder) is left alone, as is a file system without links.
 */
export async function pointLatest(root: string, dir: string): Promise<void> {
  const link = join(root, LATEST);
  const tmp = tmpName(link);
  // Windows makes directory junctions without extra rights, but they need an absolute target
  const target = process.platform === 'win32' ? resolve(dir) : relative(root, dir);
  try {
    await unlink(tmp).catch(() => {});
    await symlink(target, tmp, 'junction');
    await rename(tmp, link);
  } catch {
    await unlink(tmp).catch(() => {});
  }
}

/**
 * A run's folder for messages and configs: relative to the working directory when inside it, with links
 * resolved (models/latest is re-pointed by every new run, so a run must never keep writing through it).
 */
export function realFolder(dir: string): string {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return dir;
  }
  const rel = relative(process.cwd(), real);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : real;
}

/** Where a resumed run writes, and where its data is: `out`, `plots`, `dataDir`, `data` and `test` for its configuration. */
export interface ResumedPlaces {
  out: string;
  plots: string;
  dataDir: string;
  data: string;
  test: string;
}

/**
 * The places of a resumed run. It continues in its checkpoint's real folder (not a link); its charts stay
 * where they were (plots/run-N), or beside the run when they were beside it; given a new --out without
 * --plots, beside that. The dataset folder and your own data's files, when relative, were relative to where
 * the run started.
 */
export function resumedPlaces(checkpointFile: string, saved: { out: string; plots: string; dataDir: string; data?: string; test?: string },
                              startDir: string,
                              given: { out?: unknown; plots?: unknown }): ResumedPlaces {
  const home = realFolder(dirname(checkpointFile));
  const at = (p: string) => (isAbsolute(p) ? p : resolve(startDir || process.cwd(), p));
  const besideRun = at(saved.plots) === at(saved.out);
  let plots = storedPath(saved.plots, startDir);
  if (given.out !== undefined && given.plots === undefined) plots = '';
  else if (besideRun) plots = home;
  const own = (p: string | undefined) => (p ? storedPath(p, startDir) : '');
  return { out: home, plots, dataDir: storedPath(saved.dataDir, startDir), data: own(saved.data), test: own(saved.test) };
}

/**
 * A path stored in a checkpoint's configuration, for the run that resumes it: relative paths were relative to
 * the folder the run started in (`startDir`), wherever the resumed run starts. Used as given when that folder
 * is gone (the project was moved) and the path is relative.
 */
export function storedPath(path: string, startDir: string | undefined): string {
  if (isAbsolute(path) || !startDir || !isDir(startDir)) return path;
  const abs = resolve(startDir, path);
  const rel = relative(process.cwd(), abs);
  // keep messages short when the run resumes from the same folder (or one above it)
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
}

/**
 * Refuses to continue an older checkpoint of a run (checkpoint-best, or a copy) in its own folder when that
 * folder's checkpoint-last is further on: continuing would replace it and cut the metrics back, losing the
 * later epochs. --overwrite says that is meant; --out <dir> continues it elsewhere.
 */
export async function refuseRewind(checkpointFile: string, step: number, out: string, overwrite: boolean): Promise<void> {
  const home = dirname(checkpointFile);
  const last = join(home, LAST);
  if (overwrite || realFolder(out) !== realFolder(home) || realFolder(checkpointFile) === realFolder(last) || !existsSync(last)) return;
  const later = await loadCheckpoint(last).then((c) => c.state.step, () => null);
  if (later !== null && later > step) {
    throw new UsageError(`--resume ${checkpointFile}: continuing it in ${home} would replace ${LAST} (step ${later}) and cut the ` +
      `metrics back to step ${step}; pass --out <dir> to continue it in another folder, or --overwrite to go back to it here`);
  }
}

