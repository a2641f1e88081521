import { mkdtemp, readdir, readFile, rm, truncate, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { UserError } from '../src/errors.js';
import { initParams, modelLayout, paramLayout, widths, DEFAULT_HIDDEN } from '../src/model.js';
import {
  decodeSafetensors, encodeSafetensors, paramsFromTensors, readSafetensors, weightTensors, writeSafetensors,
  type Tensor,
} from '../src/safetensors.js';

// Lets one test make the final rename fail, to show an existing file survives a failed write.
const failRename = vi.hoisted(() => ({ on: false }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...real,
    rename: async (a: string, b: string) => {
      if (failRename.on) throw Object.assign(new Error('EIO: simulated rename failure'), { code: 'EIO' });
      return real.rename(a, b);
    },
  };
});

let dir: string;
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'st-test-')); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

const layout = paramLayout(widths(DEFAULT_HIDDEN));
const params = new Float32Array(layout.size);
initParams(params, layout, 42);

/** A deliberately separate reader: DataView + JSON.parse, nothing from src/safetensors.ts. */
function independentParse(buf: Uint8Array): { n: number; header: Record<string, any>; tensor(name: string): Float32Array } {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(Buffer.from(buf.subarray(8, 8 + n)).toString('utf8'));
  return {
    n, header,
    tensor(name) {
      const [b, e] = header[name].data_offsets as [number, number];
      const out = new Float32Array((e - b) / 4);
      for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(8 + n + b + 4 * i, true);
      return out;
    },
  };
}

/** Bit-for-bit equality of two float arrays (toEqual is slow on 400k elements). */
const sameBits = (a: Float32Array, b: Float32Array): boolean =>
  a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

