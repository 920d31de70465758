// The README's main job on an embedded default: local Postgres/Redis, a sample of the shipped
// Scientific dataset, the three services, one training run, recommendations printed. The
// services keep running afterwards (Ctrl-C stops them) unless --exit is given.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { parseArgs } from 'node:util'
import cliProgress from 'cli-progress'
import { ensureDatabaseExists, loadConfig } from '@iisan/config'
import { applyMigrations } from '@iisan/storage'
import { sampleDataset } from '@iisan/pipeline'

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '2000' },
    epochs: { type: 'string', default: '8' },
    exit: { type: 'boolean', default: false },
  },
})
const config = loadConfig()
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
    const child = spawn(process.execPath, ['--import', 'tsx', `services/${service}/src/main.ts`], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' } })
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
  const job = await api<{ id: string }>('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id', config: { maxEpochs, patience: maxEpochs, lrItem: 1e-3, lrUser: 1e-3 } })
  const bar = new cliProgress.SingleBar({ format: 'training |{bar}| {percentage}%  epoch {epoch}  loss {loss}  val NDCG@10 {ndcg}' }, cliProgress.Presets.shades_classic)
  bar.start(100, 0, { epoch: '-', loss: '-', ndcg: '-' })
  let status: { status: string; progress?: Record<string, number>; modelVersionId: string | null; error: string | null }
  for (;;) {
    status = await api('GET', `/v1/training-jobs/${job.id}`)
    const p = status.progress ?? {}
    bar.update(Math.round((p.fraction ?? 0) * 100), { epoch: p.epoch ?? '-', loss: p.loss?.toFixed(4) ?? '-', ndcg: p.valNdcg10?.toFixed(4) ?? '-' })
    if (['completed', 'failed', 'cancelled'].includes(status.status)) break
    await new Promise((r) => setTimeout(r, 500))
  }
  bar.stop()
  if (status.status !== 'completed') throw new Error(`training ${status.status}: ${status.error}`)

  const mv = await api<{ testHr10: number; testNdcg10: number; secondsPerEpoch: number; trainableParams: number; peakMemoryMb: number }>('GET', `/v1/model-versions/${status.modelVersionId}`)
  console.log(
    `model ${status.modelVersionId}: test HR@10 ${mv.testHr10.toFixed(4)}, NDCG@10 ${mv.testNdcg10.toFixed(4)}, ${mv.secondsPerEpoch.toFixed(1)} s/epoch, ${mv.trainableParams} parameters, peak RSS ${mv.peakMemoryMb.toFixed(0)} MB`,
  )

  const [userId, historyIds] = sample.userLines[0].split('\t')
  const titles = new Map(sample.itemsTsv.split('\n').map((l) => l.split('\t') as [string, string]))
  console.log(`\nuser ${userId} bought:`)
  for (const id of historyIds.split(' ')) console.log(`  - ${titles.get(id)?.slice(0, 100)}`)
  const recs = await api<{ items: { itemId: string; title: string; score: number }[] }>('POST', '/v1/recommendations', { datasetId: dataset.id, userId, k: 10 })
  console.log('recommended next:')
  for (const r of recs.items) console.log(`  ${r.score.toFixed(3).padStart(7)}  ${r.title.slice(0, 100)}`)

  if (values.exit) {
    stopServices()
    return
  }
  console.log(`\nAPI: ${base}/v1  ·  OpenAPI: ${base}/docs  ·  health: ${base}/healthz\nservices keep running; Ctrl-C stops them`)
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
