// One error shape for every 4xx/5xx of every service: { error: { code, message, details? } }.
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import { isStorageError, type StorageErrorCode } from '@iisan/storage/errors'
import { patternMeaning } from './patterns.ts'
import { dependencyFailure } from './dependency-errors.ts'

const CODE_DESCRIPTION = 'machine-readable error code'

function errorBodySchema(codeDescription: string) {
  return Type.Object(
    {
      error: Type.Object({
        code: Type.String({ description: codeDescription }),
        message: Type.String(),
        details: Type.Optional(Type.Unknown()),
      }),
    },
    { $id: 'ErrorBody' },
  )
}

export const ErrorBody = errorBodySchema(CODE_DESCRIPTION)

/** An error a route throws on purpose: sent as it is. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message)
  }
}

/** What an error becomes on the wire. */
export interface HttpErrorView {
  statusCode: number
  code: string
  message: string
  details?: unknown
  /** Response headers to add, e.g. Retry-After. */
  headers?: Record<string, string>
  /** Logged at warn level, without a stack, instead of sent: for expected server-side failures. */
  log?: Record<string, unknown>
}

/** Turns an error a service knows about into its response; `undefined` passes it on. */
export type ErrorMapping = (err: Error) => HttpErrorView | undefined

export interface ErrorHandlingOptions {
  /** Codes named in the OpenAPI description of `error.code`, e.g. ['VALIDATION_FAILED', 'UNKNOWN_ITEMS']. */
  codeExamples?: string[]
  /** Tried in order after ApiError, before Fastify's own validation and 4xx errors (and before dependencyErrors). */
  mappings?: ErrorMapping[]
  /** Retry-After of a 503 DEPENDENCY_UNAVAILABLE, in seconds (default 5). */
  retryAfterSeconds?: number
}

/** Seconds a client is told to wait when a dependency is down: about a restart or a failover. */
export const DEFAULT_RETRY_AFTER_SECONDS = 5

// Exhaustive so that a new storage code has to be given a status here.
const STORAGE_STATUS: Record<StorageErrorCode, number> = {
  NOT_FOUND: 404,
  DUPLICATE_ITEM: 400,
  DUPLICATE_USER: 400,
  UNKNOWN_ITEM: 400,
  INVALID_INPUT: 400,
  CONFLICT: 409,
  CORRUPT: 500,
}

export const storageErrors: ErrorMapping = (err) =>
  isStorageError(err) ? { statusCode: STORAGE_STATUS[err.code], code: err.code, message: err.message, details: err.details } : undefined

/**
 * 503 DEPENDENCY_UNAVAILABLE with Retry-After for an error that says PostgreSQL, Redis or another
 * service is unreachable (see dependencyFailure): the request was fine and may be sent again.
 */
export function dependencyErrors(retryAfterSeconds = DEFAULT_RETRY_AFTER_SECONDS): ErrorMapping {
  return (err) => {
    const failure = dependencyFailure(err)
    if (!failure) return undefined
    // The reason (host, port, SQLSTATE) goes to the log only: clients learn what is down, not where.
    return {
      statusCode: 503,
      code: 'DEPENDENCY_UNAVAILABLE',
      message: `${failure.dependency} is unavailable; try again in ${retryAfterSeconds} s`,
      details: { dependency: failure.dependency },
      headers: { 'retry-after': String(retryAfterSeconds) },
      log: { dependency: failure.dependency, reason: failure.reason },
    }
  }
}

/** The documented 503 of every route: the body of any error, and when to try again. */
export function dependencyUnavailableResponse() {
  return {
    ...Type.Ref(ErrorBody),
    description: 'DEPENDENCY_UNAVAILABLE: PostgreSQL, Redis or another service is unreachable; details.dependency names it. Retry after the Retry-After seconds.',
    headers: { 'retry-after': { type: 'integer', description: 'seconds to wait before trying again' } },
  }
}

export const errorHandling = fp<ErrorHandlingOptions>(async (app: FastifyInstance, options) => {
  const mappings = [...(options.mappings ?? []), dependencyErrors(options.retryAfterSeconds)]
  const examples = options.codeExamples?.length ? `, e.g. ${options.codeExamples.join(', ')}` : ''
  app.addSchema(errorBodySchema(CODE_DESCRIPTION + examples))
  // Any route with documented responses can meet a database outage: document the 503 on each.
  app.addHook('onRoute', (route) => {
    const response = route.schema?.response as Record<string, unknown> | undefined
    if (response && typeof response === 'object' && !('503' in response)) response['503'] = dependencyUnavailableResponse()
  })
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof ApiError) return reply.status(err.statusCode).send(errorBody(err.code, err.message, err.details))
    for (const map of [...mappings, transportErrors(request.routeOptions.bodyLimit), invalidTextErrors]) {
      const view = map(err)
      if (!view) continue
      // an outage is expected and may last: one line per request, no stack
      if (view.log) request.log.warn(view.log, view.message)
      if (view.headers) reply.headers(view.headers)
      return reply.status(view.statusCode).send(errorBody(view.code, view.message, view.details))
    }
    if (err.validation) return reply.status(400).send(errorBody('VALIDATION_FAILED', validationMessage(err), err.validation))
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.status(err.statusCode).send(errorBody(err.code ?? 'BAD_REQUEST', err.message))
    }
    request.log.error({ err }, 'unhandled error')
    return reply.status(500).send(errorBody('INTERNAL', 'internal server error'))
  })
  app.setNotFoundHandler((request, reply) => reply.status(404).send(errorBody('ROUTE_NOT_FOUND', `no route ${request.method} ${request.url}`)))
})

