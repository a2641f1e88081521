// The command line as a user meets it: --help, every kind of bad input (one line, the flag or file named,
// the right exit code, nothing written), a --config file.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mnistDir, runCli } from './cli-run.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'mnist-par-cli-'));

describe('mnist-par --help', () => {
  it('lists every training flag with its default', () => {
    const r = runCli(['--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--dataset', '--data-dir', '--threads', '--oversubscribe', '--kernels', '--epochs', '--batch-size',
      '--limit-train', '--limit-test', '--hidden', '--seed', '--optimizer', '--lr', '--momentum', '--weight-decay',
      '--schedule', '--warmup', '--label-smoothing', '--out', '--log-every', '--config', '--no-download', '--model', '--channels']) {
      expect(r.stdout, flag).toContain(flag);
    }
    const help = r.stdout.replace(/\s+/g, ' '); // commander wraps long descriptions
    expect(help).toMatch(/--batch-size <n> [^-]*\(default: 256\)/);
    expect(help).toContain('--hidden <widths> hidden linear layer widths, comma-separated (default: 128,256,512,128 for the mlp, 128 for the cnn)');
    expect(help).toContain('--model <kind> network: mlp (fully connected) or cnn (two 5×5 convolutions with 2×2 max-pooling, then linear layers) (default: mlp)');
    expect(help).toContain("--channels <c1,c2> the cnn's convolution output channels (default: 16,32)");
    expect(help).toMatch(/--optimizer <name> [^-]*\(default: adamw\)/);
  });
});

