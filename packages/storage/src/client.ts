import { PrismaPg } from '@prisma/adapter-pg'
import pg from 'pg'
import { PrismaClient, Prisma } from './generated/prisma/client.ts'

export interface CreatePrismaOptions {
  /** Max connections of the pg pool (default 10). */
  maxConnections?: number
  /** Prisma log levels to emit (default none). */
  log?: Prisma.LogLevel[]
}

/**
 * A PrismaClient over @prisma/adapter-pg (Prisma 7: no native query engine). A `?schema=name`
 * parameter in the URL selects a PostgreSQL schema, as with Prisma's classic URLs.
 * Call `$disconnect()` when done.
 */
const CONNECT_TIMEOUT_MS = 5_000

export function createPrisma(databaseUrl: string, options: CreatePrismaOptions = {}): PrismaClient {
  const url = new URL(databaseUrl)
  const schema = url.searchParams.get('schema')
  url.searchParams.delete('schema')
  // an unreachable host (packets dropped, not refused) must fail a request within seconds, as a
  // 503, rather than hang it until the client gives up
  const pool = new pg.Pool({ connectionString: url.toString(), max: options.maxConnections ?? 10, connectionTimeoutMillis: CONNECT_TIMEOUT_MS })
  // an idle connection that breaks (a database restart) is dropped by the pool, and the next query
  // opens another; without a listener its 'error' event would end the process before the adapter
  // (which listens once connected) was ever used
  pool.on('error', () => undefined)
  const adapter = new PrismaPg(pool, { ...(schema ? { schema } : {}), disposeExternalPool: true })
  const prisma = new PrismaClient({ adapter, log: options.log ?? [] })
  pools.set(prisma, pool)
  return prisma
}

const pools = new WeakMap<PrismaClient, pg.Pool>()

/**
 * The node-postgres pool under a client made by createPrisma, for what the ORM's path cannot do
 * without copies: bytea values of a hundred megabytes, sent and read in binary (Prisma's client
 * carries Bytes as base64 strings, and node-postgres reads a bytea as a hex string).
 */
export function pgPoolOf(prisma: PrismaClient): pg.Pool {
  const pool = pools.get(prisma)
  if (!pool) throw new Error('pgPoolOf: this PrismaClient was not made by createPrisma')
  return pool
}

/**
 * Rows of a statement the hot path runs at every request: through node-postgres as a named
 * prepared statement (parsed once per connection, rows parsed without the ORM's conversion layer)
 * when `db` is a client made by createPrisma; through $queryRaw otherwise (inside a transaction).
 * `name` must always go with the same statement text.
 */
export async function queryPrepared<R extends object>(db: Db, name: string, statement: Prisma.Sql): Promise<R[]> {
  const pool = pools.get(db as PrismaClient)
  if (!pool) return (db as PrismaClient).$queryRaw<R[]>(statement)
  try {
    return (await pool.query<R>({ name, text: statement.text, values: statement.values })).rows
  } catch (e) {
    throw new DatabaseQueryError(name, e)
  }
}

/**
 * What node-postgres threw, marked as the database's: a refused socket under it is PostgreSQL being
 * down (the HTTP layer's dependencyFailure reads `dependency`), as it is under a Prisma error.
 */
export class DatabaseQueryError extends Error {
  readonly dependency = 'postgres'
  constructor(statement: string, cause: unknown) {
    super(`${statement}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    this.name = 'DatabaseQueryError'
  }
}

/** Either the client or the client inside an interactive transaction. */
export type Db = PrismaClient | Prisma.TransactionClient

/** Interactive transaction options for long bulk work (imports of ~100k rows). */
export const LONG_TRANSACTION = { maxWait: 30_000, timeout: 15 * 60_000 } as const

/**
 * JSON column input. Prisma's InputJsonValue rejects interface-typed objects (no index signature),
 * so repository functions accept any object; it must be JSON-serialisable (Prisma stringifies it).
 */
export type JsonInput = Prisma.InputJsonValue | object

export function json(value: JsonInput): Prisma.InputJsonValue {
  return value as Prisma.InputJsonValue
}

/** Prisma's Bytes type is Uint8Array<ArrayBuffer>; accept any Uint8Array/Buffer view. */
export function toBytes(data: Uint8Array): Uint8Array<ArrayBuffer> {
  if (data.buffer instanceof ArrayBuffer) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  return new Uint8Array(data) // SharedArrayBuffer-backed: copy
}

/** Run `fn` in a transaction unless `db` already is one. */
export async function inTransaction<T>(
  db: Db,
  fn: (tx: Prisma.TransactionClient) => Promise<T>,
  options?: { maxWait?: number; timeout?: number },
): Promise<T> {
  if ('$transaction' in db) return db.$transaction(fn, options)
  return fn(db)
}
