// API service entry point: config, logger, tensor backend, server, clean SIGTERM.
import { createLogger, loadConfigOrExit } from '@iisan/config'
import { onShutdown } from '@iisan/config/shutdown'
import { initBackend } from '@iisan/model/backend'
import { createApiServer } from './server.ts'

const config = loadConfigOrExit()
const logger = createLogger('api', config)
await initBackend({ logger, prefer: config.tfBackend })
const server = await createApiServer(config, logger)
await server.app.listen({ port: config.port, host: config.host })
onShutdown(logger, () => server.close())
