/**
 * Scenario 2 — Redis restarted without persistence. One worker; one job trains and others wait
 * in the queue. The redis-server is SIGKILLed and a fresh, empty one started on the same port:
 * the queue forgets every job. Expected: the running job finishes (its worker holds it in
 * PostgreSQL), the workers' reconciler (every 15 s) enqueues the forgotten ones again, all
 * complete; a job submitted after the restart completes too.
 */
import { createRedisConnection } from '@iisan/queue'
import type { Json } from './http.ts'
import { progress, sleep, until, type Fleet } from './infra.ts'
import { createPlatform, importSample, printTable, waitForJob } from './platform.ts'

export interface RedisOptions {
  users: number
  maxEpochs: number
  /** jobs waiting in the queue when Redis goes */
  queued: number
}

export async function redisScenario(fleet: Fleet, options: RedisOptions) {
  const p = await createPlatform(fleet, 'redis')
  const t0 = Date.now()
  const probe = createRedisConnection(fleet.redis!.url)
  probe.on('error', () => undefined)
  try {
    await p.startApi()
    const worker = await p.startWorker()
    const dataset = await importSample(p.client, 'redis', options.users)
    const config = { maxEpochs: options.maxEpochs, batchSize: 16, patience: 100, seed: 3 }
    const submit = async () => (await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id', config }, 202)).id as string
    const running = await submit()
    const queued: string[] = []
    for (let i = 0; i < options.queued; i++) queued.push(await submit())

    // Redis goes while the first job is into its second epoch and the others wait
    await until(
      async () => {
        const row = await p.prisma.trainingJob.findUnique({ where: { id: running }, select: { status: true, checkpoint: { select: { epoch: true } } } })
        return row?.status === 'running' && (row.checkpoint?.epoch ?? 0) >= 1 ? true : undefined
      },
      180_000,
      'the first job into its second epoch',
    )
    const statesBefore = await Promise.all([running, ...queued].map(async (id) => ({ id, row: (await p.prisma.trainingJob.findUniqueOrThrow({ where: { id } })).status, queue: await queueState(probe, p.prefix, id) })))
    const port = fleet.redis!.port
    const killedAt = Date.now()
    await fleet.killRedis()
    progress(`redis: redis-server SIGKILLed (job ${running.slice(0, 8)} running, ${queued.length} queued)`)
    await sleep(2000)
    await fleet.startRedis(port)
    const restartedAt = Date.now()
    progress(`redis: a fresh, empty redis-server on ${port} after ${((restartedAt - killedAt) / 1000).toFixed(1)} s`)
    const keysAfterRestart = await probe.dbsize().catch(() => -1)

    // a job submitted right after the restart (the API's queue connection has to come back)
    let lateId: string | undefined
    let lateStatus = 0
    let lateError: string | undefined
    for (let i = 0; i < 20 && !lateId; i++) {
      const res = await p.client.post('/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id', config }).catch((e: Error) => ({ status: 0, body: { error: e.message } as Json }))
      lateStatus = res.status
      if (res.status === 202) lateId = res.body.id
      else {
        lateError = JSON.stringify(res.body).slice(0, 200)
        await sleep(1000)
      }
    }

    // when each forgotten job is back in the queue (the reconciler)
    const requeuedAfter: Record<string, number | null> = {}
    await until(
      async () => {
        for (const id of queued) {
          if (requeuedAfter[id] === undefined && (await queueState(probe, p.prefix, id)) !== 'missing') requeuedAfter[id] = (Date.now() - restartedAt) / 1000
        }
        return queued.every((id) => requeuedAfter[id] !== undefined) ? true : undefined
      },
      90_000,
      'the reconciler to enqueue the forgotten jobs',
      200,
    ).catch((e) => progress(`redis: ${(e as Error).message}`))
    for (const id of queued) requeuedAfter[id] ??= null

    const all = [running, ...queued, ...(lateId ? [lateId] : [])]
    const finals: Json[] = []
    for (const id of all) finals.push(await waitForJob(p.client, id, 300_000, 'redis job').catch((e) => ({ id, status: 'timeout', error: (e as Error).message })))
    const versions = await p.prisma.modelVersion.groupBy({ by: ['jobId'], _count: { _all: true } })
    const rows = all.map((id, i) => {
      const f = finals[i]
      const role = id === running ? 'running at the restart' : id === lateId ? 'submitted after it' : 'queued at the restart'
      return {
        job: id.slice(0, 8),
        role,
        before: statesBefore.find((s) => s.id === id) ? `${statesBefore.find((s) => s.id === id)!.row} / queue ${statesBefore.find((s) => s.id === id)!.queue}` : '',
        'requeued s': queued.includes(id) ? requeuedAfter[id] : undefined,
        status: f.status,
        attempts: f.attempts,
        epochs: f.epochs?.length,
        modelVersions: versions.find((v) => v.jobId === id)?._count._all ?? 0,
        error: f.error ?? undefined,
      }
    })
    const summary = {
      redisDownSeconds: (restartedAt - killedAt) / 1000,
      keysInFreshRedis: keysAfterRestart,
      jobs: all.length,
      completed: rows.filter((r) => r.status === 'completed').length,
      lost: rows.filter((r) => r.status !== 'completed').length,
      duplicateModelVersions: rows.reduce((s, r) => s + Math.max(0, r.modelVersions - 1), 0),
      requeuedSecondsMax: Math.max(...queued.map((id) => requeuedAfter[id] ?? Infinity)),
      lateSubmitStatus: lateStatus,
      workerStillUp: worker.alive(),
      seconds: (Date.now() - t0) / 1000,
    }
    printTable('Scenario 2 — Redis restarted empty (per job)', rows.map((r) => ({ ...r, error: r.error?.slice(0, 60) })))
    printTable('Scenario 2 — summary', [summary])
    return {
      ok: summary.lost === 0 && summary.duplicateModelVersions === 0 && lateId !== undefined,
      config: { ...options, epochConfig: config },
      summary,
      jobs: rows,
      ...(lateError && !lateId ? { lateSubmitError: lateError } : {}),
    }
  } finally {
    probe.disconnect()
    await p.close()
  }
}

/** The BullMQ state of a training job, read straight from Redis (missing: the queue has no record). */
async function queueState(redis: ReturnType<typeof createRedisConnection>, prefix: string, id: string): Promise<string> {
  const base = `${prefix}:training`
  try {
    if (!(await redis.exists(`${base}:${id}`))) return 'missing'
    if ((await redis.lpos(`${base}:active`, id)) !== null) return 'active'
    if ((await redis.lpos(`${base}:wait`, id)) !== null) return 'waiting'
    if ((await redis.zscore(`${base}:delayed`, id)) !== null) return 'delayed'
    if ((await redis.zscore(`${base}:completed`, id)) !== null) return 'completed'
    if ((await redis.zscore(`${base}:failed`, id)) !== null) return 'failed'
    return 'present'
  } catch {
    return 'unknown'
  }
}
