import DataLoader from 'dataloader'
import { Prisma, type Dataset, type Item, type PrismaClient } from './generated/prisma/client.ts'
import { LONG_TRANSACTION, queryPrepared, type Db } from './client.ts'
import { StorageError } from './errors.ts'
import { computeContentHashes } from './hash.ts'

// ---------------------------------------------------------------------------------------------
// Item titles: one rule for every path that writes items (POST /v1/items's schema uses the
// constant, the dataset import reports the line of a title that breaks it, the writes below refuse
// what slipped past both).

/** Longest item title, in characters (Unicode code points, as JSON Schema's maxLength counts). */
export const MAX_TITLE_LENGTH = 2000

/** Why `title` cannot be an item's title, or undefined when it can. */
export function titleProblem(title: string): string | undefined {
  if (title.length === 0) return 'the title is empty'
  // UTF-16 length bounds the code points from above: only long strings need counting
  if (title.length <= MAX_TITLE_LENGTH) return undefined
  let chars = 0
  for (const _ of title) chars++
  return chars > MAX_TITLE_LENGTH ? `the title is ${chars} characters long (at most ${MAX_TITLE_LENGTH})` : undefined
}

// Control characters as the platform counts them everywhere (C0 and DEL, see SINGLE_LINE_PATTERN
// in @iisan/http). The ones that lay out text separate words; the rest (NUL, BEL, ESC, DEL…) mean
// nothing on screen or to the text backbone, and PostgreSQL cannot even store NUL.
const CONTROL_RUN = /[\u0000-\u001F\u007F]+/g
const SPACING_CONTROL = /[\t\n\v\f\r]/
const WHITESPACE = /\s/

export interface TitleWarning {
  code: 'CONTROL_CHARACTERS_REMOVED'
  message: string
}

export interface SanitizedTitle {
  title: string
  /** What was changed, for the caller to pass on; undefined when the title came through untouched. */
  warning?: TitleWarning
}

/**
 * The title with its control characters taken out: a run of them that holds a tab, line break
 * or carriage return and stands between two words becomes one space ("Beaker\n250 ml" →
 * "Beaker 250 ml"); any other run is removed ("Pipette\u007F" → "Pipette"). A title without
 * control characters is returned as it is, byte for byte (its text hash must not change).
 * One function for the dataset import and POST /v1/items; titleProblem applies to the result.
 */
export function sanitizeTitle(raw: string): SanitizedTitle {
  const found = new Set<string>()
  let count = 0
  const title = raw.replace(CONTROL_RUN, (run: string, offset: number) => {
    count += run.length
    for (const ch of run) found.add(codePoint(ch))
    const before = raw[offset - 1]
    const after = raw[offset + run.length]
    const separates = SPACING_CONTROL.test(run) && before !== undefined && after !== undefined && !WHITESPACE.test(before) && !WHITESPACE.test(after)
    return separates ? ' ' : ''
  })
  if (count === 0) return { title: raw }
  const which = [...found].sort().join(', ')
  const message = count === 1 ? `removed control character ${which} from the title` : `removed ${count} control characters (${which}) from the title`
  return { title: title.trim(), warning: { code: 'CONTROL_CHARACTERS_REMOVED', message } }
}

/** "U+007F" */
export function codePoint(ch: string): string {
  return `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`
}

function assertTitles(items: ImportItemInput[]): void {
  for (const item of items) {
    const problem = titleProblem(item.title)
    if (problem) throw new StorageError('INVALID_INPUT', `item ${item.externalId}: ${problem}`, { itemExternalId: item.externalId })
  }
}

// ---------------------------------------------------------------------------------------------
// Import

export interface ImportItemInput {
  externalId: string
  title: string
  /** Path or URL of the image. */
  imageRef?: string | null
  /** Uploaded image bytes. */
  imageBlob?: Uint8Array | null
  imageMime?: string | null
}

export interface ImportUserInput {
  externalId: string
  /** The user's history, oldest first (repeats allowed). */
  itemExternalIds: string[]
}

export interface ImportDatasetInput {
  name: string
  description?: string | null
  items: ImportItemInput[]
  users: ImportUserInput[]
  /** The data protocol whose kept users and items the statistics count (stats.protocol); none without. */
  protocol?: ProtocolFilter
}

