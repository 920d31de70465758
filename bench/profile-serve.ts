// `npx tsx bench/profile-serve.ts [--seconds S] [--connections C] [--top N] [--by history|user] [--catalogue N]`:
// where the time of POST /v1/recommendations goes, for 10-item histories or (--by user) for the
// stored histories of the dataset's users. One API process (in this process, with an embedding cache
// beside it) on a throwaway database with the full Scientific catalogue and an untrained
// ID-SASRec version (D = 64; the hot path costs the same for any weights), or with --catalogue a
// synthetic catalogue of N items (bench/lib/catalogue-version.ts; the load waits for its index
// from APPROXIMATE_INDEX_FROM items), autocannon from a child process, and V8's CPU profiler over
// the load only. Prints self time by package and by
// function; writes bench/results/profile-serve.json.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { Session } from 'node:inspector/promises'
import { SequentialRecommender, initBackend, mulberry32, saveCheckpoint, sasRecIdConfig } from '@iisan/model'
import { SCIENTIFIC_DIR } from '@iisan/pipeline'
import { parseOptions, positiveInt } from '@iisan/pipeline/cli/args'
import { createModelVersion, type PrismaClient } from '@iisan/storage'
import { ANN_MIN_ITEMS } from '@iisan/model/item-index'
import { createCatalogueVersion } from './lib/catalogue-version.ts'
import { startQuickApi } from '../test/helpers/quick-api.ts'
import { loadAverage, machine } from './lib/machine.ts'

const REPO = path.resolve(import.meta.dirname, '..')
const USAGE = 'usage: npx tsx bench/profile-serve.ts [--seconds S] [--connections C] [--top N] [--by history|user] [--catalogue N]'
const { values } = parseOptions(
  {
    seconds: { type: 'string', default: '15' },
    connections: { type: 'string', default: '32' },
    top: { type: 'string', default: '25' },
    by: { type: 'string', default: 'history' },
    catalogue: { type: 'string', default: '0' },
  },
  USAGE,
)
if (values.by !== 'history' && values.by !== 'user') {
  console.error(`--by takes history or user (got ${JSON.stringify(values.by)}); ${USAGE}`)
  process.exit(2)
}
const byUser = values.by === 'user'
const seconds = positiveInt('seconds', values.seconds)
const connections = positiveInt('connections', values.connections)
const top = positiveInt('top', values.top)
const catalogue = values.catalogue === '0' ? 0 : positiveInt('catalogue', values.catalogue)

