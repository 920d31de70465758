import type { Logger } from 'pino'

export interface ShutdownOptions {
  /** Force-exit (code 1) if cleanup takes longer (default 30 s; training workers may want more). */
  timeoutMs?: number
  signals?: NodeJS.Signals[]
}

/**
 * Graceful shutdown for a service's main(): on SIGTERM/SIGINT run `cleanup` once (close servers,
 * workers, connections), then exit 0; exit 1 when cleanup throws or exceeds the timeout. A second
 * signal exits immediately.
 */
export function onShutdown(
  logger: Pick<Logger, 'info' | 'error' | 'warn'>,
  cleanup: () => unknown,
  options: ShutdownOptions = {},
): void {
  const timeoutMs = options.timeoutMs ?? 30_000
  let shuttingDown = false
  const handler = (signal: NodeJS.Signals) => {
    if (shuttingDown) {
      logger.warn({ signal }, 'second signal: exiting now')
      process.exit(1)
    }
    shuttingDown = true
    logger.info({ signal }, 'shutting down')
    const timer = setTimeout(() => {
      logger.error({ timeoutMs }, 'shutdown timed out: exiting')
      process.exit(1)
    }, timeoutMs)
    timer.unref()
    Promise.resolve()
      .then(cleanup)
      .then(
        () => {
          logger.info('shutdown complete')
          process.exit(0)
        },
        (err: unknown) => {
          logger.error({ err }, 'error during shutdown')
          process.exit(1)
        },
      )
  }
  for (const s of options.signals ?? (['SIGTERM', 'SIGINT'] as NodeJS.Signals[])) process.once(s, handler)
}
