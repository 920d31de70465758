// Optional API keys for a self-hosted deployment: when keys are configured, every /v1 route
// needs one (`Authorization: Bearer <key>` or `X-API-Key`); health, metrics, the OpenAPI page and
// the dashboard's static files stay open (the dashboard asks for a key and sends it itself).
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

export interface ApiKeyOptions {
  keys: string[]
  /** URL prefixes that need a key */
  protectedPrefixes?: string[]
}

const digest = (key: string) => createHash('sha256').update(key).digest()

export function apiKeyAuth(options: ApiKeyOptions): FastifyPluginAsync {
  return fp(async (app: FastifyInstance) => {
    if (options.keys.length === 0) return
    // compare digests: equal length, and the comparison time says nothing about the key
    const accepted = options.keys.map(digest)
    const prefixes = options.protectedPrefixes ?? ['/v1/']
    app.addHook('onRequest', async (request, reply) => {
      if (!prefixes.some((p) => request.url.startsWith(p))) return
      const header = request.headers.authorization
      const presented = header?.startsWith('Bearer ') ? header.slice(7).trim() : (request.headers['x-api-key'] as string | undefined)
      const presentedDigest = presented === undefined ? undefined : digest(presented)
      const ok = presentedDigest !== undefined && accepted.some((key) => timingSafeEqual(key, presentedDigest))
      if (ok) return
      reply.header('www-authenticate', 'Bearer realm="iisan"')
      return reply.status(401).send({ error: { code: 'UNAUTHORIZED', message: presented === undefined ? 'this API needs a key: Authorization: Bearer <key>' : 'the API key is not valid' } })
    })
  })
}
