// Starts the built CLI's `serve` as a user would (dist/src/cli.js) and talks to it: over fetch, and over a raw
// socket for requests no HTTP client would send.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { cliPath } from './cli-run.js';

export interface Served {
  /** the URL serve printed, ending in / */
  url: string;
  port: number;
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** sends the signal and resolves with the exit code */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Runs `mnist-par serve ...args` in `cwd` and resolves once it printed its URL (rejects if it exits first). */
export function startServe(args: string[], cwd: string, timeoutMs = 60_000): Promise<Served> {
  const proc = spawn(process.execPath, [cliPath, 'serve', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`serve printed no URL in ${timeoutMs} ms; stdout: ${out} stderr: ${err}`));
    }, timeoutMs);
    const check = () => {
      const m = /open (http:\/\/\S+\/) /.exec(out);
      if (!m) return;
      clearTimeout(timer);
      proc.stdout!.off('data', check);
      resolve({
        url: m[1], port: Number(new URL(m[1]).port), proc, stdout: () => out, stderr: () => err,
        stop: async (signal = 'SIGTERM') => {
          if (proc.exitCode === null) proc.kill(signal);
          return exited;
        },
      });
    };
    proc.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before printing a URL; stdout: ${out} stderr: ${err}`));
    });
  });
}

/**
 * Writes `request` on a fresh connection and resolves with everything the server sent before it closed the
 * connection (or before `timeoutMs`); a reset connection resolves with what came so far. With `end`, the
 * client then ends its side (a client that leaves mid-upload, or sends a request and hangs up: Node's server
 * drops a request whose client hung up before the answer was ready).
 */
export function rawRequest(port: number, request: string | Buffer, timeoutMs = 10_000, end = false): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', done);
    socket.on('close', done);
    socket.on('connect', () => (end ? socket.end(request) : socket.write(request)));
  });
}

/** The status code of a raw HTTP response, or 0 when there was none. */
export function statusOf(response: string): number {
  const m = /^HTTP\/1\.1 (\d{3}) /.exec(response);
  return m ? Number(m[1]) : 0;
}
