// Serving throughput (issue 11), the whole measurement in one run:
//   1. a throwaway database (created, migrated, dropped at the end) and its own Redis queue
//      prefix; the services started as `npm start` starts them (scripts/start-all.ts as a child,
//      on free ports); the Scientific data imported through POST /v1/datasets (all 12,076 users and
//      20,314 items, or a sample with --quick); IISAN and ID-SASRec trained for one epoch through
//      POST /v1/training-jobs (the IISAN job has the embedding cache encode every item with the
//      backbones first — the embedded demo pair unless TEXT_BACKBONE / IMAGE_BACKBONE say
//      otherwise), each producing a model version;
//   2. autocannon (in this process) at C connections, k = 10, against POST /v1/recommendations
//      with real users' histories of 10 items (rotated per request), POST /v1/recommendations by
//      userId (rotated), GET /v1/items/:id/similar (rotated), each for both model versions
//      (modelId in the request), beside two reference child processes on ports of their own: a
//      Fastify hello-world, and the same POST /v1/recommendations exchange without the platform
//      (bench/lib/exchange-server.ts: the route's schemas, one fixed answer the API gave);
//   3. HTTP at catalogue scale (--http-sizes, 1M by default, none with --quick): a dataset of N
//      synthetic items with a version over a synthetic matrix (bench/lib/catalogue-version.ts),
//      activated through the API; every replica loads it from PostgreSQL and builds its index,
//      then the same three requests run against it over HTTP;
//   4. catalogue-scale runs (bench/lib/catalogue-scale.ts): synthetic catalogues of 20k / 200k /
//      1M items (D = 64), in process: the reference path (one request at a time, tfjs forward +
//      scalar scan), the batched exact path and the approximate index (ServingModel.recommendMany),
//      random weights, one loop on one core, one child process per scorer and size.
// Prints the tables (and a Markdown version to paste), writes bench/results/serve.json.
//
//   npm run bench:serve [-- --quick] [--duration S] [--connections C] [--k K] [--users N]
//                       [--sizes 20000,200000,1000000] [--catalogue-seconds S] [--scorers reference,batched,onnx,approximate]
//                       [--skip-catalogue] [--http-sizes 1000000] [--out FILE]
//
// Bad arguments print one `error: …` line and exit 1. Every child process, the database and the
// Redis keys of the run's prefix are removed at the end, also on failure and Ctrl-C.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import autocannon, { type AutocannonRequest, type Result } from 'autocannon'
import { dropDatabase, ensureDatabaseExists, loadConfig, withDatabase } from '@iisan/config'
import { applyMigrations, createPrisma } from '@iisan/storage'
import { createRedisConnection } from '@iisan/queue'
import { sampleDataset } from '@iisan/pipeline'
import { getMethod, mulberry32 } from '@iisan/model'
import { ANN_MIN_ITEMS } from '@iisan/model/item-index'
import { CATALOGUE_SCORERS, measureCatalogueScale, type CatalogueSizeResult } from './lib/catalogue-scale.ts'
import { createCatalogueVersion } from './lib/catalogue-version.ts'
import { fail, freePort, deleteKeysWithPrefix } from './lib/cli.ts'
import { loadAverage, machine } from './lib/machine.ts'

const REPO = path.resolve(import.meta.dirname, '..')
const USAGE =
  'usage: npm run bench:serve -- [--quick] [--duration S] [--connections C] [--k K] [--users N] [--sizes N,N,…] [--catalogue-seconds S] [--scorers reference,batched,onnx,approximate] [--skip-catalogue] [--http-sizes N,N,…] [--out FILE]'

function parseOptions() {
  let values: Record<string, string | boolean | undefined>
  try {
    ;({ values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        duration: { type: 'string' },
        connections: { type: 'string', default: '32' },
        k: { type: 'string', default: '10' },
        users: { type: 'string' },
        sizes: { type: 'string' },
        'catalogue-seconds': { type: 'string' },
        scorers: { type: 'string', default: 'reference,batched,onnx,approximate' },
        'skip-catalogue': { type: 'boolean', default: false },
        'http-sizes': { type: 'string' },
        out: { type: 'string' },
      },
    }))
  } catch (err) {
    fail(`${(err as Error).message} (${USAGE})`)
  }
  const quick = values.quick === true
  const int = (name: string, fallback: string, min = 1): number => {
    const raw = String(values[name] ?? fallback).trim()
    const n = Number(raw)
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min) fail(`--${name} must be an integer ≥ ${min} (got ${JSON.stringify(values[name])}) (${USAGE})`)
    return n
  }
  const itemCounts = (name: string, fallback: string): number[] => {
    const raw = String(values[name] ?? fallback)
    const counts = raw.split(',').filter((s) => s.trim() !== '').map((s) => Number(s.trim()))
    if (counts.some((s) => !Number.isSafeInteger(s) || s < 100)) fail(`--${name} takes item counts ≥ 100, comma-separated (got ${JSON.stringify(raw)})`)
    return counts
  }
  const sizes = itemCounts('sizes', quick ? '20000,200000' : '20000,200000,1000000')
  return {
    quick,
    duration: int('duration', quick ? '5' : '20'),
    connections: int('connections', '32'),
    k: int('k', '10'),
    /** 0 = every user of the file */
    users: int('users', quick ? '2000' : '0', 0),
    sizes,
    catalogueSeconds: int('catalogue-seconds', quick ? '5' : '15'),
    scorers: String(values.scorers).split(',').map((s) => s.trim()).filter(Boolean),
    skipCatalogue: values['skip-catalogue'] === true,
    /** synthetic catalogues served over HTTP by the running services (empty: none) */
    httpSizes: itemCounts('http-sizes', quick ? '' : '1000000'),
    out: path.resolve(String(values.out ?? path.join(REPO, 'bench/results/serve.json'))),
  }
}

