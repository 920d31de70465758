// One error shape for every 4xx/5xx: { error: { code, message, details? } }.
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import { isCacheError } from '@iisan/embedding-cache/errors'
import { isStorageError } from '@iisan/storage'

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'machine-readable error code, e.g. VALIDATION_FAILED, NOT_FOUND, BACKBONE_NOT_CONFIGURED' }),
      message: Type.String(),
      details: Type.Optional(Type.Unknown()),
    }),
  },
  { $id: 'ErrorBody' },
)

const STORAGE_STATUS: Record<string, number> = { NOT_FOUND: 404, CONFLICT: 409 }

export const errorHandling = fp(async (app: FastifyInstance) => {
  app.addSchema(ErrorBody)
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (isCacheError(err)) return reply.status(err.statusCode).send(body(err.code, err.message, err.details))
    if (isStorageError(err)) return reply.status(STORAGE_STATUS[err.code] ?? 400).send(body(err.code, err.message, err.details))
    if (err.validation) return reply.status(400).send(body('VALIDATION_FAILED', err.message, err.validation))
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.status(err.statusCode).send(body(err.code ?? 'BAD_REQUEST', err.message))
    }
    request.log.error({ err }, 'unhandled error')
    return reply.status(500).send(body('INTERNAL', 'internal server error'))
  })
  app.setNotFoundHandler((request, reply) => reply.status(404).send(body('ROUTE_NOT_FOUND', `no route ${request.method} ${request.url}`)))
})

function body(code: string, message: string, details?: unknown) {
  return { error: details === undefined ? { code, message } : { code, message, details } }
}

/** Response schemas for the documented error statuses of a route. */
export function errorResponses(...statuses: number[]) {
  return Object.fromEntries(statuses.map((s) => [s, Type.Ref(ErrorBody)]))
}
