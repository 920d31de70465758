// What a new user runs into (issue 9, parts 2 and 5), over real PostgreSQL and Redis: real
// catalogues import as they come (control characters in titles cleaned and reported, every
// malformed line reported at once), dataset statistics that are right and current, item search
// by substring, deleting datasets / model versions / training jobs (and the cache garbage
// collection after them), an OpenAPI document the /docs page can upload files with, and
// validation messages that say what is wrong. The API and the embedding cache run in-process
// (no backbones: items need no states here); no worker runs, so jobs stay where a test puts them.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import request from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildProtocol } from '@iisan/model'
import { PAPER_PROTOCOL } from '@iisan/model/data'
import { getMethod } from '@iisan/model'
import { MAX_REPORTED_PROBLEMS, protocolForDataset, defaultTrainingConfig, sampleDataset } from '@iisan/pipeline'
import { createTrainingQueue, type TrainingQueue } from '@iisan/queue'
import {
  MAX_TITLE_LENGTH,
  appendEpochMetric,
  computeContentHashes,
  createTrainingJob,
  loadDatasetSequences,
  saveHiddenStates,
  saveTrainingCheckpoint,
  updateTrainingJobStatus,
  upsertBackbone,
} from '@iisan/storage'
import { REPO_ROOT } from './helpers/db.ts'
import { createTestApi, until, type TestPlatform } from './helpers/platform.ts'
import { startQuickApi, untrainedModelVersion, type QuickApi } from './helpers/quick-api.ts'

let quick: QuickApi
let platform: TestPlatform
let api: QuickApi['api']
/** A second replica: it must drop deleted models from memory too. */
let replica: QuickApi['api']
let base: string
let http: ReturnType<typeof request>
let queue: TrainingQueue

const UNKNOWN_UUID = '00000000-0000-4000-8000-000000000000'
const ITEMS = 'A\tFirst item\nB\tSecond item\nC\tThird item\n'
const USERS = 'u1\tA B C\nu2\tB C\n'

beforeAll(async () => {
  quick = await startQuickApi('api-usability')
  ;({ platform, api, base } = quick)
  http = request(base)
  replica = await createTestApi({ ...platform.env, EMBEDDING_CACHE_URL: quick.cacheUrl }, 'usability-replica')
  await replica.app.ready()
  queue = createTrainingQueue(platform.redis, platform.prefix)
})

afterAll(async () => {
  await queue?.close()
  await replica?.close()
  await quick?.close()
})

const prisma = () => platform.db.prisma
const importJson = (name: string, itemsTsv: string, usersTsv: string) => http.post('/v1/datasets').send({ name, itemsTsv, usersTsv })

/** Rows in every table of the schema (the migrations' bookkeeping aside). */
async function tableCounts(): Promise<Record<string, number>> {
  const tables = await prisma().$queryRaw<{ name: string }[]>`
    SELECT table_name AS name FROM information_schema.tables
    WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_prisma_migrations' ORDER BY table_name`
  const counts: Record<string, number> = {}
  for (const { name } of tables) counts[name] = Number((await prisma().$queryRawUnsafe<{ n: bigint }[]>(`SELECT count(*) AS n FROM "${name}"`))[0]!.n)
  return counts
}

async function titlesOf(datasetId: string): Promise<string[]> {
  return (await prisma().item.findMany({ where: { datasetId }, orderBy: { id: 'asc' }, select: { title: true } })).map((i) => i.title)
}

