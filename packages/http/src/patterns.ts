// Which characters a text field of a request may hold, as JSON-schema `pattern`s (ajv and TypeBox
// both read them), and what each means in words for the error message.

/**
 * For single-line text (names, titles, URLs, search terms): no control characters at all — C0
 * (U+0000–U+001F, tab and newline included) and DEL. PostgreSQL cannot store NUL, and the others
 * break the TSV files and logs the values end up in.
 */
export const SINGLE_LINE_PATTERN = '^[^\\u0000-\\u001F\\u007F]*$'

/** For external ids (item, user): no whitespace and no control characters, as in the TSV files. */
export const ID_PATTERN = '^[^\\s\\u0000-\\u001F\\u007F]+$'

/** For multi-line free text (descriptions): like SINGLE_LINE_PATTERN but tab, LF and CR are allowed. */
export const MULTI_LINE_PATTERN = '^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F]*$'

const MEANING = new Map<unknown, string>([
  [SINGLE_LINE_PATTERN, 'must not contain control characters (U+0000–U+001F, U+007F)'],
  [ID_PATTERN, 'must not contain whitespace or control characters'],
  [MULTI_LINE_PATTERN, 'must not contain control characters other than tab and newline'],
])

/** The message for a value that failed one of the patterns above; undefined for any other pattern. */
export function patternMeaning(pattern: unknown): string | undefined {
  return MEANING.get(pattern)
}
