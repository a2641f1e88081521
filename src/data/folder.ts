// An image folder: PATH/<class name>/<image>.{png,jpg,jpeg,webp}, one folder per class, as torchvision's
// ImageFolder reads it. The class names are the folder names, sorted (by code point, as Python's sorted());
// folders and files whose names start with a dot are left out, and so are files with other extensions
// (counted, so the caller can say so). Each image goes through loadDigitImage, the preprocessing `predict`
// applies: greyscale, cropped to the ink, fitted into 20×20 and centred by mass in 28×28.
//
// Decoding is the cost (about half a millisecond of CPU per small PNG, mostly in sharp, which runs on libuv's
// thread pool): IN_FLIGHT images are decoded at once, enough to keep that pool and the main thread busy
// without holding thousands of buffers.
import { readdirSync, statSync, type Dirent } from 'node:fs';
import { join } from 'node:path';
import { printable, UserError } from '../errors.js';
import { IMAGE_PIXELS, MAX_CLASSES, MIN_CLASSES } from './datasets.js';
import { loadDigitImage } from './image.js';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'] as const;
/** Images decoded at once: a few more than libuv's 4 threads, so that none waits for the main thread. */
export const IN_FLIGHT = 8;

export interface FolderImages {
  /** count × 784 pixels, row-major, class by class in name order and within a class by file name */
  images: Uint8Array;
  /** class indices into `classes` */
  labels: Uint16Array;
  count: number;
  /** the class folders' names, sorted */
  classes: string[];
  /** files in class folders that are not images by their extension */
  skipped: number;
}

/** Progress of a load: images done of the total. */
export type Progress = (done: number, total: number) => void;

const extensionOf = (name: string): string => {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? '' : name.slice(dot).toLowerCase();
};

const byCodePoint = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function entries(dir: string, what: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    throw new UserError(`${dir}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); check the path and its permissions`);
  }
}

/** A directory entry that is a folder, following a symbolic link. */
function isFolder(dir: string, e: Dirent): boolean {
  if (e.isDirectory()) return true;
  if (!e.isSymbolicLink()) return false;
  try {
    return statSync(join(dir, e.name)).isDirectory();
  } catch {
    return false;
  }
}

/** The class folders and their image files, checked: 2 to 1,000 classes, each with at least one image. */
export function listImageFolder(dir: string): { classes: string[]; files: string[][]; skipped: number } {
  const classes = entries(dir, 'the image folder')
    .filter((e) => !e.name.startsWith('.') && isFolder(dir, e))
    .map((e) => e.name)
    .sort(byCodePoint);
  const layout = `${dir}/<class name>/*.png (or .jpg, .jpeg, .webp), one folder per class`;
  if (classes.length === 0) throw new UserError(`${dir}: holds no class folders; expected ${layout}`);
  if (classes.length < MIN_CLASSES) {
    throw new UserError(`${dir}: holds one class folder (${printable(classes[0])}), at least ${MIN_CLASSES} are needed to tell classes apart; expected ${layout}`);
  }
  if (classes.length > MAX_CLASSES) {
    throw new UserError(`${dir}: holds ${classes.length} class folders, more than the ${MAX_CLASSES} classes mnist-par trains; merge classes or use fewer`);
  }
  let skipped = 0;
  const files = classes.map((c) => {
    const sub = join(dir, c);
    const all = entries(sub, 'the class folder').filter((e) => !e.name.startsWith('.') && !isFolder(sub, e));
    const images = all.filter((e) => (IMAGE_EXTENSIONS as readonly string[]).includes(extensionOf(e.name))).map((e) => e.name).sort(byCodePoint);
    skipped += all.length - images.length;
    if (images.length === 0) {
      throw new UserError(`${sub}: class folder ${printable(c)} holds no images; expected files ending in ${IMAGE_EXTENSIONS.join(', ')}`);
    }
    return images.map((f) => join(sub, f));
  });
  return { classes, files, skipped };
}

/**
 * Loads every image of the folder, IN_FLIGHT at a time; the first image that cannot be used stops the load
 * with its own message (it names the file). `progress` is called after each image.
 */
export async function readImageFolder(dir: string, progress?: Progress): Promise<FolderImages> {
  const { classes, files, skipped } = listImageFolder(dir);
  const paths = files.flat();
  const labels = new Uint16Array(paths.length);
  let at = 0;
  files.forEach((list, c) => {
    labels.fill(c, at, at + list.length);
    at += list.length;
  });
  const images = new Uint8Array(paths.length * IMAGE_PIXELS);
  let next = 0;
  let done = 0;
  let failure: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (failure === null && next < paths.length) {
      const i = next++;
      try {
        images.set(await loadDigitImage(paths[i]), i * IMAGE_PIXELS);
      } catch (e) {
        failure ??= { error: e }; // the first to fail is reported; the others stop after their image
        return;
      }
      progress?.(++done, paths.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, paths.length) }, worker));
  if (failure !== null) throw (failure as { error: unknown }).error;
  return { images, labels, count: paths.length, classes, skipped };
}