describe('a real catalogue imports as it comes', () => {
  it('control characters in titles are removed, the import succeeds and the response lists each change with its line', async () => {
    const itemsTsv = [
      'A\tPlain title, left  exactly   as it is',
      'B\tPipette\u007f tips',
      'C\tBeaker\u007f',
      '',
      'D\tMicro\u007fscope slides',
      'E\tLens\rcleaner', // a lone CR between words: a space
      'F\tTest&#127;tubes', // an entity decoding to DEL
      'G\tNul\u0000 and bell\u0007',
    ].join('\n')
    const res = await importJson('dirty', itemsTsv, 'u\tA B C D E F G\n').expect(201)
    expect(res.body.totalWarnings).toBe(6)
    expect(res.body.warnings).toEqual([
      { file: 'items.tsv', line: 2, code: 'CONTROL_CHARACTERS_REMOVED', message: 'removed control character U+007F from the title' },
      { file: 'items.tsv', line: 3, code: 'CONTROL_CHARACTERS_REMOVED', message: 'removed control character U+007F from the title' },
      { file: 'items.tsv', line: 5, code: 'CONTROL_CHARACTERS_REMOVED', message: 'removed control character U+007F from the title' },
      { file: 'items.tsv', line: 6, code: 'CONTROL_CHARACTERS_REMOVED', message: 'removed control character U+000D from the title' },
      { file: 'items.tsv', line: 7, code: 'CONTROL_CHARACTERS_REMOVED', message: 'removed control character U+007F from the title' },
      { file: 'items.tsv', line: 8, code: 'CONTROL_CHARACTERS_REMOVED', message: 'removed 2 control characters (U+0000, U+0007) from the title' },
    ])
    expect(await titlesOf(res.body.id)).toEqual(['Plain title, left  exactly   as it is', 'Pipette tips', 'Beaker', 'Microscope slides', 'Lens cleaner', 'Testtubes', 'Nul and bell'])
    // the cleaned title is what is hashed for the text backbone's cache
    const stored = await prisma().item.findFirstOrThrow({ where: { datasetId: res.body.id, externalId: 'B' } })
    expect(stored.textHash).toBe(computeContentHashes({ title: 'Pipette tips' }).textHash)
  })

  it('warnings are bounded, with the total', async () => {
    const n = MAX_REPORTED_PROBLEMS + 50
    const itemsTsv = Array.from({ length: n }, (_, i) => `I${i}\tTitle\u007f ${i}`).join('\n')
    const res = await importJson('many-warnings', itemsTsv, `u\t${Array.from({ length: n }, (_, i) => `I${i}`).join(' ')}\n`).expect(201)
    expect(res.body.totalWarnings).toBe(n)
    expect(res.body.warnings).toHaveLength(MAX_REPORTED_PROBLEMS)
    expect(res.body.warnings.at(-1).line).toBe(MAX_REPORTED_PROBLEMS)
  })

  it('real errors of both files are reported together in one 400, and nothing is written', async () => {
    const before = await tableCounts()
    const itemsTsv = [
      'A\tok',
      'B-without-a-title',
      'C\tok',
      'A\tduplicate of line 1',
      `D\t${'t'.repeat(MAX_TITLE_LENGTH + 1)}`,
      'E\u0000\tnul in the id',
      'F\t\u007f', // nothing left once cleaned
    ].join('\n')
    const usersTsv = 'u1\tA C\nu2\tA NOPE\nu1\tC\n'
    for (const res of [
      await importJson('broken', itemsTsv, usersTsv),
      await http.post('/v1/datasets').field('name', 'broken').attach('items', Buffer.from(itemsTsv), 'items.tsv').attach('users', Buffer.from(usersTsv), 'users.tsv'),
    ]) {
      expect(res.status).toBe(400)
      const { code, message, details } = res.body.error
      expect(code).toBe('MALFORMED_FILE')
      // the first error as any MALFORMED_FILE names it
      expect(details).toMatchObject({ file: 'items.tsv', line: 2, reason: 'expected "item_id<TAB>title[<TAB>image]"', total: 7 })
      expect(message).toMatch(/items\.tsv line 2: .*and 6 more/)
      expect(details.errors).toEqual([
        { file: 'items.tsv', line: 2, message: 'expected "item_id<TAB>title[<TAB>image]"' },
        { file: 'items.tsv', line: 4, message: 'duplicate item id A (first on line 1)' },
        { file: 'items.tsv', line: 5, message: `the title is ${MAX_TITLE_LENGTH + 1} characters long (at most ${MAX_TITLE_LENGTH})` },
        { file: 'items.tsv', line: 6, message: expect.stringMatching(/^control character U\+0000 at column 2/) },
        { file: 'items.tsv', line: 7, message: 'the title is empty' },
        { file: 'users.tsv', line: 2, message: 'unknown item id NOPE' },
        { file: 'users.tsv', line: 3, message: 'duplicate user id u1 (first on line 1)' },
      ])
    }
    expect(await tableCounts()).toEqual(before)
  })

  it(`errors are listed up to ${MAX_REPORTED_PROBLEMS}, with the total`, async () => {
    const before = await tableCounts()
    const res = await importJson('very-broken', Array.from({ length: 250 }, (_, i) => `no-tab-${i}`).join('\n'), 'u\tx\n').expect(400)
    expect(res.body.error.details.errors).toHaveLength(MAX_REPORTED_PROBLEMS)
    // every items.tsv line; with no item to refer to, users.tsv's references are not checked too
    expect(res.body.error.details.total).toBe(250)
    expect(await tableCounts()).toEqual(before)
  })

  it('POST /v1/items cleans a title with the same function, and says so', async () => {
    const datasetId = (await importJson('add-items', ITEMS, USERS).expect(201)).body.id
    const added = await http.post('/v1/items').send({ datasetId, id: 'NEW-1', title: 'Beaker\t250\u007f ml' }).expect(201)
    expect(added.body.item.title).toBe('Beaker 250 ml')
    expect(added.body.warnings).toEqual([{ field: 'title', code: 'CONTROL_CHARACTERS_REMOVED', message: 'removed 2 control characters (U+0009, U+007F) from the title' }])
    const multipart = await http.post('/v1/items').field('datasetId', datasetId).field('id', 'NEW-2').field('title', 'Nul\u0000led').expect(201)
    expect(multipart.body.item.title).toBe('Nulled')
    const clean = await http.post('/v1/items').send({ datasetId, id: 'NEW-3', title: 'Clean' }).expect(201)
    expect(clean.body.warnings).toEqual([])
    const empty = await http.post('/v1/items').send({ datasetId, id: 'NEW-4', title: '\u0007\u0007' }).expect(400)
    expect(empty.body.error).toMatchObject({ code: 'VALIDATION_FAILED', message: 'body/title the title is empty', details: [{ instancePath: '/title' }] })
  })
})

