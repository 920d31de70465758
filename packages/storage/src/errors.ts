export type StorageErrorCode =
  | 'NOT_FOUND'
  | 'DUPLICATE_ITEM'
  | 'DUPLICATE_USER'
  | 'UNKNOWN_ITEM'
  | 'INVALID_INPUT'
  | 'CONFLICT'
  /** stored data that fails its own checks (a checkpoint with a missing or altered part) */
  | 'CORRUPT'

/** A domain error of the storage layer; `code` is machine-readable, `details` JSON-serialisable. */
export class StorageError extends Error {
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message)
    this.name = 'StorageError'
  }
}

export function isStorageError(e: unknown, code?: StorageErrorCode): e is StorageError {
  return e instanceof StorageError && (code === undefined || e.code === code)
}
