// The dashboard as a user meets it: `mnist-par train` in a real pseudo-terminal (a detached tmux pane of a
// fixed size), stopped with `q`, with Ctrl-C, with Ctrl-C twice, and by a failing worker. Each way out must
// give the documented exit code (q 0, Ctrl-C 130, a failure 1) and leave the terminal as it was: the
// alternate screen left, the cursor shown, every mode it set reset, no colour left on, the line discipline
// (stty) back to what the shell had. A stop by q or Ctrl-C also leaves the stop line and the resume hint on
// the normal screen and a checkpoint that loads and resumes at the next step.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readSafetensors } from '../src/safetensors.js';
import { cliPath, mnistDir, runCli } from './cli-run.js';

const probe = spawnSync('tmux', ['-V'], { encoding: 'utf8' });
const missing = probe.error || probe.status !== 0 ? 'tmux is not installed (apt-get install tmux); these tests need it' : '';
if (missing) console.warn(`test/pty.test.ts skipped: ${missing}`);

const WIDTH = 100;
const HEIGHT = 30;
const FOOTER = 'q / Ctrl-C: stop after this step';
// 400 steps an epoch and 50 epochs: minutes of work, so the run is surely in progress when the key arrives.
// --schedule none lets the resume below shorten --epochs.
const RUN = ['--data-dir', mnistDir, '--no-download', '--limit-train', '12800', '--batch-size', '32', '--limit-test', '500',
  '--epochs', '50', '--schedule', 'none', '--threads', '2'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A word for the POSIX shell, quoted. */
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Polls `test` every 100 ms until it returns a value other than undefined; fails naming `what` after `ms`. */
async function until<T>(what: string, ms: number, test: () => T | undefined, last: () => string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = test();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}; last seen:\n${last()}`);
    await sleep(100);
  }
}

/** A tmux server of our own (its own socket, no user configuration) with one pane running `mnist-par train`. */
class Pane {
  readonly dir = mkdtempSync(join(tmpdir(), 'mnist-par-pty-'));
  readonly out = join(this.dir, 'models');
  private readonly socket = join(this.dir, 'tmux.sock');

  tmux(...args: string[]): string {
    // TMUX unset: a test run inside tmux still starts its own server rather than nesting
    const r = spawnSync('tmux', ['-S', this.socket, ...args],
      { encoding: 'utf8', timeout: 20_000, env: { ...process.env, TMUX: undefined } });
    if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr || r.error?.message}`);
    return r.stdout;
  }

  /**
   * Starts the pane. Its shell waits for a line before the run, so the raw output is recorded from its first
   * byte, and after it, so the pane stays as the run left it while the test reads its screen and flags.
   */
  start(args: string[], env: Record<string, string> = {}): void {
    const f = (name: string) => shq(join(this.dir, name));
    writeFileSync(join(this.dir, 'run.sh'), [
      `stty -g > ${f('stty-before')}`,
      'read go',
      ['env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, cliPath, 'train', ...args]
        .map(shq).join(' '),
      'code=$?',
      `stty -g > ${f('stty-after')}`,
      // through the same terminal after the run's last byte: once it shows in the raw stream, so does all before
      'echo "[run exited with $code]"',
      'read done',
      '',
    ].join('\n'));
    this.tmux('-f', '/dev/null', 'new-session', '-d', '-s', 'run', '-x', String(WIDTH), '-y', String(HEIGHT), '-c', this.dir,
      `sh ${f('run.sh')}`);
    this.tmux('pipe-pane', '-t', 'run', `cat >> ${f('raw')}`);
    this.tmux('send-keys', '-t', 'run', 'Enter');
  }

  screen(): string {
    return this.tmux('capture-pane', '-p', '-J', '-t', 'run');
  }

  flags(names: string[]): Record<string, string> {
    const values = this.tmux('display-message', '-p', '-t', 'run', names.map((n) => `#{${n}}`).join(' ')).trim().split(' ');
    return Object.fromEntries(names.map((n, i) => [n, values[i]]));
  }

  raw(): string {
    return existsSync(join(this.dir, 'raw')) ? readFileSync(join(this.dir, 'raw'), 'latin1') : '';
  }

  read(name: string): string {
    return readFileSync(join(this.dir, name), 'utf8').trim();
  }

  /** Waits for the dashboard, its first steps drawn. */
  async dashboard(): Promise<void> {
    await until('the dashboard', 90_000, () => {
      const screen = this.screen();
      return /batch [1-9]\d*\/400/.test(screen) && screen.includes(FOOTER) ? true : undefined;
    }, () => this.screen());
  }

  /** Waits until the run has exited (its shell still holds the pane) and all it wrote was recorded; returns
   *  its exit code. */
  async exited(): Promise<number> {
    const code = await until('the exit', 90_000, () => this.raw().match(/\[run exited with (\d+)\]/)?.[1], () => this.screen());
    return Number(code);
  }

  close(): void {
    spawnSync('tmux', ['-S', this.socket, 'kill-server'], { timeout: 20_000 });
  }
}

/**
 * The terminal after the exit: in the raw stream every DEC private mode the run set (alternate screen 1049,
 * mouse, bracketed paste, …) ends in its default, the cursor (25) ends shown, application keypad is off and
 * the last SGR is a reset; tmux agrees; the tty's settings are those the shell had before.
 */