/** Builds a file by hand from a header object and a data section, for the corruption cases. */
function handMade(header: unknown, data: Uint8Array, rawHeader?: string): Uint8Array {
  const h = Buffer.from(rawHeader ?? JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function expectUserError(f: () => unknown, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try { f(); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  for (const p of parts) expect(msg).toMatch(p);
}

describe('encode / decode', () => {
  it('round-trips names, shapes, values and metadata, with aligned copies', () => {
    const ts: Tensor[] = [
      { name: 'a', shape: [2, 3], data: new Float32Array([1, -2, 3.5, NaN, Infinity, -0]) },
      { name: 'b', shape: [1], data: new Float32Array([7]) },
      { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
    ];
    const bytes = encodeSafetensors(ts, { format: 'pt', epoch: '3' });
    // Decode from an odd offset so the data cannot be viewed in place.
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const { tensors, metadata } = decodeSafetensors(shifted.subarray(1), 'x.safetensors');
    expect(metadata).toEqual({ format: 'pt', epoch: '3' });
    expect([...tensors.keys()]).toEqual(['a', 'b', 'empty']);
    for (const t of ts) {
      const got = tensors.get(t.name)!;
      expect(got.shape).toEqual(t.shape);
      expect(got.data.byteOffset % 4).toBe(0);
      // Byte-exact: NaN, -0 and infinities included.
      expect(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength))
        .toEqual(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  });

  it('writes a file an independent parser reads back: header padded to 8, weights exact', async () => {
    const path = join(dir, 'model.safetensors');
    await writeSafetensors(path, weightTensors(layout, params), { layers: layout.layers.join(',') });
    const buf = new Uint8Array(await readFile(path));
    const p = independentParse(buf);
    expect(p.n % 8).toBe(0);
    expect((8 + p.n) % 8).toBe(0);
    expect(p.header.__metadata__).toEqual({ layers: '784,128,256,512,128,10' });
    layout.linear.forEach(({ C, OC, w, b }, l) => {
      expect(p.header[`${2 * l}.weight`].dtype).toBe('F32');
      expect(p.header[`${2 * l}.weight`].shape).toEqual([OC, C]);
      expect(p.header[`${2 * l}.bias`].shape).toEqual([OC]);
      expect(sameBits(p.tensor(`${2 * l}.weight`), params.subarray(w, w + OC * C))).toBe(true);
      expect(sameBits(p.tensor(`${2 * l}.bias`), params.subarray(b, b + OC))).toBe(true);
    });
    expect(Object.keys(p.header).filter((k) => k !== '__metadata__')).toHaveLength(2 * layout.linear.length);

    const back = paramsFromTensors((await readSafetensors(path)).tensors, path);
    expect(back.layers).toEqual([784, 128, 256, 512, 128, 10]);
    expect(sameBits(back.params, params)).toBe(true);
  });
});

describe('corrupt files', () => {
  const F = 'bad.safetensors';
  const four = new Uint8Array(16);
  const ok = { t: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } };

  it('accepts the hand-made baseline', () => {
    expect(decodeSafetensors(handMade(ok, four), F).tensors.get('t')!.data).toHaveLength(4);
  });
  it('too short', () => expectUserError(() => decodeSafetensors(new Uint8Array(5), F), F, /5 bytes, too short/));
  it('header longer than the file', () => {
    const b = handMade(ok, four);
    expectUserError(() => decodeSafetensors(b.subarray(0, 30), F), F, /runs past the end/);
  });
  it('absurd header length', () => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setBigUint64(0, 2n ** 40n, true);
    expectUserError(() => decodeSafetensors(b, F), F, /larger than the .*limit/);
  });
  it('header not JSON', () => expectUserError(() => decodeSafetensors(handMade(null, four, '{"t": '), F), F, /not valid JSON/));
  it('header not an object', () => expectUserError(() => decodeSafetensors(handMade([1, 2], four), F), F, /not a JSON object/));
  it('entry missing dtype / shape / offsets', () => {
    expectUserError(() => decodeSafetensors(handMade({ t: { shape: [4], data_offsets: [0, 16] } }, four), F), F, /t has no dtype/);
    expectUserError(() => decodeSafetensors(handMade({ t: { dtype: 'F32', data_offsets: [0, 16] } }, four), F), /t has no valid shape/);
    expectUserError(() => decodeSafetensors(handMade({ t: { dtype: 'F32', shape: [4] } }, four), F), /t has no valid data_offsets/);
    expectUserError(() => decodeSafetensors(handMade({ t: { dtype: 'F32', shape: [4], data_offsets: [16, 0] } }, four), F), /data_offsets/);
  });
  it('unsupported dtype', () => {
    const h = { t: { dtype: 'BF16', shape: [8], data_offsets: [0, 16] } };
    expectUserError(() => decodeSafetensors(handMade(h, four), F), F, /dtype BF16, only F32/);
  });
  it('shape and byte range disagree', () => {
    const h = { t: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } };
    expectUserError(() => decodeSafetensors(handMade(h, four), F), F, /shape \[3\] \(12 bytes\).*span 16 bytes/);
  });
  it('offsets out of bounds', () => {
    const h = { t: { dtype: 'F32', shape: [5], data_offsets: [0, 20] } };
    expectUserError(() => decodeSafetensors(handMade(h, four), F), F, /run past the 16-byte data section/);
  });
  it('overlapping tensors', () => {
    const h = { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } };
    expectUserError(() => decodeSafetensors(handMade(h, four), F), F, /b .*overlap/);
  });
  it('gaps between or after tensors', () => {
    const mid = { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } };
    expectUserError(() => decodeSafetensors(handMade(mid, four), F), F, /gap .*bytes 4\.\.8/);
    const tail = { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] } };
    expectUserError(() => decodeSafetensors(handMade(tail, four), F), F, /gap .*bytes 12\.\.16/);
  });
  it('bad metadata', () => {
    expectUserError(() => decodeSafetensors(handMade({ ...ok, __metadata__: { a: 1 } }, four), F), F, /__metadata__\.a is not a string/);
  });
  it('names, dtypes and JSON errors from the file stay on one line, escaped and cut', () => {
    // found by test/fuzz.test.ts: a newline in a tensor name or a metadata key reached the message
    expectUserError(() => decodeSafetensors(handMade({ 'a\nb': 5 }, four), F), F, /entry "a\\nb" is not an object/);
    expectUserError(() => decodeSafetensors(handMade({ ...ok, __metadata__: { 'x\ry': 1 } }, four), F), /__metadata__\."x\\ry" is not a string/);
    const dtype = { t: { dtype: 'F16\n'.repeat(100), shape: [8], data_offsets: [0, 16] } };
    expectUserError(() => decodeSafetensors(handMade(dtype, four), F), /dtype "F16\\nF16.*"…, only F32/);
    // V8 quotes the bad JSON, newlines included, in its complaint
    expectUserError(() => decodeSafetensors(handMade(null, four, '{"t":\n\n x}'), F), F, /not valid JSON/);
    const shape = { t: { dtype: 'F32', shape: new Array(5000).fill(1), data_offsets: [0, 12] } };
    let msg = '';
    try { decodeSafetensors(handMade(shape, four), F); } catch (e) { msg = (e as Error).message; }
    expect(msg).toMatch(/shape \[1, 1, 1, 1, 1, 1, 1, 1, … \(5000 dimensions\)\]/);
    expect(msg.length).toBeLessThan(300);
  });
  it('a file over 1 GiB is refused before it is read into memory', async () => {
    const big = join(dir, 'big.safetensors');
    await writeFile(big, handMade(ok, four));
    await truncate(big, 2 ** 30 + 1); // sparse: costs no disk
    await expect(readSafetensors(big)).rejects.toThrow(/big\.safetensors: 1073741825 bytes, larger than the 1073741824-byte limit/);
  });
  it('missing file', async () => {
    await expect(readSafetensors(join(dir, 'nope.safetensors'))).rejects.toThrow(/nope\.safetensors: cannot read \(no such file\)/);
  });
});

