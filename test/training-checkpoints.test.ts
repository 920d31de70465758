// Large values are blobs stored in parts (PostgreSQL caps one value at 1 GB; FFT's checkpoint at
// base shapes is ~3.1 GB, its weights ~780 MB). A training job's checkpoint: parts round-trip byte
// for byte, a new save replaces the old one whole, a save that fails midway leaves the previous
// checkpoint readable and its parts are swept once dead, a damaged one is refused and the job trains
// from scratch, checkpoints and weights stored before blobs still load, and deleting the job
// deletes its state. A model version's weights: the same parts, gone with the version or its
// dataset. Tiny part sizes make small real values span many parts.
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend, parseTrainingState, serializeTrainingState, type TrainingState } from '@iisan/model'
import { runTrainingJob, type JobProgress } from '@iisan/pipeline'
import {
  BLOB_MAX_PART_BYTES,
  applyMigrations,
  createModelVersion,
  createTrainingJob,
  deleteDataset,
  deleteModelVersion,
  getModelVersion,
  deleteTrainingCheckpoint,
  deleteTrainingJob,
  importDataset,
  isStorageError,
  listEpochMetrics,
  loadTrainingCheckpoint,
  pgPoolOf,
  saveTrainingCheckpoint,
  CopyBinaryColumnSink,
  CopyFormatError,
  type PrismaClient,
} from '@iisan/storage'
import { to as copyTo } from 'pg-copy-streams'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { MIGRATIONS_DIR, REPO_ROOT, createTestDatabase, type TestDatabase } from './helpers/db.ts'
import { WORKER_ENTRY } from './helpers/platform.ts'

/** The migration that moved checkpoint states into parts, and the one that moved every large value into blobs. */
const PARTS_MIGRATION = '20261206221102_checkpoint_parts'
const BLOBS_MIGRATION = '20261207061500_blobs'

let db: TestDatabase
let prisma: PrismaClient
let datasetId: string

// 12 items, 8 users of 7 interactions each: enough for the data protocol and a two-epoch model
const ITEMS = Array.from({ length: 12 }, (_, i) => `I${i + 1}`)

beforeAll(async () => {
  db = await createTestDatabase('checkpoints')
  prisma = db.prisma
  const dataset = await importDataset(prisma, {
    name: 'checkpoints',
    items: ITEMS.map((externalId, i) => ({ externalId, title: `lab item number ${i + 1}` })),
    users: Array.from({ length: 8 }, (_, u) => ({ externalId: `u${u + 1}`, itemExternalIds: Array.from({ length: 7 }, (_, k) => ITEMS[(u + k) % ITEMS.length]) })),
  })
  datasetId = dataset.id
})

afterAll(async () => {
  await db?.drop()
})

async function newJob(): Promise<string> {
  return (await createTrainingJob(prisma, { datasetId, method: 'sasrec-id', config: {} })).id
}

/** A training state of `n` parameters (and as many Adam slots), every value distinct. */
function stateBytes(n: number, epoch = 1, salt = 0): Uint8Array {
  const values = (k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k + salt))
  const params = new Map([['item_embedding', { shape: [n], values: values(1) }]])
  const state: TrainingState = {
    epoch,
    epochs: [],
    best: { metric: 0.1, epoch, validation: { hr10: 0.1, ndcg10: 0.05, users: 8 } },
    rngState: 42 + salt,
    dropoutCalls: 3,
    dataFingerprint: 'test',
    params,
    bestParams: params,
    optimizers: { recsys: { iterations: 7, accBeta1: 0.9 ** 7, accBeta2: 0.999 ** 7, slots: [{ shape: [n], values: values(2) }, { shape: [n], values: values(3) }] } },
  }
  return serializeTrainingState(state)
}

/** The blob holding the job's checkpoint state (undefined: no checkpoint). */
async function stateBlobOf(jobId: string): Promise<string | undefined> {
  return (await prisma.trainingCheckpoint.findUnique({ where: { jobId }, select: { stateBlobId: true } }))?.stateBlobId
}

