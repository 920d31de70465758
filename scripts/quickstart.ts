// The README's main job on an embedded default: local Postgres/Redis, a sample of the shipped
// Scientific dataset, the three services, the embedding cache built with the demo backbones,
// IISAN trained for a few epochs and activated, recommendations printed — and a brand-new item
// recommended without retraining. The services (API + dashboard) keep running afterwards
// (Ctrl-C stops them) unless --exit is given.
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { parseArgs } from 'node:util'
import cliProgress from 'cli-progress'
import { decodeHTML } from 'entities'
import { ensureDatabaseExists, loadConfig } from '@iisan/config'
import { applyMigrations } from '@iisan/storage'
import { sampleDataset } from '@iisan/pipeline'
import { getMethod } from '@iisan/model/methods/registry'

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '2000' },
    epochs: { type: 'string', default: '5' },
    method: { type: 'string', default: 'iisan' },
    exit: { type: 'boolean', default: false },
  },
})
// as `npm start` does: the services share a token made up for this run unless one is set
const internalToken = process.env.INTERNAL_TOKEN?.trim() || randomBytes(32).toString('hex')
const config = loadConfig({ ...process.env, INTERNAL_TOKEN: internalToken })
const base = `http://127.0.0.1:${config.port}`

async function api<T>(method: string, url: string, body?: unknown): Promise<T> {
  const res = await fetch(base + url, { method, headers: body ? { 'content-type': 'application/json' } : {}, body: body ? JSON.stringify(body) : undefined })
  const json = (await res.json()) as T & { error?: { code: string; message: string } }
  if (!res.ok) throw new Error(`${method} ${url} → ${res.status} ${json.error?.code}: ${json.error?.message}`)
  return json
}

const children: ChildProcess[] = []
function stopServices() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
}
process.on('SIGINT', () => {
  stopServices()
  process.exit(0)
})

