// API replicas (API_REPLICAS > 1): node:cluster workers sharing one port, each a whole API with its
// own copy of the served models, kept in step by the model-activated / model-updated events every
// replica subscribes to (server.ts). The primary only supervises: it forks the replicas, replaces
// one that dies with backoff, relays /metrics scrapes so any replica answers for all of them, and
// on SIGTERM / SIGINT stops them all gracefully.
import cluster, { type Worker } from 'node:cluster'
import type { Logger } from '@iisan/config'
import { clusterMetricsRelay } from '@iisan/http/metrics'

/** How the primary tells a worker which replica it is (1…N, kept when a replica is replaced). */
const REPLICA_ENV = 'IISAN_API_REPLICA'

export interface SupervisorOptions {
  replicas: number
  logger: Pick<Logger, 'info' | 'warn' | 'error'>
  /** First restart delay of a replica that died; doubles on each death in a row (default 500 ms). */
  restartDelayMs?: number
  /** Longest restart delay (default 30 s). */
  maxRestartDelayMs?: number
  /** A replica that served this long before dying is restarted at the first delay again (default 60 s). */
  stableAfterMs?: number
  /** Replicas still running this long after SIGTERM are killed, and the primary exits 1 (default 35 s). */
  shutdownTimeoutMs?: number
}

/**
 * In the cluster primary: runs `replicas` API workers until SIGTERM or SIGINT, then stops them
 * (SIGTERM each: it finishes its requests) and exits 0 — 1 if one failed to stop cleanly. A
 * replica that dies is replaced after a delay that grows while it keeps dying; but when the first
 * replicas die before any has served (a port in use, a database that is not there), the primary
 * exits 1 as a single API process would.
 */
export function superviseReplicas(options: SupervisorOptions): void {
  const { replicas, logger } = options
  const initialDelay = options.restartDelayMs ?? 500
  const maxDelay = options.maxRestartDelayMs ?? 30_000
  const stableAfter = options.stableAfterMs ?? 60_000
  const shutdownTimeout = options.shutdownTimeoutMs ?? 35_000
  const slots = new Map<Worker, { replica: number; listeningAt?: number }>()
  const deathsInARow = new Map<number, number>()
  const restarts = new Set<NodeJS.Timeout>()
  let served = false
  let stopping = false
  let failed = false
  const stopRelay = clusterMetricsRelay(cluster)

  const fork = (replica: number) => {
    const worker = cluster.fork({ [REPLICA_ENV]: String(replica) })
    slots.set(worker, { replica })
    worker.on('listening', () => {
      served = true
      slots.get(worker)!.listeningAt = Date.now()
      logger.info({ replica, pid: worker.process.pid }, 'replica listening')
    })
  }

  cluster.on('exit', (worker, code, signal) => {
    const slot = slots.get(worker)
    slots.delete(worker)
    if (!slot) return
    if (stopping) {
      // one still starting has no shutdown handler yet: our SIGTERM ends it, with nothing lost
      if (code !== 0 && !(signal === 'SIGTERM' && slot.listeningAt === undefined)) {
        failed = true
        // the API then exits 1: say which replica, and how it ended
        logger.error({ replica: slot.replica, pid: worker.process.pid, code, signal, listened: slot.listeningAt !== undefined }, 'a replica did not stop cleanly')
      }
      if (slots.size === 0) finish()
      return
    }
    if (!served) {
      logger.error({ replica: slot.replica, code, signal }, 'a replica died before any served: stopping the API')
      failed = true
      stop()
      return
    }
    const stable = slot.listeningAt !== undefined && Date.now() - slot.listeningAt >= stableAfter
    const deaths = stable ? 1 : (deathsInARow.get(slot.replica) ?? 0) + 1
    deathsInARow.set(slot.replica, deaths)
    const delay = Math.min(maxDelay, initialDelay * 2 ** (deaths - 1))
    logger.warn({ replica: slot.replica, pid: worker.process.pid, code, signal, restartInMs: delay }, 'replica exited unexpectedly: replacing it')
    const timer = setTimeout(() => {
      restarts.delete(timer)
      if (!stopping) fork(slot.replica)
    }, delay)
    restarts.add(timer)
  })

  function stop() {
    if (stopping) return
    stopping = true
    for (const t of restarts) clearTimeout(t)
    restarts.clear()
    if (slots.size === 0) return finish()
    for (const worker of slots.keys()) worker.process.kill('SIGTERM')
    setTimeout(() => {
      logger.error({ timeoutMs: shutdownTimeout, left: slots.size }, 'replicas did not stop in time: killing them')
      for (const worker of slots.keys()) worker.process.kill('SIGKILL')
      process.exit(1)
    }, shutdownTimeout).unref()
  }
  function finish() {
    stopRelay()
    logger.info({ failed }, 'replicas stopped')
    process.exit(failed ? 1 : 0)
  }
  // Ctrl-C signals the whole process group, and `npm start` passes SIGTERM on as well: the first
  // signal starts the shutdown, later ones have nothing to add (the timeout bounds it).
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      logger.info({ signal }, stopping ? 'already stopping the replicas' : 'stopping the replicas')
      stop()
    })
  }

  logger.info({ replicas, pid: process.pid }, 'starting API replicas')
  for (let replica = 1; replica <= replicas; replica++) fork(replica)
}

/**
 * In a replica (a cluster worker): which one it is, and the signals its own graceful shutdown
 * answers — SIGTERM only, from the primary; a terminal's Ctrl-C reaches the whole process group,
 * and the primary turns it into that SIGTERM, so the replica ignores its copy of SIGINT.
 * Outside a cluster: replica 1 with the usual SIGTERM and SIGINT.
 */
export function replicaRole(env: NodeJS.ProcessEnv = process.env): { replica: number; signals: NodeJS.Signals[] } {
  if (!cluster.isWorker) return { replica: 1, signals: ['SIGTERM', 'SIGINT'] }
  process.on('SIGINT', () => {})
  return { replica: Number(env[REPLICA_ENV]) || cluster.worker!.id, signals: ['SIGTERM'] }
}