describe('dataset statistics', () => {
  const stats = async (id: string) => (await http.get(`/v1/datasets/${id}`).expect(200)).body.stats

  it('density counts distinct user–item pairs, not repeated interactions', async () => {
    // 1 user × 2 items, 6 interactions: 300 % when repeats counted
    const res = await importJson('repeats', 'A\tFirst\nB\tSecond\n', 'u\tA A A A A B\n').expect(201)
    expect(res.body.stats).toMatchObject({ density: 1, distinctPairs: 2 })
    const other = await importJson('repeats-2', 'A\tFirst\nB\tSecond\nC\tThird\n', 'u1\tA A A B\nu2\tA\n').expect(201)
    expect(await stats(other.body.id)).toMatchObject({ distinctPairs: 3, density: 3 / (2 * 3) })
  })

  it('items never interacted follow added items and events', async () => {
    const id = (await importJson('cold', ITEMS, 'u1\tA B\n').expect(201)).body.id
    expect(await stats(id)).toMatchObject({ coldItems: 1 })
    await http.post('/v1/items').send({ datasetId: id, id: 'D', title: 'Added later' }).expect(201)
    expect(await stats(id)).toMatchObject({ coldItems: 2, asOf: { numItems: 4 } })
    await http.post('/v1/events').send({ datasetId: id, userId: 'u1', itemId: 'C' }).expect(201)
    await http.post('/v1/events').send({ datasetId: id, userId: 'new-user', itemId: 'D' }).expect(201)
    expect(await stats(id)).toMatchObject({ coldItems: 0, distinctPairs: 4 })
    // the list shows the same figures
    const listed = (await http.get('/v1/datasets').expect(200)).body.datasets.find((d: { id: string }) => d.id === id)
    expect(listed.stats).toEqual(await stats(id))
  })

  it('the protocol’s kept users and items are there at import, as training counts them, and follow events', async () => {
    const slice = sampleDataset(300)
    const imported = await importJson('scientific-300', slice.itemsTsv, slice.usersTsv).expect(201)
    const reference = (id: string) => loadDatasetSequences(prisma(), id).then((s) => protocolForDataset(s, defaultTrainingConfig(getMethod('sasrec-id'))).stats)
    const expected = await reference(imported.body.id)
    const kept = { usersKept: expected.usersKept, itemsKept: expected.itemsKept, interactionsKept: expected.interactionsKept }
    expect(imported.body.stats.protocol).toEqual({ ...PAPER_PROTOCOL, ...kept })
    expect((await stats(imported.body.id)).protocol).toEqual({ ...PAPER_PROTOCOL, ...kept })

    // a small one where the filter bites: u1 has 4 interactions (dropped), u2 20 (last 13 kept)
    const items = Array.from({ length: 25 }, (_, i) => `I${i}\tItem ${i}`).join('\n')
    const id = (await importJson('protocol', items, `u1\tI0 I1 I2 I3\nu2\t${Array.from({ length: 20 }, (_, i) => `I${i + 5}`).join(' ')}\n`).expect(201)).body.id
    expect((await stats(id)).protocol).toMatchObject({ usersKept: 1, itemsKept: 13, interactionsKept: 13 })
    // u1's fifth interaction keeps them
    await http.post('/v1/events').send({ datasetId: id, userId: 'u1', itemId: 'I24' }).expect(201)
    const after = (await stats(id)).protocol
    expect(after).toMatchObject({ usersKept: 2, itemsKept: 17, interactionsKept: 18 }) // I24 is in both windows
    const ref = await reference(id)
    expect(after).toMatchObject({ usersKept: ref.usersKept, itemsKept: ref.itemsKept, interactionsKept: ref.interactionsKept })
    // and the reference is the protocol itself
    expect(buildProtocol([{ key: 'u', items: ['a', 'b', 'c', 'd'] }], ['a', 'b', 'c', 'd'], PAPER_PROTOCOL).stats.usersKept).toBe(0)
  })
})

