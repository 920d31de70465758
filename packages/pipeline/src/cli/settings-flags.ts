// The training settings as command-line flags, made from the one settings schema
// (@iisan/model methods/settings.ts): every key is a kebab-case flag (`lrTextEncoder` →
// `--lr-text-encoder`), parsed by its schema type and validated by the same schema the API uses,
// so the CLI and the API accept exactly the same settings.
import { Value } from '@sinclair/typebox/value'
import { Type, type TSchema } from '@sinclair/typebox'
import { TrainingConfigSchema, type TrainingConfig } from '@iisan/model/methods/settings'
import { fail } from './args.ts'

/** Flags that predate the schema's names, kept so scripts keep working. */
const ALIASES: Record<string, string> = { epochs: 'maxEpochs' }

export const kebab = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

const SETTINGS = TrainingConfigSchema.properties as Record<string, TSchema>

/** node:util parseArgs options for every setting (all strings: the schema parses them). */
export function settingsFlagOptions(): Record<string, { type: 'string' }> {
  const flags = [...Object.keys(SETTINGS).map(kebab), ...Object.keys(ALIASES)]
  return Object.fromEntries(flags.map((f) => [f, { type: 'string' as const }]))
}

/** The usage fragment listing the settings flags. */
export function settingsUsage(): string {
  return [...Object.keys(ALIASES).map((a) => `[--${a} N]`), ...Object.keys(SETTINGS).map((k) => `[--${kebab(k)} X]`)].join(' ')
}

/** The settings given on the command line, validated by the schema; a bad one fails with its flag. */
export function settingsFromFlags(values: Record<string, unknown>): Partial<TrainingConfig> {
  const given: Record<string, unknown> = {}
  const flagOf: Record<string, string> = {}
  for (const [key, schema] of Object.entries(SETTINGS)) {
    const alias = Object.keys(ALIASES).find((a) => ALIASES[a] === key && values[a] !== undefined)
    const flag = alias ?? kebab(key)
    const raw = values[flag]
    if (typeof raw !== 'string') continue
    flagOf[key] = flag
    given[key] = parseFlag(flag, raw, schema)
  }
  const partial = Type.Partial(TrainingConfigSchema)
  const error = Value.Errors(partial, given).First()
  if (error) {
    const key = error.path.split('/')[1] ?? ''
    fail(`--${flagOf[key] ?? kebab(key)} ${error.message.toLowerCase()} (got ${JSON.stringify(values[flagOf[key] ?? kebab(key)])})`)
  }
  return given as Partial<TrainingConfig>
}

function parseFlag(flag: string, raw: string, schema: TSchema): unknown {
  const text = raw.trim()
  const type = schema.type as string | undefined
  if (type === 'integer') {
    if (!/^-?\d+$/.test(text)) fail(`--${flag} must be an integer (got ${JSON.stringify(raw)})`)
    return Number(text)
  }
  if (type === 'number') {
    const n = Number(text)
    if (!text || !Number.isFinite(n)) fail(`--${flag} must be a number (got ${JSON.stringify(raw)})`)
    return n
  }
  if (type === 'array') {
    const parts = text.split(',').map((p) => p.trim())
    if (!parts.every((p) => /^\d+$/.test(p))) fail(`--${flag} must be a comma-separated list of integers, e.g. 0,2,4 (got ${JSON.stringify(raw)})`)
    return parts.map(Number)
  }
  const allowed = (schema.anyOf as TSchema[] | undefined)?.map((s) => s.const as string)
  if (allowed && !allowed.includes(text)) fail(`--${flag} must be one of ${allowed.join(', ')} (got ${JSON.stringify(raw)})`)
  return text
}
