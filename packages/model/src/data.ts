// Data protocol of docs/METHOD.md §6: parsing the two TSV files, filtering, re-indexing and the
// leave-one-out split. Everything here is plain arrays; tensors are built by the trainer.

export class DataFormatError extends Error {
  constructor(
    readonly file: 'items' | 'users',
    readonly line: number,
    readonly reason: string,
  ) {
    super(`${file}.tsv line ${line}: ${reason}`)
    this.name = 'DataFormatError'
  }
}

export interface RawItem {
  externalId: string
  title: string
  /** optional third column: an image path or URL the embedding cache can read */
  imageRef?: string
}

export interface RawUser {
  externalId: string
  itemExternalIds: string[]
}

const EXTERNAL_ID = /^[^\s]{1,128}$/

/**
 * `item_id<TAB>title[<TAB>image]`, one item per line (the optional third column is an image path
 * or URL); blank lines (e.g. a trailing newline) are skipped.
 */
export function parseItemsTsv(text: string): RawItem[] {
  const items: RawItem[] = []
  const seen = new Set<string>()
  forEachLine(text, (line, lineNo) => {
    const columns = line.split('\t')
    if (columns.length < 2) throw new DataFormatError('items', lineNo, 'expected "item_id<TAB>title[<TAB>image]"')
    if (columns.length > 3) throw new DataFormatError('items', lineNo, `expected at most 3 tab-separated columns, found ${columns.length}`)
    const externalId = columns[0].trim()
    const title = columns[1].trim()
    const imageRef = columns[2]?.trim()
    if (!EXTERNAL_ID.test(externalId)) throw new DataFormatError('items', lineNo, 'item id must be 1–128 non-space characters')
    if (seen.has(externalId)) throw new DataFormatError('items', lineNo, `duplicate item id ${externalId}`)
    seen.add(externalId)
    items.push(imageRef ? { externalId, title, imageRef } : { externalId, title })
  })
  return items
}

/** `user_id<TAB>item item item…`, oldest first. */
export function parseUsersTsv(text: string, knownItems?: ReadonlySet<string>): RawUser[] {
  const users: RawUser[] = []
  const seen = new Set<string>()
  forEachLine(text, (line, lineNo) => {
    const tab = line.indexOf('\t')
    if (tab < 0) throw new DataFormatError('users', lineNo, 'expected "user_id<TAB>item_id item_id …"')
    const externalId = line.slice(0, tab).trim()
    if (!EXTERNAL_ID.test(externalId)) throw new DataFormatError('users', lineNo, 'user id must be 1–128 non-space characters')
    if (seen.has(externalId)) throw new DataFormatError('users', lineNo, `duplicate user id ${externalId}`)
    seen.add(externalId)
    const itemExternalIds = line.slice(tab + 1).trim().split(/\s+/).filter(Boolean)
    if (itemExternalIds.length === 0) throw new DataFormatError('users', lineNo, 'user has no interactions')
    if (knownItems) {
      const unknown = itemExternalIds.find((id) => !knownItems.has(id))
      if (unknown) throw new DataFormatError('users', lineNo, `unknown item id ${unknown}`)
    }
    users.push({ externalId, itemExternalIds })
  })
  return users
}

function forEachLine(text: string, visit: (line: string, lineNo: number) => void): void {
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === '') continue
    visit(lines[i], i + 1)
  }
}

export interface ProtocolOptions {
  /** T, the user encoder's window (max_seq_len). */
  maxSeqLen: number
  /** Users with fewer interactions are dropped. */
  minInteractions: number
}

export const PAPER_PROTOCOL: ProtocolOptions = { maxSeqLen: 10, minInteractions: 5 }

/** One evaluation case: predict `target` from the T items before it (left-padded with 0). */
export interface EvalCase {
  user: number
  window: Int32Array // [T], left-padded
  target: number
  /** Every item the user interacted with before the target: excluded from the ranking. */
  history: Int32Array
}

