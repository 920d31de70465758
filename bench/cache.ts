// Embedding-cache throughput and storage: caches N Scientific titles (plus K synthetic images)
// with the configured backbones (default: the demo pair) through the real service path — HTTP
// POST /v1/cache-builds → BullMQ chunks → in-process worker → float16 rows in Postgres — then
// measures a re-run and a second dataset with the same items (cache hits), the binary bulk
// stream, and the bytes per item Postgres actually uses (pg_column_size). A storage-only row
// projects base-size models (13 × 768 float16 per item) with synthetic N(0, 1) values.
// Uses a throwaway database and Redis prefix; prints a table; writes bench/results/cache.json.
//   npx tsx bench/cache.ts [--items 2000] [--images 256] [--chunk 64] [--group 16] [--encoders 1,2 [--runs 3] [--base]]
// --encoders instead times cold builds of the dataset with each number of encoder threads
// (CACHE_ENCODERS), `--runs` times each, alternating, the states deleted before every build, and
// writes the medians to bench/results/cache-encoders.json (cache-encoders-base.json with --base:
// random-weight backbones of bert-base / vit-base shape, as bench/backbones.ts times, instead of
// the demo pair; the image backbone only when --images > 0).
// Bad arguments or a failed run print one `error: …` line and exit 1.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { randomBytes } from 'node:crypto'
import sharp from 'sharp'
import { createLogger, dropDatabase, ensureDatabaseExists, loadConfig, withDatabase } from '@iisan/config'
import { initBackend } from '@iisan/model/backend'
import { createRedisConnection } from '@iisan/queue'
import { bertHfConfig, demoVocabText, vitHfConfig, writeRandomBert, writeRandomVit } from '@iisan/backbones/default'
import { applyMigrations, importDataset, saveHiddenStates, type ImportItemInput, type PrismaClient } from '@iisan/storage'
import {
  StateStreamDecoder,
  encodeFloat16LE,
  fetchDatasetStates,
  openDatasetStateStream,
  type CacheBuildsResponse,
  type CacheBuildView,
} from '@iisan/embedding-cache'
import { createCacheServer } from '../services/embedding-cache/src/server.ts'
import { fail, deleteKeysWithPrefix } from './lib/cli.ts'
import { loadAverage, machine, machineLine } from './lib/machine.ts'
import { median } from './lib/stats.ts'

const USAGE = 'usage: npx tsx bench/cache.ts [--items N] [--images N] [--chunk N] [--group N] [--encoders N,N… [--runs N] [--base]]'

function parseOptions(): { items: number; images: number; chunk: number; group: number; encoders: number[]; runs: number; base: boolean } {
  let values: Record<string, string | boolean | undefined>
  try {
    ;({ values } = parseArgs({
      options: {
        items: { type: 'string', default: '2000' },
        images: { type: 'string', default: '256' },
        chunk: { type: 'string', default: '64' },
        group: { type: 'string', default: '16' },
        encoders: { type: 'string', default: '' },
        runs: { type: 'string', default: '3' },
        base: { type: 'boolean', default: false },
      },
    }))
  } catch (err) {
    fail(`${(err as Error).message} (${USAGE})`)
  }
  const int = (name: string, min: number): number => {
    const raw = String(values[name] ?? '').trim()
    const n = Number(raw)
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min) {
      fail(`--${name} must be ${min > 0 ? 'a positive' : 'a non-negative'} integer (got ${JSON.stringify(values[name])})`)
    }
    return n
  }
  const encoders = String(values.encoders ?? '').split(',').map((v) => v.trim()).filter(Boolean)
  if (encoders.some((v) => !/^\d+$/.test(v) || Number(v) < 1)) fail(`--encoders must be positive integers separated by commas (got ${JSON.stringify(values.encoders)})`)
  return { items: int('items', 1), images: int('images', 0), chunk: int('chunk', 1), group: int('group', 1), encoders: encoders.map(Number), runs: int('runs', 1), base: values.base === true }
}

const options = parseOptions()
const N = options.items
const K = Math.min(options.images, N)
const CHUNK = options.chunk
const GROUP = options.group
const repo = path.resolve(import.meta.dirname, '..')

