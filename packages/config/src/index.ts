export {
  loadConfig,
  loadConfigOrExit,
  ConfigError,
  CONFIG_DEFAULTS,
  LOG_LEVELS,
  TF_BACKENDS,
  type AppConfig,
  type ConfigIssue,
  type LogLevel,
  type TfBackend,
} from './config.ts'
export { createLogger, type CreateLoggerOptions, type Logger } from './logger.ts'
export { ensureDatabaseExists, dropDatabase, databaseNameFromUrl, withDatabase, quoteIdent } from './database.ts'
export { onShutdown, type ShutdownOptions } from './shutdown.ts'
