// How the API's domain errors look on the wire; the shape itself is @iisan/http's.
import { DataFormatError } from '@iisan/model/data'
import type { ErrorMapping } from '@iisan/http'

export const dataFormatErrors: ErrorMapping = (err) =>
  err instanceof DataFormatError
    ? { statusCode: 400, code: 'MALFORMED_FILE', message: err.message, details: { file: `${err.file}.tsv`, line: err.line, reason: err.reason } }
    : undefined
