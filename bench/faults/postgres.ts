/**
 * Scenario 3 — PostgreSQL restarted (pg_ctl stop -m fast, a few seconds down, start) while a
 * large dataset import is inside its transaction, a training job trains, and clients keep
 * asking for recommendations (by userId and by history) and reading jobs and datasets.
 * Expected: no 5xx but 503 (with Retry-After and DEPENDENCY_UNAVAILABLE), the job completes, and
 * every import either exists completely (items, users, interactions as in its input) or not at all.
 */
import { sampleDataset } from '@iisan/pipeline'
import type { ApiResponse } from './http.ts'
import { loggedErrors, progress, sleep, until, type Fleet } from './infra.ts'
import { createPlatform, expectedCounts, importSample, printTable, waitForJob } from './platform.ts'

export interface PostgresOptions {
  /** users in the import that is in flight when the database stops */
  importUsers: number
  /** users of the dataset the model is trained on */
  users: number
  maxEpochs: number
  downSeconds: number
}

interface Sent {
  kind: string
  at: number
  status: number
  code?: string
  retryAfter?: string | null
  error?: string
}

export async function postgresScenario(fleet: Fleet, options: PostgresOptions) {
  const p = await createPlatform(fleet, 'postgres')
  const t0 = Date.now()
  const pg = fleet.pg!
  let streaming = true
  try {
    await p.startApi()
    const worker = await p.startWorker()
    const sample = sampleDataset(options.users)
    const dataset = await importSample(p.client, 'postgres-serving', options.users)
    const config = { maxEpochs: options.maxEpochs, batchSize: 16, patience: 100, seed: 5 }
    // a first model, activated automatically, to serve recommendations from
    const first = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id', config: { ...config, maxEpochs: 2 } }, 202)
    const firstDone = await waitForJob(p.client, first.id, 240_000, 'first model')
    if (firstDone.status !== 'completed') throw new Error(`the first model did not train: ${firstDone.error}`)
    const users = sample.userLines.slice(0, 100).map((l) => l.split('\t')[0])
    const histories = sample.userLines.slice(0, 100).map((l) => l.split('\t')[1].split(' ').slice(-4))
    await until(async () => ((await p.client.post('/v1/recommendations', { datasetId: dataset.id, userId: users[0], k: 5 })).status === 200 ? true : undefined), 60_000, 'the model to serve')

    // the job that trains through the outage
    const job = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id', config }, 202)
    await until(
      async () => {
        const row = await p.prisma.trainingJob.findUnique({ where: { id: job.id }, select: { status: true, checkpoint: { select: { epoch: true } } } })
        return row?.status === 'running' && (row.checkpoint?.epoch ?? 0) >= 1 ? true : undefined
      },
      180_000,
      'the job into its second epoch',
    )

    // the client stream: recommendations by user and by history, job and dataset reads
    const sent: Sent[] = []
    const send = async (kind: string, call: () => Promise<ApiResponse>) => {
      const at = Date.now()
      try {
        const res = await call()
        sent.push({ kind, at, status: res.status, code: res.body?.error?.code, retryAfter: res.headers.get('retry-after') })
      } catch (e) {
        sent.push({ kind, at, status: 0, error: (e as Error).message })
      }
    }
    let n = 0
    // bounded however the scenario goes: the stream stops after the imports settle, or after 10 min
    const streamUntil = Date.now() + 600_000
    const streamingOn = () => streaming && Date.now() < streamUntil
    const loops = [
      (async () => {
        while (streamingOn()) {
          const i = n++ % users.length
          await send('recommend by userId', () => p.client.post('/v1/recommendations', { datasetId: dataset.id, userId: users[i], k: 10 }, 20_000))
          await sleep(40)
        }
      })(),
      (async () => {
        while (streamingOn()) {
          const i = n++ % histories.length
          await send('recommend by history', () => p.client.post('/v1/recommendations', { datasetId: dataset.id, history: histories[i], k: 10 }, 20_000))
          await sleep(40)
        }
      })(),
      (async () => {
        while (streamingOn()) {
          await send('GET training job', () => p.client.get(`/v1/training-jobs/${job.id}`, 20_000))
          await send('GET dataset', () => p.client.get(`/v1/datasets/${dataset.id}`, 20_000))
          await sleep(100)
        }
      })(),
    ]
    await sleep(2000)

    // the large import, stopped inside its transaction
    const imports: { name: string; when: string; users: number; expected: ReturnType<typeof expectedCounts>; response?: Sent; promise?: Promise<void> }[] = []
    const startImport = (name: string, when: string, users: number) => {
      const slice = sampleDataset(users)
      const entry: (typeof imports)[number] = { name, when, users, expected: expectedCounts(slice) }
      imports.push(entry)
      const at = Date.now()
      entry.promise = p.client.post('/v1/datasets', { name, itemsTsv: slice.itemsTsv, usersTsv: slice.usersTsv }, 120_000).then(
        (res) => {
          entry.response = { kind: 'import', at, status: res.status, code: res.body?.error?.code, retryAfter: res.headers.get('retry-after') }
        },
        (e) => {
          entry.response = { kind: 'import', at, status: 0, error: (e as Error).message }
        },
      )
      return entry
    }
    const big = startImport('import-in-flight', 'in its transaction at the stop', options.importUsers)
    // the moment the import's transaction has written rows
    const inFlight = await until(
      async () => {
        if (big.response) return 'finished before the stop'
        const rows = await p.prisma.$queryRaw<{ n: number }[]>`
          SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
             AND (query ILIKE '%unnest%' OR query ILIKE '%"datasets"%')`
        return rows[0].n > 0 ? 'in its transaction' : undefined
      },
      60_000,
      'the import transaction',
      20,
    )
    const stopAt = Date.now()
    await pg.stop('fast')
    const stoppedAt = Date.now()
    progress(`postgres: stopped (import ${inFlight}); down for ${options.downSeconds} s`)
    await sleep(1500)
    // an import sent while the database is down: 503 expected, nothing written
    startImport('import-during-outage', 'sent while the database was down', 50)
    await sleep(Math.max(0, options.downSeconds * 1000 - (Date.now() - stoppedAt)))
    await pg.start()
    const startedAt = Date.now()
    progress(`postgres: started again after ${((startedAt - stopAt) / 1000).toFixed(1)} s; streaming on for 15 s`)
    await sleep(15_000)
    // and one after recovery: must succeed
    startImport('import-after-recovery', 'sent after recovery', 50)
    await Promise.all(imports.map((i) => i.promise))
    streaming = false
    await Promise.all(loops)

    const done = await waitForJob(p.client, job.id, 300_000, 'job through the outage')
    const stuck = await p.prisma.trainingJob.count({ where: { status: { in: ['queued', 'running'] } } })

    // every import: all of it or none of it
    const importRows = []
    for (const i of imports) {
      const found = await p.prisma.dataset.findMany({ where: { name: i.name } })
      const counted = await Promise.all(
        found.map(async (d) => ({
          row: { items: d.numItems, users: d.numUsers, interactions: d.numInteractions },
          actual: {
            items: await p.prisma.item.count({ where: { datasetId: d.id } }),
            users: await p.prisma.datasetUser.count({ where: { datasetId: d.id } }),
            interactions: await p.prisma.interaction.count({ where: { datasetId: d.id } }),
          },
        })),
      )
      const complete = counted.length === 1 && same(counted[0].actual, i.expected) && same(counted[0].row, i.expected)
      const verdict = counted.length === 0 ? 'absent' : complete ? 'complete' : counted.length > 1 ? `${counted.length} copies` : 'HALF-WRITTEN'
      importRows.push({
        import: i.name,
        when: i.when,
        status: i.response?.status,
        code: i.response?.code ?? i.response?.error,
        expected: `${i.expected.items}/${i.expected.users}/${i.expected.interactions}`,
        found: counted.map((c) => `${c.actual.items}/${c.actual.users}/${c.actual.interactions}`).join(', ') || '—',
        verdict,
        // a 201 means it must be there; a refusal means it must not
        consistent: i.response?.status === 201 ? verdict === 'complete' : i.response?.status === 0 ? verdict !== 'HALF-WRITTEN' : verdict === 'absent',
      })
    }
    // orphans: rows of datasets that no longer exist (a transaction that half-committed)
    const [orphans] = await p.prisma.$queryRaw<{ items: number; users: number; interactions: number }[]>`
      SELECT (SELECT count(*)::int FROM items i WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = i.dataset_id)) AS items,
             (SELECT count(*)::int FROM dataset_users u WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = u.dataset_id)) AS users,
             (SELECT count(*)::int FROM interactions x WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = x.dataset_id)) AS interactions`

    const all = [...sent, ...imports.map((i) => i.response!).filter(Boolean)]
    const byKind = new Map<string, Sent[]>()
    for (const s of all) byKind.set(s.kind, [...(byKind.get(s.kind) ?? []), s])
    const codeRows = [...byKind].map(([kind, xs]) => ({ requests: kind, ...countStatuses(xs) }))
    const outage = all.filter((s) => s.at >= stopAt - 500 && s.at <= startedAt + 1000)
    const bad5xx = all.filter((s) => s.status >= 500 && s.status !== 503)
    const bad503 = all.filter((s) => s.status === 503 && (s.code !== 'DEPENDENCY_UNAVAILABLE' || !s.retryAfter))
    const firstOkAfter = (kind: string) => {
      const ok = sent.filter((s) => s.kind === kind && s.at >= startedAt && s.status === 200).sort((a, b) => a.at - b.at)[0]
      return ok ? (ok.at - startedAt) / 1000 : null
    }
    const summary = {
      downSeconds: (startedAt - stopAt) / 1000,
      importAtStop: inFlight,
      requests: all.length,
      duringOutage: outage.length,
      '5xx other than 503': bad5xx.length,
      '503 without Retry-After/DEPENDENCY_UNAVAILABLE': bad503.length,
      noResponse: all.filter((s) => s.status === 0).length,
      jobStatus: done.status,
      jobAttempts: done.attempts,
      jobEpochs: done.epochs?.length,
      stuckJobs: stuck,
      halfWrittenImports: importRows.filter((r) => r.verdict !== 'complete' && r.verdict !== 'absent').length,
      inconsistentImportAnswers: importRows.filter((r) => !r.consistent).length,
      orphanRows: orphans.items + orphans.users + orphans.interactions,
      firstUserRecommendationAfterStartS: firstOkAfter('recommend by userId'),
      workerStillUp: worker.alive(),
      apiStillUp: p.api!.alive(),
      seconds: (Date.now() - t0) / 1000,
    }
    printTable('Scenario 3 — PostgreSQL restarted: status codes', codeRows)
    printTable('Scenario 3 — imports', importRows.map((r) => ({ ...r, consistent: r.consistent ? 'yes' : 'NO' })))
    printTable('Scenario 3 — summary', [summary])
    const apiErrors = loggedErrors(p.api)
    if (apiErrors.length) printTable('Scenario 3 — error-level lines in the API log', apiErrors)
    return {
      ok:
        bad5xx.length === 0 &&
        bad503.length === 0 &&
        done.status === 'completed' &&
        stuck === 0 &&
        summary.halfWrittenImports === 0 &&
        summary.inconsistentImportAnswers === 0 &&
        summary.orphanRows === 0,
      config: { ...options, epochConfig: config },
      summary,
      statusCodes: codeRows,
      imports: importRows,
      unexpected5xx: bad5xx.slice(0, 20),
      apiErrorsLogged: loggedErrors(p.api),
      // the raw error-level log lines (pino JSON) of the API, for the bug report
      apiErrorLines: p.api!.errors().slice(0, 3),
      workerErrorsLogged: loggedErrors(worker),
      unexpected503: bad503.slice(0, 20),
      noResponse: all.filter((s) => s.status === 0).slice(0, 20),
    }
  } finally {
    streaming = false
    if (!(await pg.running())) await pg.start().catch(() => undefined)
    await p.close()
  }
}

function same(a: { items: number; users: number; interactions: number }, b: { items: number; users: number; interactions: number }) {
  return a.items === b.items && a.users === b.users && a.interactions === b.interactions
}

function countStatuses(xs: { status: number }[]): Record<string, number> {
  const out: Record<string, number> = { total: xs.length }
  for (const x of xs) {
    const key = x.status ? `HTTP ${x.status}` : 'no answer'
    out[key] = (out[key] ?? 0) + 1
  }
  return out
}
