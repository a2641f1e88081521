#!/usr/bin/env node
// The command line: flags → validated Config → run. No logic beyond wiring.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { checkDataSources, DEFAULTS, flagName, parseValue, readConfigFile, REMOVED_SHARDS, validate, type Config } from './config.js';
import { addBenchCommand } from '../bench/command.js';
import { addModelCommands } from './commands.js';
import { TaskError, UsageError, UserError, WorkerDied } from './errors.js';
import { packageRoot } from './paths.js';
import { EXIT_GRACE_MS } from './tuning.js';
import { plural } from './ui/format.js';
import { watchOutputs, whenUnwatched } from './ui/outputs.js';

// Flags of `train`, in the order --help lists them. Each maps 1:1 to a Config field.
const TRAIN_FLAGS: [keyof Config, string, string][] = [
  ['dataset', '<name>', 'dataset: mnist or fashion-mnist'],
  ['dataDir', '<dir>', 'folder with the four IDX .gz files (default: datasets/<dataset>)'],
  ['data', '<path>', 'your own training data instead of --dataset: a folder of IDX files, a Kaggle-layout .csv file (label, then 784 pixels) or a folder of class folders of images'],
  ['test', '<path>', 'with --data: the test set, in any of the same layouts (default: an IDX folder\'s test split, else a held-out --val-split)'],
  ['valSplit', '<fraction>', 'with --data and no test set: the share of the training data held out for validation, stratified by class'],
  ['threads', '<n>', 'worker threads in the pool; the default is this machine\'s core count'],
  ['kernels', '<family>', 'compute kernels: auto, native (C++ AVX-512/AVX2 addon), relaxed (WebAssembly relaxed SIMD), simd, js (reference)'],
  ['pipeline', '<name>', 'lockstep, the only one: workers step together at shared-memory barriers (tasks was removed)'],
  ['epochs', '<n>', 'training epochs (default: 5 for the mlp, 6 for the cnn)'],
  ['batchSize', '<n>', 'samples per optimizer step'],
  ['limitTrain', '<n>', 'use only the first N training images (0 = all)'],
  ['limitTest', '<n>', 'validate on only the first N test images (0 = all)'],
  ['model', '<kind>', 'network: mlp (fully connected) or cnn (two 5×5 convolutions with 2×2 max-pooling, then linear layers)'],
  ['hidden', '<widths>', 'hidden linear layer widths, comma-separated (default: 128,256,512,128 for the mlp, 128 for the cnn)'],
  ['channels', '<c1,c2>', 'the cnn\'s convolution output channels'],
  ['seed', '<n>', 'seed for initialization, shuffling and augmentation'],
  ['optimizer', '<name>', 'sgd, adam or adamw'],
  ['lr', '<x>', 'learning rate (the peak rate for onecycle)'],
  ['momentum', '<x>', 'SGD momentum'],
  ['weightDecay', '<x>', 'weight decay (L2 for sgd/adam, decoupled for adamw)'],
  ['beta1', '<x>', 'Adam β1'],
  ['beta2', '<x>', 'Adam β2'],
  ['eps', '<x>', 'Adam ε'],
  ['schedule', '<name>', 'learning-rate schedule: none, step, cosine, onecycle'],
  ['warmup', '<fraction>', 'share of all steps spent warming up (onecycle, cosine)'],
  ['stepSize', '<epochs>', 'epochs between decays (step schedule)'],
  ['gamma', '<x>', 'decay factor (step schedule)'],
  ['minLr', '<x>', 'final learning rate (cosine schedule)'],
  ['labelSmoothing', '<x>', 'label smoothing of the cross-entropy'],
  ['patience', '<epochs>', 'stop early after this many epochs without improvement of --monitor (0 = never)'],
  ['minDelta', '<x>', 'smallest change of --monitor that counts as an improvement'],
  ['monitor', '<metric>', 'what early stopping watches: val_loss or val_accuracy'],
  ['out', '<dir>', 'folder for the model, checkpoints, metrics and config (default: a new numbered run folder, models/run-N)'],
  ['plots', '<dir>', 'folder for the PNG charts, refreshed during the run (default: plots/run-N, or the --out folder)'],
  ['logEvery', '<n>', 'print a progress line every N batches (plain and JSON output)'],
];

