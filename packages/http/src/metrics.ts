// Prometheus metrics for a Fastify service: process defaults, request counts and latencies by
// route template (never by raw URL, which would explode label cardinality), plus whatever gauges
// the service adds. One registry per app instance: no process-wide state.
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface MetricsOptions {
  /** service name, a constant label on every series */
  service: string
  /** called with the registry to add service-specific metrics */
  register?: (registry: Registry) => void
}

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
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [registry],
    })
    options.register?.(registry)

    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched'
      requests.inc({ method: request.method, route, status: String(reply.statusCode) })
      latency.observe({ method: request.method, route }, reply.elapsedTime / 1000)
    })
    app.get('/metrics', { schema: { tags: ['operations'], summary: 'Prometheus metrics', produces: ['text/plain'] } }, async (_request, reply) => {
      return reply.type(registry.contentType).send(await registry.metrics())
    })
  })
}
