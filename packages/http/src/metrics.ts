// Prometheus metrics for a Fastify service: process defaults, request counts and latencies by
// route template (never by raw URL, which would explode label cardinality), plus whatever gauges
// the service adds. One registry per app instance: no process-wide state.
//
// Replicas (node:cluster workers sharing one port): a scrape lands on any one of them, so GET
// /metrics there answers the aggregate of every replica — counters and histograms summed, the
// default metrics by prom-client's own aggregators — through the primary, which relays the
// request (clusterMetricsRelay). The aggregation is prom-client's AggregatorRegistry.aggregate;
// the transport is ours rather than its clusterMetrics(), which reads a process-global registry
// list and fails the whole scrape (after 5 s) when one worker is still starting or just died.
import cluster, { type Cluster, type Worker } from 'node:cluster'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { AggregatorRegistry, Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface MetricsOptions {
  /** service name, a constant label on every series */
  service: string
  /** called with the registry to add service-specific metrics */
  register?: (registry: Registry) => void
}

/** Latency buckets, in seconds: fine below 10 ms, where a warm recommendation's p99 sits. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** How long a replica's scrape waits for the others (a slow one is left out, not waited for). */
const GATHER_TIMEOUT_MS = 2000

// Messages between replicas and the primary. A replica announces READY once its registry exists;
// GATHER asks the primary for every ready replica's metrics, which it collects with COLLECT.
const READY = 'iisan:metrics:ready'
const GATHER = 'iisan:metrics:gather'
const GATHERED = 'iisan:metrics:gathered'
const COLLECT = 'iisan:metrics:collect'
const COLLECTED = 'iisan:metrics:collected'

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>
interface Message {
  type?: string
  id?: number
  metrics?: MetricsJson[]
}

// a replica that has gone is left out by the exit handler or the timeout
const ignore = () => {}

export function metrics(options: MetricsOptions): FastifyPluginAsync {
  return fp(async (app: FastifyInstance) => {
    const registry = new Registry()
    registry.setDefaultLabels({ service: options.service })
    collectDefaultMetrics({ register: registry })
    const requests = new Counter({ name: 'http_requests_total', help: 'HTTP requests by route template and status', labelNames: ['method', 'route', 'status'], registers: [registry] })
    const latency = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request latency by route template',
      labelNames: ['method', 'route'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    })
    options.register?.(registry)
    const scrape = cluster.isWorker && process.send ? replicaScrape(app, registry) : async () => registry.metrics()

    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched'
      requests.inc({ method: request.method, route, status: String(reply.statusCode) })
      latency.observe({ method: request.method, route }, reply.elapsedTime / 1000)
    })
    app.get('/metrics', { schema: { tags: ['operations'], summary: 'Prometheus metrics (of every replica, summed)', produces: ['text/plain'] } }, async (_request, reply) => {
      return reply.type(registry.contentType).send(await scrape())
    })
  })
}

/**
 * In a cluster worker: answers the primary's COLLECT with this registry, and returns the scrape —
 * every replica's metrics aggregated, or this replica's alone when the primary does not answer
 * (a cluster manager other than clusterMetricsRelay's).
 */
function replicaScrape(app: FastifyInstance, registry: Registry): () => Promise<string> {
  // with a callback, a closed channel (the primary gone) is an error passed to it, not thrown
  const send = (message: object) => process.send!(message, undefined, {}, ignore)
  let next = 0
  const waiting = new Map<number, (metrics: MetricsJson[] | undefined) => void>()
  const onMessage = (message: Message) => {
    if (message?.type === COLLECT) {
      void registry.getMetricsAsJSON().then((metrics) => send({ type: COLLECTED, id: message.id, metrics: [metrics] }), () => send({ type: COLLECTED, id: message.id, metrics: [] }))
    } else if (message?.type === GATHERED && message.id !== undefined) {
      waiting.get(message.id)?.(message.metrics)
    }
  }
  process.on('message', onMessage)
  app.addHook('onClose', async () => {
    process.off('message', onMessage)
  })
  send({ type: READY })
  return async () => {
    const id = next++
    const gathered = await new Promise<MetricsJson[] | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), GATHER_TIMEOUT_MS + 1000)
      waiting.set(id, (metrics) => {
        clearTimeout(timer)
        resolve(metrics)
      })
      send({ type: GATHER, id })
    })
    waiting.delete(id)
    if (!gathered?.length) return registry.metrics()
    return AggregatorRegistry.aggregate(gathered).metrics()
  }
}

/**
 * In the cluster primary: relays replicas' scrapes (see above). Returns a function that stops
 * relaying.
 */
export function clusterMetricsRelay(primary: Cluster = cluster): () => void {
  const ready = new Set<Worker>()
  let next = 0
  const collecting = new Map<number, { pending: Set<Worker>; metrics: MetricsJson[]; finish: () => void }>()

  const gather = (asker: Worker, askerId: number) => {
    const id = next++
    const pending = new Set([...ready].filter((w) => w.isConnected()))
    const metrics: MetricsJson[] = []
    const finish = () => {
      if (!collecting.delete(id)) return
      clearTimeout(timer)
      if (asker.isConnected()) asker.send({ type: GATHERED, id: askerId, metrics }, undefined, ignore)
    }
    const timer = setTimeout(finish, GATHER_TIMEOUT_MS)
    collecting.set(id, { pending, metrics, finish })
    for (const w of pending) w.send({ type: COLLECT, id }, undefined, ignore)
    if (pending.size === 0) finish()
  }
  const onMessage = (worker: Worker, message: Message) => {
    if (message?.type === READY) ready.add(worker)
    else if (message?.type === GATHER && message.id !== undefined) gather(worker, message.id)
    else if (message?.type === COLLECTED && message.id !== undefined) {
      const c = collecting.get(message.id)
      if (!c || !c.pending.delete(worker)) return
      c.metrics.push(...(message.metrics ?? []))
      if (c.pending.size === 0) c.finish()
    }
  }
  // a replica that goes away is not waited for
  const onExit = (worker: Worker) => {
    ready.delete(worker)
    for (const c of collecting.values()) if (c.pending.delete(worker) && c.pending.size === 0) c.finish()
  }
  primary.on('message', onMessage)
  primary.on('exit', onExit)
  return () => {
    primary.off('message', onMessage)
    primary.off('exit', onExit)
    for (const c of collecting.values()) c.finish()
  }
}
