// The embedding cache end to end over real PostgreSQL and Redis: the service in-process (HTTP +
// queue worker), extra replicas as child processes (one is SIGKILLed mid-chunk), the demo
// backbones generated into a temp folder, images the test makes itself.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import sharp from 'sharp'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend } from '@iisan/model/backend'
import { Float16RowsFile } from '@iisan/safetensors/float16-rows-file'
import { loadImageBackbone, loadTextBackbone } from '@iisan/backbones'
import { createEmbeddingCacheQueue, type EmbeddingCacheQueue, type Redis } from '@iisan/queue'
import { addItems, computeContentHashes, importDataset, type ImportItemInput } from '@iisan/storage'
import {
  EmbeddingCacheClientError,
  StateStreamDecoder,
  StateStreamError,
  encodeItemsNow,
  fetchDatasetStates,
  indexStates,
  planCacheBuild,
  processChunk,
} from '@iisan/embedding-cache'
import type { CacheServer } from '../services/embedding-cache/src/server.ts'
import { REPO_ROOT, cleanupRedisPrefix, testRedisPrefix, type TestDatabase } from './helpers/db.ts'
import { CACHE_ENTRY, createTestCache, createTestPlatform, freePort, startService, stopService, until, type TestPlatform } from './helpers/platform.ts'

let platform: TestPlatform
let tmp: string
let db: TestDatabase
let redis: Redis
let crashPrefix: string
let server: CacheServer
let baseUrl: string
let api: ReturnType<typeof request>
let imageServer: http.Server
let imageBase: string
let env: Record<string, string>
const children: ChildProcess[] = []

/** First lines of the Scientific catalogue (distinct real titles), or synthetic ones. */
function titles(from: number, n: number): string[] {
  const file = path.resolve(REPO_ROOT, 'data/scientific/items.tsv')
  if (fs.existsSync(file)) {
    return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).slice(from, from + n).map((l) => l.split('\t')[1]!)
  }
  return Array.from({ length: n }, (_, i) => `synthetic lab item ${from + i} with a longer descriptive title`)
}

async function png(w: number, h: number, seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3)
  for (let p = 0; p < raw.length; p++) raw[p] = (p * (seed + 3) + Math.floor(p / (w * 3)) * 11 * seed) & 255
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer()
}

async function jpeg(w: number, h: number, seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(w * h * 3)
  for (let p = 0; p < raw.length; p++) raw[p] = ((p % (w * 3)) * (seed + 1) + Math.floor(p / (w * 3)) * 5) & 255
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 85 }).toBuffer()
}

function write(name: string, bytes: Buffer): string {
  const file = path.join(tmp, 'images', name)
  fs.writeFileSync(file, bytes)
  return file
}

async function startReplica(extra: Record<string, string>): Promise<ChildProcess> {
  const child = startService(CACHE_ENTRY, { ...env, EMBEDDING_CACHE_PORT: String(await freePort()), ...extra })
  children.push(child)
  return child
}

/** |got − exp| within float16 rounding (relative 2^-11, plus the subnormal step). */
function expectF16Close(got: Float32Array, exp: Float32Array): void {
  expect(got.length).toBe(exp.length)
  let worst = 0
  for (let i = 0; i < exp.length; i++) {
    const excess = Math.abs(got[i] - exp[i]) - (Math.abs(exp[i]) * 2 ** -11 + 2 ** -24)
    worst = Math.max(worst, excess)
  }
  expect(worst).toBeLessThanOrEqual(0)
}