// Fastify's message, unless a text pattern failed: ajv would quote the regular expression.
function validationMessage(err: FastifyError): string {
  const errors = err.validation ?? []
  if (!errors.some((e) => e.keyword === 'pattern' && patternMeaning(e.params.pattern))) return err.message
  return errors.map((e) => `${err.validationContext ?? ''}${e.instancePath} ${(e.keyword === 'pattern' && patternMeaning(e.params.pattern)) || e.message}`).join(', ')
}

// What Fastify and @fastify/multipart raise about the request as sent, under the platform's codes.
const MULTIPART_CODES = new Set(['FST_MP_PREMATURE_CLOSE', 'FST_PROTO_VIOLATION', 'FST_INVALID_JSON_FIELD_ERROR'])
const MULTIPART_LIMIT_CODES = new Set(['FST_REQ_FILE_TOO_LARGE', 'FST_FILES_LIMIT', 'FST_FIELDS_LIMIT', 'FST_PARTS_LIMIT'])
// busboy (and the stream search inside it) throws plain Errors with no code: known by message.
const BUSBOY_MESSAGES = [
  /unexpected end of multipart data/i,
  /^Multipart: Boundary not found$/,
  /^Boundary required$/,
  /^Malformed part header$/,
  /^The needle cannot (be an empty String\/Buffer|have a length bigger than 256)\.$/,
]

/** A malformed multipart/form-data body (truncated, no or bad boundary, bad part). */
export function isMultipartError(err: Error): boolean {
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string') return MULTIPART_CODES.has(code)
  return BUSBOY_MESSAGES.some((re) => re.test(err.message))
}

function transportErrors(bodyLimit: number | undefined): ErrorMapping {
  return (err) => {
    const code = (err as { code?: unknown }).code
    if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return { statusCode: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: `unsupported content-type: ${err.message}` }
    if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return { statusCode: 413, code: 'PAYLOAD_TOO_LARGE', message: `request body is larger than ${bodyLimit ?? 'the limit of'} bytes`, details: { limitBytes: bodyLimit } }
    }
    if (typeof code === 'string' && MULTIPART_LIMIT_CODES.has(code)) return { statusCode: 413, code: 'PAYLOAD_TOO_LARGE', message: `multipart body over a limit: ${err.message}`, details: { reason: code } }
    if (isMultipartError(err)) return { statusCode: 400, code: 'MALFORMED_MULTIPART', message: `malformed multipart/form-data body: ${err.message}` }
    return undefined
  }
}

// PostgreSQL refuses some text outright: NUL (22021 invalid byte sequence), \u0000 in JSON (22P05).
// The routes' schemas keep such characters out; this is the safety net for any path they miss.
const PG_TEXT_STATES = new Set(['22021', '22P05'])

function sqlStateOf(err: unknown): string | undefined {
  if (err === null || typeof err !== 'object') return undefined
  const e = err as { code?: unknown; meta?: { driverAdapterError?: { cause?: { originalCode?: unknown; code?: unknown } } }; cause?: unknown }
  const cause = e.meta?.driverAdapterError?.cause
  for (const c of [cause?.originalCode, cause?.code, e.code]) if (typeof c === 'string' && PG_TEXT_STATES.has(c)) return c
  return undefined
}

export const invalidTextErrors: ErrorMapping = (err) => {
  const state = sqlStateOf(err) ?? sqlStateOf((err as { cause?: unknown }).cause) ?? (/invalid byte sequence for encoding/i.test(err.message) ? '22021' : undefined)
  if (!state) return undefined
  return { statusCode: 400, code: 'VALIDATION_FAILED', message: 'the request holds text that cannot be stored (e.g. a NUL character, \\u0000)', details: { sqlState: state } }
}

function errorBody(code: string, message: string, details?: unknown) {
  return { error: details === undefined ? { code, message } : { code, message, details } }
}

/** Response schemas for the documented error statuses of a route. */
export function errorResponses(...statuses: number[]) {
  return Object.fromEntries(statuses.map((s) => [s, Type.Ref(ErrorBody)]))
}
