// `Idempotency-Key` on the routes that create something (route config `idempotent: true`), as in
// Stripe's API and the IETF httpapi idempotency-key draft: the first request with a key runs and
// its response (status and body) is stored; a retry with the same key and request gets that
// response again, marked `Idempotent-Replayed: true`. The same key with another request → 422
// IDEMPOTENCY_KEY_REUSED; a retry while the first still runs → 409 IDEMPOTENCY_KEY_IN_PROGRESS with
// Retry-After. 4xx answers are stored like successes (the request would fail the same way again);
// a 5xx, or a process that dies mid-way, releases the key so a retry runs again. Keys are scoped to
// method + route template and expire after 24 h.
//
// What a request is: its params, query and body as the route validated them, fingerprinted with
// keys sorted (the same JSON in another key order, or with defaults spelled out, is the same
// request). The key is claimed after validation, so a request refused by its schema is not stored
// and can be corrected under the same key — as Stripe does.
//
// Multipart bodies are read by the handler, not by Fastify: such a handler calls
// `replayIdempotent(request, reply, input)` with what it parsed (fields and file contents) once it
// has read the parts. Hashing the raw body instead would make every retry a different request:
// clients pick a new random boundary each time. Fingerprinting the parsed input also makes a
// multipart upload and the equivalent JSON body the same request.
import { createHash, type Hash } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest, onSendHookHandler, preHandlerHookHandler, onResponseHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import type { Db } from '@iisan/storage/client'
import {
  claimIdempotencyKey,
  completeIdempotencyKey,
  deleteExpiredIdempotencyKeys,
  releaseIdempotencyKey,
  renewIdempotencyKey,
  type IdempotencyKeyRef,
} from '@iisan/storage/idempotency'
import { ApiError, errorResponses } from './errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Honour an `Idempotency-Key` header (creating POSTs). Multipart handlers call replayIdempotent. */
    idempotent?: boolean
  }
}

export const IDEMPOTENCY_HEADER = 'idempotency-key'
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255

export interface IdempotencyOptions {
  prisma: Db
  /** How long a stored response is replayed (default 24 h). */
  ttlSeconds?: number
  /** An in-progress key not renewed for this long belongs to a dead process and is taken over (default 60 s). */
  leaseSeconds?: number
  /** Retry-After of a 409 IDEMPOTENCY_KEY_IN_PROGRESS (default 1 s). */
  retryAfterSeconds?: number
}

const DAY_SECONDS = 24 * 3600
// Renewals stop after this long: a handler that never answers must not hold its key forever.
// Longer than any request can take (an import's transaction times out after 15 min).
const MAX_HOLD_MS = 30 * 60_000
// Expired rows are deleted lazily, by a claim, at most this often per process.
const PURGE_EVERY_MS = 10 * 60_000

const KeyHeader = Type.String({
  minLength: 1,
  maxLength: MAX_IDEMPOTENCY_KEY_LENGTH,
  description:
    'Makes a retry safe: a unique value per operation (e.g. a UUID). The first response with the key (status and body, 4xx included) is stored for 24 h and replayed, ' +
    'with `Idempotent-Replayed: true`, to a retry with the same key and request. The key with a different request → 422 IDEMPOTENCY_KEY_REUSED; ' +
    'a retry while the first is still running → 409 IDEMPOTENCY_KEY_IN_PROGRESS with Retry-After. After a 5xx the key is free again.',
})

type Claimed = { ref: IdempotencyKeyRef; stop(): void }

// Per request: the key it holds, or the key its multipart handler has yet to claim.
const claimed = new WeakMap<FastifyRequest, Claimed>()
const pending = new WeakMap<FastifyRequest, (reply: FastifyReply, input: unknown) => Promise<boolean>>()

