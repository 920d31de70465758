// API keys against every spelling of a /v1 URL. The router decodes and normalises what it
// matches, so a check on the raw URL string can be walked around (`/%761/datasets`,
// `/v%31/…`, absolute-form request targets): this sends requests over raw sockets, so the
// spelling reaches the server exactly as written, for every route the app registers under /v1 ×
// every method it takes, and asserts that without the right key nothing gets past the check.
import { channel } from 'node:diagnostics_channel'
import net, { type AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { apiKeyAuth } from '@iisan/http'
import { createTestApi, createTestPlatform, freePort, type TestPlatform } from './helpers/platform.ts'

const KEY = 'auth-matrix-key-0123456789abcdef'
const WRONG = 'auth-matrix-wrong-0123456789abcd'
const SOME_UUID = '00000000-0000-4000-8000-000000000000'

interface Probed {
  method: string
  /** As registered, with the prefix: /v1/datasets/:id */
  url: string
  hasBody: boolean
}

/**
 * Records every route under /v1 as Fastify registers it, and which probes (x-probe header) got
 * past the onRequest hooks of the route's scope and which reached its handler. Fastify publishes
 * every new instance on this channel before any plugin runs, so routes added later are
 * enumerated without anyone keeping a list here.
 */
function instrument() {
  const routes: Probed[] = []
  const passed = new Set<string>()
  const handled = new Set<string>()
  const probeOf = (headers: Record<string, unknown>) => String(headers['x-probe'] ?? '')
  const onInit = (message: unknown) => {
    const { fastify } = message as { fastify: FastifyInstance }
    fastify.addHook('onRoute', (route: RouteOptions) => {
      if (route.url !== '/v1' && !route.url.startsWith('/v1/')) return
      const hasBody = (route.schema as { body?: unknown } | undefined)?.body !== undefined
      for (const method of [route.method].flat()) routes.push({ method, url: route.url, hasBody })
      // route-level hooks run after the scope's own, so reaching this means the key check let it through
      const existing = route.onRequest === undefined ? [] : [route.onRequest].flat()
      route.onRequest = [
        ...existing,
        async (request) => {
          passed.add(probeOf(request.headers))
        },
      ]
      const handler = route.handler
      route.handler = function (this: FastifyInstance, request, reply) {
        handled.add(probeOf(request.headers))
        return handler.call(this, request, reply)
      }
    })
  }
  const initChannel = channel('fastify.initialization')
  initChannel.subscribe(onInit)
  return { routes, passed, handled, stop: () => initChannel.unsubscribe(onInit) }
}

interface RawResponse {
  status: number
  body: string
}

/** One request over a fresh socket, the request target byte for byte as given. */
function raw(port: number, method: string, target: string, headers: Record<string, string>, body?: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.setTimeout(20_000, () => socket.destroy(new Error(`no answer to ${method} ${target}`)))
    socket.on('data', (c) => chunks.push(c))
    socket.on('error', reject)
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      if (!status) return reject(new Error(`no status line for ${method} ${target}: ${JSON.stringify(text.slice(0, 200))}`))
      const split = text.indexOf('\r\n\r\n')
      resolve({ status: Number(status[1]), body: split < 0 ? '' : text.slice(split + 4) })
    })
    const lines = [`${method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)]
    if (body !== undefined) lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`)
    // write, not end: a half-closed socket makes Node's server abort the request in flight
    socket.write(`${lines.join('\r\n')}\r\n\r\n${body ?? ''}`)
  })
}

