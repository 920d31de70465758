// HTTP routes of the embedding cache. Handlers validate, call @iisan/embedding-cache, shape JSON.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type TSchema } from '@sinclair/typebox'
import {
  CacheError,
  STATE_STREAM_CONTENT_TYPE,
  STATE_STREAM_MAGIC,
  encodeItemsNow,
  getCacheBuildView,
  getDatasetCoverage,
  openDatasetStateStream,
  planCacheBuild,
  type BackboneRegistry,
} from '@iisan/embedding-cache'
import type { EmbeddingCacheQueue, Redis } from '@iisan/queue'
import type { PrismaClient } from '@iisan/storage'
import { errorResponses, healthCheck, mediaTypeGuard } from '@iisan/http'

export interface Deps {
  prisma: PrismaClient
  redis: Redis
  queue: EmbeddingCacheQueue
  registry: BackboneRegistry
  chunkSize: number
  /** Whether this replica's queue worker is running (null: no worker in this process). */
  workerRunning: () => boolean | null
}

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()])
const Uuid = Type.String({ format: 'uuid' })
const Modality = Type.Union([Type.Literal('text'), Type.Literal('image')])
const IdParams = Type.Object({ id: Uuid })
/** Item.id is a PostgreSQL int4. */
const MAX_ITEM_ID = 2 ** 31 - 1

const BuildSchema = Type.Object({
  id: Uuid,
  datasetId: Uuid,
  backboneId: Type.Integer(),
  fingerprint: Type.String(),
  modality: Modality,
  status: Type.Union([Type.Literal('queued'), Type.Literal('running'), Type.Literal('completed'), Type.Literal('failed'), Type.Literal('cancelled')]),
  itemsTotal: Type.Integer({ description: 'items of the build: all items for text, items with an image for images' }),
  itemsDone: Type.Integer(),
  itemsFailed: Type.Integer({ description: 'items whose input could not be encoded (corrupt/unreadable image); flagged, not retried' }),
  itemsPending: Type.Integer(),
  fraction: Type.Number({ description: '(done + failed) / total' }),
  itemsEncoded: Type.Integer({ description: 'items computed while the build ran (the others were already cached)' }),
  itemsPerSecond: Nullable(Type.Number({ description: 'itemsEncoded per second of build time' })),
  error: Nullable(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  startedAt: Nullable(Type.String({ format: 'date-time' })),
  finishedAt: Nullable(Type.String({ format: 'date-time' })),
})

const PlannedSchema = Type.Composite([
  BuildSchema,
  Type.Object({
    chunks: Type.Integer({ description: 'chunks of the build' }),
    chunksEnqueued: Type.Integer({ description: 'chunks handed to the queue (the others were fully cached)' }),
    resumed: Type.Boolean({ description: 'an unfinished build of the same dataset and backbone was resumed' }),
  }),
])

const CoverageSchema = Type.Object({
  datasetId: Uuid,
  numItems: Type.Integer(),
  backbones: Type.Array(
    Type.Object({
      backboneId: Type.Integer(),
      fingerprint: Type.String(),
      name: Type.String(),
      modality: Modality,
      numLayers: Type.Integer(),
      width: Type.Integer(),
      total: Type.Integer({ description: 'items needing this backbone (image: items with an image)' }),
      done: Type.Integer(),
      failed: Type.Integer(),
      pending: Type.Integer(),
      absent: Type.Integer({ description: 'items without an input for this modality (no image) — not a failure' }),
      fraction: Type.Number(),
      itemsPerSecond: Nullable(Type.Number({ description: 'throughput of the latest build' })),
      latestBuild: Nullable(BuildSchema),
    }),
  ),
})

const ItemModality = Type.Object({
  status: Type.Union([Type.Literal('done'), Type.Literal('failed'), Type.Literal('absent'), Type.Literal('disabled')]),
  fingerprint: Type.Optional(Type.String()),
  error: Type.Optional(Type.String()),
  retryable: Type.Optional(Type.Boolean()),
})

const BackboneSchema = Type.Object({
  id: Type.Integer(),
  fingerprint: Type.String(),
  modality: Modality,
  modelType: Type.String(),
  name: Nullable(Type.String()),
  numLayers: Type.Integer(),
  hiddenSize: Type.Integer(),
  location: Type.String(),
  loaded: Type.Boolean({ description: 'served by this replica (the configured backbone of its modality)' }),
})

export const cacheRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  // 415 for a body that is not JSON on the routes below
  await app.register(mediaTypeGuard)
  await app.register(
    healthCheck({
      prisma: deps.prisma,
      redis: deps.redis,
      summary: 'Liveness and dependencies: PostgreSQL, Redis, queue worker',
      extra: {
        schema: { worker: Type.Object({ running: Nullable(Type.Boolean()) }) },
        check: () => {
          const running = deps.workerRunning()
          // null: this replica runs no worker, which is a deployment choice, not a fault
          return { ok: running !== false, fields: { worker: { running } } }
        },
      },
    }),
  )

  await app.register(v1Routes, { ...deps, prefix: '/v1' })
}