function showDefault(key: keyof Config): string {
  if (key === 'dataDir' || key === 'out' || key === 'plots' || key === 'hidden' || key === 'epochs' || key === 'data' || key === 'test') return ''; // described in the help text
  const v = DEFAULTS[key];
  return Array.isArray(v) ? v.join(',') : String(v);
}

function addTrainOptions(cmd: Command): Command {
  for (const [key, arg, help] of TRAIN_FLAGS) {
    // Defaults are shown, not set: a flag that was not given stays undefined so --config can supply it.
    const d = showDefault(key);
    cmd.addOption(new Option(`${flagName(key)} ${arg}`, d === '' ? help : `${help} (default: ${d})`));
  }
  cmd.option('--nesterov', 'Nesterov momentum (sgd)');
  cmd.option('--augment', 'random affine augmentation (rotation, scale, shift, shear) of training images');
  cmd.option('--oversubscribe', 'give every thread work even when threads outnumber cores (slower, the same bytes)');
  cmd.option('--resume [checkpoint]', 'continue a run from a checkpoint file or a run folder; alone, the newest run in models/');
  cmd.option('--overwrite', 'let --out name a folder holding an earlier run, and replace that run');
  cmd.option('--no-download', 'never download: fail if dataset files are missing');
  cmd.option('--no-dashboard', 'plain progress lines even in a terminal');
  cmd.option('--json', 'JSON lines instead of plain progress lines');
  cmd.option('--config <file>', 'JSON file of configuration values (flags override it)');
  // removed: refused with a message that says what replaced it (givenValues)
  cmd.addOption(new Option('--shards <n>').hideHelp());
  return cmd;
}

/** The configuration values the user gave: the --config file's, overridden by the flags actually given. */
function givenValues(cmd: Command): Record<string, unknown> {
  const opts = cmd.opts();
  if (opts.shards !== undefined) throw new UsageError(REMOVED_SHARDS);
  const raw: Record<string, unknown> = {};
  if (opts.config !== undefined) Object.assign(raw, readConfigFile(String(opts.config)));
  for (const [key] of TRAIN_FLAGS) {
    if (opts[key] !== undefined) raw[key] = parseValue(key, String(opts[key]));
  }
  if (cmd.getOptionValueSource('nesterov') === 'cli') raw.nesterov = true;
  if (cmd.getOptionValueSource('augment') === 'cli') raw.augment = true;
  if (cmd.getOptionValueSource('oversubscribe') === 'cli') raw.oversubscribe = true;
  if (cmd.getOptionValueSource('overwrite') === 'cli') raw.overwrite = true;
  if (cmd.getOptionValueSource('download') === 'cli') raw.download = false;
  if (cmd.getOptionValueSource('dashboard') === 'cli') raw.dashboard = false;
  if (cmd.getOptionValueSource('json') === 'cli') raw.json = true;
  return raw;
}

/** Merges defaults, the --config file and the flags actually given; validates the result. */
export function resolveConfig(cmd: Command): Config {
  const given = givenValues(cmd);
  checkDataSources(given);
  return validate(given);
}

// Fields a resumed run may change: where things are and how they are shown, not what is computed.
const RESUMABLE: readonly string[] = ['dataDir', 'data', 'download', 'threads', 'oversubscribe', 'kernels', 'pipeline', 'out', 'plots', 'overwrite',
  'dashboard', 'json', 'logEvery', 'limitTest', 'patience', 'minDelta', 'monitor'];

/** The checkpoint's configuration with the given values applied; conflicting values are refused. */
function resumeConfig(given: Record<string, unknown>, saved: Config, file: string): Config {
  const free = new Set(RESUMABLE);
  // more epochs continue a run exactly only when the schedule does not depend on the total length
  if (saved.schedule === 'none' || saved.schedule === 'step') free.add('epochs');
  const conflicts = Object.entries(given)
    .filter(([k, v]) => !free.has(k) && JSON.stringify(v) !== JSON.stringify((saved as unknown as Record<string, unknown>)[k]))
    .map(([k, v]) => `${flagName(k)} ${JSON.stringify(v)} (checkpoint: ${JSON.stringify((saved as unknown as Record<string, unknown>)[k])})`);
  if (conflicts.length > 0) {
    throw new UsageError(`--resume ${file}: the checkpoint was trained with other values for ${conflicts.join(', ')}; drop those flags to continue it, or start a new run without --resume`);
  }
  return validate({ ...saved, ...given });
}

