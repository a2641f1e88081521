// The files `serve` hands out: only those lying directly in one of its folders (the package's page, the run's
// charts), named by one URL path segment. What a URL may name is decided on the name alone, before the file
// system is asked: one segment of letters, digits, '.', '_' and '-' that does not start with a dot, with an
// extension the folder serves. So `..`, however encoded (%2e%2e, %252e%252e), a slash or backslash (%2f,
// %5c), an absolute path, a NUL byte or a hidden file never reach the file system. A name that is a symbolic
// link is refused too (it could point anywhere), as is anything but a regular file.
import { constants } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import { extname, join } from 'node:path';

/** The content types of what the page's folder and the charts' folder hold. */
export const PAGE_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};
export const CHART_TYPES: Readonly<Record<string, string>> = { '.png': 'image/png' };

/** Larger than any page file or chart: a file past this is not one of ours. */
const MAX_STATIC_BYTES = 32 << 20;
const SAFE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

/** A folder that serves files, and the types it serves. */
export interface StaticRoot {
  dir: string;
  types: Readonly<Record<string, string>>;
}

/**
 * The name a URL path segment gives (percent-decoded once), when it may name a file of `root`; null
 * otherwise. Decides on the text alone.
 */
export function fileName(root: StaticRoot, segment: string): string | null {
  let name: string;
  try {
    name = decodeURIComponent(segment);
  } catch {
    return null; // a malformed escape such as %zz or %e0%80
  }
  if (name.length > 255 || !SAFE_NAME.test(name)) return null;
  return Object.hasOwn(root.types, extname(name)) ? name : null;
}

/**
 * The contents and type of the file that `segment` names directly in `root`, or null when it names nothing
 * this root serves: a name fileName() refuses, no such file, a link, a folder, a device.
 */
export async function readStatic(root: StaticRoot, segment: string): Promise<{ body: Buffer; type: string } | null> {
  const name = fileName(root, segment);
  if (name === null) return null;
  let path: string;
  let fh;
  try {
    // the folder itself may be reached through links (plots/latest); the file may not
    path = join(await realpath(root.dir), name);
    // O_NOFOLLOW: a link in the file's place fails here (ELOOP) instead of being followed; O_NONBLOCK: a
    // named pipe opens at once (and is then refused) instead of waiting for a writer
    fh = await open(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0));
  } catch {
    return null;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > MAX_STATIC_BYTES) return null;
    // where O_NOFOLLOW does not exist (Windows): the file's real path must be the one asked for
    if (!constants.O_NOFOLLOW && (await realpath(path)) !== path) return null;
    return { body: await fh.readFile(), type: root.types[extname(name)] };
  } finally {
    await fh.close();
  }
}
