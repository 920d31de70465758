// Routes that take a body accept only the media types they handle: 415 UNSUPPORTED_MEDIA_TYPE for
// anything else, before the body is read. Without this a text/plain body reaches a handler that
// expects an object (Fastify validates a `content`-keyed body schema only for the types it names).
import type { FastifyInstance, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { ApiError } from './errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Media types the body may come as; default: the keys of `schema.body.content`, else application/json. */
    mediaTypes?: string[]
  }
}

/** The media type of a Content-Type header without its parameters, lower-case ('' when absent). */
export function mediaTypeOf(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0].trim().toLowerCase()
}

function acceptedTypes(body: unknown, configured: string[] | undefined): string[] {
  if (configured?.length) return configured.map((t) => t.toLowerCase())
  const content = body !== null && typeof body === 'object' ? (body as { content?: unknown }).content : undefined
  if (content !== null && typeof content === 'object') return Object.keys(content).map((t) => t.toLowerCase())
  return ['application/json']
}

/**
 * Adds the check to every route registered after it (in this scope and below) whose schema has a
 * `body`. A request with no body at all gets 400 VALIDATION_FAILED: every such route needs one.
 */
export const mediaTypeGuard = fp(
  async (app: FastifyInstance) => {
    app.addHook('onRoute', (route) => {
      const body = (route.schema as { body?: unknown } | undefined)?.body
      if (body === undefined || body === null) return
      const accepted = acceptedTypes(body, (route.config as { mediaTypes?: string[] } | undefined)?.mediaTypes)
      const guard: onRequestHookHandler = async (request) => {
        const type = mediaTypeOf(request.headers['content-type'])
        if (accepted.includes(type)) return
        const hasBody = request.headers['transfer-encoding'] !== undefined || Number(request.headers['content-length'] ?? 0) > 0
        if (!type && !hasBody) throw new ApiError(400, 'VALIDATION_FAILED', `a request body is required (${accepted.join(' or ')})`, { accepted })
        throw new ApiError(415, 'UNSUPPORTED_MEDIA_TYPE', `content-type ${type || '(none)'} is not accepted here: send ${accepted.join(' or ')}`, { contentType: type || null, accepted })
      }
      const existing = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest]
      route.onRequest = [guard, ...existing]
    })
  },
  { name: '@iisan/http/media-types' },
)