// Dataset A: 40 items, 14 with an image in every supported form (one corrupt), 26 without.
const A_TITLES = titles(0, 40)
A_TITLES[39] = A_TITLES[0] // two items, one title: one text state
let aItems: ImportItemInput[]
let datasetA: string
let aIds: number[]
let corruptRef: string

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('embcache', { TF_BACKEND: 'wasm' })
  ;({ db, redis, tmp, env } = platform)
  fs.mkdirSync(path.join(tmp, 'images'))
  // The images live in the temp folder and on a 127.0.0.1 server: allow both (replicas get `env`,
  // the in-process service reads process.env).
  Object.assign(env, { IMAGE_ROOT: path.join(tmp, 'images'), IMAGE_ALLOW_PRIVATE_HOSTS: '1' })
  Object.assign(process.env, { IMAGE_ROOT: env.IMAGE_ROOT, IMAGE_ALLOW_PRIVATE_HOSTS: '1' })
  crashPrefix = testRedisPrefix('embcache_crash')

  imageServer = http.createServer((req, res) => {
    const name = path.basename(req.url ?? '')
    if (name === 'flaky.png') {
      res.writeHead(503).end('try later')
      return
    }
    const file = path.join(tmp, 'images', name)
    if (!fs.existsSync(file)) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(fs.readFileSync(file))
  })
  await new Promise<void>((r) => imageServer.listen(0, '127.0.0.1', r))
  imageBase = `http://127.0.0.1:${(imageServer.address() as { port: number }).port}`

  const grayRaw = Buffer.alloc(24 * 24)
  for (let p = 0; p < grayRaw.length; p++) grayRaw[p] = (p * 7) & 255
  const images: Partial<ImportItemInput>[] = [
    { imageRef: write('a0.png', await png(48, 40, 1)) },
    { imageRef: write('a1.png', await png(64, 64, 2)) },
    { imageRef: write('a2.png', await png(20, 31, 3)) },
    { imageRef: write('a3.png', await sharp({ create: { width: 40, height: 30, channels: 4, background: { r: 200, g: 30, b: 60, alpha: 0.4 } } }).png().toBuffer()) },
    { imageRef: pathToFileURL(write('a4.jpg', await jpeg(50, 40, 4))).href },
    { imageRef: pathToFileURL(write('a5.jpg', await jpeg(33, 77, 5))).href },
    { imageBlob: await jpeg(45, 45, 6), imageMime: 'image/jpeg' },
    { imageBlob: await png(36, 28, 7), imageMime: 'image/png' },
    { imageRef: (write('a8.png', await png(40, 40, 8)), `${imageBase}/a8.png`) },
    { imageRef: (write('a9.jpg', await jpeg(40, 40, 9)), `${imageBase}/a9.jpg`) },
    { imageRef: (corruptRef = write('corrupt.jpg', Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(300, 7)]))) },
    { imageRef: write('a11.png', await sharp(grayRaw, { raw: { width: 24, height: 24, channels: 1 } }).png().toBuffer()) },
    { imageRef: path.join(tmp, 'images', 'a0.png') }, // same image as item 0: encoded once
    { imageRef: write('a13.webp', await sharp(await png(30, 30, 13)).webp().toBuffer()) },
  ]
  aItems = A_TITLES.map((title, i) => ({ externalId: `A${i}`, title, ...(images[i] ?? {}) }))

  server = await createTestCache(env, 'embedding-cache-test', { chunkSize: 8, groupSize: 4 })
  baseUrl = await server.app.listen({ port: 0, host: '127.0.0.1' })
  api = request(server.app.server)

  const ds = await importDataset(db.prisma, { name: 'cache-A', items: aItems, users: [] })
  datasetA = ds.id
  aIds = (await db.prisma.item.findMany({ where: { datasetId: datasetA }, orderBy: { id: 'asc' }, select: { id: true } })).map((r) => r.id)
})

afterAll(async () => {
  await Promise.all(children.map((c) => stopService(c, 'SIGKILL')))
  await server?.close()
  await new Promise((r) => imageServer?.close(r))
  if (redis && crashPrefix) await cleanupRedisPrefix(redis, crashPrefix)
  await platform?.close()
})

const backboneId = (modality: 'text' | 'image') => server.registry.get(modality)!.id
const countRows = async (modality: 'text' | 'image') => db.prisma.hiddenState.count({ where: { backboneId: backboneId(modality) } })

