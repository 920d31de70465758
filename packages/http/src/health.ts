// GET /healthz of every service: PostgreSQL and Redis, plus whatever the service itself needs to
// be of use. 200 with status 'ok' when all pass, else 503 with status 'degraded'.
import type { FastifyPluginAsync } from 'fastify'
import { Type, type Static, type TObject, type TProperties } from '@sinclair/typebox'
import type { Redis } from '@iisan/queue'
import type { PrismaClient } from '@iisan/storage'

const PROBE_TIMEOUT_MS = 2000

const Check = Type.Object({ ok: Type.Boolean(), error: Type.Optional(Type.String()) })
export type CheckResult = Static<typeof Check>

export interface HealthCheckOptions<P extends TProperties> {
  prisma: Pick<PrismaClient, '$queryRaw'>
  redis: Pick<Redis, 'ping'>
  /** OpenAPI summary of the route. */
  summary: string
  /** Fields of the service's own next to postgres and redis, and whether they count as healthy. */
  extra?: { schema: P; check: () => { ok: boolean; fields: Static<TObject<P>> } }
}

export function healthCheck<P extends TProperties = {}>(options: HealthCheckOptions<P>): FastifyPluginAsync {
  const extraSchema = options.extra?.schema ?? {}
  const response = (status: 'ok' | 'degraded') => Type.Object({ status: Type.Literal(status), postgres: Check, redis: Check, ...extraSchema })
  return async (app) => {
    app.get('/healthz', { schema: { tags: ['operations'], summary: options.summary, response: { 200: response('ok'), 503: response('degraded') } } }, async (_req, reply) => {
      const [postgres, redis] = await Promise.all([probe(() => options.prisma.$queryRaw`SELECT 1`), probe(() => options.redis.ping())])
      const extra = options.extra?.check() ?? { ok: true, fields: {} }
      const healthy = postgres.ok && redis.ok && extra.ok
      return reply.status(healthy ? 200 : 503).send({ status: healthy ? 'ok' : 'degraded', postgres, redis, ...extra.fields })
    })
  }
}

// A hung dependency must read as degraded rather than leave /healthz itself unanswered.
async function probe(check: () => Promise<unknown>): Promise<CheckResult> {
  try {
    await Promise.race([check(), new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout after ${PROBE_TIMEOUT_MS / 1000} s`)), PROBE_TIMEOUT_MS).unref())])
    return { ok: true }
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) }
  }
}
