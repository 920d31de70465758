// Approximate item index (issue 11): for each catalogue size, a synthetic [N+1, 64] item matrix
// (seeded; clustered directions, log-normal norms like trained embeddings) → build the USearch
// index (packages/model/src/item-index.ts) → build seconds and RSS delta; 200 user-state queries
// with a 20-item history excluded → recall@10 against the exact scan (topKByDot of serving.ts),
// and per-query latency (median / p99) of the exact scan and of the index; appending 1,000
// cold-start items (ms) and whether they are found at once. Prints a table; writes
// bench/results/ann.json.
//   npx tsx bench/ann.ts [--sizes 20000,200000,1000000] [--queries 200] [--ef-search 64,128,256]
//     [--rerank 0,64] [--ef-construction 128,256] [--connectivity 16,32] [--threads N] [--quantization f32,f16,bf16,i8]
//     [--order index,locality] [--reduced]
// --quantization, --connectivity, --ef-construction and --order build one index per listed vector type (the library's
// copy; re-ranking stays f32), graph degree M and insertion order (rows 1..N, or localityOrder),
// and send each query to every one in turn, so that they are compared under the same load.
// --rerank sweeps how many of the library's candidates are re-scored exactly (0: all it returns).
// --metric cos measures the similar-items index: queries are items, each excluding itself.
// --reduced also builds a USearch index over the MIPS→cosine reduction (rows + sqrt(M² − |x|²),
// query + 0) with the same parameters, for comparison (docs/ann-choice.md). Bad arguments print one `error: …` line and exit 1.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { Index, MetricKind, ScalarKind } from 'usearch'
import { ANN_DEFAULTS, INDEX_QUANTIZATIONS, approximateIndex, indexLibrary, type IndexMetric, type IndexQuantization } from '../packages/model/src/item-index.ts'
import { topKByDot } from '../packages/model/src/serving.ts'
import { clusteredCatalogue, gaussian } from './lib/synthetic-catalogue.ts'
import { fail } from './lib/cli.ts'
import { loadAverage, machine, machineLine } from './lib/machine.ts'

const USAGE =
  'usage: npx tsx bench/ann.ts [--sizes 20000,200000] [--queries 200] [--ef-search 64,128,256] [--rerank 0,64] [--ef-construction 128,256] [--connectivity 16,32] [--threads N] [--quantization f32,f16,bf16,i8] [--order index,locality] [--metric ip|cos] [--reduced]'
const D = 64
const K = 10
const HISTORY = 20
const APPENDED = 1000

function parseOptions() {
  let values: Record<string, string | boolean | undefined>
  try {
    ;({ values } = parseArgs({
      options: {
        sizes: { type: 'string', default: '20000,200000' },
        queries: { type: 'string', default: '200' },
        // beams around the default, each once (a fixed 64,<default>,256 swept 256 twice once the default was 256)
        'ef-search': { type: 'string', default: [...new Set([64, 128, ANN_DEFAULTS.efSearch, 2 * ANN_DEFAULTS.efSearch])].join(',') },
        rerank: { type: 'string', default: String(ANN_DEFAULTS.rerank) },
        // the default is the measured index's own: recommendations' or similar items'
        'ef-construction': { type: 'string' },
        connectivity: { type: 'string', default: String(ANN_DEFAULTS.connectivity) },
        threads: { type: 'string', default: '0' },
        quantization: { type: 'string', default: ANN_DEFAULTS.quantization },
        metric: { type: 'string', default: 'ip' },
        order: { type: 'string', default: ANN_DEFAULTS.insertionOrder },
        reduced: { type: 'boolean', default: false },
      },
    }))
  } catch (err) {
    fail(`${(err as Error).message} (${USAGE})`)
  }
  const int = (raw: string, name: string, min: number): number => {
    const n = Number(raw.trim())
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min) fail(`--${name} must be an integer ≥ ${min} (got ${JSON.stringify(raw)})`)
    return n
  }
  const quantizations = String(values.quantization).split(',').map((q) => q.trim())
  for (const q of quantizations) if (!(INDEX_QUANTIZATIONS as readonly string[]).includes(q)) fail(`--quantization must be a list of ${INDEX_QUANTIZATIONS.join(', ')} (got ${JSON.stringify(q)})`)
  const metric = String(values.metric)
  if (metric !== 'ip' && metric !== 'cos') fail(`--metric must be ip or cos (got ${JSON.stringify(metric)})`)
  const sizes = String(values.sizes).split(',').map((s) => int(s, 'sizes', 1000))
  return {
    sizes,
    queries: int(String(values.queries), 'queries', 1),
    efSearch: String(values['ef-search']).split(',').map((s) => int(s, 'ef-search', 1)),
    reranks: String(values.rerank).split(',').map((s) => int(s, 'rerank', 0)),
    efConstructions: String(values['ef-construction'] ?? (metric === 'cos' ? ANN_DEFAULTS.similarEfConstruction : ANN_DEFAULTS.efConstruction))
      .split(',')
      .map((s) => int(s, 'ef-construction', 1)),
    connectivities: String(values.connectivity).split(',').map((s) => int(s, 'connectivity', 2)),
    threads: int(String(values.threads), 'threads', 0),
    reduced: values.reduced === true,
    quantizations: quantizations as IndexQuantization[],
    metric: metric as IndexMetric,
    orders: String(values.order).split(',').map((o) => (o === 'index' || o === 'locality' ? o : fail(`--order must be a list of index, locality (got ${JSON.stringify(o)})`))),
  }
}

