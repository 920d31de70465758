// A training job's checkpoint is stored in parts (PostgreSQL caps one value at 1 GB; FFT's state at
// base shapes is ~3.1 GB): parts round-trip byte for byte, a new save replaces the old one whole,
// a save that fails midway leaves the previous checkpoint readable, a damaged one is refused and
// the job trains from scratch, checkpoints saved before parts still load, and deleting the job
// deletes its parts. Tiny part sizes make small real states span many parts.
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { once } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend, parseTrainingState, serializeTrainingState, type TrainingState } from '@iisan/model'
import { runTrainingJob, type JobProgress } from '@iisan/pipeline'
import {
  CHECKPOINT_MAX_PART_BYTES,
  applyMigrations,
  createTrainingJob,
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

/** The migration that moved checkpoint states into parts. */
const PARTS_MIGRATION = '20261206221102_checkpoint_parts'

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

async function partRows(jobId: string): Promise<{ generation: string; part: number; length: number }[]> {
  return prisma.$queryRaw`
    SELECT generation::text, part, octet_length(bytes) AS length FROM training_checkpoint_parts WHERE job_id = ${jobId}::uuid ORDER BY generation, part`
}

/** What `p` rejects with (undefined when it resolves: then the assertions on it fail). */
const rejection = (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (e: unknown) => e)

describe('training checkpoints in parts', () => {
  it('stores a state over many parts of at most partBytes and reads it back byte for byte', async () => {
    const jobId = await newJob()
    const state = stateBytes(3000)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state, meta: { bytes: state.byteLength } }, { partBytes: 1000 })
    const parts = await partRows(jobId)
    expect(parts.length).toBe(Math.ceil(state.byteLength / 1000))
    expect(parts.length).toBeGreaterThan(30)
    expect(new Set(parts.map((p) => p.generation)).size).toBe(1)
    expect(parts.map((p) => p.part)).toEqual(parts.map((_, i) => i))
    expect(parts.slice(0, -1).every((p) => p.length === 1000)).toBe(true)
    expect(parts.reduce((sum, p) => sum + p.length, 0)).toBe(state.byteLength)
    // the row holds no state of its own, only where the parts are and what they must add up to
    const row = await prisma.trainingCheckpoint.findUniqueOrThrow({ where: { jobId } })
    expect(row).toMatchObject({ epoch: 1, state: null, generation: parts[0].generation, partCount: parts.length, stateBytes: BigInt(state.byteLength), stateSha256: expect.stringMatching(/^[0-9a-f]{64}$/) })

    const loaded = await loadTrainingCheckpoint(prisma, jobId)
    expect(loaded).toMatchObject({ epoch: 1, meta: { bytes: state.byteLength } })
    expect(Buffer.from(loaded!.state).equals(Buffer.from(state))).toBe(true)
    expect(parseTrainingState(loaded!.state).params.get('item_embedding')!.values).toEqual(parseTrainingState(state).params.get('item_embedding')!.values)
  })

  it('refuses a part size its reader could not read back', async () => {
    const jobId = await newJob()
    const error = await rejection(saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state: stateBytes(10), meta: {} }, { partBytes: CHECKPOINT_MAX_PART_BYTES + 1 }))
    expect(isStorageError(error, 'INVALID_INPUT')).toBe(true)
    expect(await partRows(jobId)).toEqual([])
  })

  it('replaces the previous checkpoint whole: a smaller state leaves no part of the larger one', async () => {
    const jobId = await newJob()
    const first = stateBytes(3000, 1)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state: first, meta: {} }, { partBytes: 1024 })
    const firstParts = await partRows(jobId)
    const second = stateBytes(500, 2, 1)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 2, state: second, meta: { second: true } }, { partBytes: 1024 })
    const parts = await partRows(jobId)
    expect(parts.length).toBe(Math.ceil(second.byteLength / 1024))
    expect(parts.length).toBeLessThan(firstParts.length)
    expect(parts.some((p) => p.generation === firstParts[0].generation)).toBe(false)
    const loaded = await loadTrainingCheckpoint(prisma, jobId)
    expect(loaded).toMatchObject({ epoch: 2, meta: { second: true } })
    expect(Buffer.from(loaded!.state).equals(Buffer.from(second))).toBe(true)
  })

  it('keeps the previous checkpoint readable when a save fails midway, and the next save clears what it left', async () => {
    const jobId = await newJob()
    const first = stateBytes(1000, 1)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 1, state: first, meta: { first: true } }, { partBytes: 1024 })
    const firstParts = await partRows(jobId)
    // the database refuses the sixth part of any save from now on, as a crash or a lost connection would stop it
    await prisma.$executeRawUnsafe(`ALTER TABLE training_checkpoint_parts ADD CONSTRAINT fail_sixth_part CHECK (part < 5) NOT VALID`)
    try {
      const error = await rejection(saveTrainingCheckpoint(prisma, { jobId, epoch: 2, state: stateBytes(3000, 2, 1), meta: {} }, { partBytes: 1024 }))
      expect(String(error)).toMatch(/fail_sixth_part/)
    } finally {
      await prisma.$executeRawUnsafe(`ALTER TABLE training_checkpoint_parts DROP CONSTRAINT fail_sixth_part`)
    }
    // five parts of the failed save are stored, but nothing points at them
    expect((await partRows(jobId)).length).toBe(firstParts.length + 5)
    const loaded = await loadTrainingCheckpoint(prisma, jobId)
    expect(loaded).toMatchObject({ epoch: 1, meta: { first: true } })
    expect(Buffer.from(loaded!.state).equals(Buffer.from(first))).toBe(true)

    const third = stateBytes(1500, 3, 2)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 3, state: third, meta: {} }, { partBytes: 1024 })
    const parts = await partRows(jobId)
    expect(new Set(parts.map((p) => p.generation)).size).toBe(1)
    expect(parts.length).toBe(Math.ceil(third.byteLength / 1024))
    expect(Buffer.from((await loadTrainingCheckpoint(prisma, jobId))!.state).equals(Buffer.from(third))).toBe(true)
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
      UPDATE training_checkpoint_parts SET bytes = set_byte(bytes, 10, (get_byte(bytes, 10) + 1) % 256) WHERE job_id = ${jobId}::uuid AND part = 2`
    const altered = await rejection(loadTrainingCheckpoint(prisma, jobId))
    expect(isStorageError(altered, 'CORRUPT')).toBe(true)
    expect(String(altered)).toMatch(new RegExp(`${jobId}.*epoch 4.*sha256`))

    await prisma.$executeRaw`DELETE FROM training_checkpoint_parts WHERE job_id = ${jobId}::uuid AND part = 1`
    const missing = await rejection(loadTrainingCheckpoint(prisma, jobId))
    expect(isStorageError(missing, 'CORRUPT')).toBe(true)
    const left = Array.from({ length: count }, (_, i) => i).filter((i) => i !== 1)
    expect(String(missing)).toContain(`parts ${left.join(',')} of ${count} are stored`)
  })

  it('still loads a checkpoint saved in the single column before parts, and the next save moves it to parts', async () => {
    const jobId = await newJob()
    const old = stateBytes(800)
    await prisma.$executeRaw`
      INSERT INTO training_checkpoints (job_id, epoch, state, meta, updated_at) VALUES (${jobId}::uuid, 3, ${old}, '{"legacy": true}'::jsonb, now())`
    const loaded = await loadTrainingCheckpoint(prisma, jobId)
    expect(loaded).toMatchObject({ epoch: 3, meta: { legacy: true } })
    expect(Buffer.from(loaded!.state).equals(Buffer.from(old))).toBe(true)

    const next = stateBytes(900, 4)
    await saveTrainingCheckpoint(prisma, { jobId, epoch: 4, state: next, meta: {} }, { partBytes: 1024 })
    expect(await prisma.trainingCheckpoint.findUniqueOrThrow({ where: { jobId } })).toMatchObject({ epoch: 4, state: null, partCount: Math.ceil(next.byteLength / 1024) })
    expect(Buffer.from((await loadTrainingCheckpoint(prisma, jobId))!.state).equals(Buffer.from(next))).toBe(true)
  })

  it('loads a checkpoint saved before the parts migration, once the database is migrated', async () => {
    const before = await createTestDatabase('checkpoints_premigration', { migrate: false })
    const dir = mkdtempSync(path.join(os.tmpdir(), 'iisan-premigration-'))
    try {
      for (const name of readdirSync(MIGRATIONS_DIR).filter((n) => n < PARTS_MIGRATION)) cpSync(path.join(MIGRATIONS_DIR, name), path.join(dir, name), { recursive: true })
      await applyMigrations(before.url, dir)
      const dataset = await before.prisma.dataset.create({ data: { name: 'before parts' } })
      const jobId = (await createTrainingJob(before.prisma, { datasetId: dataset.id, method: 'fft', config: {} })).id
      const old = stateBytes(800, 2)
      await before.prisma.$executeRaw`INSERT INTO training_checkpoints (job_id, epoch, state, meta) VALUES (${jobId}::uuid, 2, ${old}, '{"legacy": true}'::jsonb)`

      expect(await applyMigrations(before.url, MIGRATIONS_DIR)).toContain(PARTS_MIGRATION)
      const loaded = await loadTrainingCheckpoint(before.prisma, jobId)
      expect(loaded).toMatchObject({ epoch: 2, meta: { legacy: true } })
      expect(Buffer.from(loaded!.state).equals(Buffer.from(old))).toBe(true)
    } finally {
      await before.drop()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('deletes the parts with the checkpoint, and with the job', async () => {
    const dropped = await newJob()
    await saveTrainingCheckpoint(prisma, { jobId: dropped, epoch: 1, state: stateBytes(1000), meta: {} }, { partBytes: 1024 })
    await deleteTrainingCheckpoint(prisma, dropped)
    expect(await partRows(dropped)).toEqual([])
    expect(await loadTrainingCheckpoint(prisma, dropped)).toBeNull()

    const deleted = await newJob()
    await saveTrainingCheckpoint(prisma, { jobId: deleted, epoch: 1, state: stateBytes(1000), meta: {} }, { partBytes: 1024 })
    expect((await partRows(deleted)).length).toBeGreaterThan(1)
    expect(await deleteTrainingJob(prisma, deleted)).toEqual({ deleted: 'queued' })
    expect(await partRows(deleted)).toEqual([])
    expect(await prisma.trainingCheckpoint.count({ where: { jobId: deleted } })).toBe(0)
  })
})

describe('a training job and its checkpoint parts', () => {
  it('the worker refuses at start a CHECKPOINT_PART_BYTES its checkpoints could not be read back with', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER_ENTRY], {
      cwd: REPO_ROOT,
      env: { ...process.env, DATABASE_URL: db.url, LOG_LEVEL: 'warn', CHECKPOINT_PART_BYTES: String(CHECKPOINT_MAX_PART_BYTES + 1) },
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
    expect(stderr.trim()).toMatch(new RegExp(`^CHECKPOINT_PART_BYTES: .*${CHECKPOINT_MAX_PART_BYTES + 1}$`))
  }, 70_000)

  it('trains from scratch over an unreadable checkpoint (logged), checkpoints in parts of the size it is given, and leaves none behind', async () => {
    await initBackend({ prefer: 'wasm' })
    const job = await createTrainingJob(prisma, { datasetId, method: 'sasrec-id', config: { maxEpochs: 2, patience: 2, batchSize: 8 } })
    await saveTrainingCheckpoint(prisma, { jobId: job.id, epoch: 1, state: stateBytes(1000), meta: {} }, { partBytes: 1024 })
    await prisma.$executeRaw`DELETE FROM training_checkpoint_parts WHERE job_id = ${job.id}::uuid AND part = 0`

    const logs: string[] = []
    let partsSeen = 0
    const outcome = await runTrainingJob(prisma, job.id, {
      checkpointPartBytes: 1024,
      log: (message) => logs.push(message),
      // in the second epoch the first one's checkpoint is stored
      onProgress: async (p: JobProgress) => {
        if (p.phase === 'training' && p.epoch === 2) partsSeen = Math.max(partsSeen, (await partRows(job.id)).length)
      },
    })
    expect(outcome.status).toBe('completed')
    expect(logs).toContain('checkpoint ignored: it is unreadable, training starts over')
    expect(logs).not.toContain('resuming from checkpoint')
    expect((await listEpochMetrics(prisma, job.id)).map((e) => e.epoch)).toEqual([1, 2])
    expect(partsSeen).toBeGreaterThan(1)
    expect(await partRows(job.id)).toEqual([])
    expect(await prisma.trainingCheckpoint.count({ where: { jobId: job.id } })).toBe(0)
  }, 120_000)
})
