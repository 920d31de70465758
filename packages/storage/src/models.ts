import { Prisma, type ModelVersion, type PrismaClient } from './generated/prisma/client.ts'
import { deleteBlob, readBlob, sealBlob, writeBlob, type WriteBlobOptions } from './blobs.ts'
import { LONG_TRANSACTION, inTransaction, json, pgPoolOf, toBytes, type Db, type JsonInput } from './client.ts'
import { CopyFormatError, copyByteaInto } from './copy-binary.ts'
import { StorageError } from './errors.ts'

export interface CreateModelVersionInput {
  datasetId: string
  /** The training job that produced it; the job's modelVersionId is linked in the same transaction. */
  jobId?: string | null
  method: string
  config: JsonInput
  /** safetensors bytes, stored as a blob (FFT's are ~780 MB at base shapes) */
  weights: Uint8Array
  /** little-endian float32, numItems × embeddingDim, row r = item with model index r + 1 */
  itemEmbeddings: Uint8Array | Float32Array
  /** row r → Item.id */
  itemIndex: number[]
  embeddingDim: number
  testHr10?: number | null
  testNdcg10?: number | null
  valHr10?: number | null
  valNdcg10?: number | null
  secondsPerEpoch?: number | null
  peakMemoryMb?: number | null
  trainableParams?: number | null
  epochs?: number | null
  metrics?: JsonInput
  /** Activate it right away (same transaction). */
  activate?: boolean
  /** Activate it only if its dataset has no active version — decided inside the transaction. */
  activateIfNoneActive?: boolean
}

/** Model version fields without the large binary/JSON payloads. */
export const MODEL_VERSION_SUMMARY_SELECT = {
  id: true,
  datasetId: true,
  jobId: true,
  method: true,
  config: true,
  embeddingDim: true,
  numItems: true,
  testHr10: true,
  testNdcg10: true,
  valHr10: true,
  valNdcg10: true,
  secondsPerEpoch: true,
  peakMemoryMb: true,
  trainableParams: true,
  epochs: true,
  metrics: true,
  isActive: true,
  activatedAt: true,
  createdAt: true,
} as const satisfies Prisma.ModelVersionSelect

export type ModelVersionSummary = Prisma.ModelVersionGetPayload<{ select: typeof MODEL_VERSION_SUMMARY_SELECT }>

function embeddingBytes(e: Uint8Array | Float32Array): Uint8Array<ArrayBuffer> {
  if (e instanceof Float32Array) {
    const bytes = new Uint8Array(e.buffer, e.byteOffset, e.byteLength)
    // typed arrays use the platform's byte order; every platform Node supports is little-endian
    return toBytes(bytes)
  }
  return toBytes(e)
}

/** Serialises activations per dataset (the partial unique index enforces "one active" anyway). */
async function lockDataset(tx: Prisma.TransactionClient, datasetId: string): Promise<void> {
  await tx.$queryRaw`SELECT id FROM datasets WHERE id = ${datasetId}::uuid FOR UPDATE`
}

async function setActive(tx: Prisma.TransactionClient, datasetId: string, id: string): Promise<void> {
  await lockDataset(tx, datasetId)
  await makeActive(tx, datasetId, id)
}

/** The switch itself; the caller holds the dataset lock. */
async function makeActive(tx: Prisma.TransactionClient, datasetId: string, id: string): Promise<void> {
  await tx.modelVersion.updateMany({ where: { datasetId, isActive: true, NOT: { id } }, data: { isActive: false } })
  // only the id back: by default the ORM returns the whole row, a 1M-item version's 256 MB matrix
  // among it, as hex (it held an activation's transaction for 25 s, past its timeout)
  await tx.modelVersion.update({ where: { id }, data: { isActive: true, activatedAt: new Date() }, select: { id: true } })
}

/** A model version with its payloads: the weights read back from their blob. */
export type StoredModelVersion = Omit<ModelVersion, 'weightsBlobId'> & { weights: Uint8Array }

/**
 * Store a trained model. Throws INVALID_INPUT when the embedding matrix does not match its index.
 * The weights are written as a blob first (`options`: its part size), then sealed in the
 * transaction that creates the version.
 */
