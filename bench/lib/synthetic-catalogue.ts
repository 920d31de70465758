// Synthetic item matrices shaped like trained item embeddings rather than uniform noise: clustered
// directions (items of one kind point alike) and log-normal norms (popular items are longer).
// Uniform random vectors in 64 dimensions have no neighbourhoods at all, the worst case of any
// graph index and unlike any trained model; both benches that score catalogues use this one.

/** mulberry32 + Box–Muller: reproducible N(0, 1). */
export function gaussian(seed: number): () => number {
  let a = seed >>> 0
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return () => Math.sqrt(-2 * Math.log(uniform() || 1e-12)) * Math.cos(2 * Math.PI * uniform())
}

/** [N+1, D] (row 0 = padding): 256 cluster centres, item = centre + noise, unit direction × log-normal norm. */
export function clusteredCatalogue(N: number, D: number, seed: number): Float32Array {
  const g = gaussian(seed)
  const C = 256
  const centres = Float32Array.from({ length: C * D }, g)
  const m = new Float32Array((N + 1) * D)
  const v = new Float32Array(D)
  for (let r = 1; r <= N; r++) {
    const c = Math.floor((((g() * 1e6) % C) + C) % C)
    let sq = 0
    for (let d = 0; d < D; d++) {
      v[d] = centres[c * D + d] + 0.9 * g()
      sq += v[d] * v[d]
    }
    const scale = Math.exp(0.35 * g()) / Math.sqrt(sq)
    for (let d = 0; d < D; d++) m[r * D + d] = v[d] * scale
  }
  return m
}