const options = parseOptions()
const started = Date.now()
const progress = (message: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`)
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
/** Ctrl-C / SIGTERM: the signal handler cleans up and exits; the failing requests it causes are not reported */
let interrupted = false

// ---------------------------------------------------------------------------------------------
// child processes: scripts/start-all.ts (the three services) and the hello-world reference

interface Child {
  name: string
  child: ChildProcess
  log(): string
}
const children: Child[] = []

// What the services read from the environment: set by this run, never inherited from the shell.
const PLATFORM_VARIABLES = ['DATABASE_URL', 'REDIS_URL', 'PORT', 'HOST', 'WORKER_HEALTH_PORT', 'QUEUE_PREFIX', 'API_KEYS', 'ARTIFACTS_DIR', 'LOG_LEVEL', 'INTERNAL_TOKEN']
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !PLATFORM_VARIABLES.includes(k) && !k.startsWith('EMBEDDING_CACHE_')) env[k] = v
  return env
}

function startChild(name: string, args: string[], env: Record<string, string>, logFile: string): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const file = fs.createWriteStream(logFile)
  let tail = ''
  const keep = (d: Buffer) => {
    file.write(d)
    tail = (tail + d.toString()).slice(-6000)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  child.once('exit', () => file.end())
  const c = { name, child, log: () => tail }
  children.push(c)
  return c
}

const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null

async function stopChild(c: Child, graceMs = 30_000): Promise<void> {
  if (!alive(c.child)) return
  const gone = new Promise((r) => c.child.once('exit', r))
  c.child.kill('SIGTERM')
  const timer = setTimeout(() => alive(c.child) && c.child.kill('SIGKILL'), graceMs)
  await gone
  clearTimeout(timer)
}

async function waitHealthy(url: string, owner: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!alive(owner.child)) throw new Error(`${owner.name} exited before ${url} answered:\n${owner.log().slice(-3000)}`)
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(3000) })
      await res.body?.cancel()
      if (res.ok) return
    } catch {
      // not listening yet
    }
    await sleep(300)
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs / 1000} s:\n${owner.log().slice(-3000)}`)
}

/** The pid of start-all's child running `entry` (for its RSS). */
function childPid(parent: number, entry: string): number | undefined {
  try {
    const out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(parent)], { encoding: 'utf8' })
    const line = out.split('\n').find((l) => l.includes(entry))
    return line ? Number(line.trim().split(/\s+/)[0]) : undefined
  } catch {
    return undefined
  }
}

/** The API primary's replicas: its node children (tsx's esbuild service is a child too). */
function childPids(parent: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(parent)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([pid, comm]) => Number(pid) > 0 && comm === 'node')
      .map(([pid]) => Number(pid))
  } catch {
    return []
  }
}

/** The API primary and its replicas: their pids, and their RSS together (null without a pid). */
function apiTree(apiPid: number | undefined): { pids: number[]; rssMb: () => number | null } {
  const pids = apiPid ? [apiPid, ...childPids(apiPid)] : []
  return { pids, rssMb: () => (pids.length ? pids.reduce((sum, pid) => sum + (rssMb(pid) ?? 0), 0) : null) }
}

/** VmRSS counts the pages of mapped files too (the item indexes: one copy shared by the replicas); RssAnon is the process's own. */
function rssMb(pid: number | undefined, field: 'VmRSS' | 'VmHWM' | 'RssAnon' = 'VmRSS'): number | null {
  if (!pid) return null
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

/** Clock ticks per second of /proc's CPU times. */
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })) || 100
  } catch {
    return 100
  }
})()

/** CPU seconds (user + system) each process has used so far; a process that is gone is left out. */
function cpuSeconds(pids: number[]): Map<number, number> {
  const used = new Map<number, number>()
  for (const pid of pids) {
    try {
      // the fields after the command's closing parenthesis start at field 3 (state); utime and stime are fields 14 and 15
      const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)!.split(' ')
      used.set(pid, (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS)
    } catch {
      // exited
    }
  }
  return used
}

/** The CPU seconds `pids` used between two readings; a process started in between counts from 0. */
function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0
  for (const [pid, seconds] of after) total += seconds - (before.get(pid) ?? 0)
  return total
}

/** PostgreSQL's processes on this machine (its backends serve the run's database: the services' pools stay connected). */
function postgresPids(): number[] {
  try {
    return execFileSync('ps', ['-u', 'postgres', '-o', 'pid='], { encoding: 'utf8' }).split('\n').map(Number).filter((pid) => pid > 0)
  } catch {
    return []
  }
}

// ---------------------------------------------------------------------------------------------
// the API

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

async function api(base: string, method: string, url: string, body?: unknown, timeoutMs = 600_000): Promise<{ status: number; body: Json }> {
  const res = await fetch(base + url, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(timeoutMs),
  })
  const text = await res.text()
  let json: Json = {}
  try {
    json = JSON.parse(text)
  } catch {
    json = { raw: text.slice(0, 500) }
  }
  return { status: res.status, body: json }
}

async function must(base: string, method: string, url: string, body?: unknown, expect = [200, 201, 202]): Promise<Json> {
  const res = await api(base, method, url, body)
  if (!expect.includes(res.status)) throw new Error(`${method} ${url} → ${res.status} ${JSON.stringify(res.body).slice(0, 600)}`)
  return res.body
}

interface TrainingOutcome {
  method: string
  jobId: string
  modelVersionId: string
  /** wall time as seen by polling the job (measured) */
  seconds: { queued: number; caching: number; training: number; total: number }
  modelVersion: { secondsPerEpoch: number; testHr10: number; testNdcg10: number; trainableParams: number; peakMemoryMb: number; numItems?: number }
}

