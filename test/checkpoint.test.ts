// loadCheckpoint (--resume) on checkpoints written by saveCheckpoint and then made wrong in one way each:
// what training would take from the file unchecked (the optimizer's state tensors, the epoch permutation,
// the counters of the training state) must be refused in one line naming the file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, saveCheckpoint, type TrainState } from '../src/checkpoint.js';
import { validate, type Config } from '../src/config.js';
import { UserError } from '../src/errors.js';
import { initParams, modelLayout, paramLayout, widths, type Layout } from '../src/model.js';
import { Rng } from '../src/rng.js';
import { encodeSafetensors, weightTensors } from '../src/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'mnist-par-checkpoint-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const N = 12;
const layout = paramLayout(widths([4]));
const params = new Float32Array(layout.size).map((_, i) => Math.sin(i));
const moments = (k: number) => Array.from({ length: k }, (_, j) => new Float32Array(layout.size).fill(j + 1));
const goodPerm = () => Float32Array.from({ length: N }, (_, i) => (i * 5) % N);

function state(config: Partial<Config>, over: Record<string, unknown> = {}): TrainState {
  return {
    version: 2, config: validate({ hidden: [4], batchSize: 4, limitTrain: N, ...config }), cwd: '/tmp', kernelFamily: 'js',
    epoch: 1, batch: 1, step: 1, rng: new Rng(1).state(), partial: { lossSum: 9, correct: 1, seen: 4, seconds: 0.1 },
    elapsedSec: 0.2, best: null, early: { best: null, bestEpoch: 0, epochsWithoutImprovement: 0 },
    ...over,
  } as unknown as TrainState;
}

let n = 0;
/** Writes a checkpoint with saveCheckpoint; `load` reads it back as --resume does. */
async function roundTrip(st: TrainState, states: Float32Array[], perm: Float32Array | null) {
  const f = join(dir, `ck${n++}.safetensors`);
  await saveCheckpoint(f, layout, params, states, perm && Uint32Array.from(perm), st);
  return { f, load: () => loadCheckpoint(f) };
}

async function refused(p: Promise<unknown>, f: string, ...parts: RegExp[]): Promise<void> {
  const e = await p.then(() => null, (err: unknown) => err);
  expect(e).toBeInstanceOf(UserError);
  const msg = (e as Error).message;
  expect(msg).not.toMatch(/[\r\n]/);
  expect(msg).toContain(f);
  for (const r of parts) expect(msg).toMatch(r);
}

describe('loadCheckpoint: optimizer state tensors', () => {
  it('accepts as many as the configured optimizer steps with', async () => {
    for (const [cfg, k] of [[{ optimizer: 'adam' }, 2], [{ optimizer: 'adamw' }, 2], [{ optimizer: 'sgd', momentum: 0.9 }, 1], [{ optimizer: 'sgd', momentum: 0 }, 0]] as const) {
      const ck = await (await roundTrip(state(cfg), moments(k), goodPerm())).load();
      expect(ck.optimizerState).toHaveLength(k);
      expect(ck.optimizerState.map((m) => m[0])).toEqual(Array.from({ length: k }, (_, j) => j + 1));
    }
  });

  it('refuses too few, too many, or a gap', async () => {
    const few = await roundTrip(state({ optimizer: 'adam' }), moments(1), goodPerm());
    await refused(few.load(), few.f, /optimizer adam needs 2 state tensors \(optimizer\.state\.0, optimizer\.state\.1\), found 1/);
    const many = await roundTrip(state({ optimizer: 'sgd', momentum: 0 }), moments(1), goodPerm());
    await refused(many.load(), many.f, /optimizer sgd with momentum 0 needs 0 state tensors \(none\), found 1 \(optimizer\.state\.0\)/);
    const three = await roundTrip(state({ optimizer: 'adamw' }), moments(3), goodPerm());
    await refused(three.load(), three.f, /needs 2 state tensors .*found 3/);
  });

  it('refuses a NaN or an infinite moment', async () => {
    const m = moments(2);
    m[1][5] = Infinity;
    const r = await roundTrip(state({ optimizer: 'adam' }), m, goodPerm());
    await refused(r.load(), r.f, /its optimizer\.state\.1 holds Infinity at index 5/);
  });
});

