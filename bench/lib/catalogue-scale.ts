/**
 * Catalogue-scale serving (bench/serve.ts, part 4): how one request's in-process work — the user
 * encoder's forward pass over a history of T items, then the top-k over an N × D item matrix —
 * grows with N, on synthetic catalogues (random matrix, random-weights model), one size per child
 * process so that each RSS figure is that size's alone.
 *
 * Today there is one scorer, `exact`: the platform's own ServingModel (packages/model/src/serving.ts)
 * loaded from a random-weights checkpoint over the random matrix — `userState` (the real
 * user-encoder path, item matrix as a tfjs tensor) then `topKByDot` over every row. An
 * approximate index or a fast path is one more entry of CATALOGUE_SCORERS (it gets the same
 * matrix and the same user states) and one more name in `scorers`: nothing else changes.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { saveCheckpoint } from '@iisan/model/checkpoint'
import { SequentialRecommender, sasRecIdConfig } from '@iisan/model/recommender'
import { ServingModel, topKByDot, type ScoredItem } from '@iisan/model/serving'

/** A way to answer "top k rows of the matrix by u·e" for one catalogue. */
export interface CatalogueIndex {
  topK(state: Float32Array, k: number, exclude: ReadonlySet<number>): ScoredItem[]
  /** bytes the index holds beyond the matrix (0 for the exact scan) */
  extraBytes: number
  dispose?(): void
}

export interface CatalogueScorer {
  name: string
  /** what it is, for the table's notes */
  describe: string
  /** matrix: [N+1, D] row-major, row 0 = padding (the serving layout) */
  build(matrix: Float32Array, D: number): CatalogueIndex | Promise<CatalogueIndex>
}

/** The scorers a run can name (`--scorers exact,…`). Add an approximate index or a fast path here. */
export const CATALOGUE_SCORERS: Record<string, CatalogueScorer> = {
  exact: {
    name: 'exact',
    describe: 'ServingModel.userState (random-weights SASRec user encoder, tfjs) + topKByDot over every row (packages/model/src/serving.ts)',
    build: (matrix, D) => ({ topK: (state, k, exclude) => topKByDot(matrix, D, state, k, exclude), extraBytes: 0 }),
  },
}

export interface CatalogueSizeResult {
  scorer: string
  items: number
  D: number
  k: number
  T: number
  requests: number
  seconds: number
  /** requests per second of one loop on one core (measured) */
  requestsPerSecond: number
  latencyMs: { p50: number; p99: number; max: number }
  /** medians of the two parts of a request (measured) */
  userEncoderMsMedian: number
  topKMsMedian: number
  buildSeconds: number
  matrixMb: number
  /** RSS of the child process after building (matrix, matrix tensor, index), and its peak (VmHWM) */
  rssAfterBuildMb: number
  rssPeakMb: number
  backend: string
}

export interface CatalogueScaleOptions {
  sizes: number[]
  D: number
  k: number
  /** seconds of the request loop per size (at least `minRequests` requests) */
  seconds: number
  minRequests: number
  scorers: string[]
  onProgress?: (message: string) => void
}

const CHILD = fileURLToPath(import.meta.url)
const REPO_ROOT = path.resolve(path.dirname(CHILD), '../..')

/** Every (scorer, size) pair, each in a child process of its own, one after the other. */
export async function measureCatalogueScale(options: CatalogueScaleOptions): Promise<CatalogueSizeResult[]> {
  for (const s of options.scorers) if (!CATALOGUE_SCORERS[s]) throw new Error(`unknown catalogue scorer ${s} (known: ${Object.keys(CATALOGUE_SCORERS).join(', ')})`)
  const results: CatalogueSizeResult[] = []
  for (const scorer of options.scorers) {
    for (const items of options.sizes) {
      options.onProgress?.(`catalogue ${items.toLocaleString('en-US')} items × D ${options.D}, scorer ${scorer}`)
      const args = { scorer, items, D: options.D, k: options.k, seconds: options.seconds, minRequests: options.minRequests }
      results.push(await runChild(args))
    }
  }
  return results
}

interface ChildArgs {
  scorer: string
  items: number
  D: number
  k: number
  seconds: number
  minRequests: number
}

