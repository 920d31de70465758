// One error shape for every 4xx/5xx of every service: { error: { code, message, details? } }.
import type { FastifyError, FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import { isStorageError, type StorageErrorCode } from '@iisan/storage/errors'

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
}

/** Turns an error a service knows about into its response; `undefined` passes it on. */
export type ErrorMapping = (err: Error) => HttpErrorView | undefined

export interface ErrorHandlingOptions {
  /** Codes named in the OpenAPI description of `error.code`, e.g. ['VALIDATION_FAILED', 'UNKNOWN_ITEMS']. */
  codeExamples?: string[]
  /** Tried in order after ApiError, before Fastify's own validation and 4xx errors. */
  mappings?: ErrorMapping[]
}

// Exhaustive so that a new storage code has to be given a status here.
const STORAGE_STATUS: Record<StorageErrorCode, number> = {
  NOT_FOUND: 404,
  DUPLICATE_ITEM: 400,
  DUPLICATE_USER: 400,
  UNKNOWN_ITEM: 400,
  INVALID_INPUT: 400,
  CONFLICT: 409,
}

export const storageErrors: ErrorMapping = (err) =>
  isStorageError(err) ? { statusCode: STORAGE_STATUS[err.code], code: err.code, message: err.message, details: err.details } : undefined

export const errorHandling = fp<ErrorHandlingOptions>(async (app: FastifyInstance, options) => {
  const mappings = options.mappings ?? []
  const examples = options.codeExamples?.length ? `, e.g. ${options.codeExamples.join(', ')}` : ''
  app.addSchema(errorBodySchema(CODE_DESCRIPTION + examples))
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof ApiError) return reply.status(err.statusCode).send(errorBody(err.code, err.message, err.details))
    for (const map of mappings) {
      const view = map(err)
      if (view) return reply.status(view.statusCode).send(errorBody(view.code, view.message, view.details))
    }
    if (err.validation) return reply.status(400).send(errorBody('VALIDATION_FAILED', err.message, err.validation))
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.status(err.statusCode).send(errorBody(err.code ?? 'BAD_REQUEST', err.message))
    }
    request.log.error({ err }, 'unhandled error')
    return reply.status(500).send(errorBody('INTERNAL', 'internal server error'))
  })
  app.setNotFoundHandler((request, reply) => reply.status(404).send(errorBody('ROUTE_NOT_FOUND', `no route ${request.method} ${request.url}`)))
})

function errorBody(code: string, message: string, details?: unknown) {
  return { error: details === undefined ? { code, message } : { code, message, details } }
}

/** Response schemas for the documented error statuses of a route. */
export function errorResponses(...statuses: number[]) {
  return Object.fromEntries(statuses.map((s) => [s, Type.Ref(ErrorBody)]))
}
