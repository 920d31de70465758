// GET /healthz of every service: PostgreSQL and Redis, plus whatever the service itself needs to
// be of use. 200 with status 'ok' when all pass, else 503 with status 'degraded', Retry-After and
// the failing checks named in `unavailable`.
import type { FastifyPluginAsync } from 'fastify'
import { Type, type Static, type TObject, type TProperties } from '@sinclair/typebox'
import type { Redis } from '@iisan/queue'
import type { PrismaClient } from '@iisan/storage'
import { dependencyFailure } from './dependency-errors.ts'
import { DEFAULT_RETRY_AFTER_SECONDS } from './errors.ts'

const PROBE_TIMEOUT_MS = 2000

const Check = Type.Object({ ok: Type.Boolean(), error: Type.Optional(Type.String()) })
export type CheckResult = Static<typeof Check>

export interface HealthCheckOptions<P extends TProperties> {
  prisma: Pick<PrismaClient, '$queryRaw'>
  /** `status` (ioredis' connection state), when given, fails the probe at once while reconnecting. */
  redis: Pick<Redis, 'ping'> & Partial<Pick<Redis, 'status'>>
  /** OpenAPI summary of the route. */
  summary: string
  /** Fields of the service's own next to postgres and redis, and whether they count as healthy. */
  extra?: { schema: P; check: () => { ok: boolean; fields: Static<TObject<P>> } }
  /** Retry-After of the 503, in seconds (default 5). */
  retryAfterSeconds?: number
}

export function healthCheck<P extends TProperties = {}>(options: HealthCheckOptions<P>): FastifyPluginAsync {
  const extraSchema = options.extra?.schema ?? {}
  const unavailable = Type.Array(Type.String(), { description: "what is failing: 'postgres', 'redis' or the service's own check" })
  const response = (status: 'ok' | 'degraded') => Type.Object({ status: Type.Literal(status), postgres: Check, redis: Check, ...extraSchema, unavailable })
  const retryAfter = String(options.retryAfterSeconds ?? DEFAULT_RETRY_AFTER_SECONDS)
  const degraded = {
    ...response('degraded'),
    headers: { 'retry-after': { type: 'integer', description: 'seconds to wait before asking again' } },
  }
  return async (app) => {
    app.get('/healthz', { schema: { tags: ['operations'], summary: options.summary, response: { 200: response('ok'), 503: degraded } } }, async (_req, reply) => {
      const redisStatus = options.redis.status
      const [postgres, redis] = await Promise.all([
        probe(() => options.prisma.$queryRaw`SELECT 1`),
        // ioredis queues commands while it reconnects (maxRetriesPerRequest: null, as BullMQ
        // wants): a ping would wait out the timeout, the state says it now.
        redisStatus !== undefined && redisStatus !== 'ready' ? Promise.resolve({ ok: false, error: `connection is ${redisStatus}` }) : probe(() => options.redis.ping()),
      ])
      const extra = options.extra?.check() ?? { ok: true, fields: {} }
      const down = [...(postgres.ok ? [] : ['postgres']), ...(redis.ok ? [] : ['redis']), ...(extra.ok ? [] : Object.keys(extraSchema))]
      const healthy = down.length === 0
      if (!healthy) reply.header('retry-after', retryAfter)
      return reply.status(healthy ? 200 : 503).send({ status: healthy ? 'ok' : 'degraded', postgres, redis, ...extra.fields, unavailable: down })
    })
  }
}

// A hung dependency must read as degraded rather than leave /healthz itself unanswered.
async function probe(check: () => Promise<unknown>): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([check(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timeout after ${PROBE_TIMEOUT_MS / 1000} s`)), PROBE_TIMEOUT_MS)))])
    return { ok: true }
  } catch (e) {
    // the classifier's one line rather than Prisma's multi-line "Invalid `prisma.$queryRaw()` invocation: …"
    return { ok: false, error: dependencyFailure(e)?.reason ?? (e instanceof Error ? e.message : String(e)) }
  } finally {
    clearTimeout(timer)
  }
}
