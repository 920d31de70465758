// A reference row of bench/serve.ts: the HTTP exchange of POST /v1/recommendations without the
// platform. A Fastify process like the hello-world (one process, no logger), with the API's ajv
// options and the route's own JSON schemas: the body is parsed and validated, and the answer
// serialised through the response schema, as the API does. Every request gets one answer the API
// gave (ANSWER_FILE, a JSON body of 200). What a real row costs beyond this one is the platform's
// own: its plugins, the id lookups and the model. PORT and HOST from the environment.
import fs from 'node:fs'
import Fastify from 'fastify'
import { AJV_OPTIONS } from '@iisan/http/validation'
import { RecommendationRequest, RecommendationResponse } from '../../services/api/src/routes/recommendation-schemas.ts'

const answer = JSON.parse(fs.readFileSync(process.env.ANSWER_FILE ?? '', 'utf8')) as unknown
const app = Fastify({ logger: false, ajv: { customOptions: AJV_OPTIONS } })
app.get('/healthz', async () => ({ ok: true }))
app.post('/v1/recommendations', { schema: { body: RecommendationRequest, response: { 200: RecommendationResponse } } }, async () => answer)
await app.listen({ port: Number(process.env.PORT ?? 0), host: process.env.HOST ?? '127.0.0.1' })
const stop = () => void app.close().finally(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
