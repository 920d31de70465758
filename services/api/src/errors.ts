// One error shape for every 4xx/5xx: { error: { code, message, details? } }.
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { DataFormatError } from '@iisan/model/data'
import { isStorageError } from '@iisan/storage'
import { Type } from '@sinclair/typebox'

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'machine-readable error code, e.g. VALIDATION_FAILED, UNKNOWN_ITEMS' }),
      message: Type.String(),
      details: Type.Optional(Type.Unknown()),
    }),
  },
  { $id: 'ErrorBody' },
)

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

const STORAGE_STATUS: Record<string, number> = {
  NOT_FOUND: 404,
  DUPLICATE_ITEM: 400,
  DUPLICATE_USER: 400,
  UNKNOWN_ITEM: 400,
  INVALID_INPUT: 400,
  CONFLICT: 409,
}

export const errorHandling = fp(async (app: FastifyInstance) => {
  app.addSchema(ErrorBody)
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof ApiError) return reply.status(err.statusCode).send(body(err.code, err.message, err.details))
    if (err instanceof DataFormatError) {
      return reply.status(400).send(body('MALFORMED_FILE', err.message, { file: `${err.file}.tsv`, line: err.line, reason: err.reason }))
    }
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
