// Several encoder threads in the embedding cache (CACHE_ENCODERS) over real PostgreSQL and Redis,
// with the tiny fixture backbones: the same states as one encoder, a killed thread costs only a
// retry of its chunk, and a bad setting stops the service with one line.
import fs from 'node:fs'
import path from 'node:path'
import { spawn } from 'node:child_process'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend } from '@iisan/model/backend'
import { importDataset, type ImportItemInput } from '@iisan/storage'
import { getCacheBuildView, planCacheBuild } from '@iisan/embedding-cache'
import type { CacheServer } from '../services/embedding-cache/src/server.ts'
import { REPO_ROOT } from './helpers/db.ts'
import { CACHE_ENTRY, createTestCache, createTestPlatform, exited, until, type TestPlatform } from './helpers/platform.ts'

const FIXTURES = path.join(REPO_ROOT, 'test/fixtures/backbones')
let platform: TestPlatform
const open: CacheServer[] = []

function titles(from: number, n: number): string[] {
  const file = path.resolve(REPO_ROOT, 'data/scientific/items.tsv')
  if (fs.existsSync(file)) {
    return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).slice(from, from + n).map((l) => l.split('\t')[1]!)
  }
  return Array.from({ length: n }, (_, i) => `synthetic lab item ${from + i} with a ${'longer '.repeat(i % 5)}descriptive title`)
}

async function png(seed: number): Promise<Buffer> {
  const w = 30 + (seed % 7) * 5
  const h = 24 + (seed % 5) * 6
  const raw = Buffer.alloc(w * h * 3)
  for (let p = 0; p < raw.length; p++) raw[p] = (p * (seed + 3) + Math.floor(p / (w * 3)) * 11 * seed) & 255
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer()
}

async function dataset(name: string, from: number, n: number, images: number): Promise<string> {
  const items: ImportItemInput[] = []
  const t = titles(from, n)
  for (let i = 0; i < n; i++) items.push({ externalId: `${name}-${i}`, title: t[i], ...(i < images ? { imageBlob: await png(from + i), imageMime: 'image/png' } : {}) })
  return (await importDataset(platform.db.prisma, { name, items, users: [] })).id
}

async function cache(name: string, options: { encoders: number; throttleMs?: number }, env: Record<string, string> = {}): Promise<CacheServer> {
  const server = await createTestCache({ ...platform.env, ...env }, name, { chunkSize: 8, groupSize: 4, lockDurationMs: 5000, stalledIntervalMs: 1000, ...options })
  open.push(server)
  return server
}

/** Plans the dataset's builds on `server`'s queue and waits until every one has completed. */
async function build(server: CacheServer, datasetId: string) {
  const planned = await planCacheBuild(platform.db.prisma, server.queue, datasetId, { backbones: server.registry.list(), chunkSize: 8 })
  return until(
    async () => {
      const views = await Promise.all(planned.map((p) => getCacheBuildView(platform.db.prisma, p.build.id)))
      const failed = views.find((v) => v?.status === 'failed')
      if (failed) throw new Error(`build failed: ${failed.error}`)
      return views.every((v) => v?.status === 'completed') ? views.map((v) => v!) : undefined
    },
    90_000,
    'the builds to complete',
  )
}

/** Every stored state of the fixture backbones: `<backboneId>:<content hash>` → bytes (hex). */
async function snapshot(): Promise<Map<string, string>> {
  const rows = await platform.db.prisma.hiddenState.findMany({ select: { backboneId: true, contentHash: true, data: true, error: true } })
  return new Map(rows.map((r) => [`${r.backboneId}:${r.contentHash}`, r.error ?? Buffer.from(r.data).toString('hex')]))
}

beforeAll(async () => {
  // Encoder threads are for tfjs-wasm (one core each); on ONNX Runtime the service runs one (below).
  // The runtime is the service's setting only: this process's BACKBONE_RUNTIME stays unset, so a
  // backbone that ignored the config would load on ONNX Runtime, the default here.
  delete process.env.BACKBONE_RUNTIME
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('cacheenc', {
    BACKBONE_RUNTIME: 'tfjs',
    TF_BACKEND: 'wasm',
    TEXT_BACKBONE_DIR: path.join(FIXTURES, 'bert-tiny-a'),
    IMAGE_BACKBONE_DIR: path.join(FIXTURES, 'vit-tiny-a'),
  })
})

