/**
 * Scenario 6 — fuzz. At least 10,000 requests with random and mutated methods, paths, query
 * strings, headers, content types and bodies over every /v1 route (with the API key), a fifth of
 * them dataset imports, most malformed. Counted: 5xx (must be 0), requests that got no answer,
 * rows left behind by refused imports (datasets the successful imports do not account for, and
 * their items, users, interactions), and the API process's RSS at the start, middle and end.
 */
import { sampleDataset } from '@iisan/pipeline'
import { nextRequest, type FuzzContext, type FuzzRoute } from './fuzz-gen.ts'
import { rawRequest, rng, type Json, type RawResponse } from './http.ts'
import { loggedErrors, progress, rssMb, type Fleet } from './infra.ts'
import { createPlatform, importSample, printTable, waitForJob } from './platform.ts'

const KEY = 'faults-fuzz-key-0123456789abcdef'

export interface FuzzOptions {
  requests: number
  seed: number
  concurrency?: number
}

export async function fuzzScenario(fleet: Fleet, options: FuzzOptions) {
  const p = await createPlatform(fleet, 'fuzz', { apiKey: KEY })
  const t0 = Date.now()
  try {
    // a model for the model and recommendation routes; the worker leaves before the fuzz (the
    // fuzz's training jobs stay queued)
    const [api, , worker] = await Promise.all([p.startApi(), p.startCache(), p.startWorker()])
    const dataset = await importSample(p.client, 'fuzz', 80)
    // three versions: the active one, a second for compare, one for DELETE to take
    const models: string[] = []
    for (const seed of [1, 2, 3]) {
      const trained = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id', config: { maxEpochs: 1, batchSize: 16, seed } }, 202)
      const done = await waitForJob(p.client, trained.id, 240_000, 'fuzz model')
      if (done.status !== 'completed') throw new Error(`the fuzz scenario's model did not train: ${done.error}`)
      models.push(done.modelVersionId)
    }
    await fleet.stop(worker)
    const job = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id' }, 202)
    const slice = sampleDataset(80)
    const small = sampleDataset(12)
    // what DELETE /v1/datasets/:id gets to delete
    const victims: string[] = []
    const victimJobs: string[] = []
    for (let i = 0; i < 5; i++) {
      victims.push((await importSample(p.client, `fuzz-victim-${i}`, 12)).id)
      victimJobs.push((await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id' }, 202)).id)
    }
    const ctx: FuzzContext = {
      datasetId: dataset.id,
      victimDatasetIds: victims,
      victimJobIds: victimJobs,
      jobId: job.id,
      modelId: models[0],
      otherModelId: models[1],
      victimModelId: models[2],
      itemIds: slice.itemIds.slice(0, 200),
      userIds: slice.userLines.map((l) => l.split('\t')[0]),
      itemLines: small.itemsTsv.split('\n').filter(Boolean),
      userLines: small.userLines,
      port: api.port,
      apiKey: KEY,
    }
    const doc = (await fetch(`http://127.0.0.1:${api.port}/docs/json`).then((r) => r.json())) as Json
    const routes: FuzzRoute[] = []
    for (const [url, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      if (!url.startsWith('/v1/')) continue
      for (const method of Object.keys(ops)) if (['get', 'post', 'put', 'patch', 'delete'].includes(method)) routes.push({ method: method.toUpperCase(), url })
    }

    const datasetsBefore = new Set((await p.prisma.dataset.findMany({ select: { id: true } })).map((d) => d.id))
    const countsBefore = await counts(p.prisma)
    const rss: { at: string; request: number; mb: number | null }[] = [{ at: 'start', request: 0, mb: rssMb(api.pid) }]
    let peakRss = rss[0].mb ?? 0
    const sampler = setInterval(() => {
      const mb = rssMb(api.pid)
      if (mb !== null) peakRss = Math.max(peakRss, mb)
    }, 500)

    const fuzzStarted = Date.now()
    const r = rng(options.seed)
    const requests = Array.from({ length: options.requests }, () => nextRequest(routes, ctx, r))
    const results: { i: number; res: RawResponse }[] = []
    const byRoute = new Map<string, Record<string, number>>()
    const statusCounts: Record<string, number> = {}
    const fiveHundreds: Json[] = []
    const silent: Json[] = []
    const created = new Set<string>()
    let importsAnswered201 = 0
    let next = 0
    let finished = 0
    let lastPrint = Date.now()
    const width = options.concurrency ?? 8
    await Promise.all(
      Array.from({ length: width }, async () => {
        while (next < requests.length) {
          const i = next++
          const q = requests[i]
          const head = [`${q.method} ${q.target} HTTP/1.1`, ...q.headers.map(([k, v]) => `${k}: ${v}`)].join('\r\n')
          const res = await rawRequest(ctx.port, head, q.body, q.mayHang ? 3000 : 30_000)
          finished++
          results.push({ i, res })
          const key = res.status ? `HTTP ${res.status}` : 'no answer'
          statusCounts[key] = (statusCounts[key] ?? 0) + 1
          const row = byRoute.get(q.route) ?? {}
          row[res.status ? String(Math.floor(res.status / 100)) + 'xx' : 'none'] = (row[res.status ? String(Math.floor(res.status / 100)) + 'xx' : 'none'] ?? 0) + 1
          row.total = (row.total ?? 0) + 1
          byRoute.set(q.route, row)
          const summary = () => ({ route: q.route, method: q.method, target: q.target.slice(0, 160), mutations: q.mutations, contentType: q.headers.find(([k]) => k === 'Content-Type')?.[1], bodyBytes: q.body.length, status: res.status, answer: res.body.slice(0, 300), error: res.error })
          if (res.status >= 500) fiveHundreds.push(summary())
          if (res.status === 0 && !q.mayHang) silent.push(summary())
          if (res.status === 201 && q.route === 'POST /v1/datasets') {
            try {
              const id = JSON.parse(res.body).id
              if (typeof id === 'string') created.add(id)
              importsAnswered201++
            } catch {
              // a 201 without an id would show as an unexplained dataset below
            }
          }
          if (finished === Math.floor(requests.length / 2)) rss.push({ at: 'middle', request: finished, mb: rssMb(api.pid) })
          if (Date.now() - lastPrint > 15_000) {
            lastPrint = Date.now()
            progress(`fuzz: ${finished}/${requests.length} requests (${(finished / ((Date.now() - fuzzStarted) / 1000)).toFixed(0)}/s), ${fiveHundreds.length} × 5xx, API RSS ${rssMb(api.pid)?.toFixed(0)} MB`)
          }
        }
      }),
    )
    clearInterval(sampler)
    rss.push({ at: 'end', request: finished, mb: rssMb(api.pid) })
    const health = await fetch(`http://127.0.0.1:${api.port}/healthz`).then((res) => res.status).catch(() => 0)

    // what the imports left behind
    const datasetsAfter = await p.prisma.dataset.findMany({ select: { id: true, name: true, numItems: true, numUsers: true, numInteractions: true } })
    const unexplained = datasetsAfter.filter((d) => !datasetsBefore.has(d.id) && !created.has(d.id))
    const rowsOf = async (ids: string[]) => ({
      items: await p.prisma.item.count({ where: { datasetId: { in: ids } } }),
      users: await p.prisma.datasetUser.count({ where: { datasetId: { in: ids } } }),
      interactions: await p.prisma.interaction.count({ where: { datasetId: { in: ids } } }),
    })
    const leftBehind = await rowsOf(unexplained.map((d) => d.id))
    // the successful imports, each complete
    let incompleteImports = 0
    for (const id of created) {
      const d = datasetsAfter.find((x) => x.id === id)
      if (!d) {
        incompleteImports++
        continue
      }
      const rows = await rowsOf([id])
      if (rows.items !== d.numItems || rows.users !== d.numUsers || rows.interactions !== d.numInteractions) incompleteImports++
    }
    const countsAfter = await counts(p.prisma)
    const importRequests = requests.filter((q) => q.route === 'POST /v1/datasets')
    const summary = {
      requests: results.length,
      seconds: (Date.now() - t0) / 1000,
      fuzzSeconds: (Date.now() - fuzzStarted) / 1000,
      '5xx': fiveHundreds.length,
      'no answer (framing left open on purpose)': results.filter((x) => x.res.status === 0 && requests[x.i].mayHang).length,
      'no answer (other)': silent.length,
      importRequests: importRequests.length,
      importsCreated: created.size,
      importsAnswered201,
      datasetsBefore: datasetsBefore.size,
      datasetsAfter: datasetsAfter.length,
      'datasets no 201 accounts for': unexplained.length,
      'rows left by refused imports': leftBehind.items + leftBehind.users + leftBehind.interactions,
      'successful imports incomplete': incompleteImports,
      'RSS start MB': rss[0].mb,
      'RSS middle MB': rss.find((x) => x.at === 'middle')?.mb ?? null,
      'RSS end MB': rss.at(-1)!.mb,
      'RSS peak MB': peakRss,
      healthAfter: health,
      apiStillUp: api.alive(),
    }
    printTable('Scenario 6 — fuzz: status codes', [statusCounts])
    printTable(
      'Scenario 6 — fuzz: per route',
      [...byRoute].sort((a, b) => a[0].localeCompare(b[0])).map(([route, c]) => ({ route, ...c })),
    )
    printTable('Scenario 6 — summary', [summary])
    if (fiveHundreds.length) {
      printTable(
        'Scenario 6 — 5xx (first 15)',
        fiveHundreds.slice(0, 15).map((f) => ({ status: f.status, request: `${f.method} ${f.target}`.slice(0, 90), mutations: f.mutations.join('; ').slice(0, 80), answer: f.answer.slice(0, 80) })),
      )
    }
    const apiErrors = loggedErrors(api)
    if (apiErrors.length) printTable('Scenario 6 — error-level lines in the API log', apiErrors.slice(0, 20))
    return {
      ok: fiveHundreds.length === 0 && silent.length === 0 && unexplained.length === 0 && incompleteImports === 0 && health === 200 && api.alive(),
      config: { ...options, routes: routes.length },
      summary,
      statusCodes: statusCounts,
      perRoute: Object.fromEntries(byRoute),
      rss,
      countsBefore,
      countsAfter,
      leftBehind,
      unexplainedDatasets: unexplained.slice(0, 20),
      fiveHundreds: fiveHundreds.slice(0, 50),
      noAnswer: silent.slice(0, 20),
      apiErrorsLogged: apiErrors,
      apiErrorLines: api.errors().slice(0, 3),
    }
  } finally {
    await p.close()
  }
}

async function counts(prisma: import('@iisan/storage').PrismaClient) {
  return {
    datasets: await prisma.dataset.count(),
    items: await prisma.item.count(),
    users: await prisma.datasetUser.count(),
    interactions: await prisma.interaction.count(),
    trainingJobs: await prisma.trainingJob.count(),
  }
}