export interface ProtocolData {
  maxSeqLen: number
  /** N: items are 1..N, 0 is padding. */
  numItems: number
  /** index → source key (external id, or a database id), index 0 = padding (''). */
  itemKeys: string[]
  userKeys: string[]
  /** Per user, the kept and re-indexed sequence (last T+3 items), oldest first. */
  sequences: Int32Array[]
  /** Per user, the training window of T+1 ids (left-padded): the last T+1 items of seq[:-2]. */
  trainWindows: Int32Array[]
  validation: EvalCase[]
  test: EvalCase[]
  /** count of each item in the training sequences (index 0 unused). */
  trainCounts: Float64Array
  stats: ProtocolStats
}

export interface ProtocolStats {
  usersIn: number
  usersKept: number
  itemsKept: number
  interactionsKept: number
  avgSequenceLength: number
}

/**
 * Applies §6 to sequences of arbitrary item keys. Items are re-indexed in order of first
 * appearance in `itemOrder` (the catalogue order), so the mapping is stable for a given file.
 */
export function buildProtocol(
  users: { key: string; items: string[] }[],
  itemOrder: string[],
  options: ProtocolOptions = PAPER_PROTOCOL,
): ProtocolData {
  const T = options.maxSeqLen
  const kept = users
    .filter((u) => u.items.length >= options.minInteractions)
    .map((u) => ({ key: u.key, items: u.items.slice(-(T + 3)) }))

  const used = new Set<string>()
  for (const u of kept) for (const item of u.items) used.add(item)
  const itemKeys = ['']
  const index = new Map<string, number>()
  for (const key of itemOrder) {
    if (used.has(key) && !index.has(key)) {
      index.set(key, itemKeys.length)
      itemKeys.push(key)
    }
  }
  for (const key of used) {
    if (!index.has(key)) throw new Error(`item ${key} occurs in a user sequence but not in the catalogue`)
  }

  const sequences = kept.map((u) => Int32Array.from(u.items, (key) => index.get(key)!))
  const trainCounts = new Float64Array(itemKeys.length)
  const trainWindows: Int32Array[] = []
  const validation: EvalCase[] = []
  const test: EvalCase[] = []
  sequences.forEach((seq, user) => {
    const train = seq.subarray(0, seq.length - 2)
    for (const item of train) trainCounts[item]++
    trainWindows.push(leftPad(train, T + 1))
    validation.push(evalCase(user, seq, seq.length - 2, T))
    test.push(evalCase(user, seq, seq.length - 1, T))
  })

  const interactionsKept = sequences.reduce((sum, s) => sum + s.length, 0)
  return {
    maxSeqLen: T,
    numItems: itemKeys.length - 1,
    itemKeys,
    userKeys: kept.map((u) => u.key),
    sequences,
    trainWindows,
    validation,
    test,
    trainCounts,
    stats: {
      usersIn: users.length,
      usersKept: kept.length,
      itemsKept: itemKeys.length - 1,
      interactionsKept,
      avgSequenceLength: kept.length ? interactionsKept / kept.length : 0,
    },
  }
}

function evalCase(user: number, seq: Int32Array, targetAt: number, T: number): EvalCase {
  const before = seq.subarray(0, targetAt)
  return { user, window: leftPad(before, T), target: seq[targetAt], history: Int32Array.from(new Set(before)) }
}

/** The last `length` ids of `items`, left-padded with 0. */
export function leftPad(items: ArrayLike<number>, length: number): Int32Array {
  const out = new Int32Array(length)
  const take = Math.min(length, items.length)
  for (let i = 0; i < take; i++) out[length - take + i] = items[items.length - take + i]
  return out
}

/** Builds the protocol straight from the two files' text (CLI and benchmarks). */
export function protocolFromTsv(itemsTsv: string, usersTsv: string, options: ProtocolOptions = PAPER_PROTOCOL) {
  const items = parseItemsTsv(itemsTsv)
  const users = parseUsersTsv(usersTsv, new Set(items.map((i) => i.externalId)))
  const data = buildProtocol(
    users.map((u) => ({ key: u.externalId, items: u.itemExternalIds })),
    items.map((i) => i.externalId),
    options,
  )
  const byKey = new Map(items.map((i) => [i.externalId, i]))
  return { data, titles: data.itemKeys.map((key) => byKey.get(key)?.title ?? ''), imageRefs: data.itemKeys.map((key) => byKey.get(key)?.imageRef ?? null) }
}