/**
 * A resumed run trains on the checkpoint's data: --data may say where that data is now (it moved), but not
 * turn a run on a built-in dataset into one on your own data, nor the other way.
 */
function refuseOtherData(given: Record<string, unknown>, saved: Config, file: string): void {
  if (saved.data === '' && given.data !== undefined) {
    throw new UsageError(`--resume ${file}: the checkpoint was trained on the built-in ${saved.dataset}; --data cannot change that: leave it out, or start a new run`);
  }
  if (saved.data !== '') checkDataSources({ ...given, data: saved.data });
}

async function runTrain(cmd: Command): Promise<number> {
  const { runTraining } = await import('./run.js');
  const resume = cmd.opts().resume as string | true | undefined;
  if (resume === undefined) return runTraining(resolveConfig(cmd));
  const given = givenValues(cmd);
  const [{ loadCheckpoint, LAST }, { checkpointToResume, newestRunFile, refuseRewind, resumedPlaces }, { finishedEarly }] =
    await Promise.all([import('./checkpoint.js'), import('./runs.js'), import('./train.js')]);
  const file = resume === true ? newestRunFile(LAST, '--resume') : checkpointToResume(resume);
  const ck = await loadCheckpoint(file);
  if (resume === true) process.stderr.write(`mnist-par: resuming ${ck.file}\n`);
  // The run continues in the checkpoint's folder, wherever that is now; the other folders it names were
  // relative to where it started. How it is shown (and whether it may download) is this command's choice.
  const saved = ck.state.config;
  refuseOtherData(given, saved, ck.file);
  const placed: Config = {
    ...saved, ...resumedPlaces(ck.file, saved, ck.state.cwd, given),
    json: DEFAULTS.json, dashboard: DEFAULTS.dashboard, download: DEFAULTS.download, overwrite: DEFAULTS.overwrite,
  };
  const cfg = resumeConfig(given, placed, ck.file);
  if (ck.state.epoch > cfg.epochs) {
    process.stdout.write(`mnist-par: ${ck.file} already finished its ${plural(cfg.epochs, 'epoch')}; nothing to resume ` +
      `(start a new run${cfg.schedule === 'none' || cfg.schedule === 'step' ? ', or give a larger --epochs' : ''})\n`);
    return 0;
  }
  const early = finishedEarly(cfg, ck.state);
  if (early !== null) {
    process.stdout.write(`mnist-par: ${ck.file} already ${early}; nothing to resume (give a larger --patience, or --patience 0, to train on)\n`);
    return 0;
  }
  await refuseRewind(ck.file, ck.state.step, cfg.out, cfg.overwrite);
  return runTraining(cfg, ck);
}

async function runDownload(opts: { dataset: string; dataDir?: string }): Promise<number> {
  const cfg = validate({ dataset: parseValue('dataset', opts.dataset), dataDir: opts.dataDir });
  const { downloadDataset } = await import('./data/download.js');
  await downloadDataset(cfg.dataset, cfg.dataDir, {
    verify: true,
    log: (line) => process.stderr.write(line + '\n'),
    progress: progressPrinter(),
  });
  process.stdout.write(`${cfg.dataset}: all files present and verified in ${cfg.dataDir}\n`);
  return 0;
}

