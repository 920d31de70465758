/**
 * Scenario 5 — the API-key matrix. The API runs with API_KEYS; every /v1 route of its OpenAPI
 * document (/docs/json, plus the HEAD twin Fastify adds to every GET) × some thirty spellings of
 * its URL (percent-encoded letters and digits, absolute-form request lines, double slashes, dot
 * segments, upper case, trailing slashes, …) × {no key, wrong key, right key}, each sent over its
 * own raw socket so the request line reaches the server byte for byte.
 *
 * Counted: requests without a valid key answered anything but 401/404/400 (must be 0), those
 * whose 400/404 came from a handler rather than the router (must be 0), spellings the router
 * maps onto a route that were not refused with 401, requests with the key refused with 401
 * (must be 0), and whether any refused request changed the database.
 */
import { rawRequest, pooled, type Json, type RawResponse } from './http.ts'
import { progress, type Fleet } from './infra.ts'
import { createPlatform, importSample, printTable, waitForJob } from './platform.ts'

const KEY = 'faults-bench-key-0123456789abcdef'
const WRONG = 'faults-bench-wrong-0123456789abcd'
const SOME_UUID = '00000000-0000-4000-8000-000000000000'

const pct = (c: string) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`

/** Ways to write `path` (/v1/…) that a router might still match, or nearly match. */
export function spellings(path: string, port: number): { name: string; target: string }[] {
  const [pathname, query] = path.split('?') as [string, string | undefined]
  const q = query ? `?${query}` : ''
  const rest = pathname.slice('/v1'.length)
  const segments = rest.split('/').slice(1)
  const last = segments.length - 1
  const host = `127.0.0.1:${port}`
  const encodeAll = (s: string) => [...s].map((c) => (c === '/' ? c : pct(c))).join('')
  return [
    { name: 'canonical', target: `${pathname}${q}` },
    { name: 'v percent-encoded', target: `/%761${rest}${q}` },
    { name: '1 percent-encoded', target: `/v%31${rest}${q}` },
    { name: 'v1 percent-encoded', target: `/%76%31${rest}${q}` },
    { name: 'v1 percent-encoded, lower-case hex', target: `/%76%31${rest}`.toLowerCase() + q },
    { name: 'V percent-encoded', target: `/%561${rest}${q}` },
    { name: 'encoded letter in the next segment', target: `/v1/${pct(segments[0][0])}${segments[0].slice(1)}${rest.slice(segments[0].length + 1)}${q}` },
    { name: 'encoded letter in the last segment', target: `/v1/${[...segments.slice(0, last), segments[last].slice(0, -1) + pct(segments[last].at(-1)!)].join('/')}${q}` },
    { name: 'every character encoded', target: `${encodeAll(pathname)}${q}` },
    { name: 'encoded slash after v1', target: `/v1%2F${rest.slice(1)}${q}` },
    { name: 'absolute form', target: `http://${host}${pathname}${q}` },
    { name: 'absolute form, other host', target: `http://api.example.test${pathname}${q}` },
    { name: 'absolute form, https', target: `https://${host}${pathname}${q}` },
    { name: 'absolute form, encoded', target: `http://${host}/%761${rest}${q}` },
    { name: 'absolute form, upper-case scheme', target: `HTTP://${host}${pathname}${q}` },
    { name: 'leading double slash', target: `/${pathname}${q}` },
    { name: 'double slash after v1', target: `/v1/${rest}${q}` },
    { name: 'trailing double slash', target: `${pathname}//${q}` },
    { name: 'dot-dot segment', target: `/x/..${pathname}${q}` },
    { name: 'encoded dot-dot segment', target: `/x/%2E%2E${pathname}${q}` },
    { name: 'dot segment', target: `/.${pathname}${q}` },
    { name: 'dot segment after v1', target: `/v1/.${rest}${q}` },
    { name: 'dot-dot after v1', target: `/v1/x/..${rest}${q}` },
    { name: 'upper-case V1', target: `/V1${rest}${q}` },
    { name: 'upper-case path', target: `${pathname.toUpperCase()}${q}` },
    { name: 'trailing slash', target: `${pathname}/${q}` },
    { name: 'empty query', target: `${pathname}?${query ?? ''}` },
    { name: 'semicolon parameter', target: `${pathname};x=1${q}` },
    { name: 'fragment', target: `${pathname}${q}#x` },
    { name: 'backslash after v1', target: `/v1\\${rest.slice(1)}${q}` },
  ]
}