async function train(base: string, datasetId: string, method: string): Promise<TrainingOutcome> {
  const t0 = Date.now()
  const job = await must(base, 'POST', '/v1/training-jobs', { datasetId, method, config: { maxEpochs: 1, patience: 1 } })
  const firstSeen: Record<string, number> = {}
  let last: Json = job
  let lastPrint = 0
  for (;;) {
    last = await must(base, 'GET', `/v1/training-jobs/${job.id}`)
    const phase: string = last.status === 'running' ? (last.progress?.phase ?? 'running') : last.status
    firstSeen[phase] ??= Date.now()
    if (['completed', 'failed', 'cancelled'].includes(last.status)) break
    if (Date.now() - lastPrint > 15_000) {
      lastPrint = Date.now()
      const p = last.progress ?? {}
      progress(`  ${method}: ${last.status} ${p.phase ?? ''}${p.cached !== undefined ? ` ${p.cached}/${p.total} states` : ''}${p.fraction !== undefined ? ` ${Math.round(p.fraction * 100)}%` : ''}`)
    }
    await sleep(500)
  }
  if (last.status !== 'completed') throw new Error(`training ${method} ${last.status}: ${last.error}`)
  const end = Date.now()
  const running = Math.min(...['caching', 'training', 'running'].map((p) => firstSeen[p] ?? end))
  const trainingStart = firstSeen.training ?? running
  const mv = await must(base, 'GET', `/v1/model-versions/${last.modelVersionId}`)
  return {
    method,
    jobId: job.id,
    modelVersionId: last.modelVersionId,
    seconds: {
      queued: (running - t0) / 1000,
      caching: firstSeen.caching ? (trainingStart - firstSeen.caching) / 1000 : 0,
      training: (end - trainingStart) / 1000,
      total: (end - t0) / 1000,
    },
    modelVersion: { secondsPerEpoch: mv.secondsPerEpoch, testHr10: mv.testHr10, testNdcg10: mv.testNdcg10, trainableParams: mv.trainableParams, peakMemoryMb: mv.peakMemoryMb, numItems: mv.numItems },
  }
}

// ---------------------------------------------------------------------------------------------
// the request mixes

interface Workload {
  histories: string[][]
  userIds: string[]
  similarItemIds: string[]
}

/**
 * Real users of the imported sample: the last 10 items of every user with ≥ 10 interactions (the
 * history bodies); every user with ≥ 5 interactions (userId requests: the data protocol keeps
 * them, so ID-SASRec knows at least some of their items); and the items of the kept sequences
 * (each user's last T + 3 = 13 items), which every model version has an embedding for.
 */
function workload(userLines: string[], seed = 11): Workload {
  const users = userLines.map((l) => {
    const [id, items] = l.split('\t')
    return { id, items: items.split(' ').filter(Boolean) }
  })
  const kept = users.filter((u) => u.items.length >= 5)
  const similar = [...new Set(kept.flatMap((u) => u.items.slice(-13)))]
  // a fixed shuffle, so consecutive requests do not walk the file in order
  let x = seed
  const shuffle = <T>(a: T[]): T[] => {
    for (let i = a.length - 1; i > 0; i--) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0
      const j = x % (i + 1)
      ;[a[i], a[j]] = [a[j], a[i]]
    }
    return a
  }
  return {
    histories: shuffle(users.filter((u) => u.items.length >= 10).map((u) => u.items.slice(-10))),
    userIds: shuffle(kept.map((u) => u.id)),
    similarItemIds: shuffle(similar),
  }
}

/** Who answers a target: the platform's API, or one of the two reference processes. */
type Server = 'api' | 'hello' | 'exchange'

interface Target {
  label: string
  server: Server
  endpoint: string
  model: string
  /** one request object for autocannon; rotates its body or path per request */
  request(): AutocannonRequest
  /** the first request of the rotation, sent once with fetch to check the answer */
  probe(): { method: string; path: string; body?: string }
}

function rotating<T>(values: T[]): () => T {
  let i = 0
  return () => values[i++ % values.length]
}

const HELLO_TARGET: Target = {
  label: 'Fastify hello-world (reference)',
  server: 'hello',
  endpoint: 'GET /',
  model: '—',
  request: () => ({ method: 'GET', path: '/' }),
  probe: () => ({ method: 'GET', path: '/' }),
}

function targets(w: Workload, datasetId: string, models: TrainingOutcome[], k: number): Target[] {
  const perModel = models.flatMap((m) => modelTargets(w, datasetId, { name: getMethod(m.method).label, modelVersionId: m.modelVersionId }, k))
  return [HELLO_TARGET, exchangeTarget(perModel[0]), ...perModel]
}

/** `byHistory`'s requests, answered by the exchange reference: the same bodies, parsed, validated and answered through the same schemas. */
function exchangeTarget(byHistory: Target): Target {
  return { ...byHistory, label: 'POST /v1/recommendations exchange without the platform (reference)', endpoint: 'POST /v1/recommendations {history}, fixed answer', model: '—', server: 'exchange' }
}

/** By history, by userId and similar items, for one model version. */
function modelTargets(w: Workload, datasetId: string, m: { name: string; modelVersionId: string }, k: number): Target[] {
  const json = { 'content-type': 'application/json' }
  const name = m.name
  {
    const historyBodies = w.histories.map((history) => JSON.stringify({ modelId: m.modelVersionId, datasetId, history, k }))
    const userBodies = w.userIds.map((userId) => JSON.stringify({ modelId: m.modelVersionId, datasetId, userId, k }))
    const similarPaths = w.similarItemIds.map((id) => `/v1/items/${encodeURIComponent(id)}/similar?modelId=${m.modelVersionId}&datasetId=${datasetId}&k=${k}`)
    const post = (bodies: string[]): Pick<Target, 'request' | 'probe'> => ({
      request: () => {
        const next = rotating(bodies)
        return { method: 'POST', path: '/v1/recommendations', headers: json, body: bodies[0], setupRequest: (req) => ({ ...req, body: next() }) }
      },
      probe: () => ({ method: 'POST', path: '/v1/recommendations', body: bodies[0] }),
    })
    return [
      { label: `${name}: history of 10 items`, endpoint: 'POST /v1/recommendations {history}', model: name, server: 'api', ...post(historyBodies) },
      { label: `${name}: by userId`, endpoint: 'POST /v1/recommendations {userId}', model: name, server: 'api', ...post(userBodies) },
      {
        label: `${name}: similar items`,
        server: 'api',
        endpoint: 'GET /v1/items/:id/similar',
        model: name,
        request: () => {
          const next = rotating(similarPaths)
          return { method: 'GET', path: similarPaths[0], setupRequest: (req) => ({ ...req, path: next() }) }
        },
        probe: () => ({ method: 'GET', path: similarPaths[0] }),
      },
    ]
  }
}