/**
 * For a multipart request of an idempotent route, once the handler has parsed `input` (what it
 * would pass on: fields and file contents): claims the key with it as the request's body. True
 * when the stored response was sent instead — the handler then returns `reply`; 409 and 422 are
 * thrown. False (go ahead) for requests without a key and for JSON ones (claimed before the handler).
 */
export async function replayIdempotent(request: FastifyRequest, reply: FastifyReply, input: unknown): Promise<boolean> {
  const claim = pending.get(request)
  if (!claim) return false
  pending.delete(request)
  return claim(reply, input)
}

export function idempotency(options: IdempotencyOptions) {
  const ttlSeconds = options.ttlSeconds ?? DAY_SECONDS
  const leaseSeconds = options.leaseSeconds ?? 60
  const retryAfter = String(options.retryAfterSeconds ?? 1)
  const db = options.prisma
  let lastPurge = 0

  return fp(
    async (app: FastifyInstance) => {
      /** True when the request was answered here (a replay); throws 409/422. */
      async function begin(request: FastifyRequest, reply: FastifyReply, key: string, body: unknown): Promise<boolean> {
        const scope = `${request.method} ${request.routeOptions.url}`
        const ref = { scope, key, requestHash: fingerprint({ params: request.params, query: request.query, body }) }
        const claim = await claimIdempotencyKey(db, ref, { ttlSeconds, leaseSeconds })
        if (Date.now() - lastPurge > PURGE_EVERY_MS) {
          lastPurge = Date.now()
          deleteExpiredIdempotencyKeys(db, ttlSeconds).catch((err) => request.log.warn({ err }, 'deleting expired idempotency keys failed'))
        }
        if (claim.outcome === 'claimed') {
          claimed.set(request, { ref, stop: renewWhileRunning(request, ref) })
          return false
        }
        if (claim.requestHash !== ref.requestHash) {
          throw new ApiError(422, 'IDEMPOTENCY_KEY_REUSED', `Idempotency-Key ${key} was already used for a different request to ${scope}; use a new key for a new request`, { key, scope })
        }
        if (claim.outcome === 'in-progress') {
          reply.header('retry-after', retryAfter)
          throw new ApiError(409, 'IDEMPOTENCY_KEY_IN_PROGRESS', `a request with Idempotency-Key ${key} is still being processed; retry later for its response`, { key, scope })
        }
        reply.header('idempotent-replayed', 'true').status(claim.statusCode).send(claim.responseBody)
        return true
      }

      function renewWhileRunning(request: FastifyRequest, ref: IdempotencyKeyRef): () => void {
        const started = Date.now()
        const timer = setInterval(() => {
          if (Date.now() - started > MAX_HOLD_MS) return clearInterval(timer)
          renewIdempotencyKey(db, ref).catch((err) => request.log.warn({ err, scope: ref.scope }, 'renewing an idempotency key failed'))
        }, (leaseSeconds * 1000) / 4)
        timer.unref()
        return () => clearInterval(timer)
      }

      const preHandler: preHandlerHookHandler = async function (request, reply) {
        const key = keyOf(request)
        if (key === undefined) return
        // isMultipart comes with @fastify/multipart; without it no body is multipart
        if (typeof request.isMultipart === 'function' && request.isMultipart()) {
          pending.set(request, (r, input) => begin(request, r, key, input))
          return
        }
        if (await begin(request, reply, key, request.body)) return reply
      }

      const onSend: onSendHookHandler = async function (request, reply, payload) {
        const held = claimed.get(request)
        if (!held) return payload
        claimed.delete(request)
        held.stop()
        const body = reply.statusCode < 500 ? parseJson(payload) : undefined
        try {
          if (body === undefined) await releaseIdempotencyKey(db, held.ref)
          else if (!(await completeIdempotencyKey(db, held.ref, { statusCode: reply.statusCode, body }))) {
            request.log.warn({ scope: held.ref.scope }, 'idempotency key was taken over (lease lapsed) before the response was stored')
          }
        } catch (err) {
          // the key stays in progress until its lease lapses, then a retry runs again
          request.log.error({ err, scope: held.ref.scope }, 'storing the idempotent response failed')
        }
        return payload
      }

      // onSend did not run (the response failed before it): the key must not stay held.
      const onResponse: onResponseHookHandler = async function (request) {
        const held = claimed.get(request)
        if (!held) return
        claimed.delete(request)
        held.stop()
        await releaseIdempotencyKey(db, held.ref).catch((err) => request.log.warn({ err }, 'releasing an idempotency key failed'))
      }

      app.addHook('onRoute', (route) => {
        if (!route.config?.idempotent) return
        // the header (and the answers it adds) in the route's own schema: validated, and on /docs
        const schema = (route.schema ??= {}) as { headers?: unknown; response?: Record<string, unknown> }
        schema.headers = withKeyHeader(schema.headers)
        schema.response = { ...errorResponses(409, 422), ...schema.response }
        route.preHandler = [...asArray(route.preHandler), preHandler]
        route.onSend = [...asArray(route.onSend), onSend]
        route.onResponse = [...asArray(route.onResponse), onResponse]
      })
    },
    { name: '@iisan/http/idempotency' },
  )
}

