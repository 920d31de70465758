// API replicas (issue 11): `services/api/src/main.ts` with API_REPLICAS=2 as its own process, as
// `npm start` runs it — a cluster primary and two replicas sharing one port, over a real database
// and Redis with two loadable model versions. Each response names its replica (x-replica,
// x-replica-pid); every request below opens its own connection, so the primary spreads them.
import fs from 'node:fs'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { initBackend } from '@iisan/model'
import { importDataset } from '@iisan/storage'
import { untrainedModelVersion } from './helpers/quick-api.ts'
import { createTestPlatform, exited, freePort, startService, stopService, until, type TestPlatform } from './helpers/platform.ts'

const API_ENTRY = 'services/api/src/main.ts'
const ITEMS = Array.from({ length: 30 }, (_, i) => ({ externalId: `I${i + 1}`, title: `Replica test item number ${i + 1}` }))
const USERS = Array.from({ length: 12 }, (_, u) => ({ externalId: `u${u + 1}`, itemExternalIds: Array.from({ length: 6 }, (_, k) => `I${((u * 7 + k * 3) % 30) + 1}`) }))

const REQUEST_TIMEOUT_MS = 10_000

type Json = any
interface Answer {
  status: number
  replica?: string
  pid?: number
  body: Json
}

let platform: TestPlatform
let api: ChildProcess
let base: string
let datasetId: string
let v1: string
let v2: string
/** the version the dataset's active model is meant to be */
let active: string
/** ITEM_INDEX_DIR of this API: where its replicas share their indexes */
let indexDir: string
/** recommendations answered 200 so far: what the aggregated counter must say */
let recommended = 0

/**
 * One request, by default on a connection of its own (no keep-alive: the cluster picks a replica
 * per connection, so consecutive requests go round the replicas).
 */
function call(method: string, path: string, body?: object, agent: http.Agent | false = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = http.request(`${base}${path}`, { method, agent, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (text += d))
      res.on('end', () => {
        let parsed: Json = text
        try {
          parsed = JSON.parse(text)
        } catch {}
        resolve({ status: res.statusCode!, replica: res.headers['x-replica'] as string | undefined, pid: Number(res.headers['x-replica-pid']), body: parsed })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    // a connection handed to a replica as it is killed may never be answered: clients time out
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('request timed out')))
    req.end(payload)
  })
}

async function recommend(agent?: http.Agent): Promise<Answer> {
  const res = await call('POST', '/v1/recommendations', { datasetId, history: ['I1', 'I2', 'I3'], k: 5 }, agent)
  if (res.status === 200) recommended++
  return res
}

/** `n` recommendations, one after another, each on its own connection. */
async function sample(n: number): Promise<Answer[]> {
  const out: Answer[] = []
  for (let i = 0; i < n; i++) out.push(await recommend())
  return out
}

/**
 * `concurrency` clients on keep-alive connections (spread over the replicas as they open) sending
 * recommendations back to back until stop(): the answers, and the requests that failed without
 * one (a connection reset).
 */
function load(concurrency: number) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency })
  const answers: Answer[] = []
  const failures: string[] = []
  let running = true
  const clients = Array.from({ length: concurrency }, async () => {
    while (running) {
      try {
        answers.push(await recommend(agent))
      } catch (e) {
        failures.push((e as Error).message)
      }
    }
  })
  return {
    answers,
    failures,
    async stop() {
      running = false
      await Promise.all(clients)
      agent.destroy()
      return { answers, failures }
    },
  }
}

const replicasOf = (answers: Answer[]) => new Set(answers.map((a) => a.replica))
const serverErrors = (answers: Answer[]) => answers.filter((a) => a.status >= 500).map((a) => `${a.status} ${JSON.stringify(a.body).slice(0, 200)}`)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  await initBackend({ prefer: 'wasm' })
  platform = await createTestPlatform('replicas', { TEXT_BACKBONE_DIR: 'none', IMAGE_BACKBONE_DIR: 'none' })
  const prisma = platform.db.prisma
  datasetId = (await importDataset(prisma, { name: 'replicas', items: ITEMS, users: USERS })).id
  v1 = (await untrainedModelVersion(prisma, datasetId, { activate: true })).id
  v2 = (await untrainedModelVersion(prisma, datasetId)).id
  active = v1
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  indexDir = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-replica-indexes-'))
  // every version served from approximate indexes (here 30 items), shared by the replicas through indexDir
  api = startService(API_ENTRY, { ...platform.env, API_REPLICAS: '2', PORT: String(port), HOST: '127.0.0.1', APPROXIMATE_INDEX_FROM: '1', ITEM_INDEX_DIR: indexDir })
  // up when both replicas answer
  await until(
    async () => {
      const seen = new Set<string | undefined>()
      for (let i = 0; i < 6; i++) seen.add((await call('GET', '/healthz').catch(() => undefined))?.replica)
      return seen.has('1') && seen.has('2') ? true : undefined
    },
    90_000,
    'both replicas',
  )
}, 150_000)

afterAll(async () => {
  await stopService(api, 'SIGKILL')
  await platform?.close()
  if (indexDir) fs.rmSync(indexDir, { recursive: true, force: true })
})