async function partRows(blobId: string | undefined): Promise<{ part: number; length: number }[]> {
  if (!blobId) return []
  return prisma.$queryRaw`SELECT part, octet_length(bytes) AS length FROM blob_parts WHERE blob_id = ${blobId}::uuid ORDER BY part`
}

/** Blobs no row refers to (each with its part count): a write in progress, or one that died. */
async function ownerlessBlobs(): Promise<{ id: string; sealed: boolean; parts: number }[]> {
  return prisma.$queryRaw`
    SELECT b.id::text, b.sealed_at IS NOT NULL AS sealed, (SELECT count(*)::int FROM blob_parts p WHERE p.blob_id = b.id) AS parts FROM blobs b
    WHERE NOT EXISTS (SELECT 1 FROM model_versions m WHERE m.weights_blob_id = b.id) AND NOT EXISTS (SELECT 1 FROM training_checkpoints c WHERE c.state_blob_id = b.id)`
}

const blobCount = async () => prisma.blob.count()

/** What `p` rejects with (undefined when it resolves: then the assertions on it fail). */
const rejection = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (e: unknown) => e)

describe('training checkpoints in parts', () => {
  it('stores a state over many parts of at most partBytes and reads it back byte for byte', async () => {
    const jobId = await newJob()
    const state = stateBytes(3000)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state, meta: { bytes: state.byteLength } }, { partBytes: 1000 })
    const blobId = await stateBlobOf(jobId)
    const parts = await partRows(blobId)
    expect(parts.length).toBe(Math.ceil(state.byteLength / 1000))
    expect(parts.length).toBeGreaterThan(30)
    expect(parts.map((p) => p.part)).toEqual(parts.map((_, i) => i))
    expect(parts.slice(0, -1).every((p) => p.length === 1000)).toBe(true)
    expect(parts.reduce((sum, p) => sum + p.length, 0)).toBe(state.byteLength)
    // the blob says what its parts must add up to, and was sealed when the checkpoint pointed at it
    const sha256 = (await import('node:crypto')).createHash('sha256').update(state).digest('hex')
    expect(await prisma.blob.findUniqueOrThrow({ where: { id: blobId } })).toMatchObject({ partCount: parts.length, byteLength: BigInt(state.byteLength), sha256, sealedAt: expect.any(Date) })

    const loaded = await loadTrainingCheckpoint(prisma, jobId)
    expect(loaded).toMatchObject({ epoch: 1, meta: { bytes: state.byteLength } })
    expect(Buffer.from(loaded!.state).equals(Buffer.from(state))).toBe(true)
    expect(parseTrainingState(loaded!.state).params.get('item_embedding')!.values).toEqual(parseTrainingState(state).params.get('item_embedding')!.values)
  })

  it('refuses a part size its reader could not read back', async () => {
    const jobId = await newJob()
    const blobs = await blobCount()
    const error = await rejection(saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state: stateBytes(10), meta: {} }, { partBytes: BLOB_MAX_PART_BYTES + 1 }))
    expect(isStorageError(error, 'INVALID_INPUT')).toBe(true)
    expect(await stateBlobOf(jobId)).toBeUndefined()
    expect(await blobCount()).toBe(blobs)
  })

  it('replaces the previous checkpoint whole: a smaller state leaves no part of the larger one', async () => {
    const jobId = await newJob()
    const first = stateBytes(3000, 1)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state: first, meta: {} }, { partBytes: 1024 })
    const firstBlob = await stateBlobOf(jobId)
    expect((await partRows(firstBlob)).length).toBeGreaterThan(1)
    const second = stateBytes(500, 2, 1)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 2, state: second, meta: { second: true } }, { partBytes: 1024 })
    expect((await partRows(await stateBlobOf(jobId))).length).toBe(Math.ceil(second.byteLength / 1024))
    expect(await partRows(firstBlob)).toEqual([])
    expect(await prisma.blob.count({ where: { id: firstBlob } })).toBe(0)
    const loaded = await loadTrainingCheckpoint(prisma, jobId)
    expect(loaded).toMatchObject({ epoch: 2, meta: { second: true } })
    expect(Buffer.from(loaded!.state).equals(Buffer.from(second))).toBe(true)
  })

  it('keeps the previous checkpoint readable when a save fails midway, leaving none of its parts', async () => {
    const jobId = await newJob()
    const first = stateBytes(1000, 1)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state: first, meta: { first: true } }, { partBytes: 1024 })
    const firstBlob = await stateBlobOf(jobId)
    // the database refuses the sixth part of any write from now on, as a crash or a lost connection would stop it
    await prisma.$executeRawUnsafe(`ALTER TABLE blob_parts ADD CONSTRAINT fail_sixth_part CHECK (part < 5) NOT VALID`)
    try {
      const error = await rejection(saveTrainingCheckpoint(prisma, { jobId, epoch: 2, state: stateBytes(3000, 2, 1), meta: {} }, { partBytes: 1024 }))
      expect(String(error)).toMatch(/fail_sixth_part/)
    } finally {
      await prisma.$executeRawUnsafe(`ALTER TABLE blob_parts DROP CONSTRAINT fail_sixth_part`)
    }
    expect(await ownerlessBlobs()).toEqual([])
    expect(await stateBlobOf(jobId)).toBe(firstBlob)
    const loaded = await loadTrainingCheckpoint(prisma, jobId)
    expect(loaded).toMatchObject({ epoch: 1, meta: { first: true } })
    expect(Buffer.from(loaded!.state).equals(Buffer.from(first))).toBe(true)
  })

  it('sweeps what a writer that died left, once it is dead and not before', async () => {
    const jobId = await newJob()
    // a process died after five parts of a write (it could not tidy up), and another is writing now
    const deadWrite = async (touched: string) => {
      const [{ id }] = await prisma.$queryRaw<{ id: string }[]>`
        INSERT INTO blobs (id, byte_length, part_count, touched_at) VALUES (gen_random_uuid(), 10240, 10, now() - ${touched}::interval) RETURNING id::text`
      for (let part = 0; part < 5; part++) await prisma.$executeRaw`INSERT INTO blob_parts (blob_id, part, bytes) VALUES (${id}::uuid, ${part}, ${new Uint8Array(1024)})`
      return id
    }
    // and one died between replacing a checkpoint and deleting the state it replaced
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state: stateBytes(600), meta: {} }, { partBytes: 1024 })
    const replaced = await stateBlobOf(jobId)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 2, state: stateBytes(600, 2), meta: {} }, { partBytes: 1024 })
    const live = await stateBlobOf(jobId)
    const [dead, inProgress] = [await deadWrite('1 hour'), await deadWrite('1 minute')]
    await prisma.$executeRaw`
      INSERT INTO blobs (id, byte_length, part_count, sha256, sealed_at) VALUES (${replaced}::uuid, 0, 1, 'x', now() - interval '1 minute')`
    expect((await ownerlessBlobs()).map((b) => b.id).sort()).toEqual([dead, inProgress, replaced].sort())

    const third = stateBytes(1500, 3, 2)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 3, state: third, meta: {} }, { partBytes: 1024 })
    expect((await ownerlessBlobs()).map((b) => b.id)).toEqual([inProgress])
    expect(await partRows(dead)).toEqual([])
    expect((await partRows(inProgress)).length).toBe(5)
    expect(await prisma.blob.count({ where: { id: live } })).toBe(0)
    expect(Buffer.from((await loadTrainingCheckpoint(prisma, jobId))!.state).equals(Buffer.from(third))).toBe(true)
    await prisma.blob.delete({ where: { id: inProgress } })
  })

  it('loads what either transport saved, byte for byte (binary parameters and COPY, or the ORM)', async () => {
    for (const [save, load] of [['prisma', 'binary'], ['binary', 'prisma']] as const) {
      const jobId = await newJob()
      const state = stateBytes(2000, 1, save.length)
      await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state, meta: {} }, { partBytes: 777, transport: save })
      const loaded = await loadTrainingCheckpoint(prisma, jobId, { transport: load })
      expect(Buffer.from(loaded!.state).equals(Buffer.from(state))).toBe(true)
    }
  })

  it('parses PostgreSQL’s own binary COPY stream however it is cut, and refuses what is not one bytea column', async () => {
    const values = [Buffer.from([1, 2]), Buffer.alloc(0), Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 7) % 256))]
    /** The raw bytes PostgreSQL sends for `COPY (select) TO STDOUT (FORMAT binary)`. */
    const copyBytes = async (select: string): Promise<Buffer> => {
      const client = await pgPoolOf(prisma).connect()
      try {
        const chunks: Buffer[] = []
        await pipeline(client.query(copyTo(`COPY (${select}) TO STDOUT (FORMAT binary)`)), new Writable({ write: (chunk, _e, done) => (chunks.push(chunk), done()) }))
        return Buffer.concat(chunks)
      } finally {
        client.release()
      }
    }
    const hex = (b: Buffer) => `'\\x${b.toString('hex')}'::bytea`
    const stream = await copyBytes(`SELECT b FROM (VALUES (1, ${hex(values[0]!)}), (2, ${hex(values[1]!)}), (3, ${hex(values[2]!)})) AS v(n, b) ORDER BY n`)
    const feed = async (bytes: Buffer, size: number, target: Uint8Array) => {
      const sink = new CopyBinaryColumnSink(target)
      const pieces = Array.from({ length: Math.ceil(bytes.length / size) }, (_, i) => bytes.subarray(i * size, (i + 1) * size))
      await pipeline(Readable.from(pieces), sink)
      return sink
    }
    for (const size of [1, 7, stream.length]) {
      const target = new Uint8Array(1002)
      const sink = await feed(stream, size, target)
      expect(sink.rowLengths).toEqual([2, 0, 1000])
      expect(Buffer.from(target).equals(Buffer.concat(values))).toBe(true)
    }
    const refusal = async (bytes: Buffer, target = new Uint8Array(1002)) => (await feed(bytes, 5, target).then(() => undefined, (e: unknown) => e)) as Error
    expect(await refusal(stream, new Uint8Array(1001))).toBeInstanceOf(CopyFormatError)
    expect(String(await refusal(stream.subarray(0, stream.length - 3)))).toMatch(/ended early/)
    expect(String(await refusal(await copyBytes(`SELECT NULL::bytea`)))).toMatch(/NULL/)
    expect(String(await refusal(await copyBytes(`SELECT '\\x01'::bytea, '\\x02'::bytea`)))).toMatch(/2 columns/)
    expect(String(await refusal(Buffer.from('PGCOPY but not really, a text file')))).toMatch(/signature/)
  })

  it('refuses a checkpoint with a missing or altered part, saying which job and why', async () => {
    const jobId = await newJob()
    const state = stateBytes(1000)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 4, state, meta: {} }, { partBytes: 1024 })
    const count = Math.ceil(state.byteLength / 1024)
    // one byte of the third part flipped: same lengths, another sha256
    await prisma.$executeRaw`
      UPDATE blob_parts SET bytes = set_byte(bytes, 10, (get_byte(bytes, 10) + 1) % 256) WHERE blob_id = ${await stateBlobOf(jobId)}::uuid AND part = 2`
    const altered = await rejection(loadTrainingCheckpoint(prisma, jobId))
    expect(isStorageError(altered, 'CORRUPT')).toBe(true)
    expect(String(altered)).toMatch(new RegExp(`${jobId}.*epoch 4.*sha256`))

    await prisma.$executeRaw`DELETE FROM blob_parts WHERE blob_id = ${await stateBlobOf(jobId)}::uuid AND part = 1`
    const missing = await rejection(loadTrainingCheckpoint(prisma, jobId))
    expect(isStorageError(missing, 'CORRUPT')).toBe(true)
    const left = Array.from({ length: count }, (_, i) => i).filter((i) => i !== 1)
    expect(String(missing)).toContain(`parts ${left.join(',')} of ${count} are stored`)
  })

  it('loads the checkpoints and weights stored before blobs (in one column, or in checkpoint parts) once the database is migrated', async () => {
    const before = await createTestDatabase('checkpoints_premigration', { migrate: false })
    const dirs = [PARTS_MIGRATION, BLOBS_MIGRATION].map(() => mkdtempSync(path.join(os.tmpdir(), 'iisan-premigration-')))
    const migrationsBefore = (dir: string, name: string) => {
      for (const m of readdirSync(MIGRATIONS_DIR).filter((n) => n < name)) cpSync(path.join(MIGRATIONS_DIR, m), path.join(dir, m), { recursive: true })
      return applyMigrations(before.url, dir)
    }
    try {
      // before parts: a checkpoint in one column, and a model version's weights
      await migrationsBefore(dirs[0]!, PARTS_MIGRATION)
      const dataset = await before.prisma.dataset.create({ data: { name: 'before blobs' } })
      const job = async () => (await createTrainingJob(before.prisma, { datasetId: dataset.id, method: 'fft', config: {} })).id
      const [inColumn, inParts] = [await job(), await job()]
      const [columnState, partsState, weights] = [stateBytes(800, 2), stateBytes(900, 3, 1), stateBytes(700, 1, 2)]
      await before.prisma.$executeRaw`INSERT INTO training_checkpoints (job_id, epoch, state, meta) VALUES (${inColumn}::uuid, 2, ${columnState}, '{"legacy": "column"}'::jsonb)`
      const [{ id: versionId }] = await before.prisma.$queryRaw<{ id: string }[]>`
        INSERT INTO model_versions (id, dataset_id, method, config, weights, item_embeddings, item_index, embedding_dim, num_items)
        VALUES (gen_random_uuid(), ${dataset.id}::uuid, 'sasrec-id', '{}'::jsonb, ${weights}, ${new Uint8Array(8)}, '[1]'::jsonb, 2, 1) RETURNING id::text`
      // between the two migrations: a checkpoint in parts of 1,000 bytes
      await migrationsBefore(dirs[1]!, BLOBS_MIGRATION)
      const generation = '00000000-0000-4000-8000-00000000b10b'
      const partCount = Math.ceil(partsState.byteLength / 1000)
      for (let part = 0; part < partCount; part++) {
        await before.prisma.$executeRaw`INSERT INTO training_checkpoint_parts (job_id, generation, part, bytes) VALUES (${inParts}::uuid, ${generation}::uuid, ${part}, ${partsState.subarray(part * 1000, (part + 1) * 1000)})`
      }
      const sha = (await import('node:crypto')).createHash('sha256').update(partsState).digest('hex')
      await before.prisma.$executeRaw`
        INSERT INTO training_checkpoints (job_id, epoch, generation, state_bytes, part_count, state_sha256, meta)
        VALUES (${inParts}::uuid, 3, ${generation}::uuid, ${partsState.byteLength}, ${partCount}, ${sha}, '{"legacy": "parts"}'::jsonb)`

      expect(await applyMigrations(before.url, MIGRATIONS_DIR)).toEqual([BLOBS_MIGRATION])
      for (const [jobId, state, epoch, legacy] of [[inColumn, columnState, 2, 'column'], [inParts, partsState, 3, 'parts']] as const) {
        const loaded = await loadTrainingCheckpoint(before.prisma, jobId)
        expect(loaded).toMatchObject({ epoch, meta: { legacy } })
        expect(Buffer.from(loaded!.state).equals(Buffer.from(state))).toBe(true)
      }
      expect((await before.prisma.blob.findFirstOrThrow({ where: { checkpoint: { jobId: inParts } } })).partCount).toBe(partCount)
      expect(Buffer.from((await getModelVersion(before.prisma, versionId))!.weights).equals(Buffer.from(weights))).toBe(true)
    } finally {
      await before.drop()
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
    }
  })

  it('deletes the state with the checkpoint, and with the job', async () => {
    const dropped = await newJob()
    await saveTrainingCheckpoint(prisma, { jobId: dropped, epoch: 1, state: stateBytes(1000), meta: {} }, { partBytes: 1024 })
    const droppedBlob = await stateBlobOf(dropped)
    await deleteTrainingCheckpoint(prisma, dropped)
    expect(await partRows(droppedBlob)).toEqual([])
    expect(await prisma.blob.count({ where: { id: droppedBlob } })).toBe(0)
    expect(await loadTrainingCheckpoint(prisma, dropped)).toBeNull()

    const deleted = await newJob()
    await saveTrainingCheckpoint(prisma, { jobId: deleted, epoch: 1, state: stateBytes(1000), meta: {} }, { partBytes: 1024 })
    const deletedBlob = await stateBlobOf(deleted)
    expect((await partRows(deletedBlob)).length).toBeGreaterThan(1)
    expect(await deleteTrainingJob(prisma, deleted)).toEqual({ deleted: 'queued' })
    expect(await partRows(deletedBlob)).toEqual([])
    expect(await prisma.blob.count({ where: { id: deletedBlob } })).toBe(0)
    expect(await prisma.trainingCheckpoint.count({ where: { jobId: deleted } })).toBe(0)
  })
})

