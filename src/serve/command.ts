// `mnist-par serve`: loads the model once (a file that fails the safetensors checks is refused here, before
// anything listens), finds the page and the run's charts, listens, prints the URL, and serves until Ctrl-C
// or SIGTERM.
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { UsageError, UserError } from '../errors.js';
import { errorCode } from '../fsutil.js';
import { describeModel } from '../model.js';
import { packageRoot } from '../paths.js';
import sharp from 'sharp';
import type { DataInfo } from '../data/datasets.js';
import { classifyImage, loadModel, modelData, normalizeTable, type LoadedModel } from '../predict.js';
import { createPageServer } from './server.js';

export interface ServeOptions {
  /** the model file */
  model: string;
  /** the run's chart folder */
  plots: string;
  /** 0: a free port */
  port: number;
  /** 127.0.0.1 unless --host gives another */
  host: string;
}

/** The page's folder in the package, as the build writes it. */
export function pageFolder(): string {
  return join(packageRoot(), 'dist', 'page');
}

/** Serves until SIGINT or SIGTERM; returns the exit code (130 or 143, as for a run a signal ends). */
export async function serveCommand(o: ServeOptions): Promise<number> {
  const model = await loadModel(o.model);
  const { info, dataset } = modelData(undefined, model, o.model);
  const page = pageFolder();
  for (const f of ['index.html', 'main.js']) {
    if (!existsSync(join(page, f))) throw new UserError(`${join(page, f)}: the page is not built; run npm run build in ${packageRoot()}`);
  }
  await warmUp(model, info);
  const loopback = isLoopback(o.host);
  const server = createPageServer({
    served: { path: o.model, model, dataset, info, plots: o.plots }, page, loopbackOnly: loopback,
    log: (line) => process.stderr.write(line + '\n'),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((e: unknown) => {
    const code = errorCode(e);
    if (code === 'EADDRINUSE') {
      throw new UsageError(`--port ${o.port}: in use by another program; choose another port, or leave --port out for a free one`);
    }
    if (code === 'EACCES') {
      throw new UsageError(`--port ${o.port}: not allowed to listen there (EACCES); ports below 1024 need privileges, choose another`);
    }
    throw new UsageError(`--host ${o.host}: cannot listen there (${code}); give an address of this machine, such as 127.0.0.1 or 0.0.0.0`);
  });
  const { port, address, family } = server.address() as AddressInfo;
  const shown = o.host === 'localhost' ? 'localhost' : family === 'IPv6' ? `[${address}]` : address;
  if (!loopback) {
    process.stderr.write(`mnist-par: note: listening on ${o.host}: the page is reachable by others on your network, ` +
      'and anyone who reaches it can use the model and see its charts\n');
  }
  process.stdout.write(`mnist-par: serving ${o.model} (${describeModel(model.spec)}, ${dataset ?? `${info.classes.length} classes of its own data`})\n` +
    `open http://${shown}:${port}/ (Ctrl-C stops)\n`);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  process.stderr.write(`mnist-par: stopped serving (${signal})\n`);
  return signal === 'SIGINT' ? 130 : 143;
}

/** localhost, 127.x.y.z or ::1: only this machine reaches it. */
export function isLoopback(host: string): boolean {
  return /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\])$/i.test(host);
}

/**
 * Classifies one made-up image (a bar of ink), so that the first stroke does not pay for starting sharp and
 * compiling the forward pass (some 50 ms, against 5-10 ms for every later image).
 */
async function warmUp(model: LoadedModel, info: DataInfo): Promise<void> {
  const side = 28;
  const bar = new Uint8Array(side * side).map((_, i) => (i % side === 14 && i > 4 * side && i < 24 * side ? 255 : 0));
  const png = await sharp(bar, { raw: { width: side, height: side, channels: 1 } }).png().toBuffer();
  await classifyImage(model, info.classes, normalizeTable(info), { name: 'warm-up', bytes: png });
}
