// Dataset import from the two TSV files (docs/METHOD.md §6 format) into Postgres, all or nothing.
import { decodeHTML } from 'entities'
import { DataFormatError, parseItemsTsv, parseUsersTsv } from '@iisan/model/data'
import { ImageSourceError, checkImageRef, type ImageSourceOptions } from '@iisan/embedding-cache/images'
import { importDataset, titleProblem, type PrismaClient } from '@iisan/storage'

export interface TsvImport {
  name: string
  description?: string
  itemsTsv: string
  usersTsv: string
}

// Control characters (C0 and DEL) a TSV file may not hold: tab separates columns, LF (or CRLF)
// ends a line; anything else never belongs in an id or a title (and PostgreSQL cannot store NUL).
const FORBIDDEN_IN_FILE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]|\r(?!\n|$)/
// In a title once its HTML entities are decoded ("&#9;" → tab): no control character at all.
const FORBIDDEN_IN_TITLE = /[\u0000-\u001F\u007F]/

const codePoint = (ch: string) => `U+${ch.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`

/** Throws a DataFormatError naming the line (numbered as the parser numbers them) and column. */
export function assertNoControlCharacters(file: 'items' | 'users', text: string): void {
  const match = FORBIDDEN_IN_FILE.exec(text)
  if (!match) return
  const before = text.slice(0, match.index)
  const line = before.split('\n').length
  const column = match.index - before.lastIndexOf('\n')
  throw new DataFormatError(file, line, `control character ${codePoint(match[0])} at column ${column} (only tab between columns and newline between lines are allowed)`)
}

/** The 1-based line number of every non-blank line, i.e. of each record the parser returns, in order. */
function recordLines(text: string): number[] {
  const out: number[] = []
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() !== '') out.push(i + 1)
  })
  return out
}

/**
 * Parses (DataFormatError names the line) and imports in one transaction. Image references are
 * checked as the embedding cache will check them before reading (`image`: the cache's policy,
 * by default IMAGE_ROOT / IMAGE_ALLOW_PRIVATE_HOSTS of this process, read as the cache reads them),
 * so a reference the cache would refuse fails the import on its line instead of the item later.
 */
export async function importDatasetFromTsv(prisma: PrismaClient, input: TsvImport, image: Pick<ImageSourceOptions, 'root' | 'allowPrivateHosts'> = {}) {
  assertNoControlCharacters('items', input.itemsTsv)
  assertNoControlCharacters('users', input.usersTsv)
  // Scraped catalogues carry HTML entities (Scientific: "&amp;", "&quot;"); titles are shown to
  // people and read by the text backbone, so store them decoded.
  const items = parseItemsTsv(input.itemsTsv).map((item) => ({ ...item, title: decodeHTML(item.title) }))
  if (items.length === 0) throw new DataFormatError('items', 1, 'no items')
  const lines = recordLines(input.itemsTsv)
  items.forEach((item, i) => {
    const ch = item.title.match(FORBIDDEN_IN_TITLE)?.[0]
    if (ch) throw new DataFormatError('items', lines[i], `title decodes to control character ${codePoint(ch)} (an HTML entity such as &#1;)`)
    // the decoded title is what is stored, so that is what the rule of POST /v1/items applies to
    const problem = titleProblem(item.title)
    if (problem) throw new DataFormatError('items', lines[i], problem)
    try {
      checkImageRef(item.imageRef, image)
    } catch (e) {
      if (e instanceof ImageSourceError) throw new DataFormatError('items', lines[i], e.message)
      throw e
    }
  })
  const users = parseUsersTsv(input.usersTsv, new Set(items.map((i) => i.externalId)))
  if (users.length === 0) throw new DataFormatError('users', 1, 'no users')
  return importDataset(prisma, { name: input.name, description: input.description ?? null, items, users })
}