/** The data protocol's filter: users with ≥ minInteractions, each user's last maxSeqLen + 3 items. */
export interface ProtocolFilter {
  minInteractions: number
  maxSeqLen: number
}

export interface DatasetStats {
  minSequenceLength: number
  maxSequenceLength: number
  meanSequenceLength: number
  medianSequenceLength: number
  /** Distinct user–item pairs / (users × items): a repeated interaction fills no new cell. */
  density: number
  distinctPairs: number
  /** Items that occur in no history. */
  coldItems: number
  /** What the protocol keeps for training, as a training job filters (docs/METHOD.md §6). */
  protocol?: ProtocolFilter & { usersKept: number; itemsKept: number; interactionsKept: number }
  /** The dataset's counters these figures were computed at: any later item or event makes them stale. */
  asOf: { numItems: number; numInteractions: number }
  [key: string]: unknown
}

/** Max. offending references reported in StorageError details. */
const MAX_REPORTED = 20

/**
 * The statistics of a dataset as it is now, in one statement (one snapshot). Recomputed whenever
 * they are read stale rather than maintained by every event: ≈ 0.7 s on the full Scientific data
 * (85k interactions) on the busy 2-core build machine, paid by the first read after a change.
 */
async function computeDatasetStats(db: Db, datasetId: string, protocol?: ProtocolFilter): Promise<DatasetStats | null> {
  // A user's positions are dense (0 … n-1), so their last T + 3 items are those from n - (T + 3)
  // on. One pass over the dataset's interactions with a window count, rather than a join with the
  // lengths: inside the import's transaction the planner has no statistics for the new rows and
  // would look the windows up user by user (50 s instead of 0.1 s on Scientific).
  const windows = protocol
    ? Prisma.sql`, windows AS (
        SELECT item_id, position, count(*) OVER (PARTITION BY user_id) AS n FROM interactions WHERE dataset_id = ${datasetId}::uuid
      )`
    : Prisma.empty
  const kept = protocol
    ? Prisma.sql`,
      (SELECT count(*)::int FROM lengths WHERE n >= ${protocol.minInteractions}) AS "usersKept",
      (SELECT coalesce(sum(least(n, ${protocol.maxSeqLen + 3})), 0)::int FROM lengths WHERE n >= ${protocol.minInteractions}) AS "interactionsKept",
      (SELECT count(DISTINCT item_id)::int FROM windows WHERE n >= ${protocol.minInteractions} AND position >= n - ${protocol.maxSeqLen + 3}) AS "itemsKept"`
    : Prisma.empty
  const rows = await db.$queryRaw<StatsRow[]>`
    WITH lengths AS (
      SELECT u.id AS user_id, count(i.id)::int AS n
      FROM dataset_users u LEFT JOIN interactions i ON i.user_id = u.id
      WHERE u.dataset_id = ${datasetId}::uuid
      GROUP BY u.id
    ) ${windows}
    SELECT d.num_items AS "numItems", d.num_interactions AS "numInteractions",
      (SELECT count(*)::int FROM lengths) AS users,
      (SELECT coalesce(min(n), 0)::int FROM lengths) AS "minLength",
      (SELECT coalesce(max(n), 0)::int FROM lengths) AS "maxLength",
      (SELECT coalesce(avg(n), 0)::float8 FROM lengths) AS "meanLength",
      (SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY n), 0)::float8 FROM lengths) AS "medianLength",
      (SELECT count(*)::int FROM (SELECT DISTINCT user_id, item_id FROM interactions WHERE dataset_id = ${datasetId}::uuid) AS pairs) AS "distinctPairs",
      (SELECT count(*)::int FROM items it WHERE it.dataset_id = ${datasetId}::uuid
        AND NOT EXISTS (SELECT 1 FROM interactions x WHERE x.item_id = it.id)) AS "coldItems"
      ${kept}
    FROM datasets d WHERE d.id = ${datasetId}::uuid`
  const r = rows[0]
  if (!r) return null
  return {
    minSequenceLength: r.minLength,
    maxSequenceLength: r.maxLength,
    meanSequenceLength: r.meanLength,
    medianSequenceLength: r.medianLength,
    density: r.users && r.numItems ? r.distinctPairs / (r.users * r.numItems) : 0,
    distinctPairs: r.distinctPairs,
    coldItems: r.coldItems,
    ...(protocol ? { protocol: { ...protocol, usersKept: r.usersKept!, itemsKept: r.itemsKept!, interactionsKept: r.interactionsKept! } } : {}),
    asOf: { numItems: r.numItems, numInteractions: r.numInteractions },
  }
}