interface CatalogueHttpResult {
  items: number
  modelVersionId: string
  seconds: {
    /** importDataset of the synthetic items and users, straight through @iisan/storage */
    import: number
    /** the matrix generated and the version stored */
    version: number
    /** activation (through the API) until every replica answered quickly: loaded from PostgreSQL */
    ready: number
    /** activation until every replica's approximate index was built (null: below APPROXIMATE_INDEX_FROM, exact) */
    indexReady: number | null
  }
  /** the API's processes together, before the activation and after the runs */
  apiRssMb: { before: number | null; after: number | null; perReplicaAfter: (number | null)[]; perReplicaOwnAfter: (number | null)[] }
  rows: LoadRow[]
}

/**
 * A synthetic catalogue of N items served by the running services: stored as a trained version
 * is, activated through the API, then loaded over HTTP. "Ready" is when 20 requests in a row were
 * answered in under 250 ms: the replicas load the version and build its index on first use.
 */
async function measureHttpCatalogue(dbUrl: string, base: string, apiPid: number | undefined, N: number): Promise<CatalogueHttpResult> {
  const prisma = createPrisma(dbUrl)
  try {
    progress(`catalogue over HTTP, ${N.toLocaleString('en-US')} items: importing the items and 2,000 users, storing a version`)
    const v = await createCatalogueVersion(prisma, N, 64, 10)
    progress(`  imported in ${v.seconds.import.toFixed(0)} s, version ${v.modelVersionId} stored in ${v.seconds.version.toFixed(0)} s`)
    const { pids, rssMb: treeRss } = apiTree(apiPid)
    const before = treeRss()
    const t0 = performance.now()
    await must(base, 'POST', `/v1/model-versions/${v.modelVersionId}/activate`)
    const random = mulberry32(99)
    const pick = <T>(values: T[]): T => values[Math.floor(random() * values.length)]!
    const w: Workload = {
      histories: Array.from({ length: 500 }, () => Array.from({ length: 10 }, () => pick(v.itemExternalIds))),
      userIds: v.userIds,
      similarItemIds: Array.from({ length: 500 }, () => pick(v.itemExternalIds)),
    }
    for (let quick = 0; quick < 20; ) {
      if ((performance.now() - t0) / 1000 > 1800) throw new Error(`the ${N}-item version was not served quickly 30 minutes after its activation`)
      const asked = performance.now()
      const res = await api(base, 'POST', '/v1/recommendations', { modelId: v.modelVersionId, datasetId: v.datasetId, history: pick(w.histories), k: options.k }, 1_800_000)
      if (res.status !== 200) throw new Error(`the ${N}-item version answered ${res.status}: ${JSON.stringify(res.body).slice(0, 300)}`)
      quick = performance.now() - asked < 250 ? quick + 1 : 0
    }
    const ready = (performance.now() - t0) / 1000
    progress(`  served by every replica ${ready.toFixed(0)} s after its activation`)
    // at APPROXIMATE_INDEX_FROM items and more, each replica builds the index beside serving (exact meanwhile): the runs wait for it
    const replicas = Math.max(1, pids.length - 1)
    const indexed = async () => {
      const text = await fetch(`${base}/metrics`).then((r) => r.text(), () => '')
      return Number(/^iisan_serving_indexed_models(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? 0)
    }
    let indexReady: number | null = null
    if (N >= ANN_MIN_ITEMS) {
      while ((await indexed()) < replicas) {
        if ((performance.now() - t0) / 1000 > 3600) throw new Error(`the ${N}-item version's index was not ready in every replica an hour after its activation`)
        await sleep(2000)
      }
      indexReady = (performance.now() - t0) / 1000
      progress(`  its index ready in ${replicas} replicas ${indexReady.toFixed(0)} s after its activation`)
    }
    const rows: LoadRow[] = []
    for (const target of modelTargets(w, v.datasetId, { name: `${N.toLocaleString('en-US')} items`, modelVersionId: v.modelVersionId }, options.k)) {
      progress(`load: ${target.label}`)
      const row = await runLoad(base, target, apiPid, options.duration, options.connections, options.k)
      rows.push(row)
      progress(`  ${fmt(row.requestsPerSecond, 0)} req/s, p50 ${fmt(row.latencyMs.p50)} ms, p99 ${fmt(row.latencyMs.p99)} ms, non-2xx ${row.non2xx}`)
    }
    return {
      items: N,
      modelVersionId: v.modelVersionId,
      seconds: { ...v.seconds, ready, indexReady },
      apiRssMb: { before, after: treeRss(), perReplicaAfter: pids.slice(1).map((pid) => rssMb(pid)), perReplicaOwnAfter: pids.slice(1).map((pid) => rssMb(pid, 'RssAnon')) },
      rows,
    }
  } finally {
    await prisma.$disconnect()
  }
}

interface LoadRow {
  label: string
  endpoint: string
  model: string
  server: Server
  url: string
  connections: number
  durationSeconds: number
  /** total 2xx+non-2xx responses / duration (measured) */
  requestsPerSecond: number
  /** median of autocannon's per-second samples (measured) */
  requestsPerSecondMedian: number
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number }
  responses: number
  non2xx: number
  errors: number
  timeouts: number
  statusCodes: Record<string, number>
  /** the probe request sent before the run: status and number of items in the answer */
  probe: { status: number; items: number | null; error?: string }
  /** the process answering (API or hello-world): RSS before the run and its peak during it (measured) */
  /** the server's processes together (an API primary and its replicas), and the largest replica's peak */
  serverRssMb: { before: number | null; peak: number | null; processes: number; perReplicaPeak: number | null }
  /** CPU time (user + system) per response during the run, from /proc: the server's processes, PostgreSQL's, and this process's (autocannon) (measured) */
  cpuMicrosecondsPerRequest: { server: number | null; postgres: number | null; loadGenerator: number | null }
  loadAverageBefore: number[]
}

