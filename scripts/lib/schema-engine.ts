/**
 * Prisma's own schema engine (the wasm build, @prisma/schema-engine-wasm — pinned to the exact
 * version @prisma/internals of our Prisma release uses) driven through @prisma/adapter-pg, the
 * same way the Prisma CLI's wasm loader does. This is how the build machines, which cannot
 * download Prisma's native schema engine, still run `migrate diff` / `migrate dev --create-only`
 * with Prisma's real SQL generator (docs/DEVELOPMENT.md, "Prisma 7 offline"); reading a live
 * schema takes four patches to adapter-pg 7.10.1, see below.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { PrismaPg } from '@prisma/adapter-pg'
import { bindMigrationAwareSqlAdapterFactory } from '@prisma/driver-adapter-utils'
import type { MigrationList, SchemaEngine, SchemaFilter } from '@prisma/schema-engine-wasm/schema_engine_bg'
import { quoteIdent } from '@iisan/config'

export type { MigrationList, SchemaEngine, SchemaFilter, DiffTarget } from '@prisma/schema-engine-wasm/schema_engine_bg'

const SE_PKG = '@prisma/schema-engine-wasm'
export const NO_FILTERS: SchemaFilter = { externalTables: [], externalEnums: [] }

type EngineRuntime = typeof import('@prisma/schema-engine-wasm/schema_engine_bg')

let engineClass: Promise<typeof SchemaEngine> | undefined

/** Instantiate the wasm module once per process and return the SchemaEngine class. */
export function loadSchemaEngineClass(): Promise<typeof SchemaEngine> {
  engineClass ??= (async () => {
    const runtime: EngineRuntime = await import(`${SE_PKG}/schema_engine_bg`)
    const wasmUrl = new URL('schema_engine_bg.wasm', import.meta.resolve(`${SE_PKG}/schema_engine_bg`))
    const module = new WebAssembly.Module(await fs.readFile(wasmUrl))
    const instance = new WebAssembly.Instance(module, {
      './schema_engine_bg.js': runtime as unknown as WebAssembly.ModuleImports,
    })
    runtime.__wbg_set_wasm(instance.exports)
    ;(instance.exports as { __wbindgen_start: () => void }).__wbindgen_start()
    return runtime.SchemaEngine
  })()
  return engineClass
}

interface PgConfig {
  host?: string
  port?: number
  user?: string
  password?: string
  database?: string
}

function pgConfigFromUrl(url: string): { cfg: PgConfig; schema?: string } {
  const u = new URL(url)
  const cfg: PgConfig = {
    host: decodeURIComponent(u.hostname) || undefined,
    port: u.port ? Number(u.port) : undefined,
    user: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || undefined,
  }
  const schema = u.searchParams.get('schema') ?? undefined
  return schema ? { cfg, schema } : { cfg }
}

async function adminQuery(cfg: PgConfig, sql: string): Promise<void> {
  const c = new pg.Client({ ...cfg, database: 'postgres' })
  await c.connect()
  try {
    await c.query(sql)
  } finally {
    await c.end()
  }
}

// Patch 1: adapter-pg 7.10.1 has no mapping for PostgreSQL's internal "char" type (oid 18), which
// the schema describer reads from pg_catalog → "Column type 'char' could not be deserialized".
// Report those columns as text (oid 25); pg already returns them as JS strings.
let charPatched = false
function patchCharColumns(adapter: object): void {
  if (charPatched) return
  const proto = Object.getPrototypeOf(Object.getPrototypeOf(adapter)) as {
    performIO: (this: unknown, query: unknown) => Promise<{ fields?: { dataTypeID: number }[] } | undefined>
  }
  const orig = proto.performIO
  proto.performIO = async function (this: unknown, query: unknown) {
    const res = await orig.call(this, query)
    for (const f of res?.fields ?? []) if (f.dataTypeID === 18) f.dataTypeID = 25
    return res
  }
  charPatched = true
}

type Adapter = Awaited<ReturnType<PrismaPg['connect']>>