describe('service basics', () => {
  it('reports health and the loaded demo backbones', async () => {
    const health = await api.get('/healthz').expect(200)
    expect(health.body).toMatchObject({ status: 'ok', postgres: { ok: true }, redis: { ok: true }, worker: { running: true } })
    const res = await api.get('/v1/backbones').expect(200)
    expect(res.body.backbones).toHaveLength(2)
    expect(res.body.backbones.map((b: { modality: string }) => b.modality).sort()).toEqual(['image', 'text'])
    for (const b of res.body.backbones) {
      expect(b).toMatchObject({ loaded: true, numLayers: 4, hiddenSize: 64 })
      expect(b.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    }
  })

  it('validates requests with machine-readable 4xx errors', async () => {
    expect((await api.post('/v1/cache-builds').send({ datasetId: 'nope' }).expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await api.post('/v1/cache-builds').send({ datasetId: randomUUID() }).expect(404)).body.error.code).toBe('NOT_FOUND')
    expect((await api.get(`/v1/cache-builds/${randomUUID()}`).expect(404)).body.error.code).toBe('NOT_FOUND')
    expect((await api.get('/v1/cache-builds/123').expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await api.get(`/v1/datasets/${randomUUID()}/coverage`).expect(404)).body.error.code).toBe('NOT_FOUND')
    expect((await api.post('/v1/items/encode').send({ itemIds: [] }).expect(400)).body.error.code).toBe('VALIDATION_FAILED')
    expect((await api.post('/v1/items/encode').send({ itemIds: [999_999] }).expect(404)).body.error).toMatchObject({ code: 'NOT_FOUND', details: { missingItemIds: [999_999] } })
  })
})

describe('(a) building the cache of a dataset with and without images', () => {
  it('caches every text, every readable image, and flags the corrupt one', async () => {
    const res = await api.post('/v1/cache-builds').send({ datasetId: datasetA }).expect(202)
    expect(res.body.builds).toHaveLength(2)
    const text = res.body.builds.find((b: { modality: string }) => b.modality === 'text')
    const image = res.body.builds.find((b: { modality: string }) => b.modality === 'image')
    expect(text).toMatchObject({ itemsTotal: 40, chunks: 5, chunksEnqueued: 5, resumed: false })
    expect(image).toMatchObject({ itemsTotal: 14, chunks: 2, chunksEnqueued: 2 })

    const finished = await until(
      async () => {
        const views = await Promise.all([text.id, image.id].map(async (id: string) => (await api.get(`/v1/cache-builds/${id}`).expect(200)).body))
        if (views.some((v) => v.status === 'failed')) throw new Error(`build failed: ${JSON.stringify(views)}`)
        return views.every((v) => v.status === 'completed') ? views : undefined
      },
      60_000,
      'both builds to complete',
    )
    expect(finished[0]).toMatchObject({ itemsTotal: 40, itemsDone: 40, itemsFailed: 0, itemsPending: 0, fraction: 1, itemsEncoded: 40 })
    expect(finished[0].itemsPerSecond).toBeGreaterThan(0)
    expect(finished[1]).toMatchObject({ itemsTotal: 14, itemsDone: 13, itemsFailed: 1, itemsPending: 0, fraction: 1 })

    const coverage = (await api.get(`/v1/datasets/${datasetA}/coverage`).expect(200)).body
    expect(coverage.numItems).toBe(40)
    const byModality = Object.fromEntries(coverage.backbones.map((b: { modality: string }) => [b.modality, b]))
    expect(byModality.text).toMatchObject({ total: 40, done: 40, failed: 0, pending: 0, absent: 0, fraction: 1 })
    expect(byModality.image).toMatchObject({ total: 14, done: 13, failed: 1, pending: 0, absent: 26, fraction: 1 })
    expect(byModality.text.itemsPerSecond).toBeGreaterThan(0)

    // One row per distinct input: 39 titles; 13 distinct images (one shared), one of them an error row.
    expect(await countRows('text')).toBe(39)
    expect(await countRows('image')).toBe(13)
    const corrupt = await db.prisma.hiddenState.findUnique({
      where: { backboneId_contentHash: { backboneId: backboneId('image'), contentHash: computeContentHashes({ title: '', imageRef: corruptRef }).imageHash! } },
    })
    expect(corrupt?.error).toMatch(/corrupt\.jpg: cannot decode image/)
    expect(corrupt?.data.byteLength).toBe(0)
    // float16 [L+1, d] = 5 × 64 × 2 bytes per state.
    const sample = await db.prisma.hiddenState.findFirst({ where: { backboneId: backboneId('text') } })
    expect(sample).toMatchObject({ dtype: 'f16', layers: 5, dim: 64 })
    expect(sample!.data.byteLength).toBe(640)
  })
})

describe('(b) idempotence: re-runs and other datasets with the same items compute nothing', () => {
  it('a second build of the same dataset completes at once', async () => {
    const rows = [await countRows('text'), await countRows('image')]
    const jobs = await server.queue.getJobCountByTypes('completed', 'waiting', 'active', 'delayed', 'failed')
    const res = await api.post('/v1/cache-builds').send({ datasetId: datasetA }).expect(202)
    for (const b of res.body.builds) {
      expect(b).toMatchObject({ status: 'completed', chunksEnqueued: 0, itemsEncoded: 0, itemsPending: 0, itemsPerSecond: null })
    }
    expect(await server.queue.getJobCountByTypes('completed', 'waiting', 'active', 'delayed', 'failed')).toBe(jobs)
    expect([await countRows('text'), await countRows('image')]).toEqual(rows)
  })

  it('a second dataset with the same titles and images hits the cache', async () => {
    const rows = [await countRows('text'), await countRows('image')]
    const ds = await importDataset(db.prisma, { name: 'cache-A-copy', items: aItems.map((it) => ({ ...it, externalId: `copy-${it.externalId}` })), users: [] })
    const res = await api.post('/v1/cache-builds').send({ datasetId: ds.id }).expect(202)
    const text = res.body.builds.find((b: { modality: string }) => b.modality === 'text')
    const image = res.body.builds.find((b: { modality: string }) => b.modality === 'image')
    expect(text).toMatchObject({ status: 'completed', itemsTotal: 40, itemsDone: 40, chunksEnqueued: 0, itemsEncoded: 0 })
    expect(image).toMatchObject({ status: 'completed', itemsTotal: 14, itemsDone: 13, itemsFailed: 1, chunksEnqueued: 0, itemsEncoded: 0 })
    expect([await countRows('text'), await countRows('image')]).toEqual(rows)

    // The processor itself, handed the copy's items, encodes nothing.
    const itemIds = (await db.prisma.item.findMany({ where: { datasetId: ds.id }, select: { id: true } })).map((r) => r.id)
    for (const modality of ['text', 'image'] as const) {
      const build = modality === 'text' ? text : image
      const result = await processChunk({ prisma: db.prisma, registry: server.registry }, { cacheBuildId: build.id, datasetId: ds.id, backboneId: backboneId(modality), itemIds })
      expect(result).toMatchObject({ outcome: 'processed', encoded: 0, failed: 0, inserted: 0, cached: modality === 'text' ? 39 : 13, absent: modality === 'text' ? 0 : 26 })
    }
    const cold = await encodeItemsNow(db.prisma, itemIds.slice(0, 12), { registry: server.registry })
    expect(cold.encoded).toEqual({ text: 0, image: 0 })
    expect([await countRows('text'), await countRows('image')]).toEqual(rows)
  })
})

describe('(c) replicas and crashes', () => {
  it('a replica killed mid-chunk loses nothing written; another finishes the build, every state once', async () => {
    const cTitles = titles(200, 48)
    const ds = await importDataset(db.prisma, { name: 'cache-C', items: cTitles.map((title, i) => ({ externalId: `C${i}`, title })), users: [] })
    const cHashes = cTitles.map((t) => computeContentHashes({ title: t }).textHash)
    const stored = () => db.prisma.hiddenState.count({ where: { backboneId: backboneId('text'), contentHash: { in: cHashes } } })
    // A queue of its own, so the in-process worker stays out of it: one chunk of 48 items,
    // written in groups of 4 with a pause after each (≈ 5 s per chunk).
    const queue: EmbeddingCacheQueue = createEmbeddingCacheQueue(redis, crashPrefix)
    try {
      const planned = await planCacheBuild(db.prisma, queue, ds.id, { backbones: server.registry.list(), chunkSize: 48 })
      const text = planned.find((p) => p.backbone.modality === 'text')!
      expect(text).toMatchObject({ chunks: 1, chunksEnqueued: 1, itemsPending: 48 })
      expect(planned.find((p) => p.backbone.modality === 'image')!.build.status).toBe('completed') // no images: nothing to do

      // Re-planning the unfinished build is idempotent: same build, same job id.
      const again = await planCacheBuild(db.prisma, queue, ds.id, { backbones: server.registry.list(), chunkSize: 48 })
      expect(again.find((p) => p.backbone.modality === 'text')).toMatchObject({ resumed: true, build: { id: text.build.id } })
      expect(await queue.getJobCountByTypes('waiting', 'active', 'delayed', 'completed')).toBe(1)

      const knobs = { QUEUE_PREFIX: crashPrefix, EMBEDDING_CACHE_GROUP_SIZE: '4', EMBEDDING_CACHE_LOCK_MS: '3000', EMBEDDING_CACHE_STALLED_MS: '1000' }
      const first = await startReplica({ ...knobs, EMBEDDING_CACHE_THROTTLE_MS: '400' })
      const before = await until(async () => {
        const n = await stored()
        return n >= 8 ? n : undefined
      }, 60_000, 'the first replica to write some states')
      await stopService(first, 'SIGKILL')
      await new Promise((r) => setTimeout(r, 500)) // a statement sent just before the kill may still commit
      const written = await stored()
      expect(written).toBeGreaterThanOrEqual(before)
      expect(written).toBeLessThan(48)
      expect((await db.prisma.cacheBuild.findUnique({ where: { id: text.build.id } }))!.status).toBe('running')

      const second = await startReplica(knobs)
      const done = await until(async () => {
        const b = await db.prisma.cacheBuild.findUnique({ where: { id: text.build.id } })
        if (b?.status === 'failed') throw new Error(`build failed: ${b.error}`)
        return b?.status === 'completed' ? b : undefined
      }, 90_000, 'the second replica to complete the build')
      expect(done).toMatchObject({ itemsTotal: 48, itemsDone: 48, itemsFailed: 0 })

      // Every item present exactly once per (backbone, content hash).
      const counts = await db.prisma.$queryRaw<{ n: number }[]>`
        SELECT count(*)::int AS n FROM hidden_states
        WHERE backbone_id = ${backboneId('text')} AND content_hash = ANY(${cHashes})
        GROUP BY backbone_id, content_hash`
      expect(counts).toHaveLength(48)
      expect(counts.every((c) => c.n === 1)).toBe(true)
      // The stalled job was handed out again and skipped what the killed replica had written.
      const job = (await queue.getJobs(['completed']))[0]
      expect(job.returnvalue).toMatchObject({ outcome: 'processed', cached: written, encoded: 48 - written })

      // Graceful SIGTERM: the worker stops, the server closes, the process exits 0.
      expect(await stopService(second)).toBe(0)
    } finally {
      await queue.close()
    }
  })
})

describe('(d) the binary state stream', () => {
  it('round-trips text states: equal to the backbone run directly, within float16', async () => {
    const states = await fetchDatasetStates(baseUrl, datasetA, 'text', { expectedItemIds: aIds })
    expect(states).not.toBeNull()
    const s = states!
    expect(s).toMatchObject({ modality: 'text', fingerprint: server.registry.get('text')!.fingerprint, numLayers: 4, width: 64 })
    expect(Array.from(s.itemIds)).toEqual(aIds)
    expect(s.missingItemIds).toHaveLength(0)
    expect(s.data.length).toBe(40 * 5 * 64)
    const bert = await loadTextBackbone(server.registry.get('text')!.dir)
    try {
      const direct = await bert.encodeTexts(A_TITLES)
      expectF16Close(s.data as Float32Array, direct.clsPerLayer)
    } finally {
      bert.dispose()
    }
    // The training layout: model index k = k-th item by id.
    const indexed = indexStates(s, aIds)
    expect(indexed.rowOf[0]).toBe(-1)
    expect(Array.from(indexed.rowOf.subarray(1))).toEqual(aIds.map((_, i) => i))
  })

  it('round-trips image states; items without an image or with a corrupt one have no row', async () => {
    const s = (await fetchDatasetStates(baseUrl, datasetA, 'image', { expectedItemIds: aIds }))!
    const withImage = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]
    expect(Array.from(s.itemIds)).toEqual(withImage.map((i) => aIds[i]))
    expect(s.missingItemIds).toHaveLength(40 - 13)
    const vit = await loadImageBackbone(server.registry.get('image')!.dir)
    try {
      const inputs = withImage.map((i) => {
        const it = aItems[i]
        if (it.imageBlob) return it.imageBlob
        const ref = it.imageRef!
        if (ref.startsWith('file://')) return new URL(ref).pathname
        if (ref.startsWith('http')) return path.join(tmp, 'images', path.basename(ref))
        return ref
      })
      const direct = await vit.encodeImages(inputs)
      const expected = new Float32Array(withImage.length * 5 * 64)
      direct.forEach((r, j) => {
        if (!r.ok) throw new Error(r.error)
        expected.set(r.cls, j * 5 * 64)
      })
      expectF16Close(s.data as Float32Array, expected)
    } finally {
      vit.dispose()
    }
  })

  it('is the documented byte layout, decodable from any chunking; truncation is detected', async () => {
    const res = await fetch(`${baseUrl}/v1/datasets/${datasetA}/states?modality=text`)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    const bytes = new Uint8Array(await res.arrayBuffer())
    expect(Number(res.headers.get('content-length'))).toBe(bytes.length)
    expect(Buffer.from(bytes.subarray(0, 8)).toString('latin1')).toBe('IISANST1')
    const headerLen = Buffer.from(bytes.buffer, bytes.byteOffset).readUInt32LE(8)
    const header = JSON.parse(Buffer.from(bytes.subarray(12, 12 + headerLen)).toString('utf8'))
    expect(header).toEqual({ modality: 'text', fingerprint: server.registry.get('text')!.fingerprint, numLayers: 4, width: 64, dtype: 'f16', count: 40 })
    expect(bytes.length).toBe(12 + headerLen + 40 * (4 + 5 * 64 * 2))
    expect(Buffer.from(bytes.buffer, bytes.byteOffset).readInt32LE(12 + headerLen)).toBe(aIds[0])

    const whole = new StateStreamDecoder()
    whole.push(bytes)
    const ref = whole.end()
    for (const split of [1, 3, 641, 1000]) {
      const d = new StateStreamDecoder()
      for (let p = 0; p < bytes.length; p += split) d.push(bytes.subarray(p, p + split))
      const out = d.end()
      expect(Array.from(out.itemIds)).toEqual(Array.from(ref.itemIds))
      expect(out.data).toEqual(ref.data)
    }
    // into a rows file, written a few rows at a time: the same bit patterns as in memory
    const f16 = new StateStreamDecoder({ keep: 'float16' })
    f16.push(bytes)
    const rows = f16.end().data as Uint16Array
    for (const split of [1, 641, 5000]) {
      const d = new StateStreamDecoder({ keep: 'float16-file', stageBytes: 3 * 5 * 64 * 2 })
      for (let p = 0; p < bytes.length; p += split) d.push(bytes.subarray(p, p + split))
      const file = d.end().data as Float16RowsFile
      const read = new Uint16Array(file.length)
      for (let r = 0; r < file.rows; r++) file.readRow(r, read.subarray(r * file.valuesPerRow))
      file.close()
      expect(Array.from(read), `split ${split}`).toEqual(Array.from(rows))
    }
    const cut = new StateStreamDecoder()
    cut.push(bytes.subarray(0, bytes.length - 7))
    expect(() => cut.end()).toThrow(StateStreamError)
    // a cut stream gives its rows file back
    const openFds = () => fs.readdirSync('/proc/self/fd').length
    const fds = openFds()
    const cutToFile = new StateStreamDecoder({ keep: 'float16-file' })
    cutToFile.push(bytes.subarray(0, bytes.length - 7))
    expect(openFds()).toBe(fds + 1)
    expect(() => cutToFile.end()).toThrow(StateStreamError)
    expect(openFds()).toBe(fds)
    const bad = new StateStreamDecoder()
    expect(() => bad.push(Buffer.from('NOTASTREAM-at-all'))).toThrow(/magic/)
    const unexpected = new StateStreamDecoder({ expectedItemIds: aIds.slice(1) })
    expect(() => unexpected.push(bytes)).toThrow(/not among the expected/)
  })

  it('answers 404 for an unknown dataset and 400 for a bad modality, as JSON', async () => {
    const missing = await fetch(`${baseUrl}/v1/datasets/${randomUUID()}/states?modality=text`)
    expect(missing.status).toBe(404)
    expect(missing.headers.get('content-type')).toMatch(/application\/json/)
    expect((await missing.json()).error.code).toBe('NOT_FOUND')
    await expect(fetchDatasetStates(baseUrl, randomUUID(), 'text')).rejects.toMatchObject({ status: 404, code: 'NOT_FOUND' })
    await expect(fetchDatasetStates(baseUrl, randomUUID(), 'text')).rejects.toBeInstanceOf(EmbeddingCacheClientError)
    for (const q of ['modality=audio', '', 'modality=text&x=1']) {
      const res = await api.get(`/v1/datasets/${datasetA}/states?${q}`).expect(400)
      expect(res.body.error.code).toBe('VALIDATION_FAILED')
    }
    expect((await api.get('/v1/datasets/not-a-uuid/states?modality=text').expect(400)).body.error.code).toBe('VALIDATION_FAILED')
  })
})

