// The resolved training configuration: its type, its defaults, and validate(), whose every message names
// the flag and the accepted values. Sources, lowest precedence first: DEFAULTS, a --config JSON file (read by
// readConfigFile), flags. Also the one place every command's flags are checked: the lists of choices, the
// integer limits, and the checks (checkInt, checkChoice, ...) that train, eval, predict and bench all use, so
// a flag is refused with the same words wherever it is given.
import { closeSync, openSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { DATASET_NAMES, type DatasetName } from './data/datasets.js';
import { printable, UsageError } from './errors.js';
import { DEFAULT_CHANNELS, DEFAULT_CNN_HIDDEN, DEFAULT_HIDDEN, MAX_CONV_LAYERS, MODEL_KINDS, withClasses, type ModelSpec } from './model.js';
import type { OptimizerConfig } from './optim.js';

export { DATASET_NAMES };
export const OPTIMIZERS = ['sgd', 'adam', 'adamw'] as const;
export const SCHEDULES = ['none', 'step', 'cosine', 'onecycle'] as const;
export const KERNEL_CHOICES = ['auto', 'native', 'relaxed', 'simd', 'js'] as const;
/** lockstep is the only pipeline; `tasks` (Piscina tasks per step) was removed, see LEGACY_PIPELINE */
export const PIPELINES = ['lockstep'] as const;
/**
 * The removed per-step tasks pipeline. It computed the same bytes as lockstep, so a configuration saved with
 * it (a checkpoint's, a run folder's config.json given to --config) runs lockstep; the flag itself is refused
 * with a message that says so, since whoever types it expects that pipeline.
 */
const LEGACY_PIPELINE = 'tasks';
/**
 * Fields that were removed. A configuration saved with one (a checkpoint's, a run folder's config.json given to
 * --config) still loads, the field ignored; the flag itself is refused with REMOVED_FLAG's message.
 */
const REMOVED_KEYS: readonly string[] = ['shards'];
/** Why --shards went, for whoever types it. */
export const REMOVED_SHARDS = '--shards: removed; every thread now gets an equal share of each batch in blocks of 8 rows, ' +
  'and the gradient is all-reduced without per-shard slots, so there is nothing to choose; leave the flag out';
export const MONITORS = ['val_loss', 'val_accuracy'] as const;
/** The cnn's default --epochs (DEFAULTS.epochs is the mlp's). */
export const DEFAULT_CNN_EPOCHS = 6;
export { MODEL_KINDS };

export interface Config {
  dataset: DatasetName;
  /** folder holding the four IDX .gz files; default datasets/<dataset> */
  dataDir: string;
  /** download missing dataset files from the mirrors before training */
  download: boolean;
  /** your own training data instead of --dataset (data/own.ts): a folder of IDX files, a Kaggle-layout .csv
   *  file or a folder of class folders of images; '' (the default): the built-in dataset */
  data: string;
  /** with --data: the test set, in any of the same layouts; '' (the default): the data's own test split (an
   *  IDX folder's t10k files), else a held-out --val-split share of the training data */
  test: string;
  /** with --data and no test set: the share of the training data held out for validation, stratified by class */
  valSplit: number;
  threads: number;
  /** give every thread rows and outputs even when threads outnumber cores (by default only as many as there are
   *  cores get work): slower, the same bytes; for checking the split */
  oversubscribe: boolean;
  kernels: (typeof KERNEL_CHOICES)[number];
  pipeline: (typeof PIPELINES)[number];
  epochs: number;
  batchSize: number;
  /** 0 = the whole training set */
  limitTrain: number;
  /** 0 = the whole test set */
  limitTest: number;
  /** which network (model.ts): the fully connected mlp or the convolutional cnn */
  model: (typeof MODEL_KINDS)[number];
  /** hidden linear widths; left out: 128,256,512,128 for the mlp, 128 for the cnn */
  hidden: number[];
  /** the cnn's convolution output channels, c1,c2 (ignored by the mlp) */
  channels: number[];
  seed: number;
  optimizer: (typeof OPTIMIZERS)[number];
  lr: number;
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  schedule: (typeof SCHEDULES)[number];
  warmup: number;
  stepSize: number;
  gamma: number;
  minLr: number;
  labelSmoothing: number;
  /** random affine augmentation of the training images */
  augment: boolean;
  /** early stopping: epochs without improvement of `monitor` before stopping (0 = never stop early) */
  patience: number;
  /** smallest change of `monitor` that counts as an improvement */
  minDelta: number;
  monitor: (typeof MONITORS)[number];
  /** the run's folder; '' (the default): a new numbered folder models/run-N (runs.ts) */
  out: string;
  /** where the PNG charts go, refreshed at the end of every epoch; '' (the default): plots/run-N for a
   *  numbered run, else the --out folder */
  plots: string;
  /** let --out name a folder that holds an earlier run, replacing that run's files */
  overwrite: boolean;
  /** full-screen dashboard when stdout is a terminal */
  dashboard: boolean;
  /** JSON lines instead of plain lines (implies no dashboard) */
  json: boolean;
  logEvery: number;
}

export const DEFAULTS: Readonly<Omit<Config, 'dataDir'>> & { dataDir: string } = {
  dataset: 'mnist',
  dataDir: '', // resolved to datasets/<dataset>
  download: true,
  data: '', // the built-in dataset
  test: '',
  valSplit: 0.1,
  threads: availableParallelism(),
  oversubscribe: false,
  kernels: 'auto',
  pipeline: 'lockstep',
  epochs: 5,
  batchSize: 256,
  limitTrain: 0,
  limitTest: 0,
  model: 'mlp',
  hidden: [...DEFAULT_HIDDEN], // the cnn's when --model cnn leaves it out (validate)
  channels: [...DEFAULT_CHANNELS],
  seed: 42,
  optimizer: 'adamw',
  lr: 5e-3,
  momentum: 0.9,
  nesterov: false,
  weightDecay: 1e-4,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  schedule: 'onecycle',
  warmup: 0.25,
  stepSize: 2,
  gamma: 0.5,
  minLr: 0,
  labelSmoothing: 0.1,
  augment: false,
  patience: 0,
  minDelta: 0,
  monitor: 'val_loss',
  out: '', // a new models/run-N
  plots: '', // plots/run-N, or the --out folder
  overwrite: false,
  dashboard: true,
  json: false,
  logEvery: 100,
};

/** More hidden layers than this is no MLP for MNIST: a bound for what a file (a --config, a checkpoint) may ask for. */
export const MAX_HIDDEN_LAYERS = 64;

const BOOLEAN_KEYS: readonly (keyof Config)[] = ['download', 'nesterov', 'dashboard', 'json', 'augment', 'overwrite',
  'oversubscribe'];

/** Flag spelling of a config key, for messages: batchSize → --batch-size. */
export function flagName(key: string): string {
  return '--' + key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

export const INT_LIMITS = {
  threads: [1, 256],
  epochs: [1, 100000],
  batchSize: [1, 65536],
  limitTrain: [0, 1e9],
  limitTest: [0, 1e9],
  seed: [0, 0xffffffff],
  stepSize: [1, 100000],
  logEvery: [1, 1e9],
  patience: [0, 100000],
} as const satisfies Partial<Record<keyof Config, readonly [number, number]>>;

type RealLimits = readonly [min: number, max: number, expected: string];

const REAL_LIMITS: Partial<Record<keyof Config, RealLimits>> = {
  lr: [Number.MIN_VALUE, 10, 'a number > 0 and ≤ 10'],
  momentum: [0, 1, 'a number in [0, 1]'],
  weightDecay: [0, 1, 'a number in [0, 1]'],
  beta1: [0, 0.999999, 'a number in [0, 1)'],
  beta2: [0, 0.999999999, 'a number in [0, 1)'],
  eps: [Number.MIN_VALUE, 1, 'a number > 0 and ≤ 1'],
  warmup: [0, 0.99, 'a fraction in [0, 0.99]'],
  gamma: [Number.MIN_VALUE, 1, 'a number > 0 and ≤ 1'],
  minLr: [0, 10, 'a number ≥ 0'],
  labelSmoothing: [0, 0.99, 'a fraction in [0, 0.99]'],
  minDelta: [0, 1e9, 'a number ≥ 0'],
  valSplit: [Number.MIN_VALUE, 0.9, 'a fraction in (0, 0.9]'],
};

const CHOICES: Partial<Record<keyof Config, readonly string[]>> = {
  dataset: DATASET_NAMES,
  optimizer: OPTIMIZERS,
  schedule: SCHEDULES,
  kernels: KERNEL_CHOICES,
  pipeline: PIPELINES,
  monitor: MONITORS,
  model: MODEL_KINDS,
};

/** Parses one textual value (from the command line) for `key`; throws UsageError naming the flag. */
export function parseValue(key: keyof Config, text: string): unknown {
  const flag = flagName(key);
  if (key === 'hidden') return parseHidden(text);
  if (key === 'channels') return parseChannels(text);
  if (key === 'pipeline' && text === LEGACY_PIPELINE) {
    throw new UsageError(`${flag} ${LEGACY_PIPELINE}: that pipeline was removed (it gave the same bytes as lockstep, more slowly); ` +
      'leave the flag out or use --pipeline lockstep');
  }
  checkGivenPath(key, text);
  if (BOOLEAN_KEYS.includes(key)) {
    if (text === 'true') return true;
    if (text === 'false') return false;
    throw new UsageError(`${flag}: expected true or false, got ${show(text)}`);
  }
  // checked here, against the text as given, so that the message quotes it as eval's and predict's do
  const ints = (INT_LIMITS as Partial<Record<keyof Config, readonly [number, number]>>)[key];
  const reals = REAL_LIMITS[key];
  if (ints || reals) {
    const t = text.trim();
    const n = t === '' ? NaN : Number(t);
    return ints ? checkInt(flag, n, ints, show(text)) : checkReal(flag, n, reals!, show(text));
  }
  return text;
}

function parseHidden(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const widths = parts.map((s) => (/^\d+$/.test(s) ? Number(s) : NaN));
  if (parts.length === 0 || widths.some((w) => !Number.isInteger(w) || w < 1 || w > 8192)) {
    throw new UsageError(`--hidden: expected comma-separated layer widths, each an integer in 1..8192 (e.g. 128,256,512,128), got ${show(text)}`);
  }
  return widths;
}

function parseChannels(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const channels = parts.map((s) => (/^\d+$/.test(s) ? Number(s) : NaN));
  if (parts.length > MAX_CONV_LAYERS || channels.some((c) => !Number.isInteger(c) || c < 1 || c > MAX_CHANNELS)) {
    throw new UsageError(`--channels: expected one or two comma-separated channel counts, each an integer in 1..${MAX_CHANNELS} (e.g. 16,32), got ${show(text)}`);
  }
  return channels;
}

/** Convolution channels beyond this are no cnn for 28×28 digits (and would not fit the shared memory). */
export const MAX_CHANNELS = 1024;

/** `name` is how the field was spelled (noDownload for download), for the message. */
function checkKnown(key: string, name = key): void {
  if (!Object.hasOwn(DEFAULTS, key)) {
    const known = [...Object.keys(DEFAULTS), ...NEGATED_FLAGS.map((f) => `no${f[0].toUpperCase()}${f.slice(1)}`)];
    throw new UsageError(`unknown configuration field '${printable(name)}' (known: ${known.join(', ')})`);
  }
}

/** Checks one field on its own (validate() then checks the fields that depend on each other). */
function checkField(key: keyof Config, v: unknown, flag = flagName(key)): void {
  const ints = (INT_LIMITS as Partial<Record<keyof Config, readonly [number, number]>>)[key];
  const reals = REAL_LIMITS[key];
  const choices = CHOICES[key];
  if (ints) {
    checkInt(flag, v, ints);
  } else if (reals) {
    checkReal(flag, v, reals);
  } else if (choices) {
    checkChoice(flag, v, choices);
  } else if (key === 'hidden') {
    if (!Array.isArray(v) || v.length === 0 || v.some((w) => !Number.isInteger(w) || w < 1 || w > 8192)) {
      throw new UsageError(`--hidden: expected a list of layer widths, each an integer in 1..8192, got ${show(v)}`);
    }
    if (v.length > MAX_HIDDEN_LAYERS) throw new UsageError(`--hidden: expected at most ${MAX_HIDDEN_LAYERS} hidden layers, got ${v.length}`);
  } else if (key === 'channels') {
    if (!Array.isArray(v) || v.length === 0 || v.length > MAX_CONV_LAYERS || v.some((c) => !Number.isInteger(c) || c < 1 || c > MAX_CHANNELS)) {
      throw new UsageError(`--channels: expected a list of one or two channel counts, each an integer in 1..${MAX_CHANNELS}, got ${show(v)}`);
    }
  } else if (BOOLEAN_KEYS.includes(key)) {
    if (typeof v !== 'boolean') throw new UsageError(`${flag}: expected true or false, got ${show(v)}`);
  } else if (key === 'dataDir' || key === 'out' || key === 'plots' || key === 'data' || key === 'test') {
    if (typeof v !== 'string') throw new UsageError(`${flag}: expected a path, got ${show(v)}`);
  }
}

/**
 * --out and --plots left out are '' in a Config (a numbered run folder, runs.ts); given, as a flag or in a
 * --config file, they must name a folder. --data and --test given as flags must name something too (a
 * --config file may hold '', as a run's config.json does for "none").
 */
function checkGivenPath(key: string, v: unknown, flag = true): void {
  if ((key === 'out' || key === 'plots') && typeof v === 'string') parsePath(flagName(key), v, 'a directory path');
  if (flag && (key === 'data' || key === 'test') && typeof v === 'string') parsePath(flagName(key), v, 'a .csv file or a folder');
}

/**
 * Where the data comes from, given as flags, in a --config file or as library options: either a built-in
 * dataset (--dataset, --data-dir) or your own (--data, with --test or --val-split), never both. `given`
 * holds only what was given (a run's config.json, given to --config, holds '' for "no --data" and the
 * default --val-split).
 */
export function checkDataSources(given: Record<string, unknown>): void {
  const has = (key: string): boolean => given[key] !== undefined && given[key] !== '';
  if (has('data') && (has('dataset') || has('dataDir'))) {
    const other = [has('dataset') ? '--dataset' : '', has('dataDir') ? '--data-dir' : ''].filter(Boolean).join(' and ');
    throw new UsageError(`--data: give either --data (your own files) or ${other} (a built-in dataset), not both`);
  }
  if (has('test') && !has('data')) {
    throw new UsageError('--test: a test set goes with --data (your own training data); the built-in datasets bring their own');
  }
  if (given.valSplit !== undefined && given.valSplit !== DEFAULTS.valSplit && (!has('data') || has('test'))) {
    throw new UsageError(has('test')
      ? '--val-split: the test set comes from --test, so nothing is held out; give one of them'
      : '--val-split: the held-out share applies to --data (your own training data); the built-in datasets bring their own test split');
  }
}

// ---------------------------------------------------------------------------------------------------------
// The checks every command uses. `given` is how the refused value is shown (default: show(v)).

/** v, when it is an integer in [min, max]; otherwise a UsageError naming the flag. */
export function checkInt(flag: string, v: unknown, [min, max]: readonly [number, number], given = show(v)): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new UsageError(`${flag}: expected an integer in ${min}..${max}, got ${given}`);
  }
  return v;
}

