// The web server of `mnist-par serve`, on node:http:
//
//   GET  /                 the page (index.html of the package's page folder, dist/page)
//   GET  /<file>           the page's other files (its script, its style)
//   GET  /plots/<file>     the run's charts (PNG files of its plot folder)
//   GET  /api/info         the model, its summary, its run's metrics and which charts exist (InfoResponse)
//   POST /api/predict      an image's bytes (≤ 1 MB) → what `predict` says of it (PredictResponse)
//
// Every refusal is a status and one line: JSON { error } under /api/, text elsewhere. A request never stops
// the server: malformed ones are answered 400 and their connection closed, a failure inside a handler is a
// 500 and one line on stderr. Images are classified one at a time, in the order they came.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { printable, UserError } from '../errors.js';
import { classifyImage, normalizeTable } from '../predict.js';
import type { ErrorResponse, PredictResponse } from './protocol.js';
import { runInfo, type ServedModel } from './run-files.js';
import { CHART_TYPES, PAGE_TYPES, readStatic, type StaticRoot } from './static.js';

/** The largest upload: an image of one digit needs far less, a phone photo fits. */
export const MAX_UPLOAD = 1 << 20;
/** Images waiting for their turn beyond this are turned away with 503. */
const MAX_WAITING = 32;

export interface PageServerOptions {
  served: ServedModel;
  /** the package's page folder */
  page: string;
  /** refuse requests whose Host header names anything but this machine's loopback (see hostAllowed) */
  loopbackOnly: boolean;
  /** where a failure inside the server is reported */
  log: (line: string) => void;
}

const HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  // the page's own script, style, images and requests, nothing else; no framing, no forms
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Referrer-Policy': 'no-referrer',
  // charts and metrics change while a run trains
  'Cache-Control': 'no-store',
};

export function createPageServer(o: PageServerOptions): Server {
  const table = normalizeTable(o.served.info);
  const page: StaticRoot = { dir: o.page, types: PAGE_TYPES };
  const charts: StaticRoot = { dir: o.served.plots, types: CHART_TYPES };
  let queue: Promise<unknown> = Promise.resolve();
  let waiting = 0;

  async function predict(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    // also keeps other web sites out: a page elsewhere can POST text/plain or a form to this address
    // without asking, but not image/* (the browser would ask first, and nothing here says yes)
    if (!/^image\/[a-z0-9.+-]+$/.test(type) && type !== 'application/octet-stream') {
      return refuse(res, 415, 'upload: expected the bytes of an image (Content-Type image/png, image/jpeg, … or ' +
        `application/octet-stream), got ${printable(type || 'none')}`, req);
    }
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > MAX_UPLOAD) return refuse(res, 413, tooLarge(`${declared.toLocaleString('en-US')} bytes`), req);
    const name = uploadName(req.headers['x-file-name']);
    const bytes = await readBody(req, MAX_UPLOAD);
    if (bytes === 'gone') return;
    if (bytes === 'too large') return refuse(res, 413, tooLarge('more'), req);
    if (waiting >= MAX_WAITING) return refuse(res, 503, `upload: ${waiting} images are waiting already; try again in a moment`);
    waiting++;
    const turn = queue.then(async () => {
      // the page gave up on it (a newer drawing replaced it): nobody waits for this answer
      if (req.socket.destroyed) return null;
      const t0 = performance.now();
      const c = await classifyImage(o.served.model, o.served.info.classes, table, { name, bytes });
      return { c, ms: performance.now() - t0 };
    }).finally(() => waiting--);
    queue = turn.catch(() => {});
    try {
      const done = await turn;
      if (done === null) return;
      const { c, ms } = done;
      const body: PredictResponse = {
        digit: c.digit, label: c.label, probabilities: Array.from(c.probabilities), input: Array.from(c.pixels), ms: Number(ms.toFixed(2)),
      };
      send(res, 200, 'application/json; charset=utf-8', JSON.stringify(body));
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      refuse(res, 400, e.message);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.url ?? '';
    // origin-form only: "/path?query"; an absolute URL or "*" is no request for this server
    if (!target.startsWith('/')) return refuse(res, 400, `request target ${printable(target)}: expected a path starting with /`);
    const path = target.split(/[?#]/, 1)[0];
    if (o.loopbackOnly && !hostAllowed(req.headers.host)) {
      return refuse(res, 403, `Host ${printable(req.headers.host ?? 'none')}: this server answers only requests to this machine's ` +
        'loopback address; open the URL it printed');
    }
    if (path === '/api/predict') {
      if (req.method !== 'POST') return refuse(res, 405, `${printable(req.method ?? '')} ${path}: expected POST with an image`, req, 'POST');
      return predict(req, res);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return refuse(res, 405, `${printable(req.method ?? '')} ${printable(path)}: expected GET or HEAD`, req, 'GET, HEAD');
    }
    if (path === '/api/info') return send(res, 200, 'application/json; charset=utf-8', JSON.stringify(await runInfo(o.served)), req);
    const file = path === '/' ? await readStatic(page, 'index.html')
      : path.startsWith('/plots/') ? await readStatic(charts, path.slice('/plots/'.length))
        : await readStatic(page, path.slice(1));
    if (file === null) return refuse(res, 404, `${printable(path)}: no such file here`, req);
    send(res, 200, file.type, file.body, req);
  }

  const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    handle(req, res).catch((e: unknown) => {
      o.log(`mnist-par: serve: ${printable(req.method ?? '')} ${printable(req.url ?? '', 200)} failed: ${(e as Error)?.message ?? String(e)}`);
      if (!res.headersSent) refuse(res, 500, `internal error: ${(e as Error)?.message ?? String(e)}`, req);
      else res.destroy();
    });
  });
  // bytes that are no HTTP request: answered 400 (431 for oversized headers) and the connection closed
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  return server;
}