describe('a replica without an image backbone', () => {
  it('serves text, answers null for images, and reports the modality as disabled', async () => {
    const textOnly = await createTestCache({ ...env, IMAGE_BACKBONE_DIR: 'none' }, 'embedding-cache-text-only', { worker: false })
    try {
      const url = await textOnly.app.listen({ port: 0, host: '127.0.0.1' })
      expect(textOnly.registry.get('image')).toBeNull()
      expect(textOnly.registry.get('text')!.id).toBe(backboneId('text')) // same fingerprint → same Backbone row
      expect(await fetchDatasetStates(url, datasetA, 'image')).toBeNull()
      expect((await fetchDatasetStates(url, datasetA, 'text'))!.itemIds).toHaveLength(40)
      const health = await request(textOnly.app.server).get('/healthz').expect(200)
      expect(health.body.worker.running).toBeNull()
      const coverage = await request(textOnly.app.server).get(`/v1/datasets/${datasetA}/coverage`).expect(200)
      expect(coverage.body.backbones.map((b: { modality: string }) => b.modality)).toEqual(['text'])
      const encoded = await request(textOnly.app.server).post('/v1/items/encode').send({ itemIds: aIds.slice(0, 2) }).expect(200)
      expect(encoded.body.items[0]).toMatchObject({ text: { status: 'done' }, image: { status: 'disabled' } })
    } finally {
      await textOnly.close()
    }
  })
})

