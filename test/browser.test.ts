// The page of `mnist-par serve` in a real browser: Debian's Chromium, headless, driven by playwright-core.
// A model trained for two epochs on the real MNIST is served; a 7 drawn with the mouse and one drawn with a
// finger (touch events) both come out as 7 within the page's stroke latency; a PNG opened with the file
// picker and one dropped on the pad get exactly what `mnist-par predict` says of them, and the page shows
// the 28×28 input predict computes; a bad image shows predict's one line. The test also takes the README's
// screenshot (written to docs/img/serve.png when MNIST_PAR_README_IMAGES=1).
// Skipped when /usr/bin/chromium is missing (apt-get install chromium; .ci/run installs it). Build first.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDigitImage } from '../src/data/image.js';
import { loadSplit } from '../src/data/idx.js';
import { mnistDir, repoRoot, runCli } from './cli-run.js';
import { startServe, type Served } from './serve-run.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) process.stderr.write(`browser.test.ts: skipped, no ${CHROMIUM} (apt-get install chromium)\n`);

const cwd = mkdtempSync(join(tmpdir(), 'mnist-par-browser-'));
const model = join(cwd, 'models', 'run-1', 'model.safetensors');
let served: Served;
const profile = mkdtempSync(join(tmpdir(), 'mnist-par-chromium-'));
let context: BrowserContext;
let page: Page;
const problems: string[] = [];
/** milliseconds from the end of each stroke to its answer on the page */
const strokeMs: number[] = [];