describe('item search', () => {
  let id: string
  beforeAll(async () => {
    const items = ['SCI-0001\tMicroscope Slides', 'sci-0002\tLab pipette', 'XYZ\tBeaker 50%_off', 'other\tA 50 ml flask', 'p_q\tPlain']
    id = (await importJson('search', items.join('\n'), 'u\tSCI-0001\n').expect(201)).body.id
  })
  const search = async (q: string) => (await http.get(`/v1/datasets/${id}/items`).query({ q }).expect(200)).body

  it('matches a case-insensitive substring of the title or of the id', async () => {
    const ids = async (q: string) => (await search(q)).items.map((i: { id: string }) => i.id)
    expect(await ids('sci-00')).toEqual(['SCI-0001', 'sci-0002'])
    expect(await ids('0002')).toEqual(['sci-0002'])
    expect(await ids('MICRO')).toEqual(['SCI-0001'])
    expect(await ids('PIPETTE')).toEqual(['sci-0002'])
    expect(await ids('xy')).toEqual(['XYZ'])
    // LIKE's wildcards are literal characters
    expect(await ids('50%')).toEqual(['XYZ'])
    expect(await ids('_')).toEqual(['XYZ', 'p_q'])
    expect(await search('nothing like it')).toEqual({ items: [], total: 0 })
    expect((await search('i')).total).toBe(3)
  })

  it('is served by the trigram indexes, and documented so', async () => {
    const plans = await prisma().$transaction(async (tx) => {
      await tx.$executeRaw`SET LOCAL enable_seqscan = off`
      const title = await tx.$queryRaw<{ 'QUERY PLAN': string }[]>`EXPLAIN SELECT id FROM items WHERE title ILIKE '%pipette%'`
      const externalId = await tx.$queryRaw<{ 'QUERY PLAN': string }[]>`EXPLAIN SELECT id FROM items WHERE external_id ILIKE '%sci-00%'`
      return [title, externalId].map((rows) => rows.map((r) => r['QUERY PLAN']).join('\n'))
    })
    expect(plans[0]).toContain('items_title_trgm_idx')
    expect(plans[1]).toContain('items_external_id_trgm_idx')
    const doc = (await http.get('/docs/json').expect(200)).body
    const q = doc.paths['/v1/datasets/{id}/items'].get.parameters.find((p: { name: string }) => p.name === 'q')
    expect(q.description).toMatch(/case-insensitive substring of the title or of the item id/)
  })
})