describe('paramsFromTensors', () => {
  const t = (name: string, ...shape: number[]): [string, Tensor] =>
    [name, { name, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }];
  const net = (...ts: [string, Tensor][]) => new Map(ts);

  it('infers other widths', () => {
    const r = paramsFromTensors(net(t('0.weight', 32, 784), t('0.bias', 32), t('2.weight', 10, 32), t('2.bias', 10), t('adam.m', 3)), 'f');
    expect(r.layers).toEqual([784, 32, 10]);
    expect(r.params).toHaveLength(784 * 32 + 32 + 32 * 10 + 10);
  });
  it('rejects a broken chain with the expected shape', () => {
    expectUserError(() => paramsFromTensors(net(t('0.weight', 32, 784), t('0.bias', 32), t('2.weight', 10, 31), t('2.bias', 10)), 'w.st'),
      /^w\.st: 2\.weight has shape \[10, 31\], expected \[OC, 32\]/);
    expectUserError(() => paramsFromTensors(net(t('0.weight', 32, 783), t('0.bias', 32)), 'w.st'), /0\.weight has shape \[32, 783\], expected \[OC, 784\]/);
    expectUserError(() => paramsFromTensors(net(t('0.weight', 32, 784), t('0.bias', 33)), 'w.st'), /0\.bias has shape \[33\], expected \[32\]/);
    expectUserError(() => paramsFromTensors(net(t('0.weight', 12, 784), t('0.bias', 12)), 'w.st'), /0\.weight has shape \[12, 784\], expected \[10, 784\]/);
    expectUserError(() => paramsFromTensors(net(t('0.weight', 10, 784)), 'w.st'), /0\.weight has no matching 0\.bias/);
    expectUserError(() => paramsFromTensors(net(t('2.weight', 10, 784)), 'w.st'), /no tensor named 0\.weight/);
    expectUserError(() => paramsFromTensors(net(t('0.weight', 10, 784), t('0.bias', 10), t('4.weight', 10, 10)), 'w.st'),
      /unexpected tensor 4\.weight/);
  });
  it('rejects a NaN or an infinite weight (found by fuzzing: one flipped exponent bit made predict print NaN%)', () => {
    for (const [v, at] of [[NaN, 7], [Infinity, 0], [-Infinity, 9]] as const) {
      const ts = net(t('0.weight', 10, 784), t('0.bias', 10));
      ts.get('0.bias')!.data[at] = v;
      expectUserError(() => paramsFromTensors(ts, 'w.st'), new RegExp(`^w\\.st: 0\\.bias holds ${v} at index ${at}; the weights are damaged`));
    }
  });
});

