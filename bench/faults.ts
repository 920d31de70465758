// Fault injection against the whole platform (issue 8): worker SIGKILLs, Redis and PostgreSQL
// restarts, the embedding cache killed mid-build, the API-key matrix over raw sockets, and a fuzz
// of every /v1 route. Everything runs against throwaway instances this script starts itself — its
// own PostgreSQL (initdb + pg_ctl on a temp folder), its own redis-server without persistence —
// and each service as its own child process, all on loopback and free ports; the machine's shared
// PostgreSQL and Redis are never touched. Prints a table per scenario and writes
// bench/results/faults.json.
//
//   npm run bench:faults [-- --only kills|redis|postgres|cache|auth|fuzz[,…]] [--quick] [--out FILE]
//
// --quick makes every scenario smaller (a smoke run of a few minutes). Bad arguments print one
// `error: …` line and exit 1; a scenario whose expectations fail is reported (and the exit code
// is 1), the others still run. Every child process, the Redis, the PostgreSQL instance and the
// temp folders are removed at the end, also on failure and Ctrl-C.
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { Fleet, REPO_ROOT, loggedErrors, progress } from './faults/infra.ts'
import { killsScenario } from './faults/kills.ts'
import { redisScenario } from './faults/redis.ts'
import { postgresScenario } from './faults/postgres.ts'
import { cacheScenario } from './faults/cache.ts'
import { authScenario } from './faults/auth.ts'
import { fuzzScenario } from './faults/fuzz.ts'
import { findingsFor } from './faults/findings.ts'
import { loadAverage, machine } from './lib/machine.ts'

const SCENARIOS = ['kills', 'redis', 'postgres', 'cache', 'auth', 'fuzz'] as const
type Scenario = (typeof SCENARIOS)[number]
const USAGE = `usage: npx tsx bench/faults.ts [--only ${SCENARIOS.join('|')}[,…]] [--quick] [--out FILE]`

function fail(message: string): never {
  console.error(`error: ${message}`)
  process.exit(1)
}

function parseOptions() {
  let values: { only?: string; quick?: boolean; out?: string }
  try {
    ;({ values } = parseArgs({ options: { only: { type: 'string' }, quick: { type: 'boolean', default: false }, out: { type: 'string' } } }))
  } catch (err) {
    fail(`${(err as Error).message} (${USAGE})`)
  }
  const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean) ?? [...SCENARIOS]
  const unknown = only.filter((s) => !(SCENARIOS as readonly string[]).includes(s))
  if (unknown.length || only.length === 0) fail(`--only takes ${SCENARIOS.join(', ')} (got ${JSON.stringify(values.only)}) (${USAGE})`)
  return { only: only as Scenario[], quick: values.quick ?? false, out: path.resolve(values.out ?? path.join(REPO_ROOT, 'bench/results/faults.json')) }
}

const options = parseOptions()
const quick = options.quick

type Outcome = { ok: boolean; goalMet?: boolean; [k: string]: unknown }
const runners: Record<Scenario, (fleet: Fleet) => Promise<Outcome>> = {
  kills: (fleet) =>
    killsScenario(fleet, quick ? { jobs: 3, workers: 3, kills: 5, doubleKills: 2, users: 300, maxEpochs: 5, timeoutMs: 420_000 } : { jobs: 10, workers: 3, kills: 20, doubleKills: 4, users: 200, maxEpochs: 5, timeoutMs: 900_000 }),
  redis: (fleet) => redisScenario(fleet, quick ? { users: 300, maxEpochs: 4, queued: 1 } : { users: 400, maxEpochs: 6, queued: 2 }),
  postgres: (fleet) => postgresScenario(fleet, quick ? { importUsers: 2000, users: 300, maxEpochs: 4, downSeconds: 8 } : { importUsers: 5000, users: 400, maxEpochs: 6, downSeconds: 8 }),
  cache: (fleet) => cacheScenario(fleet, { users: quick ? 120 : 200, maxEpochs: 2, downSeconds: 4 }),
  auth: (fleet) => authScenario(fleet),
  fuzz: (fleet) => fuzzScenario(fleet, { requests: quick ? 1500 : 10_000, seed: 20241 }),
}