describe('invalid flag values', () => {
  const cases: [string[], string][] = [
    [['--threads', '0'], '--threads'],
    [['--threads', '2.5'], '--threads'],
    [['--lr', '-1'], '--lr'],
    [['--lr', 'fast'], '--lr'],
    [['--hidden', '12,x'], '--hidden'],
    [['--hidden', ''], '--hidden'],
    [['--dataset', 'cifar'], '--dataset'],
    [['--optimizer', 'lbfgs'], '--optimizer'],
    [['--schedule', 'linear'], '--schedule'],
    [['--kernels', 'gpu'], '--kernels'],
    [['--batch-size', '0'], '--batch-size'],
    [['--label-smoothing', '1.5'], '--label-smoothing'],
    [['--epochs', '1e9'], '--epochs'],
    [['--model', 'rnn'], '--model'],
    [['--model', 'cnn', '--channels', '0'], '--channels'],
    [['--model', 'cnn', '--channels', '16,32,64'], '--channels'],
    [['--model', 'cnn', '--channels', 'wide'], '--channels'],
    [['--model', 'cnn', '--channels', '8,'], '--channels'],
    [['--model', 'cnn', '--channels', '1025'], '--channels'],
  ];
  for (const [args, flag] of cases) {
    it(`${args.join(' ')} → exit 2 naming ${flag}, nothing written`, () => {
      const out = join(tmp(), 'out');
      const r = runCli([...args, '--out', out, '--data-dir', mnistDir]);
      expect(r.code).toBe(2);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(flag);
      expect(lines[0]).toMatch(/expected/);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
      expect(existsSync(out)).toBe(false);
    });
  }

  it('--channels with the mlp → exit 2, one line naming --channels and what to do, nothing written', () => {
    const out = join(tmp(), 'out');
    const r = runCli(['--channels', '8,16', '--out', out, '--data-dir', mnistDir]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual(['mnist-par: --channels: only the cnn has convolution channels; add --model cnn, or leave --channels out']);
    expect(existsSync(out)).toBe(false);
  });

  it('an unknown flag → exit 2', () => {
    const r = runCli(['--epochz', '3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--epochz');
  });

  it('--pipeline tasks (removed) → exit 2, one line that says so and what to use instead, nothing written', () => {
    const out = join(tmp(), 'out');
    const r = runCli(['--pipeline', 'tasks', '--out', out, '--data-dir', mnistDir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('mnist-par: --pipeline tasks: that pipeline was removed (it gave the same bytes as lockstep, more slowly); ' +
      'leave the flag out or use --pipeline lockstep\n');
    expect(existsSync(out)).toBe(false);
  });

  it('--shards (removed) → exit 2, one line that says what replaced it, nothing written', () => {
    const out = join(tmp(), 'out');
    for (const args of [['--shards', '4'], ['train', '--shards', '8']]) {
      const r = runCli([...args, '--out', out, '--data-dir', mnistDir]);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe('mnist-par: --shards: removed; every thread now gets an equal share of each batch in blocks of ' +
        '8 rows, and the gradient is all-reduced without per-shard slots, so there is nothing to choose; leave the flag out\n');
    }
    expect(existsSync(out)).toBe(false);
  });

  it('an unknown command → exit 2: says so, suggests a close one, lists the commands', () => {
    const commands = '(the commands: train (the default), download, plot, eval, predict, summary, serve, bench; run mnist-par <command> --help for their flags)';
    const r = runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: unknown command 'frobnicate'\n${commands}\n`);
    const typo = runCli(['predcit', 'digit.png']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toBe(`error: unknown command 'predcit'\n(Did you mean predict?)\n${commands}\n`);
    expect(runCli(['--epochs', '1', 'evl']).stderr).toContain('(Did you mean eval?)');
    // other usage errors keep their pointer to --help
    expect(runCli(['--epochz', '3']).stderr).toContain('(run mnist-par --help for the flags)');
  });

  it('train and eval refuse the same bad value with the same words, quoting it as given', () => {
    const message = "mnist-par: --threads: expected an integer in 1..256, got '0'\n";
    expect(runCli(['--threads', '0', '--data-dir', mnistDir]).stderr).toBe(message);
    expect(runCli(['eval', '--threads', '0', '--model', join(tmp(), 'none.safetensors')]).stderr).toBe(message);
    expect(runCli(['--lr', 'fast']).stderr).toBe("mnist-par: --lr: expected a number > 0 and ≤ 10, got 'fast'\n");
  });

  it('the same checks apply to `train`', () => {
    const r = runCli(['train', '--threads', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--threads');
  });
});

describe('--config', () => {
  it('a file that is not JSON names the file', () => {
    const dir = tmp();
    const f = join(dir, 'c.json');
    writeFileSync(f, '{ epochs: 3 ');
    const r = runCli(['--config', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(f);
    expect(r.stderr).toMatch(/not valid JSON/);
  });

  it('an unknown field and a bad value are refused', () => {
    const dir = tmp();
    const f = join(dir, 'c.json');
    writeFileSync(f, JSON.stringify({ epochz: 3 }));
    expect(runCli(['--config', f]).stderr).toContain("'epochz'");
    writeFileSync(f, JSON.stringify({ threads: -1 }));
    const r = runCli(['--config', f]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--threads');
  });

  it('supplies values that flags override; config.json records the resolved configuration', () => {
    const dir = tmp();
    const f = join(dir, 'c.json');
    writeFileSync(f, JSON.stringify({ epochs: 1, batchSize: 50, seed: 7, limitTrain: 200, limitTest: 100, threads: 1 }));
    const out = join(dir, 'out');
    const r = runCli(['--config', f, '--seed', '9', '--out', out, '--data-dir', mnistDir, '--no-download']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ epochs: 1, batchSize: 50, seed: 9, limitTrain: 200, threads: 1, dataDir: mnistDir });
  });
});

describe('data problems', () => {
  it('missing dataset files with --no-download → one line naming the files, the folder and the flag', () => {
    const dir = tmp();
    const r = runCli(['--data-dir', dir, '--no-download', '--out', join(dir, 'out'), '--epochs', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('train-images-idx3-ubyte.gz');
    expect(r.stderr).toContain(dir);
    expect(r.stderr).toContain('--data-dir');
  });

  it('--dataset fashion-mnist on the MNIST files → one line saying what they are, before training, nothing written', () => {
    const dir = tmp();
    const r = runCli(['--dataset', 'fashion-mnist', '--data-dir', mnistDir, '--no-download', '--out', join(dir, 'out'), '--epochs', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^mnist-par: ${mnistDir} holds the mnist files, not fashion-mnist's \\(.* has the size and ` +
      'sha256 of mnist\'s\\): give --dataset mnist, or a --data-dir with the fashion-mnist files\n$'));
    expect(r.stdout).toBe('');
    expect(existsSync(join(dir, 'out'))).toBe(false);
  });

  it('a corrupt dataset file is named', () => {
    const dir = tmp();
    for (const f of ['train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']) {
      copyFileSync(join(mnistDir, f), join(dir, f));
    }
    const bytes = readFileSync(join(mnistDir, 'train-images-idx3-ubyte.gz'));
    writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), bytes.subarray(0, bytes.length >> 1));
    const r = runCli(['--data-dir', dir, '--no-download', '--out', join(dir, 'out'), '--epochs', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('train-images-idx3-ubyte.gz');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('an unwritable output directory is named', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'file'), 'x');
    const r = runCli(['--data-dir', mnistDir, '--out', join(dir, 'file', 'out'), '--epochs', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('--out');
    expect(r.stderr).toContain(join(dir, 'file', 'out'));
  });

  it.runIf(existsSync('/proc/self'))('an --out, --plots or --data-dir under /proc is refused at once instead of hanging', () => {
    // Node's recursive mkdir retries forever there; the run must end in seconds with the flag named
    for (const [flag, extra] of [['--out', []], ['--plots', []], ['--data-dir', []]] as const) {
      const args = ['--data-dir', mnistDir, '--epochs', '1', '--limit-train', '256', '--no-dashboard', ...extra];
      const i = args.indexOf(flag);
      if (i >= 0) args.splice(i, 2);
      const r = runCli([...args, flag, '/proc/mnist-par-test/x'], {}, 20_000);
      expect(r.code, `${flag}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toContain('/proc/mnist-par-test/x');
      expect(r.stderr.trim().split('\n').at(-1)).toMatch(/cannot (write there|create the data directory)/);
    }
  });
});
