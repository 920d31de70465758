// Reading a multipart/form-data body within the limits of its route. Malformed bodies (truncated,
// bad boundary) and exceeded limits surface as errors @iisan/http maps (400 MALFORMED_MULTIPART,
// 413 PAYLOAD_TOO_LARGE); a field cut off at its size limit is a 413 too, never a shortened value.
import type { FastifyRequest, FastifySchema } from 'fastify'
import type { MultipartFile } from '@fastify/multipart'
import type { SwaggerTransform } from '@fastify/swagger'
import { Type, type TObject } from '@sinclair/typebox'
import { ApiError } from '@iisan/http'

export type MultipartLimits = NonNullable<NonNullable<Parameters<FastifyRequest['parts']>[0]>['limits']>

export interface ReadMultipartOptions<F> {
  limits: MultipartLimits
  /** Reads one file part (it must be consumed or the body stalls); the result is kept under its field name. */
  onFile(part: MultipartFile): Promise<F>
}

export async function readMultipartFields<F>(request: FastifyRequest, options: ReadMultipartOptions<F>): Promise<{ fields: Record<string, string>; files: Record<string, F> }> {
  const fields: Record<string, string> = {}
  const files: Record<string, F> = {}
  for await (const part of request.parts({ limits: options.limits })) {
    if (part.type === 'file') {
      files[part.fieldname] = await options.onFile(part)
      continue
    }
    if (part.fieldnameTruncated || part.valueTruncated) {
      throw new ApiError(413, 'PAYLOAD_TOO_LARGE', `multipart field ${part.fieldname} is longer than ${options.limits.fieldSize ?? 'the limit of'} bytes`, { field: part.fieldname })
    }
    fields[part.fieldname] = String(part.value)
  }
  return { fields, files }
}

/** A file part of a multipart body, as OpenAPI describes one (Swagger UI offers a file picker). */
export const FileField = (description: string) => Type.String({ format: 'binary', description })

/**
 * For a route that reads a multipart body itself besides its JSON one: `form` appears in the
 * OpenAPI document as the `multipart/form-data` request body, next to the JSON schema. Only in
 * the document: Fastify must not validate it, since @fastify/multipart leaves the body to the
 * handler (which checks it with bodyValidator).
 */
export function documentMultipart(form: TObject): SwaggerTransform {
  return ({ schema, url }) => {
    const body = schema.body as { content: Record<string, unknown> }
    return { url, schema: { ...schema, body: { ...body, content: { ...body.content, 'multipart/form-data': { schema: form } } } } as FastifySchema }
  }
}
