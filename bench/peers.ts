// Peer benchmark: our training throughput against PyTorch's on the same network, on this machine.
//
// PyTorch runs ../shared/peers/pytorch_throughput.py (the same network: the default mlp with Adam, or with
// --model cnn the default cnn with AdamW; the script knows only those two; the real MNIST images normalized once
// and kept in memory, glibc's allocator tuned: its best case on the real job) under each thread setting (torch threads, OPENBLAS_NUM_THREADS); a fair comparison takes its
// best setting per batch size. Our run (real MNIST, the real training loop, `threads` workers) is measured in
// the same loop, interleaved with PyTorch's, over `repeats` rounds; every figure is a median over rounds.
//
// The script is given the folder our run reads (--data), so both train on the same images. Results are
// peers-*.json for the mlp, peers-cnn-*.json for the cnn; the PyTorch levels are added to the newest scaling
// result of the same network (scaling-*.json or scaling-cnn-*.json) in the same folder.
//
//   mnist-par bench peers [--model mlp|cnn] [--threads 2] [--batch-size 64,128,256] [--repeats 5] [--seconds 1.5]
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULTS } from '../src/config.js';
import { SPLIT_FILES } from '../src/data/datasets.js';
import { UsageError, UserError } from '../src/errors.js';
import { writeFileAtomic } from '../src/fsutil.js';
import { relaxedSimdSupported } from '../src/kernels/wasm.js';
import {
  DEFAULT_CHANNELS, DEFAULT_CNN_HIDDEN, DEFAULT_HIDDEN, describeModel, sameModel, type ModelKind, type ModelSpec,
} from '../src/model.js';
import { packageRoot } from '../src/paths.js';
import { parseScalingJson } from '../src/plot.js';
import type { Datasets } from '../src/train.js';
import type { ScalingPeer, ScalingReport } from '../src/ui/charts.js';
import { machineInfo, median, resultsDir, saveJson, textTable } from './kernels.js';
import {
  DEFAULT_MODEL, DEFAULT_WINDOW, loadBenchData, measureThroughput, runConfig, saveScaling, scalingPrefix,
  type RunSettings, type WindowOptions,
} from './scaling.js';

export const PYTHON = '/usr/bin/python3';
export const INSTALL_HINT = 'install it with: apt-get install -y python3-torch libopenblas0-pthread (Debian\'s PyTorch, for /usr/bin/python3, on OpenBLAS)';

export function defaultPeerScript(): string {
  return resolve(packageRoot(), '..', 'shared', 'peers', 'pytorch_throughput.py');
}

/** (torch threads, OpenBLAS threads) pairs to try: all of 1..2 × 1..2, and the whole machine when it has more cores. */
export function peerSettings(cores = availableParallelism()): [number, number][] {
  const pairs: [number, number][] = [[1, 1], [1, 2], [2, 1], [2, 2]];
  if (cores > 2) pairs.push([cores, 1], [cores, cores]);
  return pairs;
}

export interface PeerOptions extends Partial<RunSettings> {
  /** our worker threads (default 2) */
  threads?: number;
  batchSizes?: number[];
  repeats?: number;
  /** timed seconds of each PyTorch run, and the minimum length of our window (default 1.5) */
  seconds?: number;
  settings?: [number, number][];
  script?: string;
  python?: string;
  data?: Datasets;
  window?: Partial<WindowOptions>;
  /** where the JSON goes (default <package>/bench/results); null: not saved, and no scaling report touched */
  outDir?: string | null;
  /** where scaling.png is re-drawn with the PyTorch levels (default plots); null: not drawn */
  plotsDir?: string | null;
  log?: (line: string) => void;
}

export interface PeerSettingResult {
  batchSize: number;
  threads: number;
  blasThreads: number;
  samplesPerSec: number;  // median over repeats
  samples: number[];
}

export interface PeerComparison {
  batchSize: number;
  ours: number;           // median samples/s
  oursSamples: number[];
  pytorch: ScalingPeer;   // the best setting's median
  ratio: number;          // ours / pytorch
}

/** The networks the peer script trains: the default of each kind (pytorch_throughput.py --model mlp|cnn). */
export function peerModel(kind: ModelKind): ModelSpec {
  return kind === 'cnn' ? { kind, channels: DEFAULT_CHANNELS, hidden: DEFAULT_CNN_HIDDEN } : { kind, hidden: DEFAULT_HIDDEN };
}

/** The name of a peers result: peers-<timestamp>.json for the mlp (as before the cnn), peers-cnn-… for the cnn. */
export function peersPrefix(kind: ModelKind): string {
  return kind === 'mlp' ? 'peers' : `peers-${kind}`;
}

