// --config files as the CLI reads them (readConfigFile, then validate): every problem is one line that names
// the file. The cases here were found by test/fuzz.test.ts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configFields, modelSpec, parseValue, readConfigFile, validate } from '../src/config.js';
import { UsageError } from '../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'mnist-par-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** The UsageError that reading (and validating) a config file of `text` throws. */
function refusal(text: string | Uint8Array): UsageError {
  const f = join(dir, `c${n++}.json`);
  writeFileSync(f, text);
  try {
    validate(readConfigFile(f));
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    const msg = (e as Error).message;
    expect(msg).not.toMatch(/[\r\n]/);
    expect(msg).toContain(f);
    expect(msg.length).toBeLessThan(600);
    return e as UsageError;
  }
  throw new Error(`${text.slice(0, 80)} was accepted`);
}

describe('readConfigFile', () => {
  it('accepts a valid file; flags may still override its values', () => {
    const f = join(dir, 'ok.json');
    writeFileSync(f, JSON.stringify({ epochs: 2, hidden: [32], optimizer: 'sgd', momentum: 0.5, nesterov: true }));
    const values = readConfigFile(f);
    expect(values).toEqual({ epochs: 2, hidden: [32], optimizer: 'sgd', momentum: 0.5, nesterov: true });
    expect(validate({ ...values, epochs: 3 }).epochs).toBe(3);
  });

  it('takes what the README promises: the flags in camelCase, a flag\'s value as its text, --no-x as noX', () => {
    const f = join(dir, 'as-flags.json');
    writeFileSync(f, JSON.stringify({ epochs: '3', hidden: '64, 32', lr: '1e-3', nesterov: 'true', optimizer: 'sgd', noDashboard: true,
      noDownload: 'true', limitTrain: '0', channels: '16,32' }));
    const values = readConfigFile(f);
    expect(values).toEqual({ epochs: 3, hidden: [64, 32], lr: 0.001, nesterov: true, optimizer: 'sgd', dashboard: false,
      download: false, limitTrain: 0, channels: [16, 32] });
    const cfg = validate(values);
    expect([cfg.epochs, cfg.dashboard, cfg.download]).toEqual([3, false, false]);
    // noX: false is x: true; the same field twice must agree
    writeFileSync(f, JSON.stringify({ noDownload: false, download: true }));
    expect(readConfigFile(f)).toEqual({ download: true });
    expect(refusal('{"noDownload": true, "download": true}').message)
      .toMatch(/: noDownload and download contradict each other \(--download false against true\); give one of them$/);
    expect(refusal('{"noDashboard": "yes"}').message).toMatch(/: --no-dashboard: expected true or false, got 'yes'$/);
    expect(refusal('{"epochs": "three"}').message).toMatch(/: --epochs: expected an integer in 1\.\.100000, got 'three'$/);
    expect(refusal('{"hidden": "64,x"}').message).toContain('--hidden: expected comma-separated layer widths');
    expect(refusal('{"noThreads": true}').message).toContain("unknown configuration field 'noThreads' (known: dataset, ");
    expect(refusal('{"noThreads": true}').message).toContain('logEvery, noDownload, noDashboard)');
  });

  it('a bad value names the file and the flag', () => {
    expect(refusal('{"threads": -1}').message).toMatch(/^--config .*c\d+\.json: --threads: expected an integer in 1\.\.256, got -1$/);
    expect(refusal('{"out": ""}').message).toContain('--out: expected a directory path, got an empty string');
    expect(refusal('{"epochz": 3}').message).toContain("unknown configuration field 'epochz'");
  });

  it('a newline in a value, a key or the JSON stays out of the message', () => {
    expect(refusal('{"optimizer": "a\\nb"}').message).toContain('got "a\\nb"');
    expect(refusal('{"a\\nb": 1}').message).toContain('unknown configuration field \'"a\\nb"\'');
    expect(refusal('{"epochs":\n\n x}').message).toMatch(/not valid JSON \(.*\); expected an object/);
  });

  it('a value nested too deep, or too long, for a message is described, not printed', () => {
    // JSON.parse takes 20000 nested arrays; JSON.stringify of them for the message overflowed the stack
    expect(refusal(`{"hidden": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`).message).toContain('--hidden: expected a list of layer widths');
    expect(refusal(`{"seed": "${'x'.repeat(10_000)}"}`).message).toMatch(/got "x{70,}"…$/);
    expect(refusal(`{"hidden": [${'8192,'.repeat(99_999)}-1]}`).message).toMatch(/got \[8192,8192,.*…$/);
  });

  it('a file over 1 MiB is refused before it is read whole', () => {
    expect(refusal(`{"epochs": 3}${' '.repeat(1 << 20)}`).message).toContain(`larger than ${1 << 20} bytes`);
  });

  it('a file that is not there, or a folder', () => {
    expect(() => readConfigFile(join(dir, 'none.json'))).toThrow(/none\.json: cannot read the file \(ENOENT\)/);
    expect(() => readConfigFile(dir)).toThrow(/cannot read the file \(EISDIR\)/);
  });
});

describe('--hidden', () => {
  it('takes at most 64 hidden layers: a file cannot ask for an unbounded network', () => {
    // found by test/fuzz.test.ts: a checkpoint's configuration with 100000 layers of 8192 passed validate()
    expect(validate({ hidden: new Array(64).fill(8) }).hidden).toHaveLength(64);
    expect(() => validate({ hidden: new Array(65).fill(8) })).toThrow(/^--hidden: expected at most 64 hidden layers, got 65$/);
    expect(refusal(`{"hidden": [${'8192,'.repeat(99_999)}8192]}`).message).toContain('got 100000');
  });
});

describe('--pipeline', () => {
  it('lockstep is the only one: a saved configuration\'s removed tasks pipeline runs lockstep, the flag\'s is refused', () => {
    // a checkpoint or a run folder's config.json of an earlier version: the same bytes come out of lockstep
    expect(validate({ pipeline: 'tasks' }).pipeline).toBe('lockstep');
    expect(refusal('{"pipeline": "steps"}').message).toMatch(/--pipeline: expected one of lockstep, got 'steps'/);
    expect(parseValue('pipeline', 'lockstep')).toBe('lockstep');
    expect(() => parseValue('pipeline', 'tasks')).toThrow(/^--pipeline tasks: that pipeline was removed/);
  });
});

describe('--epochs', () => {
  it('defaults to 5 for the mlp and 6 for the cnn; a given value is kept for either', () => {
    expect(validate({}).epochs).toBe(5);
    expect(validate({ model: 'cnn' }).epochs).toBe(6);
    expect(validate({ model: 'cnn', epochs: 2 }).epochs).toBe(2);
    expect(validate({ model: 'mlp', epochs: 7 }).epochs).toBe(7);
  });
});

describe('--shards', () => {
  it('is gone: a saved configuration that carries it (a checkpoint, a config.json) loads with the field ignored', () => {
    const cfg = validate({ shards: 4, threads: 2 });
    expect(cfg.threads).toBe(2);
    expect('shards' in cfg).toBe(false);
    expect(configFields({ shards: 8, epochs: 2 })).toEqual({ epochs: 2 });
  });
});

describe('--model and --channels', () => {
  /** The UsageError `f` throws: one line. */
  const usage = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(UsageError);
      expect((e as Error).message).not.toMatch(/[\r\n]/);
      return (e as Error).message;
    }
    throw new Error('accepted');
  };

  it('--model is mlp or cnn', () => {
    expect(validate({}).model).toBe('mlp');
    expect(validate({ model: 'cnn' }).model).toBe('cnn');
    expect(usage(() => validate({ model: 'rnn' }))).toBe("--model: expected one of mlp, cnn, got 'rnn'");
    expect(usage(() => validate({ model: 'CNN' }))).toBe("--model: expected one of mlp, cnn, got 'CNN'");
    expect(refusal('{"model": 3}').message).toContain('--model: expected one of mlp, cnn, got 3');
  });

  it('--hidden left out is the chosen model\'s default: 128,256,512,128 for the mlp, 128 for the cnn', () => {
    expect(validate({}).hidden).toEqual([128, 256, 512, 128]);
    expect(validate({ model: 'mlp' }).hidden).toEqual([128, 256, 512, 128]);
    expect(validate({ model: 'cnn' }).hidden).toEqual([128]);
    expect(validate({ model: 'cnn', hidden: [64, 32] }).hidden).toEqual([64, 32]);
    expect(validate({ model: 'cnn', hidden: undefined }).hidden).toEqual([128]);
    // the same from a --config file
    const f = join(dir, 'cnn.json');
    writeFileSync(f, '{"model": "cnn"}');
    expect(validate(readConfigFile(f)).hidden).toEqual([128]);
    // the default channels, and the network they make
    const c = validate({ model: 'cnn' });
    expect(c.channels).toEqual([16, 32]);
    expect(modelSpec(c)).toEqual({ kind: 'cnn', channels: [16, 32], hidden: [128] });
    expect(modelSpec(validate({}))).toEqual({ kind: 'mlp', hidden: [128, 256, 512, 128] });
  });

  it('--channels takes one or two counts in 1..1024', () => {
    expect(parseValue('channels', '4,8')).toEqual([4, 8]);
    expect(parseValue('channels', ' 6 ')).toEqual([6]);
    expect(validate({ model: 'cnn', channels: [6] }).channels).toEqual([6]);
    expect(validate({ model: 'cnn', channels: [1024, 1] }).channels).toEqual([1024, 1]);
    const expected = /^--channels: expected one or two comma-separated channel counts, each an integer in 1\.\.1024 \(e\.g\. 16,32\), got '/;
    for (const text of ['0', '16,0', '16,32,64', 'wide', '', '8,', '1.5', '-4', '1025', '0x10']) {
      expect(usage(() => parseValue('channels', text)), text).toMatch(expected);
    }
    // as a --config file or the library gives them
    for (const v of [[0], [16, 32, 64], ['a'], [], 16, '16,32', [1.5], [2000]]) {
      expect(usage(() => validate({ model: 'cnn', channels: v })), JSON.stringify(v))
        .toMatch(/^--channels: expected a list of one or two channel counts, each an integer in 1\.\.1024, got /);
    }
  });

  it('--channels with the mlp is refused, naming --model cnn', () => {
    const m = '--channels: only the cnn has convolution channels; add --model cnn, or leave --channels out';
    expect(usage(() => validate({ channels: [4, 8] }))).toBe(m);
    expect(usage(() => validate({ model: 'mlp', channels: [16] }))).toBe(m);
    // from a --config file too (a check across fields, as --nesterov's: validate() makes it, after the file is read)
    const f = join(dir, 'mlp-channels.json');
    writeFileSync(f, '{"channels": [8, 16]}');
    expect(usage(() => validate(readConfigFile(f)))).toBe(m);
    expect(usage(() => validate({ ...readConfigFile(f), model: 'mlp' }))).toBe(m);
    expect(validate({ ...readConfigFile(f), model: 'cnn' }).channels).toEqual([8, 16]);
  });
});