interface Route {
  method: string
  /** as documented, e.g. /v1/datasets/{id} */
  url: string
}

const WHO = [
  { name: 'no key', headers: {} as Record<string, string>, valid: false },
  { name: 'wrong key (Bearer)', headers: { authorization: `Bearer ${WRONG}` }, valid: false },
  { name: 'wrong key (X-API-Key)', headers: { 'x-api-key': WRONG }, valid: false },
  { name: 'right key, wrong scheme', headers: { authorization: `Basic ${KEY}` }, valid: false },
  { name: 'right key (Bearer)', headers: { authorization: `Bearer ${KEY}` }, valid: true },
  { name: 'right key (X-API-Key)', headers: { 'x-api-key': KEY }, valid: true },
]

/**
 * Whether a 400/404 came from past the key check (a handler, its validation, its storage errors)
 * rather than from the router: the router's 404 is ROUTE_NOT_FOUND and its 400s are Fastify's own
 * (FST_ERR_…, or BAD_REQUEST for a malformed URL).
 */
const fromHandler = (status: number, code: string | undefined) =>
  (status === 400 || status === 404) && code !== undefined && code !== 'ROUTE_NOT_FOUND' && code !== 'BAD_REQUEST' && !code.startsWith('FST_')

export async function authScenario(fleet: Fleet) {
  const p = await createPlatform(fleet, 'auth', { apiKey: KEY })
  const t0 = Date.now()
  try {
    // the cache too, so that POST /v1/items and the coverage route answer as in production
    // a model to point the model routes at, and a queued job for the job routes (no worker then)
    const [api, , worker] = await Promise.all([p.startApi(), p.startCache(), p.startWorker()])
    const port = api.port
    const dataset = await importSample(p.client, 'auth', 60)
    // what DELETE /v1/datasets/:id deletes when the key lets it: not the dataset the other routes use
    const victim = await importSample(p.client, 'auth-victim', 12)
    const trained = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id', config: { maxEpochs: 1, batchSize: 16 } }, 202)
    const done = await waitForJob(p.client, trained.id, 240_000, 'auth model')
    if (done.status !== 'completed') throw new Error(`the auth scenario's model did not train: ${done.error}`)
    await p.fleet.stop(worker)
    const job = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id' }, 202)
    const victimJob = await p.client.must('POST', '/v1/training-jobs', { datasetId: dataset.id, method: 'sasrec-id' }, 202)
    const items = await p.client.must('GET', `/v1/datasets/${dataset.id}/items?limit=2`, undefined, 200)
    const itemA = items.items[0].id as string
    const itemB = items.items[1].id as string

    const doc = await fetch(`http://127.0.0.1:${port}/docs/json`).then((r) => r.json() as Promise<Json>)
    const routes: Route[] = []
    for (const [url, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      if (!url.startsWith('/v1/') && url !== '/v1') continue
      for (const method of Object.keys(ops)) {
        if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue
        routes.push({ method: method.toUpperCase(), url })
        // Fastify answers HEAD for every GET route (not in the document)
        if (method === 'get') routes.push({ method: 'HEAD', url })
      }
    }
    if (routes.length < 20) throw new Error(`only ${routes.length} /v1 routes in /docs/json`)
    progress(`auth: ${routes.length} route × method pairs from /docs/json`)

    const concrete = (route: Route): string => {
      const segments = route.url.split('/')
      const path = segments
        .map((segment, i) => {
          if (!segment.startsWith('{')) return segment
          const resource = segments[i - 1]
          if (resource === 'datasets') return route.method === 'DELETE' ? victim.id : dataset.id
          if (resource === 'training-jobs') return route.method === 'DELETE' ? victimJob.id : job.id
          if (resource === 'model-versions') return done.modelVersionId
          if (resource === 'items') return itemA
          return SOME_UUID
        })
        .join('/')
      const query: Record<string, string> = {
        '/v1/model-versions/compare': `ids=${done.modelVersionId},${SOME_UUID}`,
        '/v1/items/{id}/similar': `datasetId=${dataset.id}&k=3`,
        '/v1/datasets/{id}/items': 'q=a&limit=5',
      }
      return query[route.url] ? `${path}?${query[route.url]}` : path
    }
    const bodyFor = (route: Route): string | undefined => {
      if (route.method !== 'POST' && route.method !== 'PUT' && route.method !== 'PATCH') return undefined
      const bodies: Record<string, object> = {
        'POST /v1/datasets': { name: 'intruder', itemsTsv: 'X\tintruder\n', usersTsv: 'ux\tX X X X X\n' },
        'POST /v1/training-jobs': { datasetId: dataset.id, method: 'sasrec-id' },
        'POST /v1/events': { datasetId: dataset.id, userId: 'intruder', itemId: itemA },
        'POST /v1/items': { datasetId: dataset.id, id: 'intruder-item', title: 'intruder' },
        'POST /v1/recommendations': { datasetId: dataset.id, history: [itemA, itemB], k: 3 },
      }
      return JSON.stringify(bodies[`${route.method} ${route.url}`] ?? {})
    }
    const send = (method: string, target: string, headers: Record<string, string>, body?: string): Promise<RawResponse> => {
      const lines = [`${method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)]
      if (body !== undefined) lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`)
      return rawRequest(port, lines.join('\r\n'), body ?? '', 20_000)
    }

    type Case = { route: Route; spelling: string; target: string; body?: string }
    const cases: Case[] = routes.flatMap((route) => spellings(concrete(route), port).map((s) => ({ route, spelling: s.name, target: s.target, body: bodyFor(route) })))

    const snapshot = async () => ({
      datasets: await p.prisma.dataset.count(),
      items: await p.prisma.item.count(),
      users: await p.prisma.datasetUser.count(),
      interactions: await p.prisma.interaction.count(),
      jobs: JSON.stringify(await p.prisma.trainingJob.findMany({ select: { id: true, status: true, cancelRequested: true }, orderBy: { id: 'asc' } })),
      active: JSON.stringify(await p.prisma.modelVersion.findMany({ select: { id: true, isActive: true }, orderBy: { id: 'asc' } })),
    })
    const before = await snapshot()
    const denied = await pooled(
      cases.flatMap((c) => WHO.filter((w) => !w.valid).map((who) => async () => ({ ...c, who: who.name, res: await send(c.route.method, c.target, who.headers, c.body) }))),
      8,
    )
    const afterDenied = await snapshot()
    const allowed = await pooled(
      cases.flatMap((c) => WHO.filter((w) => w.valid).map((who) => async () => ({ ...c, who: who.name, res: await send(c.route.method, c.target, who.headers, c.body) }))),
      8,
    )

    const codeOf = (r: RawResponse) => {
      try {
        return JSON.parse(r.body)?.error?.code as string | undefined
      } catch {
        return undefined
      }
    }
    // spellings that reach a route with the key: these must be refused with 401 without it
    // (a HEAD answer has no body: only a 2xx tells that one was routed)
    const reachedRoute = (a: { route: Route; res: RawResponse }) => {
      if (a.route.method === 'HEAD') return a.res.status >= 200 && a.res.status < 300
      if (a.res.status === 0 || (a.res.status === 404 && codeOf(a.res) === 'ROUTE_NOT_FOUND')) return false
      return a.res.status !== 400 || fromHandler(400, codeOf(a.res))
    }
    const routed = new Set(allowed.filter(reachedRoute).map((a) => `${a.route.method} ${a.target}`))
    const problems: string[] = []
    let deniedOther = 0
    let deniedHandler = 0
    let deniedRoutedNot401 = 0
    for (const d of denied) {
      const where = `${d.route.method} ${d.target} (${d.route.url}, ${d.spelling}, ${d.who}) → ${d.res.status} ${codeOf(d.res) ?? ''}`
      if (![400, 401, 404].includes(d.res.status)) {
        deniedOther++
        problems.push(`${where}: expected 401, or 404/400 from the router`)
      } else if (fromHandler(d.res.status, codeOf(d.res))) {
        deniedHandler++
        problems.push(`${where}: answered by the handler`)
      } else if (d.res.status !== 401 && routed.has(`${d.route.method} ${d.target}`)) {
        deniedRoutedNot401++
        problems.push(`${where}: routed with the key, so 401 expected without`)
      }
    }
    const allowed401 = allowed.filter((a) => a.res.status === 401)
    for (const a of allowed401) problems.push(`${a.route.method} ${a.target} (${a.spelling}, ${a.who}) → 401: the right key was refused`)
    const canonicalMissed = allowed.filter((a) => a.spelling === 'canonical' && (a.res.status === 404 && codeOf(a.res) === 'ROUTE_NOT_FOUND'))
    for (const a of canonicalMissed) problems.push(`${a.route.method} ${a.target} (canonical, ${a.who}) → ROUTE_NOT_FOUND: the documented route does not exist`)
    const statuses = (xs: { res: RawResponse }[]) => {
      const out: Record<string, number> = {}
      for (const x of xs) out[x.res.status ? `HTTP ${x.res.status}` : 'no answer'] = (out[x.res.status ? `HTTP ${x.res.status}` : 'no answer'] ?? 0) + 1
      return out
    }
    const dbChanged = JSON.stringify(before) !== JSON.stringify(afterDenied)
    const answers = (xs: typeof denied) => {
      const out = new Map<string, number>()
      for (const x of xs) {
        const k = `${x.res.status} ${x.route.method === 'HEAD' ? '(HEAD)' : (codeOf(x.res) ?? '')}`
        out.set(k, (out.get(k) ?? 0) + 1)
      }
      return [...out].sort((a, b) => b[1] - a[1]).map(([answer, count]) => ({ answer, count }))
    }
    const summary = {
      routes: routes.length,
      spellings: spellings('/v1/x/y', port).length,
      requests: denied.length + allowed.length,
      withoutValidKey: denied.length,
      'no-key answered other than 401/404/400': deniedOther,
      'no-key answered by a handler': deniedHandler,
      'no-key routed spellings not 401': deniedRoutedNot401,
      'refused requests that changed the database': dbChanged ? 1 : 0,
      withKey: allowed.length,
      'with key refused 401': allowed401.length,
      'spellings routed with the key': routed.size,
      'of them percent-encoded /%761': [...routed].filter((r) => r.includes('%761')).length,
      'of them absolute-form': [...routed].filter((r) => /^[A-Z]+ https?:\/\//i.test(r)).length,
      seconds: (Date.now() - t0) / 1000,
    }
    printTable('Scenario 5 — API keys × routes × spellings: status codes', [
      { requests: 'without a valid key', ...statuses(denied) },
      { requests: 'with the key', ...statuses(allowed) },
    ])
    const perRoute = routes.map((r) => {
      const mine = (xs: typeof denied) => xs.filter((x) => x.route === r)
      const canonical = allowed.find((a) => a.route === r && a.spelling === 'canonical' && a.who === WHO[4].name)
      return {
        route: `${r.method} ${r.url}`,
        'canonical, key': canonical ? `${canonical.res.status} ${codeOf(canonical.res) ?? ''}`.trim() : '',
        'spellings routed': new Set(mine(allowed).filter(reachedRoute).map((a) => a.target)).size,
        'no key: 401': mine(denied).filter((d) => d.res.status === 401).length,
        'no key: 404/400': mine(denied).filter((d) => d.res.status === 404 || d.res.status === 400).length,
        'no key: other': mine(denied).filter((d) => ![400, 401, 404].includes(d.res.status)).length,
        'key: 401': mine(allowed).filter((a) => a.res.status === 401).length,
      }
    })
    printTable('Scenario 5 — answers without a valid key', answers(denied))
    printTable('Scenario 5 — per route', perRoute)
    printTable('Scenario 5 — summary', [summary])
    if (problems.length) printTable('Scenario 5 — problems (first 30)', problems.slice(0, 30).map((problem) => ({ problem })))
    return {
      ok: deniedOther === 0 && deniedHandler === 0 && deniedRoutedNot401 === 0 && allowed401.length === 0 && !dbChanged && canonicalMissed.length === 0,
      summary,
      statusCodes: { withoutValidKey: statuses(denied), withKey: statuses(allowed) },
      answersWithoutValidKey: answers(denied),
      answersWithKey: answers(allowed),
      perRoute,
      problems: problems.slice(0, 200),
      dbBefore: before,
      dbAfterRefused: afterDenied,
    }
  } finally {
    await p.close()
  }
}
