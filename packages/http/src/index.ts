/** @iisan/http — what every Fastify service of the platform shares: the error shape, input rules and /healthz. */
export {
  ApiError,
  DEFAULT_RETRY_AFTER_SECONDS,
  ErrorBody,
  dependencyErrors,
  dependencyUnavailableResponse,
  errorHandling,
  errorResponses,
  invalidTextErrors,
  isMultipartError,
  storageErrors,
  type ErrorHandlingOptions,
  type ErrorMapping,
  type HttpErrorView,
} from './errors.ts'
export { DependencyUnavailableError, dependencyFailure, type DependencyFailure } from './dependency-errors.ts'
export { healthCheck, type CheckResult, type HealthCheckOptions } from './health.ts'
export { mediaTypeGuard, mediaTypeOf } from './media-types.ts'
export { ID_PATTERN, MULTI_LINE_PATTERN, SINGLE_LINE_PATTERN, patternMeaning } from './patterns.ts'
export { bodyValidator, type FieldError } from './validation.ts'
export * from './metrics.ts'
export * from './auth.ts'
export { IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY_LENGTH, fingerprint, idempotency, replayIdempotent, type IdempotencyOptions } from './idempotency.ts'