const modelVersionOf = (datasetId: string, input: { activate?: boolean; jobId?: string } = {}) => untrainedModelVersion(prisma(), datasetId, input)

describe('deleting', () => {
  it('DELETE /v1/datasets/:id removes the dataset and everything of it in one go; cached states stay until cache:gc', async () => {
    const keeper = (await importJson('keeper', 'K1\tShared title\nK2\tKept title\n', 'k\tK1 K2\n').expect(201)).body.id
    const backbone = await upsertBackbone(prisma(), { fingerprint: `text-${keeper}`, modality: 'text', modelType: 'bert', name: 'test-bert', numLayers: 1, hiddenSize: 2, config: {}, location: 'test' })
    const state = (title: string) => ({ contentHash: computeContentHashes({ title }).textHash, dtype: 'f32' as const, layers: 1, dim: 2, data: new Uint8Array(8) })
    await saveHiddenStates(prisma(), backbone.id, [state('Shared title'), state('Kept title')])
    const before = await tableCounts()

    // the doomed dataset with one of everything: items, users, interactions, jobs of every kind,
    // epoch metrics, a checkpoint, model versions (one active), a cache build, hidden states
    const doomed = (await importJson('doomed', 'D1\tShared title\nD2\tDoomed title\nD3\tAnother doomed title\n', 'x\tD1 D2 D3 D1\ny\tD2\n').expect(201)).body.id
    await saveHiddenStates(prisma(), backbone.id, [state('Doomed title'), state('Another doomed title')])
    await http.post('/v1/events').send({ datasetId: doomed, userId: 'z', itemId: 'D3' }).expect(201)
    const queued = (await http.post('/v1/training-jobs').send({ datasetId: doomed, method: 'sasrec-id' }).expect(202)).body.id
    expect(await queue.getJob(queued)).toBeTruthy()
    const done = await createTrainingJob(prisma(), { datasetId: doomed, method: 'sasrec-id', config: {} })
    await updateTrainingJobStatus(prisma(), done.id, 'completed')
    await appendEpochMetric(prisma(), { jobId: done.id, epoch: 1, trainLoss: 1, valHr10: 0, valNdcg10: 0, seconds: 1 })
    await saveTrainingCheckpoint(prisma(), { jobId: done.id, epoch: 1, state: new Uint8Array(4), meta: {} })
    const active = await modelVersionOf(doomed, { activate: true, jobId: done.id })
    const inactive = await modelVersionOf(doomed)
    await prisma().cacheBuild.create({ data: { datasetId: doomed, backboneId: backbone.id } })
    const full = await tableCounts()
    for (const table of ['datasets', 'items', 'dataset_users', 'interactions', 'training_jobs', 'epoch_metrics', 'training_checkpoints', 'blobs', 'blob_parts', 'model_versions', 'cache_builds', 'hidden_states']) {
      expect({ table, more: full[table]! > before[table]! }).toEqual({ table, more: true })
    }

    // a second replica serves both versions
    expect(await replica.registry.get(active.id)).toBeTruthy()
    expect(await replica.registry.get(inactive.id)).toBeTruthy()
    await replica.registry.refreshActive()
    expect(replica.registry.activeModelIds().get(doomed)).toBe(active.id)

    const res = await http.delete(`/v1/datasets/${doomed}`).expect(204)
    expect(res.text).toBe('')
    // every table is back where it was, but the hidden states (content-keyed, maybe shared)
    expect(await tableCounts()).toEqual({ ...before, hidden_states: before.hidden_states! + 2 })
    expect(await queue.getJob(queued)).toBeUndefined()
    await until(async () => (replica.registry.loadedModelIds().some((id) => id === active.id || id === inactive.id) ? undefined : true), 10_000, 'the replica to drop the models')
    expect(replica.registry.activeModelIds().has(doomed)).toBe(false)
    expect(api.registry.loadedModelIds()).not.toContain(active.id)
    await http.delete(`/v1/datasets/${doomed}`).expect(404)
    expect((await http.get(`/v1/datasets/${doomed}`).expect(404)).body.error.code).toBe('NOT_FOUND')
    expect((await http.delete('/v1/datasets/not-a-uuid').expect(400)).body.error.code).toBe('VALIDATION_FAILED')

    // the garbage collection removes the two states only the deleted dataset referenced
    const gc = () => spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'scripts/cache-gc.ts')], { cwd: REPO_ROOT, env: { ...process.env, ...platform.env }, encoding: 'utf8' })
    const first = gc()
    expect({ status: first.status, stderr: first.stderr }).toEqual({ status: 0, stderr: '' })
    expect(first.stdout).toMatch(/removed 2 text state\(s\), 0\.0 MB, of backbone test-bert/)
    expect(first.stdout).toMatch(/removed 2 unreferenced hidden state\(s\)/)
    expect(await tableCounts()).toEqual(before)
    expect(gc().stdout).toMatch(/nothing removed/)
  })

  it('a dataset with a running training job is 409 JOB_RUNNING, and nothing is deleted', async () => {
    const id = (await importJson('busy', ITEMS, USERS).expect(201)).body.id
    const job = (await http.post('/v1/training-jobs').send({ datasetId: id, method: 'sasrec-id' }).expect(202)).body.id
    await prisma().$executeRaw`UPDATE training_jobs SET status = 'running', heartbeat_at = now(), worker_id = 'test' WHERE id = ${job}::uuid`
    const before = await tableCounts()
    const res = await http.delete(`/v1/datasets/${id}`).expect(409)
    expect(res.body.error).toMatchObject({ code: 'JOB_RUNNING', details: { runningJobIds: [job] } })
    expect(res.body.error.message).toMatch(/cancel/)
    expect(await tableCounts()).toEqual(before)
    // cancelled, it goes
    await prisma().$executeRaw`UPDATE training_jobs SET status = 'cancelled' WHERE id = ${job}::uuid`
    await http.delete(`/v1/datasets/${id}`).expect(204)
  })

  it('DELETE /v1/model-versions/:id: 409 MODEL_ACTIVE while active, 204 otherwise, and replicas drop it', async () => {
    const id = (await importJson('versions', ITEMS, USERS).expect(201)).body.id
    const active = await modelVersionOf(id, { activate: true })
    const other = await modelVersionOf(id)
    expect(await replica.registry.get(other.id)).toBeTruthy()
    const refused = await http.delete(`/v1/model-versions/${active.id}`).expect(409)
    expect(refused.body.error).toMatchObject({ code: 'MODEL_ACTIVE', details: { modelVersionId: active.id } })
    await http.delete(`/v1/model-versions/${other.id}`).expect(204)
    expect(await prisma().modelVersion.findMany({ where: { datasetId: id }, select: { id: true } })).toEqual([{ id: active.id }])
    await until(async () => (replica.registry.loadedModelIds().includes(other.id) ? undefined : true), 10_000, 'the replica to drop the version')
    await http.delete(`/v1/model-versions/${other.id}`).expect(404)
    // once another version is active, the old one can go
    const next = await modelVersionOf(id)
    await http.post(`/v1/model-versions/${next.id}/activate`).expect(200)
    await http.delete(`/v1/model-versions/${active.id}`).expect(204)
    await http.delete(`/v1/model-versions/${UNKNOWN_UUID}`).expect(404)
  })

  it('DELETE /v1/training-jobs/:id: 409 JOB_RUNNING while running; a queued one leaves the queue; a finished one leaves its model version', async () => {
    const id = (await importJson('jobs', ITEMS, USERS).expect(201)).body.id
    const running = (await http.post('/v1/training-jobs').send({ datasetId: id, method: 'sasrec-id' }).expect(202)).body.id
    await prisma().$executeRaw`UPDATE training_jobs SET status = 'running', heartbeat_at = now(), worker_id = 'test' WHERE id = ${running}::uuid`
    expect((await http.delete(`/v1/training-jobs/${running}`).expect(409)).body.error.code).toBe('JOB_RUNNING')
    expect(await prisma().trainingJob.count({ where: { id: running } })).toBe(1)

    const queued = (await http.post('/v1/training-jobs').send({ datasetId: id, method: 'sasrec-id' }).expect(202)).body.id
    expect(await queue.getJob(queued)).toBeTruthy()
    await http.delete(`/v1/training-jobs/${queued}`).expect(204)
    expect(await queue.getJob(queued)).toBeUndefined()
    await http.get(`/v1/training-jobs/${queued}`).expect(404)

    const finished = await createTrainingJob(prisma(), { datasetId: id, method: 'sasrec-id', config: {} })
    await appendEpochMetric(prisma(), { jobId: finished.id, epoch: 1, trainLoss: 1, valHr10: 0, valNdcg10: 0, seconds: 1 })
    await updateTrainingJobStatus(prisma(), finished.id, 'completed')
    const version = await modelVersionOf(id, { jobId: finished.id })
    await http.delete(`/v1/training-jobs/${finished.id}`).expect(204)
    expect(await prisma().epochMetric.count({ where: { jobId: finished.id } })).toBe(0)
    expect(await prisma().modelVersion.findUnique({ where: { id: version.id }, select: { jobId: true } })).toEqual({ jobId: null })
    await http.delete(`/v1/training-jobs/${finished.id}`).expect(404)
  })

  it('every delete is in the OpenAPI document: 204, 404, 409', async () => {
    const doc = (await http.get('/docs/json').expect(200)).body
    for (const route of ['/v1/datasets/{id}', '/v1/model-versions/{id}', '/v1/training-jobs/{id}']) {
      const op = doc.paths[route]?.delete
      expect({ route, responses: Object.keys(op?.responses ?? {}) }).toEqual({ route, responses: expect.arrayContaining(['204', '400', '404', '409']) })
    }
  })
})

