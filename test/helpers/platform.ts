/**
 * End-to-end tests of the platform: a throwaway database, Redis prefix and temp folder with the
 * environment the services read; the services in-process or as child processes (as `npm start`
 * runs them); polling for what they do in the background.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import request from 'supertest'
import { createLogger, loadConfig } from '@iisan/config'
import { createRedisConnection, type Redis } from '@iisan/queue'
import { createApiServer } from '../../services/api/src/server.ts'
import { createCacheServer, type CacheServerOptions } from '../../services/embedding-cache/src/server.ts'
import { REPO_ROOT, cleanupRedisPrefix, createTestDatabase, testRedisPrefix, testRedisUrl, type TestDatabase } from './db.ts'
import { freePort } from '../../bench/lib/cli.ts'

export { freePort }

export const WORKER_ENTRY = 'services/worker/src/main.ts'
export const CACHE_ENTRY = 'services/embedding-cache/src/main.ts'

/** Calls `probe` until it returns something other than undefined; throws after `timeoutMs`. */
export async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const value = await probe()
    if (value !== undefined) return value
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`timed out waiting for ${what}`)
}

export interface TestPlatform {
  db: TestDatabase
  /** A connection of the test's own, e.g. for cleanup and queue inspection. */
  redis: Redis
  prefix: string
  tmp: string
  /** What the services read: the database, Redis and queue prefix above, artifacts under `tmp`. */
  env: Record<string, string>
  /** Drops the database, the Redis keys under `prefix` and `tmp`. Stop the services first. */
  close(): Promise<void>
}

/** `name` goes into the database name, the Redis prefix and the temp folder, to tell leftovers apart. */
export async function createTestPlatform(name: string, env: Record<string, string> = {}): Promise<TestPlatform> {
  const db = await createTestDatabase(name)
  const prefix = testRedisPrefix(name)
  const redis = createRedisConnection(testRedisUrl())
  const tmp = mkdtempSync(path.join(os.tmpdir(), `iisan-${name}-`))
  return {
    db,
    redis,
    prefix,
    tmp,
    env: {
      DATABASE_URL: db.url,
      REDIS_URL: testRedisUrl(),
      QUEUE_PREFIX: prefix,
      LOG_LEVEL: 'warn',
      ARTIFACTS_DIR: path.join(tmp, 'artifacts'),
      // a spawned worker must not collide with a dev stack (or another test) on the default port
      WORKER_HEALTH_PORT: String(await freePort()),
      // an open cache on loopback, whatever the shell exports; token tests set INTERNAL_TOKEN
      INTERNAL_TOKEN: '',
      EMBEDDING_CACHE_HOST: '127.0.0.1',
      ...env,
    },
    async close() {
      await cleanupRedisPrefix(redis, prefix)
      await redis.quit()
      await db.drop()
      rmSync(tmp, { recursive: true, force: true })
    },
  }
}

function serviceConfig(env: Record<string, string>, loggerName: string) {
  const config = loadConfig({ ...process.env, ...env })
  return { config, logger: createLogger(loggerName, config, { pretty: false }) }
}

/** The API in this process, configured from `env`; not listening yet. */
export function createTestApi(env: Record<string, string>, loggerName: string) {
  const { config, logger } = serviceConfig(env, loggerName)
  return createApiServer(config, logger)
}

/** The embedding cache in this process, configured from `env`; not listening yet. */
export function createTestCache(env: Record<string, string>, loggerName: string, options?: CacheServerOptions) {
  const { config, logger } = serviceConfig(env, loggerName)
  return createCacheServer(config, logger, options)
}

/**
 * `entry` as its own process, like `npm start` runs it, with `env` over this process's
 * environment. Its output is kept quiet and shown only if it dies unexpectedly.
 */
export function startService(entry: string, env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  const keep = (d: Buffer) => {
    log = (log + d.toString()).slice(-4000)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  child.on('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGKILL') console.error(`${entry} exited ${code ?? signal}:\n${log}`)
  })
  return child
}

/** Resolves with the exit code (null when a signal ended it), at once if it has already exited. */
export function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))))
}

/** Sends `signal` unless the process has already gone, and waits for it to exit. */
export async function stopService(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (!child) return null
  if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  return exited(child)
}

// the tests read API responses loosely, as a client would
type Json = any

/**
 * Polls GET /v1/training-jobs/:id through `get` until the job is in one of `finished`, noting the
 * progress phases seen on the way; a failed job throws with its error.
 */
export async function waitForJob(
  get: (path: string) => Promise<Json>,
  id: string,
  options: { timeoutMs: number; finished?: string[] },
): Promise<{ job: Json; phases: Set<string> }> {
  const finished = options.finished ?? ['completed']
  const phases = new Set<string>()
  const job = await until(
    async () => {
      const body = await get(`/v1/training-jobs/${id}`)
      if (body.progress?.phase) phases.add(body.progress.phase)
      if (body.status === 'failed') throw new Error(`job failed: ${body.error}`)
      return finished.includes(body.status) ? body : undefined
    },
    options.timeoutMs,
    `training job ${id}`,
  )
  return { job, phases }
}

/** POST /v1/training-jobs with `body`, then waitForJob until it has completed. */
export async function trainAndWait(http: ReturnType<typeof request>, body: object, timeoutMs = 180_000) {
  const submitted = (await http.post('/v1/training-jobs').send(body).expect(202)).body
  const done = await waitForJob(async (p) => (await http.get(p).expect(200)).body, submitted.id, { timeoutMs })
  return { submitted, ...done }
}

/** The whole platform on real services: API and embedding cache in-process, the worker as its own process. */
export interface ServicesUnderTest {
  platform: TestPlatform
  http: ReturnType<typeof request>
  /** the worker's process id, to look at what it holds (/proc) */
  workerPid: number
  close(): Promise<void>
}

/** The deleted rows files (cached states a training job reads) a process still holds open. */
export function openRowsFiles(pid: number): string[] {
  const dir = `/proc/${pid}/fd`
  return readdirSync(dir).flatMap((fd) => {
    try {
      const target = readlinkSync(path.join(dir, fd))
      return /iisan-rows-.*\.f16/.test(target) ? [target] : []
    } catch {
      return [] // closed while listed
    }
  })
}

export async function startServices(name: string): Promise<ServicesUnderTest> {
  const platform = await createTestPlatform(name)
  const { env } = platform
  const cache = await createTestCache(env, `${name}-cache`)
  env.EMBEDDING_CACHE_URL = await cache.app.listen({ port: 0, host: '127.0.0.1' })
  const api = await createTestApi(env, `${name}-api`)
  await api.app.ready()
  const worker = startService(WORKER_ENTRY, env)
  return {
    platform,
    http: request(api.app.server),
    workerPid: worker.pid!,
    close: async () => {
      await stopService(worker)
      await api.close()
      await cache.close()
      await platform.close()
    },
  }
}