const v1Routes: FastifyPluginAsyncTypebox<Deps> = async (v1, deps) => {
  v1.get(
    '/backbones',
    { schema: { tags: ['cache'], summary: 'Registered backbones; `loaded` marks the ones this replica serves', response: { 200: Type.Object({ backbones: Type.Array(BackboneSchema) }) } } },
    async () => {
      const rows = await deps.prisma.backbone.findMany({ orderBy: { id: 'asc' } })
      const loaded = new Set(deps.registry.list().map((b) => b.id))
      return {
        backbones: rows.map((b) => ({
          id: b.id,
          fingerprint: b.fingerprint,
          modality: b.modality as 'text' | 'image',
          modelType: b.modelType,
          name: b.name,
          numLayers: b.numLayers,
          hiddenSize: b.hiddenSize,
          location: b.location,
          loaded: loaded.has(b.id),
        })),
      }
    },
  )

  v1.post(
    '/cache-builds',
    {
      schema: {
        tags: ['cache'],
        summary: 'Cache every item of a dataset with every configured backbone (queued in chunks; cached items are skipped)',
        body: Type.Object({ datasetId: Uuid }, { additionalProperties: false }),
        response: { 202: Type.Object({ builds: Type.Array(PlannedSchema) }), ...errorResponses(400, 404, 415) },
      },
    },
    async (request, reply) => {
      const planned = await planCacheBuild(deps.prisma, deps.queue, request.body.datasetId, { backbones: deps.registry.list(), chunkSize: deps.chunkSize })
      const builds = []
      for (const p of planned) {
        const view = await getCacheBuildView(deps.prisma, p.build.id)
        if (view) builds.push({ ...view, chunks: p.chunks, chunksEnqueued: p.chunksEnqueued, resumed: p.resumed })
      }
      return reply.status(202).send({ builds } as never)
    },
  )

  v1.get(
    '/cache-builds/:id',
    { schema: { tags: ['cache'], summary: 'Status, progress and throughput of a cache build', params: IdParams, response: { 200: BuildSchema, ...errorResponses(400, 404) } } },
    async (request) => {
      const view = await getCacheBuildView(deps.prisma, request.params.id)
      if (!view) throw new CacheError('NOT_FOUND', `cache build ${request.params.id} not found`)
      return view as never
    },
  )

  v1.get(
    '/datasets/:id/coverage',
    {
      schema: {
        tags: ['cache'],
        summary: 'Items cached / total per backbone, failures, throughput of the latest build',
        params: IdParams,
        response: { 200: CoverageSchema, ...errorResponses(400, 404) },
      },
    },
    async (request) => {
      const coverage = await getDatasetCoverage(deps.prisma, request.params.id, deps.registry.list())
      if (!coverage) throw new CacheError('NOT_FOUND', `dataset ${request.params.id} not found`, { datasetId: request.params.id })
      return coverage as never
    },
  )

  v1.get(
    '/datasets/:id/states',
    {
      schema: {
        tags: ['cache'],
        summary: `Every stored state of a dataset for one modality, as a binary "${STATE_STREAM_MAGIC}" stream (see @iisan/embedding-cache format.ts)`,
        params: IdParams,
        querystring: Type.Object({ modality: Modality }, { additionalProperties: false }),
        response: {
          200: Type.String({
            format: 'binary',
            description: `${STATE_STREAM_MAGIC} | uint32 LE header length | JSON header {modality, fingerprint, numLayers, width, dtype, count} | count × (int32 LE item id, (L+1)·d float16 LE)`,
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params
      if (!(await deps.prisma.dataset.findUnique({ where: { id }, select: { id: true } }))) {
        throw new CacheError('NOT_FOUND', `dataset ${id} not found`, { datasetId: id })
      }
      const backbone = deps.registry.get(request.query.modality)
      if (!backbone) throw new CacheError('BACKBONE_NOT_CONFIGURED', `no ${request.query.modality} backbone is configured`, { modality: request.query.modality })
      const s = await openDatasetStateStream(deps.prisma, id, backbone)
      // Client gone before the end: stop reading the snapshot (ends its transaction).
      reply.raw.once('close', () => {
        if (!s.stream.readableEnded) s.stream.destroy()
      })
      return reply
        .header('content-type', STATE_STREAM_CONTENT_TYPE)
        .header('content-length', String(s.byteLength))
        .header('x-iisan-state-count', String(s.header.count))
        .header('x-iisan-backbone-fingerprint', s.header.fingerprint)
        .send(s.stream as never)
    },
  )

  v1.post(
    '/items/encode',
    {
      schema: {
        tags: ['cache'],
        summary: 'Cold start: compute the missing states of a few items now and report their coverage',
        body: Type.Object({ itemIds: Type.Array(Type.Integer({ minimum: 1, maximum: MAX_ITEM_ID }), { minItems: 1, maxItems: 256 }) }, { additionalProperties: false }),
        response: {
          200: Type.Object({
            items: Type.Array(Type.Object({ itemId: Type.Integer(), datasetId: Uuid, text: ItemModality, image: ItemModality })),
            encoded: Type.Object({ text: Type.Integer(), image: Type.Integer() }, { description: 'inputs computed by this request (0 = everything was cached)' }),
            failed: Type.Object({ text: Type.Integer(), image: Type.Integer() }),
            seconds: Type.Number(),
          }),
          ...errorResponses(400, 404, 415),
        },
      },
    },
    async (request) => {
      const result = await encodeItemsNow(deps.prisma, request.body.itemIds, { registry: deps.registry, includeStates: false })
      return result as never
    },
  )
}
