// The command-line tools as a user runs them (child processes): bad input gives one line on
// stderr and a non-zero exit — no stack trace, no hang.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'iisan-cli-'))
afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

interface Run {
  code: number | null
  signal: string | null
  stdout: string
  stderr: string
}

function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', path.join(ROOT, file), ...args], { cwd: ROOT, timeout: 90_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; signal?: string | null }) | null
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, signal: e?.signal ?? null, stdout, stderr })
    })
  })
}

/** Non-zero exit (not killed by the timeout), exactly one stderr line containing `mention`, no stack. */
function expectOneLineFailure(r: Run, mention: string | RegExp): void {
  expect(r.signal, `killed (hang?): ${r.stderr}`).toBeNull()
  expect(r.code).not.toBe(0)
  const lines = r.stderr.trimEnd().split('\n')
  expect(lines, r.stderr).toHaveLength(1)
  if (typeof mention === 'string') expect(lines[0]).toContain(mention)
  else expect(lines[0]).toMatch(mention)
  expect(r.stderr).not.toContain('    at ')
}

type Case = [file: string, args: string[], mention: string | RegExp]

const cases: Case[] = [
  // npm run train
  ['packages/pipeline/src/cli/train.ts', ['--epochs', '0'], '--epochs'],
  ['packages/pipeline/src/cli/train.ts', ['--epochs', 'abc'], '--epochs'],
  ['packages/pipeline/src/cli/train.ts', ['--patience', '2.5'], '--patience'],
  ['packages/pipeline/src/cli/train.ts', ['--users', '0'], '--users'],
  ['packages/pipeline/src/cli/train.ts', ['--users', '1e3'], '--users'],
  ['packages/pipeline/src/cli/train.ts', ['--lr-item=abc'], '--lr-item'],
  ['packages/pipeline/src/cli/train.ts', ['--lr-user=-1'], '--lr-user'],
  ['packages/pipeline/src/cli/train.ts', ['--reduction', '0'], '--reduction'],
  ['packages/pipeline/src/cli/train.ts', ['--side-layers', '1,x'], '--side-layers'],
  ['packages/pipeline/src/cli/train.ts', ['--bogus'], '--bogus'],
  ['packages/pipeline/src/cli/train.ts', ['--epochs'], '--epochs'],
  ['packages/pipeline/src/cli/train.ts', ['--data', '/nonexistent/dataset'], '/nonexistent/dataset'],
  // npm run cache-states
  ['scripts/cache-states.ts', ['--users', '5'], '--users'],
  ['scripts/cache-states.ts', ['--batch-size', '0'], '--batch-size'],
  ['scripts/cache-states.ts', ['--batch-size', 'abc'], '--batch-size'],
  ['scripts/cache-states.ts', ['--data', '/nonexistent/dataset'], '/nonexistent/dataset'],
  // benchmarks
  ['bench/cache.ts', ['--chunk', '0'], '--chunk'],
  ['bench/cache.ts', ['--group', '0'], '--group'],
  ['bench/cache.ts', ['--items', 'abc'], '--items'],
  ['bench/cache.ts', ['--bogus'], '--bogus'],
  ['bench/train.ts', ['--users', '0'], '--users'],
  ['bench/train.ts', ['--users', 'abc'], '--users'],
  ['bench/train.ts', ['--steps', '1.5'], '--steps'],
  ['bench/train.ts', ['--bogus'], '--bogus'],
  ['bench/backbones.ts', ['--bogus'], '--bogus'],
  ['bench/backbones.ts', ['--quick=yes'], '--quick'],
  ['bench/profile-step.ts', ['--top', '0'], '--top'],
  ['bench/profile-step.ts', ['--method', 'nope'], '--method'],
  ['bench/profile-step.ts', ['--bogus'], '--bogus'],
  ['bench/custom-grads.ts', ['--rows', '0'], '--rows'],
  ['bench/custom-grads.ts', ['--width', '7'], '--width'],
  ['bench/custom-grads.ts', ['--bogus'], '--bogus'],
  // npm run backbone
  ['packages/backbones/src/cli.ts', ['hidden-states', '--bogus'], '--bogus'],
  ['packages/backbones/src/cli.ts', ['hidden-states', '--model', '/nonexistent', '--texts', '/dev/null', '--batch-size', '0'], '--batch-size'],
  ['packages/backbones/src/cli.ts', ['hidden-states', '--model', '/nonexistent', '--texts', '/dev/null', '--batch-size', 'abc'], '--batch-size'],
  ['packages/backbones/src/cli.ts', ['fingerprint', '--model'], '--model'],
  ['packages/backbones/src/cli.ts', ['make-default', '--bogus'], '--bogus'],
  ['packages/backbones/src/cli.ts', ['no-such-command'], 'no-such-command'],
]

describe.concurrent('bad arguments: one line, non-zero exit, no stack trace', () => {
  it.each(cases)('%s %j', async (file, args, mention) => {
    expectOneLineFailure(await run(file, args), mention)
  })
})

describe('npm run train on too little data', () => {
  it('refuses a folder where fewer than 2 users have ≥ 5 interactions', async () => {
    const dir = path.join(work, 'tiny')
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'items.tsv'), ['a\tAlpha', 'b\tBeta', 'c\tGamma', 'd\tDelta', 'e\tEpsilon', ''].join('\n'))
    // one user with 5 interactions, one with 3 (dropped by the protocol)
    fs.writeFileSync(path.join(dir, 'users.tsv'), ['u1\ta b c d e', 'u2\ta b c', ''].join('\n'))
    const r = await run('packages/pipeline/src/cli/train.ts', ['--data', dir, '--epochs', '1'])
    expectOneLineFailure(r, /1 user\(s\) with ≥ 5 interactions .*at least 2 are needed/)
    expect(r.code).toBe(2)
    expect(r.stdout).not.toMatch(/loss/)
  })

  it('refuses a folder where no user has enough interactions', async () => {
    const dir = path.join(work, 'none')
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'items.tsv'), 'a\tAlpha\nb\tBeta\n')
    fs.writeFileSync(path.join(dir, 'users.tsv'), 'u1\ta b\nu2\tb a\n')
    const r = await run('packages/pipeline/src/cli/train.ts', ['--data', dir])
    expectOneLineFailure(r, /0 user\(s\) with ≥ 5 interactions/)
  })

  it('refuses a malformed users.tsv with one line', async () => {
    const dir = path.join(work, 'bad')
    fs.mkdirSync(dir)
    fs.writeFileSync(path.join(dir, 'items.tsv'), 'a\tAlpha\n')
    fs.writeFileSync(path.join(dir, 'users.tsv'), 'u1 without a tab\n')
    expectOneLineFailure(await run('packages/pipeline/src/cli/train.ts', ['--data', dir]), /^error: .*users/)
  })
})
