/**
 * The throwaway infrastructure of bench/faults.ts: a PostgreSQL of its own (initdb + pg_ctl on a
 * temp folder, see test/helpers/pg-instance.ts), a redis-server child without persistence, and
 * the platform's services as child processes (`node --import tsx services/<x>/src/main.ts`), all
 * on loopback and on free ports. Everything started here is registered with `Fleet`, which tears
 * it all down at the end, on failure and on Ctrl-C.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { withDatabase } from '@iisan/config'
import { createPrisma, type PrismaClient } from '@iisan/storage'
import { startPgInstance, type PgInstance } from '../../test/helpers/pg-instance.ts'
import { freePort } from '../lib/cli.ts'

export { freePort }

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Calls `probe` until it returns something other than undefined; throws after `timeoutMs`. */
export async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (e) {
      lastError = e
    }
    await sleep(everyMs)
  }
  throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`)
}

/** A line of progress on stderr, with the seconds since the run started. */
const started = Date.now()
export function progress(message: string): void {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`)
}

export type ServiceKind = 'api' | 'worker' | 'cache'

const ENTRIES: Record<ServiceKind, { entry: string; portVariable: string }> = {
  api: { entry: 'services/api/src/main.ts', portVariable: 'PORT' },
  worker: { entry: 'services/worker/src/main.ts', portVariable: 'WORKER_HEALTH_PORT' },
  cache: { entry: 'services/embedding-cache/src/main.ts', portVariable: 'EMBEDDING_CACHE_PORT' },
}

// What the services read from the environment: never inherited from the shell running the bench.
const PLATFORM_VARIABLES = [
  'DATABASE_URL',
  'REDIS_URL',
  'PORT',
  'HOST',
  'EMBEDDING_CACHE_PORT',
  'EMBEDDING_CACHE_URL',
  'EMBEDDING_CACHE_HOST',
  'INTERNAL_TOKEN',
  'WORKER_HEALTH_PORT',
  'QUEUE_PREFIX',
  'API_KEYS',
  'ARTIFACTS_DIR',
  'LOG_LEVEL',
  'IMAGE_ROOT',
  'IMAGE_ALLOW_PRIVATE_HOSTS',
  'TEXT_BACKBONE_DIR',
  'IMAGE_BACKBONE_DIR',
]

function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || PLATFORM_VARIABLES.includes(k) || k.startsWith('EMBEDDING_CACHE_')) continue
    env[k] = v
  }
  return env
}

export interface Service {
  kind: ServiceKind
  name: string
  child: ChildProcess
  pid: number
  port: number
  /** The last few KB of its output. */
  log(): string
  /** Its error-level log lines (pino JSON), the first 200. */
  errors(): string[]
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  alive(): boolean
}

/** The distinct messages of a service's error-level log lines (`msg: err.message`), with counts. */
export function loggedErrors(service: Service | undefined): { message: string; count: number }[] {
  const counts = new Map<string, number>()
  for (const line of service?.errors() ?? []) {
    let text = line
    try {
      const entry = JSON.parse(line)
      text = `${entry.msg ?? ''}: ${entry.err?.type ?? ''} ${entry.err?.code ?? ''} ${entry.err?.message ?? ''}`.replace(/\s+/g, ' ').slice(0, 400)
    } catch {
      // not JSON: the raw line
    }
    counts.set(text, (counts.get(text) ?? 0) + 1)
  }
  return [...counts].map(([message, count]) => ({ message, count }))
}

export interface RedisServer {
  port: number
  url: string
  child: ChildProcess
}

/** Resident set size of a process, in MB, from /proc/<pid>/status. */
export function rssMb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : null
  } catch {
    return null
  }
}

/** Everything a run starts, and its teardown. */
export class Fleet {
  readonly services = new Set<Service>()
  /** every service ever started, for the error lines of a failed scenario */
  readonly history: Service[] = []
  readonly tmp: string
  readonly internalToken = randomBytes(24).toString('hex')
  pg?: PgInstance
  redis?: RedisServer
  private redisDir: string
  private closed = false
  private serial = 0

  constructor() {
    this.tmp = mkdtempSync(path.join(os.tmpdir(), 'iisan-faults-'))
    this.redisDir = path.join(this.tmp, 'redis')
    // synchronous last resort: a crash or an exit without close() leaves nothing running
    process.once('exit', () => this.killAllSync())
  }

  async startPostgres(): Promise<PgInstance> {
    // fsync off and a few more connections than the default: every service keeps a pool
    this.pg = await startPgInstance({ settings: { max_connections: '200' } })
    return this.pg
  }

  /** A redis-server on `port` (a free one by default) that keeps nothing on disk. */
  async startRedis(port?: number): Promise<RedisServer> {
    port ??= await freePort()
    spawnSync('mkdir', ['-p', this.redisDir])
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.redisDir, '--loglevel', 'warning'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout!.on('data', (d) => (out = (out + d).slice(-2000)))
    child.stderr!.on('data', (d) => (out = (out + d).slice(-2000)))
    this.redis = { port, url: `redis://127.0.0.1:${port}`, child }
    await until(async () => ((await redisPing(port!)) ? true : undefined), 15_000, `redis-server on ${port}${out ? `: ${out}` : ''}`, 100)
    return this.redis
  }

