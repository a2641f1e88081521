// Run folders: a new run never destroys an earlier one. Without --out each run gets models/run-N (charts in
// plots/run-N) and models/latest points at the newest; eval, predict and --resume find the newest run on
// their own; an --out holding a run is refused unless --overwrite; a resumed run writes where the run lives,
// whichever folder it is started from.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '../src/safetensors.js';
import { abandonRunFolders, prepareRunDirs } from '../src/runs.js';
import { mnistDir, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-runs-'));
const small = ['--limit-train', '600', '--limit-test', '200', '--batch-size', '100', '--epochs', '1', '--no-dashboard', '--no-download'];
const stateOf = async (file: string) => JSON.parse((await readSafetensors(file)).metadata['mnist-par.state']);

describe('numbered run folders', () => {
  it('running the main command twice keeps both runs; eval, predict and --resume take the newest', async () => {
    const cwd = tmp();
    for (const seed of ['1', '2']) {
      const r = runCli(['--data-dir', mnistDir, ...small, '--seed', seed], {}, undefined, cwd);
      expect(r.code, r.stderr).toBe(0);
    }
    expect(readdirSync(join(cwd, 'models')).sort()).toEqual(['latest', 'run-1', 'run-2']);
    expect(readlinkSync(join(cwd, 'models', 'latest'))).toBe('run-2');
    expect(readlinkSync(join(cwd, 'plots', 'latest'))).toBe('run-2');
    for (const [n, seed] of [[1, 1], [2, 2]]) {
      const cfg = JSON.parse(readFileSync(join(cwd, 'models', `run-${n}`, 'config.json'), 'utf8'));
      expect(cfg.seed).toBe(seed);
      expect(cfg.out).toBe(join('models', `run-${n}`));
      expect(existsSync(join(cwd, 'plots', `run-${n}`, 'epoch_metrics.png'))).toBe(true);
    }

    const ev = runCli(['eval', '--data-dir', mnistDir, '--no-download', '--threads', '1', '--json'], {}, undefined, cwd);
    expect(ev.code, ev.stderr).toBe(0);
    expect(JSON.parse(ev.stdout).model).toBe(join('models', 'run-2', 'model.safetensors'));
    expect(existsSync(join(cwd, 'plots', 'run-2', 'confusion_matrix.png'))).toBe(true);
    // through the link, the pictures go to the run it names, not to plots/
    const viaLink = runCli(['eval', '--model', join('models', 'latest'), '--data-dir', mnistDir, '--no-download', '--threads', '1',
      '--json'], {}, undefined, cwd);
    expect(JSON.parse(viaLink.stdout).plots).toEqual([join('plots', 'run-2', 'confusion_matrix.png'), join('plots', 'run-2', 'errors.png')]);

    // a drawn digit: a white vertical bar on black
    const digit = join(cwd, 'digit.png');
    const px = Buffer.alloc(28 * 28);
    for (let y = 5; y < 23; y++) px.fill(255, y * 28 + 12, y * 28 + 16);
    await sharp(px, { raw: { width: 28, height: 28, channels: 1 } }).png().toFile(digit);
    const pr = runCli(['predict', '--json', digit], {}, undefined, cwd);
    expect(pr.code, pr.stderr).toBe(0);
    const byFolder = runCli(['predict', '--json', '--model', join('models', 'run-2'), digit], {}, undefined, cwd);
    expect(byFolder.stdout).toBe(pr.stdout);

    // run-2 finished its epoch: --resume alone names it and says there is nothing to do
    const rs = runCli(['--resume'], {}, undefined, cwd);
    expect(rs.code, rs.stderr).toBe(0);
    expect(rs.stderr).toContain(join('models', 'run-2', 'checkpoint-last.safetensors'));
    expect(rs.stdout).toContain('already finished its 1 epoch; nothing to resume'); // one epoch, not "its 1 epochs"
  });

  it('without any run, eval and --resume say how to make one', () => {
    const cwd = tmp();
    for (const args of [['eval'], ['predict', 'x.png'], ['--resume']]) {
      const r = runCli(args, {}, undefined, cwd);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/no run in models\/ holds .*; train one first \(npx mnist-par\)/);
    }
  });

  it('a run that fails before training leaves no empty run folder behind', () => {
    const cwd = tmp();
    const r = runCli(['--data-dir', join(cwd, 'nowhere'), ...small], {}, undefined, cwd);
    expect(r.code).toBe(1);
    expect(existsSync(join(cwd, 'models')) ? readdirSync(join(cwd, 'models')) : []).toEqual([]);
    expect(existsSync(join(cwd, 'plots')) ? readdirSync(join(cwd, 'plots')) : []).toEqual([]);
  });
});

