// Wiring of the embedding-cache process: connections → backbones → HTTP app + queue worker.
// main.ts and the tests both use it.
import Fastify from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Job, Worker } from 'bullmq'
import { ConfigError, type AppConfig, type ConfigIssue, type Logger } from '@iisan/config'
import { BackboneRegistry, DEFAULT_CHUNK_SIZE, DEFAULT_GROUP_SIZE, markBuildFailed, processChunk } from '@iisan/embedding-cache'
import { createEmbeddingCacheQueue, createEmbeddingCacheWorker, createRedisConnection, type EmbeddingCacheJobPayload } from '@iisan/queue'
import { createPrisma } from '@iisan/storage'
import { isCacheError } from '@iisan/embedding-cache/errors'
import { errorHandling, metrics, storageErrors } from '@iisan/http'
import { initBackend } from '@iisan/model/backend'
import { internalTokenAuth } from './auth.ts'
import { EncoderPool } from './encoders.ts'
import { cacheRoutes } from './routes.ts'

export interface CacheServerOptions {
  /** Run a queue worker in this process (EMBEDDING_CACHE_WORKER, default true). */
  worker?: boolean
  /** Items per queue job (EMBEDDING_CACHE_CHUNK_SIZE, default 64). */
  chunkSize?: number
  /** Items per forward batch and per INSERT inside a job (EMBEDDING_CACHE_GROUP_SIZE, default 16). */
  groupSize?: number
  /** BullMQ lock of a running job; a crashed replica's job is handed out again after it expires (EMBEDDING_CACHE_LOCK_MS, default 60000). */
  lockDurationMs?: number
  /** How often stalled jobs are looked for (EMBEDDING_CACHE_STALLED_MS, default 30000). */
  stalledIntervalMs?: number
  /** Pause after each written group, to slow a demo or a crash test down (EMBEDDING_CACHE_THROTTLE_MS, default 0). */
  throttleMs?: number
  /** Encoder threads, chunks encoded at once (default: config.cacheEncoders, CACHE_ENCODERS); 1 encodes in this thread. */
  encoders?: number
}

/** The service's own knobs (beyond AppConfig), from the environment; throws ConfigError. */
export function cacheServerOptionsFromEnv(env: Record<string, string | undefined> = process.env): CacheServerOptions {
  const issues: ConfigIssue[] = []
  const int = (name: string, min: number): number | undefined => {
    const raw = env[name]?.trim()
    if (!raw) return undefined
    const n = Number(raw)
    if (!/^\d+$/.test(raw) || n < min) {
      issues.push({ variable: name, value: raw, message: `must be an integer ≥ ${min}` })
      return undefined
    }
    return n
  }
  const options: CacheServerOptions = {
    chunkSize: int('EMBEDDING_CACHE_CHUNK_SIZE', 1),
    groupSize: int('EMBEDDING_CACHE_GROUP_SIZE', 1),
    lockDurationMs: int('EMBEDDING_CACHE_LOCK_MS', 1000),
    stalledIntervalMs: int('EMBEDDING_CACHE_STALLED_MS', 500),
    throttleMs: int('EMBEDDING_CACHE_THROTTLE_MS', 0),
  }
  const worker = env.EMBEDDING_CACHE_WORKER?.trim().toLowerCase()
  if (worker) {
    if (['0', 'false', 'no', 'off'].includes(worker)) options.worker = false
    else if (['1', 'true', 'yes', 'on'].includes(worker)) options.worker = true
    else issues.push({ variable: 'EMBEDDING_CACHE_WORKER', value: worker, message: 'must be true or false' })
  }
  if (issues.length) throw new ConfigError(issues)
  return options
}

