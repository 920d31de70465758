/**
 * The one typed configuration loader of the platform: environment variables with defaults,
 * validated up front so that a bad value stops the process with a message naming the variable.
 */
import os from 'node:os'
import { defaultBackboneCacheDir, resolveBackboneSpec } from '@iisan/backbones/hub-cache'
import { BACKBONE_RUNTIMES, type BackboneRuntimeName } from '@iisan/backbones/onnx/onnx-runtime'

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** Tensor backend override; without it the model package picks node-gpu → node → wasm → cpu. */
export const TF_BACKENDS = ['node-gpu', 'node', 'wasm', 'cpu'] as const
export type TfBackend = (typeof TF_BACKENDS)[number]

export interface AppConfig {
  /** DATABASE_URL — PostgreSQL connection string. */
  databaseUrl: string
  /** REDIS_URL — Redis connection string (BullMQ + pub/sub). */
  redisUrl: string
  /** PORT — API HTTP port. */
  port: number
  /** HOST — interface the API (and the worker's health port) bind to. */
  host: string
  /**
   * API_REPLICAS — API processes sharing PORT (node:cluster), each holding its own copy of the
   * served models. Default: os.availableParallelism(); 1 runs the API as a single process.
   */
  apiReplicas: number
  /**
   * APPROXIMATE_INDEX_FROM — catalogue size (items) from which the API answers recommendations
   * from an approximate nearest-neighbour index instead of the exact scan. Unset: the serving
   * default (@iisan/model's ANN_MIN_ITEMS).
   */
  approximateIndexFrom?: number
  /**
   * ITEM_INDEX_DIR — folder where the API replicas of one host share the approximate indexes they
   * build: the first to need one builds and saves it, the others load it (files are named by the
   * hash of what they index). Unset: the serving default (@iisan/model's defaultIndexStoreDir(),
   * under the system's temporary folder); `none`: every replica builds its own.
   */
  itemIndexDir?: string | null
  /**
   * ITEM_INDEX_EF_SEARCH, ITEM_INDEX_EF_CONSTRUCTION — the search and build beams of the
   * recommendations' approximate index (HNSW's ef and efConstruction). A wider search beam finds
   * more of the exact answer and costs every request; a wider build beam makes a graph that needs
   * a narrower search beam and costs the build at activation. Unset: the serving defaults
   * (@iisan/model's ANN_DEFAULTS, measured in docs/ann-choice.md).
   */
  itemIndexEfSearch?: number
  itemIndexEfConstruction?: number
  /**
   * CACHE_ENCODERS — encoder threads of the embedding cache: chunks of a cache build encoded at
   * once, each on a worker thread with its own tensor backend (tfjs-wasm runs one core per
   * thread). Default 1 (encodes in the service's own thread): two measured 0.77× one on this
   * shared 2-core machine (docs/cache-encoders.md); set it to the cores a dedicated cache has.
   */
  cacheEncoders: number
  /**
   * BLOB_PART_BYTES (older name: CHECKPOINT_PART_BYTES) — bytes per stored part of a large value
   * the worker writes: a training job's checkpoint and its model's weights. Unset: the storage
   * default (@iisan/storage's BLOB_PART_BYTES, 32 MiB); the worker refuses at start a size above
   * BLOB_MAX_PART_BYTES (192 MiB).
   */
  blobPartBytes?: number
  /** EMBEDDING_CACHE_PORT — port of the embedding-cache service. */
  embeddingCachePort: number
  /**
   * EMBEDDING_CACHE_HOST — interface the embedding-cache service binds to. Loopback by default:
   * the cache is an internal service, and binding anything else requires INTERNAL_TOKEN.
   */
  embeddingCacheHost: string
  /** EMBEDDING_CACHE_URL — how other services reach the embedding cache (default http://127.0.0.1:<EMBEDDING_CACHE_PORT>). */
  embeddingCacheUrl: string
  /** WORKER_HEALTH_PORT — port of the training worker's /healthz + /metrics endpoint. */
  workerHealthPort: number
  /** LOG_LEVEL — pino level. */
  logLevel: LogLevel
  /** ARTIFACTS_DIR — where checkpoints, benchmark outputs etc. are written. */
  artifactsDir: string
  /**
   * The text backbone's checkpoint folder (optional: the demo pair otherwise), from TEXT_BACKBONE
   * (alias TEXT_BACKBONE_DIR): a folder, or a hub id (`bert-base-uncased`, `org/name@rev`) that
   * names its folder in BACKBONE_CACHE_DIR — whether it is downloaded is checked by whoever loads
   * it (the embedding cache), not here: the API never reads backbones. `none` disables it.
   */
  textBackboneDir?: string
  /** TEXT_BACKBONE as given, when set (a hub id or a folder). */
  textBackbone?: string
  /** The image backbone's folder, from IMAGE_BACKBONE (alias IMAGE_BACKBONE_DIR); as textBackboneDir. */
  imageBackboneDir?: string
  /** IMAGE_BACKBONE as given, when set. */
  imageBackbone?: string
  /** TF_BACKEND — force a tensor backend (optional). */
  tfBackend?: TfBackend
  /**
   * BACKBONE_RUNTIME — what runs the frozen backbones' inference (embedding caches): onnx or tfjs.
   * Unset: ONNX Runtime where its addon loads, else tfjs. The embedding cache passes it to every
   * backbone it loads, encoder threads included; tools that load a backbone themselves get the same
   * variable read by @iisan/backbones.
   */
  backboneRuntime?: BackboneRuntimeName
  /** QUEUE_PREFIX — BullMQ / Redis key prefix. */
  queuePrefix: string
  /** API_KEYS — comma-separated keys the API requires on /v1 (empty: the API is open). */
  apiKeys: string[]
  /**
   * INTERNAL_TOKEN — shared secret of the services: the embedding cache requires it on every
   * route but /healthz and /metrics, the API and the worker send it. Required when
   * EMBEDDING_CACHE_HOST is not a loopback address.
   */
  internalToken?: string
}

