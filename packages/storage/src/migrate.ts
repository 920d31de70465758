/**
 * `prisma migrate deploy` with plain `pg`: applies prisma/migrations/<name>/migration.sql in
 * name order and keeps `_prisma_migrations` exactly as Prisma's schema engine does (same table,
 * sha256 hex checksum of the file, same advisory lock id), so `prisma migrate deploy` /
 * `prisma migrate status` on a machine with the native engine see these migrations as applied.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { sha256 } from './hash.ts'

/** Advisory lock id used by Prisma's schema engine for migrations. */
export const PRISMA_MIGRATION_LOCK_ID = 72707369

export class MigrationError extends Error {
  constructor(
    readonly code: 'MIGRATION_FAILED' | 'FAILED_MIGRATION_IN_DB' | 'MIGRATION_MISSING_FILE',
    message: string,
    readonly migrationName?: string,
  ) {
    super(message)
    this.name = 'MigrationError'
  }
}

export interface MigrationFile {
  name: string
  sql: string
  checksum: string
}

/** Prisma's migration checksum: sha256 (hex) of the migration.sql bytes. */
export function migrationChecksum(sql: string | Uint8Array): string {
  return sha256(sql)
}

/** The migration folders of `dir` in the order Prisma applies them. */
export async function readMigrations(dir: string): Promise<MigrationFile[]> {
  const base = path.resolve(dir)
  const entries = await fs.readdir(base, { withFileTypes: true })
  const names = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort((a, b) => a.localeCompare(b))
  const out: MigrationFile[] = []
  for (const name of names) {
    let sql: string
    try {
      sql = await fs.readFile(path.join(base, name, 'migration.sql'), 'utf8')
    } catch {
      throw new MigrationError('MIGRATION_MISSING_FILE', `migration ${name} has no migration.sql`, name)
    }
    out.push({ name, sql, checksum: migrationChecksum(sql) })
  }
  return out
}

export interface ApplyMigrationsOptions {
  /** Called once per applied migration and for warnings (e.g. edited migrations). */
  log?: (message: string) => void
}

interface MigrationRow {
  migration_name: string
  checksum: string
  finished_at: Date | null
}

/**
 * Apply every migration of `dir` not yet recorded in `_prisma_migrations`. Returns the names
 * applied by this call (empty when up to date). The database must exist (see
 * ensureDatabaseExists in @iisan/config).
 */
export async function applyMigrations(
  databaseUrl: string,
  dir: string,
  options: ApplyMigrationsOptions = {},
): Promise<string[]> {
  const log = options.log ?? (() => {})
  const migrations = await readMigrations(dir)
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  const applied: string[] = []
  try {
    // Serialises concurrent deploys (several replicas starting at once), as Prisma does.
    await client.query('SELECT pg_advisory_lock($1)', [PRISMA_MIGRATION_LOCK_ID])
    await client.query(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
      "id"                  VARCHAR(36) PRIMARY KEY NOT NULL,
      "checksum"            VARCHAR(64) NOT NULL,
      "finished_at"         TIMESTAMPTZ,
      "migration_name"      VARCHAR(255) NOT NULL,
      "logs"                TEXT,
      "rolled_back_at"      TIMESTAMPTZ,
      "started_at"          TIMESTAMPTZ NOT NULL DEFAULT now(),
      "applied_steps_count" INTEGER NOT NULL DEFAULT 0
    )`)
    const { rows } = await client.query<MigrationRow>(
      'SELECT migration_name, checksum, finished_at FROM "_prisma_migrations" WHERE rolled_back_at IS NULL',
    )
    const failed = rows.filter((r) => r.finished_at === null)
    if (failed.length > 0) {
      const names = failed.map((r) => r.migration_name).join(', ')
      throw new MigrationError(
        'FAILED_MIGRATION_IN_DB',
        `failed migrations recorded in the database: ${names}. Fix the database, then mark them rolled back ` +
          `(UPDATE "_prisma_migrations" SET rolled_back_at = now() WHERE migration_name = ...) — like Prisma's P3009.`,
        failed[0]!.migration_name,
      )
    }
    const done = new Map(rows.map((r) => [r.migration_name, r.checksum]))
    for (const m of migrations) {
      const recorded = done.get(m.name)
      if (recorded !== undefined) {
        if (recorded !== m.checksum) log(`warning: migration ${m.name} was modified after it was applied`)
        continue
      }
      const id = randomUUID()
      await client.query(
        'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, now())',
        [id, m.checksum, m.name],
      )
      try {
        // Simple-query protocol: the multi-statement script runs as one implicit transaction.
        await client.query(m.sql)
      } catch (e) {
        const err = e as Error
        await client.query('UPDATE "_prisma_migrations" SET logs = $2 WHERE id = $1', [id, String(err.stack ?? err)])
        throw new MigrationError('MIGRATION_FAILED', `migration ${m.name} failed: ${err.message}`, m.name)
      }
      await client.query(
        'UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1',
        [id],
      )
      applied.push(m.name)
      log(`applied ${m.name}`)
    }
  } finally {
    await client.end() // ends the session → releases the advisory lock
  }
  return applied
}
