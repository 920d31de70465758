// What every command-line tool of the project shares: wrong input is the user's, not a bug, so it
// ends in one line on stderr and exit code 2 — never a stack trace.
import { parseArgs, type ParseArgsConfig } from 'node:util'

/** A message of several lines as one (a tool's error is always one line on stderr). */
export const oneLine = (message: string): string =>
  message
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ')

export const errorMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** One line on stderr, exit 2. */
export function fail(message: string): never {
  console.error(`error: ${oneLine(message)}`)
  process.exit(2)
}

/** Anything that escapes a tool still ends as one line. */
export function failOnUncaught(): void {
  process.on('uncaughtException', (e) => fail(errorMessage(e)))
  process.on('unhandledRejection', (e) => fail(errorMessage(e)))
}

/** node:util parseArgs, with unknown options and missing values reported with the usage line. */
export function parseOptions<T extends NonNullable<ParseArgsConfig['options']>>(options: T, usage: string) {
  try {
    return parseArgs({ options, strict: true, allowPositionals: false })
  } catch (e) {
    fail(`${errorMessage(e)} (${usage})`)
  }
}

/** `--name` as a positive integer (digits only: no 0, 1.5, 1e3, 0x10 or abc). */
export function positiveInt(name: string, v: string | undefined): number {
  const n = Number(v)
  if (!/^\d+$/.test(v?.trim() ?? '') || !Number.isSafeInteger(n) || n < 1) fail(`--${name} must be a positive integer (got ${JSON.stringify(v)})`)
  return n
}

/** `--name` as a positive finite number (learning rates). */
export function positiveNumber(name: string, v: string | undefined): number {
  const n = Number(v)
  if (!v?.trim() || !Number.isFinite(n) || n <= 0) fail(`--${name} must be a positive number (got ${JSON.stringify(v)})`)
  return n
}
