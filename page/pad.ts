// The drawing pad: dark ink on white, drawn with pointer events, so a mouse, a finger and a pen all draw.
// The model's preprocessing crops to the ink and scales it to 20 pixels, so the stroke width is chosen for a
// digit drawn across most of the pad: 20 of 280 pixels become 2 of 28, MNIST's own strokes.

const STROKE = 20;

export interface PadEvents {
  /** the drawing changed; `strokeEnded` when a stroke just ended (the pointer went up) */
  changed(strokeEnded: boolean): void;
}

export class Pad {
  private readonly ctx: CanvasRenderingContext2D;
  private drawing: number | null = null; // the pointer that draws
  private last = { x: 0, y: 0 };
  private inked = false;
  /** an opened image is on the pad: the next stroke starts a fresh drawing */
  private showingImage = false;

  constructor(readonly canvas: HTMLCanvasElement, private readonly events: PadEvents) {
    const ctx = canvas.getContext('2d');
    if (ctx === null) throw new Error('no 2D canvas in this browser');
    this.ctx = ctx;
    this.clear();
    canvas.addEventListener('pointerdown', (e) => this.down(e));
    canvas.addEventListener('pointermove', (e) => this.move(e));
    canvas.addEventListener('pointerup', (e) => this.up(e));
    canvas.addEventListener('pointercancel', (e) => this.up(e));
  }

  get empty(): boolean {
    return !this.inked;
  }

  clear(): void {
    this.ctx.fillStyle = '#fff';
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.inked = false;
    this.showingImage = false;
  }

  /** Shows an opened image, fitted to the pad, until the next stroke. */
  showImage(image: ImageBitmap): void {
    this.clear();
    const { width: W, height: H } = this.canvas;
    const k = Math.min(W / image.width, H / image.height);
    const w = image.width * k, h = image.height * k;
    this.ctx.drawImage(image, (W - w) / 2, (H - h) / 2, w, h);
    this.showingImage = true;
  }

  /** The drawing as a PNG file's bytes. */
  png(): Promise<Blob> {
    return new Promise((resolve, reject) =>
      this.canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('the canvas gave no PNG'))), 'image/png'));
  }

  private at(e: PointerEvent): { x: number; y: number } {
    const r = this.canvas.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * this.canvas.width) / r.width, y: ((e.clientY - r.top) * this.canvas.height) / r.height };
  }

  private down(e: PointerEvent): void {
    if (this.drawing !== null || (e.pointerType === 'mouse' && e.button !== 0)) return;
    e.preventDefault();
    if (this.showingImage) this.clear();
    this.drawing = e.pointerId;
    try {
      // the stroke goes on when the pointer leaves the pad, and ends wherever it goes up
      this.canvas.setPointerCapture(e.pointerId);
    } catch { /* a pointer the browser no longer tracks: draw without capture */ }
    this.last = this.at(e);
    // a tap is a dot
    this.ctx.fillStyle = '#000';
    this.ctx.beginPath();
    this.ctx.arc(this.last.x, this.last.y, STROKE / 2, 0, 2 * Math.PI);
    this.ctx.fill();
    this.inked = true;
    this.events.changed(false);
  }

  private move(e: PointerEvent): void {
    if (e.pointerId !== this.drawing) return;
    e.preventDefault();
    const c = this.ctx;
    c.strokeStyle = '#000';
    c.lineWidth = STROKE;
    c.lineCap = 'round';
    c.lineJoin = 'round';
    c.beginPath();
    c.moveTo(this.last.x, this.last.y);
    // the points the browser merged into this event, for a smooth line from a fast hand
    const points = typeof e.getCoalescedEvents === 'function' ? e.getCoalescedEvents() : [];
    for (const p of points.length > 0 ? points : [e]) {
      this.last = this.at(p);
      c.lineTo(this.last.x, this.last.y);
    }
    c.stroke();
    this.events.changed(false);
  }

  private up(e: PointerEvent): void {
    if (e.pointerId !== this.drawing) return;
    this.drawing = null;
    this.events.changed(true);
  }
}
