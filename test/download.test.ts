// Downloads against a loopback server that plays several mirrors over the shared dataset copies:
//   /good/     the real files               /bad/   every file with one byte flipped (same size)
//   /missing/  404 for everything           /redir/ 302 to /good/
//   /stall/    accepts and never answers    /half/  sends the headers and 1000 bytes, then stalls
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATASETS } from '../src/data/datasets.js';
import { downloadDataset, ensureDataset, missingFiles } from '../src/data/download.js';
import { UserError } from '../src/errors.js';
import { mnistDir } from './cli-run.js';

const MNIST_DIR = mnistDir;
const FILES = DATASETS.mnist.files;
const NAMES = FILES.map((f) => f.name);

const real = new Map<string, Buffer>();
const requests: string[] = [];
let server: http.Server;
let base = '';
const dirs: string[] = [];

function tmp(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mnist-dl-'));
  dirs.push(dir);
  return dir;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  for (const n of NAMES) real.set(n, readFileSync(join(MNIST_DIR, n)));
  server = http.createServer((req, res) => {
    const url = req.url ?? '';
    requests.push(url);
    const [, mirror, name] = url.split('/');
    const body = real.get(name ?? '');
    if (mirror === 'stall') return; // hold the connection open, send nothing
    if (mirror === 'half' && body) {
      res.writeHead(200, { 'content-length': body.length }).write(body.subarray(0, 1000));
      return;
    }
    if (mirror === 'badredir') {
      res.writeHead(302, { location: 'http://' }); // not a URL at all
      res.end();
      return;
    }
    if (mirror === 'redir') {
      res.writeHead(302, { location: `/good/${name}` }).end();
    } else if (!body || mirror === 'missing') {
      res.writeHead(404).end('not found');
    } else if (mirror === 'good') {
      res.writeHead(200, { 'content-length': body.length }).end(body);
    } else if (mirror === 'bad') {
      const copy = Buffer.from(body);
      copy[copy.length >> 1] ^= 0x01;
      res.writeHead(200, { 'content-length': copy.length }).end(copy);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((ok) => server.close(ok));
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

describe('downloadDataset', () => {
  it('skips a mirror with corrupted files, keeps the good copies, and does not fetch them twice', async () => {
    const dir = join(tmp(), 'nested', 'mnist'); // created on demand
    const lines: string[] = [];
    const seen = new Map<string, number>();
    await downloadDataset('mnist', dir, {
      mirrors: [`${base}/bad`, `${base}/good/`],
      log: (l) => lines.push(l),
      progress: (f, received, total) => {
        expect(total).toBe(FILES.find((x) => x.name === f)!.bytes);
        seen.set(f, received);
      },
    });
    expect(readdirSync(dir).sort()).toEqual([...NAMES].sort());
    for (const f of FILES) {
      const got = readFileSync(join(dir, f.name));
      expect(got.length).toBe(f.bytes);
      expect(sha(got)).toBe(f.sha256);
      expect(seen.get(f.name)).toBe(f.bytes);
    }
    for (const n of NAMES) {
      expect(lines.some((l) => l.includes(`${base}/bad/${n}: sha256 mismatch`) && l.includes('trying the next mirror'))).toBe(true);
    }
    expect(missingFiles('mnist', dir)).toEqual([]);

    // everything present: no request at all, through either entry point
    requests.length = 0;
    await downloadDataset('mnist', dir, { mirrors: [`${base}/good`] });
    await ensureDataset('mnist', dir, { mirrors: [`${base}/good`] });
    expect(requests).toEqual([]);
  });

  it('fetches only the missing file and follows a redirect past a 404 and two stalled mirrors', async () => {
    const dir = tmp();
    for (const n of NAMES.slice(1)) writeFileSync(join(dir, n), real.get(n)!);
    expect(missingFiles('mnist', dir)).toEqual([NAMES[0]]);
    requests.length = 0;
    const lines: string[] = [];
    await ensureDataset('mnist', dir, {
      mirrors: [`${base}/missing`, `${base}/stall`, `${base}/half`, `${base}/redir`],
      timeoutMs: 300,
      log: (l) => lines.push(l),
    });
    expect(requests).toEqual(['missing', 'stall', 'half', 'redir', 'good'].map((m) => `/${m}/${NAMES[0]}`));
    expect(sha(readFileSync(join(dir, NAMES[0])))).toBe(FILES[0].sha256);
    expect(lines.some((l) => l.includes('HTTP 404'))).toBe(true);
    expect(lines.some((l) => l.includes(`${base}/stall/${NAMES[0]}: no response within 300 ms`))).toBe(true);
    expect(lines.some((l) => l.includes(`${base}/half/${NAMES[0]}: no data for 300 ms after 1000 bytes`))).toBe(true);
  });

  it('a redirect to an invalid address is one more failed mirror, not a crash', async () => {
    const dir = tmp();
    for (const n of NAMES.slice(1)) writeFileSync(join(dir, n), real.get(n)!);
    const lines: string[] = [];
    requests.length = 0;
    await downloadDataset('mnist', dir, { mirrors: [`${base}/badredir`, `${base}/good`], log: (l) => lines.push(l) });
    expect(lines.some((l) => l.includes('redirect to an invalid address'))).toBe(true);
    expect(sha(readFileSync(join(dir, NAMES[0])))).toBe(FILES[0].sha256);
  });

  it('never overwrites a present file that does not match: it names it and fetches nothing', async () => {
    const dir = tmp();
    for (const n of NAMES) writeFileSync(join(dir, n), real.get(n)!);
    const wrong = Buffer.from(real.get(NAMES[3])!);
    wrong[100] ^= 0xff; // same size, wrong content
    writeFileSync(join(dir, NAMES[3]), wrong);
    const short = real.get(NAMES[1])!.subarray(0, 1000); // e.g. another dataset's file of the same name
    writeFileSync(join(dir, NAMES[1]), short);

    requests.length = 0;
    const err = await downloadDataset('mnist', dir, { mirrors: [`${base}/good`] }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toContain(`${NAMES[1]} (size 1000 bytes, expected ${FILES[1].bytes})`);
    expect((err as Error).message).toContain('--dataset');
    expect(requests).toEqual([]);
    expect(readFileSync(join(dir, NAMES[1])).equals(short)).toBe(true);

    // a right-sized file is trusted without verify, and named with it
    writeFileSync(join(dir, NAMES[1]), real.get(NAMES[1])!);
    await downloadDataset('mnist', dir, { mirrors: [`${base}/good`] });
    expect(requests).toEqual([]);
    const err2 = await downloadDataset('mnist', dir, { mirrors: [`${base}/good`], verify: true }).then(() => null, (e: unknown) => e);
    expect((err2 as Error).message).toMatch(new RegExp(`${NAMES[3].replace(/\./g, '\\.')} \\(sha256 `));
    expect(readFileSync(join(dir, NAMES[3])).equals(wrong)).toBe(true);
    expect(requests).toEqual([]);
  });

  it('fails with a UserError naming every missing file when no mirror has a good copy, leaving nothing behind', async () => {
    const dir = tmp();
    const err = await downloadDataset('mnist', dir, {
      mirrors: [`${base}/bad`, `${base}/missing`, 'http://127.0.0.1:1/'], // port 1: connection refused
    }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    for (const n of NAMES) expect(msg).toContain(n);
    expect(msg).toContain(dir);
    expect(msg).toContain(`download them from ${base}/bad/`);
    expect(msg).toContain('--data-dir');
    expect(msg).toMatch(/ECONNREFUSED/);
    expect(readdirSync(dir)).toEqual([]); // no partial or temporary files
    // and the folders it made for them are gone again (the one that was there stays)
    const parent = tmp();
    const made = join(parent, 'datasets', 'mnist');
    await expect(downloadDataset('mnist', made, { mirrors: [`${base}/missing`] })).rejects.toThrow(UserError);
    expect(readdirSync(parent)).toEqual([]);
  });

  it('adds the offline hint from ensureDataset', async () => {
    const dir = tmp();
    const err = await ensureDataset('mnist', dir, { mirrors: [`${base}/missing`], offlineHint: 'no network? copy the files by hand' })
      .then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/HTTP 404.*; no network\? copy the files by hand$/);
  });

  it('reports a data directory that cannot be created', async () => {
    const file = join(tmp(), 'plain-file');
    writeFileSync(file, 'x');
    const dir = join(file, 'sub'); // below a regular file: can never be created, even as root
    const err = await downloadDataset('mnist', dir, { mirrors: [`${base}/good`] }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toContain(`cannot create the data directory ${dir}`);
    expect((err as Error).message).toContain('--data-dir');
    expect(existsSync(dir)).toBe(false);
  });
});