export interface PeersReport {
  kind: 'peers';
  /** the network both sides trained, as describeModel writes it */
  model: string;
  /** the same, as a ModelSpec */
  modelSpec: ModelSpec;
  machine: ReturnType<typeof machineInfo> & { loadavgBefore: number[]; loadavgAfter: number[] };
  kernels: string;
  threads: number;
  repeats: number;
  seconds: number;
  peer: string;
  /** what the peer trained on, as it says: 'mnist' (the real images) or 'randn' */
  peerData: string;
  /** the BLAS library PyTorch ran on (openblas, mkl, reference, unknown) */
  blas: string;
  settings: PeerSettingResult[];
  comparisons: PeerComparison[];
  /** the best PyTorch setting per batch size, in the shape of ScalingReport.peers */
  peers: ScalingPeer[];
}

/** Whether /usr/bin/python3 can import torch. */
export function torchAvailable(python = PYTHON): boolean {
  const r = spawnSync(python, ['-c', 'import torch'], { stdio: 'ignore', timeout: 120_000 });
  return r.status === 0;
}

/**
 * Which BLAS library the peer's process maps once torch is imported: Debian's PyTorch calls whatever
 * libblas.so.3 the alternatives system points to, and without OpenBLAS that is the slow reference BLAS.
 */
