// Binary values of any size (a checkpoint's state, a model version's weights) in parts, around the
// ORM. Prisma's client carries a Bytes value as a base64 string on the way in, node-postgres reads
// a bytea as a hex string twice its size, and V8 caps a string at 2^29 − 24 characters: FFT's
// 780 MB of weights at base shapes could not be stored that way at all, and a 1 GiB checkpoint held
// about 3 GiB more than itself while it travelled. Here each part goes out as a binary parameter
// from a view of the value, and one binary COPY streams every part back into one allocation.
import { createHash, randomUUID } from 'node:crypto'
import type { PrismaClient } from './generated/prisma/client.ts'
import { pgPoolOf, toBytes, type Db } from './client.ts'
import { CopyFormatError, copyByteaInto } from './copy-binary.ts'
import { StorageError } from './errors.ts'

/**
 * Default size of one stored part: FFT's 3.1 GB checkpoint at base shapes is 93 parts of 32 MiB.
 * A write sends a part from a view of the value, and what it holds on top is a few parts' worth
 * (the driver's write buffer grows to a part). PostgreSQL caps one value at 1 GB, but the 'prisma'
 * transport is the tighter limit: it reads a bytea as one hex string (two characters a byte), V8
 * caps a string at 2^29 − 24 characters, and a 256 MiB part overflows it (ERR_STRING_TOO_LONG,
 * thrown inside pg's socket handler: the process dies). Hence BLOB_MAX_PART_BYTES.
 */
export const BLOB_PART_BYTES = 32 * 2 ** 20
export const BLOB_MAX_PART_BYTES = 192 * 2 ** 20

/** An unsealed blob whose last part is older than this is a write that died: sweepDeadBlobs removes it. */
export const BLOB_DEAD_AFTER_MS = 15 * 60_000

export interface BlobTransportOptions {
  /**
   * How the parts' bytes travel. 'binary' (the default): node-postgres sends each part as a binary
   * parameter from a view of the value, and one binary COPY streams every part back straight into
   * place. 'prisma': the ORM's path, a part as a base64 string on the way in and a hex string on
   * the way out; kept as bench:checkpoint's baseline (1 GiB, EPYC: 4× the write time and 9× the
   * transient memory, 8× the read time and 15× its transient memory).
   */
  transport?: 'binary' | 'prisma'
}

export interface WriteBlobOptions extends BlobTransportOptions {
  /** Bytes per stored part (default BLOB_PART_BYTES, at most BLOB_MAX_PART_BYTES). */
  partBytes?: number
}

/** A blob written and not sealed yet: what sealBlob checks the stored parts against. */
export interface WrittenBlob {
  id: string
  byteLength: number
  partCount: number
  /** hex */
  sha256: string
}

/** The part size to use: `partBytes`, or the default; INVALID_INPUT outside 1..BLOB_MAX_PART_BYTES. */
export function blobPartBytes(partBytes = BLOB_PART_BYTES): number {
  if (!Number.isInteger(partBytes) || partBytes <= 0 || partBytes > BLOB_MAX_PART_BYTES) {
    throw new StorageError('INVALID_INPUT', `a stored part must be 1 to ${BLOB_MAX_PART_BYTES} bytes, got ${partBytes}`)
  }
  return partBytes
}

/**
 * Store `value` as a new unsealed blob, in parts that are views of it (no copy). Nothing refers to
 * it yet: the caller seals it (sealBlob) in the transaction that points a row at it. Dead writes
 * of earlier processes are swept first; a write that fails deletes what it wrote.
 */
export async function writeBlob(prisma: PrismaClient, value: Uint8Array, options: WriteBlobOptions = {}): Promise<WrittenBlob> {
  const partBytes = blobPartBytes(options.partBytes)
  await sweepDeadBlobs(prisma)
  const id = randomUUID()
  const partCount = Math.max(1, Math.ceil(value.byteLength / partBytes))
  await prisma.blob.create({ data: { id, byteLength: BigInt(value.byteLength), partCount } })
  const hash = createHash('sha256')
  try {
    for (let part = 0; part < partCount; part++) {
      const bytes = value.subarray(part * partBytes, (part + 1) * partBytes)
      hash.update(bytes)
      await writePart(prisma, id, part, bytes, options.transport)
    }
  } catch (e) {
    // a process that dies here leaves it to a sweep; one that lives tidies up now
    await deleteBlob(prisma, id).catch(() => undefined)
    throw e
  }
  return { id, byteLength: value.byteLength, partCount, sha256: hash.digest('hex') }
}

/**
 * Inside the transaction that makes a row refer to `blob`: check that every part is stored and
 * record the value's sha256. CONFLICT when parts are missing (the blob was swept as dead, or
 * deleted): the transaction must not commit a reference to it.
 */
export async function sealBlob(tx: Db, blob: WrittenBlob): Promise<void> {
  const stored = await partLengths(tx, blob.id)
  const complete = stored.length === blob.partCount && stored.reduce((sum, p) => sum + p.length, 0) === blob.byteLength
  const sealed = complete ? await tx.$executeRaw`UPDATE blobs SET sha256 = ${blob.sha256}, sealed_at = now() WHERE id = ${blob.id}::uuid AND sealed_at IS NULL` : 0
  if (sealed !== 1) {
    throw new StorageError('CONFLICT', `blob ${blob.id}: ${stored.length} of ${blob.partCount} parts are stored (it was swept or deleted), or it is sealed already`, { blobId: blob.id })
  }
}

/**
 * The value of a sealed blob, read into one allocation. StorageError CORRUPT, with `details.why`,
 * when it is missing, unsealed, a part is missing, or its length or sha256 differs from what was sealed.
 */