interface StatsRow {
  numItems: number
  numInteractions: number
  users: number
  minLength: number
  maxLength: number
  meanLength: number
  medianLength: number
  distinctPairs: number
  coldItems: number
  usersKept?: number
  interactionsKept?: number
  itemsKept?: number
}

function statsAreCurrent(d: Pick<Dataset, 'stats' | 'numItems' | 'numInteractions'>, protocol?: ProtocolFilter): boolean {
  const stats = d.stats as Partial<DatasetStats> | null
  if (!stats?.asOf || stats.asOf.numItems !== d.numItems || stats.asOf.numInteractions !== d.numInteractions) return false
  return !protocol || (stats.protocol?.minInteractions === protocol.minInteractions && stats.protocol.maxSeqLen === protocol.maxSeqLen)
}

/**
 * The datasets with current statistics: those whose items or interactions changed since (or that
 * were counted for another protocol) are recomputed and stored again.
 */
export async function withCurrentStats<D extends Dataset>(db: Db, datasets: D[], protocol?: ProtocolFilter): Promise<D[]> {
  return Promise.all(
    datasets.map(async (d) => {
      if (statsAreCurrent(d, protocol)) return d
      const stats = await computeDatasetStats(db, d.id, protocol)
      if (!stats) return d // deleted meanwhile
      // a change after this snapshot leaves the stored figures stale again: the next read recomputes
      await db.dataset.updateMany({ where: { id: d.id }, data: { stats: stats as Prisma.InputJsonValue } })
      return { ...d, stats: stats as Prisma.JsonValue }
    }),
  )
}

/**
 * Import a catalogue and interaction histories as a new dataset, in ONE transaction: either
 * everything is written or nothing. Item ids are assigned in input order (model index = rank).
 * Throws StorageError DUPLICATE_ITEM / DUPLICATE_USER / UNKNOWN_ITEM (a history names an item
 * that is not in `items`), INVALID_INPUT (a title breaks titleProblem's rule). Validating the
 * file format is the caller's job.
 */
export async function importDataset(prisma: PrismaClient, input: ImportDatasetInput): Promise<Dataset> {
  // --- validation (cheap, before touching the database)
  assertTitles(input.items)
  const itemIndex = new Map<string, number>()
  const duplicateItems: string[] = []
  input.items.forEach((it, i) => {
    if (itemIndex.has(it.externalId)) duplicateItems.push(it.externalId)
    else itemIndex.set(it.externalId, i)
  })
  if (duplicateItems.length) {
    throw new StorageError('DUPLICATE_ITEM', `duplicate item id(s): ${duplicateItems.slice(0, 5).join(', ')}`, {
      count: duplicateItems.length,
      itemExternalIds: duplicateItems.slice(0, MAX_REPORTED),
    })
  }
  const seenUsers = new Set<string>()
  const duplicateUsers: string[] = []
  const unknown: { userExternalId: string; itemExternalId: string }[] = []
  let unknownCount = 0
  let numInteractions = 0
  for (const u of input.users) {
    if (seenUsers.has(u.externalId)) duplicateUsers.push(u.externalId)
    seenUsers.add(u.externalId)
    for (const ext of u.itemExternalIds) {
      if (!itemIndex.has(ext)) {
        unknownCount++
        if (unknown.length < MAX_REPORTED) unknown.push({ userExternalId: u.externalId, itemExternalId: ext })
      }
    }
    numInteractions += u.itemExternalIds.length
  }
  if (duplicateUsers.length) {
    throw new StorageError('DUPLICATE_USER', `duplicate user id(s): ${duplicateUsers.slice(0, 5).join(', ')}`, {
      count: duplicateUsers.length,
      userExternalIds: duplicateUsers.slice(0, MAX_REPORTED),
    })
  }
  if (unknownCount) {
    const first = unknown[0]!
    throw new StorageError(
      'UNKNOWN_ITEM',
      `${unknownCount} interaction(s) reference items that are not in the catalogue (first: user ${first.userExternalId} → item ${first.itemExternalId})`,
      { count: unknownCount, references: unknown },
    )
  }

  const dataset = await prisma.$transaction(async (tx) => {
    const dataset = await tx.dataset.create({
      data: {
        name: input.name,
        description: input.description ?? null,
        numItems: input.items.length,
        numUsers: input.users.length,
        numInteractions,
      },
    })
    const itemIds = await insertItems(tx, dataset.id, input.items)
    const userIds = await insertUsers(tx, dataset.id, input.users.map((u) => u.externalId))
    const userCol: number[] = []
    const itemCol: number[] = []
    const posCol: number[] = []
    for (const u of input.users) {
      const userId = userIds.get(u.externalId)!
      u.itemExternalIds.forEach((ext, position) => {
        userCol.push(userId)
        itemCol.push(itemIds.get(ext)!) // every reference was validated above
        posCol.push(position)
      })
    }
    await insertInteractions(tx, dataset.id, userCol, itemCol, posCol, 'import')
    const stats = (await computeDatasetStats(tx, dataset.id, input.protocol))!
    return tx.dataset.update({ where: { id: dataset.id }, data: { stats: stats as Prisma.InputJsonValue } })
  }, LONG_TRANSACTION)
  await refreshPlannerStatistics(prisma)
  return dataset
}