export function peerBlas(python = PYTHON): string {
  const r = spawnSync(python, ['-c', 'import torch, sys; sys.stdout.write(open("/proc/self/maps").read())'],
    { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  const libs = new Set((r.stdout ?? '').split('\n').map((l) => l.trim().split(/\s+/).pop() ?? '')
    .filter((p) => /blas/i.test(p)));
  if ([...libs].some((p) => /openblas/i.test(p))) return 'openblas';
  if ([...libs].some((p) => /mkl/i.test(p))) return 'mkl';
  return libs.size > 0 ? 'reference' : 'unknown';
}

/**
 * One run of the peer script training the `model` network (on the images in `dataDir` when given, else the
 * script's default); resolves to its samples/s and the peer's name (e.g. pytorch-1.13.1).
 */
export function runPeer(python: string, script: string, threads: number, blasThreads: number, batchSize: number,
                        seconds: number, model: ModelKind = 'mlp', dataDir?: string,
): Promise<{ name: string; samplesPerSec: number; data: string }> {
  const env = { ...process.env, OPENBLAS_NUM_THREADS: String(blasThreads) };
  // the positional arguments first: the script counts every argument not starting with -- as one
  const args = [script, String(threads), String(batchSize), String(seconds), '--model', model,
    ...(dataDir !== undefined ? ['--data', dataDir] : [])];
  return new Promise((done, fail) => {
    execFile(python, args,
      { env, timeout: (seconds + 300) * 1000, encoding: 'utf8' }, (err, stdout, stderr) => {
        const last = stdout.trim().split('\n').pop() ?? '';
        let out: { peer?: unknown; samples_per_s?: unknown; data?: unknown; model?: unknown } = {};
        try {
          out = JSON.parse(last);
        } catch { /* reported below */ }
        const command = args.slice(1).join(' ');
        if (err || typeof out.samples_per_s !== 'number' || !(out.samples_per_s > 0)) {
          const why = err ? err.message.split('\n')[0] : `printed ${JSON.stringify(last)}`;
          fail(new Error(`bench peers: ${command} failed: ${why} ${stderr.trim().split('\n').pop() ?? ''}`));
          return;
        }
        // a script that ignores --model would time another network; one from before --model says no model
        if ((out.model ?? 'mlp') !== model) {
          fail(new Error(`bench peers: ${command} timed model ${JSON.stringify(out.model ?? 'mlp (it names none)')}, not ${model}; ` +
            'pass a pytorch_throughput.py that knows --model with --peer-script'));
          return;
        }
        done({ name: typeof out.peer === 'string' ? out.peer : 'pytorch', samplesPerSec: out.samples_per_s,
               data: typeof out.data === 'string' ? out.data : 'unknown' });
      });
  });
}

/** Measures both sides; returns null (after saying how to install it) when PyTorch is not there. */
export async function benchPeers(opts: PeerOptions = {}): Promise<PeersReport | null> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const python = opts.python ?? PYTHON;
  const script = opts.script ?? defaultPeerScript();
  const spec = opts.model ?? DEFAULT_MODEL;
  if (!sameModel(spec, peerModel(spec.kind))) {
    throw new UsageError(`bench peers: the PyTorch script trains only the default ${spec.kind} (${describeModel(peerModel(spec.kind))}), ` +
      `not ${describeModel(spec)}; give the default sizes`);
  }
  if (!existsSync(script)) {
    throw new UserError(`--peer-script ${script}: no such file; pass the path of pytorch_throughput.py with --peer-script`);
  }
  if (!torchAvailable(python)) {
    log(`bench peers: ${python} cannot import torch; skipped. To compare with PyTorch, ${INSTALL_HINT}`);
    return null;
  }
  const blas = peerBlas(python);
  log(`bench peers: PyTorch runs on ${blas} BLAS`);
  if (blas === 'reference') {
    log('bench peers: warning: that is the unoptimized reference BLAS, so PyTorch will look far slower than it is; ' +
      'apt-get install -y libopenblas0-pthread gives it OpenBLAS');
  }
  const threads = opts.threads ?? 2;
  const batchSizes = opts.batchSizes ?? [64, 128, 256];
  const repeats = opts.repeats ?? 5;
  const seconds = opts.seconds ?? 1.5;
  const settingsTried = opts.settings ?? peerSettings();
  const window = { ...DEFAULT_WINDOW, minMs: seconds * 1000, ...opts.window };
  const run: RunSettings = {
    model: spec, dataset: opts.dataset ?? 'mnist', dataDir: opts.dataDir ?? '', kernels: opts.kernels ?? 'auto',
    oversubscribe: false, limitTest: opts.limitTest ?? 256,
  };
  for (const b of batchSizes) runConfig(run, threads, b, 'unused');
  const loadavgBefore = loadavg();
  const data = opts.data ?? await loadBenchData(run);
  // the folder our run reads, for the peer to train on the same images (the script's default when it has none)
  const dataDir = resolve(run.dataDir || `datasets/${run.dataset}`);
  const peerDataDir = existsSync(join(dataDir, SPLIT_FILES.train.images)) && existsSync(join(dataDir, SPLIT_FILES.train.labels))
    ? dataDir : undefined;

  const theirs = batchSizes.map(() => settingsTried.map(() => [] as number[]));
  const ours = batchSizes.map(() => [] as number[]);
  let peer = 'pytorch';
  let peerData = 'unknown';
  let family = '';
  const tmp = await mkdtemp(join(tmpdir(), 'mnist-par-peers-'));
  try {
    for (let r = 0; r < repeats; r++) {
      for (let i = 0; i < batchSizes.length; i++) {
        const b = batchSizes[i];
        for (let k = 0; k < settingsTried.length; k++) {
          const [t, blas] = settingsTried[k];
          const p = await runPeer(python, script, t, blas, b, seconds, spec.kind, peerDataDir);
          peer = p.name;
          peerData = p.data;
          theirs[i][k].push(p.samplesPerSec);
        }
        const m = await measureThroughput(runConfig(run, threads, b, join(tmp, 'run')), data, window);
        family = m.family;
        ours[i].push(m.samplesPerSec);
      }
      log(`repeat ${r + 1}/${repeats} done (load average ${loadavg()[0].toFixed(2)})`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }

  const settings: PeerSettingResult[] = batchSizes.flatMap((batchSize, i) => settingsTried.map(([t, blas], k) => ({
    batchSize, threads: t, blasThreads: blas, samplesPerSec: median(theirs[i][k]), samples: theirs[i][k],
  })));
  const comparisons: PeerComparison[] = batchSizes.map((batchSize, i) => {
    const best = settings.filter((s) => s.batchSize === batchSize).reduce((a, s) => (s.samplesPerSec > a.samplesPerSec ? s : a));
    const mine = median(ours[i]);
    return {
      batchSize, ours: mine, oursSamples: ours[i], ratio: mine / best.samplesPerSec,
      pytorch: { name: peer, batchSize, samplesPerSec: best.samplesPerSec, threads: best.threads, blasThreads: best.blasThreads },
    };
  });
  const report: PeersReport = {
    kind: 'peers', model: describeModel(spec), modelSpec: spec, blas, machine: { ...machineInfo(relaxedSimdSupported()), loadavgBefore, loadavgAfter: loadavg() },
    kernels: family, threads, repeats, seconds, peer, peerData, settings, comparisons, peers: comparisons.map((c) => c.pytorch),
  };
  log(formatPeersTable(report));
  const m = report.machine;
  log(`${report.model} · ${m.cpu} · ${m.cores} cores · Node ${m.node} · ${peer} (${peerData === 'mnist' ? 'real MNIST in memory' : peerData === 'randn' ? 'random data in memory' : `data: ${peerData}`}) · ours: ${family} kernels, ` +
      `real MNIST · median of ${repeats} · load average ${m.loadavgBefore[0].toFixed(2)} before, ${m.loadavgAfter[0].toFixed(2)} after`);
  if (opts.outDir !== null) {
    const dir = opts.outDir ?? resultsDir();
    log(`saved ${await saveJson(dir, peersPrefix(spec.kind), report)}`);
    const scaling = await newestResult(dir, scalingPrefix(spec.kind));
    if (scaling !== null) {
      await addPeersToScaling(scaling, spec, report.peers, opts.plotsDir, log);
    }
  }
  return report;
}

/** Per batch size: ours, PyTorch's best and which setting it was, the ratio, then every setting's median. */
export function formatPeersTable(report: PeersReport): string {
  const pairs = [...new Set(report.settings.map((s) => `${s.threads},${s.blasThreads}`))];
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  const header = ['batch', `ours (${report.threads}T)`, 'PyTorch best', '(torch,blas)', 'ours/PyTorch',
    ...pairs.map((p) => `(${p})`)];
  const rows = report.comparisons.map((c) => [
    String(c.batchSize), n(c.ours), n(c.pytorch.samplesPerSec), `(${c.pytorch.threads},${c.pytorch.blasThreads})`,
    `×${c.ratio.toFixed(2)}`,
    ...pairs.map((p) => n(report.settings.find((s) => s.batchSize === c.batchSize && `${s.threads},${s.blasThreads}` === p)!.samplesPerSec)),
  ]);
  return textTable(header, rows, 0) + '\nsamples/s, medians; (torch,blas) = torch.set_num_threads, OPENBLAS_NUM_THREADS';
}

/** Replaces the peers of the same name and batch size in `report` with `peers`. */
export function mergePeers<T extends ScalingReport>(report: T, peers: ScalingPeer[]): T {
  const kept = (report.peers ?? []).filter((p) => !peers.some((q) => q.name === p.name && q.batchSize === p.batchSize));
  return { ...report, peers: [...kept, ...peers] };
}

/** The path of the newest <prefix>-<timestamp>.json in dir, or null (scaling-cnn-….json is not a scaling-….json). */
export async function newestResult(dir: string, prefix: string): Promise<string | null> {
  const names = (await readdir(dir).catch(() => [] as string[]))
    .filter((f) => f.startsWith(`${prefix}-`) && /^\d{4}-\d\d-\d\dT[\w-]*\.json$/.test(f.slice(prefix.length + 1))).sort();
  return names.length ? join(dir, names[names.length - 1]) : null;
}

/**
 * Reads a peers JSON written by benchPeers and returns its peers (for bench scaling --peers); with `model`
 * (as describeModel writes it), refuses one measured on another network (one from before the cnn names none:
 * it was the default mlp).
 */
export async function readPeers(file: string, model?: string): Promise<ScalingPeer[]> {
  let o: { kind?: unknown; peers?: unknown; model?: unknown };
  try {
    o = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new UserError(`--peers ${file}: cannot read it as JSON (${(e as Error).message.split('\n')[0]}); pass a peers-*.json written by bench peers`);
  }
  if (o?.kind !== 'peers' || !Array.isArray(o.peers)) {
    throw new UserError(`--peers ${file}: expected a peers result (kind "peers" with a peers list), found kind ${JSON.stringify(o?.kind)}; pass a peers-*.json written by bench peers`);
  }
  const theirs = typeof o.model === 'string' ? o.model : describeModel(DEFAULT_MODEL);
  if (model !== undefined && theirs !== model) {
    throw new UserError(`--peers ${file}: its PyTorch levels were measured on ${theirs}, this sweep trains ${model}; ` +
      'pass a peers result of the same network (peers-cnn-*.json for --model cnn)');
  }
  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  return (o.peers as Record<string, unknown>[]).map((p, i) => {
    if (typeof p?.name !== 'string' || !num(p.batchSize) || !num(p.samplesPerSec)) {
      throw new UserError(`--peers ${file}: peers[${i}] needs name, batchSize and samplesPerSec, found ${JSON.stringify(p)}; pass a peers-*.json written by bench peers`);
    }
    return {
      name: p.name, batchSize: p.batchSize, samplesPerSec: p.samplesPerSec,
      ...(num(p.threads) ? { threads: p.threads } : {}), ...(num(p.blasThreads) ? { blasThreads: p.blasThreads } : {}),
    };
  });
}

/**
 * Stores the PyTorch levels in an existing scaling JSON (in place, atomically) and re-draws its chart, when
 * that scaling result trained the same network (`spec`); otherwise says so and leaves it alone.
 */
async function addPeersToScaling(path: string, spec: ModelSpec, peers: ScalingPeer[], plotsDir: string | null | undefined,
                                 log: (line: string) => void): Promise<void> {
  const text = await readFile(path, 'utf8');
  const model = parseScalingJson(text, path).model ?? describeModel(DEFAULT_MODEL);
  if (model !== describeModel(spec)) {
    log(`${path} trained ${model}, not ${describeModel(spec)}: the PyTorch levels were not added to it`);
    return;
  }
  const merged = mergePeers(JSON.parse(text) as ScalingReport, peers);
  await writeFileAtomic(path, JSON.stringify(merged, null, 2) + '\n');
  log(`added the PyTorch levels to ${path}`);
  await saveScaling(parseScalingJson(JSON.stringify(merged), path), spec.kind, null, plotsDir, log);
}
