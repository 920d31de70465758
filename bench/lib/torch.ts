// The optional PyTorch references of the benches (bench/reference/*.py): run side by side with
// our figures when a python3 with torch is found, never required.
import { spawnSync } from 'node:child_process'
import path from 'node:path'

export type TorchRun<T> = ({ source: 'measured'; python: string; script: string } & T) | { source: 'absent'; reason: string }

/** The first interpreter that imports torch: $PYTHON if set, else python3 on PATH, then Debian's. */
export function torchPython(): string | null {
  const candidates = process.env.PYTHON ? [process.env.PYTHON] : ['python3', '/usr/bin/python3']
  return candidates.find((py) => spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) ?? null
}

/** Runs `script` (relative to the working directory) on 2 threads and parses the JSON it prints. */
export function runTorchScript<T>(script: string, args: string[]): TorchRun<T> {
  const python = torchPython()
  if (!python) return { source: 'absent', reason: `no torch in ${process.env.PYTHON ?? 'python3 or /usr/bin/python3'} (apt-get install python3-torch, or PYTHON=…)` }
  const run = spawnSync(python, [path.resolve(process.cwd(), script), ...args], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '2' } })
  if (run.status !== 0) return { source: 'absent', reason: `${script} failed: ${(run.stderr || run.error?.message || '').trim().split('\n').pop()}` }
  return { source: 'measured', python, script, ...(JSON.parse(run.stdout) as T) }
}
