import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { approximateIndex, approximateIndexInSlices, localityOrder, nextSliceRows, similarIndexOptions, type ApproximateItemIndex, type ItemRows } from '@iisan/model/item-index'
import { gaussian } from '../bench/lib/synthetic-catalogue.ts'

// A synthetic catalogue like trained item embeddings: clustered directions, log-normal norms.
// The exact answers are computed here by a plain scan, independently of the module under test.
const D = 64
const N = 25_000
const K = 10

/** rows [n, D] (no padding row) */
function rows(n: number, seed: number, normScale = 1): Float32Array {
  const g = gaussian(seed)
  const centres = Float32Array.from({ length: 128 * D }, g)
  const out = new Float32Array(n * D)
  const v = new Float32Array(D)
  for (let r = 0; r < n; r++) {
    const c = Math.floor(Math.abs(g()) * 1e6) % 128
    let sq = 0
    for (let d = 0; d < D; d++) {
      v[d] = centres[c * D + d] + 0.9 * g()
      sq += v[d] * v[d]
    }
    const scale = (normScale * Math.exp(0.35 * g())) / Math.sqrt(sq)
    for (let d = 0; d < D; d++) out[r * D + d] = v[d] * scale
  }
  return out
}

function withPadding(r: Float32Array): Float32Array {
  const m = new Float32Array(r.length + D)
  m.set(r, D)
  return m
}

function dot(m: Float32Array, index: number, q: Float32Array): number {
  let s = 0
  for (let d = 0; d < D; d++) s += m[index * D + d] * q[d]
  return s
}

/** exact top-k over rows 1..(m.length / D − 1), skipping `exclude` */
function exactTopK(m: Float32Array, q: Float32Array, k: number, exclude: ReadonlySet<number> = new Set()): number[] {
  const scored: { index: number; score: number }[] = []
  for (let r = 1; r < m.length / D; r++) if (!exclude.has(r)) scored.push({ index: r, score: dot(m, r, q) })
  scored.sort((a, b) => b.score - a.score || a.index - b.index)
  return scored.slice(0, k).map((s) => s.index)
}

function userState(m: Float32Array, g: () => number): Float32Array {
  const u = new Float32Array(D)
  for (let j = 0; j < 3; j++) {
    const r = 1 + (Math.floor(Math.abs(g()) * 1e6) % N)
    for (let d = 0; d < D; d++) u[d] += m[r * D + d] / 3
  }
  for (let d = 0; d < D; d++) u[d] += 0.3 * g()
  return u
}