describe('the OpenAPI document', () => {
  it('shows the multipart uploads with binary file fields next to the JSON bodies', async () => {
    const doc = (await http.get('/docs/json').expect(200)).body
    const datasets = doc.paths['/v1/datasets'].post.requestBody.content
    expect(Object.keys(datasets).sort()).toEqual(['application/json', 'multipart/form-data'])
    const form = datasets['multipart/form-data'].schema
    expect(form).toMatchObject({ type: 'object', properties: { name: { type: 'string' }, items: { type: 'string', format: 'binary' }, users: { type: 'string', format: 'binary' } } })
    expect([...form.required].sort()).toEqual(['items', 'name', 'users'])
    expect(datasets['application/json'].schema.required).toEqual(['name', 'itemsTsv', 'usersTsv'])
    const items = doc.paths['/v1/items'].post.requestBody.content
    expect(items['multipart/form-data'].schema).toMatchObject({ type: 'object', properties: { image: { type: 'string', format: 'binary' }, title: { type: 'string' } } })
    expect(items['multipart/form-data'].schema.required).not.toContain('image')
    expect(items['application/json'].schema.properties.image).toBeUndefined()
  })

  it('a multipart request built from the document, as Swagger UI builds it, imports a dataset', async () => {
    const doc = (await http.get('/docs/json').expect(200)).body
    const { properties } = doc.paths['/v1/datasets'].post.requestBody.content['multipart/form-data'].schema
    const values: Record<string, string> = { name: 'from-the-docs', items: ITEMS, users: USERS }
    const form = new FormData()
    for (const [field, schema] of Object.entries(properties as Record<string, { format?: string }>)) {
      if (!(field in values)) continue
      if (schema.format === 'binary') form.append(field, new Blob([values[field]!], { type: 'text/tab-separated-values' }), `${field}.tsv`)
      else form.append(field, values[field]!)
    }
    const res = await fetch(`${base}/v1/datasets`, { method: 'POST', body: form })
    expect(res.status).toBe(201)
    expect(await res.json()).toMatchObject({ name: 'from-the-docs', numItems: 3, numUsers: 2, numInteractions: 5 })
  })

  it('does not mark parameters or properties that have defaults as required', async () => {
    const doc = (await http.get('/docs/json').expect(200)).body
    const violations: string[] = []
    const walk = (schema: any, where: string) => {
      if (!schema || typeof schema !== 'object') return
      for (const name of schema.required ?? []) if (schema.properties?.[name]?.default !== undefined) violations.push(`${where}.${name}`)
      for (const [name, sub] of Object.entries(schema.properties ?? {})) walk(sub, `${where}.${name}`)
      for (const key of ['items', 'anyOf', 'allOf', 'oneOf']) for (const sub of [schema[key]].flat()) walk(sub, `${where}.${key}`)
    }
    let defaulted = 0
    for (const [route, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const p of op.parameters ?? []) {
          if (p.schema?.default === undefined) continue
          defaulted++
          if (p.required) violations.push(`${method} ${route} ${p.in} ${p.name}`)
        }
        for (const [type, media] of Object.entries((op.requestBody?.content ?? {}) as Record<string, any>)) walk(media.schema, `${method} ${route} ${type}`)
      }
    }
    expect(violations).toEqual([])
    expect(defaulted).toBeGreaterThanOrEqual(3) // limit, offset, k of similar items: the rule was exercised
    const items = doc.paths['/v1/datasets/{id}/items'].get.parameters
    expect(items.find((p: { name: string }) => p.name === 'limit')).toMatchObject({ required: false, schema: { default: 50 } })
    expect(doc.paths['/v1/recommendations'].post.requestBody.content['application/json'].schema.required ?? []).not.toContain('k')
    // and the defaults still apply
    const id = (await importJson('defaults', ITEMS, USERS).expect(201)).body.id
    expect((await http.get(`/v1/datasets/${id}/items`).expect(200)).body.items).toHaveLength(3)
  })
})

