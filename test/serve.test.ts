// `mnist-par serve` through the built CLI, over HTTP (the page itself is test/browser.test.ts): it serves the
// newest run on loopback and says where; its predictions are predict's, to the bit; a bad image gets predict's
// own one-line message with a 400; uploads stop at 1 MB; no request reaches a file outside the page and the
// charts; 1,000 malformed requests leave it answering; a bad model file is refused before it listens.
// Build first (npm run build).
import { createServer } from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDigitImage } from '../src/data/image.js';
import { loadSplit } from '../src/data/idx.js';
import { Rng } from '../src/rng.js';
import { MAX_UPLOAD } from '../src/serve/server.js';
import { mnistDir, runCli } from './cli-run.js';
import { rawRequest, startServe, statusOf, type Served } from './serve-run.js';

const cwd = mkdtempSync(join(tmpdir(), 'mnist-par-serve-'));
const model = join(cwd, 'models', 'run-1', 'model.safetensors');
let served: Served;

beforeAll(async () => {
  const r = runCli(['--data-dir', mnistDir, '--threads', '2', '--limit-train', '4096', '--limit-test', '500', '--epochs', '1',
    '--no-download', '--no-dashboard'], {}, 120_000, cwd);
  expect(r.code, r.stderr).toBe(0);
  // a link among the charts to the model: the server must not follow it
  symlinkSync(join('..', '..', 'models', 'run-1', 'model.safetensors'), join(cwd, 'plots', 'run-1', 'leak.png'));
  served = await startServe([], cwd);
}, 120_000);

afterAll(async () => {
  await served?.stop();
  rmSync(cwd, { recursive: true, force: true });
});

const post = (path: string, body: Uint8Array | string, headers: Record<string, string> = {}) =>
  fetch(served.url + path.replace(/^\//, ''), {
    method: 'POST', body: new Blob([body as BlobPart]), headers: { 'Content-Type': 'image/png', ...headers },
  });