describe('approximate item index (usearch, inner product)', () => {
  const matrix = withPadding(rows(N, 1))
  let index: ApproximateItemIndex

  beforeAll(() => {
    // one build thread: the graph, and so every recall figure below, is the same on every run
    index = approximateIndex(matrix, D, { threads: 1 })
  })
  afterAll(() => index?.dispose?.())

  it('indexes rows 1..N', () => {
    expect(index.size).toBe(N)
  })

  it('recall@10 ≥ 0.98 against an exact scan, with a 20-item history excluded', () => {
    const g = gaussian(2)
    let hits = 0
    const Q = 100
    for (let i = 0; i < Q; i++) {
      const u = userState(matrix, g)
      const history = new Set(Array.from({ length: 20 }, () => 1 + (Math.floor(Math.abs(g()) * 1e6) % N)))
      const truth = new Set(exactTopK(matrix, u, K, history))
      const got = index.search(u, K, history)
      expect(got).toHaveLength(K)
      for (const s of got) {
        expect(history.has(s.index)).toBe(false)
        if (truth.has(s.index)) hits++
      }
    }
    expect(hits / (K * Q)).toBeGreaterThanOrEqual(0.98)
  })

  it('returns exact dot products, best first, never row 0', () => {
    const g = gaussian(3)
    for (let i = 0; i < 20; i++) {
      const u = userState(matrix, g)
      const got = index.search(u, K)
      for (let j = 0; j < got.length; j++) {
        expect(got[j].index).toBeGreaterThanOrEqual(1)
        expect(got[j].index).toBeLessThanOrEqual(N)
        expect(Math.abs(got[j].score - dot(matrix, got[j].index, u))).toBeLessThanOrEqual(1e-5)
        if (j > 0) expect(got[j].score).toBeLessThanOrEqual(got[j - 1].score)
      }
    }
  })

  it('still returns k items when the exact top 50 are all excluded (as a set or a predicate)', () => {
    const g = gaussian(4)
    let hits = 0
    let asked = 0
    for (let i = 0; i < 10; i++) {
      const u = userState(matrix, g)
      const top60 = exactTopK(matrix, u, 60)
      const history = new Set(top60.slice(0, 50))
      for (const exclude of [history, (j: number) => history.has(j)]) {
        const got = index.search(u, K, exclude)
        expect(got).toHaveLength(K)
        for (const s of got) expect(history.has(s.index)).toBe(false)
        // the next ten by exact score are what should come back, up to the index's recall
        const expected = new Set(top60.slice(50))
        hits += got.filter((s) => expected.has(s.index)).length
        asked += K
      }
    }
    expect(hits / asked).toBeGreaterThanOrEqual(0.95)
  })

  it('re-scores only the head of the library’s answer: the same top 10 as re-scoring the whole beam, and k items even when the head is all excluded', () => {
    const g = gaussian(5)
    let same = 0
    const Q = 50
    try {
      for (let i = 0; i < Q; i++) {
        const u = userState(matrix, g)
        const history = new Set(Array.from({ length: 20 }, () => 1 + (Math.floor(Math.abs(g()) * 1e6) % N)))
        index.rerank = Infinity
        const whole = index.search(u, K, history).map((s) => s.index)
        index.rerank = 32
        const head = index.search(u, K, history)
        same += head.filter((s) => whole.includes(s.index)).length
        for (const s of head) expect(Math.abs(s.score - dot(matrix, s.index, u))).toBeLessThanOrEqual(1e-5)
      }
      expect(same / (K * Q)).toBeGreaterThanOrEqual(0.99)
      // a head of 1 is still k candidates that survive the exclusion, not 1 looked at
      index.rerank = 1
      const u = userState(matrix, g)
      const history = new Set(exactTopK(matrix, u, 50))
      const got = index.search(u, K, history)
      expect(got).toHaveLength(K)
      for (const s of got) expect(history.has(s.index)).toBe(false)
    } finally {
      index.rerank = 64
    }
  })

  it('makes appended items findable at once', () => {
    // 300 cold-start items; every tenth is longer than any existing row, so for a query in its
    // own direction it is the exact top-1 and must be returned
    const fresh = rows(300, 5)
    for (let i = 0; i < 300; i += 10) for (let d = 0; d < D; d++) fresh[i * D + d] *= 4
    index.append(fresh, N + 1)
    expect(index.size).toBe(N + 300)
    const grown = new Float32Array(matrix.length + fresh.length)
    grown.set(matrix)
    grown.set(fresh, matrix.length)
    let hits = 0
    for (let i = 0; i < 300; i += 10) {
      const id = N + 1 + i
      const q = grown.subarray(id * D, (id + 1) * D)
      const got = index.search(q, K)
      expect(got[0].index).toBe(id)
      expect(Math.abs(got[0].score - dot(grown, id, q))).toBeLessThanOrEqual(1e-5)
      const truth = new Set(exactTopK(grown, q, K))
      hits += got.filter((s) => truth.has(s.index)).length
      // excluded appended items are not returned
      expect(index.search(q, K, new Set([id])).some((s) => s.index === id)).toBe(false)
    }
    expect(hits / (K * 30)).toBeGreaterThanOrEqual(0.98)
    // an ordinary user state ranks appended and original items together, exactly
    const u = userState(grown, gaussian(6))
    const truth = new Set(exactTopK(grown, u, K))
    expect(index.search(u, K).filter((s) => truth.has(s.index)).length).toBeGreaterThanOrEqual(9)
  })

  it('refuses appends out of order', () => {
    expect(() => index.append(new Float32Array(D), index.size + 5)).toThrow(/next item index/)
    expect(() => index.append(new Float32Array(D + 1), index.size + 1)).toThrow(/multiple of D/)
  })

  it('reads its rows through ItemRows when given them, keeping none of what it read', () => {
    let held = withPadding(rows(2000, 7))
    // the rows move between reads (as a wasm heap view does when the heap grows): the index must
    // read them where they are now, not where it read them while it built
    const source: ItemRows = { count: 2001, values: () => held }
    const small = approximateIndex(source, D)
    const old = held
    held = held.slice()
    old.fill(0)
    const fresh = rows(5, 8, 5)
    small.append(fresh, 2001)
    const grown = new Float32Array(held.length + fresh.length)
    grown.set(held)
    grown.set(fresh, held.length)
    // every score is the exact product with the rows where they are now (the old place reads 0)
    for (const id of [17, 1999, 2003]) {
      const q = grown.subarray(id * D, (id + 1) * D)
      const got = small.search(q, 10)
      expect(got).toHaveLength(10)
      for (const s of got) expect(s.score).toBe(dot(grown, s.index, q))
    }
    // an appended row, longer than the rest, is its own query's first answer
    const q = grown.subarray(2003 * D, 2004 * D)
    expect(small.search(q, 3)[0]).toEqual({ index: 2003, score: dot(grown, 2003, q) })
    small.dispose?.()
    expect(() => small.search(q, 3)).toThrow(/dispose/)
  })
})

