// Runs the built CLI (dist/src/cli.js) as a user would, and locates the shared datasets for tests.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const cliPath = resolve(repoRoot, 'dist/src/cli.js');
/**
 * Where the tests find a dataset as distributed (gzipped IDX): the environment variable if set, else the
 * shared copy beside the repository (../shared/datasets/NAME, as in CI), else the product's own download
 * folder datasets/NAME (run `npx mnist-par download --dataset NAME` once).
 */
function datasetDir(env: string | undefined, name: string): string {
  if (env) return resolve(env);
  const shared = resolve(repoRoot, '../shared/datasets', name);
  return existsSync(shared) ? shared : resolve(repoRoot, 'datasets', name);
}

export const mnistDir = datasetDir(process.env.MNIST_DIR, 'mnist');
export const fashionDir = datasetDir(process.env.FASHION_MNIST_DIR, 'fashion-mnist');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs in `cwd`, by default a fresh temporary working directory, so default outputs (models/, plots/) never
 * land in the repo.
 */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 170_000, cwd?: string): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], {
    cwd: cwd ?? mkdtempSync(join(tmpdir(), 'mnist-par-cwd-')),
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
