// Dataset import from the two TSV files (docs/METHOD.md §6 format) into Postgres, all or nothing.
// Every line is checked before anything is written, and everything wrong is reported at once (up
// to a bound), so a real catalogue is fixed in one pass rather than one line per request.
import { decodeHTML } from 'entities'
import { DataFormatError, PAPER_PROTOCOL, parseItemsTsv, parseUsersTsv, type RawItem, type RawUser } from '@iisan/model/data'
import { ImageSourceError, checkImageRef, type ImageSourceOptions } from '@iisan/embedding-cache/images'
import { codePoint, importDataset, sanitizeTitle, titleProblem, type Dataset, type PrismaClient, type TitleWarning } from '@iisan/storage'

export interface TsvImport {
  name: string
  description?: string
  itemsTsv: string
  usersTsv: string
}

/** Errors, and warnings, reported in full at most; the totals count them all. */
export const MAX_REPORTED_PROBLEMS = 100

type TsvFile = 'items' | 'users'

export interface FileProblem {
  file: `${TsvFile}.tsv`
  line: number
  message: string
}

export type ImportWarning = FileProblem & TitleWarning

export interface TsvImportResult {
  dataset: Dataset
  /** What the import changed to make the files fit (the first MAX_REPORTED_PROBLEMS). */
  warnings: ImportWarning[]
  totalWarnings: number
}

/**
 * The files' malformed lines, all of them counted and the first MAX_REPORTED_PROBLEMS listed; as a
 * DataFormatError it names the first one, so it reads as any malformed line does.
 */
export class DatasetFilesError extends DataFormatError {
  constructor(
    readonly errors: FileProblem[],
    readonly total: number,
  ) {
    const first = errors[0]!
    super(first.file === 'items.tsv' ? 'items' : 'users', first.line, first.message)
    if (total > 1) this.message += ` (and ${total - 1} more: see details.errors)`
  }
}

/** Collects problems, keeping the first MAX_REPORTED_PROBLEMS and counting the rest. */
class Problems<P> {
  readonly list: P[] = []
  total = 0

  add(problem: P): void {
    this.total++
    if (this.list.length < MAX_REPORTED_PROBLEMS) this.list.push(problem)
  }
}

// Control characters (C0 and DEL) the files may not hold outside titles: tab separates columns,
// LF (or CRLF) ends a line; in an id, a history or an image reference anything else is an error.
// (Titles are cleaned instead: see sanitizeTitle.)
const FORBIDDEN_OUTSIDE_TITLES = /[\u0000-\u0008\u000A-\u001F\u007F]/

function controlCharacterProblem(text: string, columnOffset: number): string | undefined {
  const match = FORBIDDEN_OUTSIDE_TITLES.exec(text)
  if (!match) return undefined
  return `control character ${codePoint(match[0])} at column ${columnOffset + match.index + 1} (only tab between columns and newline between lines are allowed)`
}

/** Non-blank lines with their 1-based numbers, as the parsers number them. */
function* records(text: string): Generator<[string, number]> {
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) if (lines[i]!.trim() !== '') yield [lines[i]!, i + 1]
}

/** One line through the shared parser, its DataFormatError as this line's message. */
function parseLine<T>(parse: (line: string) => T[], line: string): T | string {
  try {
    return parse(line)[0]!
  } catch (e) {
    if (e instanceof DataFormatError) return e.reason
    throw e
  }
}

/**
 * Parses and checks both files, then imports in one transaction; nothing is written when any
 * line is wrong (DatasetFilesError lists them). Titles are HTML-decoded and cleaned of control
 * characters (warnings name the lines). Image references are checked as the embedding cache will
 * check them before reading (`image`: the cache's policy, by default IMAGE_ROOT /
 * IMAGE_ALLOW_PRIVATE_HOSTS of this process, read as the cache reads them), so a reference the
 * cache would refuse fails the import on its line instead of the item later.
 */
export async function importDatasetFromTsv(
  prisma: PrismaClient,
  input: TsvImport,
  image: Pick<ImageSourceOptions, 'root' | 'allowPrivateHosts'> = {},
): Promise<TsvImportResult> {
  const errors = new Problems<FileProblem>()
  const warnings = new Problems<ImportWarning>()
  const fail = (file: TsvFile, line: number, message: string) => errors.add({ file: `${file}.tsv`, line, message })

  const items: RawItem[] = []
  const itemLines = new Map<string, number>()
  for (const [line, lineNo] of records(input.itemsTsv)) {
    const [id = '', title, ...rest] = line.split('\t')
    const control = controlCharacterProblem(id, 0) ?? controlCharacterProblem(rest.join('\t'), id.length + (title?.length ?? 0) + 2)
    if (control) {
      fail('items', lineNo, control)
      continue
    }
    const parsed = parseLine(parseItemsTsv, line)
    if (typeof parsed === 'string') {
      fail('items', lineNo, parsed)
      continue
    }
    const first = itemLines.get(parsed.externalId)
    if (first !== undefined) {
      fail('items', lineNo, `duplicate item id ${parsed.externalId} (first on line ${first})`)
      continue
    }
    itemLines.set(parsed.externalId, lineNo)
    // Scraped catalogues carry HTML entities (Scientific: "&amp;", "&quot;"); titles are shown to
    // people and read by the text backbone, so they are stored decoded, and the decoded title is
    // what is cleaned and what the rule of POST /v1/items applies to.
    const cleaned = sanitizeTitle(decodeHTML(parsed.title))
    if (cleaned.warning) warnings.add({ file: 'items.tsv', line: lineNo, ...cleaned.warning })
    const problem = titleProblem(cleaned.title) ?? imageProblem(parsed.imageRef, image)
    if (problem) fail('items', lineNo, problem)
    else items.push({ ...parsed, title: cleaned.title })
  }
  if (itemLines.size === 0 && errors.total === 0) fail('items', 1, 'no items')

  const users: RawUser[] = []
  const userLines = new Map<string, number>()
  const known = new Set(itemLines.keys())
  for (const [line, lineNo] of records(input.usersTsv)) {
    const control = controlCharacterProblem(line.replaceAll('\t', ' '), 0)
    const parsed = control ?? parseLine((l) => parseUsersTsv(l, known.size ? known : undefined), line)
    if (typeof parsed === 'string') {
      fail('users', lineNo, parsed)
      continue
    }
    const first = userLines.get(parsed.externalId)
    if (first !== undefined) fail('users', lineNo, `duplicate user id ${parsed.externalId} (first on line ${first})`)
    else {
      userLines.set(parsed.externalId, lineNo)
      users.push(parsed)
    }
  }
  if (userLines.size === 0 && !errors.list.some((e) => e.file === 'users.tsv')) fail('users', 1, 'no users')

  if (errors.total) throw new DatasetFilesError(errors.list, errors.total)
  const dataset = await importDataset(prisma, { name: input.name, description: input.description ?? null, items, users, protocol: PAPER_PROTOCOL })
  return { dataset, warnings: warnings.list, totalWarnings: warnings.total }
}

function imageProblem(imageRef: string | undefined, image: Pick<ImageSourceOptions, 'root' | 'allowPrivateHosts'>): string | undefined {
  try {
    checkImageRef(imageRef, image)
    return undefined
  } catch (e) {
    if (e instanceof ImageSourceError) return e.message
    throw e
  }
}