/**
 * After a bulk insert the planner knows nothing of the new rows until autovacuum comes by, and
 * plans for empty tables:
 * - a GIN index's own figures (which the planner prices trigram scans with) are only updated by
 *   VACUUM: item search would scan the whole dataset instead of using the trigram indexes
 *   (Scientific: ≈ 200 ms instead of ≈ 15 ms a search);
 * - the batched history read of recommendations by userId hashed the whole interactions table
 *   instead of walking its (user_id, position) index (Scientific, 30 users: ≈ 20 ms instead of ≈ 2 ms).
 * Refreshed now instead (≈ 0.2–0.6 s), best effort: a role that may not vacuum or analyze a table
 * leaves it to autovacuum.
 */
async function refreshPlannerStatistics(db: PrismaClient): Promise<void> {
  await db.$executeRaw`VACUUM (ANALYZE) items`.catch(() => undefined)
  await db.$executeRaw`ANALYZE dataset_users, interactions`.catch(() => undefined)
}

// Bulk inserts. Prisma's createMany goes through the query compiler at ~12k rows/s here; one
// INSERT … SELECT FROM unnest(<column arrays>) per chunk is ~20× faster and stays inside the
// same interactive transaction.
const CHUNK = 50_000

function chunks(n: number): [number, number][] {
  const out: [number, number][] = []
  for (let i = 0; i < n; i += CHUNK) out.push([i, Math.min(n, i + CHUNK)])
  return out
}

/** Insert items in input order (ids ascend in that order); returns externalId → id. */
async function insertItems(
  tx: Prisma.TransactionClient,
  datasetId: string,
  items: ImportItemInput[],
): Promise<Map<string, number>> {
  const ids = new Map<string, number>()
  for (const [a, b] of chunks(items.length)) {
    const part = items.slice(a, b)
    const hashes = part.map((it) => computeContentHashes(it))
    const rows = await tx.$queryRaw<{ id: number; externalId: string }[]>`
      INSERT INTO items (dataset_id, external_id, title, image_ref, image_blob, image_mime, text_hash, image_hash, content_hash)
      SELECT ${datasetId}::uuid, e, t, r, decode(b, 'hex'), m, th, ih, ch
      FROM unnest(
        ${part.map((it) => it.externalId)}::text[],
        ${part.map((it) => it.title)}::text[],
        ${part.map((it) => it.imageRef ?? null)}::text[],
        ${part.map((it) => (it.imageBlob ? Buffer.from(it.imageBlob.buffer, it.imageBlob.byteOffset, it.imageBlob.byteLength).toString('hex') : null))}::text[],
        ${part.map((it) => it.imageMime ?? null)}::text[],
        ${hashes.map((h) => h.textHash)}::text[],
        ${hashes.map((h) => h.imageHash)}::text[],
        ${hashes.map((h) => h.contentHash)}::text[]
      ) WITH ORDINALITY AS x(e, t, r, b, m, th, ih, ch, ord)
      ORDER BY ord
      RETURNING id, external_id AS "externalId"`
    for (const r of rows) ids.set(r.externalId, r.id)
  }
  return ids
}