/** v, when it is a finite number in [min, max]; otherwise a UsageError naming the flag and `expected`. */
export function checkReal(flag: string, v: unknown, [min, max, expected]: RealLimits, given = show(v)): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw new UsageError(`${flag}: expected ${expected}, got ${given}`);
  }
  return v;
}

/** v, when it is one of `choices`; otherwise a UsageError naming the flag and listing them. */
export function checkChoice<T extends string>(flag: string, v: unknown, choices: readonly T[], given = show(v)): T {
  if (typeof v !== 'string' || !(choices as readonly string[]).includes(v)) {
    throw new UsageError(`${flag}: expected one of ${choices.join(', ')}, got ${given}`);
  }
  return v as T;
}

// Flag text → value, for the flags that are not Config fields (eval, predict, bench): the same checks.

/** Digits only (blanks around them allowed), in [min, max]: '1.5', '1e3' and '' are refused. */
export function parseIntFlag(flag: string, text: string, min: number, max: number): number {
  return checkInt(flag, /^\s*\d+\s*$/.test(text) ? Number(text) : NaN, [min, max], show(text));
}

/** "1,2,4" → [1, 2, 4]: distinct integers in [min, max]; otherwise a one-line UsageError naming the flag. */
export function parseIntList(flag: string, text: string, min: number, max: number, example: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const values = parts.map((s) => (/^\d+$/.test(s) ? Number(s) : NaN));
  if (values.some((v) => !Number.isInteger(v) || v < min || v > max) || new Set(values).size !== values.length) {
    throw new UsageError(`${flag}: expected distinct comma-separated integers in ${min}..${max} (e.g. ${example}), got ${show(text)}`);
  }
  return values;
}

