// The admin dashboard: static HTML + ES modules + CSS from ../admin, served under /admin by the
// API itself (no build step, no separate server). Chart.js comes from node_modules — the
// dashboard works offline, no CDN. Every page talks to the public /v1 API like any client.
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import type { FastifyPluginAsync } from 'fastify'
import fastifyStatic from '@fastify/static'

export const ADMIN_DIR = fileURLToPath(new URL('../admin/', import.meta.url))
/** node_modules/chart.js/dist (the package's main entry lives there). */
const CHART_JS_DIR = path.dirname(createRequire(import.meta.url).resolve('chart.js'))

export const adminRoutes: FastifyPluginAsync = async (app) => {
  // GET /admin → 302 /admin/ → index.html; the pages route with the URL hash (#/jobs, …).
  await app.register(fastifyStatic, { root: ADMIN_DIR, prefix: '/admin', redirect: true, index: 'index.html', dotfiles: 'ignore' })
  // Only the UMD bundle of Chart.js (it defines the global `Chart`), not the whole package.
  app.get('/admin/vendor/chart.umd.js', { schema: { hide: true } }, (_request, reply) => reply.sendFile('chart.umd.js', CHART_JS_DIR))
}
