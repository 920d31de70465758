import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createHash } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, dropDatabase, ensureDatabaseExists, loadConfig, withDatabase } from '@iisan/config'
import { MigrationError, applyMigrations } from '@iisan/storage'
import { NO_FILTERS, listMigrations, openSchemaEngine } from '../scripts/lib/schema-engine.ts'
import { MIGRATIONS_DIR, REPO_ROOT, createTestDatabase, testServerUrl, type TestDatabase } from './helpers/db.ts'

const EXPECTED_TABLES = [
  '_prisma_migrations',
  'backbones',
  'blob_parts',
  'blobs',
  'cache_builds',
  'dataset_users',
  'datasets',
  'epoch_metrics',
  'hidden_states',
  'idempotency_keys',
  'interactions',
  'items',
  'model_versions',
  'training_checkpoints',
  'training_jobs',
]

async function query<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return (await c.query<T>(sql, params)).rows
  } finally {
    await c.end()
  }
}

async function migrationFolders(): Promise<string[]> {
  const entries = await fs.readdir(MIGRATIONS_DIR, { withFileTypes: true })
  return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort()
}

describe('prisma/migrations layout', () => {
  it('is Prisma’s own layout: <timestamp>_<name>/migration.sql + migration_lock.toml', async () => {
    const lock = await fs.readFile(path.join(MIGRATIONS_DIR, 'migration_lock.toml'), 'utf8')
    expect(lock).toMatch(/^provider = "postgresql"$/m)
    const folders = await migrationFolders()
    expect(folders.length).toBeGreaterThan(0)
    expect(folders[0]).toMatch(/^\d{14}_init$/)
    for (const f of folders) {
      expect(f).toMatch(/^\d{14}_[A-Za-z0-9_]+$/)
      await fs.access(path.join(MIGRATIONS_DIR, f, 'migration.sql'))
    }
  })
})