describe('a model version’s weights', () => {
  /** A version of the dataset whose weights are `weights` (the embedding matrix is tiny). */
  const versionOf = (weights: Uint8Array, partBytes: number, dataset = datasetId) =>
    createModelVersion(prisma, { datasetId: dataset, method: 'sasrec-id', config: {}, weights, itemEmbeddings: new Float32Array([1, 2]), itemIndex: [1], embeddingDim: 2 }, { partBytes })

  it('are stored in parts and read back byte for byte, and go with the version', async () => {
    const weights = stateBytes(2500, 1, 7)
    const version = await versionOf(weights, 1000)
    const blobId = (await prisma.modelVersion.findUniqueOrThrow({ where: { id: version.id }, select: { weightsBlobId: true } })).weightsBlobId
    expect((await partRows(blobId)).length).toBe(Math.ceil(weights.byteLength / 1000))
    const stored = await getModelVersion(prisma, version.id)
    expect(Buffer.from(stored!.weights).equals(Buffer.from(weights))).toBe(true)
    expect(stored).not.toHaveProperty('weightsBlobId')

    await prisma.$executeRaw`UPDATE blob_parts SET bytes = set_byte(bytes, 0, (get_byte(bytes, 0) + 1) % 256) WHERE blob_id = ${blobId}::uuid AND part = 1`
    const altered = await rejection(getModelVersion(prisma, version.id))
    expect(isStorageError(altered, 'CORRUPT')).toBe(true)
    expect(String(altered)).toMatch(/sha256/)

    expect(await deleteModelVersion(prisma, version.id)).toEqual({ deleted: { datasetId } })
    expect(await partRows(blobId)).toEqual([])
    expect(await prisma.blob.count({ where: { id: blobId } })).toBe(0)
  })

  it('come with the embedding matrix, read in binary and refused when its length does not match the version', async () => {
    const embeddings = Float32Array.from({ length: 3 * 4 }, (_, i) => Math.sin(i) * 1e3)
    const version = await createModelVersion(prisma, { datasetId, method: 'sasrec-id', config: {}, weights: stateBytes(50), itemEmbeddings: embeddings, itemIndex: [3, 1, 2], embeddingDim: 4 })
    const stored = (await getModelVersion(prisma, version.id))!
    expect(stored).toMatchObject({ numItems: 3, embeddingDim: 4, itemIndex: [3, 1, 2] })
    expect(new Float32Array(stored.itemEmbeddings.buffer, stored.itemEmbeddings.byteOffset, 12)).toEqual(embeddings)

    await prisma.$executeRaw`UPDATE model_versions SET item_embeddings = item_embeddings || '\\x0102030405060708'::bytea WHERE id = ${version.id}::uuid`
    const long = await rejection(getModelVersion(prisma, version.id))
    expect(isStorageError(long, 'CORRUPT')).toBe(true)
    expect(String(long)).toContain(`the embeddings of model version ${version.id} are unreadable`)
    await prisma.$executeRaw`UPDATE model_versions SET item_embeddings = substring(item_embeddings from 1 for 40) WHERE id = ${version.id}::uuid`
    expect(isStorageError(await rejection(getModelVersion(prisma, version.id)), 'CORRUPT')).toBe(true)
  })

  it('go with their dataset, and a version that cannot be stored leaves no weights behind', async () => {
    const other = await importDataset(prisma, { name: 'weights go with it', items: [{ externalId: 'W1', title: 'one' }], users: [] })
    const version = await versionOf(stateBytes(600), 512, other.id)
    const blobId = (await prisma.modelVersion.findUniqueOrThrow({ where: { id: version.id }, select: { weightsBlobId: true } })).weightsBlobId
    expect(await deleteDataset(prisma, other.id)).toBe(true)
    expect(await prisma.blob.count({ where: { id: blobId } })).toBe(0)
    expect(await partRows(blobId)).toEqual([])

    // the dataset is gone: the version's insert fails inside the transaction, after the weights were written
    const blobs = await blobCount()
    expect(await rejection(versionOf(stateBytes(600), 512, other.id))).toBeDefined()
    expect(await blobCount()).toBe(blobs)
  })
})

