// Which errors mean "a service we depend on is unreachable right now" rather than "this request is
// wrong" or "we have a bug": those answer 503 with Retry-After (the client may simply try again),
// the others keep their 4xx/500.
//
// The shapes below are the ones Prisma 7 + @prisma/adapter-pg, pg and ioredis were seen to throw
// against a stopped/killed/overloaded server (test/dependency-outage.test.ts produces each one):
//  - PrismaClientKnownRequestError P2010 (raw queries) or P1001/P1008/P1017/P2037 (model queries),
//    with meta.driverAdapterError = DriverAdapterError whose `cause` is
//    { kind: 'DatabaseNotReachable' | 'ConnectionClosed' | 'SocketTimeout' | 'TooManyConnections' }
//    or { kind: 'postgres', originalCode: '57P01', ... } (server shutting down mid-query);
//  - a bare pg Error "Connection terminated unexpectedly" / "Client has encountered a connection
//    error and is not queryable" (adapter-pg rethrows what it cannot convert; Prisma only adds
//    `clientVersion`), and pg's DatabaseError with a SQLSTATE (`severity` + `code`);
//  - ioredis: "Connection is closed.", MaxRetriesPerRequestError, "Stream isn't writeable and
//    enableOfflineQueue options is false";
//  - the embedding-cache client's EmbeddingCacheUnavailable (its `fetch failed` and 5xx).

/** The dependency that failed and a one-line reason, e.g. { dependency: 'postgres', reason: 'ECONNREFUSED 127.0.0.1:5432' }. */
export interface DependencyFailure {
  /** 'postgres' | 'redis' | 'embedding-cache' | another service's name; 'unknown' for a bare socket error. */
  dependency: string
  reason: string
}

/**
 * Thrown by code that knows which dependency it was talking to (a client of another internal
 * service, say) to have the error answered 503 under that name; `cause` keeps the original.
 */
export class DependencyUnavailableError extends Error {
  constructor(
    readonly dependency: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options)
    this.name = 'DependencyUnavailableError'
  }
}

// SQLSTATEs of a connection that is gone or cannot be had: class 08 (connection exception),
// 57P01 admin_shutdown (fast stop, pg_terminate_backend), 57P02 crash_shutdown, 57P03
// cannot_connect_now (starting up / shutting down), 57P05 idle_session_timeout, 53300
// too_many_connections. Anything else (constraint, syntax, 57014 statement timeout…) is the
// request's or ours.
const CONNECTION_SQLSTATES = new Set(['57P01', '57P02', '57P03', '57P05', '53300'])
const isConnectionSqlState = (code: unknown): code is string => typeof code === 'string' && (code.startsWith('08') || CONNECTION_SQLSTATES.has(code))

// Prisma's connection-level codes: can't reach (P1001), timed out reaching (P1002), operation
// timed out (P1008), server closed the connection (P1017), no pool connection in time (P2024),
// too many connections (P2037, TooManyConnections from the adapter).
const PRISMA_CONNECTION_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2037'])
// DriverAdapterError kinds of adapter-pg that mean the server, not the query.
const ADAPTER_CONNECTION_KINDS = new Set(['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout', 'TooManyConnections'])