function scientificTitles(n: number): string[] {
  const file = path.resolve(repo, 'data/scientific/items.tsv')
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)
  if (lines.length < n) throw new Error(`${file} has ${lines.length} items, asked for ${n}`)
  return lines.slice(0, n).map((l) => l.split('\t')[1] ?? '')
}

async function syntheticJpeg(i: number): Promise<Buffer> {
  const w = 96
  const h = 72
  const raw = Buffer.alloc(w * h * 3)
  for (let p = 0; p < raw.length; p++) raw[p] = ((p % (w * 3)) * ((i % 13) + 1) + Math.floor(p / (w * 3)) * ((i % 7) + 2) + Math.floor(i / 91) * 37) & 255
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 85 }).toBuffer()
}

async function post(url: string, body: unknown): Promise<CacheBuildsResponse> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (res.status !== 202) throw new Error(`POST ${url}: ${res.status} ${await res.text()}`)
  return (await res.json()) as CacheBuildsResponse
}

async function waitBuilds(base: string, ids: string[]): Promise<CacheBuildView[]> {
  for (;;) {
    const views = await Promise.all(ids.map(async (id) => (await (await fetch(`${base}/v1/cache-builds/${id}`)).json()) as CacheBuildView))
    const failed = views.find((v) => v.status === 'failed')
    if (failed) throw new Error(`build ${failed.id} failed: ${failed.error}`)
    if (views.every((v) => v.status === 'completed')) return views
    const done = views.reduce((s, v) => s + v.itemsDone + v.itemsFailed, 0)
    const total = views.reduce((s, v) => s + v.itemsTotal, 0)
    process.stderr.write(`\r  ${done}/${total} items cached`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

interface StorageRow {
  modality: string
  rows: number
  rawBytesPerItem: number
  dataBytesPerItem: number
  rowBytesPerItem: number
  tableBytesPerItem: number
}

async function storage(prisma: PrismaClient, backboneIds: number[]): Promise<StorageRow[]> {
  const out: StorageRow[] = []
  for (const id of backboneIds) {
    const [r] = await prisma.$queryRaw<{ modality: string; rows: number; raw: number; data: number; row: number }[]>`
      SELECT b.modality, count(*)::int AS rows, avg(octet_length(hs.data))::float8 AS raw,
             avg(pg_column_size(hs.data))::float8 AS data, avg(pg_column_size(hs.*))::float8 AS row
      FROM hidden_states hs JOIN backbones b ON b.id = hs.backbone_id
      WHERE hs.backbone_id = ${id} AND hs.error IS NULL GROUP BY b.modality`
    out.push({ modality: r.modality, rows: r.rows, rawBytesPerItem: r.raw, dataBytesPerItem: r.data, rowBytesPerItem: r.row, tableBytesPerItem: NaN })
  }
  return out
}

/** Box–Muller N(0, 1) values (storage-only projection for base-size models). */
function normal(n: number): Float32Array {
  const out = new Float32Array(n)
  for (let i = 0; i < n; i += 2) {
    const u = Math.random() || 1e-12
    const v = Math.random()
    const r = Math.sqrt(-2 * Math.log(u))
    out[i] = r * Math.cos(2 * Math.PI * v)
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v)
  }
  return out
}


/**
 * Cold builds of the same dataset with each number of encoder threads, `--runs` times each (the
 * order alternating from run to run, so a drift in the machine's load hits every setting alike),
 * every state of the backbones deleted before each build. The build's own progress (items/s of its
 * view) is what is compared; the wall time of POST → completed is recorded beside it.
 */
async function compareEncoders(config: ReturnType<typeof loadConfig>, logger: ReturnType<typeof createLogger>, backend: string, items: ImportItemInput[]): Promise<void> {
  const runs: { run: number; encoders: number; wallSeconds: number; coresUsed: number; builds: { modality: string; items: number; itemsPerSecond: number | null; buildSeconds: number | null }[] }[] = []
  let datasetId: string | undefined
  let backboneNames: string[] = []
  for (let run = 0; run < options.runs; run++) {
    const order = run % 2 ? [...options.encoders].reverse() : options.encoders
    for (const encoders of order) {
      const server = await createCacheServer(config, logger, { chunkSize: CHUNK, groupSize: GROUP, encoders })
      try {
        await server.app.listen({ port: 0, host: '127.0.0.1' })
        const base = `http://127.0.0.1:${(server.app.server.address() as { port: number }).port}`
        const backbones = server.registry.list()
        backboneNames = backbones.map((b) => `${b.name} (${b.modality}, L${b.numLayers} d${b.width}, ${b.model.runtime})`)
        datasetId ??= (await importDataset(server.prisma, { name: `scientific-${N}-encoders`, items, users: [] })).id
        await server.prisma.hiddenState.deleteMany({ where: { backboneId: { in: backbones.map((b) => b.id) } } })
        const t0 = performance.now()
        const cpu0 = process.cpuUsage()
        const planned = await post(`${base}/v1/cache-builds`, { datasetId })
        const views = await waitBuilds(base, planned.builds.map((b) => b.id))
        const wallSeconds = (performance.now() - t0) / 1000
        // CPU time of this process (service thread + encoder threads) per wall second: how many
        // cores the build actually got on a shared machine
        const cpu = process.cpuUsage(cpu0)
        const coresUsed = (cpu.user + cpu.system) / 1e6 / wallSeconds
        process.stderr.write('\n')
        runs.push({
          run,
          encoders: server.encoders?.size ?? 1,
          wallSeconds,
          coresUsed,
          builds: views.filter((v) => v.itemsTotal > 0).map((v) => ({
            modality: v.modality,
            items: v.itemsEncoded,
            itemsPerSecond: v.itemsPerSecond,
            buildSeconds: v.startedAt && v.finishedAt ? (Date.parse(v.finishedAt) - Date.parse(v.startedAt)) / 1000 : null,
          })),
        })
        console.log(`run ${run + 1}/${options.runs}, ${encoders} encoder(s): ${views.filter((v) => v.itemsTotal > 0).map((v) => `${v.modality} ${v.itemsPerSecond?.toFixed(1)} items/s`).join(', ')}; wall ${wallSeconds.toFixed(2)} s, ${coresUsed.toFixed(2)} cores busy`)
      } finally {
        await server.close()
      }
    }
  }
  const summary = options.encoders.map((encoders) => {
    const mine = runs.filter((r) => r.encoders === encoders)
    const modalities = [...new Set(mine.flatMap((r) => r.builds.map((b) => b.modality)))]
    return {
      encoders,
      runs: mine.length,
      medianWallSeconds: median(mine.map((r) => r.wallSeconds)),
      medianCoresUsed: median(mine.map((r) => r.coresUsed)),
      /** items per CPU second of the whole process: equal across settings = no parallel overhead */
      medianItemsPerCpuSecond: median(mine.map((r) => r.builds.reduce((sum, b) => sum + b.items, 0) / (r.coresUsed * r.wallSeconds))),
      medianWallItemsPerSecond: median(mine.map((r) => r.builds.reduce((s, b) => s + b.items, 0) / r.wallSeconds)),
      builds: modalities.map((modality) => ({
        modality,
        medianItemsPerSecond: median(mine.map((r) => r.builds.find((b) => b.modality === modality)?.itemsPerSecond ?? NaN)),
      })),
    }
  })
  const one = summary.find((s) => s.encoders === 1)
  console.table(
    summary.flatMap((s) =>
      s.builds.map((b) => ({
        encoders: s.encoders,
        modality: b.modality,
        'median items/s (build progress)': b.medianItemsPerSecond.toFixed(1),
        'vs 1 encoder': one ? `${(b.medianItemsPerSecond / one.builds.find((x) => x.modality === b.modality)!.medianItemsPerSecond).toFixed(2)}×` : '',
        'median wall s (all builds)': s.medianWallSeconds.toFixed(2),
        'cores busy (CPU s / wall s)': s.medianCoresUsed.toFixed(2),
        'items / CPU s': s.medianItemsPerCpuSecond.toFixed(2),
      })),
    ),
  )
  const out = path.join(repo, `bench/results/cache-encoders${options.base ? '-base' : ''}.json`)
  fs.writeFileSync(
    out,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        command: `npx tsx bench/cache.ts ${process.argv.slice(2).join(' ')}`.trim(),
        backend,
        node: process.version,
        machine: { ...machine(), loadAverageAtEnd: loadAverage() },
        items: N,
        images: K,
        chunkSize: CHUNK,
        groupSize: GROUP,
        backbones: backboneNames,
        note: 'cold builds of the same dataset through the service (HTTP → BullMQ chunks → encoders → Postgres), states deleted before each; items/s is the build view\'s itemsPerSecond (itemsEncoded / (finishedAt − startedAt)); settings alternate in order from run to run; coresUsed = CPU seconds of the bench process (service thread + encoder threads) / wall seconds of the build, i.e. how many cores it actually got on this shared machine',
        summary,
        runs,
      },
      null,
      2,
    )}\n`,
  )
  console.log(`wrote ${path.relative(process.cwd(), out)}\n`)
}

async function main(): Promise<void> {
  const suffix = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`
  const server0 = process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
  const dbUrl = withDatabase(server0, `iisan_bench_cache_${suffix}`)
  const prefix = `iisan_bench_cache_${suffix}`
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-bench-cache-'))
  // an open cache on loopback: the benchmark calls it with plain fetch, whatever the shell exports
  const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: dbUrl, QUEUE_PREFIX: prefix, LOG_LEVEL: 'warn', ARTIFACTS_DIR: process.env.ARTIFACTS_DIR ?? tmp, INTERNAL_TOKEN: '', EMBEDDING_CACHE_HOST: '127.0.0.1' }
  if (options.base) {
    // base-size shapes with random weights (the forward pass costs the same as the real checkpoints')
    env.TEXT_BACKBONE_DIR = path.join(tmp, 'bert-base-random')
    writeRandomBert(env.TEXT_BACKBONE_DIR, bertHfConfig({}), demoVocabText(), 'bench-cache')
    env.IMAGE_BACKBONE_DIR = K > 0 ? path.join(tmp, 'vit-base-random') : 'none'
    if (K > 0) writeRandomVit(env.IMAGE_BACKBONE_DIR, vitHfConfig({}), 'bench-cache')
  }
  const config = loadConfig(env)
  await ensureDatabaseExists(dbUrl)
  const redis = createRedisConnection(config.redisUrl)
  let server: Awaited<ReturnType<typeof createCacheServer>> | undefined
  try {
    await applyMigrations(dbUrl, path.join(repo, 'prisma/migrations'))
    const backend = await initBackend({ prefer: config.tfBackend })
    const logger = createLogger('bench-cache', config, { pretty: false })
    const titles = scientificTitles(N)
    const items: ImportItemInput[] = []
    for (let i = 0; i < N; i++) items.push({ externalId: `S${i}`, title: titles[i], ...(i < K ? { imageBlob: await syntheticJpeg(i), imageMime: 'image/jpeg' } : {}) })
    if (options.encoders.length) return await compareEncoders(config, logger, backend, items)

    server = await createCacheServer(config, logger, { chunkSize: CHUNK, groupSize: GROUP })
    await server.app.listen({ port: 0, host: '127.0.0.1' })
    const base = `http://127.0.0.1:${(server.app.server.address() as { port: number }).port}`
    const prisma = server.prisma
    const backbones = server.registry.list()
    const encoders = server.encoders?.size ?? 1

    const ds = await importDataset(prisma, { name: `scientific-${N}`, items, users: [] })
    const distinctTitles = new Set(titles).size

    // 1. Cold: nothing cached.
    let t0 = performance.now()
    const cold = await post(`${base}/v1/cache-builds`, { datasetId: ds.id })
    const coldViews = await waitBuilds(base, cold.builds.map((b) => b.id))
    const coldSeconds = (performance.now() - t0) / 1000
    process.stderr.write('\n')

    // 2. Re-run, 3. a second dataset with the same items: cache hits only.
    const rowsBefore = await prisma.hiddenState.count()
    t0 = performance.now()
    const rerun = await post(`${base}/v1/cache-builds`, { datasetId: ds.id })
    await waitBuilds(base, rerun.builds.map((b) => b.id))
    const rerunSeconds = (performance.now() - t0) / 1000
    const copy = await importDataset(prisma, { name: `scientific-${N}-copy`, items: items.map((it) => ({ ...it, externalId: `copy-${it.externalId}` })), users: [] })
    t0 = performance.now()
    const second = await post(`${base}/v1/cache-builds`, { datasetId: copy.id })
    await waitBuilds(base, second.builds.map((b) => b.id))
    const secondSeconds = (performance.now() - t0) / 1000
    const rowsAdded = (await prisma.hiddenState.count()) - rowsBefore

    // 4. Bulk stream to a client (second, warm request).
    await fetchDatasetStates(base, ds.id, 'text')
    t0 = performance.now()
    const states = await fetchDatasetStates(base, ds.id, 'text')
    const streamSeconds = (performance.now() - t0) / 1000
    const streamBytes = states ? states.itemIds.length * (4 + (states.numLayers + 1) * states.width * 2) : 0

    // 5. Storage per item.
    const store = await storage(prisma, backbones.map((b) => b.id))
    const [{ tableBytes, rows }] = await prisma.$queryRaw<{ tableBytes: number; rows: number }[]>`
      SELECT pg_total_relation_size('hidden_states')::float8 AS "tableBytes", (SELECT count(*)::int FROM hidden_states) AS rows`
    for (const s of store) s.tableBytesPerItem = tableBytes / rows // whole table incl. TOAST + index, all rows
    // Projection: base-size states (13 × 768 float16), synthetic N(0, 1) values, storage only.
    const fake = await prisma.backbone.create({
      data: { fingerprint: `bench-synthetic-${suffix}`, modality: 'text', modelType: 'bert', name: 'synthetic base (13×768)', numLayers: 12, hiddenSize: 768, config: {}, location: 'synthetic' },
    })
    // Keyed by the dataset's first titles, so the same rows also measure the bulk stream at base size.
    const BASE_ROWS = Math.min(1000, N)
    const baseKeys = (await prisma.item.findMany({ where: { datasetId: ds.id }, orderBy: { id: 'asc' }, take: BASE_ROWS, select: { textHash: true } })).map((r) => r.textHash)
    const distinctKeys = [...new Set(baseKeys)]
    for (let i = 0; i < distinctKeys.length; i += 100) {
      await saveHiddenStates(
        prisma,
        fake.id,
        distinctKeys.slice(i, i + 100).map((contentHash) => ({ contentHash, dtype: 'f16' as const, layers: 13, dim: 768, data: encodeFloat16LE(normal(13 * 768)) })),
      )
    }
    const baseRef = { id: fake.id, fingerprint: fake.fingerprint, name: 'synthetic', modality: 'text' as const, numLayers: 12, width: 768 }
    let baseStream = { rows: 0, bytes: 0, seconds: 0 }
    for (let r = 0; r < 2; r++) {
      t0 = performance.now()
      const s = await openDatasetStateStream(prisma, ds.id, baseRef)
      const decoder = new StateStreamDecoder()
      for await (const chunk of s.stream) decoder.push(chunk as Buffer)
      const decoded = decoder.end()
      baseStream = { rows: decoded.itemIds.length, bytes: s.byteLength, seconds: (performance.now() - t0) / 1000 }
    }
    const [baseStore] = await storage(prisma, [fake.id])
    const [{ toast }] = await prisma.$queryRaw<{ toast: number }[]>`
      SELECT (pg_total_relation_size('hidden_states') - ${tableBytes})::float8 AS toast`
    baseStore.tableBytesPerItem = toast / baseStore.rows
    baseStore.modality = 'text (base-size projection)'

    const throughput = coldViews.map((v) => {
      const b = backbones.find((x) => x.id === v.backboneId)!
      return {
        backbone: `${b.name} (${v.modality}, L${b.numLayers} d${b.width})`,
        items: v.itemsTotal,
        encoded: v.itemsEncoded,
        buildSeconds: v.startedAt && v.finishedAt ? (Date.parse(v.finishedAt) - Date.parse(v.startedAt)) / 1000 : null,
        itemsPerSecond: v.itemsPerSecond,
      }
    })

    console.log(`\nembedding cache on tfjs ${backend} (${machineLine()}, node ${process.version})`)
    console.log(`${N} Scientific titles (${distinctTitles} distinct), ${K} with a synthetic 96×72 JPEG; chunk ${CHUNK}, group ${GROUP}, one service process, ${encoders} encoder${encoders > 1 ? ' threads' : ' (its own thread)'}\n`)
    console.table(
      throughput.map((t) => ({
        backbone: t.backbone,
        items: t.items,
        encoded: t.encoded,
        'build s': t.buildSeconds?.toFixed(2),
        'items/s': t.itemsPerSecond?.toFixed(1),
      })),
    )
    console.table({
      'cold build, both backbones (wall)': { seconds: coldSeconds.toFixed(2), note: `${((N + K) / coldSeconds).toFixed(1)} items/s incl. queue + HTTP polling` },
      're-run (same dataset)': { seconds: rerunSeconds.toFixed(3), note: 'nothing computed' },
      'second dataset, same items': { seconds: secondSeconds.toFixed(3), note: `rows added: ${rowsAdded}` },
      'bulk stream (text, HTTP → Float32Array)': { seconds: streamSeconds.toFixed(3), note: `${states?.itemIds.length ?? 0} rows, ${(streamBytes / 2 ** 20 / streamSeconds).toFixed(1)} MiB/s` },
      'bulk stream, base size (Postgres → decoder)': {
        seconds: baseStream.seconds.toFixed(3),
        note: `${baseStream.rows} rows × 13×768, ${(baseStream.bytes / 2 ** 20 / baseStream.seconds).toFixed(1)} MiB/s`,
      },
    })
    console.table(
      [...store, baseStore].map((s) => ({
        modality: s.modality,
        rows: s.rows,
        'raw f16 B/item': Math.round(s.rawBytesPerItem),
        'pg_column_size(data)': Math.round(s.dataBytesPerItem),
        'pg_column_size(row)': Math.round(s.rowBytesPerItem),
        'table incl. TOAST+index B/row': Math.round(s.tableBytesPerItem),
      })),
    )

    const out = path.join(repo, 'bench/results/cache.json')
    fs.mkdirSync(path.dirname(out), { recursive: true })
    fs.writeFileSync(
      out,
      `${JSON.stringify(
        {
          date: new Date().toISOString(),
          backend,
          node: process.version,
          machine: { ...machine(), loadAverageAtEnd: loadAverage() },
          items: N,
          distinctTitles,
          images: K,
          chunkSize: CHUNK,
          groupSize: GROUP,
          workers: 1,
          encoders,
          cold: { seconds: coldSeconds, builds: throughput },
          rerun: { seconds: rerunSeconds, encoded: rerun.builds.reduce((s, b) => s + b.itemsEncoded, 0) },
          secondDataset: { seconds: secondSeconds, encoded: second.builds.reduce((s, b) => s + b.itemsEncoded, 0), rowsAdded },
          stream: { modality: 'text', rows: states?.itemIds.length ?? 0, seconds: streamSeconds, bytes: streamBytes },
          streamBaseSize: { ...baseStream, note: 'synthetic 13×768 float16 rows, openDatasetStateStream → StateStreamDecoder in-process' },
          storage: store,
          baseSizeProjection: { note: 'synthetic N(0,1) values, 13×768 float16; tableBytesPerItem = growth of hidden_states incl. TOAST and index / rows', ...baseStore },
        },
        null,
        2,
      )}\n`,
    )
    console.log(`wrote ${path.relative(process.cwd(), out)}`)
  } finally {
    await server?.close()
    await deleteKeysWithPrefix(redis, prefix)
    await redis.quit()
    await dropDatabase(dbUrl)
    fs.rmSync(tmp, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)))