async function runLoad(base: string, target: Target, serverPid: number | undefined, duration: number, connections: number, k: number): Promise<LoadRow> {
  const p = target.probe()
  const probeRes = await api(base, p.method, p.path, p.body ? JSON.parse(p.body) : undefined, 60_000).catch((e: Error) => ({ status: 0, body: { error: e.message } as Json }))
  const items = Array.isArray(probeRes.body.items) ? probeRes.body.items.length : null
  const probe = { status: probeRes.status, items, ...(probeRes.status >= 300 || probeRes.status === 0 ? { error: JSON.stringify(probeRes.body).slice(0, 400) } : {}) }
  if (probe.error) progress(`  !!! probe of ${target.label} answered ${probe.status}: ${probe.error}`)
  else if (items !== null && items !== k) progress(`  !!! probe of ${target.label} returned ${items} items, expected ${k}`)
  // warm-up: 2 s at the same concurrency, not recorded
  await autocannon({ url: base, connections, duration: 2, requests: [target.request()] })
  const loadAverageBefore = loadAverage()
  // the API is a cluster primary and its replicas (API_REPLICAS): all of them, read once per row
  const { pids, rssMb: treeRss } = apiTree(serverPid)
  const before = treeRss()
  let peak = before
  const sampler = setInterval(() => {
    const r = treeRss()
    if (r !== null && (peak === null || r > peak)) peak = r
  }, 250)
  // CPU per request, of the server, of PostgreSQL and of autocannon (this process): what a
  // request costs whatever share of the two cores each got on a shared machine
  const cpuBefore = { server: cpuSeconds(pids), postgres: cpuSeconds(postgresPids()), bench: process.cpuUsage() }
  let result: Result
  try {
    result = await autocannon({ url: base, connections, duration, timeout: 30, requests: [target.request()] })
  } finally {
    clearInterval(sampler)
  }
  const benchCpu = process.cpuUsage(cpuBefore.bench)
  const cpuUsed = {
    server: pids.length ? cpuBetween(cpuBefore.server, cpuSeconds(pids)) : null,
    postgres: cpuBetween(cpuBefore.postgres, cpuSeconds(postgresPids())),
    loadGenerator: (benchCpu.user + benchCpu.system) / 1e6,
  }
  const statusCodes = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, s]) => [code, s.count]))
  const responses = Object.values(statusCodes).reduce((a, b) => a + b, 0)
  const seconds = (result.finish.getTime() - result.start.getTime()) / 1000 || duration
  return {
    label: target.label,
    endpoint: target.endpoint,
    model: target.model,
    server: target.server,
    url: base,
    connections,
    durationSeconds: seconds,
    requestsPerSecond: responses / seconds,
    requestsPerSecondMedian: result.requests.p50,
    latencyMs: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max, mean: result.latency.mean },
    responses,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    probe,
    serverRssMb: { before, peak, processes: pids.length, perReplicaPeak: pids.length > 1 ? Math.max(...pids.slice(1).map((pid) => rssMb(pid, 'VmHWM') ?? 0)) : peak },
    cpuMicrosecondsPerRequest: Object.fromEntries(Object.entries(cpuUsed).map(([who, seconds]) => [who, seconds === null || !responses ? null : (seconds * 1e6) / responses])) as LoadRow['cpuMicrosecondsPerRequest'],
    loadAverageBefore,
  }
}

// ---------------------------------------------------------------------------------------------
// tables

function printTable(title: string, rows: Record<string, unknown>[]): void {
  console.log(`\n${title}`)
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))]
  const cell = (v: unknown) => (v === undefined || v === null ? '' : String(v))
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  const line = (values: string[]) => '  ' + values.map((v, i) => v.padEnd(widths[i])).join('  ')
  console.log(line(columns))
  console.log(line(widths.map((w) => '-'.repeat(w))))
  for (const r of rows) console.log(line(columns.map((c) => cell(r[c]))))
}

function markdown(rows: Record<string, unknown>[]): string {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))]
  const cell = (v: unknown) => (v === undefined || v === null ? '' : String(v).replace(/\|/g, '\\|'))
  return [`| ${columns.join(' | ')} |`, `| ${columns.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${columns.map((c) => cell(r[c])).join(' | ')} |`)].join('\n')
}

const fmt = (n: number | null | undefined, digits = 1) => (n === null || n === undefined || Number.isNaN(n) ? '—' : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }))

function cpuCell(r: LoadRow): string {
  const { server, postgres, loadGenerator } = r.cpuMicrosecondsPerRequest
  return [server, postgres, loadGenerator].map((us) => fmt(us, 0)).join(' / ')
}

function loadTableRows(rows: LoadRow[]): Record<string, unknown>[] {
  const hello = rows.find((r) => r.server === 'hello')?.requestsPerSecond
  return rows.map((r) => ({
    endpoint: r.label,
    'req/s': fmt(r.requestsPerSecond, 0),
    '× hello-world': hello ? fmt(r.requestsPerSecond / hello, 2) : '—',
    'p50 ms': fmt(r.latencyMs.p50, 1),
    'p99 ms': fmt(r.latencyMs.p99, 1),
    'CPU µs/req: server / PostgreSQL / autocannon': cpuCell(r),
    'non-2xx': r.non2xx || r.errors || r.timeouts ? `**${r.non2xx}** ⚠ NON-2XX${r.errors ? ` + ${r.errors} errors` : ''}${r.timeouts ? ` + ${r.timeouts} timeouts` : ''}` : '0',
    'server RSS peak (all processes)': r.serverRssMb.peak === null ? '—' : `${fmt(r.serverRssMb.peak, 0)} MB`,
    'per replica': r.serverRssMb.perReplicaPeak === null ? '—' : `${fmt(r.serverRssMb.perReplicaPeak, 0)} MB`,
  }))
}