describe('a training job and its checkpoint parts', () => {
  it.each(['BLOB_PART_BYTES', 'CHECKPOINT_PART_BYTES'])('the worker refuses at start a %s its checkpoints could not be read back with', async (variable) => {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER_ENTRY], {
      cwd: REPO_ROOT,
      env: { ...process.env, DATABASE_URL: db.url, LOG_LEVEL: 'warn', [variable]: String(BLOB_MAX_PART_BYTES + 1) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    child.stdout!.resume()
    // a worker that started instead is stopped after 60 s, and the test fails
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    const [code] = await once(child, 'exit')
    clearTimeout(timer)
    expect(code, stderr).toBe(1)
    expect(stderr.trim()).toMatch(new RegExp(`^BLOB_PART_BYTES \\(or CHECKPOINT_PART_BYTES, its older name\\): .*${BLOB_MAX_PART_BYTES + 1}$`))
  }, 70_000)

  it('trains from scratch over an unreadable checkpoint (logged), checkpoints in parts of the size it is given, and leaves none behind', async () => {
    await initBackend({ prefer: 'wasm' })
    const job = await createTrainingJob(prisma, { datasetId, method: 'sasrec-id', config: { maxEpochs: 2, patience: 2, batchSize: 8 } })
    await saveTrainingCheckpoint(prisma, { jobId: job.id, epoch: 1, state: stateBytes(1000), meta: {} }, { partBytes: 1024 })
    await prisma.$executeRaw`DELETE FROM blob_parts WHERE blob_id = ${await stateBlobOf(job.id)}::uuid AND part = 0`

    const logs: string[] = []
    let partsSeen = 0
    const outcome = await runTrainingJob(prisma, job.id, {
      blobPartBytes: 1024,
      log: (message) => logs.push(message),
      // in the second epoch the first one's checkpoint is stored
      onProgress: async (p: JobProgress) => {
        if (p.phase === 'training' && p.epoch === 2) partsSeen = Math.max(partsSeen, (await partRows(await stateBlobOf(job.id))).length)
      },
    })
    expect(outcome.status).toBe('completed')
    expect(logs).toContain('checkpoint ignored: it is unreadable, training starts over')
    expect(logs).not.toContain('resuming from checkpoint')
    expect((await listEpochMetrics(prisma, job.id)).map((e) => e.epoch)).toEqual([1, 2])
    expect(partsSeen).toBeGreaterThan(1)
    expect(await prisma.trainingCheckpoint.count({ where: { jobId: job.id } })).toBe(0)
    // the unreadable state was replaced, and the last state went with the checkpoint
    expect((await ownerlessBlobs()).filter((b) => b.sealed)).toEqual([])
  }, 120_000)
})