async function insertUsers(tx: Prisma.TransactionClient, datasetId: string, externalIds: string[]): Promise<Map<string, number>> {
  const ids = new Map<string, number>()
  for (const [a, b] of chunks(externalIds.length)) {
    const rows = await tx.$queryRaw<{ id: number; externalId: string }[]>`
      INSERT INTO dataset_users (dataset_id, external_id)
      SELECT ${datasetId}::uuid, e FROM unnest(${externalIds.slice(a, b)}::text[]) WITH ORDINALITY AS x(e, ord)
      ORDER BY ord
      RETURNING id, external_id AS "externalId"`
    for (const r of rows) ids.set(r.externalId, r.id)
  }
  return ids
}

async function insertInteractions(
  tx: Prisma.TransactionClient,
  datasetId: string,
  userIds: number[],
  itemIds: number[],
  positions: number[],
  source: 'import' | 'event',
): Promise<void> {
  for (const [a, b] of chunks(userIds.length)) {
    await tx.$executeRaw`
      INSERT INTO interactions (dataset_id, user_id, item_id, position, source)
      SELECT ${datasetId}::uuid, u, i, p, ${source}
      FROM unnest(${userIds.slice(a, b)}::int[], ${itemIds.slice(a, b)}::int[], ${positions.slice(a, b)}::int[]) AS x(u, i, p)`
  }
}

// ---------------------------------------------------------------------------------------------
// Reads

export async function getDataset(db: Db, id: string): Promise<Dataset | null> {
  return db.dataset.findUnique({ where: { id } })
}

export async function listDatasets(db: Db, options: { limit?: number; offset?: number } = {}): Promise<Dataset[]> {
  return db.dataset.findMany({ orderBy: { createdAt: 'desc' }, take: options.limit ?? 100, skip: options.offset ?? 0 })
}

export interface ItemSearch {
  /** Case-insensitive substring of the title or of the external id; everything without one. */
  q?: string
  limit: number
  offset: number
}

export type FoundItem = Pick<Item, 'externalId' | 'title' | 'imageHash' | 'createdAt'>

/**
 * A page of a dataset's items in catalogue order, and how many match. The substring match is
 * ILIKE, which the pg_trgm GIN indexes on title and external_id serve for terms of three or more
 * characters (shorter ones scan the dataset's rows).
 */
export async function searchItems(db: Db, datasetId: string, search: ItemSearch): Promise<{ items: FoundItem[]; total: number }> {
  // LIKE's wildcards in the term are literal characters to the user
  const pattern = search.q ? `%${search.q.replace(/[\\%_]/g, '\\$&')}%` : undefined
  const where = pattern
    ? Prisma.sql`dataset_id = ${datasetId}::uuid AND (title ILIKE ${pattern} OR external_id ILIKE ${pattern})`
    : Prisma.sql`dataset_id = ${datasetId}::uuid`
  const [items, [count]] = await Promise.all([
    db.$queryRaw<FoundItem[]>`
      SELECT external_id AS "externalId", title, image_hash AS "imageHash", created_at AS "createdAt"
      FROM items WHERE ${where} ORDER BY id LIMIT ${search.limit} OFFSET ${search.offset}`,
    db.$queryRaw<{ total: number }[]>`SELECT count(*)::int AS total FROM items WHERE ${where}`,
  ])
  return { items, total: count!.total }
}

export type ItemSummary = Pick<Item, 'id' | 'externalId' | 'title' | 'imageRef' | 'contentHash' | 'textHash' | 'imageHash'> & {
  hasImageBlob: boolean
}

/** Items of a dataset ordered by id (= model index order), without image bytes. */
export async function listItems(
  db: Db,
  datasetId: string,
  options: { limit?: number; offset?: number; externalIds?: string[] } = {},
): Promise<ItemSummary[]> {
  const filter = options.externalIds ? Prisma.sql`AND external_id = ANY(${options.externalIds})` : Prisma.empty
  return db.$queryRaw<ItemSummary[]>`
    SELECT id, external_id AS "externalId", title, image_ref AS "imageRef", content_hash AS "contentHash",
           text_hash AS "textHash", image_hash AS "imageHash", (image_blob IS NOT NULL) AS "hasImageBlob"
    FROM items
    WHERE dataset_id = ${datasetId}::uuid ${filter}
    ORDER BY id
    LIMIT ${options.limit ?? null} OFFSET ${options.offset ?? 0}`
}