function catalogueHttpTableRows(runs: CatalogueHttpResult[]): Record<string, unknown>[] {
  return runs.flatMap((c) =>
    c.rows.map((r) => ({
      items: c.items.toLocaleString('en-US'),
      endpoint: r.label,
      'req/s': fmt(r.requestsPerSecond, 0),
      'p50 ms': fmt(r.latencyMs.p50),
      'p99 ms': fmt(r.latencyMs.p99),
      'CPU µs/req: server / PostgreSQL / autocannon': cpuCell(r),
      non2xx: r.non2xx,
      'loaded / indexed after activation': `${fmt(c.seconds.ready, 0)} s / ${c.seconds.indexReady === null ? 'exact' : `${fmt(c.seconds.indexReady, 0)} s`}`,
      'RSS per replica (its own)': c.apiRssMb.perReplicaAfter.map((mb, i) => `${fmt(mb, 0)} MB (${fmt(c.apiRssMb.perReplicaOwnAfter[i] ?? null, 0)})`).join(', ') || '—',
    })),
  )
}

function catalogueTableRows(rows: CatalogueSizeResult[]): Record<string, unknown>[] {
  return rows.map((r) => ({
    scorer: r.scorer,
    items: r.items.toLocaleString('en-US'),
    batch: r.batch,
    'req/s (1 core)': fmt(r.requestsPerSecond, 1),
    'recall@k': fmt(r.recallAtK, 3),
    'build s': fmt(r.buildSeconds, 1),
    'p50 ms': fmt(r.latencyMs.p50, 2),
    'p99 ms': fmt(r.latencyMs.p99, 2),
    'user encoder ms / req': fmt(r.userEncoderMsMedian, 3),
    'top-k ms / req': fmt(r.topKMsMedian, 3),
    'matrix MB': fmt(r.matrixMb, 1),
    'RSS after build': `${fmt(r.rssAfterBuildMb, 0)} MB`,
    'RSS peak': `${fmt(r.rssPeakMb, 0)} MB`,
  }))
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const suffix = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`
  const server0 = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
  const dbUrl = withDatabase(server0, `iisan_bench_serve_${suffix}`)
  const prefix = `iisan_bench_serve_${suffix}`
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-bench-serve-'))
  const startedAt = new Date()
  const machineInfo = machine()
  const loadAverageAtStart = loadAverage()
  progress(`bench:serve${options.quick ? ' --quick' : ''}: ${machineInfo.cpu}, ${machineInfo.cores} cores, node ${machineInfo.node}, commit ${machineInfo.gitCommit.slice(0, 10)}, load ${loadAverageAtStart.join(' ')}`)

  let dropped = false
  const redis = createRedisConnection(redisUrl)
  const cleanup = async () => {
    await Promise.all(children.map((c) => stopChild(c)))
    await deleteKeysWithPrefix(redis, prefix)
    await redis.quit().catch(() => undefined)
    if (!dropped) {
      dropped = true
      await dropDatabase(dbUrl).catch((e: Error) => progress(`could not drop ${dbUrl}: ${e.message}`))
    }
    fs.rmSync(tmp, { recursive: true, force: true })
  }
  const onSignal = (signal: string) => {
    if (interrupted) return
    interrupted = true
    progress(`${signal}: stopping the services, dropping the database`)
    void cleanup().finally(() => process.exit(130))
  }
  process.on('SIGINT', () => onSignal('SIGINT'))
  process.on('SIGTERM', () => onSignal('SIGTERM'))
  // last resort: nothing of ours keeps running after this process
  process.once('exit', () => children.forEach((c) => alive(c.child) && c.child.kill('SIGKILL')))

  try {
    // 1. database, services
    loadConfig({ DATABASE_URL: dbUrl, REDIS_URL: redisUrl, QUEUE_PREFIX: prefix }) // the services' own validation, before anything starts
    await ensureDatabaseExists(dbUrl)
    const applied = await applyMigrations(dbUrl, path.join(REPO, 'prisma/migrations'))
    progress(`database ${dbUrl.replace(/\/\/[^@]*@/, '//')} created, ${applied.length} migrations applied; queue prefix ${prefix}`)
    const [apiPort, cachePort, workerPort, helloPort, exchangePort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()]
    const env = {
      ...baseEnv(),
      DATABASE_URL: dbUrl,
      REDIS_URL: redisUrl,
      QUEUE_PREFIX: prefix,
      PORT: String(apiPort),
      HOST: '127.0.0.1',
      EMBEDDING_CACHE_PORT: String(cachePort),
      EMBEDDING_CACHE_HOST: '127.0.0.1',
      WORKER_HEALTH_PORT: String(workerPort),
      LOG_LEVEL: 'warn',
      // the demo backbones are generated here on first use (deterministic); the repository's artifacts/ is left alone
      ARTIFACTS_DIR: path.join(tmp, 'artifacts'),
      // a folder of this run's own: the replicas share what they build (one builds, the others
      // load), but nothing a previous run saved for the same synthetic rows is loaded in its place
      ITEM_INDEX_DIR: path.join(tmp, 'item-index'),
    }
    const services = startChild('scripts/start-all.ts', ['scripts/start-all.ts'], env, path.join(tmp, 'services.log'))
    const hello = startChild('hello-world', ['bench/lib/hello-server.ts'], { ...baseEnv(), PORT: String(helloPort), HOST: '127.0.0.1' }, path.join(tmp, 'hello.log'))
    const base = `http://127.0.0.1:${apiPort}`
    const helloBase = `http://127.0.0.1:${helloPort}`
    await waitHealthy(`${base}/healthz`, services, 180_000)
    await waitHealthy(`http://127.0.0.1:${cachePort}/healthz`, services, 180_000)
    await waitHealthy(`http://127.0.0.1:${workerPort}/healthz`, services, 180_000)
    await waitHealthy(`${helloBase}/`, hello, 60_000)
    const apiPid = childPid(services.child.pid!, 'services/api/src/main.ts')
    progress(`services up (scripts/start-all.ts pid ${services.child.pid}, API pid ${apiPid ?? '?'} on ${apiPort}, cache ${cachePort}, worker health ${workerPort}); hello-world on ${helloPort}`)

    // 2. import
    const sample = sampleDataset(options.users === 0 ? Number.MAX_SAFE_INTEGER : options.users)
    let t0 = performance.now()
    const dataset = await must(base, 'POST', '/v1/datasets', { name: `bench-serve-scientific-${options.users || 'all'}`, itemsTsv: sample.itemsTsv, usersTsv: sample.usersTsv })
    const importSeconds = (performance.now() - t0) / 1000
    progress(`imported dataset ${dataset.id}: ${dataset.numUsers} users, ${dataset.numItems} items, ${dataset.numInteractions} interactions in ${importSeconds.toFixed(1)} s`)

    // 3. training: IISAN (caches the states first), then ID-SASRec
    const models: TrainingOutcome[] = []
    for (const method of ['iisan', 'sasrec-id']) {
      progress(`training ${method}, 1 epoch`)
      const outcome = await train(base, dataset.id, method)
      models.push(outcome)
      progress(
        `  ${method}: model version ${outcome.modelVersionId} in ${outcome.seconds.total.toFixed(0)} s (caching ${outcome.seconds.caching.toFixed(0)} s, training + evaluation ${outcome.seconds.training.toFixed(0)} s); test NDCG@10 ${outcome.modelVersion.testNdcg10?.toFixed(4)}`,
      )
    }
    // as the quick start does: the IISAN version is the dataset's active one (requests still name their version)
    await must(base, 'POST', `/v1/model-versions/${models[0].modelVersionId}/activate`)

    // 4. load
    const w = workload(sample.userLines)
    progress(`workload: ${w.histories.length} histories of 10 items, ${w.userIds.length} userIds, ${w.similarItemIds.length} items for similar; ${options.connections} connections, ${options.duration} s a row, k = ${options.k}`)
    const loadTargets = targets(w, dataset.id, models, options.k)
    // the exchange reference answers with what the API answered to the first of its bodies
    const exchangeProbe = loadTargets.find((t) => t.server === 'exchange')!.probe()
    const answerFile = path.join(tmp, 'exchange-answer.json')
    fs.writeFileSync(answerFile, JSON.stringify(await must(base, exchangeProbe.method, exchangeProbe.path, JSON.parse(exchangeProbe.body!))))
    const exchange = startChild('exchange', ['bench/lib/exchange-server.ts'], { ...baseEnv(), PORT: String(exchangePort), HOST: '127.0.0.1', ANSWER_FILE: answerFile }, path.join(tmp, 'exchange.log'))
    const servers: Record<Server, { base: string; pid: number | undefined }> = {
      api: { base, pid: apiPid },
      hello: { base: helloBase, pid: hello.child.pid },
      exchange: { base: `http://127.0.0.1:${exchangePort}`, pid: exchange.child.pid },
    }
    await waitHealthy(`${servers.exchange.base}/healthz`, exchange, 60_000)
    const loadRows: LoadRow[] = []
    for (const target of loadTargets) {
      progress(`load: ${target.label}`)
      const { base: targetBase, pid } = servers[target.server]
      const row = await runLoad(targetBase, target, pid, options.duration, options.connections, options.k)
      loadRows.push(row)
      const flagged = row.non2xx || row.errors || row.timeouts
      progress(
        `  ${fmt(row.requestsPerSecond, 0)} req/s, p50 ${fmt(row.latencyMs.p50)} ms, p99 ${fmt(row.latencyMs.p99)} ms, non-2xx ${row.non2xx}${flagged ? `   !!! ${row.non2xx} NON-2XX, ${row.errors} errors, ${row.timeouts} timeouts: ${JSON.stringify(row.statusCodes)}` : ''}`,
      )
    }
    const replicaPids = apiPid ? childPids(apiPid) : []
    const apiRssEnd = { rss: rssMb(apiPid), peak: rssMb(apiPid, 'VmHWM'), replicas: replicaPids.map((pid) => ({ pid, rssMb: rssMb(pid), peakMb: rssMb(pid, 'VmHWM') })) }

    // 4b. HTTP at catalogue scale, on the same services
    const catalogueHttp: CatalogueHttpResult[] = []
    for (const N of options.httpSizes) catalogueHttp.push(await measureHttpCatalogue(dbUrl, base, apiPid, N))

    // the platform's part is over: stop it before the catalogue runs, so they have the cores
    await Promise.all(children.map((c) => stopChild(c)))

    // 5. catalogue scale
    let catalogue: CatalogueSizeResult[] = []
    if (!options.skipCatalogue) {
      catalogue = await measureCatalogueScale({ sizes: options.sizes, D: 64, k: options.k, seconds: options.catalogueSeconds, minRequests: 50, scorers: options.scorers, onProgress: progress })
    }
    const loadAverageAtEnd = loadAverage()

    // 6. report
    const loadTable = loadTableRows(loadRows)
    const catalogueHttpTable = catalogueHttpTableRows(catalogueHttp)
    const catalogueTable = catalogueTableRows(catalogue)
    const flagged = [...loadRows, ...catalogueHttp.flatMap((c) => c.rows)].filter((r) => r.non2xx || r.errors || r.timeouts)
    const when = `${startedAt.toISOString().replace('T', ' ').slice(0, 16)} UTC`
    const header = `${machineInfo.cpu}, ${machineInfo.cores} cores (shared: load average ${loadAverageAtStart[0]} at the start, ${loadAverageAtEnd[0]} at the end), node ${machineInfo.node}, commit ${machineInfo.gitCommit.slice(0, 10)}, ${when}`
    const setupLine = `Dataset: ${dataset.numUsers} users, ${dataset.numItems} items (Scientific${options.users ? `, first ${options.users} users` : ', full'}); models trained 1 epoch (quality irrelevant), demo backbones; autocannon in the bench process, ${options.connections} connections, ${options.duration} s a row after a 2 s warm-up, k = ${options.k}.`
    console.log(`\nServing throughput — measured by \`npm run bench:serve${options.quick ? ' -- --quick' : ''}\`; ${header}`)
    console.log(setupLine)
    printTable('HTTP (measured)', loadTable)
    if (flagged.length) {
      console.log('\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!')
      for (const r of flagged) console.log(`!!! ${r.label}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts — status codes ${JSON.stringify(r.statusCodes)}; probe ${JSON.stringify(r.probe)}`)
      console.log('!!! rows above measured errors, not recommendations: their req/s and latencies are NOT serving figures')
      console.log('!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!')
    }
    if (catalogueHttp.length) printTable(`HTTP at catalogue scale (measured; synthetic items and matrix, random-weights user encoder, D = 64, ${options.connections} connections)`, catalogueHttpTable)
    if (catalogue.length) printTable(`Catalogue scale, in-process, one loop on one core (measured; synthetic matrix, random-weights user encoder, D = 64, T = 10, k = ${options.k})`, catalogueTable)
    console.log('\nMarkdown (to paste):\n')
    console.log(`Measured by \`npm run bench:serve${options.quick ? ' -- --quick' : ''}\` on ${header}. Shared machine: figures are noisy. ${setupLine}\n`)
    console.log(markdown(loadTable))
    if (catalogueHttp.length) console.log(`\nHTTP at catalogue scale (synthetic items and matrix, random-weights user encoder, D = 64; measured):\n\n${markdown(catalogueHttpTable)}`)
    if (catalogue.length) {
      console.log(`\nCatalogue scale (in process, one loop on one core; synthetic D = ${64} matrix, random-weights user encoder; measured; scorers: ${options.scorers.map((name) => `${name} = ${CATALOGUE_SCORERS[name].describe}`).join('; ')}):\n`)
      console.log(markdown(catalogueTable))
    }

    const report = {
      generatedAt: new Date().toISOString(),
      startedAt: startedAt.toISOString(),
      command: `npm run bench:serve${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
      note: 'every figure below is measured by this run on this machine (no reference figures); the machine is shared with other work, so the figures are noisy — see loadAverage',
      machine: { ...machineInfo, loadAverage: { start: loadAverageAtStart, end: loadAverageAtEnd } },
      settings: { quick: options.quick, connections: options.connections, durationSeconds: options.duration, warmupSeconds: 2, k: options.k, users: options.users || 'all', loadGenerator: 'autocannon 9.0.0, in the bench process (shares the cores with the services)' },
      setup: {
        dataset: { id: dataset.id, users: dataset.numUsers, items: dataset.numItems, interactions: dataset.numInteractions, importSeconds },
        backbones: process.env.TEXT_BACKBONE || process.env.IMAGE_BACKBONE ? { text: process.env.TEXT_BACKBONE ?? null, image: process.env.IMAGE_BACKBONE ?? null } : 'demo pair (embedded, random weights)',
        training: models,
        workload: { histories: w.histories.length, userIds: w.userIds.length, similarItems: w.similarItemIds.length },
        apiProcess: { pid: apiPid ?? null, rssMbAtEnd: apiRssEnd.rss, rssPeakMb: apiRssEnd.peak, replicas: apiRssEnd.replicas },
      },
      http: loadRows.map((r) => ({ ...r, source: 'measured', flagged: Boolean(r.non2xx || r.errors || r.timeouts) })),
      catalogueHttp: {
        source: 'measured',
        description: 'a dataset of N synthetic items and 2,000 users of 10 random items, imported through @iisan/storage; a version over a synthetic matrix (bench/lib/synthetic-catalogue.ts) and a random-weights user encoder, stored as a trained one is and activated through the API; every replica loads it and builds its index (APPROXIMATE_INDEX_FROM) on first use; then the three requests over HTTP',
        runs: catalogueHttp,
      },
      catalogueScale: {
        source: 'measured',
        description: 'synthetic [N+1, D] float32 matrix shaped like trained embeddings (bench/lib/synthetic-catalogue.ts: 256 clustered directions, log-normal norms), random-weights SASRec user encoder restored through ServingModel.load; a request = 10 random history items, top-k excluding them; one child process per scorer and size, one loop (one core); a batch of requests is answered together and each of its requests waits for all of it',
        scorers: Object.fromEntries(options.scorers.map((name) => [name, CATALOGUE_SCORERS[name].describe])),
        rows: catalogue,
      },
      markdown: { http: markdown(loadTable), catalogueHttp: catalogueHttp.length ? markdown(catalogueHttpTable) : null, catalogue: catalogue.length ? markdown(catalogueTable) : null },
    }
    fs.mkdirSync(path.dirname(options.out), { recursive: true })
    fs.writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`)
    progress(`wrote ${path.relative(process.cwd(), options.out)}`)
    if (flagged.length) process.exitCode = 1
  } finally {
    if (!interrupted) await cleanup()
  }
}

main().catch((err: unknown) => {
  if (interrupted) return
  const tail = children.map((c) => `--- ${c.name} (last output) ---\n${c.log().slice(-2500)}`).join('\n')
  console.error(tail)
  fail(err instanceof Error ? err.message : String(err))
})
