import { Prisma, type Dataset, type Item, type PrismaClient } from './generated/prisma/client.ts'
import { LONG_TRANSACTION, type Db } from './client.ts'
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
  /** Extra statistics to store next to the computed ones. */
  stats?: Record<string, unknown>
}

export interface DatasetStats {
  minSequenceLength: number
  maxSequenceLength: number
  meanSequenceLength: number
  medianSequenceLength: number
  /** interactions / (users × items) */
  density: number
  /** Items that occur in no history. */
  coldItems: number
  [key: string]: unknown
}

/** Max. offending references reported in StorageError details. */
const MAX_REPORTED = 20

function computeStats(items: number, lengths: number[], usedItems: number): DatasetStats {
  const sorted = [...lengths].sort((a, b) => a - b)
  const total = lengths.reduce((a, b) => a + b, 0)
  const n = sorted.length
  const median = n === 0 ? 0 : n % 2 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2
  return {
    minSequenceLength: n ? sorted[0]! : 0,
    maxSequenceLength: n ? sorted[n - 1]! : 0,
    meanSequenceLength: n ? total / n : 0,
    medianSequenceLength: median,
    density: n && items ? total / (n * items) : 0,
    coldItems: items - usedItems,
  }
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

  const used = new Set<string>()
  for (const u of input.users) for (const ext of u.itemExternalIds) used.add(ext)
  const stats = {
    ...computeStats(
      input.items.length,
      input.users.map((u) => u.itemExternalIds.length),
      used.size,
    ),
    ...input.stats,
  }

  return prisma.$transaction(async (tx) => {
    const dataset = await tx.dataset.create({
      data: {
        name: input.name,
        description: input.description ?? null,
        numItems: input.items.length,
        numUsers: input.users.length,
        numInteractions,
        stats: stats as Prisma.InputJsonValue,
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
    return dataset
  }, LONG_TRANSACTION)
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

/** Delete a dataset and everything that belongs to it. Returns false when it did not exist. */
export async function deleteDataset(db: Db, id: string): Promise<boolean> {
  const { count } = await db.dataset.deleteMany({ where: { id } })
  return count > 0
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
  /** Item.id, oldest first. */
  itemIds: number[]
  itemExternalIds: string[]
}

/** A user's ordered history, or null when the user is unknown in this dataset. */
export async function getUserHistory(db: Db, datasetId: string, userExternalId: string): Promise<UserHistory | null> {
  const user = await db.datasetUser.findUnique({
    where: { datasetId_externalId: { datasetId, externalId: userExternalId } },
    select: { id: true, externalId: true },
  })
  if (!user) return null
  const rows = await db.interaction.findMany({
    where: { userId: user.id },
    orderBy: { position: 'asc' },
    select: { itemId: true, item: { select: { externalId: true } } },
  })
  return {
    userId: user.id,
    externalId: user.externalId,
    itemIds: rows.map((r) => r.itemId),
    itemExternalIds: rows.map((r) => r.item.externalId),
  }
}
