/**
 * `prisma migrate diff` / `prisma migrate dev --create-only` for machines without Prisma's native
 * schema engine: runs Prisma's wasm schema engine (scripts/lib/schema-engine.ts).
 *
 *   npm run db:diff                          SQL from the existing migrations to the schema (stdout)
 *   npm run db:diff -- --from-empty          SQL from an empty database to the schema
 *   npm run db:diff -- --name add_things     write prisma/migrations/<UTC timestamp>_add_things/migration.sql
 *                                            (= migrate dev --create-only; nothing written when no change)
 * Options: --schema <file> (prisma/schema.prisma), --migrations <dir> (prisma/migrations),
 *          --out <file> (write the SQL there instead of stdout), --exit-code (exit 2 when the diff is non-empty),
 *          --allow-empty (with --name: write an empty migration anyway, like migrate dev --create-only).
 * Replaying the migrations needs a throwaway shadow database: created and dropped on the server of
 * DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/iisan); the database itself is not touched.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { loadConfig, withDatabase } from '@iisan/config'
import {
  MIGRATION_LOCK_TOML,
  NO_FILTERS,
  listMigrations,
  migrationTimestamp,
  openSchemaEngine,
  type DiffTarget,
} from './lib/schema-engine.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

const { values } = parseArgs({
  options: {
    'from-empty': { type: 'boolean', default: false },
    'from-migrations': { type: 'boolean', default: false },
    name: { type: 'string' },
    schema: { type: 'string', default: path.join(root, 'prisma/schema.prisma') },
    migrations: { type: 'string', default: path.join(root, 'prisma/migrations') },
    out: { type: 'string' },
    'exit-code': { type: 'boolean', default: false },
    'allow-empty': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  allowPositionals: false,
})

if (values.help) {
  const src = await fs.readFile(fileURLToPath(import.meta.url), 'utf8')
  console.log(src.slice(src.indexOf('/**') + 3, src.indexOf('*/')).replace(/^ \* ?/gm, '').trim())
  process.exit(0)
}
if (values.name !== undefined && !/^[A-Za-z0-9_]+$/.test(values.name)) {
  console.error('--name may only contain letters, digits and "_"')
  process.exit(1)
}
if (values['from-empty'] && values['from-migrations']) {
  console.error('--from-empty and --from-migrations are exclusive')
  process.exit(1)
}

const schemaPath = path.resolve(values.schema)
const migrationsDir = path.resolve(values.migrations)
const schemaContent = await fs.readFile(schemaPath, 'utf8')
const migrationsList = await listMigrations(migrationsDir)
const fromEmpty = values['from-empty']
// A fresh project has no migration_lock.toml yet: tell the engine the connector ourselves.
migrationsList.lockfile.content ??= MIGRATION_LOCK_TOML('postgresql')

// The engine needs a live connection for the shadow database only; point it at the maintenance
// database so that DATABASE_URL's own database need not exist and is never touched.
const serverUrl = withDatabase(loadConfig().databaseUrl, 'postgres')
const { engine, close } = await openSchemaEngine(serverUrl)
let exitCode = 0
try {
  const from: DiffTarget = fromEmpty ? { tag: 'empty' } : { tag: 'migrations', ...migrationsList }
  const res = await engine.diff({
    from,
    to: { tag: 'schemaDatamodel', files: [{ path: path.relative(root, schemaPath), content: schemaContent }] },
    script: true,
    exitCode: true,
    filters: NO_FILTERS,
  })
  const sql = res.stdout ?? ''
  const empty = res.exitCode === 0
  console.error(`diff ${fromEmpty ? 'empty' : `${migrationsList.migrationDirectories.length} migration(s)`} → ${path.relative(root, schemaPath)}: ${empty ? 'no changes' : 'changes'}`)

  if (values.name !== undefined) {
    if (empty && !values['allow-empty']) {
      console.error('No schema changes: no migration created.')
    } else {
      const folder = `${migrationTimestamp()}_${values.name}`
      const dir = path.join(migrationsDir, folder)
      await fs.mkdir(dir, { recursive: true })
      await fs.writeFile(path.join(dir, 'migration.sql'), sql)
      await fs.writeFile(path.join(migrationsDir, 'migration_lock.toml'), MIGRATION_LOCK_TOML('postgresql'))
      console.error(`created ${path.relative(root, dir)}/migration.sql`)
    }
  } else if (values.out !== undefined) {
    await fs.writeFile(values.out, sql)
    console.error(`wrote ${values.out}`)
  } else {
    process.stdout.write(sql)
  }
  if (values['exit-code'] && !empty) exitCode = 2
} catch (e) {
  const err = e as { code?: string; message?: string }
  console.error('schema engine failed:', err.code ?? '', err.message ?? String(e))
  exitCode = 1
} finally {
  await close()
}
process.exit(exitCode)
