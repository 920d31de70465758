/**
 * Scenario 4 — the embedding cache SIGKILLed during a build. An IISAN job (the demo backbones the
 * cache generates by default) has the cache encode the dataset's items; while the job's progress
 * phase is `caching`, the cache process is killed and, a few seconds later, started again on the
 * same port. Expected: the job completes (the worker waits out the outage and asks for the build
 * again, which resumes it).
 */
import type { Json } from './http.ts'
import { loggedErrors, progress, sleep, type Fleet } from './infra.ts'
import { createPlatform, importSample, printTable } from './platform.ts'

export interface CacheOptions {
  users: number
  maxEpochs: number
  downSeconds: number
}

export async function cacheScenario(fleet: Fleet, options: CacheOptions) {
  const p = await createPlatform(fleet, 'cache')
  const t0 = Date.now()
  try {
    let cache = await p.startCache()
    await p.startApi()
    const worker = await p.startWorker()
    const dataset = await importSample(p.client, 'cache', options.users)
    progress(`cache: dataset of ${dataset.numItems} items; IISAN job, the cache is killed while it builds`)
    const config = { maxEpochs: options.maxEpochs, batchSize: 16, patience: 100, seed: 9 }
    const job = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'iisan', config }, 202)

    // the moment the job reports the cache build under way
    const phases: string[] = []
    const note = (phase: string | undefined) => {
      if (phase && phases.at(-1) !== phase) phases.push(phase)
    }
    let atKill: Json
    const deadline = Date.now() + 180_000
    while (Date.now() < deadline) {
      const row = await p.prisma.trainingJob.findUnique({ where: { id: job.id }, select: { status: true, progress: true } })
      const prog = (row?.progress ?? {}) as Json
      note(prog.phase)
      if (row?.status !== 'queued' && row?.status !== 'running') throw new Error(`the job ended before its cache build: ${row?.status}`)
      if (prog.phase === 'caching' && prog.total > 0) {
        atKill = prog
        break
      }
      await sleep(50)
    }
    if (!atKill) throw new Error('the job never reported a cache build in progress')
    const builds = await p.prisma.cacheBuild.findMany({ where: { datasetId: dataset.id }, select: { status: true, itemsDone: true, itemsTotal: true } })
    const killedAt = Date.now()
    cache.child.kill('SIGKILL')
    await cache.exited
    progress(`cache: SIGKILLed the embedding cache at ${atKill.cached}/${atKill.total} states (builds: ${builds.map((b) => `${b.status} ${b.itemsDone}/${b.itemsTotal}`).join(', ')})`)
    await sleep(options.downSeconds * 1000)
    cache = await p.startCache()
    const backAt = Date.now()
    progress(`cache: started again on port ${p.cachePort} after ${((backAt - killedAt) / 1000).toFixed(1)} s`)

    // the job, to the end
    let final: Json
    let lastPrint = 0
    const end = Date.now() + 420_000
    while (Date.now() < end) {
      const res = await p.client.get(`/v1/training-jobs/${job.id}`).catch(() => undefined)
      if (res?.status === 200) {
        final = res.body
        note(final.progress?.phase)
        if (['completed', 'failed', 'cancelled'].includes(final.status)) break
      }
      if (Date.now() - lastPrint > 15_000) {
        lastPrint = Date.now()
        progress(`cache: job ${final?.status} ${final?.progress?.phase ?? ''} ${final?.progress?.cached ?? ''}/${final?.progress?.total ?? ''} ${final?.progress?.message ?? ''}`.slice(0, 200))
      }
      await sleep(300)
    }
    const buildsAfter = await p.prisma.cacheBuild.findMany({ where: { datasetId: dataset.id }, select: { status: true, itemsDone: true, itemsFailed: true, itemsTotal: true, error: true } })
    const versions = await p.prisma.modelVersion.count({ where: { jobId: job.id } })
    const summary = {
      items: dataset.numItems,
      statesAtKill: `${atKill.cached}/${atKill.total}`,
      cacheDownSeconds: (backAt - killedAt) / 1000,
      jobStatus: final?.status ?? 'unknown',
      attempts: final?.attempts,
      epochs: final?.epochs?.length,
      modelVersions: versions,
      phases: phases.join(' → '),
      secondsKillToDone: final?.finishedAt ? (new Date(final.finishedAt).getTime() - killedAt) / 1000 : null,
      cacheBuilds: buildsAfter.map((b) => `${b.status} ${b.itemsDone}/${b.itemsTotal}${b.itemsFailed ? ` (${b.itemsFailed} failed)` : ''}`).join(', '),
      workerStillUp: worker.alive(),
      seconds: (Date.now() - t0) / 1000,
    }
    printTable('Scenario 4 — embedding cache SIGKILLed during the build', [summary])
    if (final?.error) console.log(`  job error: ${final.error}`)
    return {
      ok: final?.status === 'completed' && versions === 1,
      config: { ...options, epochConfig: config },
      summary,
      jobError: final?.error ?? null,
      buildErrors: buildsAfter.map((b) => b.error).filter(Boolean),
      workerErrorsLogged: loggedErrors(worker),
      cacheErrorsLogged: loggedErrors(cache),
    }
  } finally {
    await p.close()
  }
}
