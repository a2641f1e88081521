// Peer benchmark: our training throughput against PyTorch's on the same network, on this machine.
//
// PyTorch runs ../shared/peers/pytorch_throughput.py (the same network: the default mlp with Adam, or with
// --model cnn the default cnn with AdamW; the script knows only those two; the real MNIST images normalized once
// and kept in memory, glibc's allocator tuned: its best case on the real job) under each thread setting (torch threads, OPENBLAS_NUM_THREADS); a fair comparison takes its
// best setting per batch size. Our run (real MNIST, the real training loop, `threads` workers) is measured in
// the same loop, interleaved with PyTorch's, over `repeats` rounds; every figure is a median over rounds.
//
// PyTorch must be at its best for a ratio to mean anything: each run's JSON line says which BLAS ran, and
// bench/blas.ts judges it against this CPU. On the reference BLAS, or on OpenBLAS kernels narrower than the
// CPU's vectors, every ratio is printed as "not comparable" with the reason and the fix, the JSON has none,
// and the PyTorch levels go into no scaling result or chart. The peer runs without OPENBLAS_CORETYPE and
// OPENBLAS_L2_SIZE (which pin OpenBLAS's kernel), whatever our environment sets.
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
import { parsePeerLine, peerEnv, readCpuFlags, type BlasVerdict, type PeerRun, type VectorIsa } from './blas.js';
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
  /** the CPU's flags the peer's BLAS is judged against (default: this machine's, from /proc/cpuinfo) */
  cpuFlags?: readonly string[];
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
  ratio: number | null;   // ours / pytorch; null when PyTorch was not at its best (PeersReport.comparable)
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
  /** the BLAS PyTorch ran on, as the script says ("openblas Cooperlake", "mkl", "reference or unknown BLAS"),
   *  or "not reported" (an older script); several, joined by " and ", if the runs differed */
  blas: string;
  /** the vectors of that OpenBLAS kernel (null: not OpenBLAS, or a kernel bench/blas.ts does not know) */
  blasVectors: VectorIsa | null;
  /** the widest vectors this CPU runs (null: not read) */
  cpuVectors: VectorIsa | null;
  /** whether PyTorch ran at its best, so that the ratios mean something; when false there are none */
  comparable: boolean;
  /** when not comparable: why, and what to do, in one line */
  notComparable?: string;
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
 * One run of the peer script training the `model` network (on the images in `dataDir` when given, else the
 * script's default): its samples/s, its name (e.g. pytorch-1.13.1), what it trained on and the verdict on its
 * BLAS for a CPU with `cpuFlags`.
 */
export function runPeer(python: string, script: string, threads: number, blasThreads: number, batchSize: number,
                        seconds: number, model: ModelKind, dataDir: string | undefined, cpuFlags: readonly string[],
): Promise<PeerRun> {
  // the positional arguments first: the script counts every argument not starting with -- as one
  const args = [script, String(threads), String(batchSize), String(seconds), '--model', model,
    ...(dataDir !== undefined ? ['--data', dataDir] : [])];
  return new Promise((done, fail) => {
    execFile(python, args,
      { env: peerEnv(process.env, blasThreads), timeout: (seconds + 300) * 1000, encoding: 'utf8' }, (err, stdout, stderr) => {
        const command = args.slice(1).join(' ');
        if (err) {
          fail(new Error(`bench peers: ${command} failed: ${err.message.split('\n')[0]} ${stderr.trim().split('\n').pop() ?? ''}`));
          return;
        }
        try {
          done(parsePeerLine(stdout, model, cpuFlags));
        } catch (e) {
          fail(new Error(`bench peers: ${command} ${(e as Error).message}`));
        }
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
  const cpuFlags = opts.cpuFlags ?? readCpuFlags();
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
  const verdicts: BlasVerdict[] = [];
  let family = '';
  const tmp = await mkdtemp(join(tmpdir(), 'mnist-par-peers-'));
  try {
    for (let r = 0; r < repeats; r++) {
      for (let i = 0; i < batchSizes.length; i++) {
        const b = batchSizes[i];
        for (let k = 0; k < settingsTried.length; k++) {
          const [t, blas] = settingsTried[k];
          const p = await runPeer(python, script, t, blas, b, seconds, spec.kind, peerDataDir, cpuFlags);
          peer = p.name;
          peerData = p.data;
          if (!verdicts.some((v) => v.blas === p.blas.blas)) {
            verdicts.push(p.blas);
            // said at once, so that a run whose ratios will not count can be stopped early
            log(`bench peers: PyTorch runs on ${describeBlas(p.blas)}`);
            if (!p.blas.comparable) log(`bench peers: warning: its ratios will be printed as not comparable: ${p.blas.notComparable}`);
          }
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
  // one verdict for the whole run: any run not at its best makes every ratio meaningless
  const verdict = verdicts.find((v) => !v.comparable) ?? verdicts[0];
  const blasName = verdicts.map((v) => v.blas).join(' and ');
  const comparisons: PeerComparison[] = batchSizes.map((batchSize, i) => {
    const best = settings.filter((s) => s.batchSize === batchSize).reduce((a, s) => (s.samplesPerSec > a.samplesPerSec ? s : a));
    const mine = median(ours[i]);
    return {
      batchSize, ours: mine, oursSamples: ours[i], ratio: verdict.comparable ? mine / best.samplesPerSec : null,
      pytorch: {
        name: peer, batchSize, samplesPerSec: best.samplesPerSec, threads: best.threads, blasThreads: best.blasThreads, blas: blasName,
      },
    };
  });
  const report: PeersReport = {
    kind: 'peers', model: describeModel(spec), modelSpec: spec,
    blas: blasName, blasVectors: verdict.kernelIsa, cpuVectors: verdict.cpuIsa, comparable: verdict.comparable,
    ...(verdict.notComparable !== undefined ? { notComparable: verdict.notComparable } : {}),
    machine: { ...machineInfo(relaxedSimdSupported()), loadavgBefore, loadavgAfter: loadavg() },
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
    if (scaling !== null && !report.comparable) {
      log(`the PyTorch levels were not added to ${scaling}: they are not comparable (see above)`);
    } else if (scaling !== null) {
      await addPeersToScaling(scaling, spec, report.peers, opts.plotsDir, log);
    }
  }
  return report;
}

/** "openblas Cooperlake (AVX-512 kernels, the widest this CPU runs)", and the like, for the log and the footer. */
export function describeBlas(v: Pick<BlasVerdict, 'blas' | 'kernelIsa' | 'cpuIsa'>): string {
  if (v.kernelIsa === null) return v.blas;
  const cpu = v.cpuIsa === null ? 'this CPU\'s vectors not read'
    : v.kernelIsa === v.cpuIsa ? 'the widest this CPU runs' : `this CPU runs ${v.cpuIsa}`;
  return `${v.blas} (${v.kernelIsa} kernels, ${cpu})`;
}

/**
 * Per batch size: ours, PyTorch's best and which setting it was, the ratio ("not comparable" when PyTorch was
 * not at its best), then every setting's median; the footer says which BLAS PyTorch ran, and why not, when not.
 */
export function formatPeersTable(report: PeersReport): string {
  const pairs = [...new Set(report.settings.map((s) => `${s.threads},${s.blasThreads}`))];
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  const header = ['batch', `ours (${report.threads}T)`, 'PyTorch best', '(torch,blas)', 'ours/PyTorch',
    ...pairs.map((p) => `(${p})`)];
  const rows = report.comparisons.map((c) => [
    String(c.batchSize), n(c.ours), n(c.pytorch.samplesPerSec), `(${c.pytorch.threads},${c.pytorch.blasThreads})`,
    c.ratio === null ? 'not comparable' : `×${c.ratio.toFixed(2)}`,
    ...pairs.map((p) => n(report.settings.find((s) => s.batchSize === c.batchSize && `${s.threads},${s.blasThreads}` === p)!.samplesPerSec)),
  ]);
  return [
    textTable(header, rows, 0),
    'samples/s, medians; (torch,blas) = torch.set_num_threads, OPENBLAS_NUM_THREADS',
    `PyTorch's BLAS: ${describeBlas({ blas: report.blas, kernelIsa: report.blasVectors, cpuIsa: report.cpuVectors })}`,
    ...(report.comparable ? [] : [`not comparable: ${report.notComparable}`]),
  ].join('\n');
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
 * Reads a peers JSON written by benchPeers and returns its peers (for bench scaling --peers). Refuses one whose
 * PyTorch was not at its best, or that does not say (written before bench peers judged the BLAS), and with
 * `model` (as describeModel writes it), one measured on another network.
 */
export async function readPeers(file: string, model?: string): Promise<ScalingPeer[]> {
  let o: { kind?: unknown; peers?: unknown; model?: unknown; comparable?: unknown; notComparable?: unknown; blas?: unknown };
  try {
    o = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new UserError(`--peers ${file}: cannot read it as JSON (${(e as Error).message.split('\n')[0]}); pass a peers-*.json written by bench peers`);
  }
  if (o?.kind !== 'peers' || !Array.isArray(o.peers)) {
    throw new UserError(`--peers ${file}: expected a peers result (kind "peers" with a peers list), found kind ${JSON.stringify(o?.kind)}; pass a peers-*.json written by bench peers`);
  }
  if (o.comparable !== true) {
    const why = o.comparable === false ? `PyTorch was not at its best (${typeof o.notComparable === 'string' ? o.notComparable : 'no reason recorded'})`
      : 'it does not say which BLAS PyTorch ran (written before bench peers checked it)';
    throw new UserError(`--peers ${file}: its PyTorch levels are not comparable: ${why}; run bench peers again with PyTorch at its best`);
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
      ...(typeof p.blas === 'string' ? { blas: p.blas } : {}),
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
