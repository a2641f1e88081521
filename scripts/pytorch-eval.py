#!/usr/bin/python3
"""PyTorch reads mnist-par's weights: loads a model.safetensors (an mlp or a cnn) into the nn.Sequential the
README shows and evaluates it on the test split, for comparison with `mnist-par eval`.

How to run (Debian: apt-get install python3-torch; written against PyTorch 1.13):

    /usr/bin/python3 scripts/pytorch-eval.py MODEL [--data-dir DIR] [--dataset mnist|fashion-mnist] [--json]
    /usr/bin/python3 scripts/pytorch-eval.py MODEL --data PATH [--json]

MODEL is a model.safetensors written by mnist-par train (or its run folder). DIR holds the dataset's
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (default: ../shared/datasets/NAME beside the repository if
it exists, else datasets/NAME); the dataset defaults to the one named in the file's metadata, else mnist. It prints
the test accuracy and mean loss (with --json: one JSON line that also holds every image's predicted class, which
test/cnn-model.test.ts compares with mnist-par's own).

A model trained on your own data (mnist-par train --data) has as many outputs as its data has classes; its
metadata holds the class names ("classes", a JSON list in the order of the outputs) and the normalization ("mean",
"std"), which this script uses. Give its test set with --data PATH: a Kaggle-layout .csv file (a label, then 784
pixels per line; a header line is optional) or a folder of IDX files (its test split: *t10k* or *test* files, else
its only pair). Each label is matched to the model's classes by name, as mnist-par eval --data does. (An image
folder needs mnist-par's preprocessing of each image, which this script does not repeat.)

The networks, as the README's snippets build them (nn.Sequential, so the tensor names are the module indices):

    mlp   Linear(784, n1), ReLU, Linear(n1, n2), ReLU, …, Linear(nk, V)             0.weight, 2.weight, …
    cnn   Conv2d(1, c1, 5), ReLU, MaxPool2d(2), Conv2d(c1, c2, 5), ReLU, MaxPool2d(2), Flatten,
          Linear(c2 * 4 * 4, h), ReLU, Linear(h, V)                                 0, 3, 7, 9

(V = 10 for MNIST and Fashion-MNIST, the number of classes for your own data.)

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
import re
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
    with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
        raw = f.read()
    got, count = struct.unpack('>II', raw[:8])
    if got != magic:
        sys.exit(f'{path}: magic {got:#x}, expected {magic:#x}; not an IDX file')
    if magic == 0x803:
        rows, cols = struct.unpack('>II', raw[8:16])
        return np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, rows, cols)
    return np.frombuffer(raw[8:], dtype=np.uint8)


def read_csv(path):
    """Kaggle's layout: label, then 784 pixels per line; a first line that is not numbers is a header."""
    with open(path, 'rb') as f:
        lines = [line for line in f.read().decode('utf-8-sig').splitlines() if line.strip()]
    if lines and re.search(r'[^0-9,\s.+-]', lines[0]):
        lines = lines[1:]
    rows = np.array([[int(v) for v in line.split(',')] for line in lines], dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 785:
        sys.exit(f'{path}: expected 785 columns (a label, then 784 pixels), found {rows.shape[1] if rows.ndim == 2 else "none"}')
    return rows[:, 1:].astype(np.uint8).reshape(-1, 28, 28), rows[:, 0]


def read_own(path):
    """Images and their labels (as written: numbers) from a .csv file or a folder of IDX files."""
    if os.path.isfile(path):
        return read_csv(path)
    names = sorted(os.listdir(path))
    pairs = {}
    for name in names:
        m = re.match(r'^(.*)-images-idx3-ubyte(\.gz)?$', name)
        if m:
            labels = [f for f in (f'{m[1]}-labels-idx1-ubyte.gz', f'{m[1]}-labels-idx1-ubyte') if f in names]
            if labels:
                pairs[m[1]] = (os.path.join(path, name), os.path.join(path, labels[0]))
    tests = [p for p in pairs if p == 't10k' or re.search(r'(^|[-_.])(test|t10k)$', p)]
    chosen = tests[0] if tests else (next(iter(pairs)) if len(pairs) == 1 else None)
    if chosen is None:
        sys.exit(f'{path}: expected a .csv file or a folder of IDX files with a test split')
    images_file, labels_file = pairs[chosen]
    return read_idx(images_file, 0x803), read_idx(labels_file, 0x801).astype(np.int64)


def default_data_dir(dataset):
    shared = os.path.join(REPO, '..', 'shared', 'datasets', dataset)
    return shared if os.path.isdir(shared) else os.path.join(REPO, 'datasets', dataset)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model', help='model.safetensors written by mnist-par train, or its run folder')
    ap.add_argument('--data-dir')
    ap.add_argument('--dataset', choices=sorted(NORMALIZATION))
    ap.add_argument('--data', help='your own test set (a .csv file or a folder of IDX files), for a model trained with --data')
    ap.add_argument('--json', action='store_true', help='one JSON line, with every image\'s predicted class')
    args = ap.parse_args()
    path = os.path.join(args.model, 'model.safetensors') if os.path.isdir(args.model) else args.model

    state, metadata, loader = load_weights(path)
    model = build(state).eval()
    if 'classes' in metadata:
        # a model trained on your own data: its classes and normalization are in the file
        classes = json.loads(metadata['classes'])
        mean, std = float(metadata['mean']), float(metadata['std'])
        if not args.data:
            sys.exit(f'{path}: trained on your own data ({len(classes)} classes); give its test set with --data PATH')
        images, values = read_own(args.data)
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in values.tolist()} - set(index))
        if unknown:
            sys.exit(f'{args.data}: labels {", ".join(unknown[:8])} are not among the model\'s classes')
        labels = torch.tensor([index[str(v)] for v in values.tolist()], dtype=torch.int64)
        dataset = args.data
    else:
        if args.data:
            sys.exit(f'{path}: trained on a built-in dataset; give --dataset and --data-dir instead of --data')
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
                          'predictions': ''.join(str(int(p)) for p in pred) if model[-1].out_features <= 10
                          else [int(p) for p in pred]}))
    else:
        print(f'{path}: {network}')
        print(f'  weights read by {loader}')
        print(f'  {dataset} test: accuracy {100 * correct / count:.2f}% ({correct}/{count}), loss {loss_sum / count:.4f}')


if __name__ == '__main__':
    main()