describe('serve on its own', () => {
  it('serves the newest run on 127.0.0.1, on a free port, and says so', async () => {
    expect(served.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(served.stdout()).toContain('serving models/run-1/model.safetensors (mlp 784→128→256→512→128→10, mnist)');
    expect(served.stderr()).toBe('');
    const page = await fetch(served.url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(await page.text()).toContain('<canvas id="pad"');
    const script = await fetch(served.url + 'main.js');
    expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await script.text()).toContain('api/predict');
  });

  it('tells the page the model, its summary at the run\'s settings, its test metrics and its charts', async () => {
    const info = await (await fetch(served.url + 'api/info')).json();
    expect(info.model).toBe('models/run-1/model.safetensors');
    expect(info.classes).toEqual(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    // the summary of `mnist-par summary` at the run's batch size, threads and limits
    const summary = runCli(['summary', '--model', model, '--threads', '2', '--json'], {}, 60_000, cwd);
    const want = JSON.parse(summary.stdout);
    expect(info.summary.layers).toEqual(want.layers);
    expect(info.summary.params).toBe(want.params);
    expect(info.summary.arena.trainCount).toBe(4096);
    expect(info.summary.arena.testCount).toBe(500);
    const csv = readFileSync(join(cwd, 'models', 'run-1', 'epoch_metrics.csv'), 'utf8').trim().split('\n')[1].split(',');
    expect(info.epochs).toHaveLength(1);
    expect(info.epochs[0].valAccuracy).toBe(Number(csv[4]));
    expect(info.charts.map((c: { file: string }) => c.file)).toEqual(['epoch_metrics.png', 'batch_metrics.png']);
    const chart = await fetch(served.url + 'plots/epoch_metrics.png');
    expect(chart.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await chart.arrayBuffer()).equals(readFileSync(join(cwd, 'plots', 'run-1', 'epoch_metrics.png')))).toBe(true);
  });
});

describe('predictions', () => {
  it('are predict\'s own: the same probabilities and the same 28×28 input for the same image', async () => {
    const test = await loadSplit(mnistDir, 'test');
    const dir = join(cwd, 'digits');
    mkdirSync(dir);
    for (const k of [0, 1, 2]) {
      const px = test.images.subarray(784 * k, 784 * (k + 1));
      // 84×84 dark ink on light paper, as a scan would be
      const file = join(dir, `digit-${k}.png`);
      await sharp(Buffer.from(px.map((v) => 255 - v)), { raw: { width: 28, height: 28, channels: 1 } }).resize(84, 84).png().toFile(file);
      const cli = runCli(['predict', '--model', model, '--json', file], {}, 60_000, cwd);
      expect(cli.code, cli.stderr).toBe(0);
      const want = JSON.parse(cli.stdout);
      const res = await post('/api/predict', readFileSync(file), { 'X-File-Name': `digit-${k}.png` });
      expect(res.status).toBe(200);
      const got = await res.json();
      expect(got.digit).toBe(want.digit);
      expect(got.probabilities.map((p: number) => Number(p.toPrecision(6)))).toEqual(want.probabilities);
      expect(got.input).toEqual(Array.from(await loadDigitImage(file)));
      expect(got.ms).toBeGreaterThan(0);
    }
  });

  it('refuse a bad image with 400 and the line predict prints for the same file', async () => {
    const dir = join(cwd, 'bad');
    mkdirSync(dir);
    const png = await sharp({ create: { width: 60, height: 40, channels: 3, background: '#ffffff' } }).png().toBuffer();
    const files: Record<string, Buffer> = {
      'empty.png': Buffer.alloc(0),
      'garbage.png': Buffer.from('this is not an image'),
      'truncated.png': png.subarray(0, 60),
      'blank.png': png, // white: no ink
      'huge.png': declaredSize(png, 20_000, 20_000), // a header declaring 400 megapixels
    };
    for (const [name, bytes] of Object.entries(files)) {
      writeFileSync(join(dir, name), bytes);
      const cli = runCli(['predict', '--model', model, name], {}, 60_000, dir);
      expect(cli.code, name).toBe(1);
      const res = await post('/api/predict', bytes, { 'X-File-Name': name });
      expect(res.status, name).toBe(400);
      const { error } = await res.json();
      expect(`mnist-par: ${error}\n`, name).toBe(cli.stderr);
    }
  });

  it('name an upload "upload" when the page gives no name, and take the name only, never a path', async () => {
    const none = await (await post('/api/predict', 'x')).json();
    expect(none.error).toMatch(/^upload: cannot decode it/);
    const path = await (await post('/api/predict', 'x', { 'X-File-Name': encodeURIComponent('/etc/x/../secret.png') })).json();
    expect(path.error).toMatch(/^secret\.png: cannot decode it/);
    const control = await (await post('/api/predict', 'x', { 'X-File-Name': encodeURIComponent('a\nb\u001b[2J.png') })).json();
    expect(control.error).not.toMatch(/[\n\u001b]/);
  });
});

/** A PNG whose header says width × height (its data is left as it was): the decoder must refuse it unread. */
function declaredSize(png: Buffer, width: number, height: number): Buffer {
  const out = Buffer.from(png);
  // the IHDR chunk: length (8..12), type (12..16), width (16..20), height (20..24), …, CRC of type + data (29..33)
  out.writeUInt32BE(width, 16);
  out.writeUInt32BE(height, 20);
  out.writeUInt32BE(crc32(out.subarray(12, 29)), 29);
  return out;
}

describe('uploads are capped at 1 MB', () => {
  it('refuses a declared length over the cap with 413 before reading it', async () => {
    // sent without its body, and the client hangs up: the answer comes before the body would be read
    const res = await rawRequest(served.port, `POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n` +
      `Content-Length: ${MAX_UPLOAD + 1}\r\n\r\n`, 10_000, true);
    expect(statusOf(res)).toBe(413);
    expect(res).toContain('"error":"upload: 1,048,577 bytes, larger than the 1,048,576-byte (1 MB) limit; send a smaller image"');
  });

  it('stops reading a chunked upload at the cap with 413', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(served.url + 'api/predict', { method: 'POST', headers: { 'Content-Type': 'image/png' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      const chunk = Buffer.alloc(64 * 1024, 7);
      let sent = 0;
      const write = () => {
        while (sent < 2 * MAX_UPLOAD) {
          sent += chunk.length;
          if (!req.write(chunk)) return void req.once('drain', write);
        }
        req.end();
      };
      write();
    });
    expect(status).toBe(413);
  });

  it('takes exactly 1 MB (and then finds no image in it)', async () => {
    const res = await post('/api/predict', new Uint8Array(MAX_UPLOAD).fill(1), { 'X-File-Name': 'mb.png' });
    expect(res.status).toBe(400);
    expect((await res.json()).error).toMatch(/^mb\.png: cannot decode it/);
  });
});

describe('refusals', () => {
  it('answer a wrong method, a wrong type and a foreign Host header with their status and one line', async () => {
    const get = await fetch(served.url + 'api/predict');
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    expect((await get.json()).error).toBe('GET /api/predict: expected POST with an image');
    const del = await fetch(served.url, { method: 'DELETE' });
    expect([del.status, del.headers.get('allow'), await del.text()]).toEqual([405, 'GET, HEAD', 'DELETE /: expected GET or HEAD\n']);
    const text = await post('/api/predict', 'hello', { 'Content-Type': 'text/plain' });
    expect(text.status).toBe(415);
    expect((await text.json()).error).toMatch(/^upload: expected the bytes of an image .* got text\/plain$/);
    // DNS rebinding: a page elsewhere whose name now points at 127.0.0.1 sends its own name
    const foreign = await rawRequest(served.port, `GET /api/info HTTP/1.1\r\nHost: evil.example:${served.port}\r\nConnection: close\r\n\r\n`);
    expect(statusOf(foreign)).toBe(403);
    expect(foreign).not.toContain('"summary"');
    for (const host of [`localhost:${served.port}`, `127.0.0.1:${served.port}`, `[::1]:${served.port}`]) {
      expect(statusOf(await rawRequest(served.port, `GET /api/info HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)), host).toBe(200);
    }
  });

  const outside = [
    '/../models/run-1/config.json', '/plots/../../models/run-1/config.json', '/plots/..%2f..%2fmodels%2frun-1%2fconfig.json',
    '/plots/%2e%2e/%2e%2e/models/run-1/config.json', '/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd',
    '/plots/%252e%252e%252f%252e%252e%252fmodels%252frun-1%252fmodel.safetensors', '/plots/..%5c..%5cmodels%5crun-1%5cconfig.json',
    '/%2fetc%2fpasswd', '//etc/passwd', '/plots//etc/passwd', '/plots/leak.png', '/plots/%00', '/main.js%00.png',
    '/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd', '/package.json', '/dist/page/index.html', '/plots/.', '/.', '/plots/',
    `/plots/${encodeURIComponent(model)}`, '/plots/epoch_metrics.png/..', '/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd',
  ];
  it.each(outside)('serves nothing outside the page and the charts: %s', async (target) => {
    const res = await rawRequest(served.port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    expect(statusOf(res)).toBe(404);
    for (const secret of ['root:', '0.weight', '"batchSize"', '__metadata__']) expect(res).not.toContain(secret);
  });

  it('refuses a request target that is not a path', async () => {
    const res = await rawRequest(served.port, 'GET http://127.0.0.1/etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect(statusOf(res)).toBe(400);
    expect(res).not.toContain('root:');
  });
});

describe('1,000 malformed requests', () => {
  it('are each answered or dropped, and the server then answers as before', async () => {
    const rng = new Rng(19);
    const port = served.port;
    const H = `Host: 127.0.0.1`;
    const makers: ((i: number) => string | Buffer)[] = [
      () => Buffer.from(Array.from({ length: 1 + Math.floor(rng.uniform(0, 2000)) }, () => Math.floor(rng.uniform(0, 256)))),
      () => 'GARBAGE\r\n\r\n',
      () => `GET / HTTP/1.1\r\n${H}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      (i) => {
        const body = Buffer.from(Array.from({ length: 1 + (i % 500) }, () => Math.floor(rng.uniform(0, 256))));
        const head = `POST /api/predict HTTP/1.1\r\n${H}\r\nContent-Type: image/png\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
        return Buffer.concat([Buffer.from(head), body]);
      },
      () => `POST /api/predict HTTP/1.1\r\n${H}\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n0123456789`,
      () => `POST /api/predict HTTP/1.1\r\n${H}\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n`,
      () => `POST /api/predict HTTP/1.1\r\n${H}\r\nContent-Type: image/png\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      () => `BREW /coffee HTTP/1.1\r\n${H}\r\nConnection: close\r\n\r\n`,
      () => `GET /plots/%zz%2e%2e HTTP/1.1\r\n${H}\r\nConnection: close\r\n\r\n`,
      () => `GET / HTTP/1.1\r\nConnection: close\r\n\r\n`, // no Host
      () => `GET /\u0000 HTTP/1.1\r\n${H}\r\n\r\n`,
      () => `GET / HTTP/9.9\r\n${H}\r\n\r\n`,
      () => `POST /api/predict HTTP/1.1\r\n${H}\r\nContent-Type: image/png\r\nContent-Length: -1\r\n\r\n`,
      () => `GET /api/info HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`,
      () => `\r\n\r\n\r\n`,
    ];
    const statuses = new Map<number, number>();
    const all = Array.from({ length: 1000 }, (_, i) => makers[i % makers.length](i));
    for (let i = 0; i < all.length; i += 25) {
      // each client hangs up once it has sent its bytes, so none waits for a timeout
      const batch = await Promise.all(all.slice(i, i + 25).map((r) => rawRequest(port, r, 15_000, true)));
      for (const res of batch) statuses.set(statusOf(res), (statuses.get(statusOf(res)) ?? 0) + 1);
    }
    expect(served.proc.exitCode).toBeNull();
    // every request was refused (4xx), or its connection closed unanswered (0): none got a 2xx, none a 500
    expect([...statuses.keys()].every((s) => s === 0 || (s >= 400 && s < 500)), JSON.stringify([...statuses])).toBe(true);
    expect(statuses.get(400)).toBeGreaterThan(300);
    expect(served.stderr()).toBe('');
    const info = await fetch(served.url + 'api/info');
    expect(info.status).toBe(200);
    const test = await loadSplit(mnistDir, 'test');
    const png = await sharp(Buffer.from(test.images.subarray(0, 784)), { raw: { width: 28, height: 28, channels: 1 } }).png().toBuffer();
    expect((await post('/api/predict', png)).status).toBe(200);
  });
});

describe('serve refuses before it listens', () => {
  it('a model file that fails the safetensors checks, in one line', async () => {
    const real = readFileSync(model);
    const bad = { 'garbage.safetensors': Buffer.from('not a safetensors file at all'), 'cut.safetensors': real.subarray(0, real.length >> 1) };
    for (const [name, bytes] of Object.entries(bad)) {
      writeFileSync(join(cwd, name), bytes);
      const r = runCli(['serve', '--model', name], {}, 30_000, cwd);
      expect(r.code, name).toBe(1);
      expect(r.stderr, name).toMatch(new RegExp(`^mnist-par: ${name.replace('.', '\\.')}: [^\\n]*re-create it\\n$`));
      expect(r.stdout, name).not.toContain('http://');
    }
  });

  it('a port in use, a bad --port, no run at all', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = runCli(['serve', '--port', String(port)], {}, 30_000, cwd);
      expect([r.code, r.stderr]).toEqual([2, `mnist-par: --port ${port}: in use by another program; choose another port, ` +
        'or leave --port out for a free one\n']);
    } finally {
      blocker.close();
    }
    const bad = runCli(['serve', '--port', '70000'], {}, 30_000, cwd);
    expect([bad.code, bad.stderr]).toEqual([2, "mnist-par: --port: expected an integer in 0..65535, got '70000'\n"]);
    const empty = runCli(['serve'], {}, 30_000);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/^mnist-par: --model: no run in models\/ holds model\.safetensors; train one first/);
  });
});

describe('--host', () => {
  it('another address than loopback: says the page is reachable by others, and answers any Host', async () => {
    const open = await startServe(['--host', '0.0.0.0', '--model', 'models/run-1'], cwd);
    try {
      expect(open.stderr()).toContain('mnist-par: note: listening on 0.0.0.0: the page is reachable by others on your network');
      const res = await rawRequest(open.port, 'GET /api/info HTTP/1.1\r\nHost: my-machine.lan\r\nConnection: close\r\n\r\n');
      expect(statusOf(res)).toBe(200);
    } finally {
      expect(await open.stop('SIGTERM')).toBe(143);
    }
    expect(open.stderr()).toContain('mnist-par: stopped serving (SIGTERM)');
  });
});