export async function readBlob(prisma: PrismaClient, id: string, options: BlobTransportOptions = {}): Promise<Uint8Array> {
  const blob = await prisma.blob.findUnique({ where: { id } })
  if (!blob) throw corrupt(id, 'it is not stored')
  if (blob.sealedAt === null || blob.sha256 === null) throw corrupt(id, 'it was never sealed')
  const parts = await partLengths(prisma, id)
  if (parts.length !== blob.partCount || parts.some((p, i) => p.part !== i)) {
    throw corrupt(id, `parts ${parts.map((p) => p.part).join(',') || 'none'} of ${blob.partCount} are stored`)
  }
  const total = Number(blob.byteLength)
  const stored = parts.reduce((sum, p) => sum + p.length, 0)
  if (stored !== total) throw corrupt(id, `its parts hold ${stored} bytes, ${total} were written`)
  // one allocation, the parts written into it as they arrive
  const value = new Uint8Array(total)
  const hash = createHash('sha256')
  const onBytes = (bytes: Uint8Array) => hash.update(bytes)
  const lengths = options.transport === 'prisma' ? await readPartsWithPrisma(prisma, id, parts.length, value, onBytes) : await copyParts(prisma, id, value, onBytes)
  const changed = lengths.findIndex((length, i) => length !== parts[i]?.length)
  if (lengths.length !== parts.length || changed >= 0) throw corrupt(id, `part ${changed >= 0 ? changed : lengths.length} went or changed while it was read`)
  if (hash.digest('hex') !== blob.sha256) throw corrupt(id, 'the sha256 of its parts differs from the sealed one')
  return value
}

/** Delete a blob that nothing refers to any more (a row's own blob goes with the row, by trigger). */
export async function deleteBlob(db: Db, id: string): Promise<void> {
  await db.blob.deleteMany({ where: { id } })
}

/**
 * Remove blobs nothing will ever read: unsealed ones untouched for `deadAfterMs` (a writer that
 * died), and sealed ones no row refers to (a process that died between replacing a checkpoint and
 * deleting the old state). Returns how many went.
 */
export async function sweepDeadBlobs(db: Db, deadAfterMs = BLOB_DEAD_AFTER_MS): Promise<number> {
  return db.$executeRaw`
    DELETE FROM blobs b
    WHERE (b.sealed_at IS NULL AND b.touched_at < now() - make_interval(secs => ${deadAfterMs / 1000}))
       OR (b.sealed_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM training_checkpoints c WHERE c.state_blob_id = b.id)
           AND NOT EXISTS (SELECT 1 FROM model_versions m WHERE m.weights_blob_id = b.id))`
}

async function writePart(prisma: PrismaClient, blobId: string, part: number, bytes: Uint8Array, transport: BlobTransportOptions['transport']): Promise<void> {
  if (transport === 'prisma') await prisma.blobPart.create({ data: { blobId, part, bytes: toBytes(bytes) } })
  else {
    // a Buffer parameter goes out in binary, written from this view of the value
    await pgPoolOf(prisma).query({
      text: 'INSERT INTO blob_parts (blob_id, part, bytes) VALUES ($1::uuid, $2, $3)',
      values: [blobId, part, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)],
    })
  }
  // a sweep tells a slow write from a dead one by this
  await prisma.$executeRaw`UPDATE blobs SET touched_at = now() WHERE id = ${blobId}::uuid`
}

/** The ORM's path (bench:checkpoint's baseline): parts 0..partCount−1 one query each. Returns each part's length, up to the first missing or overflowing one. */
async function readPartsWithPrisma(prisma: PrismaClient, blobId: string, partCount: number, value: Uint8Array, onBytes: (bytes: Uint8Array) => void): Promise<number[]> {
  const lengths: number[] = []
  let offset = 0
  for (let part = 0; part < partCount; part++) {
    const found = await prisma.blobPart.findUnique({ where: { blobId_part: { blobId, part } }, select: { bytes: true } })
    if (!found) break
    lengths.push(found.bytes.byteLength)
    if (offset + found.bytes.byteLength > value.byteLength) break
    value.set(found.bytes, offset)
    onBytes(found.bytes)
    offset += found.bytes.byteLength
  }
  return lengths
}

/**
 * Every part of a blob, in order, written into `value` by one binary COPY: the bytes as they are,
 * where a query would bring each part as a hex string twice its size. Returns each part's length.
 */
async function copyParts(prisma: PrismaClient, blobId: string, value: Uint8Array, onBytes: (bytes: Uint8Array) => void): Promise<number[]> {
  try {
    // COPY takes no parameters: the id is a uuid the store made, quoted all the same
    return await copyByteaInto(pgPoolOf(prisma), (client) => `SELECT bytes FROM blob_parts WHERE blob_id = ${client.escapeLiteral(blobId)}::uuid ORDER BY part`, value, onBytes)
  } catch (e) {
    if (e instanceof CopyFormatError) throw corrupt(blobId, e.message)
    throw e
  }
}

function corrupt(blobId: string, why: string): StorageError {
  return new StorageError('CORRUPT', `blob ${blobId} is unreadable: ${why}`, { blobId, why })
}

/** Index and length of each stored part, in order, without reading the bytes. */
async function partLengths(db: Db, blobId: string): Promise<{ part: number; length: number }[]> {
  return db.$queryRaw<{ part: number; length: number }[]>`
    SELECT part, octet_length(bytes) AS length FROM blob_parts WHERE blob_id = ${blobId}::uuid ORDER BY part`
}