describe('a cnn\'s weights', () => {
  // nn.Sequential(Conv2d(1,c1,5), ReLU, MaxPool2d(2), Conv2d(c1,c2,5), ReLU, MaxPool2d(2), Flatten, Linear(c2·16,h),
  // ReLU, Linear(h,10)): the modules with parameters are 0, 3, 7 and 9; the flattened map is c2 × 4 × 4.
  const spec = { kind: 'cnn', channels: [4, 8], hidden: [16] } as const;
  const cnnLayout = modelLayout(spec);
  const cnnParams = new Float32Array(cnnLayout.size);
  initParams(cnnParams, cnnLayout, 7);
  const t = (name: string, ...shape: number[]): [string, Tensor] =>
    [name, { name, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.25) }];
  /** the tensors of a cnn 4,8 / 16, each replaced by `over` where it names one (undefined: left out) */
  const cnnFile = (over: Record<string, number[] | undefined> = {}) => {
    const shapes: Record<string, number[] | undefined> = {
      '0.weight': [4, 1, 5, 5], '0.bias': [4], '3.weight': [8, 4, 5, 5], '3.bias': [8],
      '7.weight': [16, 128], '7.bias': [16], '9.weight': [10, 16], '9.bias': [10], ...over,
    };
    return new Map(Object.entries(shapes).filter(([, s]) => s !== undefined).map(([name, s]) => t(name, ...s!)));
  };

  it('weightTensors names and shapes them as PyTorch does, in module order, as views of the parameters', () => {
    const ts = weightTensors(cnnLayout, cnnParams);
    expect(ts.map((x) => [x.name, x.shape])).toEqual([
      ['0.weight', [4, 1, 5, 5]], ['0.bias', [4]], ['3.weight', [8, 4, 5, 5]], ['3.bias', [8]],
      ['7.weight', [16, 128]], ['7.bias', [16]], ['9.weight', [10, 16]], ['9.bias', [10]],
    ]);
    // back to back in the flat buffer, every parameter once
    let at = 0;
    for (const x of ts) {
      expect(x.data.buffer).toBe(cnnParams.buffer);
      expect(x.data.byteOffset).toBe(4 * at);
      at += x.data.length;
    }
    expect(at).toBe(cnnLayout.size);
    expect(cnnLayout.size).toBe(4 * 25 + 4 + 8 * 4 * 25 + 8 + 16 * 128 + 16 + 10 * 16 + 10);
    // the default cnn: 16,32 channels, hidden 128
    expect(weightTensors(modelLayout({ kind: 'cnn', channels: [16, 32], hidden: [128] }), new Float32Array(80202)).map((x) => x.shape))
      .toEqual([[16, 1, 5, 5], [16], [32, 16, 5, 5], [32], [128, 512], [128], [10, 128], [10]]);
  });

  it('round-trips through a file: paramsFromTensors infers the cnn and gives the same bits', async () => {
    const f = join(dir, 'cnn.safetensors');
    await writeSafetensors(f, weightTensors(cnnLayout, cnnParams), { format: 'pt' });
    const r = paramsFromTensors((await readSafetensors(f)).tensors, f);
    expect(r.spec).toEqual(spec);
    expect(r.layers).toEqual([128, 16, 10]);
    expect(r.layout).toEqual(cnnLayout);
    expect(sameBits(r.params, cnnParams)).toBe(true);
    // an independent reader sees the same names, shapes and values
    const ind = independentParse(await readFile(f));
    expect(ind.header['3.weight'].shape).toEqual([8, 4, 5, 5]);
    expect(sameBits(ind.tensor('3.weight'), cnnParams.subarray(cnnLayout.conv[1].w, cnnLayout.conv[1].b))).toBe(true);
  });

  it('infers one convolution, and more hidden layers: the linear modules follow at 3n+1, 3n+3, …', () => {
    const one = paramsFromTensors(new Map([t('0.weight', 6, 1, 5, 5), t('0.bias', 6), t('4.weight', 20, 6 * 12 * 12), t('4.bias', 20),
      t('6.weight', 10, 20), t('6.bias', 10)]), 'one.st');
    expect(one.spec).toEqual({ kind: 'cnn', channels: [6], hidden: [20] });
    const deep = paramsFromTensors(cnnFile({ '9.weight': [12, 16], '9.bias': [12], '11.weight': [10, 12], '11.bias': [10] }), 'deep.st');
    expect(deep.spec).toEqual({ kind: 'cnn', channels: [4, 8], hidden: [16, 12] });
    // the same tensors under the mlp's names are no cnn
    expectUserError(() => paramsFromTensors(new Map([t('0.weight', 4, 1, 5, 5), t('0.bias', 4), t('2.weight', 10, 4 * 144), t('2.bias', 10)]), 'm.st'),
      /^m\.st: no tensor named 4\.weight after the convolutions/);
  });

  for (const [what, over, message] of [
    ['a 3×3 kernel', { '0.weight': [4, 1, 3, 3] }, /^w\.st: 0\.weight has shape \[4, 1, 3, 3\], expected \[OC, 1, 5, 5\]; the file does not hold weights/],
    ['a first convolution on 3 input channels', { '0.weight': [4, 3, 5, 5] }, /0\.weight has shape \[4, 3, 5, 5\], expected \[OC, 1, 5, 5\]/],
    ['a second convolution whose inputs are not the first one\'s outputs', { '3.weight': [8, 5, 5, 5] },
      /^w\.st: 3\.weight has shape \[8, 5, 5, 5\], expected \[OC, 4, 5, 5\]/],
    ['a convolution with no output channels', { '0.weight': [0, 1, 5, 5], '0.bias': [0] }, /0\.weight has shape \[0, 1, 5, 5\], expected \[OC, 1, 5, 5\] with OC >= 1/],
    ['7.weight not c2·16 wide', { '7.weight': [16, 100] }, /^w\.st: 7\.weight has shape \[16, 100\], expected \[OC, 128\]/],
    ['7.weight as wide as the map before the second pooling (8·8·8)', { '7.weight': [16, 512] }, /7\.weight has shape \[16, 512\], expected \[OC, 128\]/],
    ['no 0.bias', { '0.bias': undefined }, /^w\.st: 0\.weight has no matching 0\.bias/],
    ['no 3.bias', { '3.bias': undefined }, /^w\.st: 3\.weight has no matching 3\.bias/],
    ['no 9.bias', { '9.bias': undefined }, /9\.weight has no matching 9\.bias/],
    ['a bias the wrong length', { '3.bias': [7] }, /3\.bias has shape \[7\], expected \[8\]/],
    ['no linear layers', { '7.weight': undefined, '7.bias': undefined, '9.weight': undefined, '9.bias': undefined },
      /no tensor named 7\.weight after the convolutions/],
    ['a last layer of 12 classes', { '9.weight': [12, 16], '9.bias': [12] }, /9\.weight has shape \[12, 16\], expected \[10, 16\]/],
    ['a third convolution', { '6.weight': [8, 8, 5, 5], '6.bias': [8] }, /unexpected tensor 6\.(weight|bias) outside the chain/],
  ] as [string, Record<string, number[] | undefined>, RegExp][]) {
    it(`refuses ${what} in one line naming the file`, () => {
      expectUserError(() => paramsFromTensors(cnnFile(over), 'w.st'), message);
    });
  }

  it('the baseline of those cases loads', () => {
    expect(paramsFromTensors(cnnFile(), 'w.st').spec).toEqual(spec);
  });
});