/**
 * Add items to an existing dataset (new items become recommendable without retraining once
 * their hidden states are cached). Throws DUPLICATE_ITEM if an external id already exists,
 * INVALID_INPUT for a title titleProblem refuses.
 */
export async function addItems(prisma: PrismaClient, datasetId: string, items: ImportItemInput[]): Promise<Item[]> {
  assertTitles(items)
  const ext = items.map((i) => i.externalId)
  const dupInput = ext.filter((e, i) => ext.indexOf(e) !== i)
  if (dupInput.length) {
    throw new StorageError('DUPLICATE_ITEM', `duplicate item id(s): ${dupInput.slice(0, 5).join(', ')}`, {
      itemExternalIds: dupInput.slice(0, MAX_REPORTED),
    })
  }
  return prisma.$transaction(async (tx) => {
    const locked = await tx.$queryRaw<{ id: string }[]>`SELECT id::text FROM datasets WHERE id = ${datasetId}::uuid FOR UPDATE`
    if (locked.length === 0) throw new StorageError('NOT_FOUND', `dataset ${datasetId} not found`, { datasetId })
    const existing = await tx.item.findMany({ where: { datasetId, externalId: { in: ext } }, select: { externalId: true } })
    if (existing.length) {
      throw new StorageError('DUPLICATE_ITEM', `item(s) already in the dataset: ${existing.slice(0, 5).map((e) => e.externalId).join(', ')}`, {
        itemExternalIds: existing.slice(0, MAX_REPORTED).map((e) => e.externalId),
      })
    }
    const ids = await insertItems(tx, datasetId, items)
    const created = await tx.item.findMany({ where: { id: { in: [...ids.values()] } }, orderBy: { id: 'asc' } })
    await tx.dataset.update({ where: { id: datasetId }, data: { numItems: { increment: created.length } } })
    return created
  }, LONG_TRANSACTION)
}

// ---------------------------------------------------------------------------------------------
// Sequences

export interface DatasetSequences {
  /** All items of the dataset ordered by id; model index of items[k] is k + 1. */
  items: { id: number; externalId: string; title: string }[]
  /** Users with at least one interaction, ordered by user id; itemIds are Item.id, oldest first. */
  sequences: { userId: number; externalId: string; itemIds: number[] }[]
}

/** Everything a trainer needs: the catalogue and every user's ordered history. */
export async function loadDatasetSequences(db: Db, datasetId: string): Promise<DatasetSequences> {
  const items = await db.item.findMany({
    where: { datasetId },
    orderBy: { id: 'asc' },
    select: { id: true, externalId: true, title: true },
  })
  const sequences = await db.$queryRaw<{ userId: number; externalId: string; itemIds: number[] }[]>`
    SELECT u.id AS "userId", u.external_id AS "externalId",
           array_agg(i.item_id ORDER BY i.position) AS "itemIds"
    FROM dataset_users u
    JOIN interactions i ON i.user_id = u.id
    WHERE u.dataset_id = ${datasetId}::uuid
    GROUP BY u.id
    ORDER BY u.id`
  return { items, sequences }
}

// ---------------------------------------------------------------------------------------------
// Events

export interface AppendedInteraction {
  interactionId: number
  userId: number
  itemId: number
  position: number
  /** True when this event created the user. */
  userCreated: boolean
}

/**
 * Append one interaction (source 'event') to a user's history, creating the user on first
 * sight. Concurrent appends for the same user are serialised (row lock), positions stay dense.
 * Throws NOT_FOUND (dataset) / UNKNOWN_ITEM (item not in this dataset).
 */
