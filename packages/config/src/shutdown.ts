import type { Logger } from './logger.ts'

/** SIGTERM/SIGINT → run `close` once, then exit; a second signal or a 30 s stall forces the exit. */
export function onShutdown(logger: Logger, close: () => Promise<void>): void {
  let closing = false
  const handler = (signal: string) => {
    if (closing) process.exit(1)
    closing = true
    logger.info({ signal }, 'shutting down')
    setTimeout(() => {
      logger.error('shutdown took longer than 30 s, exiting')
      process.exit(1)
    }, 30_000).unref()
    close().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'error during shutdown')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', () => handler('SIGTERM'))
  process.on('SIGINT', () => handler('SIGINT'))
}