describe('atomic write', () => {
  it('leaves no temporary files', async () => {
    const d = join(dir, 'clean');
    await mkdir(d);
    await writeSafetensors(join(d, 'a.safetensors'), weightTensors(layout, params));
    await writeSafetensors(join(d, 'a.safetensors'), weightTensors(layout, params));
    expect(await readdir(d)).toEqual(['a.safetensors']);
  });
  it('a missing directory is a UserError naming the path', async () => {
    const p = join(dir, 'no-such-dir', 'a.safetensors');
    await expect(writeSafetensors(p, weightTensors(layout, params))).rejects.toThrow(UserError);
    await expect(writeSafetensors(p, weightTensors(layout, params))).rejects.toThrow(/no-such-dir\/a\.safetensors: cannot write/);
  });
  it('a failed write keeps the existing file intact and cleans up', async () => {
    const d = join(dir, 'keep');
    await mkdir(d);
    const p = join(d, 'a.safetensors');
    await writeFile(p, 'old contents');
    failRename.on = true;
    try {
      await expect(writeSafetensors(p, weightTensors(layout, params))).rejects.toThrow(/a\.safetensors: cannot write \(EIO/);
    } finally {
      failRename.on = false;
    }
    expect(await readFile(p, 'utf8')).toBe('old contents');
    expect(await readdir(d)).toEqual(['a.safetensors']);
  });
});