function progressPrinter(): (file: string, received: number, total: number | null) => void {
  let last = 0;
  return (file, received, total) => {
    const now = Date.now();
    const done = total !== null && received >= total;
    if (!done && now - last < 250) return;
    last = now;
    const mb = (n: number) => (n / 1e6).toFixed(1);
    const pct = total ? ` ${Math.floor((100 * received) / total)}%` : '';
    const text = `  ${file}: ${mb(received)}${total ? '/' + mb(total) : ''} MB${pct}`;
    if (process.stderr.isTTY) process.stderr.write(`\r${text}\x1b[K${done ? '\n' : ''}`);
    else if (done) process.stderr.write(text + '\n');
  };
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

export function buildProgram(): Command {
  const program = new Command('mnist-par')
    .description('Data-parallel training of an MLP or a CNN on MNIST-style datasets with worker threads sharing memory')
    .version(packageVersion(), '-V, --version', 'print the version')
    .enablePositionalOptions()
    .showHelpAfterError('(run mnist-par --help for the flags)')
    .exitOverride();
  addTrainOptions(program).action(async (_o, cmd: Command) => {
    // a word where training takes none: a command misspelt (the root accepts it only to say so)
    if (cmd.args.length > 0) unknownCommand(cmd, cmd.args[0]);
    process.exitCode = await runTrain(cmd);
  });
  addTrainOptions(program.command('train').description('train the network (the default command)'))
    .action(async (_o, cmd: Command) => {
      process.exitCode = await runTrain(cmd);
    });
  program.command('download')
    .description('download the dataset files from the public mirrors and verify their sha256')
    .option('--dataset <name>', 'mnist or fashion-mnist', 'mnist')
    .option('--data-dir <dir>', 'where to put the files (default: datasets/<dataset>)')
    .action(async (opts) => {
      process.exitCode = await runDownload(opts);
    });
  program.command('plot')
    .description('re-render the PNG charts from saved metrics CSVs and/or a bench scaling JSON')
    .option('--metrics <dir>', 'folder with batch_metrics.csv and epoch_metrics.csv (default: the newest run, models/run-N)')
    .option('--bench <file>', 'a bench/results/scaling-*.json file')
    .option('--plots <dir>', 'where to write the PNGs (default: plots/run-N for a numbered run, else plots)')
    .action(async (opts) => {
      const { plotCommand } = await import('./plot.js');
      const written = await plotCommand({ metrics: opts.metrics, bench: opts.bench, plots: opts.plots });
      process.stdout.write(`wrote ${written.join(', ')}\n`);
    });
  addModelCommands(program);
  addBenchCommand(program);
  for (const c of program.commands) c.exitOverride();
  // after the subcommands were made (they copy it): they keep refusing extra words themselves
  program.allowExcessArguments(true);
  return program;
}

/**
 * `mnist-par frobnicate`: commander's own unknown-command error, with its suggestion of a close command
 * ("(Did you mean eval?)"), followed by the list of commands instead of the usual pointer to --help.
 */
function unknownCommand(program: Command, word: string): never {
  const names = program.commands.map((c) => (c.name() === 'train' ? 'train (the default)' : c.name()));
  program.showHelpAfterError(`(the commands: ${names.join(', ')}; run mnist-par <command> --help for their flags)`);
  // commander reports an unknown command this way when the program has no action of its own; ours trains
  const own = (program as unknown as { unknownCommand?: () => never }).unknownCommand;
  if (typeof own === 'function') own.call(program);
  program.error(`error: unknown command '${word}'`, { code: 'commander.unknownCommand' });
}

/** 128 + SIGPIPE's number: what a shell reports for a process that wrote to a pipe nobody reads any more. */
const SIGPIPE_EXIT = 141;

export async function main(argv: string[]): Promise<number> {
  // stdout or stderr going away (`| head -1`) ends a command quietly, as SIGPIPE ends other programs; a
  // training run watches them itself, to save a checkpoint first (ui/outputs.ts)
  watchOutputs([process.stdout, process.stderr]);
  whenUnwatched(() => process.exit(SIGPIPE_EXIT));
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    return reportError(e);
  }
}

function reportError(e: unknown): number {
  if (e instanceof CommanderError) {
    // commander already printed its message; --help and --version are not errors
    return e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 2;
  }
  if (e instanceof UserError) {
    process.stderr.write(`mnist-par: ${e.message}\n`);
    return e.exitCode;
  }
  if (e instanceof WorkerDied) {
    process.stderr.write(`mnist-par: training stopped: ${e.message}; nothing was saved after the last checkpoint\n`);
    return 1;
  }
  if (e instanceof TaskError) {
    process.stderr.write(`mnist-par: training stopped: ${e.message}\n`);
    return 1;
  }
  const err = e as Error;
  process.stderr.write(`mnist-par: internal error: ${err?.message ?? String(e)} (set MNIST_PAR_DEBUG=1 for the stack)\n`);
  if (process.env.MNIST_PAR_DEBUG) process.stderr.write(`${err?.stack}\n`);
  return 1;
}

main(process.argv).then((code) => {
  process.exitCode = code;
  // Everything is written and awaited by now, and the process normally ends here. A worker thread that
  // crashed mid-task can leave the pool holding a message port that keeps the event loop alive; this timer
  // (unref'd: it keeps nothing alive itself) ends the process a second later if nothing else does.
  setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
});
