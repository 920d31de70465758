export type CacheErrorCode = 'NOT_FOUND' | 'BACKBONE_NOT_CONFIGURED' | 'INVALID_INPUT' | 'BACKBONE_UNAVAILABLE'

const STATUS: Record<CacheErrorCode, number> = {
  NOT_FOUND: 404,
  BACKBONE_NOT_CONFIGURED: 404,
  INVALID_INPUT: 400,
  BACKBONE_UNAVAILABLE: 503,
}

/** A domain error of the embedding cache; `code` is machine-readable, `details` JSON-serialisable. */
export class CacheError extends Error {
  readonly statusCode: number
  constructor(
    readonly code: CacheErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message)
    this.name = 'CacheError'
    this.statusCode = STATUS[code]
  }
}

export function isCacheError(e: unknown, code?: CacheErrorCode): e is CacheError {
  return e instanceof CacheError && (code === undefined || e.code === code)
}
