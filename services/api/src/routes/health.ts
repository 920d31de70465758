import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Deps } from '../deps.ts'

const Check = Type.Object({ ok: Type.Boolean(), error: Type.Optional(Type.String()) })

export const healthRoutes: FastifyPluginAsyncTypebox<Deps> = async (app, deps) => {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Liveness and dependencies: PostgreSQL and Redis',
        response: { 200: Type.Object({ status: Type.Literal('ok'), postgres: Check, redis: Check }), 503: Type.Object({ status: Type.Literal('degraded'), postgres: Check, redis: Check }) },
      },
    },
    async (_req, reply) => {
      const [postgres, redis] = await Promise.all([
        probe(() => deps.prisma.$queryRaw`SELECT 1`),
        probe(() => deps.redis.ping()),
      ])
      const healthy = postgres.ok && redis.ok
      return reply.status(healthy ? 200 : 503).send({ status: healthy ? 'ok' : 'degraded', postgres, redis } as never)
    },
  )
}

async function probe(check: () => Promise<unknown>): Promise<{ ok: boolean; error?: string }> {
  try {
    await Promise.race([check(), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout after 2 s')), 2000).unref())])
    return { ok: true }
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) }
  }
}