export async function appendInteraction(
  prisma: PrismaClient,
  datasetId: string,
  userExternalId: string,
  itemId: number,
): Promise<AppendedInteraction> {
  return prisma.$transaction(async (tx) => {
    const item = await tx.item.findUnique({ where: { id: itemId }, select: { datasetId: true } })
    if (!item || item.datasetId !== datasetId) {
      const ds = await tx.dataset.findUnique({ where: { id: datasetId }, select: { id: true } })
      if (!ds) throw new StorageError('NOT_FOUND', `dataset ${datasetId} not found`, { datasetId })
      throw new StorageError('UNKNOWN_ITEM', `item ${itemId} is not in dataset ${datasetId}`, { datasetId, itemId })
    }
    // Upsert + lock the user row: DO UPDATE takes the row lock, so concurrent appends queue here.
    const [user] = await tx.$queryRaw<{ id: number; inserted: boolean }[]>`
      INSERT INTO dataset_users (dataset_id, external_id) VALUES (${datasetId}::uuid, ${userExternalId})
      ON CONFLICT (dataset_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
      RETURNING id, (xmax = 0) AS inserted`
    const [row] = await tx.$queryRaw<{ id: number; position: number }[]>`
      INSERT INTO interactions (dataset_id, user_id, item_id, position, source)
      SELECT ${datasetId}::uuid, ${user!.id}, ${itemId}, COALESCE(MAX(position), -1) + 1, 'event'
      FROM interactions WHERE user_id = ${user!.id}
      RETURNING id, position`
    await tx.$executeRaw`
      UPDATE datasets SET num_interactions = num_interactions + 1,
                          num_users = num_users + ${user!.inserted ? 1 : 0}
      WHERE id = ${datasetId}::uuid`
    return { interactionId: row!.id, userId: user!.id, itemId, position: row!.position, userCreated: user!.inserted }
  })
}

export interface UserHistory {
  userId: number
  externalId: string
  /** Item.id, oldest first: the last `maxItems` interactions. */
  itemIds: number[]
}

/**
 * A user's ordered history, or null when the user is unknown in this dataset. One round trip: it
 * is on the path of every recommendation by userId.
 */
export async function getUserHistory(db: Db, datasetId: string, userExternalId: string, maxItems?: number): Promise<UserHistory | null> {
  return (await getUserHistories(db, datasetId, [userExternalId], maxItems)).get(userExternalId) ?? null
}

/**
 * Several users' ordered histories in one round trip, keyed by external id; unknown users are
 * absent. The hot path asks for many at once (userHistoryLoader), so PostgreSQL answers one
 * prepared statement per batch of requests rather than one per request, one row per user with
 * the item ids as an array. Titles and external ids are not read: serving has them for the items
 * its model knows, and asks (describeItems) for the rest.
 */
export async function getUserHistories(db: Db, datasetId: string, userExternalIds: readonly string[], maxItems = MAX_STORED_HISTORY): Promise<Map<string, UserHistory>> {
  const rows = await queryPrepared<UserHistory>(db, 'iisan_user_histories', userHistoriesQuery(datasetId, userExternalIds, maxItems))
  return new Map(rows.map((row) => [row.externalId, row]))
}

/** The most interactions a history read returns by default (the newest ones). */
export const MAX_STORED_HISTORY = 1000

/** getUserHistories' statement (exported so a test can EXPLAIN it). */
export function userHistoriesQuery(datasetId: string, userExternalIds: readonly string[], maxItems = MAX_STORED_HISTORY): Prisma.Sql {
  // the newest maxItems by the (user_id, position) index, backwards, then put oldest first
  return Prisma.sql`
    SELECT u.id AS "userId", u.external_id AS "externalId",
      ARRAY(
        SELECT h.item_id FROM (
          SELECT item_id, position FROM interactions WHERE user_id = u.id ORDER BY position DESC LIMIT ${maxItems}::int
        ) h ORDER BY h.position
      ) AS "itemIds"
    FROM dataset_users u
    WHERE u.dataset_id = ${datasetId}::uuid AND u.external_id = ANY(${[...new Set(userExternalIds)]}::text[])`
}

export interface ItemDescription {
  externalId: string
  title: string
}

/**
 * External ids and titles of items by Item.id (the items of a stored history a model does not
 * know), in one prepared statement: it is on the path of userId recommendations.
 */
export async function describeItems(db: Db, itemIds: readonly number[]): Promise<Map<number, ItemDescription>> {
  if (itemIds.length === 0) return new Map()
  const rows = await queryPrepared<ItemDescription & { id: number }>(
    db,
    'iisan_item_descriptions',
    Prisma.sql`SELECT id, external_id AS "externalId", title FROM items WHERE id = ANY(${[...new Set(itemIds)]}::int[])`,
  )
  return new Map(rows.map(({ id, externalId, title }) => [id, { externalId, title }]))
}

/**
 * The first `limit` items of a dataset (by Item.id) that are not in `known`, described: the
 * catalogue items a model version has no row for, read once when it loads so that a stored
 * history holding them costs no statement per request. An anti-join on the ids given, so that a
 * version knowing a million items costs one hash of them, not a scan per row.
 */