function expectRestored(p: Pane): void {
  const raw = p.raw();
  expect(raw, 'the run drew on the alternate screen').toContain('\x1b[?1049h');
  expect(raw, 'and hid the cursor').toContain('\x1b[?25l');
  const modes = new Map<string, string>();
  for (const m of raw.matchAll(/\x1b\[\?([\d;]+)([hl])/g)) for (const n of m[1].split(';')) modes.set(n, m[2]);
  for (const [n, state] of modes) expect(`?${n}${state}`, `final state of DEC mode ${n}`).toBe(`?${n}${n === '25' ? 'h' : 'l'}`);
  const keypad = [...raw.matchAll(/\x1b[=>]/g)].at(-1)?.[0];
  expect(keypad === undefined || keypad === '\x1b>', 'application keypad left on').toBe(true);
  const lastSgr = [...raw.matchAll(/\x1b\[([\d;]*)m/g)].at(-1)?.[1];
  expect(['', '0'], `last SGR \\x1b[${lastSgr}m`).toContain(lastSgr);
  expect(p.flags(['alternate_on', 'cursor_flag', 'keypad_flag', 'keypad_cursor_flag', 'mouse_any_flag', 'insert_flag']))
    .toEqual({ alternate_on: '0', cursor_flag: '1', keypad_flag: '0', keypad_cursor_flag: '0', mouse_any_flag: '0', insert_flag: '0' });
  expect(p.read('stty-after'), 'stty -g after the run').toBe(p.read('stty-before'));
  // the normal screen holds the summary, not a leftover frame
  expect(p.screen()).not.toContain(FOOTER);
}

/** The checkpoint's state, checked against the stop line; then a resume runs from the next step. */
async function expectResumable(p: Pane, how: string): Promise<void> {
  const screen = p.screen();
  const stop = screen.match(new RegExp(`mnist-par: stopped by ${how} (?:in epoch (\\d+) after batch (\\d+)/400|after epoch (\\d+))`));
  expect(stop, screen).not.toBeNull();
  const ckpt = join(p.out, 'checkpoint-last.safetensors');
  expect(screen).toContain(`continue with: mnist-par train --resume ${p.out}`);
  const { metadata, tensors } = await readSafetensors(ckpt);
  expect(tensors.size).toBeGreaterThan(0);
  const state = JSON.parse(metadata['mnist-par.state']);
  const [epoch, batch] = stop![3] ? [Number(stop![3]) + 1, 0] : [Number(stop![1]), Number(stop![2])];
  expect({ epoch: state.epoch, batch: state.batch }).toEqual({ epoch, batch });
  expect(state.step).toBe(400 * (epoch - 1) + batch);
  // finish the epoch in progress (or the next one) only
  const r = runCli(['--resume', ckpt, '--epochs', String(epoch), '--json', '--log-every', '1']);
  expect(r.code, r.stderr).toBe(0);
  const steps = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.type === 'batch').map((x) => x.step);
  expect(steps[0]).toBe(state.step + 1);
  expect(steps.at(-1)).toBe(400 * epoch);
}

describe.skipIf(missing !== '')(`the dashboard in a pseudo-terminal${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let pane: Pane | undefined;
  afterEach(() => pane?.close());

  it('q stops after the step: exit 0, a checkpoint that resumes at the next step, the terminal restored', async () => {
    const p = (pane = new Pane());
    p.start([...RUN, '--out', p.out]);
    await p.dashboard();
    p.tmux('send-keys', '-t', 'run', 'q');
    expect(await p.exited(), p.screen()).toBe(0);
    expectRestored(p);
    await expectResumable(p, 'q');
  });

  it('Ctrl-C stops after the step: exit 130, a checkpoint that resumes at the next step, the terminal restored', async () => {
    const p = (pane = new Pane());
    p.start([...RUN, '--out', p.out]);
    await p.dashboard();
    p.tmux('send-keys', '-t', 'run', 'C-c');
    expect(await p.exited(), p.screen()).toBe(130);
    expectRestored(p);
    await expectResumable(p, 'SIGINT');
  });

  it('a second Ctrl-C quits at once: exit 130, the terminal restored, no torn checkpoint', async () => {
    const p = (pane = new Pane());
    p.start([...RUN, '--out', p.out]);
    await p.dashboard();
    p.tmux('send-keys', '-t', 'run', 'C-c', 'C-c');
    expect(await p.exited(), p.screen()).toBe(130);
    expectRestored(p);
    // it says what was lost (or, had the first Ctrl-C's step and save finished first, how it stopped)
    expect(p.screen()).toMatch(/^mnist-par: (quit by a second Ctrl-C: the step in progress was not saved; the last checkpoint is as it was|stopped by SIGINT)/m);
    // it may have quit before or after the checkpoint was written; written files are whole (atomic writes)
    const ckpt = join(p.out, 'checkpoint-last.safetensors');
    if (existsSync(ckpt)) expect((await readSafetensors(ckpt)).metadata['mnist-par.state']).toBeDefined();
  });

  it('a failing worker: exit 1, its one line on the normal screen, the terminal restored', async () => {
    const p = (pane = new Pane());
    p.start([...RUN, '--out', p.out], { MNIST_PAR_INJECT_FAULT: 'forwardBackward:30' });
    expect(await p.exited(), p.screen()).toBe(1);
    expectRestored(p);
    expect(p.screen()).toMatch(/^mnist-par: training stopped: .*forwardBackward \(step 30, .*injected fault/m);
  });
});