// Patch 4: adapter-pg 7.10.1 runs a migration script by splitting it at every ';', inside dollar
// quotes and comments too, so a PL/pgSQL function cannot be migrated. Prisma's native engine sends
// the script whole, and so does this: PostgreSQL's simple query protocol runs it statement by
// statement.
function patchWholeScripts(adapter: Adapter): void {
  const client = adapter.underlyingDriver() as unknown as { query(sql: string): Promise<unknown> }
  adapter.executeScript = async (script: string) => {
    await client.query(script)
  }
}

/**
 * adapter-pg factory for the schema engine.
 * Patch 2: discrete connection fields instead of { connectionString }: adapter-pg's shadow pool is
 * `new Pool({ ...config, database })` and a connectionString would override `database`.
 * Patch 3: adapter-pg 7.10.1 drops the shadow DB before closing its pool ("is being accessed by
 * other users"); we create/drop it ourselves, dropping after the pool is closed.
 */
function createFactory(url: string, track: Set<Adapter>): PrismaPg {
  const { cfg, schema } = pgConfigFromUrl(url)
  const factory = new PrismaPg(cfg, schema ? { schema } : undefined)
  factory.connectToShadowDb = async () => {
    const name = `prisma_migrate_shadow_db_${randomUUID()}`
    await adminQuery(cfg, `CREATE DATABASE ${quoteIdent(name)}`)
    const shadow = await new PrismaPg({ ...cfg, database: name }).connect()
    patchCharColumns(shadow)
    patchWholeScripts(shadow)
    const dispose = shadow.dispose.bind(shadow)
    shadow.dispose = async () => {
      await dispose()
      await adminQuery(cfg, `DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
    }
    return shadow
  }
  const connect = factory.connect.bind(factory)
  factory.connect = async () => {
    const adapter = await connect()
    patchCharColumns(adapter)
    patchWholeScripts(adapter)
    track.add(adapter)
    const dispose = adapter.dispose.bind(adapter)
    adapter.dispose = async () => {
      track.delete(adapter)
      await dispose()
    }
    return adapter
  }
  return factory
}

export interface OpenEngine {
  engine: SchemaEngine
  /** Free the engine and close every connection pool it opened. */
  close(): Promise<void>
}

/** Open Prisma's wasm schema engine against `databaseUrl` (which must exist). */
export async function openSchemaEngine(databaseUrl: string): Promise<OpenEngine> {
  const SchemaEngineClass = await loadSchemaEngineClass()
  const adapters = new Set<Adapter>()
  const factory = bindMigrationAwareSqlAdapterFactory(createFactory(databaseUrl, adapters))
  const debug = process.env.DEBUG_SCHEMA_ENGINE ? (msg: string) => console.error('[schema-engine]', msg) : () => {}
  const engine = await SchemaEngineClass.new({ datamodels: undefined }, debug, factory)
  return {
    engine,
    async close() {
      try {
        engine.free()
      } finally {
        await Promise.allSettled([...adapters].map((a) => a.dispose()))
      }
    },
  }
}

/** The `migrationsList` the engine expects — same structure as @prisma/migrate's listMigrations(). */
export async function listMigrations(dir: string, shadowDbInitScript = ''): Promise<MigrationList> {
  const baseDir = path.resolve(dir)
  const lockContent = await fs.readFile(path.join(baseDir, 'migration_lock.toml'), 'utf8').catch(() => null)
  const entries = await fs.readdir(baseDir, { withFileTypes: true }).catch(() => [])
  const migrationDirectories: MigrationList['migrationDirectories'] = []
  for (const e of entries.filter((e) => e.isDirectory())) {
    const content = await fs.readFile(path.join(baseDir, e.name, 'migration.sql'), 'utf8').then(
      (value) => ({ tag: 'ok' as const, value }),
      (err: Error) => ({ tag: 'error' as const, value: err.message }),
    )
    migrationDirectories.push({ path: e.name, migrationFile: { path: 'migration.sql', content } })
  }
  migrationDirectories.sort((a, b) => a.path.localeCompare(b.path))
  return { baseDir, lockfile: { path: 'migration_lock.toml', content: lockContent }, migrationDirectories, shadowDbInitScript }
}

export const MIGRATION_LOCK_TOML = (provider: string) =>
  `# Please do not edit this file manually\n# It should be added in your version-control system (e.g., Git)\nprovider = "${provider}"\n`

/** Prisma's migration folder timestamp: UTC YYYYMMDDHHMMSS. */
export function migrationTimestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`
}