export async function createCacheServer(config: AppConfig, logger: Logger, options: CacheServerOptions = cacheServerOptionsFromEnv()) {
  const prisma = createPrisma(config.databaseUrl)
  const redis = createRedisConnection(config.redisUrl)
  const queue = createEmbeddingCacheQueue(redis, config.queuePrefix)
  /** A start that fails half-way closes what it opened. */
  const abandon = async (err: unknown): Promise<never> => {
    await queue.close().catch(() => undefined)
    await Promise.all([redis.quit().catch(() => undefined), prisma.$disconnect()])
    throw err
  }
  const registry = await BackboneRegistry.load(prisma, config).catch(abandon)
  logger.info(
    { backbones: registry.list().map((b) => ({ id: b.id, modality: b.modality, name: b.name, L: b.numLayers, d: b.width, fingerprint: b.fingerprint.slice(0, 12), dir: b.dir })) },
    'backbones loaded',
  )

  let workerConnection: ReturnType<typeof createRedisConnection> | null = null
  let worker: Worker<EmbeddingCacheJobPayload> | null = null
  let encoders: EncoderPool | null = null
  if (options.worker !== false) {
    const log = logger.child({ component: 'cache-worker' })
    // Several encoders: one thread each, on tfjs backends that compute on one core per thread.
    // The native backends, and backbones on ONNX Runtime (BACKBONE_RUNTIME), use every core from
    // one thread already.
    const backend = await initBackend({ prefer: config.tfBackend })
    const wanted = options.encoders ?? config.cacheEncoders
    const onOrt = registry.list().some((b) => b.model.runtime === 'onnx')
    const oneCorePerThread = (backend === 'wasm' || backend === 'cpu') && !onOrt
    if (wanted > 1 && !oneCorePerThread) {
      log.info({ encoders: wanted, backend: onOrt ? 'onnxruntime' : backend }, 'one encoder: the backbones use every core from one thread')
    }
    if (wanted > 1 && oneCorePerThread && registry.list().length > 0) {
      encoders = await EncoderPool.start(wanted, registry, backend, log).catch((err: unknown) => {
        registry.dispose()
        return abandon(err)
      })
    }
    const pool = encoders
    workerConnection = createRedisConnection(config.redisUrl)
    const chunk = (payload: EmbeddingCacheJobPayload, job: Job<EmbeddingCacheJobPayload>, chunkRegistry: BackboneRegistry) =>
      processChunk(
        {
          prisma,
          registry: chunkRegistry,
          groupSize: options.groupSize ?? DEFAULT_GROUP_SIZE,
          throttleMs: options.throttleMs ?? 0,
          finalAttempt: job.attemptsMade + 1 >= (job.opts.attempts ?? 1),
          log: (fields, message) => log.debug({ jobId: job.id, ...fields }, message),
        },
        payload,
      )
    worker = createEmbeddingCacheWorker(
      workerConnection,
      config.queuePrefix,
      async (payload, job) => {
        if (!pool) return chunk(payload, job, registry)
        const lease = await pool.lease()
        try {
          return await chunk(payload, job, lease.registry)
        } finally {
          lease.release()
        }
      },
      {
        concurrency: pool?.size ?? 1,
        lockDuration: options.lockDurationMs ?? 60_000,
        stalledInterval: options.stalledIntervalMs ?? 30_000,
      },
    )
    worker.on('completed', (job, result) => log.info({ jobId: job.id, ...(result as object) }, 'chunk done'))
    worker.on('failed', (job, err) => {
      if (!job) return
      log.warn({ jobId: job.id, attemptsMade: job.attemptsMade, err: err.message }, 'chunk attempt failed')
      // Retries exhausted (or unrecoverable): the build cannot complete — say so.
      void job
        .getState()
        .then(async (state) => {
          if (state === 'failed') await markBuildFailed(prisma, job.data.cacheBuildId, `chunk ${job.id} failed: ${err.message}`)
        })
        .catch((e: unknown) => log.error({ err: e }, 'could not record a failed chunk'))
    })
    worker.on('error', (err) => log.error({ err }, 'queue worker error'))
  }

  const app = Fastify({
    loggerInstance: logger,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true } },
  }).withTypeProvider<TypeBoxTypeProvider>()
  // every route of the service, for the tests that check each one is guarded
  const routes: { method: string; url: string }[] = []
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, url: route.url })
  })
  // Before any route: the hook guards every route of the app and the not-found handler.
  if (config.internalToken) await app.register(internalTokenAuth, { token: config.internalToken })
  else logger.info('INTERNAL_TOKEN is not set: the embedding cache answers every process that can reach it')
  await app.register(errorHandling, {
    codeExamples: ['VALIDATION_FAILED', 'NOT_FOUND', 'BACKBONE_NOT_CONFIGURED'],
    mappings: [(err) => (isCacheError(err) ? err : undefined), storageErrors],
  })
  await app.register(metrics({ service: 'embedding-cache' }))
  await app.register(cacheRoutes, {
    prisma,
    redis,
    queue,
    registry,
    chunkSize: options.chunkSize ?? DEFAULT_CHUNK_SIZE,
    workerRunning: () => (worker ? worker.isRunning() : null),
  })

  let closing: Promise<void> | undefined
  return {
    app,
    /** method + route template of every route registered (HEAD included) */
    routes: routes as readonly { method: string; url: string }[],
    worker,
    /** The encoder threads (null: chunks are encoded in this thread). */
    encoders,
    prisma,
    queue,
    registry,
    /** Stop taking jobs (the chunk in flight finishes), stop serving, release every connection. */
    close(): Promise<void> {
      closing ??= (async () => {
        await worker?.close()
        await encoders?.close()
        await app.close()
        await queue.close()
        await Promise.all([redis.quit().catch(() => undefined), workerConnection?.quit().catch(() => undefined), prisma.$disconnect()])
        registry.dispose()
      })()
      return closing
    },
  }
}

export type CacheServer = Awaited<ReturnType<typeof createCacheServer>>
