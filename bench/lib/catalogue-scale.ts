/**
 * Catalogue-scale serving (bench/serve.ts, part 4): how one request's in-process work — the user
 * encoder's forward pass over a history of T items, then the top-k over an N × D item matrix —
 * grows with N, on synthetic catalogues (random matrix, random-weights model), one size per child
 * process so that each RSS figure is that size's alone.
 *
 * Scorers: `reference` (the path before issue 11, one request at a time: the tfjs forward of one
 * window, then `topKByDot`), `batched` (ServingModel.recommendMany, exact) and `approximate` (the
 * same with the USearch index, built beside serving as a replica builds it, so that the RSS is a
 * replica's). Each gets the same random-weights checkpoint and matrix.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { saveCheckpoint } from '@iisan/model/checkpoint'
import { SequentialRecommender, sasRecIdConfig } from '@iisan/model/recommender'
import { ServingModel, topKByDot, type ScoredItem } from '@iisan/model/serving'
import { clusteredCatalogue } from './synthetic-catalogue.ts'

/** One way of answering requests on a catalogue: how many it takes at once, and the answers. */
export interface CatalogueAnswerer {
  /** requests answered together (the reference: 1) */
  batch: number
  answer(histories: number[][], k: number): ScoredItem[][]
  /** the user-encoder part alone, for the time split */
  userStates(histories: number[][]): void
  dispose(): void
}

export interface CatalogueScorer {
  name: string
  /** what it is, for the table's notes */
  describe: string
  /** weights: a random-weights checkpoint; matrix: [N+1, D] row-major, row 0 = padding (the serving layout) */
  build(weights: Uint8Array, matrix: Float32Array, D: number): CatalogueAnswerer | Promise<CatalogueAnswerer>
}

/** The platform's batched path, exact or from the approximate index (built as the serving registry builds it). */
async function servingPath(weights: Uint8Array, matrix: Float32Array, approximate: boolean, onRuntime: boolean): Promise<CatalogueAnswerer> {
  const serving = ServingModel.load(weights, matrix, { approximateFrom: Infinity })
  // as the serving registry loads a version: scored on ONNX Runtime where it loads
  if (onRuntime && !(await serving.useRuntime())) throw new Error('ONNX Runtime does not load here (or BACKBONE_RUNTIME=tfjs): no onnx scorer')
  if (approximate) await serving.buildIndex()
  return {
    batch: serving.maxBatch,
    answer: (histories, k) => serving.recommendMany(histories.map((history) => ({ history, k }))),
    userStates: (histories) => void serving.userStates(histories),
    dispose: () => serving.dispose(),
  }
}