/** |row| of row `index` of m */
const norm = (m: Float32Array, index: number) => Math.sqrt(dot(m, index, m.subarray(index * D, (index + 1) * D)))

/** exact top-k by cosine over rows 1..N against row `item`, which is left out */
function exactSimilar(m: Float32Array, item: number, k: number): { index: number; score: number }[] {
  const q = m.subarray(item * D, (item + 1) * D)
  const scored: { index: number; score: number }[] = []
  for (let r = 1; r < m.length / D; r++) if (r !== item) scored.push({ index: r, score: dot(m, r, q) / ((norm(m, r) || 1) * (norm(m, item) || 1)) })
  scored.sort((a, b) => b.score - a.score || a.index - b.index)
  return scored.slice(0, k)
}

describe('the similar-items index (cosine, vectors stored as i8)', () => {
  // rows 40 times longer than unit: components well past ±1, which i8 (× 127, clamped) would clip
  // into a few directions unless the rows are made unit first
  const matrix = withPadding(rows(N, 11, 40))
  let index: ApproximateItemIndex
  beforeAll(() => {
    index = approximateIndex(matrix, D, { ...similarIndexOptions({}), threads: 1 })
  })
  afterAll(() => index?.dispose?.())

  it('recall@10 ≥ 0.98 against an exact cosine scan, each item left out of its own answer, scores exact cosines', () => {
    let hits = 0
    const Q = 100
    for (let i = 0; i < Q; i++) {
      const item = 1 + ((i * 7919) % N)
      const truth = exactSimilar(matrix, item, K)
      const got = index.search(matrix.slice(item * D, (item + 1) * D), K, new Set([item]))
      expect(got).toHaveLength(K)
      for (const s of got) {
        expect(s.index).not.toBe(item)
        const cosine = dot(matrix, s.index, matrix.subarray(item * D, (item + 1) * D)) / (norm(matrix, s.index) * norm(matrix, item))
        expect(Math.abs(s.score - cosine)).toBeLessThanOrEqual(1e-5)
      }
      const expected = new Set(truth.map((t) => t.index))
      hits += got.filter((s) => expected.has(s.index)).length
    }
    expect(hits / (K * Q)).toBeGreaterThanOrEqual(0.98)
  })

  it('finds an appended item at once: a copy of an item, scaled, is that item’s most similar', () => {
    const item = 4242
    const copy = Float32Array.from(matrix.subarray(item * D, (item + 1) * D), (x) => x * 0.01)
    index.append(copy, N + 1)
    const got = index.search(matrix.slice(item * D, (item + 1) * D), K, new Set([item]))
    expect(got[0].index).toBe(N + 1)
    expect(got[0].score).toBeCloseTo(1, 5)
  })
})

