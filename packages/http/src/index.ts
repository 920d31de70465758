/** @iisan/http — what every Fastify service of the platform shares: the error shape and /healthz. */
export { ApiError, ErrorBody, errorHandling, errorResponses, storageErrors, type ErrorHandlingOptions, type ErrorMapping, type HttpErrorView } from './errors.ts'
export { healthCheck, type CheckResult, type HealthCheckOptions } from './health.ts'
export * from './metrics.ts'