describe('loadCheckpoint: the epoch permutation', () => {
  it('accepts a permutation of 0..N-1 and returns it as indices', async () => {
    const ck = await (await roundTrip(state({ optimizer: 'adam' }), moments(2), goodPerm())).load();
    expect(Array.from(ck.perm!)).toEqual(Array.from(goodPerm()));
  });

  // before, each of these loaded: Uint32Array.from turned NaN into 0, -1 into 4294967295, 1.5 into 1, and a
  // repeat left an image out of the epoch; an index past N read beyond the training set in the arena
  for (const [what, i, v, why] of [
    ['NaN', 3, NaN, /entry 3 is NaN, not an integer/],
    ['a fraction', 0, 1.5, /entry 0 is 1\.5, not an integer/],
    ['a negative index', 5, -1, /entry 5 is -1, out of range/],
    ['an index past the end', 2, N, /entry 2 is 12, out of range/],
    ['a repeat', 1, 0, /entry 1 repeats 0/],
  ] as const) {
    it(`refuses ${what}`, async () => {
      const p = goodPerm();
      p[i] = v;
      const f = join(dir, `perm${n++}.safetensors`);
      // written by hand: saveCheckpoint's Uint32Array cannot hold the damaged values
      const tensors = weightTensors(layout, params);
      moments(2).forEach((data, k) => tensors.push({ name: `optimizer.state.${k}`, shape: [data.length], data }));
      tensors.push({ name: 'epoch.permutation', shape: [N], data: p });
      writeFileSync(f, encodeSafetensors(tensors, { 'mnist-par.state': JSON.stringify(state({ optimizer: 'adam' })) }));
      await refused(loadCheckpoint(f), f, /epoch\.permutation is not a permutation of 0\.\.11/, why);
    });
  }

  it('refuses a mid-epoch batch past the end of the permutation', async () => {
    const r = await roundTrip(state({ optimizer: 'adam' }, { batch: 3, step: 3 }), moments(2), goodPerm());
    await refused(r.load(), r.f, /saved before batch 4 of epoch 1, past the end of its 12-image permutation in batches of 4/);
  });
});

describe('loadCheckpoint: the training state', () => {
  for (const [what, over, why] of [
    ['an epoch that is text', { epoch: '2' }, /epoch 2 \(expected an integer ≥ 1\)/],
    ['a negative batch', { batch: -1 }, /batch -1/],
    ['a step before the batch', { step: 0 }, /step 0 \(expected an integer ≥ batch 1\)/],
    ['a generator state of three words', { rng: [1, 2, 3] }, /random generator state/],
    ['elapsed seconds of null (NaN, once written as JSON)', { elapsedSec: null }, /elapsedSec null/],
    ['no early-stopping counts', { early: {} }, /early-stopping/],
    ['a start folder that is not a path', { cwd: 7 }, /a start folder \(cwd\) 7 that is not a path/],
  ] as const) {
    it(`refuses ${what}`, async () => {
      const r = await roundTrip(state({ optimizer: 'adam' }, over), moments(2), goodPerm());
      await refused(r.load(), r.f, /its training state has /, why);
    });
  }

  it('refuses a step that is an array nested 20000 deep (describing it with String() overflowed the stack)', async () => {
    const f = join(dir, `deep${n++}.safetensors`);
    const tensors = weightTensors(layout, params);
    moments(2).forEach((data, k) => tensors.push({ name: `optimizer.state.${k}`, shape: [data.length], data }));
    tensors.push({ name: 'epoch.permutation', shape: [N], data: goodPerm() });
    const text = JSON.stringify(state({ optimizer: 'adam' }, { step: 'DEEP' })).replace('"DEEP"', '['.repeat(20_000) + ']'.repeat(20_000));
    writeFileSync(f, encodeSafetensors(tensors, { 'mnist-par.state': text }));
    await refused(loadCheckpoint(f), f, /its training state has step an array \(expected an integer ≥ batch 1\)/);
  });

  it('refuses a configuration validate() would refuse, naming the field', async () => {
    const st = state({ optimizer: 'adam' });
    (st.config as unknown as Record<string, unknown>).optimizer = 'adagrad';
    const r = await roundTrip(st, moments(2), goodPerm());
    await refused(r.load(), r.f, /configuration in its training state is invalid \(--optimizer: expected one of sgd, adam, adamw, got 'adagrad'\)/);
  });
});