function runChild(args: ChildArgs): Promise<CatalogueSizeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(args)], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout!.on('data', (d) => (out += d))
    child.stderr!.on('data', (d) => (err = (err + d).slice(-4000)))
    child.once('error', reject)
    child.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '))
      if (code !== 0 || !line) reject(new Error(`catalogue child (${args.items} items) exited ${code}: ${err.trim().slice(-1500)}`))
      else resolve(JSON.parse(line.slice('RESULT '.length)) as CatalogueSizeResult)
    })
  })
}

function statusMb(field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

/** xorshift32 in [-1, 1): fast and seeded, so every run scores the same catalogue. */
function randomMatrix(rows: number, D: number, seed: number): Float32Array {
  const m = new Float32Array(rows * D)
  let x = seed >>> 0 || 1
  for (let i = D; i < m.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    m[i] = ((x >>> 0) / 2 ** 31 - 1) * 0.5
  }
  return m
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

/** In the child: one size, one scorer. */
async function runSize(args: ChildArgs): Promise<CatalogueSizeResult> {
  const { initBackend } = await import('@iisan/model/backend')
  const backend = await initBackend()
  const t0 = performance.now()
  const matrix = randomMatrix(args.items + 1, args.D, 12345)
  // a random-weights model through the platform's own checkpoint → ServingModel path; the item
  // table of the checkpoint is the smallest possible (N = 1): serving reads the matrix it is given
  const config = sasRecIdConfig(1, { embeddingDim: args.D })
  const model = new SequentialRecommender(config)
  const weights = saveCheckpoint(model.params, config)
  model.dispose()
  const serving = ServingModel.load(weights, matrix)
  const T = config.maxSeqLen
  let rnd = 987654321
  const nextIndex = () => {
    rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0
    return 1 + (rnd % args.items)
  }
  const history = () => Array.from({ length: T }, nextIndex)
  serving.userState(history()) // builds the matrix tensor, as the first request of a loaded model does
  const index = await CATALOGUE_SCORERS[args.scorer].build(matrix, args.D)
  const buildSeconds = (performance.now() - t0) / 1000
  const rssAfterBuildMb = statusMb('VmRSS')
  // warm-up
  for (let i = 0; i < 3; i++) {
    const h = history()
    index.topK(serving.userState(h), args.k, new Set(h))
  }
  const latencies: number[] = []
  const encoderMs: number[] = []
  const topKMs: number[] = []
  const start = performance.now()
  const deadline = start + args.seconds * 1000
  while (performance.now() < deadline || latencies.length < args.minRequests) {
    const h = history()
    const a = performance.now()
    const state = serving.userState(h)
    const b = performance.now()
    const top = index.topK(state, args.k, new Set(h))
    const c = performance.now()
    if (top.length !== Math.min(args.k, args.items - T)) throw new Error(`scorer ${args.scorer} returned ${top.length} items, expected ${args.k}`)
    latencies.push(c - a)
    encoderMs.push(b - a)
    topKMs.push(c - b)
  }
  const seconds = (performance.now() - start) / 1000
  const sorted = [...latencies].sort((x, y) => x - y)
  const med = (v: number[]) => quantile([...v].sort((x, y) => x - y), 0.5)
  index.dispose?.()
  serving.dispose()
  return {
    scorer: args.scorer,
    items: args.items,
    D: args.D,
    k: args.k,
    T,
    requests: latencies.length,
    seconds,
    requestsPerSecond: latencies.length / seconds,
    latencyMs: { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted[sorted.length - 1] },
    userEncoderMsMedian: med(encoderMs),
    topKMsMedian: med(topKMs),
    buildSeconds,
    matrixMb: matrix.byteLength / 2 ** 20,
    rssAfterBuildMb,
    rssPeakMb: statusMb('VmHWM'),
    backend,
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === CHILD) {
  runSize(JSON.parse(process.argv[2]) as ChildArgs).then(
    (r) => {
      process.stdout.write(`RESULT ${JSON.stringify(r)}\n`)
      process.exit(0)
    },
    (e: unknown) => {
      console.error(e instanceof Error ? e.stack : String(e))
      process.exit(1)
    },
  )
}
