// The reference row of bench/serve.ts: a Fastify hello-world on its own port, run as a child
// process like the platform's services, so it is measured under the same conditions (same
// machine, same load generator, same moment). PORT and HOST from the environment.
import Fastify from 'fastify'

const app = Fastify({ logger: false })
app.get('/', async () => ({ hello: 'world' }))
await app.listen({ port: Number(process.env.PORT ?? 0), host: process.env.HOST ?? '127.0.0.1' })
const stop = () => void app.close().finally(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