export async function createModelVersion(prisma: PrismaClient, input: CreateModelVersionInput, options: WriteBlobOptions = {}): Promise<ModelVersionSummary> {
  const bytes = embeddingBytes(input.itemEmbeddings)
  const numItems = input.itemIndex.length
  if (bytes.byteLength !== numItems * input.embeddingDim * 4) {
    throw new StorageError(
      'INVALID_INPUT',
      `itemEmbeddings has ${bytes.byteLength} bytes, expected ${numItems} × ${input.embeddingDim} × 4`,
      { numItems, embeddingDim: input.embeddingDim, bytes: bytes.byteLength },
    )
  }
  const weights = await writeBlob(prisma, input.weights, options)
  return prisma.$transaction(async (tx) => {
    await sealBlob(tx, weights)
    const mv = await tx.modelVersion.create({
      data: {
        datasetId: input.datasetId,
        jobId: input.jobId ?? null,
        method: input.method,
        config: json(input.config),
        weightsBlobId: weights.id,
        itemEmbeddings: bytes,
        itemIndex: input.itemIndex,
        embeddingDim: input.embeddingDim,
        numItems,
        testHr10: input.testHr10 ?? null,
        testNdcg10: input.testNdcg10 ?? null,
        valHr10: input.valHr10 ?? null,
        valNdcg10: input.valNdcg10 ?? null,
        secondsPerEpoch: input.secondsPerEpoch ?? null,
        peakMemoryMb: input.peakMemoryMb ?? null,
        trainableParams: input.trainableParams ?? null,
        epochs: input.epochs ?? null,
        metrics: input.metrics === undefined ? Prisma.DbNull : json(input.metrics),
      },
      select: { id: true },
    })
    if (input.jobId) await tx.trainingJob.update({ where: { id: input.jobId }, data: { modelVersionId: mv.id } })
    if (input.activate) await setActive(tx, input.datasetId, mv.id)
    else if (input.activateIfNoneActive) {
      // lock before counting: two jobs finishing together must not both go live
      await lockDataset(tx, input.datasetId)
      if ((await tx.modelVersion.count({ where: { datasetId: input.datasetId, isActive: true } })) === 0) await makeActive(tx, input.datasetId, mv.id)
    }
    return tx.modelVersion.findUniqueOrThrow({ where: { id: mv.id }, select: MODEL_VERSION_SUMMARY_SELECT })
  }, LONG_TRANSACTION).catch(async (e: unknown) => {
    // nothing refers to it: without this, a sweep would find it
    await deleteBlob(prisma, weights.id).catch(() => undefined)
    throw e
  })
}

/**
 * Make `id` the one active model version of its dataset (others of that dataset are
 * deactivated in the same transaction). Throws NOT_FOUND.
 */
export async function activateModelVersion(db: Db, id: string): Promise<ModelVersionSummary> {
  return inTransaction(db, async (tx) => {
    const mv = await tx.modelVersion.findUnique({ where: { id }, select: { datasetId: true } })
    if (!mv) throw new StorageError('NOT_FOUND', `model version ${id} not found`, { modelVersionId: id })
    await setActive(tx, mv.datasetId, id)
    return tx.modelVersion.findUniqueOrThrow({ where: { id }, select: MODEL_VERSION_SUMMARY_SELECT })
  })
}

export type ModelVersionDeletion = { deleted: { datasetId: string } } | { active: true } | null

/**
 * Delete a model version that is not its dataset's active one (the job that made it stays, without
 * it). `active` when it is: another version must be activated first. Null when there is none.
 */
export async function deleteModelVersion(db: Db, id: string): Promise<ModelVersionDeletion> {
  // one statement, so an activation cannot slip in between a check and the delete
  const [deleted] = await db.$queryRaw<{ datasetId: string }[]>`
    DELETE FROM model_versions WHERE id = ${id}::uuid AND NOT is_active RETURNING dataset_id::text AS "datasetId"`
  if (deleted) return { deleted }
  return (await db.modelVersion.findUnique({ where: { id }, select: { id: true } })) ? { active: true } : null
}

/**
 * Full model version (weights, embeddings, index) or null. The two large payloads come in binary:
 * the weights from their blob, the embedding matrix by COPY (through the ORM, 1M items of D = 64
 * would be one hex string over V8's limit). StorageError CORRUPT when either is unreadable.
 */
export async function getModelVersion(prisma: PrismaClient, id: string): Promise<StoredModelVersion | null> {
  return withPayloads(prisma, { id })
}

/** The active model version of a dataset with all payloads (what the API serves), or null. */
export async function getActiveModelVersion(prisma: PrismaClient, datasetId: string): Promise<StoredModelVersion | null> {
  return withPayloads(prisma, { datasetId, isActive: true })
}

/** Times a read starts over when a cold-start append lands between the row and its matrix. */
const APPEND_RACE_RETRIES = 5

async function withPayloads(prisma: PrismaClient, where: Prisma.ModelVersionWhereInput): Promise<StoredModelVersion | null> {
  for (let attempt = 0; ; attempt++) {
    const row = await prisma.modelVersion.findFirst({ where, omit: { itemEmbeddings: true } })
    if (!row) return null
    const itemEmbeddings = await readItemEmbeddings(prisma, row)
    if (!itemEmbeddings) {
      if (attempt < APPEND_RACE_RETRIES) continue
      throw new StorageError('CONFLICT', `model version ${row.id} kept changing while it was read`, { modelVersionId: row.id })
    }
    const { weightsBlobId, ...version } = row
    return { ...version, itemEmbeddings, weights: await readBlob(prisma, weightsBlobId) }
  }
}

