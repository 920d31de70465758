// The embedding cache's service token and the client's tolerance of cache outages, on real
// processes: the service in-process (token checks over raw sockets) and as a child process that
// is SIGKILLed while a training load waits for its build, then restarted on the same port.
import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import request from 'supertest'
import { ConfigError, loadConfig } from '@iisan/config'
import { isLoopbackHost } from '@iisan/config/config'
import { initBackend } from '@iisan/model/backend'
import { importDataset } from '@iisan/storage'
import {
  EmbeddingCacheClientError,
  EmbeddingCacheRejected,
  EmbeddingCacheUnavailable,
  fetchCoverage,
  fetchDatasetStates,
  requestCacheBuild,
  type CacheEndpoint,
} from '@iisan/embedding-cache/client'
import { loadStatesFromCache } from '@iisan/pipeline'
import type { JobProgress } from '@iisan/pipeline'
import type { CacheServer } from '../services/embedding-cache/src/server.ts'
import { REPO_ROOT } from './helpers/db.ts'
import { CACHE_ENTRY, createTestApi, createTestCache, createTestPlatform, exited, freePort, startService, stopService, until, type TestPlatform } from './helpers/platform.ts'

const TOKEN = 'internal-token-for-tests-0123456789'
let platform: TestPlatform
let env: Record<string, string>
let cache: CacheServer
let cachePort: number
let cacheUrl: string
let datasetId: string
let itemIds: number[]
const children: ChildProcess[] = []

const N_ITEMS = 48

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('cacheauth', { TF_BACKEND: 'wasm' })
  env = platform.env
  // No queue worker here: the builds are the child process's, so its outage is a real one.
  cache = await createTestCache({ ...env, INTERNAL_TOKEN: TOKEN }, 'cache-auth-test', { worker: false })
  cacheUrl = await cache.app.listen({ port: 0, host: '127.0.0.1' })
  cachePort = (cache.app.server.address() as net.AddressInfo).port
  const ds = await importDataset(platform.db.prisma, {
    name: 'cache-auth',
    items: Array.from({ length: N_ITEMS }, (_, i) => ({ externalId: `I${i}`, title: `outage test item ${i}: a lab instrument with a descriptive title` })),
    users: [],
  })
  datasetId = ds.id
  itemIds = (await platform.db.prisma.item.findMany({ where: { datasetId }, orderBy: { id: 'asc' }, select: { id: true } })).map((r) => r.id)
})

afterAll(async () => {
  await Promise.all(children.map((c) => stopService(c, 'SIGKILL')))
  await cache?.close()
  await platform?.close()
})

/** One HTTP/1.1 exchange over a fresh socket, the request line exactly as given. */
function raw(port: number, method: string, target: string, headers: Record<string, string> = {}, body = ''): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let data = ''
    socket.setEncoding('utf8')
    socket.on('connect', () => {
      const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)]
      if (body || method === 'POST') lines.push(`Content-Length: ${Buffer.byteLength(body)}`)
      // not end(): a half-closed connection may be dropped before a slow answer is written
      socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`)
    })
    socket.on('data', (d) => (data += d))
    socket.on('error', reject)
    socket.on('close', () => {
      const split = data.indexOf('\r\n\r\n')
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? NaN)
      resolve({ status, headers: data.slice(0, split), body: data.slice(split + 4) })
    })
  })
}

/** A concrete path for a route template (`:id` → a random UUID). */
const concrete = (template: string) => template.replace(/:[A-Za-z]+/g, () => randomUUID())

/** Other spellings the router decodes to the same path: percent-encoded letters and digits. */
function spellings(path: string): string[] {
  const hex = (c: string) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`
  const segments = path.split('/')
  const firstEncoded = segments.map((s, i) => (i === 1 ? hex(s[0]) + s.slice(1) : s)).join('/')
  const allEncoded = segments.map((s) => (/^[0-9a-f-]{36}$/.test(s) ? s : s.replace(/[A-Za-z0-9]/g, hex))).join('/')
  return [firstEncoded, allEncoded, allEncoded.toUpperCase().replace(/%([0-9A-F]{2})/g, '%$1')]
}

const withQuery = (method: string, template: string, path: string) => (method !== 'POST' && template.endsWith('/states') ? `${path}?modality=text` : path)
const bodyFor = (method: string): { headers: Record<string, string>; body: string } => (method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: '{}' } : { headers: {}, body: '' })

