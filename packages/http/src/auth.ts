// Optional API keys for a self-hosted deployment: when keys are configured, every /v1 route
// needs one (`Authorization: Bearer <key>` or `X-API-Key`); health, metrics, the OpenAPI page and
// the dashboard's static files stay open (the dashboard asks for a key and sends it itself).
//
// Which requests need a key is decided by encapsulation, never by reading the URL: the router
// decodes percent-escapes, strips absolute-form origins and (depending on its options) folds
// case, slashes and trailing slashes before matching, so any check on the raw `request.url`
// string can be walked around with another spelling of the same route (`/%761/datasets`,
// `GET http://host/v1/...`). A hook added inside a plugin scope runs for exactly the routes
// registered in that scope, whatever spelling the router matched them by.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'

export interface ApiKeyOptions {
  keys: string[]
}

const digest = (key: string) => createHash('sha256').update(key).digest()

/**
 * Register this first inside the scope whose routes need a key (the `/v1` plugin), before the
 * scope registers any route or child plugin: child scopes copy their parent's hooks when they are
 * created, so a hook added later would miss them.
 *
 * Paths under the scope's prefix that match no route are not this scope's: they get the app's
 * ordinary 404 with or without a key. That reveals nothing, the route table is published at
 * /docs anyway, and it keeps one answer for "no such route" however the path is spelled.
 */
export function apiKeyAuth(options: ApiKeyOptions): FastifyPluginAsync {
  return fp(async (app: FastifyInstance) => {
    if (options.keys.length === 0) return
    // compare digests: equal length, and the comparison time says nothing about the key
    const accepted = options.keys.map(digest)
    app.addHook('onRequest', async (request, reply) => {
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
