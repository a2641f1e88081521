// Summing the micro-shards' gradient slots into one gradient: the reference for the wasm reduce_slots.
//
// grad[i] = slots[i] + slots[stride + i] + … + slots[(S−1)·stride + i]   for i in [start, end)
// slots: S gradient slots of `stride` floats each (slot s starts at s·stride)  →  grad (≥ end)
// The sum runs in slot order s = 0, 1, … and is rounded to float32 after every addition, exactly as the
// wasm kernel adds f32 lanes, so both give the same bits. A fixed order (slots are indexed by micro-shard,
// never by thread) is what keeps training bit-identical for any thread count. S = 0 gives zeros.
export function reduceSlots(grad: Float32Array, slots: Float32Array, stride: number, S: number,
                            start: number, end: number): void {
  for (let i = start; i < end; i++) {
    let acc = S > 0 ? slots[i] : 0;
    for (let s = 1; s < S; s++) acc = Math.fround(acc + slots[s * stride + i]);
    grad[i] = acc;
  }
}
