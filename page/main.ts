// The page of `mnist-par serve`: a pad to draw on, a file picker and a drop zone, each sending an image to
// POST api/predict, where it goes through `mnist-par predict`'s own code; the answer, the bars and the
// model's 28×28 input are drawn from the reply. One request is out at a time: changes made meanwhile are
// sent as one when it returns, so the page keeps up with a fast hand without queueing stale drawings; the end
// of a stroke does not wait, it cancels the request out and is sent at once.
import type { ErrorResponse, InfoResponse, PredictResponse } from '../src/serve/protocol.js';
import { Pad } from './pad.js';
import { byId, showInfo, showMessage, showPrediction } from './view.js';

/** An image to send, made when its turn comes (the pad's newest drawing, or an opened file). */
type Source = () => Promise<{ body: Blob; name: string }>;

let classes: readonly string[] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
/** the request out, if any */
let current: AbortController | null = null;
/** the image to send when the request out returns, and when its stroke ended (for the latency shown) */
let queued: { source: Source; strokeEnd: number | null } | null = null;
/** bumped by Clear and by an opened file: a reply to what was on the pad before is dropped */
let generation = 0;

function request(source: Source, strokeEnd: number | null): void {
  if (current !== null) {
    queued = { source, strokeEnd: strokeEnd ?? queued?.strokeEnd ?? null };
    // a finished stroke matters more than the half-drawn one being asked about: ask about it now
    if (strokeEnd !== null) current.abort();
    return;
  }
  void send(source, strokeEnd);
}

async function send(source: Source, strokeEnd: number | null): Promise<void> {
  const controller = new AbortController();
  current = controller;
  const mine = generation;
  try {
    const { body, name } = await source();
    const res = await fetch('api/predict', {
      method: 'POST', body, signal: controller.signal,
      headers: { 'Content-Type': body.type || 'application/octet-stream', 'X-File-Name': encodeURIComponent(name) },
    });
    const reply = (await res.json()) as PredictResponse | ErrorResponse;
    if (mine !== generation) return;
    if ('error' in reply) {
      showMessage(reply.error, true);
    } else {
      showPrediction(reply, classes);
      showTiming(strokeEnd === null ? null : performance.now() - strokeEnd, reply.ms);
    }
  } catch (e) {
    // an abort makes way for a newer image, which is sent next
    if (!controller.signal.aborted && mine === generation) {
      showMessage(`no answer from the server (${(e as Error).message}); is mnist-par serve still running?`, true);
    }
  } finally {
    current = null;
    const next = queued;
    queued = null;
    if (next !== null) void send(next.source, next.strokeEnd);
  }
}

/** How long the last stroke waited for its answer, from the pointer going up to the bars being drawn. */
function showTiming(strokeMs: number | null, serverMs: number): void {
  const t = byId('timing');
  t.dataset.serverMs = String(serverMs);
  if (strokeMs === null) {
    t.textContent = `the server took ${serverMs.toFixed(0)} ms`;
    return;
  }
  t.dataset.strokeMs = strokeMs.toFixed(1);
  t.textContent = `answered ${strokeMs.toFixed(0)} ms after the stroke ended (the server took ${serverMs.toFixed(0)} ms)`;
}

function openFile(file: File, pad: Pad): void {
  generation++;
  queued = null;
  // the browser draws what it can decode; the server decodes the rest (TIFF, for one) all the same
  createImageBitmap(file).then((image) => pad.showImage(image), () => pad.clear());
  request(async () => ({ body: file, name: file.name }), null);
}

function start(): void {
  const pad = new Pad(byId<HTMLCanvasElement>('pad'), {
    changed(strokeEnded) {
      if (pad.empty) return;
      request(async () => ({ body: await pad.png(), name: 'drawing.png' }), strokeEnded ? performance.now() : null);
    },
  });
  byId('clear').addEventListener('click', () => {
    generation++;
    queued = null;
    pad.clear();
    showMessage('draw a digit', false);
  });
  const input = byId<HTMLInputElement>('file');
  input.addEventListener('change', () => {
    const file = input.files?.[0];
    if (file) openFile(file, pad);
    input.value = '';
  });
  const drop = byId('drop');
  // a file dropped anywhere else must not make the browser leave the page to show it
  for (const type of ['dragover', 'drop'] as const) window.addEventListener(type, (e) => e.preventDefault());
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = e.dataTransfer?.files[0];
    if (file) openFile(file, pad);
  });
  showMessage('draw a digit', false);
  fetch('api/info')
    .then((r) => r.json() as Promise<InfoResponse>)
    .then((info) => {
      classes = info.classes;
      showInfo(info);
    })
    .catch((e: Error) => {
      byId('model').textContent = `could not read the model's details (${e.message})`;
    });
}

start();
