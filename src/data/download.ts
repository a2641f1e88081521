// Fetches a dataset's four .gz files from its mirrors into a folder.
//
// Policy: a file already in the folder is trusted when its size is right (a cheap stat; the IDX parser
// validates the contents on every load anyway); `verify: true` re-hashes present files too. A present file
// with the wrong size (or the wrong sha256 under `verify`) is never overwritten: it may be another dataset's
// file (MNIST and Fashion-MNIST share file names) or the user's own, so the download refuses with a message
// naming it, before fetching anything. Only missing files are fetched. Each file tries the mirrors in
// order; the body is hashed as it streams in and only a file whose size and sha256 match is written,
// atomically, so a failed or interrupted download never leaves anything behind in the folder.
//
// We use node:http/https rather than fetch because fetch transparently gunzips a response that a server
// labels `Content-Encoding: gzip`, and then the bytes would no longer be the .gz file we hash.
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { UserError } from '../errors.js';
import { makeDir, removeEmptyDirs, sweepStaleTemps, trackDirs, untrackDirs, writeFileAtomic } from '../fsutil.js';
import { DATASETS, type DatasetFile, type DatasetName } from './datasets.js';

export interface DownloadOptions {
  /** base URLs to try in order instead of the dataset's own; a file's URL is base + '/' + file name */
  mirrors?: string[];
  /** one line per event worth telling the user (a mirror rejected, a file saved) */
  log?: (line: string) => void;
  progress?: (file: string, received: number, total: number | null) => void;
  /** give up on a mirror after this long without any data (connecting or mid-body); default 30 s */
  timeoutMs?: number;
  /** also sha256 the files already present, not only their size */
  verify?: boolean;
  /** abandons the download (the request in flight too): rejects with the signal's reason */
  signal?: AbortSignal;
}

const MAX_REDIRECTS = 5;

/** Names of the dataset's files that are absent from `dir`. */
export function missingFiles(name: DatasetName, dir: string): string[] {
  return DATASETS[name].files.filter((f) => !isFile(join(dir, f.name))).map((f) => f.name);
}

/**
 * Downloads whichever of the dataset's files are missing (or stale, see the policy above) into `dir`. A
 * download that fails or is abandoned also removes the folders it made for them, when they stayed empty.
 */
export async function downloadDataset(name: DatasetName, dir: string, opts: DownloadOptions = {}): Promise<void> {
  let made: string[];
  try {
    made = await makeDir(dir);
  } catch (e) {
    throw new UserError(`cannot create the data directory ${dir} (${(e as Error).message}); pass --data-dir with a writable folder`);
  }
  // a process that must leave at once (a signal before training) removes them too
  trackDirs(made);
  // an earlier download cut short (a second Ctrl-C, a SIGKILL) may have left a temporary file
  await sweepStaleTemps(dir);
  try {
    await downloadInto(name, dir, opts);
    untrackDirs(made);
  } catch (e) {
    await removeEmptyDirs(made);
    throw e;
  }
}

async function downloadInto(name: DatasetName, dir: string, opts: DownloadOptions): Promise<void> {
  const info = DATASETS[name];
  const mirrors = (opts.mirrors ?? info.mirrors).map((m) => (m.endsWith('/') ? m : m + '/'));
  const log = opts.log ?? (() => {});
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const wanted: DatasetFile[] = [];
  const wrong: string[] = [];
  for (const f of info.files) {
    const stale = await whyRefetch(join(dir, f.name), f, opts.verify ?? false);
    if (stale === 'missing') wanted.push(f);
    else if (stale !== null) wrong.push(`${f.name} (${stale})`);
  }
  if (wrong.length > 0) {
    throw new UserError(`${dir} holds ${wrong.join(', ')}: not the ${info.title} files (another dataset's, or damaged); ` +
      `check --dataset, or delete ${wrong.length > 1 ? 'them' : 'it'} to download fresh copies`);
  }
  const failed: string[] = [];
  for (const f of wanted) {
    const path = join(dir, f.name);

    let data: Uint8Array | null = null;
    let lastError = 'no mirrors given';
    for (const [i, base] of mirrors.entries()) {
      const url = base + f.name;
      opts.signal?.throwIfAborted();
      try {
        data = await fetchVerified(url, f, timeoutMs, opts.progress, opts.signal);
        log(`${f.name}: ${f.bytes} bytes from ${url}, sha256 ok`);
        break;
      } catch (e) {
        opts.signal?.throwIfAborted();
        lastError = (e as Error).message;
        log(`${url}: ${lastError}; ${i + 1 < mirrors.length ? 'trying the next mirror' : 'no mirrors left'}`);
      }
    }
    if (data === null) {
      failed.push(`${f.name} (${lastError})`);
      continue;
    }
    try {
      await writeFileAtomic(path, data);
    } catch (e) {
      if (e instanceof UserError) throw e; // a full disk says so itself
      throw new UserError(`cannot write ${path} (${(e as Error).message}); pass --data-dir with a writable folder`);
    }
  }
  if (failed.length > 0) {
    throw new UserError(
      `could not download ${name} into ${dir}: still missing ${failed.join(', ')} after trying ${mirrors.length} mirror(s); ` +
        `download them from ${mirrors[0] ?? info.mirrors[0]} or place the original .gz files there, or pass --data-dir with a folder that holds them`,
    );
  }
}