describe('loadCheckpoint: a cnn', () => {
  // --model cnn --channels 4,8 --hidden 16: weights 0.weight (4,1,5,5) … 9.bias (10), which the configuration
  // in the training state must name too (checkpoint.ts compares the network of each)
  const cnnLayout: Layout = modelLayout({ kind: 'cnn', channels: [4, 8], hidden: [16] });
  const cnnParams = new Float32Array(cnnLayout.size);
  initParams(cnnParams, cnnLayout, 3);
  const cnnState = (config: Partial<Config>) => state({ model: 'cnn', channels: [4, 8], hidden: [16], optimizer: 'adam', ...config });
  const save = async (layout: Layout, params: Float32Array, st: TrainState) => {
    const f = join(dir, `cnn${n++}.safetensors`);
    const m = Array.from({ length: 2 }, (_, j) => new Float32Array(layout.size).fill(j + 0.5));
    await saveCheckpoint(f, layout, params, m, Uint32Array.from(goodPerm()), st);
    return f;
  };

  it('round-trips: the weights and moments bit for bit, the configuration as saved', async () => {
    const ck = await loadCheckpoint(await save(cnnLayout, cnnParams, cnnState({})));
    expect(Buffer.from(ck.params.buffer).equals(Buffer.from(cnnParams.buffer))).toBe(true);
    expect(ck.optimizerState.map((m) => [m.length, m[0]])).toEqual([[cnnLayout.size, 0.5], [cnnLayout.size, 1.5]]);
    expect(ck.state.config).toMatchObject({ model: 'cnn', channels: [4, 8], hidden: [16] });
  });

  it('refuses a cnn whose configuration says mlp (tampered), naming both networks', async () => {
    const st = cnnState({});
    Object.assign(st.config, { model: 'mlp', channels: [16, 32] });
    const f = await save(cnnLayout, cnnParams, st);
    await refused(loadCheckpoint(f), f,
      /: its weights are a cnn 1→4→8 conv5 pool2 · 128→16→10 but its configuration says mlp 784→16→10; the checkpoint is inconsistent$/);
  });

  it('refuses a cnn whose configuration names other channels, or another hidden width', async () => {
    const f = await save(cnnLayout, cnnParams, cnnState({ channels: [4, 4] }));
    await refused(loadCheckpoint(f), f, /its weights are a cnn 1→4→8 conv5 pool2 · 128→16→10 but its configuration says cnn 1→4→4 conv5 pool2 · 64→16→10/);
    const g = await save(cnnLayout, cnnParams, cnnState({ hidden: [17] }));
    await refused(loadCheckpoint(g), g, /but its configuration says cnn 1→4→8 conv5 pool2 · 128→17→10/);
  });

  it('refuses an mlp whose configuration says cnn', async () => {
    const mlp = paramLayout(widths([16]));
    const f = await save(mlp, new Float32Array(mlp.size).fill(0.01), cnnState({}));
    await refused(loadCheckpoint(f), f, /its weights are an mlp 784→16→10 but its configuration says cnn 1→4→8 conv5 pool2 · 128→16→10/);
  });

  it('refuses a cnn checkpoint whose optimizer moments are an mlp\'s length', async () => {
    const f = join(dir, `cnn${n++}.safetensors`);
    await saveCheckpoint(f, cnnLayout, cnnParams, [new Float32Array(layout.size), new Float32Array(layout.size)],
      Uint32Array.from(goodPerm()), cnnState({}));
    await refused(loadCheckpoint(f), f, new RegExp(`optimizer\\.state\\.0 has ${layout.size} values, expected ${cnnLayout.size}`));
  });
});