/** The row's embedding matrix by binary COPY, or null when rows were appended since the row was read. */
async function readItemEmbeddings(prisma: PrismaClient, row: Pick<ModelVersion, 'id' | 'numItems' | 'embeddingDim'>): Promise<Uint8Array<ArrayBuffer> | null> {
  // a Float32Array's buffer, so that decodeItemEmbeddings' copy is aligned
  const bytes = new Uint8Array(new Float32Array(row.numItems * row.embeddingDim).buffer)
  try {
    const rows = await copyByteaInto(
      pgPoolOf(prisma),
      // COPY takes no parameters: the id is a uuid the store made, quoted all the same
      (client) => `SELECT item_embeddings FROM model_versions WHERE id = ${client.escapeLiteral(row.id)}::uuid AND num_items = ${Number(row.numItems)}`,
      bytes,
    )
    if (rows.length === 0) return null
    if (rows[0] !== bytes.byteLength) throw new CopyFormatError(`${rows[0]} bytes, ${bytes.byteLength} expected`)
    return bytes
  } catch (e) {
    if (e instanceof CopyFormatError) throw new StorageError('CORRUPT', `the embeddings of model version ${row.id} are unreadable: ${e.message}`, { modelVersionId: row.id })
    throw e
  }
}

/** Active versions of all datasets, summaries only (e.g. to warm the API's caches). */
export async function listActiveModelVersions(db: Db): Promise<ModelVersionSummary[]> {
  return db.modelVersion.findMany({ where: { isActive: true }, select: MODEL_VERSION_SUMMARY_SELECT, orderBy: { activatedAt: 'desc' } })
}

/** Model versions without weights/embeddings/index, newest first. */
export async function listModelVersions(
  db: Db,
  options: { datasetId?: string; limit?: number; offset?: number } = {},
): Promise<ModelVersionSummary[]> {
  return db.modelVersion.findMany({
    where: { datasetId: options.datasetId },
    select: MODEL_VERSION_SUMMARY_SELECT,
    orderBy: { createdAt: 'desc' },
    take: options.limit ?? 100,
    skip: options.offset ?? 0,
  })
}

/** Decode ModelVersion.itemEmbeddings into a Float32Array (copy, aligned). */
export function decodeItemEmbeddings(mv: Pick<ModelVersion, 'itemEmbeddings' | 'numItems' | 'embeddingDim'>): Float32Array {
  const src = mv.itemEmbeddings
  const out = new Float32Array(mv.numItems * mv.embeddingDim)
  if (src.byteLength !== out.byteLength) {
    throw new StorageError('INVALID_INPUT', `itemEmbeddings has ${src.byteLength} bytes, expected ${out.byteLength}`)
  }
  new Uint8Array(out.buffer).set(src)
  return out
}

/**
 * Cold start: append embedding rows (float32, numItems × embeddingDim) and their Item.ids to a
 * model version, atomically (one UPDATE: bytes, index and count move together). Item ids the
 * version already has are refused (the caller filters them), so a retried append is detectable.
 */
export async function appendModelVersionItems(db: Db, id: string, itemIds: number[], embeddings: Float32Array): Promise<void> {
  if (itemIds.length === 0) return
  const rows = await db.$queryRaw<{ embedding_dim: number }[]>`SELECT embedding_dim FROM model_versions WHERE id = ${id}::uuid`
  if (rows.length === 0) throw new StorageError('NOT_FOUND', `model version ${id} not found`, { modelVersionId: id })
  if (embeddings.length !== itemIds.length * rows[0]!.embedding_dim) {
    throw new StorageError('INVALID_INPUT', `${embeddings.length} values for ${itemIds.length} items of dimension ${rows[0]!.embedding_dim}`)
  }
  const bytes = embeddingBytes(embeddings)
  const count = await db.$executeRaw`
    UPDATE model_versions
    SET item_embeddings = item_embeddings || ${bytes},
        item_index = item_index || ${JSON.stringify(itemIds)}::jsonb,
        num_items = num_items + ${itemIds.length}
    WHERE id = ${id}::uuid AND NOT (item_index @> ANY (SELECT jsonb_build_array(x) FROM jsonb_array_elements(${JSON.stringify(itemIds)}::jsonb) AS x))`
  if (count === 0) throw new StorageError('CONFLICT', `model version ${id} already has some of these items`, { itemIds })
}