describe.skipIf(!haveChromium)(`the page in Chromium (skipped without ${CHROMIUM})`, () => {
  beforeAll(async () => {
    const train = runCli(['--data-dir', mnistDir, '--no-download', '--threads', '2', '--epochs', '2', '--no-dashboard'], {}, 170_000, cwd);
    expect(train.code, train.stderr).toBe(0);
    const ev = runCli(['eval', '--data-dir', mnistDir, '--no-download', '--threads', '2'], {}, 120_000, cwd);
    expect(ev.code, ev.stderr).toBe(0);
    served = await startServe([], cwd);
    // a fresh profile (--user-data-dir) for every run
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, viewport: { width: 1100, height: 900 }, hasTouch: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    page = context.pages()[0] ?? await context.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    await page.goto(served.url);
    await page.waitForSelector('#summary table');
  }, 175_000);

  afterAll(async () => {
    await context?.close();
    await served?.stop();
    rmSync(cwd, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
    if (strokeMs.length > 0) {
      const sorted = [...strokeMs].sort((a, b) => a - b);
      process.stdout.write(`browser.test.ts: stroke → answer ${sorted.map((x) => x.toFixed(0)).join(', ')} ms ` +
        `(median ${sorted[sorted.length >> 1].toFixed(0)} ms)\n`);
    }
  });

  /** The pad's corner and scale: points are given in the pad's own 280×280 pixels. */
  async function padPoint(): Promise<(x: number, y: number) => [number, number]> {
    const box = (await page.locator('#pad').boundingBox())!;
    return (x, y) => [box.x + (x * box.width) / 280, box.y + (y * box.height) / 280];
  }

  /** A 7 as a hand draws it: the bar left to right, then the stem down to the left, in `n` steps each. */
  function seven(x0: number, y0: number, size: number, n = 12): [number, number][] {
    const pts: [number, number][] = [];
    for (let i = 0; i <= n; i++) pts.push([x0 + (size * i) / n, y0]);
    for (let i = 1; i <= n; i++) pts.push([x0 + size - (0.6 * size * i) / n, y0 + (1.2 * size * i) / n]);
    return pts;
  }

  /** Waits for the answer to the stroke just ended; returns the digit shown. */
  async function answerToStroke(): Promise<number> {
    await page.waitForFunction(() => document.getElementById('timing')?.dataset.strokeMs !== undefined);
    const ms = Number(await page.locator('#timing').getAttribute('data-stroke-ms'));
    strokeMs.push(ms);
    return Number(await page.locator('#answer').getAttribute('data-digit'));
  }

  async function clear(): Promise<void> {
    await page.click('#clear');
    await page.evaluate(() => { delete document.getElementById('timing')!.dataset.strokeMs; });
    expect(await page.locator('#answer').textContent()).toBe('draw a digit');
  }

  /** The 28×28 input the page shows, as bytes (the red channel of a grey image). */
  async function shownInput(): Promise<number[]> {
    return page.evaluate(() => {
      const c = document.getElementById('input') as HTMLCanvasElement;
      const d = c.getContext('2d')!.getImageData(0, 0, 28, 28).data;
      return Array.from({ length: 784 }, (_, i) => d[4 * i]);
    });
  }

  it('a 7 drawn with the mouse is a 7, answered as the stroke ends; the README\'s screenshot', async () => {
    const at = await padPoint();
    // small and high, large and low, then the one the screenshot shows
    for (const [x0, y0, size] of [[60, 30, 90], [40, 50, 190], [70, 55, 140]]) {
      await clear();
      const pts = seven(x0, y0, size);
      await page.mouse.move(...at(...pts[0]));
      await page.mouse.down();
      for (const p of pts.slice(1)) await page.mouse.move(...at(...p));
      await page.mouse.up();
      expect(await answerToStroke(), `a 7 of ${size} pixels at (${x0}, ${y0})`).toBe(7);
    }
    const input = await shownInput();
    expect(input.filter((v) => v > 128).length, 'ink in the 28×28 input').toBeGreaterThan(40);
    // the charts (training and eval's) and the tables are there too
    await page.waitForFunction(() =>
      Array.from(document.querySelectorAll<HTMLImageElement>('#charts img')).every((i) => i.complete && i.naturalWidth > 0));
    expect(await page.locator('#charts img').count()).toBe(4);
    expect(await page.locator('#summary tr').count()).toBe(1 + 1 + 9 + 1);
    expect(await page.locator('#metrics').textContent()).toMatch(/test accuracy 9\d\.\d\d%, test loss 0\.\d{4} after epoch 2/);
    const shot = await page.screenshot({ fullPage: true });
    const small = await sharp(shot).resize({ width: 900 }).png({ compressionLevel: 9, palette: true }).toBuffer();
    expect(small.length, 'screenshot bytes').toBeLessThan(200_000);
    writeFileSync(join(cwd, 'serve.png'), small);
    if (process.env.MNIST_PAR_README_IMAGES === '1') writeFileSync(join(repoRoot, 'docs', 'img', 'serve.png'), small);
  });

  it('a 7 drawn with a finger is a 7, and the bars move as it is drawn', async () => {
    await clear();
    const at = await padPoint();
    const cdp = await context.newCDPSession(page);
    const touch = (type: 'touchStart' | 'touchMove' | 'touchEnd', p?: [number, number]) => cdp.send('Input.dispatchTouchEvent', {
      type, touchPoints: p ? [{ x: p[0], y: p[1] }] : [],
    });
    const pts = seven(90, 40, 110, 16);
    await touch('touchStart', at(...pts[0]));
    let answersWhileDrawing = 0;
    for (const p of pts.slice(1)) {
      await touch('touchMove', at(...p));
      await page.waitForTimeout(15);
      if ((await page.locator('#bars li').count()) > 0) answersWhileDrawing++;
    }
    await touch('touchEnd');
    expect(await answerToStroke()).toBe(7);
    expect(answersWhileDrawing, 'answers shown before the stroke ended').toBeGreaterThan(0);
  });

  it('an image opened with the picker or dropped on the pad gets what mnist-par predict says of it', async () => {
    const test = await loadSplit(mnistDir, 'test');
    for (const [k, how] of [[1, 'picker'], [2, 'drop']] as const) {
      await clear();
      const file = join(cwd, `digit-${k}.png`);
      // dark ink on light paper, 112×112, as a scan would be
      await sharp(Buffer.from(test.images.subarray(784 * k, 784 * (k + 1)).map((v) => 255 - v)), { raw: { width: 28, height: 28, channels: 1 } })
        .resize(112, 112).png().toFile(file);
      const cli = runCli(['predict', '--json', '--model', model, file], {}, 60_000, cwd);
      expect(cli.code, cli.stderr).toBe(0);
      const want = JSON.parse(cli.stdout) as { digit: number; probabilities: number[] };
      await page.evaluate(() => { delete document.getElementById('answer')!.dataset.digit; });
      if (how === 'picker') {
        await page.setInputFiles('#file', file);
      } else {
        await page.evaluate(async ({ b64, name }) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], name, { type: 'image/png' }));
          document.getElementById('drop')!.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        }, { b64: readFileSync(file).toString('base64'), name: `digit-${k}.png` });
      }
      await page.waitForFunction(() => document.getElementById('answer')?.dataset.digit !== undefined);
      expect(Number(await page.locator('#answer').getAttribute('data-digit')), how).toBe(want.digit);
      const shown = (await page.locator('#bars .pct').allTextContents()).map((t) => Number(t.replace('%', '')));
      want.probabilities.forEach((p, c) => expect(Math.abs(shown[c] - 100 * p), `${how}: class ${c}`).toBeLessThanOrEqual(0.05 + 1e-9));
      expect(await shownInput(), how).toEqual(Array.from(await loadDigitImage(file)));
      // the pad shows the image (dark ink on white)
      const dark = await page.evaluate(() => {
        const c = document.getElementById('pad') as HTMLCanvasElement;
        return Array.from(c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data).filter((v, i) => i % 4 === 0 && v < 100).length;
      });
      expect(dark, `${how}: ink on the pad`).toBeGreaterThan(500);
    }
  });

  it('a bad image shows the line mnist-par predict prints for it', async () => {
    const file = join(cwd, 'broken.png');
    writeFileSync(file, 'not a png at all');
    const cli = runCli(['predict', '--model', model, 'broken.png'], {}, 60_000, cwd);
    expect(cli.code).toBe(1);
    await page.setInputFiles('#file', file);
    await page.waitForSelector('#answer.error');
    expect(`mnist-par: ${await page.locator('#answer').textContent()}\n`).toBe(cli.stderr);
    expect(await page.locator('#bars li').count()).toBe(0);
    await clear();
    // the browser logs the refused upload itself; nothing else went wrong on the page
    expect(problems.filter((p) => !p.includes('status of 400 (Bad Request)'))).toEqual([]);
  });
});
