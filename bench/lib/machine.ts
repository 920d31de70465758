// What every bench records of the machine it ran on. These machines are shared and not always the
// same CPU (a Xeon one session, an EPYC the next), so a figure that does not say where it was
// measured cannot be set beside another run's.
import { execFileSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'

const REPO = path.resolve(import.meta.dirname, '..', '..')

export interface Machine {
  cpu: string
  cores: number
  memoryGb: number
  node: string
  platform: string
  gitCommit: string
  /** uncommitted changes under packages/, services/ or scripts/ when the run started */
  gitDirty: boolean
}

export function machine(): Machine {
  let commit = 'unknown'
  let dirty = false
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    dirty = execFileSync('git', ['status', '--porcelain', '--', 'packages', 'services', 'scripts'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== ''
  } catch {
    // not a git checkout (e.g. a `git archive` export of a commit, to measure it apart from a
    // working tree others are editing): BENCH_GIT_COMMIT names the commit it was exported from
    commit = process.env.BENCH_GIT_COMMIT?.trim() || 'unknown'
  }
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.availableParallelism(),
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    gitCommit: commit,
    gitDirty: dirty,
  }
}

/** The 1-, 5- and 15-minute load averages, to two decimals. */
export function loadAverage(): number[] {
  return os.loadavg().map((l) => Math.round(l * 100) / 100)
}

/** "AMD EPYC, 2 cores, load 1.02 1.3 1.41": what a bench prints of the machine as it starts. */
export function machineLine(): string {
  const m = machine()
  return `${m.cpu}, ${m.cores} cores, load ${loadAverage().join(' ')}`
}