async function main() {
  console.log(`database ${config.databaseUrl.replace(/\/\/[^@]*@/, '//')}, redis ${config.redisUrl}`)
  await ensureDatabaseExists(config.databaseUrl)
  const applied = await applyMigrations(config.databaseUrl, path.resolve('prisma/migrations'))
  console.log(`migrations: ${applied.length ? applied.join(', ') : 'up to date'}`)

  for (const service of ['api', 'worker', 'embedding-cache']) {
    const env = { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn', INTERNAL_TOKEN: internalToken }
    const child = spawn(process.execPath, ['--import', 'tsx', `services/${service}/src/main.ts`], { stdio: ['ignore', 'ignore', 'inherit'], env })
    child.on('exit', (code) => code && console.error(`${service} exited with ${code}`))
    children.push(child)
  }
  await waitForHealth()

  const sample = sampleDataset(Number(values.users))
  const dataset = await api<{ id: string; numItems: number; numUsers: number; numInteractions: number }>('POST', '/v1/datasets', {
    name: `scientific-sample-${values.users}`,
    itemsTsv: sample.itemsTsv,
    usersTsv: sample.usersTsv,
  })
  console.log(`imported dataset ${dataset.id}: ${dataset.numUsers} users, ${dataset.numItems} items, ${dataset.numInteractions} interactions`)

  const maxEpochs = Number(values.epochs)
  // The job asks the embedding cache to encode every item with the frozen backbones first
  // (chunked, resumable), then trains; both show up in the job's progress.
  // a demo of a few epochs: every group at 1e-3, 5–20× the paper's rates
  const QUICK_LEARNING_RATES = { lrItem: 1e-3, lrUser: 1e-3, lrTextEncoder: 1e-3, lrImageEncoder: 1e-3, lrTextAdapters: 1e-3, lrImageAdapters: 1e-3 }
  const job = await api<{ id: string }>('POST', '/v1/training-jobs', { datasetId: dataset.id, method: values.method, config: { maxEpochs, patience: maxEpochs, ...QUICK_LEARNING_RATES } })
  const cacheBar = new cliProgress.SingleBar({ format: 'caching  |{bar}| {value}/{total} item states' }, cliProgress.Presets.shades_classic)
  const trainBar = new cliProgress.SingleBar({ format: 'training |{bar}| {percentage}%  epoch {epoch}  loss {loss}  val NDCG@10 {ndcg}' }, cliProgress.Presets.shades_classic)
  let phase = ''
  let status: { status: string; progress?: Record<string, number | string>; modelVersionId: string | null; error: string | null }
  for (;;) {
    status = await api('GET', `/v1/training-jobs/${job.id}`)
    const p = (status.progress ?? {}) as Record<string, number | undefined> & { phase?: string }
    if (p.phase && p.phase !== phase) {
      if (phase === 'caching') cacheBar.stop()
      if (p.phase === 'caching') cacheBar.start(p.total ?? 0, p.cached ?? 0)
      if (p.phase === 'training') trainBar.start(100, 0, { epoch: '-', loss: '-', ndcg: '-' })
      phase = p.phase
    }
    if (phase === 'caching') cacheBar.update(p.cached ?? 0)
    if (phase === 'training') trainBar.update(Math.round((p.fraction ?? 0) * 100), { epoch: p.epoch ?? '-', loss: p.loss?.toFixed(4) ?? '-', ndcg: p.valNdcg10?.toFixed(4) ?? '-' })
    if (['completed', 'failed', 'cancelled'].includes(status.status)) break
    await new Promise((r) => setTimeout(r, 500))
  }
  cacheBar.stop()
  trainBar.stop()
  if (status.status !== 'completed') throw new Error(`training ${status.status}: ${status.error}`)
  await api('POST', `/v1/model-versions/${status.modelVersionId}/activate`)

  const mv = await api<{ method: string; testHr10: number; testNdcg10: number; secondsPerEpoch: number; trainableParams: number; peakMemoryMb: number }>('GET', `/v1/model-versions/${status.modelVersionId}`)
  console.log(
    `${mv.method} model ${status.modelVersionId} (active): test HR@10 ${mv.testHr10.toFixed(4)}, NDCG@10 ${mv.testNdcg10.toFixed(4)}, ${mv.secondsPerEpoch.toFixed(1)} s/epoch, ${mv.trainableParams} parameters, peak RSS ${mv.peakMemoryMb.toFixed(0)} MB`,
  )

  const [userId, historyIds] = sample.userLines[0].split('\t')
  const titles = new Map(sample.itemsTsv.split('\n').map((l) => { const [id, title] = l.split('\t'); return [id, decodeHTML(title ?? '')] as const }))
  console.log(`\nuser ${userId} bought:`)
  for (const id of historyIds.split(' ')) console.log(`  - ${titles.get(id)?.slice(0, 100)}`)
  const recs = await api<{ items: { itemId: string; title: string; score: number }[] }>('POST', '/v1/recommendations', { datasetId: dataset.id, userId, k: 10 })
  console.log('recommended next:')
  for (const r of recs.items) console.log(`  ${r.score.toFixed(3).padStart(7)}  ${r.title.slice(0, 100)}`)

  if (getMethod(mv.method).capabilities.coldStart) {
    // Cold start: a product nobody has bought yet, recommendable at once — no retraining.
    const anchor = sample.userLines[0].split('\t')[1].split(' ')[2]
    const added = await api<{ seconds: number; models: unknown[] }>('POST', '/v1/items', { datasetId: dataset.id, id: 'DEMO-NEW-ITEM', title: `${titles.get(anchor)} (2027 edition)` })
    const similar = await api<{ items: { itemId: string; title: string }[] }>('GET', `/v1/items/${anchor}/similar?datasetId=${dataset.id}&k=3`)
    console.log(`\nnew item DEMO-NEW-ITEM added and embedded in ${added.seconds.toFixed(2)} s; items most similar to "${titles.get(anchor)?.slice(0, 60)}":`)
    for (const s of similar.items) console.log(`  - ${s.itemId.padEnd(14)} ${s.title.slice(0, 90)}`)
  }

  if (values.exit) {
    stopServices()
    return
  }
  console.log(`\ndashboard: ${base}/admin  ·  API: ${base}/v1  ·  OpenAPI: ${base}/docs  ·  health: ${base}/healthz\nservices keep running; Ctrl-C stops them`)
}

async function waitForHealth() {
  for (let i = 0; i < 120; i++) {
    try {
      const res = await fetch(`${base}/healthz`)
      if (res.ok) return
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500))
  }
  throw new Error(`API did not become healthy at ${base}`)
}

main().catch((e) => {
  console.error(`quickstart failed: ${e instanceof Error ? e.message : e}`)
  stopServices()
  process.exit(1)
})
