// The cache's service token (INTERNAL_TOKEN): only the API and the worker may use it. Checked on
// the route the router matched, not on the URL string, so no spelling of a path (percent-encoded,
// absolute-form request line, trailing junk) reaches a route without it; requests that match no
// route need it too, so the open routes are exactly the ones listed here.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

/** Route templates anyone who can reach the service may call: liveness and Prometheus. */
export const PUBLIC_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/metrics'])

const digest = (value: string) => createHash('sha256').update(value).digest()

/**
 * Register first, on the root: the hook then guards every route of the app and its not-found
 * handler (fastify-plugin lifts it out of its own scope).
 */
export const internalTokenAuth = fp<{ token: string }>(
  async (app: FastifyInstance, { token }) => {
    // equal-length digests: the comparison time says nothing about the token
    const expected = digest(token)
    app.addHook('onRequest', async (request, reply) => {
      const route = request.routeOptions.url
      if (route !== undefined && PUBLIC_ROUTES.has(route)) return
      const header = request.headers.authorization
      const presented = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined
      if (presented !== undefined && timingSafeEqual(digest(presented), expected)) return
      reply.header('www-authenticate', 'Bearer realm="iisan-embedding-cache"')
      return reply.status(401).send({
        error: {
          code: 'UNAUTHORIZED',
          message: presented === undefined ? 'the embedding cache needs the service token: Authorization: Bearer <INTERNAL_TOKEN>' : 'the service token is not valid',
        },
      })
    })
  },
  { name: 'embedding-cache/internal-token' },
)