/** A number (as JavaScript reads it) within `limits`. */
export function parseRealFlag(flag: string, text: string, limits: RealLimits): number {
  return checkReal(flag, text.trim() === '' ? NaN : Number(text), limits, show(text));
}

export function parseChoice<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  return checkChoice(flag, text, choices, show(text));
}

/** A path that is not empty (nor only blanks). */
export function parsePath(flag: string, text: string, what = 'a path'): string {
  if (text.trim() === '') throw new UsageError(`${flag}: expected ${what}, got an empty string`);
  return text;
}

/** Checks every field of a merged configuration; returns it typed. Unknown keys are refused. */
export function validate(raw: Record<string, unknown>): Config {
  const cfg: Record<string, unknown> = { ...DEFAULTS };
  for (const [key, value] of Object.entries(raw)) {
    if (value === undefined || REMOVED_KEYS.includes(key)) continue;
    checkKnown(key);
    cfg[key] = key === 'pipeline' && value === LEGACY_PIPELINE ? 'lockstep' : value;
  }
  // --hidden left out: the chosen model's own default
  if (raw.hidden === undefined && raw.model === 'cnn') cfg.hidden = [...DEFAULT_CNN_HIDDEN];
  // --epochs left out: the cnn's six (its Fashion-MNIST accuracy needs the sixth; the mlp's five reach 98.0% by the fourth)
  if (raw.epochs === undefined && raw.model === 'cnn') cfg.epochs = DEFAULT_CNN_EPOCHS;
  for (const key of Object.keys(DEFAULTS) as (keyof Config)[]) checkField(key, cfg[key]);
  const c = cfg as unknown as Config;
  if (c.dataDir === '') c.dataDir = `datasets/${c.dataset}`;
  if (c.model === 'mlp' && c.channels.join(',') !== DEFAULT_CHANNELS.join(',')) {
    throw new UsageError(`--channels: only the cnn has convolution channels; add --model cnn, or leave --channels out`);
  }
  if (c.nesterov && (c.optimizer !== 'sgd' || c.momentum === 0)) {
    throw new UsageError('--nesterov: needs --optimizer sgd with --momentum > 0');
  }
  if (c.schedule === 'cosine' && c.minLr > c.lr) {
    throw new UsageError(`--min-lr: expected a value ≤ --lr (${c.lr}), got ${c.minLr}`);
  }
  return c;
}