export async function describeItemsOutside(db: Db, datasetId: string, known: readonly number[], limit: number): Promise<Map<number, ItemDescription>> {
  if (limit <= 0) return new Map()
  const rows = await db.$queryRaw<(ItemDescription & { id: number })[]>(Prisma.sql`
    SELECT i.id, i.external_id AS "externalId", i.title
    FROM items i
    WHERE i.dataset_id = ${datasetId}::uuid
      AND NOT EXISTS (SELECT 1 FROM unnest(${known as number[]}::int[]) AS k(id) WHERE k.id = i.id)
    ORDER BY i.id
    LIMIT ${limit}`)
  return new Map(rows.map(({ id, externalId, title }) => [id, { externalId, title }]))
}

export interface UserHistoryKey {
  datasetId: string
  userExternalId: string
}

export interface UserHistoryLoaderOptions {
  /** Users one query reads at most (default 256). */
  maxBatch?: number
  /** Queries running at once at most (default 2); the lookups that arrive meanwhile wait and join one batch. */
  maxInFlight?: number
  /** Told the size of each batch read (for tests and metrics). */
  onBatch?: (size: number) => void
  /** The newest interactions a history holds at most (default MAX_STORED_HISTORY). */
  maxItems?: number
}

/**
 * Reads of user histories coalesced into few queries: the lookups that arrive while the event
 * loop takes in one round of I/O, or while maxInFlight queries are running, become one
 * getUserHistories per dataset. Under load the batches grow with the queue instead of splitting
 * into one query per request. Nothing is cached: every read starts after its request arrived, so
 * an event stored before a request is in its answer, whichever replica stored it.
 */
export function userHistoryLoader(db: Db, options: UserHistoryLoaderOptions = {}): DataLoader<UserHistoryKey, UserHistory | null> {
  const { schedule, release } = inFlightSlots(options.maxInFlight ?? 2)
  return new DataLoader<UserHistoryKey, UserHistory | null>(
    async (keys) => {
      try {
        options.onBatch?.(keys.length)
        const usersOf = new Map<string, string[]>()
        for (const { datasetId, userExternalId } of keys) {
          const users = usersOf.get(datasetId)
          if (users) users.push(userExternalId)
          else usersOf.set(datasetId, [userExternalId])
        }
        const found = new Map<string, Map<string, UserHistory>>()
        await Promise.all([...usersOf].map(async ([datasetId, users]) => found.set(datasetId, await getUserHistories(db, datasetId, users, options.maxItems))))
        return keys.map(({ datasetId, userExternalId }) => found.get(datasetId)!.get(userExternalId) ?? null)
      } finally {
        release()
      }
    },
    { cache: false, maxBatchSize: options.maxBatch ?? 256, batchScheduleFn: schedule },
  )
}

/**
 * Descriptions of items (describeItems) read as userHistoryLoader reads histories: the lookups
 * of concurrent requests coalesced into one statement per batch. Nothing is cached (an item's
 * title may change); an unknown id loads null.
 */
export function itemDescriptionLoader(db: Db, options: Omit<UserHistoryLoaderOptions, 'maxItems'> = {}): DataLoader<number, ItemDescription | null> {
  const { schedule, release } = inFlightSlots(options.maxInFlight ?? 2)
  return new DataLoader<number, ItemDescription | null>(
    async (ids) => {
      try {
        options.onBatch?.(ids.length)
        const found = await describeItems(db, ids)
        return ids.map((id) => found.get(id) ?? null)
      } finally {
        release()
      }
    },
    { cache: false, maxBatchSize: options.maxBatch ?? 256, batchScheduleFn: schedule },
  )
}

/**
 * A DataLoader schedule that runs at most maxInFlight batches at once: a batch holds its slot
 * from its scheduling until it calls release(), and a freed slot goes to the oldest waiting batch
 * (which meanwhile takes in the loads that arrive).
 */
function inFlightSlots(maxInFlight: number): { schedule: (dispatch: () => void) => void; release: () => void } {
  let inFlight = 0
  const waiting: (() => void)[] = []
  return {
    schedule(dispatch) {
      if (inFlight < maxInFlight) {
        inFlight++
        setImmediate(dispatch)
      } else waiting.push(dispatch)
    },
    release() {
      const next = waiting.shift()
      if (next) setImmediate(next)
      else inFlight--
    },
  }
}