afterAll(async () => {
  for (const s of open) await s.close()
  await platform?.close()
})

describe('(a) two encoder threads store the same states as one', () => {
  it('same rows, byte for byte; the threads compute the same float32 states as the service thread', async () => {
    const ds = await dataset('enc-a', 0, 48, 12)
    const single = await cache('cache-enc-1', { encoders: 1 })
    expect(single.encoders).toBeNull()
    const one = await build(single, ds)
    const expected = await snapshot()
    expect(expected.size).toBe(48 + 12)
    const ids = single.registry.list().map((b) => b.id).sort()
    await single.close()

    await platform.db.prisma.hiddenState.deleteMany({})
    const multi = await cache('cache-enc-2', { encoders: 2 })
    expect(multi.encoders?.size).toBe(2)
    expect(multi.registry.list().map((b) => b.id).sort()).toEqual(ids) // same fingerprints
    const two = await build(multi, ds)
    const got = await snapshot()
    expect(got.size).toBe(expected.size)
    for (const [key, bytes] of expected) expect(got.get(key), key).toBe(bytes)
    // The builds' progress counts what was stored, whoever stored it.
    for (const views of [one, two]) {
      for (const v of views) {
        expect(v).toMatchObject({ itemsDone: v.itemsTotal, itemsFailed: 0, itemsPending: 0, itemsEncoded: v.itemsTotal })
        expect(v.itemsPerSecond).toBeGreaterThan(0)
      }
    }
    // Bit-identical before the float16 rounding too: a thread against the service's own copy.
    const texts = titles(100, 20)
    const images = await Promise.all([1, 2, 3, 4, 5].map(png))
    for (let k = 0; k < 2; k++) {
      const lease = await multi.encoders!.lease()
      try {
        const mine = multi.registry.get('text')!
        if (mine.modality !== 'text') throw new Error('no text backbone')
        const theirs = lease.registry.get('text')!
        if (theirs.modality !== 'text') throw new Error('no text backbone')
        const [a, b] = [await mine.model.encodeTexts(texts, { batchSize: 8 }), await theirs.model.encodeTexts(texts, { batchSize: 8 })]
        expect(Buffer.from(b.clsPerLayer.buffer, b.clsPerLayer.byteOffset, b.clsPerLayer.byteLength).equals(Buffer.from(a.clsPerLayer.buffer, a.clsPerLayer.byteOffset, a.clsPerLayer.byteLength))).toBe(true)
        const vit = multi.registry.get('image')!
        const vitThread = lease.registry.get('image')!
        if (vit.modality !== 'image' || vitThread.modality !== 'image') throw new Error('no image backbone')
        const [x, y] = [await vit.model.encodeImages(images, { batchSize: 4 }), await vitThread.model.encodeImages(images, { batchSize: 4 })]
        expect(y.map((r) => (r.ok ? Array.from(r.cls) : r.error))).toEqual(x.map((r) => (r.ok ? Array.from(r.cls) : r.error)))
      } finally {
        lease.release()
      }
    }
  })
})