describe('the service token', () => {
  it('is required on every route the cache registers but /healthz and /metrics, in any spelling of the path', async () => {
    const routes = cache.routes.filter((r) => r.method !== 'OPTIONS')
    // the app's own list: a route added later is checked without editing this test
    expect(routes.map((r) => `${r.method} ${r.url}`)).toEqual(
      expect.arrayContaining(['GET /healthz', 'GET /metrics', 'GET /v1/backbones', 'POST /v1/cache-builds', 'GET /v1/datasets/:id/states', 'POST /v1/items/encode', 'HEAD /v1/backbones']),
    )
    const open = new Set(['/healthz', '/metrics'])
    let checked = 0
    for (const { method, url } of routes) {
      const path = withQuery(method, url, concrete(url))
      const { headers, body } = bodyFor(method)
      const authorised = await raw(cachePort, method, path, { ...headers, authorization: `Bearer ${TOKEN}` }, body)
      expect(authorised.status, `${method} ${path} with the token`).toBeGreaterThanOrEqual(200)
      expect(authorised.status, `${method} ${path} with the token`).not.toBe(401)
      const targets = [path, ...spellings(path), `http://127.0.0.1:${cachePort}${path}`, `http://cache.example${path}`]
      for (const target of targets) {
        const none = await raw(cachePort, method, target, headers, body)
        const wrong = await raw(cachePort, method, target, { ...headers, authorization: `Bearer ${TOKEN}x` }, body)
        const otherScheme = await raw(cachePort, method, target, { ...headers, authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` }, body)
        if (open.has(url)) {
          expect(none.status, `${method} ${target}`).toBe(200)
          continue
        }
        for (const [what, res] of [['no token', none], ['a wrong token', wrong], ['a Basic header', otherScheme]] as const) {
          expect(res.status, `${method} ${target} with ${what}`).toBe(401)
          if (method !== 'HEAD') expect(JSON.parse(res.body), `${method} ${target} with ${what}`).toEqual({ error: { code: 'UNAUTHORIZED', message: expect.any(String) } })
          expect(res.headers).toMatch(/www-authenticate: Bearer/i)
        }
        // the router matched the route: with the token the odd spelling answers as the plain one
        const matched = await raw(cachePort, method, target, { ...headers, authorization: `Bearer ${TOKEN}` }, body)
        expect(matched.status, `${method} ${target} with the token`).toBe(authorised.status)
        checked++
      }
    }
    expect(checked).toBeGreaterThanOrEqual(6 * 5)
  })

  it('guards paths no route matches (404 only with the token), and leaves health and metrics open', async () => {
    expect((await raw(cachePort, 'GET', '/v1%2fbackbones')).status).toBe(401)
    expect((await raw(cachePort, 'GET', '/nothing-here')).status).toBe(401)
    expect((await raw(cachePort, 'GET', '/nothing-here', { authorization: `Bearer ${TOKEN}` })).status).toBe(404)
    expect((await raw(cachePort, 'GET', '/healthz')).status).toBe(200)
    expect((await raw(cachePort, 'GET', '/%68ealthz')).status).toBe(200)
    const metrics = await raw(cachePort, 'GET', '/metrics')
    expect(metrics.status).toBe(200)
    expect(metrics.body).toMatch(/http_requests_total/)
  })

  it('is sent by the client, and its absence is a final EmbeddingCacheRejected', async () => {
    const endpoint: CacheEndpoint = { url: cacheUrl, token: TOKEN }
    expect((await fetchCoverage(endpoint, datasetId)).numItems).toBe(N_ITEMS)
    for (const bad of [cacheUrl, { url: cacheUrl }, { url: cacheUrl, token: `${TOKEN}x` }]) {
      const err = await fetchCoverage(bad, datasetId).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(EmbeddingCacheRejected)
      expect(err).toBeInstanceOf(EmbeddingCacheClientError)
      expect(err).toMatchObject({ status: 401, code: 'UNAUTHORIZED', retryable: false })
    }
  })

  it('is sent by the API (coverage, cold start); an API without it gets the cache’s 401 as a 502', async () => {
    const api = await createTestApi({ ...env, EMBEDDING_CACHE_URL: cacheUrl, INTERNAL_TOKEN: TOKEN }, 'cache-auth-api')
    const tokenless = await createTestApi({ ...env, EMBEDDING_CACHE_URL: cacheUrl }, 'cache-auth-api-tokenless')
    try {
      await Promise.all([api.app.ready(), tokenless.app.ready()])
      const http = request(api.app.server)
      const coverage = (await http.get(`/v1/datasets/${datasetId}/coverage`).expect(200)).body
      expect(coverage.numItems).toBe(N_ITEMS)
      const added = (await http.post('/v1/items').send({ datasetId, id: 'COLD-1', title: 'a cold-start item for the token test' }).expect(201)).body
      expect(added.states.text).toBe('done')
      const refused = await request(tokenless.app.server).get(`/v1/datasets/${datasetId}/coverage`).expect(502)
      expect(refused.body.error.message).toMatch(/token|UNAUTHORIZED|401/i)
    } finally {
      await api.close()
      await tokenless.close()
      // the cold-start item is not part of the outage tests below
      await platform.db.prisma.item.deleteMany({ where: { datasetId, externalId: 'COLD-1' } })
      await platform.db.prisma.dataset.update({ where: { id: datasetId }, data: { numItems: N_ITEMS } })
    }
  })
})

describe('configuration', () => {
  it('refuses a non-loopback cache bind address without INTERNAL_TOKEN, naming the variable', () => {
    for (const host of ['0.0.0.0', '::', '10.1.2.3', '192.168.0.10', 'cache.internal']) {
      let err: unknown
      try {
        loadConfig({ EMBEDDING_CACHE_HOST: host })
      } catch (e) {
        err = e
      }
      expect(err, host).toBeInstanceOf(ConfigError)
      expect((err as ConfigError).issues.map((i) => i.variable)).toEqual(['INTERNAL_TOKEN'])
      expect((err as ConfigError).message).toMatch(/INTERNAL_TOKEN/)
      expect((err as ConfigError).message).toContain(`EMBEDDING_CACHE_HOST=${host}`)
      expect(loadConfig({ EMBEDDING_CACHE_HOST: host, INTERNAL_TOKEN: TOKEN })).toMatchObject({ embeddingCacheHost: host, internalToken: TOKEN })
    }
  })

  it('binds the cache to loopback by default (the API keeps HOST), with or without a token', () => {
    expect(loadConfig({})).toMatchObject({ host: '0.0.0.0', embeddingCacheHost: '127.0.0.1' })
    expect(loadConfig({}).internalToken).toBeUndefined()
    for (const host of ['127.0.0.1', '127.0.0.2', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) {
      expect(isLoopbackHost(host), host).toBe(true)
      expect(loadConfig({ EMBEDDING_CACHE_HOST: host }).embeddingCacheHost).toBe(host)
    }
    for (const host of ['0.0.0.0', '::', '128.0.0.1', '127.0.0.256', 'localhost.example', '::ffff:10.0.0.1']) expect(isLoopbackHost(host), host).toBe(false)
    expect(loadConfig({ HOST: '0.0.0.0', INTERNAL_TOKEN: TOKEN }).internalToken).toBe(TOKEN)
  })

  it('rejects a short or blank-containing INTERNAL_TOKEN without printing it', () => {
    for (const token of ['short', 'has a space in it somewhere']) {
      const run = () => loadConfig({ INTERNAL_TOKEN: token })
      expect(run).toThrow(ConfigError)
      expect(run).toThrow(/INTERNAL_TOKEN="\*\*\*"/)
    }
  })

  it('the service exits 1 with the message when it would bind 0.0.0.0 without a token', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', CACHE_ENTRY], { cwd: REPO_ROOT, env: { ...process.env, ...env, EMBEDDING_CACHE_HOST: '0.0.0.0', INTERNAL_TOKEN: '' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    child.stdout!.resume()
    expect(await exited(child)).toBe(1)
    expect(stderr).toMatch(/INTERNAL_TOKEN/)
    expect(stderr).not.toMatch(/\n\s+at /)
  })
})

describe('cache outages while a training load waits', () => {
  const data = () => ({ itemKeys: ['', ...itemIds.map(String)], numItems: itemIds.length })
  const childEnv = (port: number) => ({
    ...env,
    INTERNAL_TOKEN: TOKEN,
    EMBEDDING_CACHE_PORT: String(port),
    EMBEDDING_CACHE_CHUNK_SIZE: '8',
    EMBEDDING_CACHE_GROUP_SIZE: '4',
    // slow enough to be killed mid-build; a dead replica's chunk is handed out again in seconds
    EMBEDDING_CACHE_THROTTLE_MS: '250',
    EMBEDDING_CACHE_LOCK_MS: '3000',
    EMBEDDING_CACHE_STALLED_MS: '1000',
  })
  async function startCache(port: number): Promise<ChildProcess> {
    const child = startService(CACHE_ENTRY, childEnv(port))
    children.push(child)
    await until(
      async () => {
        if (child.exitCode !== null) throw new Error(`the cache exited ${child.exitCode}`)
        try {
          return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok ? true : undefined
        } catch {
          return undefined
        }
      },
      90_000,
      `the embedding cache on port ${port}`,
    )
    return child
  }

  it('a SIGKILLed cache restarted seconds later: the load completes with every item’s states', async () => {
    const port = await freePort()
    const endpoint = { url: `http://127.0.0.1:${port}`, token: TOKEN }
    let first = await startCache(port)
    const reports: (JobProgress & { message?: string })[] = []
    let building: () => void
    const buildStarted = new Promise<void>((r) => (building = r))
    const load = loadStatesFromCache(
      endpoint,
      datasetId,
      data(),
      async (p) => {
        reports.push(p)
        if (p.phase === 'caching' && (p.cached ?? 0) > 0 && (p.cached ?? 0) < (p.total ?? 0)) building()
      },
      { pollMs: 200, outageBudgetMs: 90_000, retryInitialMs: 250, retryMaxMs: 2000 },
    )
    load.catch(() => undefined)
    await Promise.race([buildStarted, load.then(() => Promise.reject(new Error('the build finished before the cache could be killed')))])
    expect(await stopService(first, 'SIGKILL')).toBeNull()
    await until(async () => (reports.some((r) => /unreachable/.test(r.message ?? '')) ? true : undefined), 15_000, 'an "unreachable" progress report')
    await new Promise((r) => setTimeout(r, 3000))
    // killed mid-build: what is left is the restarted cache's to do
    expect(await platform.db.prisma.hiddenState.count()).toBeLessThan(N_ITEMS)
    first = await startCache(port)

    const loaded = await load
    const text = loaded.states.text
    expect(text.rowOf.length).toBe(N_ITEMS + 1)
    for (let k = 1; k <= N_ITEMS; k++) expect(text.rowOf[k], `item ${k}`).toBeGreaterThanOrEqual(0)
    expect(new Set(Array.from(text.rowOf.subarray(1))).size).toBe(N_ITEMS)
    expect(loaded.backbones.text).toMatch(/^[0-9a-f]{64}$/)
    const waiting = reports.filter((r) => r.message)
    expect(waiting[0].message).toMatch(/embedding cache unreachable \((ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET)[^)]*\)/)
    expect(reports.at(-1)).toMatchObject({ phase: 'caching', cached: N_ITEMS, total: N_ITEMS })
    expect(reports.at(-1)!.message).toBeUndefined()
    expect((await fetchCoverage(endpoint, datasetId)).backbones.find((b) => b.modality === 'text')).toMatchObject({ done: N_ITEMS, pending: 0 })
    await stopService(first, 'SIGTERM')
  })

  it('a cache down for longer than the outage budget: EmbeddingCacheUnavailable (retryable), after about the budget', async () => {
    const endpoint = { url: `http://127.0.0.1:${await freePort()}`, token: TOKEN }
    const messages: string[] = []
    const started = Date.now()
    const report = async (p: JobProgress & { message?: string }) => {
      if (p.message) messages.push(p.message)
    }
    const err = await loadStatesFromCache(endpoint, datasetId, data(), report, {
      outageBudgetMs: 2500,
      retryInitialMs: 200,
      retryMaxMs: 800,
    }).catch((e: unknown) => e)
    const seconds = (Date.now() - started) / 1000
    expect(err).toBeInstanceOf(EmbeddingCacheUnavailable)
    expect(err).toMatchObject({ status: null, code: 'ECONNREFUSED', retryable: true })
    expect((err as Error).message).toMatch(/\(starting the cache build; unreachable for \d+ s, the outage budget is 3 s\)/)
    expect(seconds).toBeGreaterThanOrEqual(2.4)
    expect(seconds).toBeLessThan(8)
    // 200, 400, 800, 800 … ms: a handful of attempts, each reported
    expect(messages.length).toBeGreaterThanOrEqual(3)
    expect(messages.every((m) => /unreachable \(ECONNREFUSED\) while starting the cache build/.test(m))).toBe(true)
  })

  it('a 4xx answer (unknown dataset, bad token) is a final EmbeddingCacheRejected at once, without retries', async () => {
    const endpoint = { url: cacheUrl, token: TOKEN }
    const reports: JobProgress[] = []
    for (const [target, dataset, status, code] of [
      [endpoint, randomUUID(), 404, 'NOT_FOUND'],
      [{ url: cacheUrl, token: `${TOKEN}x` }, datasetId, 401, 'UNAUTHORIZED'],
    ] as const) {
      const started = Date.now()
      const err = await loadStatesFromCache(target, dataset, data(), async (p) => void reports.push(p), { outageBudgetMs: 60_000 }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(EmbeddingCacheRejected)
      expect(err).toMatchObject({ status, code, retryable: false })
      expect(Date.now() - started).toBeLessThan(2000)
    }
    expect(reports).toEqual([])
    await expect(fetchDatasetStates(endpoint, randomUUID(), 'text')).rejects.toBeInstanceOf(EmbeddingCacheRejected)
    await expect(requestCacheBuild(endpoint, randomUUID())).rejects.toMatchObject({ status: 404, code: 'NOT_FOUND' })
  })

  it('a state stream cut off midway is EmbeddingCacheUnavailable, and the load fetches it again', async () => {
    // a TCP proxy in front of the real cache that resets the connection of the first state
    // stream(s) after part of the body
    let cutsLeft = 0
    const sockets = new Set<net.Socket>()
    const proxy = net.createServer((client) => {
      const upstream = net.connect(cachePort, '127.0.0.1')
      sockets.add(client).add(upstream)
      let cutting = false
      let forwarded = 0
      client.on('data', (d) => {
        if (cutsLeft > 0 && d.toString('latin1').includes('/states?')) {
          cutsLeft--
          cutting = true
          forwarded = 0
        }
        upstream.write(d)
      })
      upstream.on('data', (d) => {
        if (!cutting) return void client.write(d)
        const room = 2000 - forwarded
        if (room > 0) client.write(d.subarray(0, room))
        forwarded += d.length
        if (forwarded >= 2000) {
          upstream.destroy()
          setTimeout(() => client.resetAndDestroy(), 50)
        }
      })
      const close = () => {
        client.destroy()
        upstream.destroy()
      }
      client.on('error', close)
      upstream.on('error', close)
      upstream.on('end', () => client.end())
      client.on('end', () => upstream.end())
    })
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r))
    const endpoint = { url: `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`, token: TOKEN }
    try {
      // the in-process cache serves the states the child built above
      const whole = (await fetchDatasetStates({ url: cacheUrl, token: TOKEN }, datasetId, 'text'))!
      expect(whole.itemIds).toHaveLength(N_ITEMS)
      cutsLeft = 1
      const err = await fetchDatasetStates(endpoint, datasetId, 'text').catch((e: unknown) => e)
      expect(err).toBeInstanceOf(EmbeddingCacheUnavailable)
      expect((err as Error).message).toMatch(/state stream cut off/)

      cutsLeft = 1
      const messages: string[] = []
      const report = async (p: JobProgress & { message?: string }) => {
        if (p.message) messages.push(p.message)
      }
      const loaded = await loadStatesFromCache(endpoint, datasetId, data(), report, { retryInitialMs: 100 })
      expect(messages).toEqual([expect.stringMatching(/unreachable .* while streaming the text states/)])
      for (let k = 1; k <= N_ITEMS; k++) expect(loaded.states.text.rowOf[k]).toBeGreaterThanOrEqual(0)
    } finally {
      // the client's keep-alive connections would hold close() for the server's idle timeout
      for (const socket of sockets) socket.destroy()
      await new Promise((r) => proxy.close(r))
    }
  })
})