function keyOf(request: FastifyRequest): string | undefined {
  const value = request.headers[IDEMPOTENCY_HEADER]
  if (value === undefined) return undefined
  // the headers schema has checked it; this is for a route whose schema replaced it
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw new ApiError(400, 'VALIDATION_FAILED', `Idempotency-Key must be 1–${MAX_IDEMPOTENCY_KEY_LENGTH} characters`, [{ instancePath: '/idempotency-key', message: `must be 1–${MAX_IDEMPOTENCY_KEY_LENGTH} characters` }])
  }
  return value
}

function withKeyHeader(headers: unknown): unknown {
  if (headers === undefined) return Type.Object({ [IDEMPOTENCY_HEADER]: Type.Optional(KeyHeader) })
  const h = headers as { type?: unknown; properties?: Record<string, unknown> }
  if (h.type !== 'object') throw new Error('an idempotent route needs an object headers schema to add Idempotency-Key to')
  return { ...h, properties: { ...h.properties, [IDEMPOTENCY_HEADER]: KeyHeader } }
}

const asArray = <T>(hooks: T | T[] | undefined): T[] => (hooks === undefined ? [] : Array.isArray(hooks) ? hooks : [hooks])

/** The serialized response body as JSON, or undefined when it is not JSON (it is then not stored). */
function parseJson(payload: unknown): object | undefined {
  const text = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : undefined
  if (text === undefined) return undefined
  try {
    const value: unknown = JSON.parse(text)
    return value !== null && typeof value === 'object' ? value : undefined
  } catch {
    return undefined
  }
}

/**
 * sha256 over a canonical, length-prefixed encoding of a JSON-like value (object keys sorted,
 * undefined members left out, bytes as bytes): equal values, equal hash, without building a copy
 * of a 256 MB upload as one string.
 */
export function fingerprint(value: unknown): string {
  const hash = createHash('sha256')
  feed(hash, value)
  return hash.digest('hex')
}

function feed(hash: Hash, value: unknown): void {
  if (value === null || value === undefined) hash.update('n')
  else if (typeof value === 'string') hash.update(`s${Buffer.byteLength(value)}:`).update(value)
  else if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') hash.update(`${(typeof value)[0]}${String(value)};`)
  else if (value instanceof Uint8Array) hash.update(`x${value.byteLength}:`).update(value)
  else if (Array.isArray(value)) {
    hash.update(`a${value.length}[`)
    for (const v of value) feed(hash, v)
    hash.update(']')
  } else if (typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    hash.update(`o${entries.length}{`)
    for (const [k, v] of entries) {
      feed(hash, k)
      feed(hash, v)
    }
    hash.update('}')
  } else throw new TypeError(`cannot fingerprint a ${typeof value}`)
}
