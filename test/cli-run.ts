// Runs the built CLI (dist/src/cli.js) as a user would, and locates the shared datasets for tests.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const cliPath = resolve(repoRoot, 'dist/src/cli.js');
/** MNIST as distributed (gzipped IDX); MNIST_DIR overrides the default ../shared/datasets/mnist. */
export const mnistDir = process.env.MNIST_DIR ?? resolve(repoRoot, '../shared/datasets/mnist');
export const fashionDir = process.env.FASHION_MNIST_DIR ?? resolve(repoRoot, '../shared/datasets/fashion-mnist');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs in a fresh temporary working directory, so default outputs (models/, plots/) never land in the repo. */
export function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 170_000): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], {
    cwd: mkdtempSync(join(tmpdir(), 'mnist-par-cwd-')),
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