const pct = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`

/** Ways to write `path` (/v1/…) that a router might still match, or nearly match. */
function spellings(path: string, port: number): { name: string; target: string }[] {
  const rest = path.slice('/v1'.length) // '/datasets/…'
  const segments = rest.split('/').slice(1)
  const last = segments.length - 1
  const host = `127.0.0.1:${port}`
  const encodeAll = (s: string) => [...s].map((c) => (c === '/' ? c : pct(c))).join('')
  return [
    { name: 'canonical', target: path },
    { name: 'v percent-encoded', target: `/%761${rest}` },
    { name: '1 percent-encoded', target: `/v%31${rest}` },
    { name: 'v1 percent-encoded', target: `/%76%31${rest}` },
    { name: 'v1 percent-encoded, lower-case hex', target: `/%76%31${rest}`.toLowerCase() },
    { name: 'V percent-encoded', target: `/%561${rest}` },
    { name: 'encoded letter in the next segment', target: `/v1/${pct(segments[0][0])}${segments[0].slice(1)}${rest.slice(segments[0].length + 1)}` },
    { name: 'encoded letter in the last segment', target: `/v1/${[...segments.slice(0, last), segments[last].slice(0, -1) + pct(segments[last].at(-1)!)].join('/')}` },
    { name: 'every character encoded', target: encodeAll(path) },
    { name: 'encoded slash after v1', target: `/v1%2F${rest.slice(1)}` },
    { name: 'absolute form', target: `http://${host}${path}` },
    { name: 'absolute form, other host', target: `http://api.example.test${path}` },
    { name: 'absolute form, https', target: `https://${host}${path}` },
    { name: 'absolute form, encoded', target: `http://${host}/%761${rest}` },
    { name: 'absolute form, upper-case scheme', target: `HTTP://${host}${path}` },
    { name: 'leading double slash', target: `/${path}` },
    { name: 'double slash after v1', target: `/v1/${rest}` },
    { name: 'trailing double slash', target: `${path}//` },
    { name: 'dot-dot segment', target: `/x/..${path}` },
    { name: 'encoded dot-dot segment', target: `/x/%2E%2E${path}` },
    { name: 'dot segment', target: `/.${path}` },
    { name: 'dot segment after v1', target: `/v1/.${rest}` },
    { name: 'dot-dot after v1', target: `/v1/x/..${rest}` },
    { name: 'upper-case V1', target: `/V1${rest}` },
    { name: 'upper-case path', target: path.toUpperCase() },
    { name: 'trailing slash', target: `${path}/` },
    { name: 'empty query', target: `${path}?` },
    { name: 'semicolon parameter', target: `${path};x=1` },
    { name: 'fragment', target: `${path}#x` },
  ]
}

let platform: TestPlatform
let api: Awaited<ReturnType<typeof createTestApi>>
let probes: ReturnType<typeof instrument>
let port: number
let datasetId: string
let jobId: string

async function withKey(method: string, path: string, body?: object) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  return { status: res.status, body: (await res.json()) as any }
}

beforeAll(async () => {
  probes = instrument()
  // no embedding cache listens there: the cold-start and coverage routes fail fast with 503
  platform = await createTestPlatform('auth-matrix', { API_KEYS: KEY, EMBEDDING_CACHE_URL: `http://127.0.0.1:${await freePort()}` })
  try {
    api = await createTestApi(platform.env, 'auth-matrix-api')
    await api.app.listen({ port: 0, host: '127.0.0.1' })
  } finally {
    probes.stop()
  }
  port = (api.app.server.address() as AddressInfo).port
  const dataset = await withKey('POST', '/v1/datasets', { name: 'matrix', itemsTsv: 'A\tfirst\nB\tsecond\n', usersTsv: 'u1\tA B A B A\n' })
  expect(dataset.status).toBe(201)
  datasetId = dataset.body.id
  // no worker runs: the job stays queued, a real id for the /training-jobs/:id routes
  const job = await withKey('POST', '/v1/training-jobs', { datasetId, method: 'sasrec-id' })
  expect(job.status).toBe(202)
  jobId = job.body.id
})

afterAll(async () => {
  await api?.close()
  await platform?.close()
})

/** Real ids where the route names a resource we have, so a request that got through would succeed. */
function concretePath(url: string): string {
  const segments = url.split('/')
  return segments
    .map((segment, i) => {
      if (!segment.startsWith(':') && segment !== '*') return segment
      const resource = segments[i - 1]
      if (resource === 'datasets') return datasetId
      if (resource === 'training-jobs') return jobId
      if (resource === 'items') return 'A'
      return SOME_UUID
    })
    .join('/')
}

