// The network layer by layer, as torch-summary prints a PyTorch model: each module of the nn.Sequential that
// the safetensors files name (model.ts tensorNames), its output shape, its parameters and its forward FLOPs,
// then the totals, the training step's FLOPs and the shared arena a run of it builds (arena-spec.ts).
//
// FLOPs count 2 per multiply-add of the linear and convolution layers, per sample. Bias adds, ReLU, pooling
// and the softmax are left out (under 1% of the default networks' work). A training step computes per sample
//   forward                      Σ forward
//   input gradients (dinp)       Σ forward of every layer but the first (nothing needs the image's gradient)
//   weight gradients (dweight)   Σ forward
// and, once per step rather than per sample, the optimizer update (a few operations per parameter).
import { trainingArenaSpec } from './arena-spec.js';
import type { SplitSizes } from './data/datasets.js';
import { modelSpec, type Config } from './config.js';
import { DATASETS, IMAGE_SIDE } from './data/datasets.js';
import { KK, KS } from './kernels/reference.js';
import { arenaLayout } from './memory.js';
import { DEFAULT_CHANNELS, describeModel, modelLayout, tensorNames, type ModelSpec } from './model.js';
import type { LayerSummary, ModelSummary, ModuleType } from './serve/protocol.js';
import { fmtInt } from './ui/format.js';

export type { LayerSummary, ModelSummary, ModuleType } from './serve/protocol.js';

/** The summary of the network `cfg` trains (model, hidden, channels), and of its run's arena on `sizes`. */
export function modelSummary(cfg: Config, sizes: SplitSizes = datasetSizes(cfg)): ModelSummary {
  const spec = modelSpec(cfg, sizes.classes);
  const layout = modelLayout(spec);
  const names = tensorNames(layout);
  const layers: LayerSummary[] = [];
  let index = 0;
  const add = (type: ModuleType, output: number[], own?: { weight: number[]; bias: number[]; tensors: { weight: string; bias: string };
                                                          macs: number; first: boolean }) => {
    const params = own ? size(own.weight) + size(own.bias) : 0;
    const fwd = own ? 2 * own.macs : 0;
    layers.push({
      name: String(index++), type, output, params,
      tensors: own ? [{ name: own.tensors.weight, shape: own.weight }, { name: own.tensors.bias, shape: own.bias }] : [],
      forwardFlops: fwd, backwardFlops: own ? (own.first ? fwd : 2 * fwd) : 0,
    });
  };
  layout.conv.forEach(({ C, OC, H, W }, i) => {
    const OH = H - KS + 1, OW = W - KS + 1;
    add('Conv2d', [OC, OH, OW], { weight: [OC, C, KS, KS], bias: [OC], tensors: names.conv[i], macs: OC * C * KK * OH * OW, first: i === 0 });
    add('ReLU', [OC, OH, OW]);
    add('MaxPool2d', [OC, OH >> 1, OW >> 1]);
  });
  if (layout.conv.length > 0) add('Flatten', [layout.layers[0]]);
  layout.linear.forEach(({ C, OC }, l) => {
    add('Linear', [OC], { weight: [OC, C], bias: [OC], tensors: names.linear[l], macs: C * OC, first: l === 0 && layout.conv.length === 0 });
    if (l + 1 < layout.linear.length) add('ReLU', [OC]);
  });
  const forwardFlops = sum(layers.map((l) => l.forwardFlops));
  const arena = trainingArenaSpec(cfg, sizes);
  return {
    network: describeModel(spec),
    input: layout.conv.length > 0 ? [1, IMAGE_SIDE, IMAGE_SIDE] : [layout.layers[0]],
    layers, params: layout.size, weightBytes: 4 * layout.size,
    forwardFlops, trainFlops: forwardFlops + sum(layers.map((l) => l.backwardFlops)),
    arena: {
      bytes: arenaLayout(arena).bytes, batchSize: cfg.batchSize, threads: cfg.threads,
      optimizer: cfg.optimizer, trainCount: arena.trainCount, testCount: arena.testCount,
    },
  };
}

/** The sizes of the configured dataset's splits, as its files hold them. */
export function datasetSizes(cfg: Pick<Config, 'dataset'>): SplitSizes {
  const { counts } = DATASETS[cfg.dataset];
  return { train: counts.train, test: counts.test, pixels: IMAGE_SIDE * IMAGE_SIDE };
}

const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

const shape = (dims: readonly number[]): string => `[B, ${dims.join(', ')}]`;
const mflops = (flops: number): string => (flops / 1e6).toFixed(3);
const megabytes = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

/** The summary as the lines of an aligned table and its totals. */
export function formatSummary(s: ModelSummary): string[] {
  const head = ['layer', 'type', 'output shape', 'parameters', 'tensors', 'forward MFLOPs'];
  const rows = [
    ['input', '', shape(s.input), '', '', ''],
    ...s.layers.map((l) => [
      l.name, l.type, shape(l.output), fmtInt(l.params),
      l.tensors.map((t) => `${t.name} [${t.shape.join(', ')}]`).join(', '), l.params > 0 ? mflops(l.forwardFlops) : '',
    ]),
  ];
  const total = ['total', '', '', fmtInt(s.params), '', mflops(s.forwardFlops)];
  const all = [head, ...rows, total];
  const width = head.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  // text columns to the left, numbers to the right
  const right = [false, false, false, true, false, true];
  const line = (r: string[]) => r.map((cell, c) => (right[c] ? cell.padStart(width[c]) : cell.padEnd(width[c]))).join('  ').trimEnd();
  const rule = '-'.repeat(line(head).length);
  const a = s.arena;
  return [
    s.network,
    line(head), rule, ...rows.map(line), rule, line(total),
    `parameters ${fmtInt(s.params)}, weights ${fmtInt(s.weightBytes)} bytes (float32)`,
    `FLOPs per sample (2 per multiply-add of the linear and convolution layers): forward ${mflops(s.forwardFlops)} M, ` +
      `training step ${mflops(s.trainFlops)} M (forward, input gradients but the first layer's, weight gradients)`,
    `shared arena ${megabytes(a.bytes)} at batch ${a.batchSize}, ${a.threads} threads, ${a.optimizer}, ` +
      `${fmtInt(a.trainCount)} training + ${fmtInt(a.testCount)} test images`,
  ];
}

/** The configuration fields that name this network. */
export function specFields(spec: ModelSpec): Pick<Config, 'model' | 'hidden' | 'channels'> {
  return spec.kind === 'cnn'
    ? { model: 'cnn', hidden: [...spec.hidden], channels: [...spec.channels] }
    : { model: 'mlp', hidden: [...spec.hidden], channels: [...DEFAULT_CHANNELS] };
}
