// What the page shows, drawn from the server's JSON: the answer and its bars, the model's 28×28 input, and
// the run's summary, metrics and charts. Text goes in as text (textContent), never as HTML.
import type { EpochRow, InfoResponse, ModelSummary, PredictResponse } from '../src/serve/protocol.js';

const int = (x: number): string => Math.round(x).toLocaleString('en-US');
const pct = (x: number, digits = 1): string => `${(100 * x).toFixed(digits)}%`;
const mflops = (x: number): string => (x / 1e6).toFixed(3);

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, className?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className !== undefined) e.className = className;
  return e;
}

export function byId<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) throw new Error(`the page has no #${id}`);
  return e as T;
}

/** The answer, one bar per class, and the input as the model saw it (white ink on black). */
export function showPrediction(p: PredictResponse, classes: readonly string[]): void {
  const answer = byId('answer');
  answer.className = '';
  answer.replaceChildren(el('span', p.label, 'digit'), el('span', `${pct(p.probabilities[p.digit], 1)} sure`));
  answer.dataset.digit = String(p.digit);
  const bars = byId('bars');
  bars.replaceChildren(...p.probabilities.map((q, c) => {
    const li = el('li', undefined, c === p.digit ? 'top' : '');
    const fill = el('span', undefined, 'fill');
    fill.style.width = pct(q, 2);
    const track = el('span', undefined, 'track');
    track.append(fill);
    li.append(el('span', classes[c] ?? String(c)), track, el('span', pct(q, 1), 'pct'));
    return li;
  }));
  showInput(p.input);
}

function showInput(pixels: readonly number[]): void {
  const canvas = byId<HTMLCanvasElement>('input');
  const ctx = canvas.getContext('2d');
  if (ctx === null) return;
  const img = ctx.createImageData(28, 28);
  pixels.forEach((v, i) => img.data.set([v, v, v, 255], 4 * i));
  ctx.putImageData(img, 0, 0);
}

/** No answer: a message (a refusal's one line, or what to do), empty bars and input. */
export function showMessage(text: string, error: boolean): void {
  const answer = byId('answer');
  answer.className = error ? 'error' : '';
  answer.textContent = text;
  delete answer.dataset.digit;
  byId('bars').replaceChildren();
  showInput(new Array(784).fill(0));
}

export function showInfo(info: InfoResponse): void {
  byId('model').textContent = `${info.model} · ${info.network} · ${info.dataset}`;
  showMetrics(info.epochs, info.epochsNote);
  showSummary(info.summary);
  const charts = byId('charts');
  if (info.charts.length === 0) {
    charts.replaceChildren(el('p', 'no charts in the run\'s plot folder (a run writes them; mnist-par eval adds the confusion matrix)', 'hint'));
    return;
  }
  charts.replaceChildren(...info.charts.map((c) => {
    const fig = el('figure');
    const img = el('img');
    img.src = `plots/${encodeURIComponent(c.file)}`;
    img.alt = c.title;
    fig.append(img, el('figcaption', `${c.title} (${c.file})`));
    return fig;
  }));
}

function showMetrics(epochs: readonly EpochRow[], note: string | null): void {
  const box = byId('metrics');
  const last = epochs[epochs.length - 1];
  if (last === undefined) {
    box.replaceChildren(el('p', note ?? 'no epochs recorded yet', 'hint'));
    return;
  }
  const best = epochs.reduce((a, b) => (b.valAccuracy > a.valAccuracy ? b : a));
  const head = el('p', `test accuracy ${pct(last.valAccuracy, 2)}, test loss ${last.valLoss.toFixed(4)} after epoch ${last.epoch}` +
    (best.epoch !== last.epoch ? ` (best: ${pct(best.valAccuracy, 2)} after epoch ${best.epoch})` : ''), 'totals');
  const table = el('table');
  table.append(row('th', ['epoch', 'train loss', 'train accuracy', 'test loss', 'test accuracy', 'seconds'], [false, true, true, true, true, true]));
  for (const e of epochs) {
    table.append(row('td', [String(e.epoch), e.trainLoss.toFixed(4), pct(e.trainAccuracy, 2), e.valLoss.toFixed(4), pct(e.valAccuracy, 2),
      e.seconds.toFixed(1)], [false, true, true, true, true, true]));
  }
  box.replaceChildren(head, table, el('p', 'from epoch_metrics.csv: each epoch ends with a pass over the test split', 'hint'));
}

function showSummary(s: ModelSummary): void {
  const table = el('table');
  const numeric = [false, false, false, true, false, true];
  table.append(row('th', ['layer', 'type', 'output shape', 'parameters', 'tensors', 'forward MFLOPs'], numeric));
  const shape = (d: readonly number[]) => `[B, ${d.join(', ')}]`;
  table.append(row('td', ['input', '', shape(s.input), '', '', ''], numeric));
  for (const l of s.layers) {
    table.append(row('td', [l.name, l.type, shape(l.output), int(l.params), l.tensors.map((t) => `${t.name} [${t.shape.join(', ')}]`).join(', '),
      l.params > 0 ? mflops(l.forwardFlops) : ''], numeric));
  }
  const foot = el('tfoot');
  foot.append(row('td', ['total', '', '', int(s.params), '', mflops(s.forwardFlops)], numeric));
  table.append(foot);
  const a = s.arena;
  const totals = el('p', undefined, 'totals');
  totals.append(
    `${s.network}: ${int(s.params)} parameters, ${int(s.weightBytes)} bytes of float32 weights`, el('br'),
    `FLOPs per sample (2 per multiply-add): forward ${mflops(s.forwardFlops)} M, training step ${mflops(s.trainFlops)} M`, el('br'),
    `shared arena of a training run: ${(a.bytes / 1e6).toFixed(1)} MB at batch ${a.batchSize}, ${a.threads} threads, ${a.optimizer}, ` +
      `${int(a.trainCount)} training + ${int(a.testCount)} test images`,
  );
  byId('summary').replaceChildren(table, totals);
}

function row(cell: 'th' | 'td', texts: readonly string[], numeric: readonly boolean[]): HTMLTableRowElement {
  const tr = el('tr');
  texts.forEach((t, i) => tr.append(el(cell, t, numeric[i] ? 'num' : '')));
  return tr;
}
