// Embedding-cache service entry point: owns the frozen backbones and the hidden-state store.
// config → logger → tensor backend → server (HTTP + queue worker) → clean SIGTERM.
// Run any number of replicas against the same Postgres and Redis: they share the queue.
import { ConfigError, createLogger, loadConfig } from '@iisan/config'
import { onShutdown } from '@iisan/config/shutdown'
import { initBackend } from '@iisan/model/backend'
import { BackboneConfigError } from '@iisan/backbones/config'
import { demoBackboneWarning, isDemoModelConfig } from '@iisan/backbones/demo'
import { cacheServerOptionsFromEnv, createCacheServer } from './server.ts'

/** A bad variable is the operator's input: one line naming it on stderr, exit 1, no stack trace. */
function configOrExit<T>(load: () => T): T {
  try {
    return load()
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    console.error(`Invalid configuration: ${e.issues.map((i) => `${i.variable}=${JSON.stringify(i.value)}: ${i.message}`).join('; ')}`)
    process.exit(1)
  }
}

const config = configOrExit(() => loadConfig())
const options = configOrExit(() => cacheServerOptionsFromEnv())
const logger = createLogger('embedding-cache', config)
await initBackend({ logger, prefer: config.tfBackend })
const server = await createCacheServer(config, logger, options).catch((err: unknown) => {
  // a backbone not downloaded or not loadable is the operator's to fix: the message, not a stack
  // (on stderr directly, as loadConfigOrExit does: a logger transport may not flush before exit)
  if (!(err instanceof BackboneConfigError)) throw err
  console.error(err.message)
  process.exit(1)
})
// Shutdown waits for the chunk in flight (one forward batch + one INSERT group at a time).
onShutdown(logger, () => server.close(), { timeoutMs: 120_000 })
// Its own bind address (loopback by default), not HOST: the cache is internal, and loadConfig
// refuses a non-loopback one without INTERNAL_TOKEN.
await server.app.listen({ port: config.embeddingCachePort, host: config.embeddingCacheHost })
logger.info({ host: config.embeddingCacheHost, port: config.embeddingCachePort, worker: server.worker !== null, token: config.internalToken !== undefined }, 'embedding cache ready')
const demoBackbones = server.registry.list().filter((b) => isDemoModelConfig(b.model.config)).map((b) => b.modality)
if (demoBackbones.length) logger.warn({ demoBackbones }, demoBackboneWarning(demoBackbones))
