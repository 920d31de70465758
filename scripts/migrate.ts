/**
 * `npm run db:migrate` — the project's `prisma migrate deploy`: creates the database of
 * DATABASE_URL if missing, then applies prisma/migrations with the same `_prisma_migrations`
 * bookkeeping as Prisma (see packages/storage/src/migrate.ts). Idempotent.
 *   --dir <migrations dir>   (default prisma/migrations)
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { ConfigError, createLogger, ensureDatabaseExists, databaseNameFromUrl, loadConfig, type AppConfig } from '@iisan/config'
import { applyMigrations } from '@iisan/storage/migrate'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const { values } = parseArgs({ options: { dir: { type: 'string', default: path.join(root, 'prisma/migrations') } } })

let config: AppConfig
try {
  config = loadConfig()
} catch (e) {
  if (!(e instanceof ConfigError)) throw e
  console.error(e.message)
  process.exit(1)
}
const log = createLogger('migrate', config)
try {
  const database = databaseNameFromUrl(config.databaseUrl)
  if (await ensureDatabaseExists(config.databaseUrl)) log.info({ database }, 'created database')
  const applied = await applyMigrations(config.databaseUrl, path.resolve(values.dir), {
    log: (message) => log.info({ database }, message),
  })
  log.info({ database, applied }, applied.length ? `applied ${applied.length} migration(s)` : 'database is up to date')
} catch (e) {
  const err = e as Error & { code?: string }
  log.error({ code: err.code, err }, `migration failed: ${err.message}`)
  log.flush?.()
  process.exitCode = 1
}