/** [N+1, D]: the shared synthetic catalogue (bench/lib/synthetic-catalogue.ts). */
const catalogue = (N: number, seed: number) => clusteredCatalogue(N, D, seed)

/** User states: the mean of 3 random items plus noise (a user between a few interests). */
function userStates(matrix: Float32Array, N: number, count: number, seed: number): Float32Array[] {
  const g = gaussian(seed)
  const pick = () => 1 + Math.floor(((Math.abs(g()) * 1e6) % N))
  return Array.from({ length: count }, () => {
    const u = new Float32Array(D)
    for (let j = 0; j < 3; j++) {
      const r = pick()
      for (let d = 0; d < D; d++) u[d] += matrix[r * D + d]
    }
    for (let d = 0; d < D; d++) u[d] = u[d] / 3 + 0.3 * g()
    return u
  })
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}

function timeQueries(run: (i: number) => void, n: number): { medianMs: number; p99Ms: number; meanMs: number } {
  const times: number[] = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    run(i)
    times.push(performance.now() - t)
  }
  return timeStats(times)
}

function timeStats(times: number[]): { medianMs: number; p99Ms: number; meanMs: number } {
  const sorted = [...times].sort((a, b) => a - b)
  return { medianMs: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99), meanMs: times.reduce((a, b) => a + b, 0) / times.length }
}

function rssMB(): number {
  ;(globalThis as { gc?: () => void }).gc?.()
  return process.memoryUsage().rss / 2 ** 20
}