describe('(b) a killed encoder thread', () => {
  it('fails only its chunk, which is retried; the build completes with every item once', async () => {
    const ds = await dataset('enc-b', 200, 48, 0)
    const server = await cache('cache-enc-kill', { encoders: 2, throttleMs: 300 })
    const failures: { jobId: string | undefined; message: string }[] = []
    server.worker!.on('failed', (job, err) => failures.push({ jobId: job?.id, message: err.message }))
    const text = server.registry.get('text')!
    const planned = await planCacheBuild(platform.db.prisma, server.queue, ds, { backbones: server.registry.list(), chunkSize: 8 })
    const textBuild = planned.find((p) => p.backbone.modality === 'text')!
    expect(textBuild).toMatchObject({ chunks: 6, chunksEnqueued: 6 })

    const hashes = (await platform.db.prisma.item.findMany({ where: { datasetId: ds }, select: { textHash: true } })).map((r) => r.textHash)
    const stored = () => platform.db.prisma.hiddenState.count({ where: { backboneId: text.id, contentHash: { in: hashes } } })
    // Mid-build: some states written, both threads busy with a chunk.
    const victim = await until(
      async () => {
        const busy = server.encoders!.busy()
        return (await stored()) >= 4 && busy.length === 2 ? busy[0] : undefined
      },
      60_000,
      'both encoders to be busy mid-build',
    )
    const killed = server.encoders!.threads()[victim]!
    await killed.terminate()

    const done = await until(
      async () => {
        const b = await platform.db.prisma.cacheBuild.findUnique({ where: { id: textBuild.build.id } })
        if (b?.status === 'failed') throw new Error(`build failed: ${b.error}`)
        return b?.status === 'completed' ? b : undefined
      },
      90_000,
      'the build to complete',
    )
    expect(done).toMatchObject({ itemsTotal: 48, itemsDone: 48, itemsFailed: 0 })
    const counts = await platform.db.prisma.$queryRaw<{ n: number }[]>`
      SELECT count(*)::int AS n FROM hidden_states WHERE backbone_id = ${text.id} AND content_hash = ANY(${hashes}) GROUP BY content_hash`
    expect(counts).toHaveLength(48)
    expect(counts.every((c) => c.n === 1)).toBe(true)

    // One failed attempt, of one chunk, because its thread stopped; that chunk then completed.
    expect(failures).toHaveLength(1)
    expect(failures[0].message).toMatch(new RegExp(`encoder thread ${victim} stopped \\(exit code 1\\)`))
    const retried = await server.queue.getJob(failures[0].jobId!)
    expect(await retried!.getState()).toBe('completed')
    const jobs = await server.queue.getJobs(['completed'])
    expect(jobs.filter((j) => j.data.cacheBuildId === textBuild.build.id)).toHaveLength(6)
    // A new thread took the dead one's place.
    const replaced = await until(async () => {
      const t = server.encoders!.threads()[victim]
      return t && t !== killed ? t : undefined
    }, 30_000, 'a new encoder thread')
    expect(replaced.threadId).not.toBe(killed.threadId)
  })
})

describe('(c) CACHE_ENCODERS', () => {
  it('BACKBONE_RUNTIME=tfjs reaches the service copy and every encoder thread', async () => {
    delete process.env.BACKBONE_RUNTIME
    const server = await cache('cache-enc-tfjs', { encoders: 2 })
    expect(server.registry.list().map((b) => b.model.runtime)).toEqual(['tfjs', 'tfjs'])
    // each thread loads with the runtime the service copy resolved to (EncoderThreadData)
    expect(server.encoders!.threads()).toHaveLength(2)
  })

  it('backbones on ONNX Runtime: one encoder whatever the setting, since one session uses every core', async () => {
    process.env.BACKBONE_RUNTIME = 'tfjs'
    try {
      const server = await cache('cache-enc-ort', { encoders: 2 }, { BACKBONE_RUNTIME: 'onnx' })
      expect(server.registry.list().map((b) => b.model.runtime)).toEqual(['onnx', 'onnx'])
      expect(server.encoders).toBeNull()
    } finally {
      delete process.env.BACKBONE_RUNTIME
    }
  })

  it('a bad value stops the service with one line naming the variable', async () => {
    for (const value of ['0', 'two', '1.5', '-1']) {
      const child = spawn(process.execPath, ['--import', 'tsx', CACHE_ENTRY], {
        cwd: REPO_ROOT,
        env: { ...process.env, ...platform.env, CACHE_ENCODERS: value },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stderr = ''
      child.stderr!.on('data', (d) => (stderr += d))
      child.stdout!.resume()
      expect(await exited(child), value).toBe(1)
      const lines = stderr.trim().split('\n')
      expect(lines, stderr).toHaveLength(1)
      expect(lines[0]).toMatch(/CACHE_ENCODERS/)
      expect(lines[0]).toContain(JSON.stringify(value))
    }
  })
})