export const CONFIG_DEFAULTS = {
  DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/iisan',
  REDIS_URL: 'redis://127.0.0.1:6379',
  PORT: '3000',
  HOST: '0.0.0.0',
  EMBEDDING_CACHE_PORT: '3001',
  EMBEDDING_CACHE_HOST: '127.0.0.1',
  WORKER_HEALTH_PORT: '3002',
  LOG_LEVEL: 'info',
  ARTIFACTS_DIR: 'artifacts',
  QUEUE_PREFIX: 'iisan',
} as const

export interface ConfigIssue {
  variable: string
  value: string
  message: string
}

/** Thrown by loadConfig; `issues` lists every invalid variable (not only the first). */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID'
  constructor(readonly issues: ConfigIssue[]) {
    super(
      `Invalid configuration:\n${issues.map((i) => `  - ${i.variable}=${JSON.stringify(i.value)}: ${i.message}`).join('\n')}`,
    )
    this.name = 'ConfigError'
  }
}

type Env = Record<string, string | undefined>

/**
 * Whether binding `host` keeps a server reachable from this machine only. Host names other than
 * `localhost` count as not loopback: what they resolve to is not ours to vouch for.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1')
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h)
  return v4 !== null && v4.slice(1).every((o) => Number(o) <= 255) && v4[1] === '127'
}

export function loadConfig(env: Env = process.env): AppConfig {
  const issues: ConfigIssue[] = []
  const raw = (name: string): string | undefined => {
    const v = env[name]
    if (v === undefined) return undefined
    const t = v.trim()
    return t === '' ? undefined : t
  }
  const str = (name: keyof typeof CONFIG_DEFAULTS): string => raw(name) ?? CONFIG_DEFAULTS[name]
  const port = (name: keyof typeof CONFIG_DEFAULTS): number => {
    const v = str(name)
    const n = Number(v)
    if (!/^\d+$/.test(v) || !Number.isInteger(n) || n < 1 || n > 65535) {
      issues.push({ variable: name, value: v, message: 'must be an integer TCP port between 1 and 65535' })
      return 0
    }
    return n
  }
  /** A renamed variable: its older name still works, and the two may not disagree. */
  const renamed = (name: string, older: string): { variable: string; value: string } | undefined => {
    const value = raw(name)
    const alias = raw(older)
    if (value !== undefined && alias !== undefined && value !== alias) {
      issues.push({ variable: older, value: alias, message: `contradicts ${name}=${value} (${older} is its older name: set one)` })
    }
    if (value !== undefined) return { variable: name, value }
    return alias === undefined ? undefined : { variable: older, value: alias }
  }
  const count = (name: string, fallback: number, what: string): number => {
    const v = raw(name)
    if (v === undefined) return fallback
    const n = Number(v)
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) {
      issues.push({ variable: name, value: v, message: `must be a whole number of ${what}` })
      return fallback
    }
    return n
  }
  const url = (name: keyof typeof CONFIG_DEFAULTS, protocols: string[]): string => {
    const v = str(name)
    let parsed: URL
    try {
      parsed = new URL(v)
    } catch {
      issues.push({ variable: name, value: v, message: `must be a URL (${protocols.join(' or ')})` })
      return v
    }
    if (!protocols.includes(parsed.protocol)) {
      issues.push({ variable: name, value: v, message: `must use ${protocols.join(' or ')}` })
    }
    return v
  }
  const oneOf = <T extends string>(name: string, allowed: readonly T[], value: string | undefined): T | undefined => {
    if (value === undefined) return undefined
    const v = value.toLowerCase()
    if (!(allowed as readonly string[]).includes(v)) {
      issues.push({ variable: name, value, message: `must be one of ${allowed.join(', ')}` })
      return undefined
    }
    return v as T
  }

  const databaseUrl = url('DATABASE_URL', ['postgresql:', 'postgres:'])
  if (issues.length === 0 && new URL(databaseUrl).pathname.replace(/^\//, '') === '') {
    issues.push({ variable: 'DATABASE_URL', value: databaseUrl, message: 'must name a database (…/dbname)' })
  }
  const redisUrl = url('REDIS_URL', ['redis:', 'rediss:'])
  const p = port('PORT')
  const embeddingCachePort = port('EMBEDDING_CACHE_PORT')
  const workerHealthPort = port('WORKER_HEALTH_PORT')
  const host = str('HOST')
  const apiReplicas = count('API_REPLICAS', os.availableParallelism(), 'API processes, 1 or more (1 = a single process; default: one per core)')
  const cacheEncoders = count('CACHE_ENCODERS', 1, 'encoder threads, 1 or more (1 = encode in the service thread, the default)')
  const approximateIndexFrom = raw('APPROXIMATE_INDEX_FROM') === undefined ? undefined : count('APPROXIMATE_INDEX_FROM', 1, 'items, 1 or more')
  const itemIndexDir = raw('ITEM_INDEX_DIR')
  const beam = (name: string) => (raw(name) === undefined ? undefined : count(name, 1, 'candidates, 1 or more'))
  const itemIndexEfSearch = beam('ITEM_INDEX_EF_SEARCH')
  const itemIndexEfConstruction = beam('ITEM_INDEX_EF_CONSTRUCTION')
  const blobPartSize = renamed('BLOB_PART_BYTES', 'CHECKPOINT_PART_BYTES')
  const blobPartBytes = blobPartSize && count(blobPartSize.variable, 1, 'bytes, 1 or more')
  const logLevel = oneOf('LOG_LEVEL', LOG_LEVELS, str('LOG_LEVEL')) ?? 'info'
  const tfBackend = oneOf('TF_BACKEND', TF_BACKENDS, raw('TF_BACKEND'))
  const backboneRuntime = oneOf('BACKBONE_RUNTIME', BACKBONE_RUNTIMES, raw('BACKBONE_RUNTIME'))
  const queuePrefix = str('QUEUE_PREFIX')
  if (!/^[A-Za-z0-9_.-]+$/.test(queuePrefix)) {
    issues.push({ variable: 'QUEUE_PREFIX', value: queuePrefix, message: 'may only contain letters, digits, "_", "-" and "."' })
  }
  const apiKeys = (raw('API_KEYS') ?? '').split(',').map((k) => k.trim()).filter(Boolean)
  if (apiKeys.some((k) => k.length < 16 || /\s/.test(k))) {
    issues.push({ variable: 'API_KEYS', value: '***', message: 'each key must be at least 16 characters without whitespace' })
  }
  const backbone = (name: 'TEXT_BACKBONE' | 'IMAGE_BACKBONE'): { spec: string; dir: string } | undefined => {
    const spec = renamed(name, `${name}_DIR`)?.value
    if (spec === undefined) return undefined
    const resolved = resolveBackboneSpec(spec, { cacheDir: defaultBackboneCacheDir(env) })
    return { spec, dir: resolved.kind === 'disabled' ? spec : resolved.dir }
  }
  const textBackbone = backbone('TEXT_BACKBONE')
  const imageBackbone = backbone('IMAGE_BACKBONE')
  const embeddingCacheHost = str('EMBEDDING_CACHE_HOST')
  const internalToken = raw('INTERNAL_TOKEN')
  if (internalToken !== undefined && (internalToken.length < 16 || /\s/.test(internalToken))) {
    issues.push({ variable: 'INTERNAL_TOKEN', value: '***', message: 'must be at least 16 characters without whitespace' })
  }
  if (internalToken === undefined && !isLoopbackHost(embeddingCacheHost)) {
    // an unauthenticated cache lists backbone paths and encodes or streams any dataset
    issues.push({
      variable: 'INTERNAL_TOKEN',
      value: '',
      message: `is required when the embedding cache binds a non-loopback address (EMBEDDING_CACHE_HOST=${embeddingCacheHost}): set the same INTERNAL_TOKEN (≥ 16 characters, e.g. \`openssl rand -hex 32\`) for the API, the worker and the embedding cache, or bind EMBEDDING_CACHE_HOST=127.0.0.1`,
    })
  }
  let embeddingCacheUrl = raw('EMBEDDING_CACHE_URL') ?? `http://127.0.0.1:${embeddingCachePort}`
  if (raw('EMBEDDING_CACHE_URL') !== undefined) {
    try {
      const u = new URL(embeddingCacheUrl)
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('protocol')
      embeddingCacheUrl = embeddingCacheUrl.replace(/\/+$/, '')
    } catch {
      issues.push({ variable: 'EMBEDDING_CACHE_URL', value: embeddingCacheUrl, message: 'must be an http(s) URL' })
    }
  }

  if (issues.length > 0) throw new ConfigError(issues)

  const config: AppConfig = {
    databaseUrl,
    redisUrl,
    port: p,
    host,
    apiReplicas,
    cacheEncoders,
    embeddingCachePort,
    embeddingCacheHost,
    embeddingCacheUrl,
    workerHealthPort,
    logLevel,
    artifactsDir: str('ARTIFACTS_DIR'),
    queuePrefix,
    apiKeys,
  }
  if (approximateIndexFrom !== undefined) config.approximateIndexFrom = approximateIndexFrom
  if (blobPartBytes !== undefined) config.blobPartBytes = blobPartBytes
  if (itemIndexDir !== undefined) config.itemIndexDir = itemIndexDir === 'none' ? null : itemIndexDir
  if (itemIndexEfSearch !== undefined) config.itemIndexEfSearch = itemIndexEfSearch
  if (itemIndexEfConstruction !== undefined) config.itemIndexEfConstruction = itemIndexEfConstruction
  if (textBackbone) Object.assign(config, { textBackboneDir: textBackbone.dir, textBackbone: textBackbone.spec })
  if (imageBackbone) Object.assign(config, { imageBackboneDir: imageBackbone.dir, imageBackbone: imageBackbone.spec })
  if (tfBackend !== undefined) config.tfBackend = tfBackend
  if (backboneRuntime !== undefined) config.backboneRuntime = backboneRuntime
  if (internalToken !== undefined) config.internalToken = internalToken
  return config
}

/**
 * For service entry points: the configuration, or — when a variable is invalid — a message
 * naming it on stderr and exit code 1 (no stack trace: it is the operator's input, not a bug).
 */
export function loadConfigOrExit(env: Env = process.env): AppConfig {
  try {
    return loadConfig(env)
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    console.error(e.message)
    process.exit(1)
  }
}