// pg (and pg-pool) raise these without a code.
const PG_MESSAGES = [
  /^Connection terminated unexpectedly$/,
  /^Connection terminated due to connection timeout$/,
  /^Client has encountered a connection error and is not queryable$/,
  /^timeout exceeded when trying to connect$/,
]
// ioredis raises these without a code; LOADING/MASTERDOWN are replies of a Redis that is
// (re)starting or has lost its primary.
const REDIS_MESSAGES = [/^Connection is closed\.$/, /^Stream isn't writeable and enableOfflineQueue options is false$/, /^(LOADING|MASTERDOWN) /]

const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE'])

type Node = Record<string, unknown> & { message?: unknown; name?: unknown; code?: unknown; cause?: unknown }

const MAX_DEPTH = 8

/**
 * Whether `err` (or anything in its `cause` chain, Prisma's `meta.driverAdapterError`, an
 * AggregateError's `errors`) says a dependency is unreachable; undefined when it does not.
 */
export function dependencyFailure(err: unknown): DependencyFailure | undefined {
  return walk(err, undefined, 0, new Set())
}

function walk(value: unknown, context: string | undefined, depth: number, seen: Set<unknown>): DependencyFailure | undefined {
  if (depth > MAX_DEPTH || value === null || typeof value !== 'object' || seen.has(value)) return undefined
  seen.add(value)
  const e = value as Node
  // a Prisma error that carries a socket code itself (`write EPIPE` mid-query) is the database's
  const found = classify(e, contextOf(e) ?? context)
  if (found) return found
  // A `fetch failed` names no service: from a route fetching a user's URL it is not our outage.
  // Only a client that knows its peer (and says so in an outer error) makes it one.
  if (!context && e.name === 'TypeError' && e.message === 'fetch failed') return undefined
  const inner = contextOf(e) ?? context
  const meta = e.meta as { driverAdapterError?: unknown } | undefined
  const next = [meta?.driverAdapterError, e.cause, ...(Array.isArray(e.errors) ? e.errors : [])]
  for (const n of next) {
    const f = walk(n, inner, depth + 1, seen)
    if (f) return f
  }
  return undefined
}

// What an outer error tells about the inner ones: a socket error under a Prisma error is the database's.
function contextOf(e: Node): string | undefined {
  const name = typeof e.name === 'string' ? e.name : ''
  if (name.startsWith('PrismaClient') || name === 'DriverAdapterError' || typeof e.clientVersion === 'string') return 'postgres'
  if (typeof e.dependency === 'string') return e.dependency
  return undefined
}

function classify(e: Node, context: string | undefined): DependencyFailure | undefined {
  const name = typeof e.name === 'string' ? e.name : ''
  const message = typeof e.message === 'string' ? e.message : ''
  const code = e.code

  if (e instanceof DependencyUnavailableError) return { dependency: e.dependency, reason: e.message }
  // the embedding-cache client (packages/embedding-cache/src/client.ts); matched by name so that
  // this package does not depend on that one
  if (name === 'EmbeddingCacheUnavailable') return { dependency: 'embedding-cache', reason: message }

  if (name === 'PrismaClientKnownRequestError' && typeof code === 'string' && PRISMA_CONNECTION_CODES.has(code)) return { dependency: 'postgres', reason: `${code}: ${lastLine(message)}` }
  if (name === 'PrismaClientInitializationError') {
    const errorCode = e.errorCode
    if (typeof errorCode !== 'string' || PRISMA_CONNECTION_CODES.has(errorCode)) return { dependency: 'postgres', reason: lastLine(message) }
  }
  if (name === 'DriverAdapterError') {
    const cause = (e.cause ?? {}) as { kind?: unknown; originalCode?: unknown; code?: unknown; originalMessage?: unknown; host?: unknown; port?: unknown }
    if (typeof cause.kind === 'string' && ADAPTER_CONNECTION_KINDS.has(cause.kind)) {
      const where = typeof cause.host === 'string' ? ` ${cause.host}${cause.port ? `:${cause.port}` : ''}` : ''
      return { dependency: 'postgres', reason: `${cause.kind}${where}` }
    }
    const state = cause.originalCode ?? cause.code
    if (isConnectionSqlState(state)) return { dependency: 'postgres', reason: `SQLSTATE ${state}: ${typeof cause.originalMessage === 'string' ? cause.originalMessage : message}` }
    return undefined
  }
  // pg's DatabaseError: a server message with severity and SQLSTATE
  if (typeof e.severity === 'string' && isConnectionSqlState(code)) return { dependency: 'postgres', reason: `SQLSTATE ${code}: ${message}` }
  if (PG_MESSAGES.some((re) => re.test(message))) return { dependency: 'postgres', reason: message }

  if (name === 'MaxRetriesPerRequestError' || REDIS_MESSAGES.some((re) => re.test(message))) return { dependency: 'redis', reason: message }

  if (typeof code === 'string' && SOCKET_CODES.has(code) && (typeof e.syscall === 'string' || context)) {
    const where = typeof e.address === 'string' ? ` ${e.address}${e.port ? `:${e.port}` : ''}` : typeof e.hostname === 'string' ? ` ${e.hostname}` : ''
    return { dependency: context ?? 'unknown', reason: `${code}${where}` }
  }
  return undefined
}

// Prisma's messages start with "Invalid `prisma.x()` invocation:" and a blank line or two.
function lastLine(message: string): string {
  const lines = message.split('\n').map((l) => l.trim()).filter(Boolean)
  return lines[lines.length - 1] ?? message
}