const opts = parseOptions()
const results: Record<string, unknown>[] = []
for (const N of opts.sizes) {
  const matrix = catalogue(N, 1000 + N)
  // ip: user states with a history excluded (recommendations); cos: items, each excluding itself (similar items)
  const cosine = opts.metric === 'cos'
  const queryItems = Array.from({ length: opts.queries }, (_, i) => 1 + ((i * 104729) % N))
  const queries = cosine ? queryItems.map((r) => matrix.slice(r * D, (r + 1) * D)) : userStates(matrix, N, opts.queries, 7)
  const histories = cosine ? queryItems.map((r) => new Set([r])) : queries.map((_, i) => new Set(Array.from({ length: HISTORY }, (_, j) => 1 + ((i * 7919 + j * 104729) % N))))
  // the exact cosine ranking is the inner-product ranking of unit rows against a unit query
  const units = new Map<Float32Array, Float32Array>()
  const unitsOf = (rows: Float32Array) => units.get(rows) ?? units.set(rows, unitRows(rows)).get(rows)!
  const exactTopK = (rows: Float32Array, q: Float32Array, exclude: ReadonlySet<number>) =>
    (cosine ? topKByDot(unitsOf(rows), D, unitRows(q), K, exclude) : topKByDot(rows, D, q, K, exclude)).map((s) => s.index)

  const exactTop: number[][] = []
  const exact = timeQueries((i) => exactTop.push(exactTopK(matrix, queries[i], histories[i])), opts.queries)

  const built = opts.efConstructions.flatMap((efConstruction) => opts.connectivities.flatMap((connectivity) =>
    opts.quantizations.flatMap((quantization) => opts.orders.map((insertionOrder) => {
      const rssBefore = rssMB()
      const t = performance.now()
      const index = approximateIndex(matrix, D, {
        metric: opts.metric,
        quantization,
        connectivity,
        efConstruction,
        threads: opts.threads,
        insertionOrder,
      })
      return { efConstruction, connectivity, quantization, insertionOrder, index, buildSeconds: (performance.now() - t) / 1000, rssDeltaMB: rssMB() - rssBefore }
    })),
  ))

  // each query goes to every index in turn, so the shared machine's noise falls on all of them alike
  const sweeps = built.map(() => [] as Record<string, number>[])
  for (const ef of opts.efSearch) for (const rerank of opts.reranks) {
    const times = built.map(() => [] as number[])
    const tops = built.map(() => [] as number[][])
    for (const { index } of built) {
      index.efSearch = ef
      index.rerank = rerank === 0 ? Infinity : rerank
      index.search(queries[0], K, histories[0]) // warm-up
    }
    for (let i = 0; i < opts.queries; i++) {
      built.forEach(({ index }, j) => {
        const t = performance.now()
        tops[j].push(index.search(queries[i], K, histories[i]).map((s) => s.index))
        times[j].push(performance.now() - t)
      })
    }
    built.forEach((_, j) => {
      const annTop = tops[j]
      let hits = 0
      let excludedReturned = 0
      let short = 0
      for (let i = 0; i < opts.queries; i++) {
        const truth = new Set(exactTop[i])
        hits += annTop[i].filter((x) => truth.has(x)).length
        excludedReturned += annTop[i].filter((x) => histories[i].has(x)).length
        if (annTop[i].length < K) short++
      }
      const ann = timeStats(times[j])
      sweeps[j].push({ efSearch: ef, rerank, recallAt10: hits / (K * opts.queries), excludedReturned, queriesShortOfK: short, ...ann, queriesPerSecondOneCore: 1000 / ann.meanMs })
    })
  }

  for (const [j, { efConstruction, connectivity, quantization, insertionOrder, index, buildSeconds, rssDeltaMB }] of built.entries()) {
    const sweep = sweeps[j]
    let t: number
    index.efSearch = cosine ? ANN_DEFAULTS.similarEfSearch : ANN_DEFAULTS.efSearch
    index.rerank = ANN_DEFAULTS.rerank

    // cold start: 1,000 new items; each, as a query direction, must come back at once
    const fresh = catalogue(APPENDED, 99).subarray(D)
    t = performance.now()
    index.append(fresh, N + 1)
    const appendMs = performance.now() - t
    // found at once: for 100 appended rows as queries, recall@10 of the index vs the exact scan
    // over the grown matrix (a short row need not be its own top-1 under inner product), and
    // whether the row itself comes back whenever the exact scan ranks it in the top 10
    const grown = new Float32Array(matrix.length + fresh.length)
    grown.set(matrix)
    grown.set(fresh, matrix.length)
    let freshHits = 0
    let selfExpected = 0
    let selfFound = 0
    for (let i = 0; i < 100; i++) {
      const id = N + 1 + i * 10
      const q = grown.subarray(id * D, (id + 1) * D)
      const truth = exactTopK(grown, q, new Set())
      const got = index.search(q, K).map((s) => s.index)
      freshHits += got.filter((x) => truth.includes(x)).length
      if (truth.includes(id)) {
        selfExpected++
        if (got.includes(id)) selfFound++
      }
    }
    const appended = { rows: APPENDED, ms: appendMs, recallAt10: freshHits / (K * 100), selfInExactTop10: selfExpected, selfFound }

    let reduced: Record<string, number> | undefined
    if (opts.reduced && !cosine && j === 0) {
      const native = new Index({
        dimensions: D + 1,
        metric: MetricKind.IP,
        quantization: ScalarKind.F32,
        connectivity,
        expansion_add: efConstruction,
        expansion_search: 1,
        multi: false,
      })
      let maxSq = 0
      for (let r = 1; r <= N; r++) maxSq = Math.max(maxSq, dot(matrix, r, matrix.subarray(r * D, (r + 1) * D)))
      const augmented = new Float32Array(N * (D + 1))
      for (let r = 1; r <= N; r++) {
        const row = matrix.subarray(r * D, (r + 1) * D)
        augmented.set(row, (r - 1) * (D + 1))
        augmented[(r - 1) * (D + 1) + D] = Math.sqrt(Math.max(0, maxSq - dot(matrix, r, row)))
      }
      t = performance.now()
      native.add(BigUint64Array.from({ length: N }, (_, i) => BigInt(i + 1)), augmented, opts.threads)
      const reducedBuild = (performance.now() - t) / 1000
      let reducedHits = 0
      const q1 = new Float32Array(D + 1)
      const reducedTime = timeQueries((i) => {
        q1.set(queries[i])
        const { keys } = native.search(q1, Math.max(K + HISTORY + ANN_DEFAULTS.overfetch, ANN_DEFAULTS.efSearch), 1)
        const got = Array.from(keys, Number).filter((x) => !histories[i].has(x))
        const scored = got.map((x) => ({ x, s: dot(matrix, x, queries[i]) })).sort((a, b) => b.s - a.s).slice(0, K)
        const truth = new Set(exactTop[i])
        reducedHits += scored.filter((c) => truth.has(c.x)).length
      }, opts.queries)
      reduced = { buildSeconds: reducedBuild, recallAt10: reducedHits / (K * opts.queries), medianMs: reducedTime.medianMs, p99Ms: reducedTime.p99Ms }
    }
    index.dispose?.()

    const row = {
      N,
      D,
      metric: opts.metric,
      efConstruction,
      connectivity,
      quantization,
      insertionOrder,
      buildSeconds,
      rssDeltaMB,
      exact,
      index: sweep,
      appended,
      ...(reduced ? { mipsReduction: { efSearch: ANN_DEFAULTS.efSearch, ...reduced } } : {}),
    }
    results.push(row)
    console.error(`N=${N} M=${connectivity} efConstruction=${efConstruction} ${quantization} ${insertionOrder} order done: ${JSON.stringify(row)}`)
  }
}

