// Peer benchmark: our training throughput against PyTorch's on the same network, on this machine.
//
// PyTorch runs ../shared/peers/pytorch_throughput.py (same MLP, Adam, the real MNIST images normalized once
// and kept in memory, glibc's allocator tuned: its best case on the real job) under each thread setting (torch threads, OPENBLAS_NUM_THREADS); a fair comparison takes its
// best setting per batch size. Our run (real MNIST, the real training loop, `threads` workers) is measured in
// the same loop, interleaved with PyTorch's, over `repeats` rounds; every figure is a median over rounds.
//
//   mnist-par bench peers [--threads 2] [--batch-size 64,128,256] [--repeats 5] [--seconds 1.5]
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULTS } from '../src/config.js';
import { UserError } from '../src/errors.js';
import { writeFileAtomic } from '../src/fsutil.js';
import { relaxedSimdSupported } from '../src/kernels/wasm.js';
import { packageRoot } from '../src/paths.js';
import { parseScalingJson } from '../src/plot.js';
import type { Datasets } from '../src/train.js';
import type { ScalingPeer, ScalingReport } from '../src/ui/charts.js';
import { machineInfo, median, resultsDir, saveJson, textTable } from './kernels.js';
import {
  DEFAULT_WINDOW, loadBenchData, measureThroughput, runConfig, saveScaling, type RunSettings, type WindowOptions,
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

export interface PeersReport {
  kind: 'peers';
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

/** One run of the peer script; resolves to its samples/s and the peer's name (e.g. pytorch-1.13.1). */
export function runPeer(python: string, script: string, threads: number, blasThreads: number, batchSize: number,
                        seconds: number): Promise<{ name: string; samplesPerSec: number; data: string }> {
  const env = { ...process.env, OPENBLAS_NUM_THREADS: String(blasThreads) };
  return new Promise((done, fail) => {
    execFile(python, [script, String(threads), String(batchSize), String(seconds)],
      { env, timeout: (seconds + 300) * 1000, encoding: 'utf8' }, (err, stdout, stderr) => {
        const last = stdout.trim().split('\n').pop() ?? '';
        let out: { peer?: unknown; samples_per_s?: unknown; data?: unknown } = {};
        try {
          out = JSON.parse(last);
        } catch { /* reported below */ }
        if (err || typeof out.samples_per_s !== 'number' || !(out.samples_per_s > 0)) {
          const why = err ? err.message.split('\n')[0] : `printed ${JSON.stringify(last)}`;
          fail(new Error(`bench peers: ${script} ${threads} ${batchSize} ${seconds} failed: ${why} ${stderr.trim().split('\n').pop() ?? ''}`));
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
    dataset: opts.dataset ?? 'mnist', dataDir: opts.dataDir ?? '', kernels: opts.kernels ?? 'auto',
    shards: opts.shards ?? DEFAULTS.shards, limitTest: opts.limitTest ?? 256,
  };
  for (const b of batchSizes) runConfig(run, threads, b, 'unused');
  const loadavgBefore = loadavg();
  const data = opts.data ?? await loadBenchData(run);

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
          const p = await runPeer(python, script, t, blas, b, seconds);
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
    kind: 'peers', blas, machine: { ...machineInfo(relaxedSimdSupported()), loadavgBefore, loadavgAfter: loadavg() },
    kernels: family, threads, repeats, seconds, peer, peerData, settings, comparisons, peers: comparisons.map((c) => c.pytorch),
  };
  log(formatPeersTable(report));
  const m = report.machine;
  log(`${m.cpu} · ${m.cores} cores · Node ${m.node} · ${peer} (${peerData === 'mnist' ? 'real MNIST in memory' : peerData === 'randn' ? 'random data in memory' : `data: ${peerData}`}) · ours: ${family} kernels, ` +
      `real MNIST · median of ${repeats} · load average ${m.loadavgBefore[0].toFixed(2)} before, ${m.loadavgAfter[0].toFixed(2)} after`);
  if (opts.outDir !== null) {
    const dir = opts.outDir ?? resultsDir();
    log(`saved ${await saveJson(dir, 'peers', report)}`);
    const scaling = await newestResult(dir, 'scaling');
    if (scaling !== null) {
      await addPeersToScaling(scaling, report.peers, opts.plotsDir, log);
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

/** The path of the newest <prefix>-<timestamp>.json in dir, or null. */
export async function newestResult(dir: string, prefix: string): Promise<string | null> {
  const names = (await readdir(dir).catch(() => [] as string[]))
    .filter((f) => f.startsWith(`${prefix}-`) && f.endsWith('.json')).sort();
  return names.length ? join(dir, names[names.length - 1]) : null;
}

/** Reads a peers JSON written by benchPeers and returns its peers (for bench scaling --peers). */
export async function readPeers(file: string): Promise<ScalingPeer[]> {
  let o: { kind?: unknown; peers?: unknown };
  try {
    o = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new UserError(`--peers ${file}: cannot read it as JSON (${(e as Error).message.split('\n')[0]}); pass a peers-*.json written by bench peers`);
  }
  if (o?.kind !== 'peers' || !Array.isArray(o.peers)) {
    throw new UserError(`--peers ${file}: expected a peers result (kind "peers" with a peers list), found kind ${JSON.stringify(o?.kind)}; pass a peers-*.json written by bench peers`);
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

/** Stores the PyTorch levels in an existing scaling JSON (in place, atomically) and re-draws its chart. */
async function addPeersToScaling(path: string, peers: ScalingPeer[], plotsDir: string | null | undefined,
                                 log: (line: string) => void): Promise<void> {
  const text = await readFile(path, 'utf8');
  parseScalingJson(text, path);
  const merged = mergePeers(JSON.parse(text) as ScalingReport, peers);
  await writeFileAtomic(path, JSON.stringify(merged, null, 2) + '\n');
  log(`added the PyTorch levels to ${path}`);
  await saveScaling(parseScalingJson(JSON.stringify(merged), path), null, plotsDir, log);
}