/** The one line for an upload over MAX_UPLOAD. */
function tooLarge(size: string): string {
  return `upload: ${size}, larger than the ${MAX_UPLOAD.toLocaleString('en-US')}-byte (1 MB) limit; send a smaller image`;
}

/** The name the page gives an upload (the file's, URI-encoded), for messages; "upload" when there is none. */
function uploadName(header: string | string[] | undefined): string {
  if (typeof header !== 'string' || header === '') return 'upload';
  let name: string;
  try {
    name = decodeURIComponent(header);
  } catch {
    return 'upload';
  }
  // a name, not a path: what follows the last slash
  name = name.split(/[\\/]/).pop() ?? '';
  return name === '' ? 'upload' : printable(name, 120);
}

/** The body; 'too large' once it passes `max` bytes (the rest is not read); 'gone' when the client left first. */
function readBody(req: IncomingMessage, max: number): Promise<Uint8Array | 'too large' | 'gone'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.off('data', onData);
        req.pause();
        resolve('too large');
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(size > max ? 'too large' : Buffer.concat(chunks)));
    // a client that leaves mid-upload: no answer is owed (settling twice does nothing)
    req.on('error', () => resolve('gone'));
    req.on('close', () => resolve('gone'));
  });
}

/**
 * A loopback name in the Host header: localhost, 127.x.y.z or [::1], with any port. A web page elsewhere
 * whose name an attacker re-points at 127.0.0.1 (DNS rebinding) sends its own name, and is refused.
 */
export function hostAllowed(host: string | undefined): boolean {
  if (host === undefined) return false;
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0];
  return /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i.test(name);
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, req?: IncomingMessage): void {
  res.writeHead(status, { ...HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(req?.method === 'HEAD' ? undefined : body);
}

/** A refusal: JSON { error } for the API, the line as text elsewhere. */
function refuse(res: ServerResponse, status: number, message: string, req?: IncomingMessage, allow?: string): void {
  const api = (req?.url ?? '/api/').startsWith('/api/');
  const body = api ? JSON.stringify({ error: message } satisfies ErrorResponse) : message + '\n';
  if (allow) res.setHeader('Allow', allow);
  if (req && !req.complete) discardBody(req);
  send(res, status, api ? 'application/json; charset=utf-8' : 'text/plain; charset=utf-8', body, req);
}

/** Bytes of a refused upload read and dropped before its connection is cut. */
const DISCARD_LIMIT = 16 << 20;

/**
 * Reads and drops the rest of a refused request's body: a client cut off mid-upload would see a reset
 * connection instead of the answer (browsers do), and the connection stays usable. Past DISCARD_LIMIT the
 * connection is cut after all.
 */
function discardBody(req: IncomingMessage): void {
  let dropped = 0;
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > DISCARD_LIMIT) req.socket.destroy();
  });
  req.resume();
}
