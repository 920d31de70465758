// Request validation beyond Fastify's defaults: messages that say what is wrong in words (for
// Fastify's own validation and for values it does not validate, such as multipart fields), and
// request schemas whose defaulted fields are documented as optional.
import type { FastifyInstance, FastifySchemaValidationError, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { FormatRegistry, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ValueErrorType } from '@sinclair/typebox/errors'
import { ApiError } from './errors.ts'
import { patternMeaning } from './patterns.ts'

// TypeBox knows no string formats by itself (an unknown format fails every value); the request
// schemas use only `uuid`, checked as ajv-formats (what Fastify validates with) does.
if (!FormatRegistry.Has('uuid')) FormatRegistry.Set('uuid', (v) => /^(?:urn:uuid:)?[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(v))

/** Fastify's ajv options for the API (and bench/serve.ts's exchange reference): coercion so query strings validate as numbers (bodies with non-numeric strings still fail). */
export const AJV_OPTIONS = { removeAdditional: false, coerceTypes: 'array', useDefaults: true } as const

/** One failed rule, in the shape of Fastify's own validation errors (`details` of VALIDATION_FAILED). */
export interface FieldError {
  instancePath: string
  message: string
}

type JsonSchema = Record<string, unknown>

const isSchema = (s: unknown): s is JsonSchema => s !== null && typeof s === 'object' && !Array.isArray(s)

/** The values a union of literals (TypeBox's anyOf of consts) or an enum allows; undefined for any other schema. */
function allowedValues(schema: unknown): unknown[] | undefined {
  if (!isSchema(schema)) return undefined
  if (Array.isArray(schema.enum)) return schema.enum
  const branches = schema.anyOf
  if (Array.isArray(branches) && branches.length && branches.every((b) => isSchema(b) && 'const' in b)) return branches.map((b) => (b as JsonSchema).const)
  return undefined
}

const oneOf = (values: unknown[]) => `must be one of ${values.map((v) => JSON.stringify(v)).join(', ')}`

/** The message for a property an object does not take: its name, and what was probably meant. */
function unknownProperty(name: string, objectSchema: unknown): string {
  const known = isSchema(objectSchema) && isSchema(objectSchema.properties) ? Object.keys(objectSchema.properties) : []
  const meant = known.find((k) => k.toLowerCase() === name.toLowerCase())
  const hint = meant ? ` (did you mean "${meant}"?)` : known.length && known.length <= 30 ? ` (known: ${known.join(', ')})` : ''
  return `has unknown property "${name}"${hint}`
}

const lowerFirst = (s: string) => s.charAt(0).toLowerCase() + s.slice(1)

/**
 * A validator for values that bypass Fastify's schema validation (e.g. multipart fields): the
 * value back, typed, or an ApiError 400 VALIDATION_FAILED listing every failed rule.
 */
export function bodyValidator<T extends TSchema>(schema: T, what = 'body'): (value: unknown) => Static<T> {
  const compiled = TypeCompiler.Compile(schema)
  return (value) => {
    if (compiled.Check(value)) return value as Static<T>
    const sentences: string[] = []
    const errors: FieldError[] = [...compiled.Errors(value)].slice(0, 20).map((e) => {
      if (e.type === ValueErrorType.ObjectAdditionalProperties) {
        // TypeBox points at the property; the sentence is about the object that has it
        const name = e.path.split('/').pop()!
        const message = unknownProperty(name, e.schema)
        sentences.push(`${what}${e.path.slice(0, -name.length - 1)} ${message}`)
        return { instancePath: e.path, message }
      }
      const values = allowedValues(e.schema)
      const message = values ? oneOf(values) : (patternMeaning((e.schema as { pattern?: unknown }).pattern) ?? lowerFirst(e.message))
      sentences.push(`${what}${e.path} ${message}`)
      return { instancePath: e.path, message }
    })
    throw new ApiError(400, 'VALIDATION_FAILED', sentences.join(', '), errors)
  }
}

/** The sub-schema at an ajv schemaPath ("#/properties/config/additionalProperties" → that keyword's parent's child). */
function schemaAt(root: unknown, schemaPath: string): unknown {
  let node = root
  for (const segment of schemaPath.replace(/^#\/?/, '').split('/').filter(Boolean)) {
    if (!isSchema(node) && !Array.isArray(node)) return undefined
    node = (node as Record<string, unknown>)[decodeURIComponent(segment.replace(/~1/g, '/').replace(/~0/g, '~'))]
  }
  return node
}

/** The JSON schema Fastify validated `dataVar` with, for a route. */
function validatedSchema(schema: RouteOptions['schema'], dataVar: string): unknown {
  const part = (schema as Record<string, unknown> | undefined)?.[dataVar]
  const content = isSchema(part) && isSchema(part.content) ? part.content : undefined
  // only JSON bodies reach ajv; multipart ones go through bodyValidator
  return content ? (content['application/json'] as JsonSchema | undefined)?.schema : part
}

/**
 * Fastify's validation errors in words. ajv reports a union of literals as one "must be equal to
 * constant" per alternative plus "must match a schema in anyOf": here it is one "must be one of
 * …" naming them; an unknown property is named (with what was probably meant); patterns say
 * what they forbid.
 */
function describeSchemaErrors(errors: FastifySchemaValidationError[], schema?: unknown): FieldError[] {
  const schemaPathOf = (e: FastifySchemaValidationError) => (e as { schemaPath?: string }).schemaPath ?? ''
  // the union (anyOf or enum) an error belongs to: the consts' paths end in /anyOf/<i>/const
  const unionOf = (e: FastifySchemaValidationError) =>
    e.keyword === 'const' ? schemaPathOf(e).replace(/\/\d+\/const$/, '') : e.keyword === 'enum' ? schemaPathOf(e).replace(/\/enum$/, '') : e.keyword === 'anyOf' ? schemaPathOf(e) : undefined
  const valuesOf = (e: FastifySchemaValidationError, union: string): unknown[] | undefined => {
    const declared = allowedValues(schemaAt(schema, union))
    if (declared) return declared
    if (e.keyword === 'enum') return e.params.allowedValues as unknown[]
    const consts = errors.filter((x) => x.keyword === 'const' && unionOf(x) === union).map((x) => x.params.allowedValue)
    return consts.length ? consts : undefined
  }
  const out: FieldError[] = []
  const described = new Set<string>()
  for (const e of errors) {
    const union = unionOf(e)
    const values = union === undefined ? undefined : valuesOf(e, union)
    if (values) {
      const key = `${e.instancePath} ${union}`
      if (!described.has(key)) out.push({ instancePath: e.instancePath, message: oneOf(values) })
      described.add(key)
    } else if (e.keyword === 'additionalProperties') {
      out.push({ instancePath: e.instancePath, message: unknownProperty(String(e.params.additionalProperty), schemaAt(schema, schemaPathOf(e).replace(/\/additionalProperties$/, ''))) })
    } else {
      out.push({ instancePath: e.instancePath, message: (e.keyword === 'pattern' && patternMeaning(e.params.pattern)) || e.message || e.keyword })
    }
  }
  return out
}

/** Removes from `required` the properties that have a default, at every level; a copy where anything changed. */
function defaultsOptional(schema: unknown): unknown {
  if (!isSchema(schema)) return schema
  let changed = false
  const copy: JsonSchema = { ...schema }
  const visit = (key: string, value: unknown) => {
    const next = Array.isArray(value) ? value.map(defaultsOptional) : isSchema(value) && key !== 'properties' ? defaultsOptional(value) : value
    if (Array.isArray(value) ? (next as unknown[]).some((n, i) => n !== value[i]) : next !== value) {
      copy[key] = next
      changed = true
    }
  }
  for (const key of ['items', 'anyOf', 'allOf', 'oneOf', 'additionalProperties']) if (key in schema) visit(key, schema[key])
  if (isSchema(schema.properties)) {
    const properties: JsonSchema = {}
    for (const [name, property] of Object.entries(schema.properties)) {
      properties[name] = defaultsOptional(property)
      if (properties[name] !== property) changed = true
    }
    if (changed) copy.properties = properties
    if (Array.isArray(schema.required)) {
      const declared = schema.properties
      const required = schema.required.filter((name) => !(isSchema(declared[name]) && 'default' in declared[name]))
      if (required.length !== schema.required.length) {
        changed = true
        if (required.length) copy.required = required
        else delete copy.required
      }
    }
  }
  return changed ? copy : schema
}

const REQUEST_PARTS = ['querystring', 'params', 'headers', 'body'] as const

/**
 * For every route registered after it (register it before the routes):
 * - validation errors described by describeSchemaErrors, against the route's own schema;
 * - request fields with a default documented as optional (the OpenAPI document lists `required`
 *   from the schema; ajv fills in a default that was not sent, so validation is unchanged).
 */
export const requestValidation = fp(
  async (app: FastifyInstance) => {
    app.addHook('onRoute', (route) => {
      const schema = route.schema as Record<string, unknown> | undefined
      if (!schema) return
      for (const part of REQUEST_PARTS) {
        const value = schema[part]
        if (isSchema(value) && isSchema(value.content)) {
          const content = value.content as Record<string, JsonSchema>
          schema[part] = { ...value, content: Object.fromEntries(Object.entries(content).map(([type, media]) => [type, { ...media, schema: defaultsOptional(media.schema) }])) }
        } else if (value !== undefined) schema[part] = defaultsOptional(value)
      }
      route.schemaErrorFormatter ??= (errors, dataVar) => {
        const described = describeSchemaErrors(errors, validatedSchema(route.schema, dataVar))
        return new Error(described.map((e) => `${dataVar}${e.instancePath} ${e.message}`).join(', '))
      }
    })
  },
  { name: 'iisan-request-validation' },
)