describe('cold start', () => {
  it('encodes new items now, reports per-item coverage, and returns their states', async () => {
    const fresh = await addItems(db.prisma, datasetA, [
      { externalId: 'new-1', title: 'Brand new borosilicate beaker set 250 ml', imageBlob: await png(32, 32, 21), imageMime: 'image/png' },
      { externalId: 'new-2', title: 'Digital caliper, stainless, 150 mm', imageRef: path.join(tmp, 'images', 'does-not-exist.png') },
      { externalId: 'new-3', title: 'Magnetic stirrer without image' },
      { externalId: 'new-4', title: 'Pipette tips from a flaky host', imageRef: `${imageBase}/flaky.png` },
    ])
    const ids = fresh.map((i) => i.id)
    const res = await api.post('/v1/items/encode').send({ itemIds: ids }).expect(200)
    expect(res.body.encoded).toEqual({ text: 4, image: 1 })
    const [one, two, three, four] = res.body.items
    expect(one).toMatchObject({ itemId: ids[0], datasetId: datasetA, text: { status: 'done' }, image: { status: 'done' } })
    expect(two.image).toMatchObject({ status: 'failed', error: expect.stringMatching(/cannot read image .*ENOENT/) })
    expect(two.image.retryable).toBeUndefined()
    expect(three.image).toMatchObject({ status: 'absent' })
    expect(four.image).toMatchObject({ status: 'failed', retryable: true, error: expect.stringMatching(/HTTP 503/) })
    // The transient failure was not stored (a later call or build tries again); the missing file was.
    const imageHash = (i: number) => fresh[i].imageHash!
    expect(await db.prisma.hiddenState.count({ where: { backboneId: backboneId('image'), contentHash: imageHash(3) } })).toBe(0)
    expect(await db.prisma.hiddenState.count({ where: { backboneId: backboneId('image'), contentHash: imageHash(1) } })).toBe(1)

    const again = await encodeItemsNow(db.prisma, ids.slice(0, 3), { registry: server.registry })
    expect(again.encoded).toEqual({ text: 0, image: 0 })
    const bert = await loadTextBackbone(server.registry.get('text')!.dir)
    try {
      const direct = await bert.encodeTexts([fresh[0].title])
      expectF16Close(again.items[0].text.state!, direct.clsPerLayer)
    } finally {
      bert.dispose()
    }
    expect(again.items[0].image.state).toHaveLength(5 * 64)
    expect(again.items[2].image.state).toBeUndefined()
  })
})