await initBackend()
const quick = await startQuickApi('profile-serve')
try {
  const post = (url: string, body: object) => fetch(`${quick.base}${url}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const prisma = quick.platform.db.prisma
  const random = mulberry32(1)
  const { modelVersionId, externalIds, userIds: users } = catalogue ? await syntheticCatalogue(prisma, catalogue) : await scientific(prisma, post, random)
  const version = { id: modelVersionId }
  const items = externalIds.map((externalId) => ({ externalId }))
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'profile-serve-'))
  const bodies = Array.from({ length: 500 }, () =>
    JSON.stringify(
      byUser
        ? { modelId: version.id, k: 10, userId: users[Math.floor(random() * users.length)] }
        : { modelId: version.id, k: 10, history: Array.from({ length: 10 }, () => items[Math.floor(random() * items.length)].externalId) },
    ),
  )
  fs.writeFileSync(path.join(tmp, 'bodies.json'), JSON.stringify(bodies))
  await post('/v1/recommendations', JSON.parse(bodies[0])) // loads the version
  if (catalogue >= ANN_MIN_ITEMS) {
    // the index builds beside serving; the profile is of the path that answers once it is there
    const started = performance.now()
    while (!/^iisan_serving_indexed_models(?:\{[^}]*\})? [1-9]/m.test(await (await fetch(`${quick.base}/metrics`)).text())) await new Promise((r) => setTimeout(r, 2000))
    console.error(`index ready ${((performance.now() - started) / 1000).toFixed(0)} s after the first request`)
  }
  // the mean micro-batch over the load: what one ORT run answers
  const batching = async () => {
    const text = await (await fetch(`${quick.base}/metrics`)).text()
    const gauge = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
    return { batches: gauge('iisan_serving_batches'), requests: gauge('iisan_serving_batched_requests') }
  }
  const batchesBefore = await batching()
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.start')
  const load = await new Promise<string>((resolve, reject) => {
    // the load comes from another process, as real clients' does
    const child = spawn(process.execPath, [path.join(REPO, 'bench/lib/post-load.mjs'), quick.base, '/v1/recommendations', path.join(tmp, 'bodies.json'), String(seconds), String(connections)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`load generator exited ${code}`))))
  })
  const { profile } = await session.post('Profiler.stop')
  const batchesAfter = await batching()
  const meanBatch = (batchesAfter.requests - batchesBefore.requests) / (batchesAfter.batches - batchesBefore.batches)
  fs.rmSync(tmp, { recursive: true, force: true })

  const total = profile.endTime - profile.startTime
  const selfTime = new Map<number, number>()
  profile.samples!.forEach((id, i) => selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas![i] ?? 0)))
  const byFunction = new Map<string, number>()
  const byPackage = new Map<string, number>()
  for (const node of profile.nodes) {
    const t = selfTime.get(node.id) ?? 0
    const { url, functionName } = node.callFrame
    const file = (url || '(native)').replace(/^file:\/\//, '').replace(`${REPO}/`, '').replace(/^.*node_modules\//, 'node_modules/')
    const parts = file.split('/')
    const pkg = file.startsWith('node_modules/') ? parts.slice(0, parts[1]?.startsWith('@') ? 3 : 2).join('/') : file.startsWith('wasm://') ? 'wasm (tfjs kernels)' : file
    const key = `${functionName || '(anonymous)'} ${file}`
    byFunction.set(key, (byFunction.get(key) ?? 0) + t)
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + t)
  }
  const rank = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, t]) => ({ name, share: t / total }))
  const result = {
    generatedAt: new Date().toISOString(),
    command: `npx tsx bench/profile-serve.ts --seconds ${seconds} --connections ${connections} --by ${values.by}${catalogue ? ` --catalogue ${catalogue}` : ''}`,
    source: 'measured',
    machine: { ...machine(), loadAverage: loadAverage() },
    setup: `one API process, ${catalogue ? 'a synthetic catalogue' : 'Scientific'} (${items.length} items), untrained ID-SASRec D = 64, k = 10, ${byUser ? 'stored histories by userId' : '10-item histories'}, autocannon in a child process`,
    load: JSON.parse(load.trim()),
    meanBatch,
    byPackage: rank(byPackage),
    byFunction: rank(byFunction),
  }
  const pct = (x: number) => `${(100 * x).toFixed(1).padStart(5)} %`
  console.log(`load: ${JSON.stringify(result.load)}, mean batch ${meanBatch.toFixed(1)} requests\n\nself time by package / file:`)
  for (const r of result.byPackage) console.log(`${pct(r.share)}  ${r.name}`)
  console.log('\nself time by function:')
  for (const r of result.byFunction) console.log(`${pct(r.share)}  ${r.name}`)
  const out = path.join(REPO, 'bench/results/profile-serve.json')
  fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`)
  console.log(`\nwrote ${path.relative(process.cwd(), out)}`)
} finally {
  await quick.close()
}

interface Served {
  datasetId: string
  modelVersionId: string
  /** item external ids, the users' ids */
  externalIds: string[]
  userIds: string[]
}

async function scientific(prisma: PrismaClient, post: (url: string, body: object) => Promise<Response>, random: () => number): Promise<Served> {
  const read = (file: string) => fs.readFileSync(path.join(SCIENTIFIC_DIR, file), 'utf8')
  const datasetId = (await (await post('/v1/datasets', { name: 'scientific', itemsTsv: read('items.tsv'), usersTsv: read('users.tsv') })).json()).id as string
  const items = await prisma.item.findMany({ where: { datasetId }, orderBy: { id: 'asc' }, select: { id: true, externalId: true } })
  const model = new SequentialRecommender(sasRecIdConfig(items.length))
  const version = await createModelVersion(prisma, {
    datasetId,
    method: 'sasrec-id',
    config: {},
    weights: saveCheckpoint(model.params, model.config),
    itemEmbeddings: Float32Array.from({ length: items.length * 64 }, () => (random() - 0.5) * 0.2),
    itemIndex: items.map((i) => i.id),
    embeddingDim: 64,
  })
  model.dispose()
  const users = (await prisma.datasetUser.findMany({ where: { datasetId }, select: { externalId: true } })).map((u) => u.externalId)
  return { datasetId, modelVersionId: version.id, externalIds: items.map((i) => i.externalId), userIds: users }
}

async function syntheticCatalogue(prisma: PrismaClient, N: number): Promise<Served> {
  const v = await createCatalogueVersion(prisma, N, 64, 10)
  console.error(`catalogue of ${N} items stored (import ${v.seconds.import.toFixed(0)} s, version ${v.seconds.version.toFixed(0)} s)`)
  return { datasetId: v.datasetId, modelVersionId: v.modelVersionId, externalIds: v.itemExternalIds, userIds: v.userIds }
}
