// The datasets we know: where to fetch each file, what it must hash to, and how to normalize its pixels.
// Both datasets use the same four file names in the original gzipped IDX format (28×28 uint8 images).
// Your own data (--data, data/own.ts) brings its own classes and normalization: DataInfo is what a model
// needs to know of either.

/** Every image of every dataset we know is IMAGE_SIDE × IMAGE_SIDE uint8 pixels, row-major. */
export const IMAGE_SIDE = 28;
/** Pixels of one image: the network's input width. */
export const IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE;
/** Classes of every dataset we know (labels 0..9): the network's output width for them. */
export const CLASS_COUNT = 10;
/** Your own data may have from MIN_CLASSES to MAX_CLASSES classes. */
export const MIN_CLASSES = 2;
export const MAX_CLASSES = 1000;

/** Class indices, one per image: 0..classes−1 (uint8 as the IDX files hold them, uint16 for more classes). */
export type Labels = Uint8Array | Uint16Array;

/**
 * What a model needs to know about the data it learns from: the class names, in the order of the network's
 * outputs, and the pixel normalization x ↦ (x/255 − mean) / std.
 */
export interface DataInfo {
  /** for titles: "MNIST handwritten digits", or the name of your data's file or folder */
  title: string;
  classes: readonly string[];
  mean: number;
  std: number;
}

export type DatasetName = 'mnist' | 'fashion-mnist';
export type SplitName = 'train' | 'test';

/** The images a dataset's splits hold, and the pixels of one image (what a run's arena is sized by). */
export interface SplitSizes {
  train: number;
  test: number;
  pixels: number;
  /** the classes of the labels (default: MNIST's 10) */
  classes?: number;
}

export interface DatasetFile {
  name: string;
  /** exact size of the .gz file in bytes */
  bytes: number;
  /** lowercase hex sha256 of the .gz file */
  sha256: string;
}

export interface DatasetInfo {
  name: DatasetName;
  title: string;
  /** the four files: train images, train labels, test images, test labels */
  files: readonly DatasetFile[];
  /** base URLs (ending in '/'), tried in order; a file's URL is base + file name */
  mirrors: readonly string[];
  /** pixel statistics of the training set after scaling to [0, 1]: x ↦ (x/255 − mean) / std */
  mean: number;
  std: number;
  classes: readonly string[];
  /** images in each split, as the files hold them (what a run uses without --limit-train / --limit-test) */
  counts: Readonly<Record<SplitName, number>>;
}

/** The file names of one split; identical for every dataset. */
export const SPLIT_FILES: Record<SplitName, { images: string; labels: string }> = {
  train: { images: 'train-images-idx3-ubyte.gz', labels: 'train-labels-idx1-ubyte.gz' },
  test: { images: 't10k-images-idx3-ubyte.gz', labels: 't10k-labels-idx1-ubyte.gz' },
};

function files(sizes: [number, number, number, number], sums: [string, string, string, string]): DatasetFile[] {
  const names = [SPLIT_FILES.train.images, SPLIT_FILES.train.labels, SPLIT_FILES.test.images, SPLIT_FILES.test.labels];
  return names.map((name, i) => ({ name, bytes: sizes[i], sha256: sums[i] }));
}

export const DATASETS: Record<DatasetName, DatasetInfo> = {
  mnist: {
    name: 'mnist',
    title: 'MNIST handwritten digits',
    files: files(
      [9912422, 28881, 1648877, 4542],
      [
        '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609',
        '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c',
        '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6',
        'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6',
      ],
    ),
    // The original site (last) often refuses automated downloads, so the copies torchvision uses come first.
    mirrors: [
      'https://ossci-datasets.s3.amazonaws.com/mnist/',
      'https://storage.googleapis.com/cvdf-datasets/mnist/',
      'http://yann.lecun.com/exdb/mnist/',
    ],
    mean: 0.1307,
    std: 0.3081,
    classes: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
    counts: { train: 60_000, test: 10_000 },
  },
  'fashion-mnist': {
    name: 'fashion-mnist',
    title: 'Fashion-MNIST (Zalando article images)',
    files: files(
      [26421880, 29515, 4422102, 5148],
      [
        '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
        'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
        '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
        '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
      ],
    ),
    mirrors: [
      'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
      'https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/',
    ],
    mean: 0.286,
    std: 0.353,
    classes: ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'],
    counts: { train: 60_000, test: 10_000 },
  },
};

export const DATASET_NAMES = Object.keys(DATASETS) as DatasetName[];

/** A built-in dataset's classes and normalization constants. */
export function datasetInfo(name: DatasetName): DataInfo {
  const { title, classes, mean, std } = DATASETS[name];
  return { title, classes, mean, std };
}

export function isDatasetName(s: string): s is DatasetName {
  return Object.hasOwn(DATASETS, s);
}

/**
 * x ↦ (x/255 − mean)/std for every pixel value 0..255, as float32. Training, evaluation and predict all
 * normalize through this one table, so the same pixel gives the same float32 everywhere.
 */
export function normalizationTable(mean: number, std: number): Float32Array {
  return new Float32Array(256).map((_, v) => (v / 255 - mean) / std);
}

/**
 * The other known datasets whose file of this name (train-images-idx3-ubyte.gz, …) has exactly this size:
 * a file of `dataset` whose size is another's may be that other dataset's copy (the sha256 then decides).
 * None when the size is `dataset`'s own: sizes are checked on every load, hashes only on this rare path.
 */
export function othersOfSize(dataset: DatasetName, name: string, size: number): { info: DatasetInfo; file: DatasetFile }[] {
  if (DATASETS[dataset].files.some((f) => f.name === name && f.bytes === size)) return [];
  return Object.values(DATASETS).flatMap((info) =>
    info.name === dataset ? [] : info.files.filter((f) => f.name === name && f.bytes === size).map((file) => ({ info, file })));
}