describe('float16 passthrough', () => {
  it('keep: float16 returns the stored bit patterns, decoding to the float32 stream values', async () => {
    const { fetchDatasetStates } = await import('@iisan/embedding-cache/client')
    const { float16ToFloat32 } = await import('@iisan/safetensors')
    const f32 = (await fetchDatasetStates(baseUrl, datasetA, 'text'))!
    const f16 = (await fetchDatasetStates(baseUrl, datasetA, 'text', { keep: 'float16' }))!
    expect(f16.data).toBeInstanceOf(Uint16Array)
    expect(Array.from(f16.itemIds)).toEqual(Array.from(f32.itemIds))
    expect(Array.from(float16ToFloat32(f16.data as Uint16Array))).toEqual(Array.from(f32.data as Float32Array))
  })

  it('keep: float16-file writes the same bit patterns to a rows file, side layers only, that no folder shows', async () => {
    const { fetchDatasetStates } = await import('@iisan/embedding-cache/client')
    const select = { selectLayers: (h: { numLayers: number }) => [0, 2, h.numLayers] }
    const before = new Set(fs.readdirSync(os.tmpdir()))
    const mem = (await fetchDatasetStates(baseUrl, datasetA, 'text', { keep: 'float16', ...select }))!
    const onDisk = (await fetchDatasetStates(baseUrl, datasetA, 'text', { keep: 'float16-file', ...select }))!
    try {
      expect(onDisk.data).toBeInstanceOf(Float16RowsFile)
      const file = onDisk.data as Float16RowsFile
      const values = mem.data as Uint16Array
      expect([file.rows, file.valuesPerRow]).toEqual([mem.itemIds.length, 3 * mem.width])
      expect(Array.from(onDisk.itemIds)).toEqual(Array.from(mem.itemIds))
      const row = new Uint16Array(file.valuesPerRow)
      for (let r = 0; r < file.rows; r++) {
        file.readRow(r, row)
        expect(Array.from(row), `row ${r}`).toEqual(Array.from(values.subarray(r * file.valuesPerRow, (r + 1) * file.valuesPerRow)))
      }
      // unlinked at once: nothing is left in the temp folder, even while the file is open
      expect([...fs.readdirSync(os.tmpdir())].filter((f) => !before.has(f) && f.startsWith('iisan-rows-'))).toEqual([])
    } finally {
      ;(onDisk.data as { close(): void }).close()
    }
    expect(() => (onDisk.data as Float16RowsFile).readRow(0, new Uint16Array(3 * mem.width))).toThrow(/closed/)
  })
})