const fleet = new Fleet()
let interrupted = false
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return
  interrupted = true
  progress(`${signal}: stopping every child process, Redis and PostgreSQL`)
  void fleet.close().finally(() => process.exit(130))
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)

const results: Record<string, unknown> = {}
const t0 = Date.now()
let failed = 0
try {
  progress(`starting PostgreSQL and Redis (scenarios: ${options.only.join(', ')}${quick ? ', quick' : ''})`)
  await fleet.startPostgres()
  await fleet.startRedis()
  progress(`PostgreSQL on 127.0.0.1:${fleet.pg!.port}, Redis on 127.0.0.1:${fleet.redis!.port}`)
  for (const name of options.only) {
    if (interrupted) break
    const started = Date.now()
    const firstService = fleet.history.length
    progress(`— scenario ${name} —`)
    try {
      const outcome = await runners[name](fleet)
      results[name] = { ...outcome, seconds: Math.round((Date.now() - started) / 100) / 10 }
      if (!outcome.ok) failed++
      progress(`scenario ${name}: ${outcome.ok ? 'as expected' : 'EXPECTATIONS FAILED'} in ${((Date.now() - started) / 1000).toFixed(0)} s`)
    } catch (e) {
      failed++
      const err = e as Error
      const logged = fleet.history.slice(firstService).map((s) => ({ service: s.name, errors: loggedErrors(s) })).filter((s) => s.errors.length)
      results[name] = { ok: false, error: err.message, stack: err.stack?.split('\n').slice(0, 8).join('\n'), errorsLogged: logged, seconds: Math.round((Date.now() - started) / 100) / 10 }
      console.log(`\nScenario ${name} failed: ${err.message}`)
      for (const s of logged) for (const l of s.errors) console.log(`  ${s.service} logged ${l.count} × ${l.message}`)
      progress(`scenario ${name} FAILED: ${err.message.slice(0, 500)}`)
      // a scenario that died leaves its services behind: the next one starts clean
      await fleet.stopAll()
      // a scenario may have stopped the shared instances: bring them back for the next one
      if (fleet.pg && !(await fleet.pg.running())) await fleet.pg.start().catch(() => undefined)
      const redis = fleet.redis
      if (redis && (redis.child.exitCode !== null || redis.child.signalCode !== null)) await fleet.startRedis(redis.port).catch(() => undefined)
    }
  }
} finally {
  if (!interrupted) {
    const report = {
      generatedAt: new Date().toISOString(),
      command: `npx tsx bench/faults.ts${quick ? ' --quick' : ''}${options.only.length < SCENARIOS.length ? ` --only ${options.only.join(',')}` : ''}`,
      machine: { ...machine(), loadAverage: loadAverage() },
      quick,
      seconds: Math.round((Date.now() - t0) / 1000),
      scenarios: results,
    }
    // a partial run (--only) keeps the other scenarios' last figures
    let previous: { scenarios?: Record<string, unknown> } = {}
    try {
      previous = JSON.parse(fs.readFileSync(options.out, 'utf8'))
    } catch {
      // no earlier results
    }
    const scenarios = { ...(options.only.length < SCENARIOS.length ? previous.scenarios : {}), ...results }
    // the platform bugs this bench has found, and whether this run showed them again
    const findings = findingsFor(results)
    const merged = { ...report, scenarios, findings }
    console.log('\nPlatform bugs found by this bench (see "findings" in the results file):')
    for (const f of findings) console.log(`  [${f.severity}] ${f.title} — seen in this run: ${f.seenInThisRun === null ? 'scenario not run' : f.seenInThisRun ? 'yes' : 'no'}`)
    fs.mkdirSync(path.dirname(options.out), { recursive: true })
    fs.writeFileSync(options.out, JSON.stringify(merged, null, 2) + '\n')
    progress(`wrote ${path.relative(process.cwd(), options.out)}; cleaning up`)
    await fleet.close()
    progress(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s; ${failed ? `${failed} scenario(s) with failed expectations` : 'every scenario as expected'}`)
    process.exitCode = failed ? 1 : 0
  }
}