/**
 * Downloads the dataset if any of its files is absent from `dir`; does nothing (and touches no network)
 * when all four are there. `offlineHint` is appended to the error when the download fails.
 */
export async function ensureDataset(
  name: DatasetName,
  dir: string,
  opts: DownloadOptions & { offlineHint?: string } = {},
): Promise<void> {
  const missing = missingFiles(name, dir);
  if (missing.length === 0) return;
  opts.log?.(`${name}: ${missing.join(', ')} not in ${dir}; downloading`);
  try {
    await downloadDataset(name, dir, opts);
  } catch (e) {
    if (e instanceof UserError && opts.offlineHint) throw new UserError(`${e.message}; ${opts.offlineHint}`, e.exitCode);
    throw e;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** null when the present file can be kept, else why it must be fetched ('missing' when absent). */
async function whyRefetch(path: string, f: DatasetFile, verify: boolean): Promise<string | null> {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new UserError(`${path} exists but is not a regular file; move it away or pass another --data-dir`);
    size = s.size;
  } catch (e) {
    if (e instanceof UserError) throw e;
    return 'missing';
  }
  if (size !== f.bytes) return `size ${size} bytes, expected ${f.bytes}`;
  if (!verify) return null;
  const sum = createHash('sha256').update(await readFile(path)).digest('hex');
  return sum === f.sha256 ? null : `sha256 ${sum.slice(0, 12)}…, expected ${f.sha256.slice(0, 12)}…`;
}

/** GETs `url` and returns its body, or throws a one-phrase reason (HTTP status, network, size, sha256). */
async function fetchVerified(
  url: string,
  f: DatasetFile,
  timeoutMs: number,
  progress: DownloadOptions['progress'],
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  const timeout = { hit: false };
  const res = await get(url, timeoutMs, timeout, signal);
  const out = new Uint8Array(f.bytes);
  const hash = createHash('sha256');
  let received = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      if (received + chunk.length > f.bytes) throw new Error(`body is longer than the expected ${f.bytes} bytes`);
      out.set(chunk, received);
      received += chunk.length;
      hash.update(chunk);
      progress?.(f.name, received, f.bytes);
    }
  } catch (e) {
    res.destroy();
    if (timeout.hit) throw new Error(`no data for ${timeoutMs} ms after ${received} bytes`);
    throw e;
  }
  if (received !== f.bytes) throw new Error(`body is ${received} bytes, expected ${f.bytes}`);
  const sum = hash.digest('hex');
  if (sum !== f.sha256) throw new Error(`sha256 mismatch: got ${sum.slice(0, 12)}…, expected ${f.sha256.slice(0, 12)}…`);
  return out;
}

/** Resolves with a 200 response after following redirects; the socket times out after `timeoutMs` idle. */
function get(url: string, timeoutMs: number, timeout: { hit: boolean }, signal: AbortSignal | undefined, hops = 0): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return reject(new Error('not a valid URL'));
    }
    const client = u.protocol === 'https:' ? https : u.protocol === 'http:' ? http : null;
    if (client === null) return reject(new Error(`unsupported protocol ${u.protocol}`));
    // identity: we want the .gz bytes exactly as stored, never re-encoded in transit
    const req = client.get(u, { headers: { 'accept-encoding': 'identity', 'user-agent': 'mnist-par' }, signal }, (res) => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if (status >= 300 && status < 400 && location) {
        res.resume();
        req.setTimeout(0);
        if (hops >= MAX_REDIRECTS) return reject(new Error(`more than ${MAX_REDIRECTS} redirects`));
        let next: string;
        try {
          next = new URL(location, u).href;
        } catch {
          return reject(new Error(`redirect to an invalid address ${JSON.stringify(location)}`));
        }
        return resolve(get(next, timeoutMs, timeout, signal, hops + 1));
      }
      if (status !== 200) {
        res.resume();
        return reject(new Error(`HTTP ${status}${res.statusMessage ? ' ' + res.statusMessage : ''}`));
      }
      resolve(res);
    });
    req.setTimeout(timeoutMs, () => {
      timeout.hit = true;
      req.destroy(new Error(`no response within ${timeoutMs} ms`));
    });
    req.on('error', reject);
  });
}
