#!/usr/bin/python3
"""PyTorch as the numeric oracle: writes test/fixtures/pytorch-oracle.safetensors.

How to run (Debian: apt-get install python3-torch; PyTorch 1.13 is what wrote the committed fixture):

    /usr/bin/python3 scripts/pytorch-oracle.py [--data-dir DIR] [--out FILE]

DIR holds MNIST's train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (default: ../shared/datasets/mnist
beside the repository if it exists, else datasets/mnist); FILE defaults to test/fixtures/pytorch-oracle.safetensors.
The tests (test/pytorch-oracle.test.ts) read only the committed file: running them needs neither Python nor
PyTorch. Rerun this script when the semantics it pins down change on purpose, and commit the new file.

Why: our reference kernels are our own code, checked against hand-worked values and float64 finite
differences. A trainer that claims PyTorch's semantics should also be checked against PyTorch itself, on
the default net and the default settings, end to end: the input normalization, the forward pass, softmax
cross-entropy with label smoothing averaged over the batch, every parameter's gradient, AdamW on a one-cycle
schedule and SGD with Nesterov momentum and weight decay.

What it computes: the default net nn.Sequential(Linear(784,128), ReLU, Linear(128,256), ReLU,
Linear(256,512), ReLU, Linear(512,128), ReLU, Linear(128,10)), with the exact float32 weights mnist-par's
initParams(seed 42) gives (src/model.ts and src/rng.ts are re-implemented below, integer for integer, so no
weights need storing), on the first 64 MNIST training images normalized as mnist-par does
(float32((v/255 - 0.1307)/0.3081)). PyTorch runs in float64 from those float32 values, so the stored values
are the exact answers (to ~1e-15) that every kernel family approximates in float32. The same computation in
PyTorch's float32 is run too, and its distance from the float64 answer is stored in the metadata as a
yardstick for the tests' tolerances (what PyTorch itself gets wrong by rounding).

  1. logits (64,10) and the mean loss, CrossEntropyLoss(label_smoothing=0.1);
  2. every parameter's gradient of that loss;
  3. AdamW(lr=5e-3, betas=(0.9,0.999), eps=1e-8, weight_decay=0.05) for three steps on that batch, stepped by
     OneCycleLR(max_lr=5e-3, total_steps=8, pct_start=0.25, cos, div_factor=25, final_div_factor=1e4,
     cycle_momentum=False): the three steps cover the warm-up (step 0 at max_lr/25, step 1 at the peak)
     and the annealing (step 2). The lrs of all 8 steps are stored, to compare with learningRate();
  4. SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-3) for three steps from the same start.
The weight decays are larger than the CLI's default (1e-4) on purpose: at 1e-4 AdamW's decay moves a weight
by ~1e-6 of its update, below what float32 can resolve, so a trainer that forgot it would pass.
cycle_momentum=False because mnist-par's one-cycle schedule changes the learning rate only (PyTorch's
default would also cycle AdamW's beta1 between 0.95 and 0.85).

What it stores (safetensors, every tensor little-endian; F32 unless noted; about 160 KB): the full set of
gradients or parameters is 332,042 floats (1.3 MB), so for each of grad/, adamw/ (the change of every
parameter over the three steps, p3 - p0) and sgd/ (the same):
  - the weights of layers 0, 2, 4, 6 (OC, C): row sums <name>.rowsum (OC), column sums <name>.colsum (C),
    computed in float64 (every element enters one of each, so no element can be wrong unseen: a wrong
    element moves its row's and its column's sum), and two full rows <name>.rows (2, C) at the indices
    <name>.rowidx = [OC//3, 2*OC//3] (element-exact spot checks);
  - 8.weight (10,128) and every bias in full.
Besides: batch.images U8 (64,784) and batch.labels U8 (64) as in the IDX file; logits (64,10); loss F64 (1);
adamw.losses / sgd.losses F64 (3), the mean loss before each step; onecycle.lrs F64 (8); init.index
(64 flat parameter indices) with init.values (the float32 weights there). The metadata holds the settings
(JSON), the FNV-1a hash of the whole initial parameter vector's float32 bytes (mnist-par's layout order)
and torch_f32_err: for every stored check, max|float32 PyTorch - float64 PyTorch| / max|float64 PyTorch|.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SEED = 42  # src/config.ts DEFAULTS.seed
LAYERS = [784, 128, 256, 512, 128, 10]  # src/model.ts widths(DEFAULT_HIDDEN)
BATCH = 64
MEAN, STD = 0.1307, 0.3081  # src/data/datasets.ts DATASETS.mnist
SMOOTHING = 0.1  # DEFAULTS.labelSmoothing
ADAMW = dict(lr=5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
ONECYCLE = dict(max_lr=5e-3, total_steps=8, pct_start=0.25, anneal_strategy='cos', div_factor=25.0,
                final_div_factor=1e4, cycle_momentum=False)
SGD = dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=5e-3)
STEPS = 3
ROWS_KEPT = 2

M32 = 0xFFFFFFFF


# ---- mnist-par's initialization, bit for bit (src/rng.ts, src/model.ts initParams) ----------------------

def splitmix32(seed):
    s = seed & M32

    def nxt():
        nonlocal s
        s = (s + 0x9E3779B9) & M32
        z = s
        z = ((z ^ (z >> 16)) * 0x85EBCA6B) & M32
        z = ((z ^ (z >> 13)) * 0xC2B2AE35) & M32
        return z ^ (z >> 16)
    return nxt


def rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & M32


class Rng:
    """xoshiro128** seeded through splitmix32, as src/rng.ts."""

    def __init__(self, seed):
        nxt = splitmix32(seed)
        self.s = [nxt() for _ in range(4)]
        if not any(self.s):
            self.s[0] = 1

    def next_u32(self):
        s = self.s
        result = (rotl((s[1] * 5) & M32, 7) * 9) & M32
        t = (s[1] << 9) & M32
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 11)
        return result

    def next(self):
        hi = self.next_u32() >> 5
        lo = self.next_u32() >> 6
        return (hi * 67108864 + lo) / 9007199254740992

    def uniform(self, lo, hi):
        return lo + (hi - lo) * self.next()


def init_params(layers, seed):
    """The flat float32 parameter vector of initParams: per layer w (OC,C) row-major then b (OC)."""
    rng = Rng(seed)
    flat = []
    for C, OC in zip(layers[:-1], layers[1:]):
        bound = 1 / math.sqrt(C)
        flat.extend(rng.uniform(-bound, bound) for _ in range(OC * C))
        flat.extend(rng.uniform(-bound, bound) for _ in range(OC))
    return np.array(flat, dtype=np.float64).astype(np.float32)  # round to nearest, as a Float32Array store


def fnv1a(data):
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & M32
    return h


# ---- data ------------------------------------------------------------------------------------------------

def read_idx(path, magic):
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    got, count = struct.unpack('>II', raw[:8])
    if got != magic:
        sys.exit(f'{path}: magic {got:#x}, expected {magic:#x}; not an MNIST IDX file')
    if magic == 0x803:
        rows, cols = struct.unpack('>II', raw[8:16])
        return np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, rows * cols)
    return np.frombuffer(raw[8:], dtype=np.uint8)


def default_data_dir():
    shared = os.path.join(REPO, '..', 'shared', 'datasets', 'mnist')
    return shared if os.path.isdir(shared) else os.path.join(REPO, 'datasets', 'mnist')


# ---- the computation ---------------------------------------------------------------------------------------

def make_net(flat, dtype):
    mods = []
    for i, (C, OC) in enumerate(zip(LAYERS[:-1], LAYERS[1:])):
        mods.append(nn.Linear(C, OC))
        if i + 2 < len(LAYERS):
            mods.append(nn.ReLU())
    net = nn.Sequential(*mods).to(dtype)
    off = 0
    with torch.no_grad():
        for lin in net[::2]:
            OC, C = lin.weight.shape
            lin.weight.copy_(torch.from_numpy(flat[off:off + OC * C].reshape(OC, C).astype(np.float64)))
            off += OC * C
            lin.bias.copy_(torch.from_numpy(flat[off:off + OC].astype(np.float64)))
            off += OC
    assert off == flat.size
    return net


def run(flat, x32, y, dtype):
    """Everything the fixture holds, in `dtype`, as float64 numpy arrays keyed by check name."""
    x = torch.from_numpy(x32.astype(np.float64)).to(dtype)
    target = torch.from_numpy(y.astype(np.int64))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=SMOOTHING)  # reduction='mean': the batch mean
    out = {}

    net = make_net(flat, dtype)
    logits = net(x)
    loss = loss_fn(logits, target)
    loss.backward()
    out['logits'] = logits.detach().double().numpy()
    out['loss'] = np.array([loss.item()])
    out['grad'] = {name: p.grad.double().numpy() for name, p in net.named_parameters()}

    def three_steps(make_opt, make_sched):
        net = make_net(flat, dtype)
        start = {name: p.detach().double().numpy().copy() for name, p in net.named_parameters()}
        opt = make_opt(net.parameters())
        sched = make_sched(opt) if make_sched else None
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            loss = loss_fn(net(x), target)
            loss.backward()
            losses.append(loss.item())
            opt.step()
            if sched:
                sched.step()
        delta = {name: p.detach().double().numpy() - start[name] for name, p in net.named_parameters()}
        return delta, np.array(losses)

    onecycle = lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, **ONECYCLE)
    out['adamw'], out['adamw.losses'] = three_steps(lambda ps: torch.optim.AdamW(ps, **ADAMW), onecycle)
    out['sgd'], out['sgd.losses'] = three_steps(lambda ps: torch.optim.SGD(ps, **SGD), None)

    # The learning rate each of the 8 optimizer steps of the schedule runs with (the lr in the param group
    # when optimizer.step() is called), from a scheduler of its own so that all 8 can be read.
    dummy = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], **ADAMW)
    sched = onecycle(dummy)
    lrs = []
    for _ in range(ONECYCLE['total_steps']):
        lrs.append(dummy.param_groups[0]['lr'])
        dummy.step()
        sched.step()
    out['onecycle.lrs'] = np.array(lrs)
    return out


def checks(out):
    """The stored checks: name → float64 array (see the header for the reduction of the large weights)."""
    res = {'logits': out['logits'], 'loss': out['loss'], 'adamw.losses': out['adamw.losses'],
           'sgd.losses': out['sgd.losses'], 'onecycle.lrs': out['onecycle.lrs']}
    for group in ('grad', 'adamw', 'sgd'):
        for name, t in out[group].items():
            key = f'{group}/{name}'
            if t.ndim == 2 and t.shape[0] > 10:
                OC = t.shape[0]
                idx = [OC // 3, 2 * OC // 3][:ROWS_KEPT]
                res[f'{key}.rowsum'] = t.sum(axis=1)
                res[f'{key}.colsum'] = t.sum(axis=0)
                res[f'{key}.rows'] = t[idx]
                res[f'{key}.rowidx'] = np.array(idx, dtype=np.float64)
            else:
                res[key] = t
    return res


F64_NAMES = {'loss', 'adamw.losses', 'sgd.losses', 'onecycle.lrs'}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, numpy array of dtype float32 / float64 / uint8)."""
    dtypes = {np.dtype(np.float32): 'F32', np.dtype(np.float64): 'F64', np.dtype(np.uint8): 'U8'}
    header = {'__metadata__': metadata}
    off = 0
    blobs = []
    for name, a in tensors:
        a = np.ascontiguousarray(a)
        b = a.astype(a.dtype.newbyteorder('<'), copy=False).tobytes()
        header[name] = {'dtype': dtypes[a.dtype], 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description='Write the PyTorch oracle fixture of mnist-par.')
    ap.add_argument('--data-dir', default=default_data_dir())
    ap.add_argument('--out', default=os.path.join(REPO, 'test', 'fixtures', 'pytorch-oracle.safetensors'))
    args = ap.parse_args()

    images = read_idx(os.path.join(args.data_dir, 'train-images-idx3-ubyte.gz'), 0x803)[:BATCH]
    labels = read_idx(os.path.join(args.data_dir, 'train-labels-idx1-ubyte.gz'), 0x801)[:BATCH]
    table = ((np.arange(256, dtype=np.float64) / 255 - MEAN) / STD).astype(np.float32)  # normalizationTable
    x32 = table[images]

    flat = init_params(LAYERS, SEED)
    ref = checks(run(flat, x32, labels, torch.float64))
    f32 = checks(run(flat, x32, labels, torch.float32))
    yardstick = {}
    for name, r in ref.items():
        if name.endswith('.rowidx'):
            continue
        scale = np.abs(r).max()
        yardstick[name] = float(np.abs(f32[name] - r).max() / scale) if scale > 0 else 0.0

    rng = np.random.default_rng(SEED)
    init_index = np.sort(rng.choice(flat.size, 64, replace=False))
    tensors = [('batch.images', images), ('batch.labels', labels),
               ('init.index', init_index.astype(np.float32)), ('init.values', flat[init_index])]
    for name, r in ref.items():
        tensors.append((name, r.astype(np.float64 if name in F64_NAMES else np.float32)))
    settings = dict(seed=SEED, layers=LAYERS, batch=BATCH, mean=MEAN, std=STD, label_smoothing=SMOOTHING,
                    adamw=ADAMW, onecycle=ONECYCLE, sgd=SGD, steps=STEPS)
    metadata = {
        'producer': 'scripts/pytorch-oracle.py',
        'torch': torch.__version__,
        'settings': json.dumps(settings),
        'init_fnv1a': f'{fnv1a(flat.astype("<f4").tobytes()):08x}',
        'torch_f32_err': json.dumps(yardstick),
    }
    write_safetensors(args.out, tensors, metadata)
    size = os.path.getsize(args.out)
    print(f'wrote {args.out} ({size} bytes); loss {ref["loss"][0]:.6f}; '
          f'worst float32-PyTorch error {max(yardstick.values()):.2e}')


if __name__ == '__main__':
    main()