describe('API_REPLICAS=2', () => {
  it('answers from both replicas, each serving the active model', async () => {
    const answers = await sample(20)
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200))
    expect(replicasOf(answers)).toEqual(new Set(['1', '2']))
    expect(new Set(answers.map((a) => a.body.modelId))).toEqual(new Set([v1]))
    // two processes, neither of them the primary
    const pids = new Set(answers.map((a) => a.pid))
    expect(pids.size).toBe(2)
    expect(pids.has(api.pid!)).toBe(false)
  })

  it('builds each index once for both replicas: the other loads it from ITEM_INDEX_DIR', async () => {
    const indexed = /^iisan_serving_indexed_models(?:\{[^}]*\})? (\d+)$/m
    await until(async () => (Number(indexed.exec((await call('GET', '/metrics')).body)?.[1]) === 2 ? true : undefined), 30_000, 'both replicas to have v1 indexed')
    // one file per index (recommendations, similar items): a replica that built its own would have
    // saved a second file for each, under the hash of its own bytes
    const files = fs.readdirSync(indexDir)
    expect(files.filter((f) => f.endsWith('.usearch'))).toHaveLength(2)
    expect(files.filter((f) => !f.endsWith('.usearch'))).toEqual([])
    const similar = await call('GET', `/v1/items/I1/similar?datasetId=${datasetId}&k=5`)
    expect(similar.status).toBe(200)
  })

  it('switches model under 200 concurrent requests without a 5xx, and then every replica serves the new version', async () => {
    const traffic = load(200)
    await until(async () => (traffic.answers.length >= 200 ? true : undefined), 60_000, 'traffic')
    const activated = await call('POST', `/v1/model-versions/${v2}/activate`)
    expect(activated.status).toBe(200)
    active = v2
    // the other replica hears of it through Redis and loads v2; keep the load on meanwhile
    await until(
      async () => {
        const recent = traffic.answers.slice(-100)
        return recent.length === 100 && recent.every((a) => a.body.modelId === v2) ? true : undefined
      },
      30_000,
      'the load to be answered by the new version',
    )
    await sleep(500)
    const { answers, failures } = await traffic.stop()
    expect(failures).toEqual([])
    expect(serverErrors(answers)).toEqual([])
    expect(answers.map((a) => a.status).filter((s) => s !== 200)).toEqual([])
    expect(replicasOf(answers)).toEqual(new Set(['1', '2']))
    const models = new Set(answers.map((a) => a.body.modelId))
    expect(models).toEqual(new Set([v1, v2]))

    const after = await sample(30)
    expect(replicasOf(after)).toEqual(new Set(['1', '2']))
    expect(after.map((a) => [a.status, a.body.modelId])).toEqual(after.map(() => [200, v2]))
  }, 120_000)

  it('GET /metrics on any replica counts the requests of all of them, in sub-millisecond buckets', async () => {
    const series = /^http_requests_total\{method="POST",route="\/v1\/recommendations",status="200",service="api"\} (\d+)$/m
    const scrapes = await until(
      async () => {
        const got = await Promise.all(Array.from({ length: 6 }, () => call('GET', '/metrics')))
        return got.every((s) => Number(series.exec(s.body)?.[1]) === recommended) ? got : undefined
      },
      10_000,
      `every scrape to count ${recommended} recommendations`,
    )
    expect(replicasOf(scrapes)).toEqual(new Set(['1', '2']))
    const text: string = scrapes[0].body
    expect(text).toMatch(/http_request_duration_seconds_bucket\{le="0\.0005",method="POST",route="\/v1\/recommendations",service="api"\} \d+/)
    expect(text).toMatch(/http_request_duration_seconds_bucket\{le="0\.002",/)
    // one series per metric, not one per replica
    expect(text.match(/^process_resident_memory_bytes\{/gm)).toHaveLength(1)
  })

  it('replaces a replica killed outright, and keeps answering', async () => {
    const before = await sample(10)
    const victim = before.find((a) => a.replica === '2')!
    const survivor = before.find((a) => a.replica === '1')!
    const traffic = load(20)
    await until(async () => (traffic.answers.length >= 40 ? true : undefined), 30_000, 'traffic')
    process.kill(victim.pid!, 'SIGKILL')
    // replica 2 comes back as a new process
    const replaced = await until(
      async () => {
        const a = await recommend().catch(() => undefined)
        return a?.replica === '2' && a.pid !== victim.pid ? a : undefined
      },
      90_000,
      'replica 2 to be replaced',
    )
    const { answers, failures } = await traffic.stop()
    expect(serverErrors(answers)).toEqual([])
    // only requests on the killed replica's connections may have failed
    expect(failures.every((f) => /ECONNRESET|socket hang up|ECONNREFUSED|EPIPE|timed out/.test(f)), failures.join('; ')).toBe(true)
    expect(replaced.pid).not.toBe(victim.pid)

    const after = await sample(30)
    expect(after.map((a) => [a.status, a.body.modelId])).toEqual(after.map(() => [200, active]))
    expect(new Set(after.map((a) => `${a.replica}:${a.pid}`))).toEqual(new Set([`1:${survivor.pid}`, `2:${replaced.pid}`]))
  }, 150_000)

  it('SIGTERM to the primary stops every replica, and it exits 0', async () => {
    const pids = [...new Set((await sample(10)).map((a) => a.pid!))]
    expect(pids).toHaveLength(2)
    expect(await stopService(api, 'SIGTERM')).toBe(0)
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    expect(pids.filter(alive)).toEqual([])
  }, 60_000)
})

describe('a bad API_REPLICAS', () => {
  it.each(['0', '-1', 'abc', '1.5'])('%s: exits non-zero with one line naming the variable', async (value) => {
    const child = spawn(process.execPath, ['--import', 'tsx', API_ENTRY], { env: { ...process.env, ...platform.env, API_REPLICAS: value }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    child.stdout!.resume()
    expect(await exited(child)).toBe(1)
    const lines = stderr.split('\n').filter((l) => l.includes('API_REPLICAS'))
    expect(lines).toEqual([`  - API_REPLICAS=${JSON.stringify(value)}: must be a whole number of API processes, 1 or more (1 = a single process; default: one per core)`])
    expect(stderr).not.toMatch(/\n\s+at /)
  })
})