/** Rows [n, D] scaled to unit length (the exact cosine reference). */
function unitRows(rows: Float32Array): Float32Array {
  const unit = new Float32Array(rows.length)
  for (let r = 0; r < rows.length / D; r++) {
    const scale = 1 / (Math.sqrt(dot(rows, r, rows.subarray(r * D, (r + 1) * D))) || 1)
    for (let d = 0; d < D; d++) unit[r * D + d] = rows[r * D + d] * scale
  }
  return unit
}

function dot(matrix: Float32Array, r: number, q: Float32Array): number {
  let s = 0
  for (let d = 0; d < D; d++) s += matrix[r * D + d] * q[d]
  return s
}

const fmt = (x: number, digits = 2) => x.toFixed(digits)
console.log(`ANN (usearch, ${opts.metric === 'cos' ? 'cosine: similar items' : 'inner product: recommendations'}), D=${D}, k=${K}, ${opts.metric === 'cos' ? 'the item itself' : HISTORY} excluded, ${opts.queries} queries, ${machineLine()}`)
console.log('| N | M | efConstruction | vectors | insertion order | build s | RSS Δ MB | efSearch | re-ranked | recall@10 | exact median / p99 ms | index median / p99 ms | index q/s (1 core) | append 1k ms | appended: recall@10, self found |')
console.log('| ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
for (const r of results as any[]) {
  for (const e of r.index) {
    console.log(
      `| ${r.N} | ${r.connectivity} | ${r.efConstruction} | ${r.quantization} | ${r.insertionOrder} | ${fmt(r.buildSeconds, 1)} | ${fmt(r.rssDeltaMB, 0)} | ${e.efSearch} | ${e.rerank === 0 ? 'all' : e.rerank} | ${fmt(e.recallAt10, 4)} | ${fmt(r.exact.medianMs)} / ${fmt(r.exact.p99Ms)} | ${fmt(e.medianMs, 3)} / ${fmt(e.p99Ms, 3)} | ${fmt(e.queriesPerSecondOneCore, 0)} | ${fmt(r.appended.ms, 0)} | ${fmt(r.appended.recallAt10, 3)}, ${r.appended.selfFound}/${r.appended.selfInExactTop10} |`,
    )
  }
  if (r.mipsReduction) console.log(`| ${r.N} (MIPS→cosine reduction) | ${r.connectivity} | ${r.efConstruction} | f32 | index | ${fmt(r.mipsReduction.buildSeconds, 1)} | | ${r.mipsReduction.efSearch} | all | ${fmt(r.mipsReduction.recallAt10, 4)} | | ${fmt(r.mipsReduction.medianMs, 3)} / ${fmt(r.mipsReduction.p99Ms, 3)} | | | |`)
}

const out = path.join(import.meta.dirname, 'results', 'ann.json')
fs.mkdirSync(path.dirname(out), { recursive: true })
const previous = fs.existsSync(out) ? (JSON.parse(fs.readFileSync(out, 'utf8')) as { runs?: unknown[] }) : {}
const sameRun = (r: any, e: number, m: number, q: string, o: string) =>
  opts.sizes.includes(r.N) && r.params?.efConstruction === e && r.params?.connectivity === m && (r.quantization ?? 'f32') === q && (r.metric ?? 'ip') === opts.metric && (r.insertionOrder ?? 'index') === o
const runs = [...(previous.runs ?? []).filter((r: any) => !opts.efConstructions.some((e) => opts.connectivities.some((m) => opts.quantizations.some((q) => opts.orders.some((o) => sameRun(r, e, m, q, o))))))]
for (const r of results as any[]) runs.push({ ...r, params: { connectivity: r.connectivity, efConstruction: r.efConstruction, threads: opts.threads }, machine: { ...machine(), loadAverage: loadAverage() }, date: new Date().toISOString() })
fs.writeFileSync(out, JSON.stringify({ library: indexLibrary(), node: process.version, cores: os.cpus().length, runs }, null, 2) + '\n')
console.log(`wrote ${path.relative(process.cwd(), out)}`)