  /** SIGKILL the redis-server (nothing is persisted: its data is gone). */
  async killRedis(): Promise<void> {
    const child = this.redis?.child
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const gone = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await gone
  }

  /** A new, empty database on the instance, migrated with the project's runner (scripts/migrate.ts). */
  async createDatabase(name: string): Promise<{ url: string; prisma: PrismaClient }> {
    if (!this.pg) throw new Error('PostgreSQL is not started')
    const url = withDatabase(this.pg.url, name)
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts'], {
      cwd: REPO_ROOT,
      env: { ...baseEnv(), DATABASE_URL: url, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout!.on('data', (d) => (out += d))
    child.stderr!.on('data', (d) => (out += d))
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
    if (code !== 0) throw new Error(`migrating ${name} failed (exit ${code}): ${out.slice(-2000)}`)
    return { url, prisma: createPrisma(url, { maxConnections: 4 }) }
  }

  /**
   * One service as its own process with `env` (DATABASE_URL, REDIS_URL, QUEUE_PREFIX, …) and its
   * port variable set to `port` (a free one by default). Resolves once /healthz answers 200.
   */
  async startService(kind: ServiceKind, env: Record<string, string>, options: { port?: number; healthTimeoutMs?: number; waitHealthy?: boolean } = {}): Promise<Service> {
    const { entry, portVariable } = ENTRIES[kind]
    const port = options.port ?? (await freePort())
    const child = spawn(process.execPath, ['--import', 'tsx', entry], {
      cwd: REPO_ROOT,
      env: { ...baseEnv(), HOST: '127.0.0.1', EMBEDDING_CACHE_HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env, [portVariable]: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let log = ''
    let partial = ''
    const errors: string[] = []
    const keep = (d: Buffer) => {
      log = (log + d.toString()).slice(-8000)
      // error-level lines (pino level ≥ 50) are kept apart: warnings of an outage would push them out of the tail
      const lines = (partial + d.toString()).split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) if (/"level":(5\d|60)/.test(line) && errors.length < 200) errors.push(line.slice(0, 4000))
    }
    child.stdout!.on('data', keep)
    child.stderr!.on('data', keep)
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    const service: Service = {
      kind,
      name: `${kind}#${++this.serial}`,
      child,
      pid: child.pid!,
      port,
      log: () => log,
      errors: () => errors,
      exited,
      alive: () => child.exitCode === null && child.signalCode === null,
    }
    this.services.add(service)
    this.history.push(service)
    void exited.then(() => this.services.delete(service))
    if (options.waitHealthy !== false) await this.waitHealthy(service, options.healthTimeoutMs ?? 90_000)
    return service
  }

  async waitHealthy(service: Service, timeoutMs = 90_000): Promise<void> {
    await until(
      async () => {
        if (!service.alive()) throw new Error(`${service.name} exited: ${service.log().slice(-1500)}`)
        const res = await fetch(`http://127.0.0.1:${service.port}/healthz`, { signal: AbortSignal.timeout(3000) })
        await res.body?.cancel()
        return res.status === 200 ? true : undefined
      },
      timeoutMs,
      `${service.name} healthy on ${service.port}`,
    ).catch((e) => {
      if (!service.alive()) throw new Error(`${service.name} exited before it was healthy:\n${service.log().slice(-3000)}`)
      throw e
    })
  }

  /** Sends `signal` and waits for the exit (SIGKILL after `graceMs` for a signal that is ignored). */
  async stop(service: Service | undefined, signal: NodeJS.Signals = 'SIGTERM', graceMs = 30_000): Promise<void> {
    if (!service) return
    if (service.alive()) service.child.kill(signal)
    const timer = setTimeout(() => service.alive() && service.child.kill('SIGKILL'), graceMs)
    await service.exited
    clearTimeout(timer)
  }

  async stopAll(kinds?: ServiceKind[]): Promise<void> {
    await Promise.all([...this.services].filter((s) => !kinds || kinds.includes(s.kind)).map((s) => this.stop(s)))
  }

  private killAllSync(): void {
    for (const s of this.services) if (s.alive()) s.child.kill('SIGKILL')
    const r = this.redis?.child
    if (r && r.exitCode === null && r.signalCode === null) r.kill('SIGKILL')
    try {
      rmSync(this.tmp, { recursive: true, force: true })
    } catch {
      // best effort
    }
  }

  /** Every service, the Redis, the PostgreSQL instance and the temp folder. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all([...this.services].map((s) => this.stop(s, 'SIGTERM', 10_000)))
    await this.killRedis()
    await this.pg?.destroy().catch(() => undefined)
    rmSync(this.tmp, { recursive: true, force: true })
  }
}

/** PING over a raw socket: true once the server answers PONG. */
export function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let data = ''
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(2000, () => done(false))
    socket.on('error', () => done(false))
    socket.on('data', (d) => {
      data += d
      if (data.includes('\r\n')) done(data.startsWith('+PONG'))
    })
    socket.on('connect', () => socket.write('PING\r\n'))
  })
}