/** Bodies that would write rows if they reached the handler; any other route with a body gets {}. */
function bodyFor(route: Probed): string | undefined {
  if (!route.hasBody) return undefined
  const bodies: Record<string, object> = {
    'POST /v1/datasets': { name: 'intruder', itemsTsv: 'X\tintruder\n', usersTsv: 'ux\tX X X X X\n' },
    'POST /v1/training-jobs': { datasetId, method: 'sasrec-id' },
    'POST /v1/events': { datasetId, userId: 'intruder', itemId: 'A' },
    'POST /v1/items': { datasetId, id: 'intruder-item', title: 'intruder' },
    'POST /v1/recommendations': { datasetId, history: ['A'], k: 1 },
  }
  return JSON.stringify(bodies[`${route.method} ${route.url}`] ?? {})
}

async function snapshot() {
  const { prisma } = platform.db
  return {
    datasets: await prisma.dataset.count(),
    items: await prisma.item.count(),
    users: await prisma.datasetUser.count(),
    interactions: await prisma.interaction.count(),
    jobs: await prisma.trainingJob.findMany({ select: { id: true, status: true, cancelRequested: true }, orderBy: { id: 'asc' } }),
    modelVersions: await prisma.modelVersion.count(),
  }
}

/** Runs `tasks` a few at a time: enough to be quick, few enough not to crowd a 2-core machine. */
async function pooled<T>(tasks: (() => Promise<T>)[], width = 8): Promise<T[]> {
  const results: T[] = new Array(tasks.length)
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < tasks.length) {
        const i = next++
        results[i] = await tasks[i]()
      }
    }),
  )
  return results
}

const UNAUTHENTICATED: { name: string; headers: Record<string, string> }[] = [
  { name: 'no key', headers: {} },
  { name: 'wrong bearer key', headers: { authorization: `Bearer ${WRONG}` } },
  { name: 'wrong x-api-key', headers: { 'x-api-key': WRONG } },
  { name: 'right key, wrong scheme', headers: { authorization: `Basic ${KEY}` } },
]

