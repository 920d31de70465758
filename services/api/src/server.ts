// Wiring of the API process: connections → deps → app. main.ts and the tests both use it.
import type { AppConfig, Logger } from '@iisan/config'
import { defaultIndexStoreDir } from '@iisan/model/item-index-store'
import { ServingRegistry } from '@iisan/pipeline'
import { createCommandConnection, createTrainingQueue, publishModelActivated, publishModelUpdated, subscribeModelActivated, subscribeModelUpdated } from '@iisan/queue'
import { createPrisma } from '@iisan/storage'
import { buildApp } from './app.ts'

export interface ApiServerOptions {
  /** Which replica this is (1…API_REPLICAS): every response then names it and its pid (x-replica, x-replica-pid). */
  replica?: number
}

export async function createApiServer(config: AppConfig, logger: Logger, options: ApiServerOptions = {}) {
  const prisma = createPrisma(config.databaseUrl)
  // requests wait on these commands: during a Redis outage they fail fast (503, or the job left to
  // the workers' reconciler) instead of hanging until Redis returns
  const redis = createCommandConnection(config.redisUrl)
  redis.on('error', (err) => logger.warn({ err: err.message }, 'redis connection error'))
  const trainingQueue = createTrainingQueue(redis, config.queuePrefix)
  const registry = new ServingRegistry(prisma, {
    approximateFrom: config.approximateIndexFrom,
    index: { efSearch: config.itemIndexEfSearch, efConstruction: config.itemIndexEfConstruction },
    ...(config.itemIndexDir === null ? {} : { indexStore: { dir: config.itemIndexDir ?? defaultIndexStoreDir() } }),
    onIndex: ({ error, ...event }) => (error === undefined ? logger.info(event, 'approximate index ready') : logger.warn({ ...event, err: error }, 'approximate index not built: serving exactly')),
    onScoring: ({ error, ...event }) => (error === undefined ? logger.info(event, 'model version loaded for serving') : logger.warn({ ...event, err: error }, 'ONNX Runtime could not take the scoring: serving on tfjs')),
  })
  await registry.refreshActive()
  // Every replica hears about activations: its own, other replicas', the worker's.
  const subscription = await subscribeModelActivated(
    redis,
    config.queuePrefix,
    async (event) => {
      logger.info(event, 'model activated')
      await registry.refreshActive()
      await registry.get(event.modelVersionId)
    },
    (err) => logger.warn({ err }, 'model-activated subscription error'),
  )
  const updates = await subscribeModelUpdated(
    redis,
    config.queuePrefix,
    async (event) => {
      logger.info(event, 'model updated')
      await registry.reloadIfBehind(event.modelVersionId)
    },
    (err) => logger.warn({ err }, 'model-updated subscription error'),
  )
  const app = await buildApp(
    {
      prisma,
      redis,
      trainingQueue,
      registry,
      embeddingCacheUrl: config.embeddingCacheUrl,
      internalToken: config.internalToken,
      announceActivation: async (datasetId, modelVersionId) => {
        await publishModelActivated(redis, config.queuePrefix, { datasetId, modelVersionId })
      },
      announceUpdated: async (datasetId, modelVersionId) => {
        await publishModelUpdated(redis, config.queuePrefix, { datasetId, modelVersionId, reason: 'items-appended' })
      },
    },
    { logger, apiKeys: config.apiKeys },
  )
  const { replica } = options
  if (replica !== undefined) {
    const id = String(replica)
    const pid = String(process.pid)
    app.addHook('onRequest', async (_request, reply) => {
      reply.header('x-replica', id).header('x-replica-pid', pid)
    })
  }
  return {
    app,
    prisma,
    registry,
    /** Stop accepting, let in-flight requests finish, then release every connection. */
    async close() {
      await app.close()
      await subscription.close()
      await updates.close()
      await trainingQueue.close()
      await registry.close()
      await Promise.all([redis.quit(), prisma.$disconnect()])
    },
  }
}