describe('side-layer selection while streaming', () => {
  it('keeps only the requested layers of each record, equal to those slices of the full stream', async () => {
    const { fetchDatasetStates } = await import('@iisan/embedding-cache/client')
    const full = (await fetchDatasetStates(baseUrl, datasetA, 'text'))!
    const picked = (await fetchDatasetStates(baseUrl, datasetA, 'text', { selectLayers: (h) => [0, h.numLayers] }))!
    const L = full.numLayers
    const d = full.width
    expect(picked.layers).toEqual([0, L])
    expect(picked.data.length).toBe(full.itemIds.length * 2 * d)
    const fullData = full.data as Float32Array
    const pickedData = picked.data as Float32Array
    for (let r = 0; r < full.itemIds.length; r += 7) {
      const row = (layer: number) => Array.from(fullData.subarray((r * (L + 1) + layer) * d, (r * (L + 1) + layer + 1) * d))
      expect(Array.from(pickedData.subarray(r * 2 * d, r * 2 * d + d))).toEqual(row(0))
      expect(Array.from(pickedData.subarray(r * 2 * d + d, (r + 1) * 2 * d))).toEqual(row(L))
    }
    await expect(fetchDatasetStates(baseUrl, datasetA, 'text', { selectLayers: () => [99] })).rejects.toThrow(/layer 99 is outside/)
  })
})