describe('API keys on every /v1 route, however its URL is spelled', () => {
  it('enumerates the /v1 routes from the app', () => {
    const listed = new Set(probes.routes.map((r) => `${r.method} ${r.url}`))
    // a few routes the app is known to have: the enumeration is not silently empty
    for (const known of ['GET /v1/datasets', 'POST /v1/datasets', 'HEAD /v1/datasets/:id', 'POST /v1/training-jobs', 'POST /v1/training-jobs/:id/cancel', 'POST /v1/recommendations']) {
      expect(listed).toContain(known)
    }
    expect(probes.routes.length).toBeGreaterThanOrEqual(20)
  })

  it('lets nothing through without the right key, and everything the router matches with it', async () => {
    type Case = { route: Probed; spelling: string; target: string; body?: string }
    const cases: Case[] = probes.routes.flatMap((route) =>
      spellings(concretePath(route.url), port).map(({ name, target }) => ({ route, spelling: name, target, body: bodyFor(route) })),
    )
    let n = 0
    const before = await snapshot()

    const denied = await pooled(
      cases.flatMap((c) =>
        UNAUTHENTICATED.map((who) => async () => {
          const probe = `deny-${n++}`
          const res = await raw(port, c.route.method, c.target, { ...who.headers, 'x-probe': probe }, c.body)
          return { ...c, who: who.name, probe, res }
        }),
      ),
    )
    const afterDenied = await snapshot()

    const allowed = await pooled(
      cases.map((c) => async () => {
        const probe = `allow-${n++}`
        const res = await raw(port, c.route.method, c.target, { authorization: `Bearer ${KEY}`, 'x-probe': probe }, c.body)
        return { ...c, probe, res }
      }),
    )
    // spellings the router maps onto a /v1 route: these must answer 401 without the key
    const matched = new Set(allowed.filter((a) => probes.passed.has(a.probe)).map((a) => `${a.route.method} ${a.target}`))

    const problems: string[] = []
    for (const d of denied) {
      const where = `${d.route.method} ${d.target} (${d.route.url}, ${d.spelling}, ${d.who}) → ${d.res.status}`
      if (probes.passed.has(d.probe) || probes.handled.has(d.probe)) problems.push(`${where}: got past the key check`)
      else if (matched.has(`${d.route.method} ${d.target}`) && d.res.status !== 401) problems.push(`${where}: routed, so 401 expected`)
      // a HEAD answer has no body to tell the router's 404 from a handler's; the probes above do
      else if (d.res.status !== 401 && !(d.res.status === 404 && (d.route.method === 'HEAD' || d.res.body.includes('ROUTE_NOT_FOUND'))) && d.res.status !== 400) problems.push(`${where}: expected 401, or 404/400 from the router`)
      if (d.res.status === 401 && d.route.method !== 'HEAD' && !d.res.body.includes('UNAUTHORIZED')) problems.push(`${where}: 401 without the error body`)
    }
    for (const a of allowed) {
      const where = `${a.route.method} ${a.target} (${a.route.url}, ${a.spelling}, right key) → ${a.res.status}`
      if (a.res.status === 401) problems.push(`${where}: the right key was refused`)
      if (a.spelling === 'canonical' && !probes.handled.has(a.probe) && a.res.status !== 400) problems.push(`${where}: the canonical URL with the key did not reach the handler`)
    }
    expect(problems).toEqual([])
    // nothing was written (and the queued job was not cancelled) by any refused request
    expect(afterDenied).toEqual(before)
    // the matrix is not vacuous: the router does decode spellings, and they were refused
    expect([...matched].some((m) => m.includes('%761'))).toBe(true)
    expect([...matched].some((m) => m.includes('http://'))).toBe(true)
  })

  it('answers 404 for paths under /v1 that match no route, with or without a key', async () => {
    for (const target of ['/v1', '/v1/', '/v1/nothing-here', `/%761/nothing-here`, `/v1/datasets/${SOME_UUID}/nothing`]) {
      for (const headers of [{}, { authorization: `Bearer ${WRONG}` }, { authorization: `Bearer ${KEY}` }] as Record<string, string>[]) {
        const res = await raw(port, 'GET', target, headers)
        expect(res.status, `${target} ${JSON.stringify(headers)}`).toBe(404)
        expect(res.body).toContain('ROUTE_NOT_FOUND')
      }
    }
    // a method a route does not take is no route either
    expect((await raw(port, 'DELETE', '/v1/datasets', {})).status).toBe(404)
  })

  it('leaves health, metrics, the OpenAPI page and the dashboard open', async () => {
    for (const target of ['/healthz', '/metrics', '/docs/json', '/admin/', '/admin/vendor/chart.umd.js']) {
      const res = await raw(port, 'GET', target, {})
      expect(res.status, target).toBe(200)
    }
  })
})

describe('apiKeyAuth under relaxed router options', () => {
  // The API runs with Fastify's defaults; should anyone turn these on, a scope's check still
  // covers every spelling the router then accepts.
  let app: FastifyInstance
  let relaxedPort: number
  beforeAll(async () => {
    app = Fastify({ routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, caseSensitive: false } })
    await app.register(
      async (v1) => {
        await v1.register(apiKeyAuth({ keys: [KEY] }))
        v1.get('/things/:id', async () => ({ ok: true }))
        v1.post('/things', async () => ({ ok: true }))
      },
      { prefix: '/v1' },
    )
    app.get('/open', async () => ({ ok: true }))
    await app.listen({ port: 0, host: '127.0.0.1' })
    relaxedPort = (app.server.address() as AddressInfo).port
  })
  afterAll(async () => {
    await app?.close()
  })

  it('refuses every spelling the router matches', async () => {
    for (const [method, path] of [
      ['GET', '/v1/things/7'],
      ['POST', '/v1/things'],
    ] as const) {
      for (const { name, target } of spellings(path, relaxedPort)) {
        const body = method === 'POST' ? '{}' : undefined
        const keyed = await raw(relaxedPort, method, target, { authorization: `Bearer ${KEY}` }, body)
        const bare = await raw(relaxedPort, method, target, {}, body)
        expect(bare.status, `${method} ${target} (${name})`).not.toBe(200)
        if (keyed.status === 200) expect(bare.status, `${method} ${target} (${name})`).toBe(401)
      }
    }
    expect((await raw(relaxedPort, 'GET', '/open', {})).status).toBe(200)
  })
})
