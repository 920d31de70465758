import { pino, type Logger, type LoggerOptions } from 'pino'
import type { AppConfig } from './config.ts'

export type { Logger } from 'pino'

export interface CreateLoggerOptions {
  /** Force pretty (true) or JSON (false) output; default: pretty only when stdout is a TTY. */
  pretty?: boolean
  /** Extra pino options (merged last). */
  pino?: LoggerOptions
}

/**
 * A pino logger named after the component. JSON lines by default (what log collectors want);
 * human-readable via pino-pretty only when stdout is an interactive terminal.
 */
export function createLogger(
  name: string,
  config: Pick<AppConfig, 'logLevel'> = { logLevel: 'info' },
  options: CreateLoggerOptions = {},
): Logger {
  const pretty = options.pretty ?? Boolean(process.stdout.isTTY)
  const base: LoggerOptions = {
    name,
    level: config.logLevel,
    ...(pretty
      ? {
          transport: {
            target: 'pino-pretty',
            options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' },
          },
        }
      : {}),
    ...options.pino,
  }
  return pino(base)
}