/** The scorers a run can name (`--scorers reference,batched,approximate`). */
export const CATALOGUE_SCORERS: Record<string, CatalogueScorer> = {
  reference: {
    name: 'reference',
    describe: 'the path before issue 11: one request at a time, ServingModel.userState (tfjs forward of one window) + topKByDot (scalar scan over every row)',
    build: (weights, matrix, D) => {
      const serving = ServingModel.load(weights, matrix, { approximateFrom: Infinity })
      return {
        batch: 1,
        answer: (histories, k) => histories.map((h) => topKByDot(matrix, D, serving.userState(h), k, new Set(h))),
        userStates: (histories) => void serving.userStates(histories),
        dispose: () => serving.dispose(),
      }
    },
  },
  batched: {
    name: 'batched',
    describe: 'ServingModel.recommendMany on tfjs, exact: a batch of ServingModel.maxBatch requests = one user-encoder forward + one matrix product (wasm) + a partial top-k per request in JavaScript',
    build: (weights, matrix) => servingPath(weights, matrix, false, false),
  },
  onnx: {
    name: 'onnx',
    describe: 'ServingModel.recommendMany on ONNX Runtime, exact (what a replica serves where ORT loads): a batch = one ORT run (user encoder, product, exclusions, TopK), one intra-op thread',
    build: (weights, matrix) => servingPath(weights, matrix, false, true),
  },
  approximate: {
    name: 'approximate',
    describe: 'ServingModel.recommendMany with the approximate index (USearch HNSW, inner product; built beside serving by ServingModel.buildIndex, as a replica builds it): user states on ONNX Runtime, one index search per request',
    build: (weights, matrix) => servingPath(weights, matrix, true, true),
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
  /** requests answered together */
  batch: number
  /** requests per second of one loop on one core (measured) */
  requestsPerSecond: number
  /** recall@k against the reference scan over 100 requests (measured; 1 for exact paths) */
  recallAtK: number
  latencyMs: { p50: number; p99: number; max: number }
  /** medians of the two parts of a batch (measured), per request */
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

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}

/** In the child: one size, one scorer. */
async function runSize(args: ChildArgs): Promise<CatalogueSizeResult> {
  const { initBackend } = await import('@iisan/model/backend')
  const backend = await initBackend()
  const t0 = performance.now()
  const matrix = clusteredCatalogue(args.items, args.D, 12345)
  // a random-weights model through the platform's own checkpoint → ServingModel path; the item
  // table of the checkpoint is the smallest possible (N = 1): serving reads the matrix it is given
  const config = sasRecIdConfig(1, { embeddingDim: args.D })
  const model = new SequentialRecommender(config)
  const weights = saveCheckpoint(model.params, config)
  model.dispose()
  const T = config.maxSeqLen
  let rnd = 987654321
  const nextIndex = () => {
    rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0
    return 1 + (rnd % args.items)
  }
  const history = () => Array.from({ length: T }, nextIndex)
  const scorer = await CATALOGUE_SCORERS[args.scorer].build(weights, matrix, args.D)
  const buildSeconds = (performance.now() - t0) / 1000
  const rssAfterBuildMb = statusMb('VmRSS')
  const batchOf = () => Array.from({ length: scorer.batch }, history)
  // warm-up, then recall against the reference scan on fresh requests
  for (let i = 0; i < 3; i++) scorer.answer(batchOf(), args.k)
  let hits = 0
  let asked = 0
  const reference = ServingModel.load(weights, matrix, { approximateFrom: Infinity })
  while (asked < 100) {
    const histories = batchOf()
    const answers = scorer.answer(histories, args.k)
    histories.forEach((h, i) => {
      if (asked >= 100) return
      const exact = new Set(topKByDot(matrix, args.D, reference.userState(h), args.k, new Set(h)).map((s) => s.index))
      hits += answers[i].filter((s) => exact.has(s.index)).length
      asked++
    })
  }
  reference.dispose()
  const latencies: number[] = []
  const encoderMs: number[] = []
  const topKMs: number[] = []
  let requests = 0
  const start = performance.now()
  const deadline = start + args.seconds * 1000
  while (performance.now() < deadline || requests < args.minRequests) {
    const histories = batchOf()
    const a = performance.now()
    scorer.userStates(histories)
    const b = performance.now()
    const answers = scorer.answer(histories, args.k)
    const c = performance.now()
    for (const top of answers) if (top.length !== Math.min(args.k, args.items - T)) throw new Error(`scorer ${args.scorer} returned ${top.length} items, expected ${args.k}`)
    // every request of a batch waits for the whole batch
    for (let i = 0; i < histories.length; i++) latencies.push(c - b)
    requests += histories.length
    encoderMs.push((b - a) / histories.length)
    topKMs.push((c - b - (b - a)) / histories.length)
  }
  const seconds = (performance.now() - start) / 1000
  const sorted = [...latencies].sort((x, y) => x - y)
  const med = (v: number[]) => quantile([...v].sort((x, y) => x - y), 0.5)
  scorer.dispose()
  return {
    scorer: args.scorer,
    items: args.items,
    D: args.D,
    k: args.k,
    T,
    requests,
    seconds,
    batch: scorer.batch,
    requestsPerSecond: requests / seconds,
    recallAtK: hits / (asked * args.k),
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
