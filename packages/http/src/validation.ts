// Validating values Fastify did not validate itself (multipart fields) with the route's TypeBox
// schema, with errors shaped like Fastify's own.
import { FormatRegistry, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ApiError } from './errors.ts'
import { patternMeaning } from './patterns.ts'

// TypeBox knows no string formats by itself (an unknown format fails every value); the request
// schemas use only `uuid`, checked as ajv-formats (what Fastify validates with) does.
if (!FormatRegistry.Has('uuid')) FormatRegistry.Set('uuid', (v) => /^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(v))

/** One failed rule, in the shape of Fastify's own validation errors (`details` of VALIDATION_FAILED). */
export interface FieldError {
  instancePath: string
  message: string
}

/**
 * A validator for values that bypass Fastify's schema validation (e.g. multipart fields): the
 * value back, typed, or an ApiError 400 VALIDATION_FAILED listing every failed rule.
 */
export function bodyValidator<T extends TSchema>(schema: T, what = 'body'): (value: unknown) => Static<T> {
  const compiled = TypeCompiler.Compile(schema)
  return (value) => {
    if (compiled.Check(value)) return value as Static<T>
    const errors: FieldError[] = [...compiled.Errors(value)].slice(0, 20).map((e) => ({
      instancePath: e.path,
      message: patternMeaning((e.schema as { pattern?: unknown }).pattern) ?? e.message.charAt(0).toLowerCase() + e.message.slice(1),
    }))
    throw new ApiError(400, 'VALIDATION_FAILED', errors.map((e) => `${what}${e.instancePath} ${e.message}`).join(', '), errors)
  }
}