describe('applyMigrations (plain pg, Prisma bookkeeping)', () => {
  let db: TestDatabase

  beforeAll(async () => {
    db = await createTestDatabase('migrations', { migrate: false })
  })
  afterAll(async () => {
    await db?.drop()
  })

  it('applies every migration to an empty database and creates all tables', async () => {
    const applied = await applyMigrations(db.url, MIGRATIONS_DIR)
    expect(applied).toEqual(await migrationFolders())
    const tables = await query<{ table_name: string }>(
      db.url,
      `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
    )
    expect(tables.map((t) => t.table_name)).toEqual(EXPECTED_TABLES)
  })

  it('applies nothing the second time', async () => {
    expect(await applyMigrations(db.url, MIGRATIONS_DIR)).toEqual([])
  })

  it('records each migration like Prisma: sha256 checksum of the file, finished, one step', async () => {
    const rows = await query<{
      id: string
      checksum: string
      migration_name: string
      finished_at: Date | null
      rolled_back_at: Date | null
      applied_steps_count: number
      logs: string | null
    }>(db.url, 'SELECT * FROM _prisma_migrations ORDER BY migration_name')
    const folders = await migrationFolders()
    expect(rows.map((r) => r.migration_name)).toEqual(folders)
    for (const r of rows) {
      const bytes = await fs.readFile(path.join(MIGRATIONS_DIR, r.migration_name, 'migration.sql'))
      expect(r.checksum).toBe(createHash('sha256').update(bytes).digest('hex'))
      expect(r.id).toMatch(/^[0-9a-f-]{36}$/)
      expect(r.finished_at).toBeInstanceOf(Date)
      expect(r.rolled_back_at).toBeNull()
      expect(r.applied_steps_count).toBe(1)
      expect(r.logs).toBeNull()
    }
  })

  it('is seen as fully applied by Prisma’s own schema engine, and schema.prisma has no un-migrated changes', async () => {
    const { engine, close } = await openSchemaEngine(db.url)
    try {
      const migrationsList = await listMigrations(MIGRATIONS_DIR)
      const diag = await engine.diagnoseMigrationHistory({ migrationsList, optInToShadowDatabase: false, filters: NO_FILTERS })
      expect(diag).toMatchObject({ history: null, failedMigrationNames: [], editedMigrationNames: [], hasMigrationsTable: true })
      // the live database (built by our runner) vs. schema.prisma: nothing left to migrate
      // (`schemaDatasource` = the database the engine is connected to, i.e. --from-config-datasource)
      const schemaPath = path.join(REPO_ROOT, 'prisma/schema.prisma')
      const files = [{ path: schemaPath, content: await fs.readFile(schemaPath, 'utf8') }]
      const diff = await engine.diff({
        from: { tag: 'schemaDatasource', files, configDir: REPO_ROOT },
        to: { tag: 'schemaDatamodel', files },
        script: true,
        exitCode: true,
        filters: NO_FILTERS,
      })
      expect(diff.stdout?.trim()).toBe('-- This is an empty migration.')
      expect(diff.exitCode).toBe(0)
    } finally {
      await close()
    }
  })

  it('serialises concurrent deploys (advisory lock): each migration is applied once', async () => {
    const url = withDatabase(testServerUrl(), `${db.name}_c`)
    await ensureDatabaseExists(url)
    try {
      const results = await Promise.all([1, 2, 3].map(() => applyMigrations(url, MIGRATIONS_DIR)))
      expect(results.flat().sort()).toEqual(await migrationFolders())
      const rows = await query<{ n: number }>(url, 'SELECT count(*)::int AS n FROM _prisma_migrations')
      expect(rows[0]!.n).toBe((await migrationFolders()).length)
    } finally {
      await dropDatabase(url)
    }
  })

  it('records a failing migration and refuses to continue until it is resolved (like P3009)', async () => {
    const url = withDatabase(testServerUrl(), `${db.name}_f`)
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'iisan-migrations-'))
    await ensureDatabaseExists(url)
    try {
      await fs.mkdir(path.join(dir, '20000101000000_ok'))
      await fs.writeFile(path.join(dir, '20000101000000_ok', 'migration.sql'), 'CREATE TABLE a (id int);\n')
      await fs.mkdir(path.join(dir, '20000101000001_bad'))
      await fs.writeFile(
        path.join(dir, '20000101000001_bad', 'migration.sql'),
        'CREATE TABLE b (id int);\nSELECT * FROM does_not_exist;\n',
      )
      const err = await applyMigrations(url, dir).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(MigrationError)
      expect(err).toMatchObject({ code: 'MIGRATION_FAILED', migrationName: '20000101000001_bad' })
      const rows = await query<{ migration_name: string; finished_at: Date | null; logs: string | null }>(
        url,
        'SELECT migration_name, finished_at, logs FROM _prisma_migrations ORDER BY migration_name',
      )
      expect(rows[0]).toMatchObject({ migration_name: '20000101000000_ok' })
      expect(rows[0]!.finished_at).not.toBeNull()
      expect(rows[1]).toMatchObject({ migration_name: '20000101000001_bad', finished_at: null })
      expect(rows[1]!.logs).toContain('does_not_exist')
      // the failed script ran in one implicit transaction: table b was rolled back
      const b = await query<{ t: string | null }>(url, `SELECT to_regclass('public.b')::text AS t`)
      expect(b[0]!.t).toBeNull()
      await expect(applyMigrations(url, dir)).rejects.toMatchObject({ code: 'FAILED_MIGRATION_IN_DB' })
    } finally {
      await dropDatabase(url)
      await fs.rm(dir, { recursive: true, force: true })
    }
  })
})

describe('ensureDatabaseExists', () => {
  it('creates a missing database once', async () => {
    const url = withDatabase(testServerUrl(), `iisan_test_ensure_${Date.now().toString(36)}`)
    try {
      expect(await ensureDatabaseExists(url)).toBe(true)
      expect(await ensureDatabaseExists(url)).toBe(false)
    } finally {
      expect(await dropDatabase(url)).toBe(true)
    }
  })
})

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    expect(loadConfig({})).toEqual({
      databaseUrl: 'postgresql://postgres@127.0.0.1:5432/iisan',
      redisUrl: 'redis://127.0.0.1:6379',
      port: 3000,
      host: '0.0.0.0',
      embeddingCachePort: 3001,
      embeddingCacheHost: '127.0.0.1', // internal: loopback unless INTERNAL_TOKEN guards it
      embeddingCacheUrl: 'http://127.0.0.1:3001',
      workerHealthPort: 3002,
      logLevel: 'info',
      artifactsDir: 'artifacts',
      queuePrefix: 'iisan',
      apiKeys: [], // an open API unless API_KEYS is set
      apiReplicas: os.availableParallelism(), // one API process per core
      cacheEncoders: 1,
    })
  })

  it('reads overrides and optional values', () => {
    const c = loadConfig({ PORT: '8080', LOG_LEVEL: 'DEBUG', TF_BACKEND: 'wasm', BACKBONE_RUNTIME: 'ONNX', TEXT_BACKBONE_DIR: '/m/bert', EMBEDDING_CACHE_PORT: '4001' })
    expect(c).toMatchObject({ port: 8080, logLevel: 'debug', tfBackend: 'wasm', backboneRuntime: 'onnx', textBackboneDir: '/m/bert', embeddingCacheUrl: 'http://127.0.0.1:4001' })
    expect(c.imageBackboneDir).toBeUndefined()
    expect(loadConfig({}).backboneRuntime).toBeUndefined()
    // unset: @iisan/storage's default decides
    expect(loadConfig({ BLOB_PART_BYTES: '4096' }).blobPartBytes).toBe(4096)
    expect(loadConfig({ CHECKPOINT_PART_BYTES: '4096' }).blobPartBytes).toBe(4096) // its older name
    expect(loadConfig({ BLOB_PART_BYTES: '4096', CHECKPOINT_PART_BYTES: '4096' }).blobPartBytes).toBe(4096)
    expect(loadConfig({}).blobPartBytes).toBeUndefined()
    expect(() => loadConfig({ BLOB_PART_BYTES: '1.5' })).toThrow(/BLOB_PART_BYTES/)
    expect(() => loadConfig({ CHECKPOINT_PART_BYTES: '1.5' })).toThrow(/CHECKPOINT_PART_BYTES/)
    expect(() => loadConfig({ BLOB_PART_BYTES: '4096', CHECKPOINT_PART_BYTES: '8192' })).toThrow(/CHECKPOINT_PART_BYTES.*contradicts BLOB_PART_BYTES=4096/)
    // unset: @iisan/model's default folder; `none`: no sharing
    expect(loadConfig({ ITEM_INDEX_DIR: '/srv/indexes' }).itemIndexDir).toBe('/srv/indexes')
    expect(loadConfig({ ITEM_INDEX_DIR: 'none' }).itemIndexDir).toBeNull()
    expect(loadConfig({}).itemIndexDir).toBeUndefined()
  })

  it('rejects bad values with an error naming every variable', () => {
    let err: unknown
    try {
      loadConfig({ PORT: 'abc', TF_BACKEND: 'cuda', BACKBONE_RUNTIME: 'torch', DATABASE_URL: 'mysql://x/y' })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    const e = err as ConfigError
    expect(e.issues.map((i) => i.variable).sort()).toEqual(['BACKBONE_RUNTIME', 'DATABASE_URL', 'PORT', 'TF_BACKEND'])
    expect(e.message).toContain('PORT="abc"')
    expect(() => loadConfig({ PORT: '70000' })).toThrow(/PORT/)
  })
})
