// Embedding-cache service: owns the frozen backbones and the hidden-state store.
// This shell serves health and the backbone registry; chunked cache jobs land here next
// (packages/backbones computes the states, @iisan/storage stores them).
import Fastify from 'fastify'
import { createLogger, loadConfig } from '@iisan/config'
import { onShutdown } from '@iisan/config/shutdown'
import { createRedisConnection } from '@iisan/queue'
import { createPrisma } from '@iisan/storage'

const config = loadConfig()
const logger = createLogger('embedding-cache', config)
const prisma = createPrisma(config.databaseUrl)
const redis = createRedisConnection(config.redisUrl)

const app = Fastify({ loggerInstance: logger })
app.get('/healthz', async (_req, reply) => {
  const checks = await Promise.allSettled([prisma.$queryRaw`SELECT 1`, redis.ping()])
  const [postgres, redisCheck] = checks.map((c) => ({ ok: c.status === 'fulfilled', ...(c.status === 'rejected' ? { error: String(c.reason) } : {}) }))
  const ok = postgres.ok && redisCheck.ok
  return reply.status(ok ? 200 : 503).send({ status: ok ? 'ok' : 'degraded', postgres, redis: redisCheck })
})
app.get('/v1/backbones', async () => ({
  backbones: await prisma.backbone.findMany({ select: { id: true, fingerprint: true, modality: true, modelType: true, name: true, numLayers: true, hiddenSize: true, location: true } }),
}))
await app.listen({ port: config.embeddingCachePort, host: config.host })

onShutdown(logger, async () => {
  await app.close()
  await Promise.all([redis.quit(), prisma.$disconnect()])
})
