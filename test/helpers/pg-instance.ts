/**
 * A throwaway PostgreSQL server of a test's own (initdb + pg_ctl on a temporary folder and a
 * free port), for tests that stop, start or break the database: the machine's shared server
 * serves every other suite and must never be restarted.
 *
 *   const pg = await startPgInstance()
 *   ... pg.url ...            // postgresql://postgres@127.0.0.1:<port>/postgres
 *   await pg.stop()           // pg_ctl stop -m fast: clients see the server go away
 *   await pg.start()          // same data folder, same port
 *   await pg.destroy()        // in afterAll: stops it (if running) and removes the folder
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { freePort } from '../../bench/lib/cli.ts'

const run = promisify(execFile)

export interface PgInstance {
  /** Superuser URL of the instance's `postgres` database (trust authentication, no password). */
  url: string
  port: number
  /** The data folder (logs are in `<dir>/postgres.log`). */
  dataDir: string
  /** pg_ctl stop; `fast` (default) ends the sessions at once, as an outage or a failover does. */
  stop(mode?: 'smart' | 'fast' | 'immediate'): Promise<void>
  /** pg_ctl start on the same folder and port; resolves once it accepts connections. */
  start(): Promise<void>
  restart(): Promise<void>
  /** Whether the server runs (pg_ctl status). */
  running(): Promise<boolean>
  /** The end of the server log, for failure messages. */
  log(lines?: number): string
  /** Stops the server if it runs and removes its folder. Safe to call twice, and after a failed start. */
  destroy(): Promise<void>
}

export interface PgInstanceOptions {
  /** Extra `-c name=value` server settings, e.g. { max_connections: '20' }. */
  settings?: Record<string, string>
}

/** The bin folder of the newest PostgreSQL under /usr/lib/postgresql, or of PG_BIN_DIR / pg_config. */
export function pgBinDir(): string {
  if (process.env.PG_BIN_DIR) return process.env.PG_BIN_DIR
  const root = '/usr/lib/postgresql'
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(path.join(root, v, 'bin', 'pg_ctl')))
      .sort((a, b) => Number(b) - Number(a))
    if (versions.length) return path.join(root, versions[0]!, 'bin')
  }
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim()
  } catch {
    throw new Error('no PostgreSQL server binaries found: install postgresql or set PG_BIN_DIR')
  }
}

// initdb and postgres refuse to run as root: as root, run them as the `postgres` system user.
function runAs(): { user?: string; uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {}
  const ids = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim())
  try {
    return { user: 'postgres', uid: ids('-u'), gid: ids('-g') }
  } catch {
    throw new Error('running as root and there is no `postgres` user to run initdb/pg_ctl as')
  }
}

export async function startPgInstance(options: PgInstanceOptions = {}): Promise<PgInstance> {
  const bin = pgBinDir()
  const as = runAs()
  const dir = mkdtempSync(path.join(os.tmpdir(), 'iisan-pg-'))
  if (as.uid !== undefined) chownSync(dir, as.uid, as.gid!)
  const dataDir = path.join(dir, 'data')
  const logFile = path.join(dir, 'postgres.log')
  const command = (tool: string, args: string[]): [string, string[]] =>
    as.user ? ['runuser', ['-u', as.user, '--', path.join(bin, tool), ...args]] : [path.join(bin, tool), args]
  // cwd: the postgres user may not be allowed into the repository
  const pg = async (tool: string, args: string[]) => {
    const [file, argv] = command(tool, args)
    try {
      return await run(file, argv, { cwd: dir, encoding: 'utf8' })
    } catch (e) {
      const err = e as Error & { stderr?: string; stdout?: string }
      throw new Error(`${tool} ${args.join(' ')} failed: ${err.stderr || err.stdout || err.message}\n${tail(logFile, 20)}`)
    }
  }

  let port = 0
  let destroyed = false
  const serverOptions = () =>
    [
      `-p ${port}`,
      `-k ${dir}`, // its own socket folder: /var/run/postgresql belongs to the shared server
      "-c listen_addresses='127.0.0.1'",
      // durability is of no use to a throwaway server, and fsyncs slow every test down
      '-c fsync=off -c synchronous_commit=off -c full_page_writes=off',
      ...Object.entries(options.settings ?? {}).map(([k, v]) => `-c ${k}=${v}`),
    ].join(' ')
  const start = () => pg('pg_ctl', ['start', '-w', '-t', '60', '-D', dataDir, '-l', logFile, '-o', serverOptions()]).then(() => undefined)
  // pg_ctl status exits 3 when no server runs on the folder
  const running = () =>
    pg('pg_ctl', ['status', '-D', dataDir]).then(
      () => true,
      () => false,
    )
  const stop = async (mode: 'smart' | 'fast' | 'immediate' = 'fast') => {
    await pg('pg_ctl', ['stop', '-w', '-t', '60', '-m', mode, '-D', dataDir])
  }
  // A test that dies without its afterAll must not leave a server behind.
  const onExit = () => {
    if (destroyed) return
    const [file, argv] = command('pg_ctl', ['stop', '-m', 'immediate', '-D', dataDir])
    spawnSync(file, argv, { cwd: dir, stdio: 'ignore' })
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', onExit)
  const destroy = async () => {
    if (destroyed) return
    destroyed = true
    process.off('exit', onExit)
    if (existsSync(path.join(dataDir, 'postmaster.pid'))) await stop('immediate').catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
  }

  try {
    await pg('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'])
    // Another process may take the port between freePort() and the server's bind: try again.
    for (let attempt = 1; ; attempt++) {
      port = await freePort()
      try {
        await start()
        break
      } catch (e) {
        if (attempt >= 3) throw e
      }
    }
  } catch (e) {
    await destroy()
    throw e
  }

  return {
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    stop,
    start,
    async restart() {
      await stop('fast')
      await start()
    },
    running,
    log: (lines = 40) => tail(logFile, lines),
    destroy,
  }
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}