/** The network a configuration trains, with `classes` outputs (the data's; default the built-in datasets' 10). */
export function modelSpec(c: Pick<Config, 'model' | 'hidden' | 'channels'>, classes?: number): ModelSpec {
  const spec: ModelSpec = c.model === 'cnn' ? { kind: 'cnn', channels: c.channels, hidden: c.hidden } : { kind: 'mlp', hidden: c.hidden };
  return classes === undefined ? spec : withClasses(spec, classes);
}

/** The optimizer a configuration trains with. */
export function optimizerConfig(cfg: Config): OptimizerConfig {
  return {
    optimizer: cfg.optimizer, momentum: cfg.momentum, dampening: 0, nesterov: cfg.nesterov,
    weightDecay: cfg.weightDecay, beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps,
  };
}

/** A value for a message: one line, at most about 80 characters, whatever a --config file holds. */
function show(v: unknown): string {
  if (typeof v === 'string') return printable(v) === v ? `'${v}'` : printable(v);
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    return Array.isArray(v) ? 'an array nested too deep' : 'an object nested too deep'; // for JSON.stringify's stack
  }
  // JSON text escapes control characters itself
  return text.length <= 80 ? text : `${text.slice(0, 80)}…`;
}

/** A configuration file larger than this is not one (the defaults written out take about 900 bytes). */
const MAX_CONFIG_BYTES = 1 << 20;