describe('building beside serving, in slices sized by their time', () => {
  it('sizes the next slice from the last one’s time: 2,048 rows that took 350 ms become 88; at least 8, at most twice the last and 4,096', () => {
    // the slice that held an EPYC's event loop for 350 ms at 200k items
    expect(nextSliceRows(2048, 350)).toBe(88)
    // a quick slice grows, but at most twofold a step and never past 4,096
    expect(nextSliceRows(64, 1)).toBe(128)
    expect(nextSliceRows(4096, 1)).toBe(4096)
    // a very slow slice shrinks at once, never under 8 rows
    expect(nextSliceRows(1000, 100)).toBe(150)
    expect(nextSliceRows(10, 10_000)).toBe(8)
    // a slice the clock did not see grows
    expect(nextSliceRows(100, 0)).toBe(200)
  })

  it('gives the index the whole catalogue: recall@10 ≥ 0.98 against an exact scan; a cancelled build rejects', async () => {
    const n = 5_000
    const matrix = withPadding(rows(n, 7))
    const index = await approximateIndexInSlices(matrix, D, { threads: 1 })
    try {
      expect(index.size).toBe(n)
      const g = gaussian(8)
      let hits = 0
      for (let i = 0; i < 50; i++) {
        const u = new Float32Array(D).map(() => g())
        const truth = new Set(exactTopK(matrix, u, K))
        for (const s of index.search(u, K)) if (truth.has(s.index)) hits++
      }
      expect(hits / (K * 50)).toBeGreaterThanOrEqual(0.98)
    } finally {
      index.dispose?.()
    }
    let checks = 0
    await expect(approximateIndexInSlices(matrix, D, { threads: 1, isCancelled: () => ++checks > 3 })).rejects.toThrow(/cancelled/)
  })
})

describe('the order rows go into the graph (localityOrder)', () => {
  const matrix = withPadding(rows(N, 1))
  const order = () => {
    const steps = localityOrder(() => matrix, N + 1, D)
    for (;;) {
      const step = steps.next()
      if (step.done) return step.value
    }
  }
  const squaredDistance = (a: number, b: number) => {
    let s = 0
    for (let d = 0; d < D; d++) s += (matrix[a * D + d] - matrix[b * D + d]) ** 2
    return s
  }
  const meanStep = (sequence: ArrayLike<number>) => {
    let sum = 0
    for (let i = 1; i < sequence.length; i++) sum += squaredDistance(sequence[i - 1], sequence[i])
    return sum / (sequence.length - 1)
  }

  it('is every row 1..N once, the same on every run, and puts rows near in space next to each other', () => {
    const first = order()
    expect(first).toHaveLength(N)
    expect([...first].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i + 1))
    expect(order()).toEqual(first)
    // rows 1..N come from 128 clusters in random order, so a step between neighbours in 1..N is as
    // long as one between random rows (over 25k steps, within a percent or two); the clusters are
    // diffuse, so the order's steps are shorter by about a fifth (0.78 here)
    const inIndexOrder = meanStep(Array.from({ length: N }, (_, i) => i + 1))
    expect(meanStep(first)).toBeLessThan(0.9 * inIndexOrder)
  })

  it('builds the same quality of index as adding rows 1..N: recall@10 ≥ 0.98 either way, within 0.01 of each other', () => {
    const g = gaussian(31)
    const queries = Array.from({ length: 100 }, () => userState(matrix, g))
    const truths = queries.map((u) => new Set(exactTopK(matrix, u, K)))
    const recall = (insertionOrder: 'index' | 'locality') => {
      const index = approximateIndex(matrix, D, { threads: 1, insertionOrder })
      let hits = 0
      queries.forEach((u, i) => {
        for (const s of index.search(u, K)) if (truths[i].has(s.index)) hits++
      })
      index.dispose?.()
      return hits / (K * queries.length)
    }
    const [byIndex, byLocality] = [recall('index'), recall('locality')]
    expect(byLocality).toBeGreaterThanOrEqual(0.98)
    expect(byIndex).toBeGreaterThanOrEqual(0.98)
    expect(Math.abs(byLocality - byIndex)).toBeLessThanOrEqual(0.01)
  })
})

