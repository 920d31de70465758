import pg from 'pg'

/** The database name in a postgres:// URL (percent-decoded). */
export function databaseNameFromUrl(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''))
  if (!name) throw new Error(`DATABASE_URL names no database: ${redactUrl(url)}`)
  return name
}

/** The same server URL pointing at another database. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${encodeURIComponent(database)}`
  return u.toString()
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '<invalid url>'
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function withMaintenanceClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: withDatabase(url, 'postgres') })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

/**
 * Create the database named in `url` if it does not exist (connecting to the `postgres`
 * maintenance database of the same server). Safe to call concurrently from several processes.
 * Returns true when this call created it.
 */
export async function ensureDatabaseExists(url: string): Promise<boolean> {
  const name = databaseNameFromUrl(url)
  return withMaintenanceClient(url, async (client) => {
    for (let attempt = 0; ; attempt++) {
      const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
      if (rowCount) return false
      try {
        await client.query(`CREATE DATABASE ${quoteIdent(name)}`)
        return true
      } catch (e) {
        const code = (e as { code?: string }).code
        if (code === '42P04' || code === '23505') return false // created concurrently
        // "source database template1 is being accessed by other users": another CREATE DATABASE runs.
        if (code === '55006' && attempt < 20) {
          await sleep(100 + Math.random() * 200)
          continue
        }
        throw e
      }
    }
  })
}

/** Drop the database named in `url` (terminating its sessions). Returns true when it existed. */
export async function dropDatabase(url: string): Promise<boolean> {
  const name = databaseNameFromUrl(url)
  return withMaintenanceClient(url, async (client) => {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
    if (!rowCount) return false
    await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
    return true
  })
}
