/**
 * Test helpers for real PostgreSQL / Redis: every test file gets its own throwaway database and
 * Redis key prefix (other suites and other engineers share the servers) and removes them again.
 */
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { dropDatabase, ensureDatabaseExists, withDatabase } from '@iisan/config'
import { applyMigrations, createPrisma, type PrismaClient } from '@iisan/storage'
import type { Redis } from '@iisan/queue'

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const MIGRATIONS_DIR = path.join(REPO_ROOT, 'prisma/migrations')

/** Server to create test databases on: TEST_DATABASE_URL, else DATABASE_URL, else local default. */
export function testServerUrl(): string {
  return process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
}

export function testRedisUrl(): string {
  return process.env.TEST_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
}

function suffix(): string {
  return `${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`
}

function sanitize(prefix: string): string {
  return prefix.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 24)
}

export interface TestDatabase {
  /** Connection URL of the throwaway database. */
  url: string
  /** Database name (iisan_test_<prefix>_<random>). */
  name: string
  prisma: PrismaClient
  /** Disconnect and drop the database. Safe to call twice. */
  drop(): Promise<void>
}

export interface CreateTestDatabaseOptions {
  /** Apply prisma/migrations (default true). */
  migrate?: boolean
}

/** A uniquely named, migrated, empty database. Call drop() in afterAll. */
export async function createTestDatabase(prefix: string, options: CreateTestDatabaseOptions = {}): Promise<TestDatabase> {
  const name = `iisan_test_${sanitize(prefix)}_${suffix()}`
  const url = withDatabase(testServerUrl(), name)
  await ensureDatabaseExists(url)
  try {
    if (options.migrate !== false) await applyMigrations(url, MIGRATIONS_DIR)
  } catch (e) {
    await dropDatabase(url)
    throw e
  }
  const prisma = createPrisma(url, { maxConnections: 4 })
  let dropped = false
  return {
    url,
    name,
    prisma,
    async drop() {
      if (dropped) return
      dropped = true
      await prisma.$disconnect().catch(() => {})
      await dropDatabase(url)
    },
  }
}

/** A unique Redis key / BullMQ prefix for one test file: iisan_test_<random>. */
export function testRedisPrefix(prefix = 'redis'): string {
  return `iisan_test_${sanitize(prefix)}_${suffix()}`
}

/** Delete every key starting with `${prefix}:` (BullMQ keys; pub/sub is keyless). */
export async function cleanupRedisPrefix(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500)
    cursor = next
    if (keys.length) deleted += await redis.del(...keys)
  } while (cursor !== '0')
  return deleted
}