describe('the longest rows scored exactly beside the graph (normShortlist)', () => {
  // a narrow beam, so the graph alone misses: what the shortlist adds is visible
  const matrix = withPadding(rows(N, 5))
  const recall = (index: ApproximateItemIndex) => {
    const g = gaussian(6)
    let hits = 0
    for (let i = 0; i < 100; i++) {
      const u = userState(matrix, g)
      const truth = new Set(exactTopK(matrix, u, K))
      hits += index.search(u, K).filter((s) => truth.has(s.index)).length
    }
    return hits / (K * 100)
  }

  it('raises recall@10 over the same graph, and every answer is still an exact dot product, best first', () => {
    const plain = approximateIndex(matrix, D, { threads: 1, efSearch: 12, normShortlist: 0 })
    const shortlisted = approximateIndex(matrix, D, { threads: 1, efSearch: 12, normShortlist: 2048 })
    const [without, withShortlist] = [recall(plain), recall(shortlisted)]
    expect(withShortlist).toBeGreaterThan(without)
    const u = userState(matrix, gaussian(7))
    const got = shortlisted.search(u, K)
    got.forEach((s, i) => {
      expect(s.score).toBeCloseTo(dot(matrix, s.index, u), 4)
      if (i > 0) expect(got[i - 1].score).toBeGreaterThanOrEqual(s.score)
    })
    plain.dispose?.()
    shortlisted.dispose?.()
  })

  it('a query along the longest row gets that row first, and not when it is excluded or past upTo', () => {
    let longest = 1
    for (let r = 2; r <= N; r++) if (dot(matrix, r, matrix.subarray(r * D, (r + 1) * D)) > dot(matrix, longest, matrix.subarray(longest * D, (longest + 1) * D))) longest = r
    const index = approximateIndex(matrix, D, { threads: 1, efSearch: 1, normShortlist: 16 })
    const u = matrix.slice(longest * D, (longest + 1) * D)
    expect(index.search(u, 1)[0].index).toBe(longest)
    expect(index.search(u, 3, new Set([longest])).map((s) => s.index)).not.toContain(longest)
    expect(index.search(u, 3, undefined, longest - 1).map((s) => s.index)).not.toContain(longest)
    index.dispose?.()
  })
})

describe('the index under tsx', () => {
  // The services and benches run under tsx, where usearch's ESM build looked for its native
  // binary from a stack trace and, imported by bench:serve, failed at start ("Could not find
  // native build for usearch"). The bench's argument check runs after every import.
  it('bench:serve gets past its imports (usearch included) to its own argument check', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'bench/serve.ts', '--no-such-option'], { cwd: path.resolve(import.meta.dirname, '..'), encoding: 'utf8' })
    expect(run.stderr).not.toContain('Could not find native build')
    expect(run.stderr).toContain("Unknown option '--no-such-option'")
    expect(run.status).not.toBe(0)
  })
})