/**
 * The values of a --config JSON file, as the CLI reads them: each field checked on its own, so that an error
 * names the file; validate() checks the result merged with the flags. Every error is a UsageError naming the file.
 */
export function readConfigFile(path: string): Record<string, unknown> {
  const fail = (what: string): UsageError => new UsageError(`--config ${path}: ${what}`);
  let text: string;
  try {
    text = readCapped(path, MAX_CONFIG_BYTES);
  } catch (e) {
    if (e instanceof UsageError) throw fail(e.message);
    const err = e as NodeJS.ErrnoException;
    throw fail(`cannot read the file (${err.code ?? printable(err.message)}); give the path of a JSON file`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw fail(`not valid JSON (${printable((e as Error).message, 200)}); expected an object like {"epochs": 3}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw fail(`expected a JSON object of configuration fields, got ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}`);
  }
  try {
    return configFields(value as Record<string, unknown>);
  } catch (e) {
    throw e instanceof UsageError ? fail(e.message) : e;
  }
}

/** The flags written --no-x: as a field of a configuration object, `noX: true` is `x: false`. */
export const NEGATED_FLAGS = ['download', 'dashboard'] as const satisfies readonly (keyof Config)[];

/** noDownload → download, for the fields of NEGATED_FLAGS; undefined for any other name. */
function negatedField(key: string): keyof Config | undefined {
  const m = /^no([A-Z].*)$/.exec(key);
  const field = m ? m[1][0].toLowerCase() + m[1].slice(1) : '';
  return (NEGATED_FLAGS as readonly string[]).includes(field) ? (field as keyof Config) : undefined;
}

/**
 * The Config fields of a configuration object given as a whole (a --config file, the library's train
 * options), as a person writes one from the flags: each field as its flag in camelCase, with the flag's value
 * or its text ("epochs": "3", "hidden": "64,32", "nesterov": "true"), and a --no-x flag as `noX: true`. Each
 * field is checked on its own, so the first bad one is named: a known key, a value of the right kind and
 * range. validate() then checks the fields that depend on each other.
 */
export function configFields(value: Record<string, unknown>, fromFile = true): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  const given = new Map<string, string>(); // field → the name it was given as, to catch both spellings at once
  for (const [name, raw] of Object.entries(value)) {
    if (REMOVED_KEYS.includes(name)) continue;
    const negated = negatedField(name);
    const key = negated ?? name;
    checkKnown(key, name);
    let v = raw;
    if (typeof raw === 'string' && TEXT_PARSED.has(key)) {
      v = negated ? (raw === 'true' ? true : raw === 'false' ? false : raw) : parseValue(key as keyof Config, raw);
    }
    if (negated) {
      checkField(negated, v, flagName(name)); // `noDownload` is --no-download: true or false
      v = !v;
    }
    checkField(key as keyof Config, v);
    checkGivenPath(key, v, !fromFile);
    const before = given.get(key);
    if (before !== undefined && fields[key] !== v) {
      throw new UsageError(`${before} and ${name} contradict each other (${flagName(key)} ${JSON.stringify(fields[key])} against ${JSON.stringify(v)}); give one of them`);
    }
    given.set(key, name);
    fields[key] = v;
  }
  // where the data comes from: data or dataset, not both
  checkDataSources(fields);
  return fields;
}

/** Fields whose value is no string: given as text (a flag's value), they are parsed as the flag's is. */
const TEXT_PARSED = new Set<string>([...Object.keys(INT_LIMITS), ...Object.keys(REAL_LIMITS), ...BOOLEAN_KEYS, 'hidden', 'channels']);

/** The file as UTF-8 text, read no further than `max` bytes: a larger file (or a device) is refused. */
function readCapped(path: string, max: number): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    for (let got; n < buf.length && (got = readSync(fd, buf, n, buf.length - n, null)) > 0;) n += got;
    if (n > max) throw new UsageError(`larger than ${max} bytes, too large for a configuration file; give the path of a JSON file`);
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}