describe('--out', () => {
  it('refuses a folder holding a run, changing nothing; --overwrite replaces the run', () => {
    const dir = tmp();
    const out = join(dir, 'exp');
    expect(runCli(['--data-dir', mnistDir, ...small, '--out', out, '--seed', '1']).code).toBe(0);
    const before = readdirSync(out).sort().map((f) => [f, readFileSync(join(out, f)).toString('base64')]);
    const r = runCli(['--data-dir', mnistDir, ...small, '--out', out, '--seed', '2']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(`--out ${out}: already holds a run`);
    expect(r.stderr).toContain(`--resume ${out}`);
    expect(r.stderr).toContain('--overwrite');
    expect(readdirSync(out).sort().map((f) => [f, readFileSync(join(out, f)).toString('base64')])).toEqual(before);

    // an earlier run's best checkpoint must not survive into the new run: make one the new run will not write
    writeFileSync(join(out, 'checkpoint-best.safetensors'), 'from the old run');
    const o = runCli(['--data-dir', mnistDir, ...small, '--out', out, '--seed', '2', '--overwrite', '--epochs', '2', '--patience', '1',
      '--monitor', 'val_accuracy', '--min-delta', '0.9']);
    expect(o.code, o.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).seed).toBe(2);
    expect(readFileSync(join(out, 'checkpoint-best.safetensors')).toString()).not.toBe('from the old run');
    expect(readFileSync(join(out, 'epoch_metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(3);
    // the charts of a run given --out go beside it
    expect(existsSync(join(out, 'epoch_metrics.png'))).toBe(true);
  });

  it('an empty or unrelated folder is fine', () => {
    const out = join(tmp(), 'exp');
    mkdirSync(out);
    writeFileSync(join(out, 'notes.txt'), 'mine');
    expect(runCli(['--data-dir', mnistDir, ...small, '--out', out]).code).toBe(0);
    expect(readFileSync(join(out, 'notes.txt'), 'utf8')).toBe('mine');
  });
});

describe('a resumed run', () => {
  it('finds the data and writes into its own folders, relative to where the run started, from anywhere', async () => {
    const home = tmp();
    symlinkSync(mnistDir, join(home, 'digits'));
    // schedule none: a larger --epochs continues the same run
    const args = ['--data-dir', 'digits', ...small, '--schedule', 'none', '--epochs', '1'];
    expect(runCli(args, {}, undefined, home).code).toBe(0);
    const elsewhere = tmp();
    const r = runCli(['--resume', join(home, 'models', 'run-1'), '--epochs', '2', '--no-dashboard'], {}, undefined, elsewhere);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(readFileSync(join(home, 'models', 'run-1', 'epoch_metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(3);
    expect(existsSync(join(home, 'plots', 'run-1', 'epoch_metrics.png'))).toBe(true);
    const st = await stateOf(join(home, 'models', 'run-1', 'checkpoint-last.safetensors'));
    expect(st.epoch).toBe(3);
    expect(st.cwd).toBe(elsewhere);
  });
});

describe('a run holds its folder', () => {
  it('a folder another live run holds is refused; a lock left by a dead process is taken over', () => {
    const dir = tmp();
    const out = join(dir, 'exp');
    mkdirSync(out);
    // this test's own process is alive: as if another run were training there
    writeFileSync(join(out, '.mnist-par.lock'), `${process.pid} abc\n`);
    const r = runCli(['--data-dir', mnistDir, ...small, '--out', out]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`mnist-par: --out ${out}: in use by another mnist-par run (process ${process.pid}); wait for it to end, or choose another --out`);
    // a process that has ended cannot hold it
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    writeFileSync(join(out, '.mnist-par.lock'), `${gone} abc\n`);
    const ok = runCli(['--data-dir', mnistDir, ...small, '--out', out]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(existsSync(join(out, '.mnist-par.lock'))).toBe(false);
    // resuming the run while another process holds it: the message names --resume, which chose the folder
    const run = join(dir, 'resumable');
    expect(runCli(['--data-dir', mnistDir, ...small, '--schedule', 'none', '--out', run]).code).toBe(0);
    writeFileSync(join(run, '.mnist-par.lock'), `${process.pid} abc\n`);
    const resumed = runCli(['--resume', run, '--epochs', '2']);
    expect(resumed.code).toBe(2);
    expect(resumed.stderr.trim()).toBe(`mnist-par: --resume ${run}: in use by another mnist-par run (process ${process.pid}); ` +
      'wait for it to end, or continue it in another folder with --out <dir>');
  });

  it('--overwrite removes nothing when the new run cannot start', () => {
    const out = join(tmp(), 'exp');
    expect(runCli(['--data-dir', mnistDir, ...small, '--out', out]).code).toBe(0);
    const before = readdirSync(out).sort();
    const r = runCli(['--data-dir', join(tmp(), 'nowhere'), ...small, '--out', out, '--overwrite']);
    expect(r.code).toBe(1);
    expect(readdirSync(out).sort()).toEqual(before);
    // nor when its worker threads cannot start
    const w = runCli(['--data-dir', mnistDir, ...small, '--out', out, '--overwrite'], { MNIST_PAR_INJECT_FAULT: 'load:0' });
    expect(w.code).toBe(1);
    expect(readdirSync(out).sort()).toEqual(before);
  });
});

describe('resuming, where things go', () => {
  it('through models/latest: the run continues in the folder the link named, not wherever it points later', async () => {
    const cwd = tmp();
    const args = ['--data-dir', mnistDir, ...small, '--schedule', 'none'];
    expect(runCli(args, {}, undefined, cwd).code).toBe(0);
    const r = runCli(['--resume', join('models', 'latest'), '--epochs', '2'], {}, undefined, cwd);
    expect(r.code, r.stderr).toBe(0);
    const st = await stateOf(join(cwd, 'models', 'run-1', 'checkpoint-last.safetensors'));
    expect(st.config.out).toBe(join('models', 'run-1'));
    expect(st.epoch).toBe(3);
  });

  it('to another --out: the charts go beside it, the earlier run keeps its own; JSON output is not inherited', () => {
    const dir = tmp();
    const b = join(dir, 'b');
    const c = join(dir, 'c');
    expect(runCli(['--data-dir', mnistDir, ...small, '--schedule', 'none', '--out', b, '--json']).code).toBe(0);
    const chart = readFileSync(join(b, 'epoch_metrics.png'));
    const r = runCli(['--resume', b, '--epochs', '2', '--out', c]);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(c, 'epoch_metrics.png'))).toBe(true);
    expect(readFileSync(join(b, 'epoch_metrics.png')).equals(chart)).toBe(true);
    // plain lines this time: the earlier --json was how that command printed, not part of the run
    expect(r.stdout).toMatch(/^epoch 2\/2 /m);
    expect(r.stdout).not.toContain('{"type"');
  });
});

describe('resuming an older checkpoint of a run', () => {
  it('in its own folder is refused while checkpoint-last is further on; --out continues it elsewhere', () => {
    const dir = tmp();
    const out = join(dir, 'r');
    const args = ['--data-dir', mnistDir, ...small, '--schedule', 'none'];
    expect(runCli([...args, '--epochs', '1', '--out', out]).code).toBe(0);
    // a copy of epoch 1's checkpoint beside the run, which then goes on to epoch 2
    const older = join(out, 'epoch-1.safetensors');
    writeFileSync(older, readFileSync(join(out, 'checkpoint-last.safetensors')));
    expect(runCli(['--resume', out, '--epochs', '2']).code).toBe(0);
    const last = readFileSync(join(out, 'checkpoint-last.safetensors'));
    const r = runCli(['--resume', older, '--epochs', '3']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`mnist-par: --resume ${older}: continuing it in ${out} would replace checkpoint-last.safetensors (step 12) ` +
      'and cut the metrics back to step 6; pass --out <dir> to continue it in another folder, or --overwrite to go back to it here');
    expect(readFileSync(join(out, 'checkpoint-last.safetensors')).equals(last)).toBe(true);
    const elsewhere = runCli(['--resume', older, '--epochs', '3', '--out', join(dir, 'branch')]);
    expect(elsewhere.code, elsewhere.stderr).toBe(0);
    expect(readFileSync(join(out, 'checkpoint-last.safetensors')).equals(last)).toBe(true);
    expect(readFileSync(join(dir, 'branch', 'epoch_metrics.csv'), 'utf8').trim().split('\n')).toHaveLength(4);
  });
});

describe('abandonRunFolders (a signal before training started)', () => {
  it('gives up the lock and removes the empty numbered folders this process made', async () => {
    const cwd = tmp();
    const here = process.cwd();
    process.chdir(cwd);
    try {
      const dirs = await prepareRunDirs('', '', false, null);
      expect(existsSync(dirs.plots)).toBe(true);
      expect(existsSync(join(dirs.out, '.mnist-par.lock'))).toBe(true);
      abandonRunFolders();
      // models/ and plots/ too: this process made them
      expect(readdirSync(cwd)).toEqual([]);
    } finally {
      process.chdir(here);
    }
  });
});

describe('a folder without a checkpoint is no run to resume', () => {
  it('what a run killed before its first checkpoint leaves: --resume and the --out refusal say there is nothing to resume', () => {
    const dir = tmp();
    const out = join(dir, 'killed');
    mkdirSync(out);
    for (const f of ['config.json', 'batch_metrics.csv', 'epoch_metrics.csv']) writeFileSync(join(out, f), '');
    const resumed = runCli(['--resume', out]);
    expect(resumed.code).toBe(2);
    expect(resumed.stderr).toBe(`mnist-par: --resume ${out}: holds no checkpoint-last.safetensors (only config.json, batch_metrics.csv, ` +
      `epoch_metrics.csv): the run there stopped before saving a checkpoint, so there is nothing to resume; start it again with --out ${out} --overwrite\n`);
    const again = runCli(['--data-dir', mnistDir, ...small, '--out', out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toBe(`mnist-par: --out ${out}: already holds the files of a run that saved no checkpoint (config.json, ` +
      'batch_metrics.csv, epoch_metrics.csv), so there is nothing to resume; replace them with --overwrite, or leave out --out to ' +
      'start a new numbered run in models/\n');
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    expect(runCli(['--resume', empty]).stderr).toBe(`mnist-par: --resume ${empty}: holds no run (no checkpoint-last.safetensors); ` +
      'give the folder of a run or a checkpoint file\n');
    // and what the message says works
    const fresh = runCli(['--data-dir', mnistDir, ...small, '--out', out, '--overwrite']);
    expect(fresh.code, fresh.stderr).toBe(0);
  });
});

describe('a run that fails before training', () => {
  it('leaves none of the folders it made (--out, --plots, parents included), and keeps those that were there', () => {
    const cwd = tmp();
    const missing = join(cwd, 'nowhere');
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['--data-dir', missing, '--out', join('deep', 'er', 'run'), '--plots', join('charts', 'run')], {}, /nowhere/],
      [['--data-dir', mnistDir, '--out', join('deep', 'er', 'run'), '--plots', '/proc/mnist-par-test'], {}, /--plots \/proc\/mnist-par-test: cannot write there/],
      [['--data-dir', mnistDir, '--out', join('deep', 'er', 'run'), '--kernels', 'native'], { MNIST_PAR_NATIVE: 'off' }, /--kernels native/],
      [['--data-dir', missing], {}, /nowhere/], // a numbered run: models/, models/run-1, plots/, plots/run-1
    ];
    for (const [args, env, message] of cases) {
      const r = runCli([...small, ...args], env, undefined, cwd);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(readdirSync(cwd), args.join(' ')).toEqual([]);
    }
    // a folder that was there before stays, empty or not
    mkdirSync(join(cwd, 'mine', 'run'), { recursive: true });
    expect(runCli([...small, '--data-dir', missing, '--out', join('mine', 'run')], {}, undefined, cwd).code).not.toBe(0);
    expect(readdirSync(join(cwd, 'mine'))).toEqual(['run']);
    expect(readdirSync(join(cwd, 'mine', 'run'))).toEqual([]);
  });
});

describe('temporary files of writes cut short', () => {
  it('a run sweeps those of processes that are gone from its folders (--resume too), never a live process\'s', () => {
    const dir = tmp();
    const out = join(dir, 'run');
    const plots = join(dir, 'charts');
    expect(runCli(['--data-dir', mnistDir, ...small, '--schedule', 'none', '--out', out, '--plots', plots]).code).toBe(0);
    // a process that has ended: its id is free (an id reused by then only keeps the file, the safe way to err)
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const dead = Number(gone.stdout);
    const stale = [join(out, `checkpoint-last.safetensors.tmp-${dead}-0badc0de`), join(plots, `batch_metrics.png.tmp-${dead}-12345678`)];
    const live = join(out, `model.safetensors.tmp-${process.pid}-abcdef01`); // this test's own process: alive
    for (const f of [...stale, live]) writeFileSync(f, '');
    const r = runCli(['--resume', out, '--epochs', '2', '--data-dir', mnistDir, '--no-download']);
    expect(r.code, r.stderr).toBe(0);
    for (const f of stale) expect(existsSync(f), f).toBe(false);
    expect(existsSync(live)).toBe(true);
  });
});

