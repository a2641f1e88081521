#!/usr/bin/python3
"""PyTorch reads mnist-par's weights: loads a model.safetensors (an mlp or a cnn) into the nn.Sequential the
README shows and evaluates it on the test split, for comparison with `mnist-par eval`.

How to run (Debian: apt-get install python3-torch; written against PyTorch 1.13):

    /usr/bin/python3 scripts/pytorch-eval.py MODEL [--data-dir DIR] [--dataset mnist|fashion-mnist] [--json]

MODEL is a model.safetensors written by mnist-par train (or its run folder). DIR holds the dataset's
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (default: ../shared/datasets/NAME beside the repository if
it exists, else datasets/NAME); the dataset defaults to the one named in the file's metadata, else mnist. It prints
the test accuracy and mean loss (with --json: one JSON line that also holds every image's predicted class, which
test/cnn-model.test.ts compares with mnist-par's own).

The networks, as the README's snippets build them (nn.Sequential, so the tensor names are the module indices):

    mlp   Linear(784, n1), ReLU, Linear(n1, n2), ReLU, …, Linear(nk, 10)            0.weight, 2.weight, …
    cnn   Conv2d(1, c1, 5), ReLU, MaxPool2d(2), Conv2d(c1, c2, 5), ReLU, MaxPool2d(2), Flatten,
          Linear(c2 * 4 * 4, h), ReLU, Linear(h, 10)                                0, 3, 7, 9

For the cnn, the README's snippet is:

    import torch.nn as nn
    from safetensors.torch import load_file
    c1, c2, h = 16, 32, 128  # --channels c1,c2 --hidden h
    model = nn.Sequential(
        nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 4 * 4, h), nn.ReLU(), nn.Linear(h, 10))
    model.load_state_dict(load_file("models/latest/model.safetensors"))
    # inputs: (N, 1, 28, 28), x/255, then (x - 0.1307) / 0.3081 (Fashion-MNIST: 0.2860, 0.3530)

The weights are loaded with safetensors.torch.load_file, as the README does, where the safetensors package is
installed; otherwise with read_safetensors below, which returns the same thing (a dict of name → float32 tensor
with the file's shapes): the format is an 8-byte little-endian header length, a JSON header of
{name: {dtype, shape, data_offsets}}, then the raw little-endian data. Either way load_state_dict is strict: every
name and shape must match the module's.

Inputs are normalized as mnist-par does: float32((v/255 - mean) / std) per pixel value v.
"""
import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# src/data/datasets.ts DATASETS
NORMALIZATION = {'mnist': (0.1307, 0.3081), 'fashion-mnist': (0.2860, 0.3530)}


def read_safetensors(path):
    """What safetensors.torch.load_file returns, for a file of F32 tensors: {name: tensor}, and the metadata."""
    with open(path, 'rb') as f:
        raw = f.read()
    (n,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n])
    metadata = header.pop('__metadata__', {})
    tensors = {}
    for name, e in header.items():
        if e['dtype'] != 'F32':
            sys.exit(f'{path}: tensor {name} has dtype {e["dtype"]}, expected F32')
        a, z = e['data_offsets']
        data = np.frombuffer(raw, dtype='<f4', count=(z - a) // 4, offset=8 + n + a)
        tensors[name] = torch.from_numpy(data.copy()).reshape(e['shape'])
    return tensors, metadata


def load_weights(path):
    """The state dict and metadata of a model.safetensors; which loader read it."""
    _, metadata = read_safetensors(path)
    try:
        from safetensors.torch import load_file
    except ImportError:
        state, _ = read_safetensors(path)
        return state, metadata, 'read_safetensors (the safetensors package is not installed)'
    return load_file(path), metadata, 'safetensors.torch.load_file'


def build(state):
    """The nn.Sequential whose state dict `state` is: a cnn when 0.weight is 4-dimensional, else an mlp."""
    if state['0.weight'].dim() == 4:
        mods = []
        convs = 0
        while f'{3 * convs}.weight' in state and state[f'{3 * convs}.weight'].dim() == 4:
            oc, c = state[f'{3 * convs}.weight'].shape[:2]
            mods += [nn.Conv2d(c, oc, 5), nn.ReLU(), nn.MaxPool2d(2)]
            convs += 1
        mods.append(nn.Flatten())
        first = 3 * convs + 1
    else:
        mods, first = [], 0
    i = first
    while f'{i}.weight' in state:
        oc, c = state[f'{i}.weight'].shape
        if i > first:
            mods.append(nn.ReLU())
        mods.append(nn.Linear(c, oc))
        i += 2
    model = nn.Sequential(*mods)
    model.load_state_dict(state)  # strict: every name and shape
    return model


def read_idx(path, magic):
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    got, count = struct.unpack('>II', raw[:8])
    if got != magic:
        sys.exit(f'{path}: magic {got:#x}, expected {magic:#x}; not an IDX file')
    if magic == 0x803:
        rows, cols = struct.unpack('>II', raw[8:16])
        return np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, rows, cols)
    return np.frombuffer(raw[8:], dtype=np.uint8)


def default_data_dir(dataset):
    shared = os.path.join(REPO, '..', 'shared', 'datasets', dataset)
    return shared if os.path.isdir(shared) else os.path.join(REPO, 'datasets', dataset)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model', help='model.safetensors written by mnist-par train, or its run folder')
    ap.add_argument('--data-dir')
    ap.add_argument('--dataset', choices=sorted(NORMALIZATION))
    ap.add_argument('--json', action='store_true', help='one JSON line, with every image\'s predicted class')
    args = ap.parse_args()
    path = os.path.join(args.model, 'model.safetensors') if os.path.isdir(args.model) else args.model

    state, metadata, loader = load_weights(path)
    model = build(state).eval()
    dataset = args.dataset or metadata.get('dataset', 'mnist')
    data_dir = args.data_dir or default_data_dir(dataset)
    images = read_idx(os.path.join(data_dir, 't10k-images-idx3-ubyte.gz'), 0x803)
    labels = torch.from_numpy(read_idx(os.path.join(data_dir, 't10k-labels-idx1-ubyte.gz'), 0x801).astype(np.int64))
    mean, std = NORMALIZATION[dataset]
    table = torch.from_numpy(((np.arange(256) / 255 - mean) / std).astype(np.float32))
    x = table[torch.from_numpy(images.astype(np.int64))].unsqueeze(1)  # (N, 1, 28, 28)
    if not isinstance(model[0], nn.Conv2d):
        x = x.flatten(1)

    loss_sum = 0.0
    preds = []
    with torch.no_grad():
        for a in range(0, len(labels), 1000):
            logits = model(x[a:a + 1000])
            loss_sum += F.cross_entropy(logits.double(), labels[a:a + 1000], reduction='sum').item()
            preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    correct = int((pred == labels).sum())
    count = len(labels)
    network = ' '.join(type(m).__name__ for m in model)
    if args.json:
        print(json.dumps({'file': path, 'loader': loader, 'network': network, 'dataset': dataset, 'count': count,
                          'correct': correct, 'accuracy': correct / count, 'loss': loss_sum / count,
                          'predictions': ''.join(str(int(p)) for p in pred)}))
    else:
        print(f'{path}: {network}')
        print(f'  weights read by {loader}')
        print(f'  {dataset} test: accuracy {100 * correct / count:.2f}% ({correct}/{count}), loss {loss_sum / count:.4f}')


if __name__ == '__main__':
    main()
