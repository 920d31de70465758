import { Prisma, type Dataset, type Item, type PrismaClient } from './generated/prisma/client.ts'
import { LONG_TRANSACTION, toBytes, type Db } from './client.ts'
import { StorageError } from './errors.ts'
import { computeContentHashes } from './hash.ts'

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
 * that is not in `items`). Validating the file format is the caller's job.
 */
export async function importDataset(prisma: PrismaClient, input: ImportDatasetInput): Promise<Dataset> {
  // --- validation (cheap, before touching the database)
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

  const itemRows = input.items.map((it) => ({
    externalId: it.externalId,
    title: it.title,
    imageRef: it.imageRef ?? null,
    imageBlob: it.imageBlob ? toBytes(it.imageBlob) : null,
    imageMime: it.imageMime ?? null,
    ...computeContentHashes(it),
  }))

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
    const datasetId = dataset.id
    const items = await tx.item.createManyAndReturn({
      data: itemRows.map((r) => ({ ...r, datasetId })),
      select: { id: true, externalId: true },
    })
    const itemIds = new Map(items.map((r) => [r.externalId, r.id]))
    const users = await tx.datasetUser.createManyAndReturn({
      data: input.users.map((u) => ({ datasetId, externalId: u.externalId })),
      select: { id: true, externalId: true },
    })
    const userIds = new Map(users.map((r) => [r.externalId, r.id]))
    const interactions: Prisma.InteractionCreateManyInput[] = []
    for (const u of input.users) {
      const userId = userIds.get(u.externalId)!
      u.itemExternalIds.forEach((ext, position) => {
        const itemId = itemIds.get(ext)
        if (itemId === undefined) throw new StorageError('UNKNOWN_ITEM', `unknown item ${ext}`) // validated above
        interactions.push({ datasetId, userId, itemId, position, source: 'import' })
      })
    }
    if (interactions.length) await tx.interaction.createMany({ data: interactions })
    return dataset
  }, LONG_TRANSACTION)
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

/** Full item rows (including image bytes) by id, e.g. for the embedding cache. */
export async function getItemsByIds(db: Db, ids: number[]): Promise<Item[]> {
  return db.item.findMany({ where: { id: { in: ids } }, orderBy: { id: 'asc' } })
}

/**
 * Add items to an existing dataset (new items become recommendable without retraining once
 * their hidden states are cached). Throws DUPLICATE_ITEM if an external id already exists.
 */
export async function addItems(prisma: PrismaClient, datasetId: string, items: ImportItemInput[]): Promise<Item[]> {
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
    const created = await tx.item.createManyAndReturn({
      data: items.map((it) => ({
        datasetId,
        externalId: it.externalId,
        title: it.title,
        imageRef: it.imageRef ?? null,
        imageBlob: it.imageBlob ? toBytes(it.imageBlob) : null,
        imageMime: it.imageMime ?? null,
        ...computeContentHashes(it),
      })),
    })
    await tx.dataset.update({ where: { id: datasetId }, data: { numItems: { increment: created.length } } })
    return created.sort((a, b) => a.id - b.id)
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