describe('validation messages say what is wrong', () => {
  let datasetId: string
  beforeAll(async () => {
    datasetId = (await importJson('messages', ITEMS, USERS).expect(201)).body.id
  })

  it('a union of literals names the allowed values', async () => {
    const method = await http.post('/v1/training-jobs').send({ datasetId, method: 'magic' }).expect(400)
    expect(method.body.error.code).toBe('VALIDATION_FAILED')
    expect(method.body.error.message).toBe('body/method must be one of "sasrec-id", "iisan", "iisan-uncached", "fft", "adapter", "lora", "bitfit"')
    const modality = await http.post('/v1/training-jobs').send({ datasetId, method: 'iisan', config: { modality: 'both' } }).expect(400)
    expect(modality.body.error.message).toBe('body/config/modality must be one of "intra_inter", "intra", "inter"')
    // details keep what the validator said, for programs
    expect(method.body.error.details.map((d: { keyword: string }) => d.keyword)).toContain('anyOf')
  })

  it('an unknown property is named in the message, with what was probably meant', async () => {
    const typo = await http.post('/v1/training-jobs').send({ datasetId, method: 'sasrec-id', config: { batchsize: 32 } }).expect(400)
    expect(typo.body.error.message).toBe('body/config has unknown property "batchsize" (did you mean "batchSize"?)')
    const unknown = await http.post('/v1/recommendations').send({ datasetId, history: ['A'], k: 5, extra: true }).expect(400)
    expect(unknown.body.error.message).toMatch(/^body has unknown property "extra" \(known: .*history.*\)$/)
    // the multipart path (validated outside Fastify) says the same
    const multipart = await http.post('/v1/datasets').field('name', 'x').field('bogus', '1').attach('items', Buffer.from(ITEMS), 'items.tsv').attach('users', Buffer.from(USERS), 'users.tsv').expect(400)
    expect(multipart.body.error.message).toBe('body has unknown property "bogus" (known: name, description, itemsTsv, usersTsv)')
    expect(multipart.body.error.details).toEqual([{ instancePath: '/bogus', message: expect.stringContaining('"bogus"') }])
  })
})
